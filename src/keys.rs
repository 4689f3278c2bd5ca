//! API keys: their format, how they are stored, and how a request presents one.
//!
//! A key is shown once; D1 keeps only its SHA-256 and a short prefix for recognition. The
//! Worker and the admin command make keys with the same function.

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult};

/// How many leading characters of a key are stored for recognition.
pub const PREFIX_CHARS: usize = 12;

/// What every new key starts with, so a key is recognizable wherever it turns up.
pub const KEY_PREFIX: &str = "cfk-";

/// The characters of a key's random part. Letters and digits are what every client carries
/// unchanged: conda's and libmamba's `/t/<token>/` parsers end a token at the first character
/// outside `[A-Za-z0-9-]` (libmamba also takes `_`, but only as one of the first two), URL
/// userinfo needs no escaping for them, and neither do JSON auth files or headers.
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// 43 characters of 62 carry 43 × log2(62) ≈ 256.03 random bits, as many as keys had before.
const RANDOM_CHARS: usize = 43;

/// A new API key: [`KEY_PREFIX`] and [`RANDOM_CHARS`] characters drawn uniformly from
/// [`ALPHABET`].
pub fn new_key() -> String {
    // 248 = 4 × 62: bytes below it map onto the alphabet evenly; the rest are drawn again.
    const UNBIASED_BELOW: u8 = 248;
    let mut key = String::with_capacity(KEY_PREFIX.len() + RANDOM_CHARS);
    key.push_str(KEY_PREFIX);
    let mut bytes = [0u8; 64];
    while key.len() < KEY_PREFIX.len() + RANDOM_CHARS {
        getrandom::fill(&mut bytes).expect("the platform provides randomness");
        for byte in bytes.iter().filter(|&&b| b < UNBIASED_BELOW) {
            if key.len() == KEY_PREFIX.len() + RANDOM_CHARS {
                break;
            }
            key.push(char::from(ALPHABET[usize::from(byte % 62)]));
        }
    }
    key
}

/// Whether `key` has the shape of a key this server made, now ([`new_key`]) or in the earlier
/// format (`cfk_` and 43 URL-safe base64 characters). Anything else is refused without a
/// lookup, so garbage costs no D1 query.
pub fn has_key_shape(key: &str) -> bool {
    let Some(random) = key.get(KEY_PREFIX.len()..) else {
        return false;
    };
    random.len() == RANDOM_CHARS
        && if key.starts_with(KEY_PREFIX) {
            random.bytes().all(|b| b.is_ascii_alphanumeric())
        } else {
            key.starts_with("cfk_")
                && random
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        }
}

/// The SHA-256 under which a key is stored.
pub fn key_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The part of a key kept in clear, so its owner can tell keys apart.
pub fn key_prefix(key: &str) -> &str {
    let end = key
        .char_indices()
        .nth(PREFIX_CHARS)
        .map_or(key.len(), |(at, _)| at);
    &key[..end]
}

/// The credential headers of a request, as received.
#[derive(Debug, Default, Clone, Copy)]
pub struct PresentedCredentials<'a> {
    /// The key of a `/t/<key>/` path prefix (conda's token-in-URL form).
    pub path_token: Option<&'a str>,
    pub authorization: Option<&'a str>,
    pub x_api_key: Option<&'a str>,
}

