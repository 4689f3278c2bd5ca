//! Browser sessions: the cookie that carries one, and the cross-site rule for requests it
//! authenticates.
//!
//! A browser signs in once with an API key (`POST /api/v1/session`); the Worker answers with a
//! random session id in an `HttpOnly; SameSite=Strict` cookie and stores only the id's SHA-256
//! (with the key it came from, so the session carries the key's limits and ends with it). The
//! cookie then authenticates like a key, except that a state-changing request it authenticates
//! must come from the server's own pages: its `Origin` must be the request's own origin.

use base64::Engine;

use crate::keys::key_hash;

/// The cookie's name over plain http (the local server).
pub const COOKIE_NAME: &str = "condaflare_session";
/// The cookie's name over https: browsers keep a `__Host-` cookie only if it is `Secure`, has
/// `Path=/` and no `Domain`, so no other host (a sibling subdomain) nor plain http can set or
/// shadow it.
pub const SECURE_COOKIE_NAME: &str = "__Host-condaflare_session";

fn cookie_name(https: bool) -> &'static str {
    if https {
        SECURE_COOKIE_NAME
    } else {
        COOKIE_NAME
    }
}

/// A new secret for a cookie (a session id, a sign-in's state, nonce and PKCE verifier): 256
/// random bits, URL-safe.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the platform provides randomness");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The SHA-256 under which a session id is stored (the same digest as keys').
pub fn session_hash(id: &str) -> String {
    key_hash(id)
}

/// The session id in a `Cookie` header, if it carries one of the form [`random_secret`] makes
/// under the cookie's name for the scheme; anything else is no session.
pub fn session_from_cookies(cookie_header: &str, https: bool) -> Option<&str> {
    secret_from_cookies(cookie_header, cookie_name(https))
}

