//! API keys: their format, how they are stored, and how a request presents one.
//!
//! A key is shown once; D1 keeps only its SHA-256 and a short prefix for recognition. The
//! Worker and the admin command make keys with the same function.

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult};

/// How many leading characters of a key are stored for recognition.
pub const PREFIX_CHARS: usize = 12;

/// A new API key: a recognizable prefix and 256 random bits.
pub fn new_key() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the platform provides randomness");
    format!(
        "cfk_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
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
    fn keys_are_random_prefixed_and_stored_as_hashes() {
        let (one, two) = (new_key(), new_key());
        assert_ne!(one, two);
        assert!(one.starts_with("cfk_"));
        assert_eq!(one.len(), 4 + 43);
        assert_eq!(key_hash(&one).len(), 64);
        assert_eq!(key_prefix(&one), &one[..12]);
        assert_eq!(key_prefix("short"), "short");
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
