//! Credentials embedded in URLs (`https://user:secret@host`) are never shown: every error text
//! built from a library's message, and every log line, passes through [`userinfo`].

use std::borrow::Cow;

/// What replaces the user information of a URL.
pub const REDACTED: &str = "<redacted>";

/// `text` with the user information of every URL in it (`scheme://user:password@host`, or an
/// authority `user:password@host` on its own) replaced by [`REDACTED`]. Text without such a URL is returned as it is.
pub fn userinfo(text: &str) -> Cow<'_, str> {
    if !text.contains('@') {
        return Cow::Borrowed(text);
    }
    match in_urls(text) {
        Cow::Borrowed(text) => in_authorities(text),
        Cow::Owned(text) => Cow::Owned(in_authorities(&text).into_owned()),
    }
}

/// `user:password@host` without a scheme, as HTTP clients print a connection's authority.
fn in_authorities(text: &str) -> Cow<'_, str> {
    let boundary = |c: char| c.is_whitespace() || matches!(c, '(' | ')' | '"' | '\'' | ',' | '=' | '[' | '/' | '<' | '>' | '`');
    let mut out = String::new();
    let mut copied = 0;
    for (at, _) in text.match_indices('@') {
        if at < copied {
            continue;
        }
        let start = text[..at].rfind(boundary).map_or(0, |i| i + 1).max(copied);
        let user = &text[start..at];
        if user.contains(':') && !user.is_empty() {
            out.push_str(&text[copied..start]);
            out.push_str(REDACTED);
            copied = at;
        }
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

fn in_urls(text: &str) -> Cow<'_, str> {
    if !text.contains("://") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // The authority ends where a path, query, fragment or the surrounding text begins.
        let end =
            tail.find(|c: char| matches!(c, '/' | '?' | '#' | '"' | '\'' | '`' | '<' | '>' | ')' | ']') || c.is_whitespace());
        let authority = &tail[..end.unwrap_or(tail.len())];
        match authority.rfind('@') {
            Some(user_end) => {
                out.push_str(REDACTED);
                out.push_str(&authority[user_end..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[authority.len()..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::userinfo;

    #[test]
    fn only_the_user_information_of_a_url_is_replaced() {
        assert_eq!(userinfo("https://admin:s3cret@host:11222/rest"), "https://<redacted>@host:11222/rest");
        assert_eq!(userinfo("url (http://u@h/x) and https://a:b@c"), "url (http://<redacted>@h/x) and https://<redacted>@c");
        assert_eq!(userinfo("mail a@b.c, see http://host/x@y"), "mail a@b.c, see http://host/x@y");
        assert_eq!(userinfo("http://p:a@ss@host:1"), "http://<redacted>@host:1");
        assert_eq!(userinfo("no url here"), "no url here");
        assert_eq!(userinfo(r#"pool key ("http", admin:s3cret@127.0.0.1:80)"#), r#"pool key ("http", <redacted>@127.0.0.1:80)"#);
        assert_eq!(userinfo("write to ops@example.com"), "write to ops@example.com");
    }
}
