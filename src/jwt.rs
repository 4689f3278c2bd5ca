//! JSON Web Tokens from identity providers (CI runners' OIDC tokens, OpenID Connect id tokens,
//! Cloudflare Access assertions): what a token must look like, which of the issuer's keys must
//! have signed it, and the rules its claims must meet. The signature itself is checked by the
//! runtime's WebCrypto (`edge::jwt`); everything here is plain Rust, tested natively.
//!
//! Only RS256 and ES256 are accepted, and the algorithm must fit the key the issuer published
//! under the token's `kid`: `alg: none`, HMAC with a public key as secret, and a token naming a
//! key of another kind are refused before any signature is checked. Header fields that point at
//! keys (`jku`, `jwk`, `x5u`, `x5c`) are never followed; the keys come from the issuer's JWKS.

use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value};

/// How far clocks may disagree when `exp`, `nbf` and `iat` are checked, in seconds.
pub const LEEWAY_SECONDS: u64 = 60;

/// Tokens longer than this are refused unread (real ones are 1–3 KB).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// How long an issuer's key set is kept when its answer says nothing else, and the bounds any
/// `Cache-Control: max-age` is held to (milliseconds).
pub const DEFAULT_KEYS_LIFETIME_MS: u64 = 10 * 60 * 1000;
pub const MIN_KEYS_LIFETIME_MS: u64 = 60 * 1000;
pub const MAX_KEYS_LIFETIME_MS: u64 = 24 * 3600 * 1000;

/// A key set younger than this is not fetched again for an unknown `kid`, so tokens naming
/// random keys cannot make every request a fetch (milliseconds).
pub const MIN_REFETCH_INTERVAL_MS: u64 = 5_000;

/// Why a token is refused. Each sentence names the check that failed, and nothing else.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("the token is not a signed JWT ({0})")]
    Malformed(&'static str),
    #[error("unsigned tokens (alg none) are refused")]
    Unsigned,
    #[error("tokens signed with '{0}' are refused; only RS256 and ES256 are accepted")]
    Algorithm(String),
    #[error("the token's header has fields this server does not understand (crit)")]
    Critical,
    #[error("the token names no signing key (kid), and the issuer has several")]
    NoKeyId,
    #[error("the issuer has no key with the id '{0}'")]
    UnknownKey(String),
    #[error("the token names no signing key (kid), and the issuer has none for its algorithm")]
    NoFittingKey,
    #[error("the issuer's key '{0}' is not a key for the token's algorithm")]
    KeyMismatch(String),
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token's claims are not a JSON object")]
    Claims,
    #[error("the token has no '{0}' claim")]
    MissingClaim(&'static str),
    #[error("the token's '{0}' claim is malformed")]
    MalformedClaim(&'static str),
    #[error("the token was issued by '{found}', not by '{expected}'")]
    Issuer { found: String, expected: String },
    #[error("the token's audience ({found}) is not one this server accepts ({expected})")]
    Audience { found: String, expected: String },
    #[error("the token expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token claims to be issued in the future (iat)")]
    IssuedInFuture,
}

/// The signature algorithms accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// ECDSA on P-256 with SHA-256; the signature is `r || s`, 64 bytes.
    Es256,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    crit: Option<Value>,
}

/// A token split into its parts, its signature not yet checked.
#[derive(Debug, Clone)]
pub struct SignedToken {
    pub algorithm: Algorithm,
    /// The signing key's id; `None` when the header names none, which only an issuer with a
    /// single key for the algorithm can have meant.
    pub kid: Option<String>,
    /// `<header>.<payload>` as received: the bytes the signature covers.
    pub signing_input: String,
    pub signature: Vec<u8>,
    payload: Vec<u8>,
}

fn decode_part(part: &str, what: &'static str) -> Result<Vec<u8>, JwtError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtError::Malformed(what))
}

/// Splits a compact JWS and reads its header; refuses what no signature check could accept.
pub fn parse(token: &str) -> Result<SignedToken, JwtError> {
    let token = token.trim();
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::Malformed(
            "longer than any token this server accepts",
        ));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed("not three dot-separated parts"));
    };
    let header: Header =
        serde_json::from_slice(&decode_part(header, "header is not base64url")?)
            .map_err(|_| JwtError::Malformed("header is not a JSON object with an alg"))?;
    let algorithm = match header.alg.as_str() {
        "RS256" => Algorithm::Rs256,
        "ES256" => Algorithm::Es256,
        none if none.eq_ignore_ascii_case("none") => return Err(JwtError::Unsigned),
        other => return Err(JwtError::Algorithm(shorten(other))),
    };
    if header.crit.is_some() {
        return Err(JwtError::Critical);
    }
    let signature = decode_part(signature, "signature is not base64url")?;
    if signature.is_empty() {
        return Err(JwtError::Unsigned);
    }
    if algorithm == Algorithm::Es256 && signature.len() != 64 {
        return Err(JwtError::BadSignature);
    }
    Ok(SignedToken {
        algorithm,
        kid: header
            .kid
            .filter(|kid| !kid.is_empty())
            .map(|kid| shorten(&kid)),
        signing_input: token[..token.rfind('.').expect("three parts")].to_owned(),
        signature,
        payload: decode_part(payload, "payload is not base64url")?,
    })
}

