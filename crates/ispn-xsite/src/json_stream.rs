//! Splits a streamed JSON array into its elements without buffering the whole array.
//!
//! `?action=keys` and `?action=entries` answer with one chunked JSON array that can hold millions
//! of elements. [`ArraySplitter`] is fed the body chunk by chunk and hands back each element's
//! bytes as soon as the element is complete, so memory is bounded by the largest element, not by
//! the cache.

use std::borrow::Cow;

use serde_json::value::RawValue;

use crate::api::Entry;
use crate::model::entry_text;

/// Incremental splitter for a top-level JSON array.
#[derive(Debug, Default)]
pub struct ArraySplitter {
    state: State,
    depth: u32,
    in_string: bool,
    escaped: bool,
    element: Vec<u8>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the opening `[`.
    #[default]
    Start,
    /// Inside the array, between elements.
    Between,
    /// Inside an element.
    Element,
    /// After the closing `]`.
    Done,
}

/// What is wrong with the streamed body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// The body did not start with `[`.
    #[error("expected a JSON array, found {0:?}")]
    NotAnArray(char),
    /// Bytes after the closing `]`.
    #[error("unexpected {0:?} after the end of the array")]
    TrailingData(char),
    /// The body ended inside the array.
    #[error("the array ended early (the stream was cut)")]
    Truncated,
}

impl ArraySplitter {
    /// Creates a splitter waiting for `[`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one chunk; calls `emit` with each element completed inside it. Runs of plain bytes
    /// inside an element (most of a key or value) are copied at once, not byte by byte.
    pub fn feed(&mut self, chunk: &[u8], mut emit: impl FnMut(&[u8])) -> Result<(), SplitError> {
        let mut at = 0;
        while at < chunk.len() {
            let rest = &chunk[at..];
            if self.state == State::Element && !self.escaped {
                let next = if self.in_string {
                    memchr::memchr2(b'"', b'\\', rest)
                } else {
                    rest.iter().position(|b| matches!(b, b'"' | b'{' | b'}' | b'[' | b']' | b','))
                };
                let plain = next.unwrap_or(rest.len());
                self.element.extend_from_slice(&rest[..plain]);
                at += plain;
                if next.is_none() {
                    break;
                }
            }
            let byte = chunk[at];
            at += 1;
            match self.state {
                State::Start => match byte {
                    b'[' => self.state = State::Between,
                    b if b.is_ascii_whitespace() => {}
                    b => return Err(SplitError::NotAnArray(b as char)),
                },
                State::Between => match byte {
                    b']' => self.state = State::Done,
                    b',' => {}
                    b if b.is_ascii_whitespace() => {}
                    b => {
                        self.state = State::Element;
                        self.element.clear();
                        self.depth = 0;
                        self.in_string = false;
                        self.escaped = false;
                        self.push(b, &mut emit);
                    }
                },
                State::Element => self.push(byte, &mut emit),
                State::Done => {
                    if !byte.is_ascii_whitespace() {
                        return Err(SplitError::TrailingData(byte as char));
                    }
                }
            }
        }
        Ok(())
    }

    /// Declares the end of the body.
    pub fn finish(&self) -> Result<(), SplitError> {
        if self.state == State::Done { Ok(()) } else { Err(SplitError::Truncated) }
    }

    fn push(&mut self, byte: u8, emit: &mut impl FnMut(&[u8])) {
        if self.in_string {
            self.element.push(byte);
            if self.escaped {
                self.escaped = false;
            } else if byte == b'\\' {
                self.escaped = true;
            } else if byte == b'"' {
                self.in_string = false;
                if self.depth == 0 {
                    self.complete(emit);
                }
            }
            return;
        }
        match byte {
            b'"' => {
                self.in_string = true;
                self.element.push(byte);
            }
            b'{' | b'[' => {
                self.depth += 1;
                self.element.push(byte);
            }
            b'}' | b']' if self.depth > 0 => {
                self.depth -= 1;
                self.element.push(byte);
                if self.depth == 0 {
                    self.complete(emit);
                }
            }
            // The end of a scalar element (number, true, false, null).
            b',' if self.depth == 0 => {
                self.complete(emit);
            }
            b']' => {
                self.complete(emit);
                self.state = State::Done;
            }
            b => self.element.push(b),
        }
    }

    fn complete(&mut self, emit: &mut impl FnMut(&[u8])) {
        let trimmed = self.element.trim_ascii();
        if !trimmed.is_empty() {
            emit(trimmed);
        }
        self.element.clear();
        if self.state == State::Element {
            self.state = State::Between;
        }
    }
}

/// Decodes one element of `?action=keys`.
///
/// The server escapes only `"` in that stream (not backslashes or control characters), so a key
/// such as `a\b` arrives as invalid JSON. Valid JSON strings are decoded normally; otherwise `\"`
/// becomes `"` and every other byte is kept as sent. Both sites encode a key the same way, so the
/// result is stable for comparison even when it is not the exact stored key.
pub fn decode_key(element: &[u8]) -> Option<String> {
    if let Ok(key) = serde_json::from_slice::<String>(element) {
        return Some(key);
    }
    let text = std::str::from_utf8(element).ok()?;
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    Some(inner.replace("\\\"", "\""))
}

/// Decodes one element of `?action=entries` (`{"key": ..., "value": ...}`) into text, as
/// [`entry_text`] does, without building a JSON tree for the common shape (a wrapped string):
/// comparing a million entries spends its time here.
pub fn decode_entry(element: &[u8]) -> Option<Entry> {
    #[derive(serde::Deserialize)]
    struct Raw<'a> {
        #[serde(borrow)]
        key: &'a RawValue,
        #[serde(borrow)]
        value: &'a RawValue,
    }
    let raw: Raw<'_> = serde_json::from_slice(element).ok()?;
    Some(Entry { key: raw_text(raw.key)?, value: raw_text(raw.value)? })
}

fn raw_text(raw: &RawValue) -> Option<String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Wrapped<'a> {
        #[serde(rename = "_type", borrow)]
        kind: Cow<'a, str>,
        #[serde(rename = "_value", borrow)]
        value: Cow<'a, str>,
    }
    if let Ok(wrapped) = serde_json::from_str::<Wrapped<'_>>(raw.get())
        && wrapped.kind == "string"
    {
        return Some(wrapped.value.into_owned());
    }
    let value: serde_json::Value = serde_json::from_str(raw.get()).ok()?;
    Some(entry_text(&value))
}
