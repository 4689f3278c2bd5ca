//! Verifies a JWT from an identity provider (see [`crate::jwt`] for the rules): the issuer's
//! keys are fetched from its JWKS (found through its OpenID discovery document, or given), kept
//! in the isolate as long as their `Cache-Control` says within bounds, and fetched again once
//! when a token names a key they lack; the signature is checked by the runtime's WebCrypto.

use std::{cell::RefCell, collections::HashMap, rc::Rc};

use js_sys::{Object, Reflect, JSON};
use serde::{de::DeserializeOwned, Deserialize};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use worker::{Date, Fetch, Url};

use super::error::{ApiError, ApiResult, ErrorCode};
use crate::jwt::{
    check_claims, keys_lifetime_ms, parse, Algorithm, Claims, Expected, Jwk, Jwks, JwtError,
    SignedToken, MIN_REFETCH_INTERVAL_MS,
};

/// Where an issuer's keys are published.
#[derive(Debug, Clone, Copy)]
pub enum KeySource<'a> {
    /// At the `jwks_uri` of the issuer's `/.well-known/openid-configuration`.
    Discovery { issuer: &'a str },
    /// At this URL (Cloudflare Access's certs).
    Jwks { url: &'a str },
}

/// What an OpenID provider's discovery document says, of what this server uses.
#[derive(Debug, Clone, Deserialize)]
pub struct ProviderMetadata {
    pub issuer: String,
    pub jwks_uri: String,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
}

/// Discovery documents and key sets are small; anything bigger is refused unread.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

struct Fetched<T> {
    value: Rc<T>,
    fetched_at: u64,
    expires_at: u64,
}

thread_local! {
    static PROVIDERS: RefCell<HashMap<String, Fetched<ProviderMetadata>>> = RefCell::default();
    static KEY_SETS: RefCell<HashMap<String, Fetched<Jwks>>> = RefCell::default();
}

fn refused(error: JwtError) -> ApiError {
    ApiError::invalid_key(error.to_string())
}

fn upstream(url: &str, what: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::Upstream, format!("could not read {url}: {what}"))
}

/// A JSON document fetched now, with how long it may be kept.
async fn fetch_json<T: DeserializeOwned>(url: &str) -> ApiResult<(T, u64)> {
    let parsed = Url::parse(url).map_err(|_| upstream(url, "not a URL"))?;
    let mut response = Fetch::Url(parsed)
        .send()
        .await
        .map_err(|error| upstream(url, error))?;
    if response.status_code() != 200 {
        return Err(upstream(url, format!("HTTP {}", response.status_code())));
    }
    let lifetime = keys_lifetime_ms(response.headers().get("Cache-Control")?.as_deref());
    let bytes = response
        .bytes()
        .await
        .map_err(|error| upstream(url, error))?;
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(upstream(url, "the answer is too large"));
    }
    let value = serde_json::from_slice(&bytes).map_err(|error| upstream(url, error))?;
    Ok((value, lifetime))
}

/// The value cached under `url` unless it expired (or is younger than `fresher_than`), else
/// fetched now and cached.
async fn cached_document<T: DeserializeOwned>(
    cache: &'static std::thread::LocalKey<RefCell<HashMap<String, Fetched<T>>>>,
    url: &str,
    fetched_before: Option<u64>,
    check: impl Fn(&T) -> ApiResult<()>,
) -> ApiResult<Rc<T>> {
    let now = Date::now().as_millis();
    let hit = cache.with(|cache| {
        cache.borrow().get(url).and_then(|entry| {
            let stale = fetched_before.is_some_and(|before| entry.fetched_at < before);
            (entry.expires_at > now && !stale).then(|| entry.value.clone())
        })
    });
    if let Some(value) = hit {
        return Ok(value);
    }
    let (value, lifetime) = fetch_json::<T>(url).await?;
    check(&value)?;
    let value = Rc::new(value);
    cache.with(|cache| {
        cache.borrow_mut().insert(
            url.to_owned(),
            Fetched {
                value: value.clone(),
                fetched_at: now,
                expires_at: now + lifetime,
            },
        )
    });
    Ok(value)
}