/// Text from a token, cut short before it is echoed in an error.
fn shorten(text: &str) -> String {
    text.chars().take(64).collect()
}

impl SignedToken {
    /// The issuer the token claims, before anything is verified: only to choose whose keys to
    /// verify it with. [`check_claims`] checks it again once the signature holds.
    pub fn claimed_issuer(&self) -> Option<String> {
        let claims: Value = serde_json::from_slice(&self.payload).ok()?;
        claims.get("iss")?.as_str().map(str::to_owned)
    }

    pub fn payload(&self) -> &[u8] {
        &self.payload
    }
}

/// One public key of an issuer's JWKS.
#[derive(Debug, Clone, Deserialize)]
pub struct Jwk {
    pub kty: String,
    pub kid: Option<String>,
    pub alg: Option<String>,
    #[serde(rename = "use")]
    pub usage: Option<String>,
    pub crv: Option<String>,
    pub n: Option<String>,
    pub e: Option<String>,
    pub x: Option<String>,
    pub y: Option<String>,
}

/// An issuer's published keys (`{"keys": […]}`). Keys of kinds this server does not use are
/// kept but never chosen.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

impl Jwks {
    /// The key that must have signed `token`: the one under its `kid`, of the kind its
    /// algorithm needs, meant for signatures. A token naming no key may only have been signed
    /// by the issuer's one key of that kind (RFC 7515 makes `kid` optional; some providers
    /// leave it out when they have a single key).
    pub fn key_for(&self, token: &SignedToken) -> Result<&Jwk, JwtError> {
        let Some(kid) = &token.kid else {
            let mut fitting = self.keys.iter().filter(|key| key.fits(token.algorithm));
            return match (fitting.next(), fitting.next()) {
                (Some(key), None) => Ok(key),
                (None, _) => Err(JwtError::NoFittingKey),
                (Some(_), Some(_)) => Err(JwtError::NoKeyId),
            };
        };
        let key = self
            .keys
            .iter()
            .find(|key| key.kid.as_deref() == Some(kid.as_str()))
            .ok_or_else(|| JwtError::UnknownKey(kid.clone()))?;
        if key.fits(token.algorithm) {
            Ok(key)
        } else {
            Err(JwtError::KeyMismatch(kid.clone()))
        }
    }
}

impl Jwk {
    /// Whether this is a public key for signatures of `algorithm`.
    fn fits(&self, algorithm: Algorithm) -> bool {
        let (kty, alg) = match algorithm {
            Algorithm::Rs256 => ("RSA", "RS256"),
            Algorithm::Es256 => ("EC", "ES256"),
        };
        self.kty == kty
            && self.alg.as_deref().is_none_or(|a| a == alg)
            && self.usage.as_deref().is_none_or(|u| u == "sig")
            && match algorithm {
                Algorithm::Rs256 => self.n.is_some() && self.e.is_some(),
                Algorithm::Es256 => {
                    self.crv.as_deref() == Some("P-256") && self.x.is_some() && self.y.is_some()
                }
            }
    }

    /// The key's public parameters alone, as WebCrypto imports a JWK.
    pub fn public_parameters(&self) -> Value {
        let mut jwk = Map::new();
        jwk.insert("kty".into(), self.kty.clone().into());
        for (name, value) in [
            ("n", &self.n),
            ("e", &self.e),
            ("crv", &self.crv),
            ("x", &self.x),
            ("y", &self.y),
        ] {
            if let Some(value) = value {
                jwk.insert(name.into(), value.clone().into());
            }
        }
        Value::Object(jwk)
    }
}

