//! Credentials and the HTTP authentication handshake (BASIC, DIGEST with MD5 or SHA-256).

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use base64::Engine as _;
use digest_auth::{AuthContext, HttpMethod, WwwAuthenticateHeader};
use http::HeaderValue;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// A user name and password. The password is never printed: not by `Debug`, not in errors.
#[derive(Clone)]
pub struct Credentials {
    user: String,
    password: SecretString,
}

impl Credentials {
    /// Wraps a user name and password.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        Self { user: user.into(), password: SecretString::from(password.into()) }
    }

    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials").field("user", &self.user).field("password", &"<redacted>").finish()
    }
}

/// Which HTTP authentication mechanism to use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mechanism {
    /// Answer whatever the server challenges with, preferring DIGEST (SHA-256, then MD5) because
    /// it never sends the password. This is what the Infinispan CLI does.
    #[default]
    Auto,
    /// DIGEST only (MD5 or SHA-256, as the server offers).
    Digest,
    /// BASIC only. Infinispan offers it on plain HTTP only when configured explicitly.
    Basic,
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Digest => "digest",
            Self::Basic => "basic",
        })
    }
}

impl FromStr for Mechanism {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "digest" => Ok(Self::Digest),
            "basic" => Ok(Self::Basic),
            other => Err(format!("unknown auth mechanism {other:?} (auto, digest or basic)")),
        }
    }
}

/// A challenge the client decided to answer.
#[derive(Debug, Clone)]
pub(crate) enum Chosen {
    Basic,
    Digest(Box<WwwAuthenticateHeader>),
}

/// Why no challenge could be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NotOffered {
    pub(crate) wanted: Mechanism,
    pub(crate) offered: Vec<String>,
}

/// Picks the challenge to answer among a 401's `WWW-Authenticate` headers.
pub(crate) fn choose<'a>(mechanism: Mechanism, challenges: impl Iterator<Item = &'a HeaderValue>) -> Result<Chosen, NotOffered> {
    let mut offered = Vec::new();
    let mut basic = false;
    let mut digests = Vec::new();
    for value in challenges {
        let Ok(text) = value.to_str() else { continue };
        let scheme = text.split_whitespace().next().unwrap_or_default();
        if scheme.eq_ignore_ascii_case("basic") {
            basic = true;
            offered.push("BASIC".to_owned());
        } else if scheme.eq_ignore_ascii_case("digest") {
            if let Ok(header) = WwwAuthenticateHeader::parse(text) {
                offered.push(format!("DIGEST-{}", header.algorithm));
                digests.push(header);
            }
        } else {
            offered.push(scheme.to_ascii_uppercase());
        }
    }
    // SHA-256 before MD5: a server that offers both accepts either, and SHA-256 is the stronger.
    digests.sort_by_key(|h| if h.algorithm.to_string().contains("SHA-256") { 0 } else { 1 });
    let digest = digests.into_iter().next();
    let chosen = match (mechanism, digest) {
        (Mechanism::Auto | Mechanism::Digest, Some(d)) => Chosen::Digest(Box::new(d)),
        (Mechanism::Auto | Mechanism::Basic, None) if basic => Chosen::Basic,
        (Mechanism::Basic, Some(_)) if basic => Chosen::Basic,
        _ => return Err(NotOffered { wanted: mechanism, offered }),
    };
    Ok(chosen)
}

/// The per-client authentication state: the digest challenge is reused for every request (with
/// an increasing nonce count) so that only the first request pays for the 401 round trip.
pub(crate) struct AuthState {
    credentials: Option<Credentials>,
    mechanism: Mechanism,
    current: Mutex<Option<Chosen>>,
}

impl fmt::Debug for AuthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthState")
            .field("user", &self.credentials.as_ref().map(Credentials::user))
            .field("mechanism", &self.mechanism)
            .finish_non_exhaustive()
    }
}

impl AuthState {
    pub(crate) fn new(credentials: Option<Credentials>, mechanism: Mechanism) -> Self {
        // BASIC needs no challenge: send it from the first request.
        let current = (mechanism == Mechanism::Basic && credentials.is_some()).then_some(Chosen::Basic);
        Self { credentials, mechanism, current: Mutex::new(current) }
    }

    pub(crate) fn user(&self) -> &str {
        self.credentials.as_ref().map(Credentials::user).unwrap_or("<none>")
    }

    pub(crate) fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    pub(crate) fn has_credentials(&self) -> bool {
        self.credentials.is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Chosen>> {
        self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Remembers the challenge to answer from now on.
    pub(crate) fn adopt(&self, chosen: Chosen) {
        *self.lock() = Some(chosen);
    }

    /// The `Authorization` header for a request, if a mechanism is known yet.
    pub(crate) fn header_for(&self, method: &http::Method, uri: &http::Uri, body: &[u8]) -> Option<HeaderValue> {
        let credentials = self.credentials.as_ref()?;
        let mut current = self.lock();
        let value = match current.as_mut()? {
            Chosen::Basic => {
                let raw = format!("{}:{}", credentials.user, credentials.password.expose_secret());
                format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
            }
            Chosen::Digest(challenge) => {
                // The server checks `uri` against the request target: path plus raw query.
                let target = uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
                let context = AuthContext::new_with_method(
                    credentials.user.as_str(),
                    credentials.password.expose_secret(),
                    target,
                    Some(body),
                    HttpMethod::from(method.as_str().to_owned()),
                );
                challenge.respond(&context).ok()?.to_header_string()
            }
        };
        let mut header = HeaderValue::from_str(&value).ok()?;
        header.set_sensitive(true);
        Some(header)
    }
}
