//! Splits a streamed JSON array into its elements without buffering the whole array.
//!
//! `?action=keys` and `?action=entries` answer with one chunked JSON array that can hold millions
//! of elements. [`ArraySplitter`] is fed the body chunk by chunk and hands back each element's
//! bytes as soon as the element is complete, so memory is bounded by the largest element, not by
//! the cache.

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

    /// Feeds one chunk; calls `emit` with each element completed inside it.
    pub fn feed(&mut self, chunk: &[u8], mut emit: impl FnMut(&[u8])) -> Result<(), SplitError> {
        for &byte in chunk {
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
