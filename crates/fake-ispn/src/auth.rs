//! Server-side BASIC and DIGEST, answering like Infinispan's Elytron integration: a 401 carries
//! one `WWW-Authenticate` per offered mechanism; a failed attempt is answered with a fresh
//! challenge of the mechanism that was tried.

use std::collections::HashSet;

use base64::Engine as _;
use digest_auth::{AuthContext, AuthorizationHeader, HttpMethod};
use http::HeaderValue;

use crate::spec::{AuthMechanism, User};

/// Nonces handed out by one site.
#[derive(Debug, Default)]
pub(crate) struct NonceBook {
    issued: HashSet<String>,
    counter: u64,
}

impl NonceBook {
    fn issue(&mut self) -> String {
        self.counter += 1;
        let nonce = base64::engine::general_purpose::STANDARD.encode(format!("fake-ispn-nonce-{:016x}", self.counter));
        self.issued.insert(nonce.clone());
        nonce
    }
}

/// The outcome of checking a request's credentials.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Authenticated as this user.
    User(String),
    /// Answer 401 with challenges for these mechanisms.
    Challenge(Vec<AuthMechanism>),
    /// The digest `uri` does not match the request target: the server answers 400.
    BadUri,
}

pub(crate) fn challenge(book: &mut NonceBook, mechanism: AuthMechanism) -> HeaderValue {
    let value = match mechanism {
        AuthMechanism::Basic => "Basic realm=\"default\"".to_owned(),
        AuthMechanism::DigestMd5 | AuthMechanism::DigestSha256 => {
            let algorithm = if mechanism == AuthMechanism::DigestMd5 { "MD5" } else { "SHA-256" };
            format!(
                "Digest realm=\"default\", nonce=\"{}\", opaque=\"00000000000000000000000000000000\", algorithm={algorithm}, qop=auth",
                book.issue()
            )
        }
    };
    HeaderValue::from_str(&value).expect("challenge headers are ASCII")
}

pub(crate) fn verify(
    book: &NonceBook,
    offered: &[AuthMechanism],
    users: impl Fn(&str) -> Option<User>,
    method: &http::Method,
    target: &str,
    authorization: Option<&str>,
) -> Verdict {
    let Some(header) = authorization else { return Verdict::Challenge(offered.to_vec()) };
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") && offered.contains(&AuthMechanism::Basic) {
        let decoded = base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok().and_then(|b| String::from_utf8(b).ok());
        if let Some((user, password)) = decoded.as_deref().and_then(|d| d.split_once(':'))
            && users(user).is_some_and(|u| u.password == password)
        {
            return Verdict::User(user.to_owned());
        }
        return Verdict::Challenge(vec![AuthMechanism::Basic]);
    }
    let digests: Vec<AuthMechanism> =
        offered.iter().copied().filter(|m| matches!(m, AuthMechanism::DigestMd5 | AuthMechanism::DigestSha256)).collect();
    if scheme.eq_ignore_ascii_case("digest") && !digests.is_empty() {
        let Ok(presented) = AuthorizationHeader::parse(rest) else { return Verdict::Challenge(digests) };
        let algorithm_offered = digests.iter().any(|m| {
            let name = if *m == AuthMechanism::DigestMd5 { "MD5" } else { "SHA-256" };
            presented.algorithm.to_string() == name
        });
        if !algorithm_offered || !book.issued.contains(&presented.nonce) {
            return Verdict::Challenge(digests);
        }
        if presented.uri != target {
            return Verdict::BadUri;
        }
        let Some(user) = users(&presented.username) else { return Verdict::Challenge(digests) };
        let mut expected = presented.clone();
        let context = AuthContext::new_with_method(
            user.name.as_str(),
            user.password.as_str(),
            target,
            Option::<&[u8]>::None,
            HttpMethod::from(method.as_str().to_owned()),
        );
        expected.digest(&context);
        if expected.response == presented.response {
            return Verdict::User(user.name);
        }
        return Verdict::Challenge(digests);
    }
    // A scheme the server does not offer is treated as no credentials at all.
    Verdict::Challenge(offered.to_vec())
}