/// The value of the cookie `name` in a `Cookie` header, if it has the form [`random_secret`]
/// makes; anything else is no value.
pub fn secret_from_cookies<'a>(cookie_header: &'a str, name: &str) -> Option<&'a str> {
    cookie_header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(found, _)| *found == name)
        .map(|(_, value)| value.trim().trim_matches('"'))
        .filter(|value| {
            value.len() == 43
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The `Set-Cookie` value that gives the browser session `id` for `max_age_seconds`. `Secure`
/// only over https, so that the local server (plain http) can be signed in to.
pub fn session_cookie(id: &str, max_age_seconds: u64, https: bool) -> String {
    let secure = if https { "; Secure" } else { "" };
    let name = cookie_name(https);
    format!("{name}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age_seconds}{secure}")
}

/// The `Set-Cookie` value that makes the browser drop its session cookie.
pub fn cleared_cookie(https: bool) -> String {
    session_cookie("", 0, https)
}

/// Whether a request the session cookie authenticates must be refused as cross-site: a request
/// that may change something (any method but GET and HEAD) whose `Origin` is missing or is not
/// the request's own origin (`scheme://host[:port]`). Browsers send `Origin` with every such
/// request, so a page of the server always passes and a form or script elsewhere never does.
pub fn refused_as_cross_site(method: &str, origin: Option<&str>, own_origin: &str) -> bool {
    let changes = !matches!(method, "GET" | "HEAD");
    changes && (origin.is_none() || from_another_site(origin, own_origin))
}

/// Whether a request says it comes from a page of another origin. Signing in refuses these (a
/// page elsewhere must not sign a browser in to an account of its choosing); clients other
/// than browsers send no `Origin`.
pub fn from_another_site(origin: Option<&str>, own_origin: &str) -> bool {
    origin.is_some_and(|origin| !origin.eq_ignore_ascii_case(own_origin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_and_stored_as_hashes() {
        let (one, two) = (random_secret(), random_secret());
        assert_ne!(one, two);
        assert_eq!(one.len(), 43);
        assert_eq!(session_hash(&one).len(), 64);
        assert_ne!(session_hash(&one), one);
        // An id the server made is one the cookie parser accepts.
        let header = format!("{COOKIE_NAME}={one}");
        assert_eq!(session_from_cookies(&header, false), Some(one.as_str()));
    }

    #[test]
    fn the_session_is_found_among_other_cookies() {
        let id = "A".repeat(43);
        let header = format!("theme=dark; {COOKIE_NAME}={id}; other=1");
        assert_eq!(session_from_cookies(&header, false), Some(id.as_str()));
        let quoted = format!("{COOKIE_NAME}=\"{id}\"");
        assert_eq!(session_from_cookies(&quoted, false), Some(id.as_str()));
        let secure = format!("theme=dark; {SECURE_COOKIE_NAME}={id}");
        assert_eq!(session_from_cookies(&secure, true), Some(id.as_str()));
    }

    #[test]
    fn over_https_only_the_host_prefixed_cookie_counts() {
        let id = "A".repeat(43);
        // A cookie without the prefix may have been set by plain http or another subdomain.
        let plain = format!("{COOKIE_NAME}={id}");
        assert_eq!(session_from_cookies(&plain, true), None);
        let secure = format!("{SECURE_COOKIE_NAME}={id}");
        assert_eq!(session_from_cookies(&secure, false), None);
    }

    #[test]
    fn anything_else_is_no_session() {
        let id = "A".repeat(43);
        for header in [
            String::new(),
            "theme=dark".to_owned(),
            format!("{COOKIE_NAME}="),
            format!("{COOKIE_NAME}={}", "A".repeat(42)),
            format!("{COOKIE_NAME}={}", "A".repeat(44)),
            format!("{COOKIE_NAME}={}%27", "A".repeat(40)),
            format!("{COOKIE_NAME}={}'--", "A".repeat(40)),
            format!("x{COOKIE_NAME}={id}"),
            format!("{COOKIE_NAME}x={id}"),
        ] {
            assert_eq!(session_from_cookies(&header, false), None, "{header}");
        }
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_on_https() {
        let cookie = session_cookie("abc", 3600, true);
        assert_eq!(
            cookie,
            "__Host-condaflare_session=abc; HttpOnly; SameSite=Strict; Path=/; Max-Age=3600; Secure"
        );
        assert_eq!(
            session_cookie("abc", 3600, false),
            "condaflare_session=abc; HttpOnly; SameSite=Strict; Path=/; Max-Age=3600"
        );
        assert!(cleared_cookie(true).starts_with("__Host-condaflare_session=; "));
        assert!(cleared_cookie(false).starts_with("condaflare_session=; "));
        assert!(cleared_cookie(false).contains("Max-Age=0"));
    }

    #[test]
    fn changes_need_the_own_origin() {
        let own = "https://conda.example.com";
        assert!(!refused_as_cross_site("GET", None, own));
        assert!(!refused_as_cross_site(
            "HEAD",
            Some("https://evil.example"),
            own
        ));
        assert!(!refused_as_cross_site("POST", Some(own), own));
        assert!(!refused_as_cross_site(
            "DELETE",
            Some("HTTPS://CONDA.EXAMPLE.COM"),
            own
        ));
        for method in ["POST", "PUT", "PATCH", "DELETE"] {
            assert!(refused_as_cross_site(method, None, own), "{method}");
            assert!(refused_as_cross_site(method, Some("null"), own));
            assert!(refused_as_cross_site(
                method,
                Some("https://evil.example"),
                own
            ));
            // Another scheme or port is another origin.
            assert!(refused_as_cross_site(
                method,
                Some("http://conda.example.com"),
                own
            ));
            assert!(refused_as_cross_site(
                method,
                Some("https://conda.example.com:8443"),
                own
            ));
            assert!(refused_as_cross_site(
                method,
                Some("https://conda.example.com.evil.example"),
                own
            ));
        }
    }

    #[test]
    fn signing_in_refuses_only_another_site() {
        let own = "http://127.0.0.1:8787";
        assert!(!from_another_site(None, own));
        assert!(!from_another_site(Some(own), own));
        assert!(from_another_site(Some("http://localhost:8787"), own));
        assert!(from_another_site(Some("null"), own));
    }
}