/// The discovery document of `issuer`, which must name that same issuer.
pub async fn provider(issuer: &str) -> ApiResult<Rc<ProviderMetadata>> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    cached_document(&PROVIDERS, &url, None, |metadata: &ProviderMetadata| {
        if metadata.issuer == issuer {
            Ok(())
        } else {
            Err(upstream(&url, "it names another issuer"))
        }
    })
    .await
}

/// The key that must have signed `token`, from the key set at `url`; a `kid` the cached set
/// lacks makes one fetch of a fresh set (no more than one per [`MIN_REFETCH_INTERVAL_MS`]).
async fn signing_key(url: &str, token: &SignedToken) -> ApiResult<Jwk> {
    let keys = cached_document(&KEY_SETS, url, None, |_: &Jwks| Ok(())).await?;
    match keys.key_for(token) {
        Ok(key) => Ok(key.clone()),
        Err(JwtError::UnknownKey(_) | JwtError::NoFittingKey) => {
            let fresher_than = Date::now()
                .as_millis()
                .saturating_sub(MIN_REFETCH_INTERVAL_MS);
            let keys =
                cached_document(&KEY_SETS, url, Some(fresher_than), |_: &Jwks| Ok(())).await?;
            keys.key_for(token).cloned().map_err(refused)
        }
        Err(error) => Err(refused(error)),
    }
}

fn js_object(json: &serde_json::Value) -> ApiResult<Object> {
    JSON::parse(&json.to_string())
        .map(JsCast::unchecked_into)
        .map_err(|_| ApiError::internal())
}

/// Whether WebCrypto finds `token`'s signature made by `key`.
async fn signature_holds(key: &Jwk, token: &SignedToken) -> ApiResult<bool> {
    let crypto: web_sys::Crypto = Reflect::get(&js_sys::global(), &JsValue::from_str("crypto"))
        .map_err(|_| ApiError::internal())?
        .unchecked_into();
    let subtle = crypto.subtle();
    let (import, verify) = match token.algorithm {
        Algorithm::Rs256 => (
            serde_json::json!({"name": "RSASSA-PKCS1-v1_5", "hash": "SHA-256"}),
            serde_json::json!({"name": "RSASSA-PKCS1-v1_5"}),
        ),
        Algorithm::Es256 => (
            serde_json::json!({"name": "ECDSA", "namedCurve": "P-256"}),
            serde_json::json!({"name": "ECDSA", "hash": "SHA-256"}),
        ),
    };
    let usages = js_sys::Array::of1(&JsValue::from_str("verify"));
    let imported = subtle
        .import_key_with_object(
            "jwk",
            &js_object(&key.public_parameters())?,
            &js_object(&import)?,
            false,
            &usages,
        )
        .map_err(|_| ApiError::internal())?;
    // A published key WebCrypto cannot use is no key for this token.
    let Ok(crypto_key) = JsFuture::from(imported).await else {
        return Err(refused(JwtError::KeyMismatch(
            token.kid.clone().unwrap_or_default(),
        )));
    };
    let checked = subtle
        .verify_with_object_and_u8_array_and_u8_array(
            &js_object(&verify)?,
            &crypto_key.unchecked_into(),
            &token.signature,
            token.signing_input.as_bytes(),
        )
        .map_err(|_| ApiError::internal())?;
    Ok(JsFuture::from(checked)
        .await
        .is_ok_and(|valid| valid.as_bool() == Some(true)))
}

/// The claims of `token` if its signature is the issuer's and its claims meet `expected`;
/// otherwise a 401 whose sentence names the check that failed. The claims are read only after
/// the signature holds.
pub async fn verify(
    source: KeySource<'_>,
    token: &str,
    expected: &Expected<'_>,
) -> ApiResult<Claims> {
    let signed = parse(token).map_err(refused)?;
    let jwks_url = match source {
        KeySource::Discovery { issuer } => provider(issuer).await?.jwks_uri.clone(),
        KeySource::Jwks { url } => url.to_owned(),
    };
    let key = signing_key(&jwks_url, &signed).await?;
    if !signature_holds(&key, &signed).await? {
        return Err(refused(JwtError::BadSignature));
    }
    check_claims(signed.payload(), expected).map_err(refused)
}