/// How long a key set answered with `cache_control` is kept (see the bounds above).
pub fn keys_lifetime_ms(cache_control: Option<&str>) -> u64 {
    let max_age = cache_control.and_then(|value| {
        value.split(',').find_map(|directive| {
            let (name, seconds) = directive.trim().split_once('=')?;
            (name.trim().eq_ignore_ascii_case("max-age"))
                .then(|| seconds.trim().trim_matches('"').parse::<u64>().ok())?
        })
    });
    max_age.map_or(DEFAULT_KEYS_LIFETIME_MS, |seconds| {
        seconds
            .saturating_mul(1000)
            .clamp(MIN_KEYS_LIFETIME_MS, MAX_KEYS_LIFETIME_MS)
    })
}

/// What a verified token must claim.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// `iss`, exactly.
    pub issuer: &'a str,
    /// `aud` must name at least one of these.
    pub audiences: &'a [String],
    /// Seconds since the epoch.
    pub now: u64,
}

/// A verified token's claims: the registered ones read, all of them kept in `extra`.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    pub iss: String,
    pub sub: Option<String>,
    pub aud: Vec<String>,
    pub exp: u64,
    pub nbf: Option<u64>,
    pub iat: Option<u64>,
    pub jti: Option<String>,
    /// Every claim, the registered ones included.
    pub extra: Map<String, Value>,
}

impl Claims {
    /// A string claim, if the token has it.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.extra.get(name).and_then(Value::as_str)
    }
}

fn seconds(claims: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, JwtError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(value) if value.is_finite() && value >= 0.0 => Ok(Some(value as u64)),
            _ => Err(JwtError::MalformedClaim(name)),
        },
        Some(_) => Err(JwtError::MalformedClaim(name)),
    }
}

fn text(claims: &Map<String, Value>, name: &'static str) -> Result<Option<String>, JwtError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(JwtError::MalformedClaim(name)),
    }
}

/// Checks the claims of a token whose signature held: issuer, audience, expiry, not-before and
/// issued-at (the last three within [`LEEWAY_SECONDS`]). `exp` is required: a token that never
/// expires is refused.
pub fn check_claims(payload: &[u8], expected: &Expected) -> Result<Claims, JwtError> {
    let Ok(Value::Object(claims)) = serde_json::from_slice(payload) else {
        return Err(JwtError::Claims);
    };
    let iss = text(&claims, "iss")?.ok_or(JwtError::MissingClaim("iss"))?;
    if iss != expected.issuer {
        return Err(JwtError::Issuer {
            found: shorten(&iss),
            expected: expected.issuer.to_owned(),
        });
    }
    let aud = match claims.get("aud") {
        Some(Value::String(one)) => vec![one.clone()],
        Some(Value::Array(many)) => many
            .iter()
            .map(|a| a.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or(JwtError::MalformedClaim("aud"))?,
        None | Some(Value::Null) => return Err(JwtError::MissingClaim("aud")),
        Some(_) => return Err(JwtError::MalformedClaim("aud")),
    };
    if !aud.iter().any(|a| expected.audiences.contains(a)) {
        return Err(JwtError::Audience {
            found: shorten(&aud.join(", ")),
            expected: expected.audiences.join(", "),
        });
    }
    let exp = seconds(&claims, "exp")?.ok_or(JwtError::MissingClaim("exp"))?;
    if expected.now >= exp.saturating_add(LEEWAY_SECONDS) {
        return Err(JwtError::Expired);
    }
    let nbf = seconds(&claims, "nbf")?;
    if nbf.is_some_and(|nbf| nbf > expected.now + LEEWAY_SECONDS) {
        return Err(JwtError::NotYetValid);
    }
    let iat = seconds(&claims, "iat")?;
    if iat.is_some_and(|iat| iat > expected.now + LEEWAY_SECONDS) {
        return Err(JwtError::IssuedInFuture);
    }
    Ok(Claims {
        iss,
        sub: text(&claims, "sub")?,
        aud,
        exp,
        nbf,
        iat,
        jti: text(&claims, "jti")?,
        extra: claims,
    })
}
