//! Credentials embedded in URLs (`https://user:secret@host`) are never shown: every error text
//! built from a library's message, and every log line, passes through [`userinfo`].

use std::borrow::Cow;

/// What replaces the user information of a URL.
pub const REDACTED: &str = "<redacted>";

/// `text` with the user information of every URL in it (`scheme://user:password@host`)
/// replaced by [`REDACTED`]. Text without such a URL is returned as it is.
pub fn userinfo(text: &str) -> Cow<'_, str> {
    if !text.contains("://") || !text.contains('@') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // The authority ends where a path, query, fragment or the surrounding text begins.
        let end = tail.find(|c: char| matches!(c, '/' | '?' | '#' | '"' | '\'' | '`' | '<' | '>' | ')' | ']') || c.is_whitespace());
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
    }
}