impl PresentedCredentials<'_> {
    /// The key carried in any of the forms clients send: the path token, `Authorization:
    /// Bearer` (or anaconda.org's `token`), `Authorization: Basic` with the key as password
    /// (any user name), or `X-API-Key`. An Authorization header that is present but unusable is an error, not
    /// an absence, so a misconfigured client learns of it.
    pub fn key(&self) -> ApiResult<Option<String>> {
        if let Some(token) = self.path_token {
            return Ok(Some(token.to_owned()));
        }
        if let Some(value) = self.authorization {
            let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
            let rest = rest.trim();
            // `token` is anaconda.org's scheme, which its upload clients send.
            let is_token_scheme =
                scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token");
            if is_token_scheme && !rest.is_empty() {
                return Ok(Some(rest.to_owned()));
            }
            if scheme.eq_ignore_ascii_case("basic") {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(rest)
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .ok_or_else(|| ApiError::invalid_key("malformed Basic credentials"))?;
                let (_, password) = decoded.split_once(':').unwrap_or(("", &decoded));
                return Ok(Some(password.to_owned()));
            }
            return Err(ApiError::invalid_key(
                "unsupported Authorization scheme; send 'Bearer <key>'",
            ));
        }
        Ok(self
            .x_api_key
            .filter(|key| !key.is_empty())
            .map(str::to_owned))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_keys_of_either_format_have_the_shape() {
        for _ in 0..100 {
            assert!(has_key_shape(&new_key()));
        }
        assert!(has_key_shape(&format!(
            "cfk_{}",
            "-_aZ9".repeat(9)[..43].to_owned()
        )));
        let new = new_key();
        for wrong in [
            String::new(),
            "cfk-".into(),
            "nope".into(),
            new[..46].to_owned(),
            format!("{new}x"),
            new.replacen("cfk-", "cfx-", 1),
            format!("cfk-{}", "_".repeat(43)),
            format!("cfk-{}é", &new[4..45]),
        ] {
            assert!(!has_key_shape(&wrong), "{wrong}");
        }
    }

    #[test]
    fn keys_are_random_prefixed_and_stored_as_hashes() {
        let (one, two) = (new_key(), new_key());
        assert_ne!(one, two);
        assert!(one.starts_with("cfk-"));
        assert_eq!(one.len(), 4 + 43);
        assert_eq!(key_hash(&one).len(), 64);
        assert_eq!(key_prefix(&one), &one[..12]);
        assert_eq!(key_prefix("short"), "short");
    }

    /// The token conda finds in a URL, and the URL it fetches without it: `split_anaconda_token`
    /// in conda/common/url.py, `re.search(r"/t/([a-zA-Z0-9-]*)", url)` then
    /// `url.replace("/t/" + token, "", 1)`.
    fn conda_split_token(url: &str) -> Option<(String, &str)> {
        let start = url.find("/t/")? + 3;
        let rest = &url[start..];
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .unwrap_or(rest.len());
        let token = &rest[..len];
        Some((url.replacen(&format!("/t/{token}"), "", 1), token))
    }

    /// The same for libmamba 1.5 (its `token_regex`, in libmamba/src/core/util.cpp):
    /// `/t/([a-zA-Z0-9-_]{0,2}[a-zA-Z0-9-]*)`, searched with greedy quantifiers, so up to two
    /// characters that may include `_`, then as many of `[a-zA-Z0-9-]` as follow.
    fn libmamba_split_token(url: &str) -> Option<(String, &str)> {
        let start = url.find("/t/")? + 3;
        let rest = &url.as_bytes()[start..];
        let head = rest
            .iter()
            .take(2)
            .take_while(|&&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            .count();
        let tail = rest[head..]
            .iter()
            .take_while(|&&b| b.is_ascii_alphanumeric() || b == b'-')
            .count();
        let token = &url[start..start + head + tail];
        Some((url.replacen(&format!("/t/{token}"), "", 1), token))
    }

    /// RFC 3986 `unreserved`: what a URL's userinfo (Basic credentials in the URL) carries
    /// without percent-encoding.
    fn url_unreserved(key: &str) -> bool {
        key.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
    }

    #[test]
    fn new_keys_survive_every_client_grammar() {
        let mut seen = std::collections::HashSet::new();
        let mut characters = std::collections::HashSet::new();
        for _ in 0..5_000 {
            let key = new_key();
            let url = format!("http://127.0.0.1:8787/t/{key}/team/noarch/repodata.json");
            let expected = "http://127.0.0.1:8787/team/noarch/repodata.json".to_owned();
            assert_eq!(conda_split_token(&url), Some((expected.clone(), &*key)));
            assert_eq!(libmamba_split_token(&url), Some((expected, &*key)));
            assert!(url_unreserved(&key), "{key}");
            assert_eq!(serde_json::to_string(&key).unwrap(), format!("\"{key}\""));
            assert!(key.starts_with(KEY_PREFIX) && key.len() == KEY_PREFIX.len() + RANDOM_CHARS);
            characters.extend(key[KEY_PREFIX.len()..].chars());
            assert!(seen.insert(key), "a key came twice");
        }
        // Every character of the alphabet is drawn: none is lost to the mapping of bytes.
        assert_eq!(characters.len(), 62);
    }

    #[test]
    fn keys_of_the_old_format_break_the_token_parsers() {
        // What `cfk_` + URL-safe base64 keys did in a `/t/` URL: both parsers cut the token at
        // the underscore and fetch a URL with the rest of the key glued to the host.
        let url = "http://127.0.0.1:8940/t/cfk_8UfB-x_y/team";
        assert_eq!(
            conda_split_token(url),
            Some(("http://127.0.0.1:8940_8UfB-x_y/team".to_owned(), "cfk"))
        );
        assert_eq!(
            libmamba_split_token(url),
            Some(("http://127.0.0.1:8940_8UfB-x_y/team".to_owned(), "cfk"))
        );
        // libmamba takes an underscore among a token's first two characters, conda does not.
        assert_eq!(libmamba_split_token("/t/_a-b/c").map(|t| t.1), Some("_a-b"));
        assert_eq!(conda_split_token("/t/_a-b/c").map(|t| t.1), Some(""));
        assert!(!url_unreserved("cfk+abc/="));
    }

    #[test]
    fn every_form_a_client_sends() {
        let key = |credentials: PresentedCredentials| credentials.key();
        let basic = base64::engine::general_purpose::STANDARD.encode("anyone:cfk_secret");
        let cases = [
            (Some("cfk_path"), None, None, Some("cfk_path")),
            (None, Some("Bearer cfk_b"), None, Some("cfk_b")),
            (None, Some("bearer  cfk_b "), None, Some("cfk_b")),
            (None, Some("token cfk_t"), None, Some("cfk_t")),
            (
                None,
                Some(&*format!("Basic {basic}")),
                None,
                Some("cfk_secret"),
            ),
            (None, None, Some("cfk_x"), Some("cfk_x")),
            (None, None, Some(""), None),
            (None, None, None, None),
            // The path token wins: it is what conda sends, whatever else is set.
            (
                Some("cfk_path"),
                Some("Bearer cfk_b"),
                None,
                Some("cfk_path"),
            ),
        ];
        for (path_token, authorization, x_api_key, expected) in cases {
            let got = key(PresentedCredentials {
                path_token,
                authorization,
                x_api_key,
            });
            assert_eq!(got, Ok(expected.map(str::to_owned)), "{authorization:?}");
        }
        for bad in ["Digest abc", "Basic !!!", "Bearer", "token"] {
            let got = key(PresentedCredentials {
                authorization: Some(bad),
                ..Default::default()
            });
            assert_eq!(got.unwrap_err().status(), 401, "{bad}");
        }
    }
}
