//! One error type for every way a call to a site can fail.
//!
//! Each variant says what went wrong *and what to do about it*, because these messages end up as
//! the one line an SRE reads at 3 a.m. None of them can contain a password: the client never puts
//! credentials in a URL, and the variants only carry the user name.

use std::time::Duration;

use crate::names::{CacheName, SiteName};

/// A failed call to an Infinispan site.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Nothing answered: connection refused, DNS failure, reset.
    #[error("{endpoint}: cannot connect ({detail}); check the URL and that Infinispan is running and reachable from here")]
    Unreachable {
        /// The base URL that was tried.
        endpoint: String,
        /// What the network layer said.
        detail: String,
    },
    /// The connection closed before the answer was complete.
    #[error(
        "{endpoint}: the connection closed before {what} was answered in full ({detail}); the server may have failed to produce the answer: look for an error in its log at that moment"
    )]
    Interrupted {
        /// The base URL.
        endpoint: String,
        /// The request.
        what: String,
        /// What the network layer said.
        detail: String,
    },
    /// Connected, but no complete answer in time.
    #[error(
        "{endpoint}: no answer to {what} within {} s; the server or the network is too slow (raise request_timeout if the server is merely busy)",
        after.as_secs_f64()
    )]
    Timeout {
        /// The base URL.
        endpoint: String,
        /// The request that timed out (`GET /rest/v2/...`).
        what: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// The TLS handshake failed: unknown CA, wrong host name, plain HTTP on a TLS port.
    #[error(
        "{endpoint}: TLS failed ({detail}); pass the server's CA certificate (ca_file), or use insecure mode only for a test server"
    )]
    Tls {
        /// The base URL.
        endpoint: String,
        /// What rustls said.
        detail: String,
    },
    /// `https://` against a port that speaks plain HTTP.
    #[error("{endpoint}: the server answers in plain HTTP, not TLS; use http:// in the URL (or enable TLS on the server)")]
    PlainHttp {
        /// The base URL.
        endpoint: String,
    },
    /// The server refused the credentials (HTTP 401 after answering its challenge).
    #[error("{endpoint}: 401 Unauthorized for user '{user}'; check the user name and password")]
    Unauthorized {
        /// The base URL.
        endpoint: String,
        /// The user name that was refused.
        user: String,
    },
    /// The authentication mechanism that was forced is not offered by the server.
    #[error("{endpoint}: the server does not offer {wanted} authentication (it offers: {offered}); use auth: {suggestion}")]
    MechanismNotOffered {
        /// The base URL.
        endpoint: String,
        /// The mechanism the configuration asked for.
        wanted: String,
        /// The mechanisms in the server's challenge.
        offered: String,
        /// A mechanism that would work.
        suggestion: String,
    },
    /// Authenticated, but not allowed (HTTP 403). Every x-site endpoint needs ADMIN.
    #[error(
        "{endpoint}: 403 Forbidden for {what}; user '{user}' needs the admin role (every cross-site operation requires ADMIN)"
    )]
    Forbidden {
        /// The base URL.
        endpoint: String,
        /// The request (`POST /rest/v2/...`).
        what: String,
        /// The user name.
        user: String,
    },
    /// The cache does not exist on this site (HTTP 404, ISPN012010).
    #[error("{endpoint}: cache '{cache}' does not exist on this site; create it on both sites or drop it from the cache list")]
    UnknownCache {
        /// The base URL.
        endpoint: String,
        /// The missing cache.
        cache: CacheName,
    },
    /// The cache exists but has no cross-site backups (HTTP 404).
    #[error("{endpoint}: cache '{cache}' has no cross-site backups; it cannot be synchronized (drop it from the cache list)")]
    NoBackups {
        /// The base URL.
        endpoint: String,
        /// The cache without backups.
        cache: CacheName,
    },
    /// The site is not a backup of this cache (HTTP 404), or no cache backs up to it.
    #[error("{endpoint}: {} does not back up to site '{site}'; check the site names (the server's local_site values)", cache.as_ref().map(|c| format!("cache '{c}'")).unwrap_or_else(|| "no cache".to_owned()))]
    UnknownSite {
        /// The base URL.
        endpoint: String,
        /// The cache asked about, or `None` for a container-level call.
        cache: Option<CacheName>,
        /// The unknown site.
        site: SiteName,
    },
    /// Any other non-success answer, with the server's text.
    #[error("{endpoint}: {what} answered HTTP {status}: {}", if body.is_empty() { "(no body)" } else { body.as_str() })]
    Server {
        /// The base URL.
        endpoint: String,
        /// The request (`POST /rest/v2/...`).
        what: String,
        /// The HTTP status.
        status: u16,
        /// The body (plain text from Infinispan, e.g. `ISPN012047: Site operation on ... failed`).
        body: String,
    },
    /// The server answered something this client does not understand.
    #[error(
        "{endpoint}: unexpected answer to {what}: {detail}; is this an Infinispan REST endpoint (check the URL and context path)?"
    )]
    Protocol {
        /// The base URL.
        endpoint: String,
        /// The request.
        what: String,
        /// What was wrong with the answer.
        detail: String,
    },
    /// The server is a version this client does not know how to talk to.
    #[error("{endpoint}: Infinispan {version} is not supported (14.0 to 16.x are)")]
    UnsupportedVersion {
        /// The base URL.
        endpoint: String,
        /// The version it reported.
        version: String,
    },
}

