//! Validated names for sites and caches.
//!
//! Both end up as URL path segments, so they are checked once, at the edge, and percent-encoded by
//! the request builders. Validation is deliberately loose: Infinispan accepts almost any cache
//! name, and refusing a real cache name would make the tool useless for that deployment.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a site or cache name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name was empty or only whitespace.
    #[error("{kind} name is empty")]
    Empty {
        /// "site" or "cache".
        kind: &'static str,
    },
    /// The name contains a character that cannot be a name on the server.
    #[error("{kind} name {name:?} contains the control character U+{code:04X}")]
    ControlCharacter {
        /// "site" or "cache".
        kind: &'static str,
        /// The refused name.
        name: String,
        /// The offending code point.
        code: u32,
    },
    /// Site names travel in JGroups RELAY2 configuration, where `/` is never valid.
    #[error("site name {name:?} contains '/'")]
    Slash {
        /// The refused name.
        name: String,
    },
}

fn validate(kind: &'static str, name: &str) -> Result<(), NameError> {
    if name.trim().is_empty() {
        return Err(NameError::Empty { kind });
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(NameError::ControlCharacter { kind, name: name.to_owned(), code: c as u32 });
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $kind:literal, $extra:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(String);

        impl $ty {
            /// Checks and wraps a name.
            pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
                let name = name.into();
                validate($kind, &name)?;
                let extra: fn(&str) -> Result<(), NameError> = $extra;
                extra(&name)?;
                Ok(Self(name))
            }

            /// The name as the server spells it.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $ty {
            type Error = NameError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::new(value)
            }
        }

        impl TryFrom<&str> for $ty {
            type Error = NameError;
            fn try_from(value: &str) -> Result<Self, Self::Error> {
                Self::new(value)
            }
        }

        impl From<$ty> for String {
            fn from(value: $ty) -> Self {
                value.0
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $ty {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl PartialEq<str> for $ty {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $ty {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

name_type!(
    /// The name of an Infinispan site (`local_site`, a backup's `site=`).
    SiteName,
    "site",
    |name| if name.contains('/') { Err(NameError::Slash { name: name.to_owned() }) } else { Ok(()) }
);

name_type!(
    /// The name of a cache (`actionTokens`, `work`, ...).
    CacheName,
    "cache",
    |_| Ok(())
);

/// Percent-encodes one URL path segment.
///
/// Everything outside RFC 3986 "unreserved" is encoded. `+` in particular must be `%2B`: the
/// server decodes segments with Netty's `QueryStringDecoder`, which reads a literal `+` as a space.
pub fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push('%');
            out.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('0').to_ascii_uppercase());
            out.push(char::from_digit(u32::from(byte & 0xF), 16).unwrap_or('0').to_ascii_uppercase());
        }
    }
    out
}