impl Error {
    /// Whether trying the same read again later can succeed without anyone changing anything:
    /// network trouble and the server's "busy" answers. Protocol, auth and 404 errors are not.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::Interrupted { .. } | Self::Timeout { .. } => true,
            Self::Server { status, .. } => matches!(status, 502..=504),
            _ => false,
        }
    }

    /// Whether the server took the request and failed to produce its answer (a 5xx other than
    /// "busy", an answer cut off, one that does not parse): what a server does when it cannot
    /// render what it holds, so that another form of the same data may still be read. Not when
    /// the server is out of reach, slow, or refuses the caller.
    pub fn is_failed_answer(&self) -> bool {
        match self {
            Self::Interrupted { .. } | Self::Protocol { .. } => true,
            Self::Server { status, .. } => *status >= 500 && !matches!(status, 502..=504),
            _ => false,
        }
    }

    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Unauthorized { .. } => Some(401),
            Self::Forbidden { .. } => Some(403),
            Self::UnknownCache { .. } | Self::NoBackups { .. } | Self::UnknownSite { .. } => Some(404),
            Self::Server { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// What a request is about, so that a 404 can name the missing cache or site.
#[derive(Debug, Clone, Copy, Default)]
pub struct Subject<'a> {
    /// The cache in the path, if any.
    pub cache: Option<&'a CacheName>,
    /// The site in the path, if any.
    pub site: Option<&'a SiteName>,
}

impl Error {
    /// Classifies a non-success HTTP answer the way the server means it.
    ///
    /// Infinispan's error bodies are plain text; 404 in particular covers a missing cache
    /// (`ISPN012010`), a cache without backups, an unknown site, a missing key (empty body) and an
    /// unknown path, and only the body tells them apart. `fake-ispn` uses this same function for
    /// its in-memory API, so the fake and the HTTP client cannot disagree on error types.
    pub fn from_answer(endpoint: &str, what: &str, user: &str, status: u16, body: &str, subject: Subject<'_>) -> Self {
        let text = body.trim().to_owned();
        let endpoint = endpoint.to_owned();
        match status {
            401 => Self::Unauthorized { endpoint, user: user.to_owned() },
            403 => Self::Forbidden { endpoint, what: what.to_owned(), user: user.to_owned() },
            404 => {
                if let Some(cache) = subject.cache {
                    if text.contains("ISPN012010") || text.contains("not found amongst the configured caches") {
                        return Self::UnknownCache { endpoint, cache: cache.clone() };
                    }
                    if text.contains("does not have backup sites") {
                        return Self::NoBackups { endpoint, cache: cache.clone() };
                    }
                }
                if let Some(site) = subject.site
                    && (text.contains("does not backup to site") || text.is_empty())
                {
                    return Self::UnknownSite { endpoint, cache: subject.cache.cloned(), site: site.clone() };
                }
                Self::Server { endpoint, what: what.to_owned(), status, body: text }
            }
            _ => Self::Server { endpoint, what: what.to_owned(), status, body: text },
        }
    }

    /// A 404 with an empty body: a missing key (or, for a wrong context path, a missing resource).
    pub fn is_plain_not_found(&self) -> bool {
        matches!(self, Self::Server { status: 404, body, .. } if body.is_empty())
    }
}

/// Shorthand for results of site calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;
