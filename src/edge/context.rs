//! What one request carries through its handler, built once in `fetch`: the deployment's
//! settings (read once), the request itself, the caller's key (verified at most once, and only
//! when a handler asks), and typed access to the bindings. Handlers take a [`RequestContext`]
//! and nothing else of the platform's; [`super::auth`] adds to it what the caller may do.

use std::cell::OnceCell;

use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use worker::{Bucket, ByteStream, Context, Env, Fetcher, Request};

use super::auth::{self, Channel, Principal};
use super::channel_index::ChannelIndexClient;
use super::db::Db;
use super::error::{internal, ApiError, ApiResult, ErrorCode};
use super::r2_counter;
use crate::access::Action;
use crate::config::Config;
use crate::keys::PresentedCredentials;
use crate::session::{from_another_site, refused_as_cross_site, session_from_cookies};
use crate::signin::SignInConfig;
use crate::trusted_publishing::Settings;

/// The management API's JSON bodies are small; anything larger is refused unread.
const MAX_JSON_BODY: u64 = 64 * 1024;

pub struct RequestContext {
    env: Env,
    req: Request,
    /// The runtime's hold on the request, for work that may finish after the answer is sent.
    lifetime: Context,
    config: Config,
    /// The request's headers, read from the runtime once (names in lower case, as `Headers`
    /// iterates them), so each lookup after is plain Rust with no call into the runtime.
    headers: Vec<(String, String)>,
    /// The key of a `/t/<key>/` path prefix, which the router has already cut from the path.
    path_token: Option<String>,
    /// The caller once resolved (`Ok(None)`: no key presented), so a key is verified once.
    caller: OnceCell<ApiResult<Option<Principal>>>,
}

/// What a request that writes packages into a channel knows before it reads its body.
pub struct ChannelWrite {
    pub caller: Principal,
    pub channel: Channel,
    /// `?force=true`: replace a file of the same name with other content.
    pub force: bool,
    /// The body's announced length, within the upload limit.
    pub length: u64,
}

/// A header value with a control character other than tab (RFC 9110 allows none) is refused
/// before any route sees it: workerd itself refuses only a NUL, in plain text.
fn refuse_control_characters(headers: &[(String, String)]) -> ApiResult<()> {
    for (name, value) in headers {
        if value.chars().any(|c| c.is_ascii_control() && c != '\t') {
            return Err(ApiError::bad_request(format!(
                "the {name} header contains a control character"
            )));
        }
    }
    Ok(())
}

thread_local! {
    /// The settings, read once per isolate: a deployment's variables do not change while it runs.
    static CONFIG: OnceCell<Config> = const { OnceCell::new() };
}

/// The deployment's settings; a malformed one is a 500 (with the detail in the log), since no
/// request can be answered right under it.
fn isolate_config(env: &Env) -> ApiResult<Config> {
    if let Some(config) = CONFIG.with(|cell| cell.get().copied()) {
        return Ok(config);
    }
    let config = Config::from_vars(|name| env.var(name).ok().map(|value| value.to_string()))
        .map_err(|message| internal(format!("configuration: {message}")))?;
    CONFIG.with(|cell| cell.set(config).ok());
    Ok(config)
}

fn cross_site_refused() -> ApiError {
    ApiError::forbidden("cross-site request refused")
}

impl RequestContext {
    /// The context of `req`; a malformed setting is a 500 (see [`isolate_config`]).
    pub fn new(
        env: Env,
        req: Request,
        lifetime: Context,
        path_token: Option<&str>,
    ) -> ApiResult<Self> {
        let config = isolate_config(&env)?;
        let headers: Vec<(String, String)> = req.headers().entries().collect();
        refuse_control_characters(&headers)?;
        Ok(Self {
            env,
            req,
            lifetime,
            config,
            headers,
            path_token: path_token.map(str::to_owned),
            caller: OnceCell::new(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The identity sign-in methods and `ADMIN_IDENTITIES` ([`SignInConfig`]), read when a
    /// route needs them; a malformed setting is a 500, as for [`Config`].
    pub fn sign_in_config(&self) -> ApiResult<SignInConfig> {
        SignInConfig::from_vars(|name| self.env.var(name).ok().map(|value| value.to_string()))
            .map_err(|message| internal(format!("configuration: {message}")))
    }

    /// The trusted-publishing settings, read when a route needs them.
    pub fn trusted_publishing(&self) -> ApiResult<Settings> {
        Settings::from_vars(|name| self.env.var(name).ok().map(|value| value.to_string()))
            .map_err(|message| internal(format!("configuration: {message}")))
    }

    /// A request header's value (a repeated header's values joined by ", ", as `Headers.get`
    /// answers).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(candidate, _)| candidate.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn req(&self) -> &Request {
        &self.req
    }

    /// The packages bucket, its operations counted ([`super::r2_counter`]).
    pub fn bucket(&self) -> ApiResult<Bucket> {
        Ok(r2_counter::counted(self.env.bucket("PACKAGES")?))
    }

    /// Runs `work` to its end even after the answer has been sent.
    pub fn wait_until(&self, work: impl std::future::Future<Output = ()> + 'static) {
        self.lifetime.wait_until(work);
    }

    pub fn db(&self) -> ApiResult<Db> {
        Ok(Db::new(self.env.d1("DB")?))
    }

    /// The web app's static files.
    pub fn assets(&self) -> ApiResult<Fetcher> {
        Ok(self.env.assets("ASSETS")?)
    }

    /// Whether the key came in the path (`/t/<key>/...`).
    pub fn has_path_token(&self) -> bool {
        self.path_token.is_some()
    }

    pub fn channel_index(&self, channel: &str) -> ApiResult<ChannelIndexClient> {
        Ok(ChannelIndexClient::new(&self.env, channel)?)
    }

    /// The signed-in caller, if the request carries a key (401 if it carries a bad one) or
    /// else a live session cookie. A key wins over a cookie. A cookie that names no live
    /// session counts as none: a browser cannot drop an HttpOnly cookie by itself.
    pub async fn caller(&self) -> ApiResult<Option<Principal>> {
        if self.caller.get().is_none() {
            let resolved = match self.presented_key() {
                Ok(Some(key)) => auth::verify_key(self, &key).await.map(Some),
                Ok(None) => self.session_caller().await,
                Err(error) => Err(error),
            };
            // Nothing else resolves the caller between the check and here: one request, one task.
            let _ = self.caller.set(resolved);
        }
        self.caller.get().expect("resolved above").clone()
    }

    /// The signed-in caller; 401 when the request carries no key.
    pub async fn signed_in(&self) -> ApiResult<Principal> {
        self.caller().await?.ok_or_else(ApiError::unauthenticated)
    }

    /// The session id in the request's cookie, if it carries one.
    pub fn session_id(&self) -> ApiResult<Option<String>> {
        let Some(cookies) = self.header("Cookie") else {
            return Ok(None);
        };
        let https = self.is_https()?;
        Ok(session_from_cookies(cookies, https).map(str::to_owned))
    }

    /// The caller of the request's session cookie, if it names a live session; 403 when the
    /// request would change something and does not come from this server's own pages.
    pub async fn session_caller(&self) -> ApiResult<Option<Principal>> {
        let Some(id) = self.session_id()? else {
            return Ok(None);
        };
        let principal = auth::verify_session(self, &id).await?;
        if principal.is_some() {
            self.refuse_cross_site()?;
        }
        Ok(principal)
    }

    /// 403 for a request that may change something and whose `Origin` is not the request's
    /// own (see [`refused_as_cross_site`]).
    fn refuse_cross_site(&self) -> ApiResult<()> {
        let own = self.own_origin()?;
        if refused_as_cross_site(self.req.method().as_ref(), self.header("Origin"), &own) {
            return Err(cross_site_refused());
        }
        Ok(())
    }

    /// 403 for a request that says it comes from a page of another site (see
    /// [`from_another_site`]).
    pub fn refuse_other_sites(&self) -> ApiResult<()> {
        if from_another_site(self.header("Origin"), &self.own_origin()?) {
            return Err(cross_site_refused());
        }
        Ok(())
    }

    /// `scheme://host[:port]` of the request's URL.
    pub fn own_origin(&self) -> ApiResult<String> {
        Ok(self.req.url()?.origin().ascii_serialization())
    }

    /// Whether the request came over https (cookies are then marked `Secure`).
    pub fn is_https(&self) -> ApiResult<bool> {
        Ok(self.req.url()?.scheme() == "https")
    }

    fn presented_key(&self) -> ApiResult<Option<String>> {
        PresentedCredentials {
            path_token: self.path_token.as_deref(),
            authorization: self.header("Authorization"),
            x_api_key: self.header("X-API-Key"),
        }
        .key()
    }

    /// The opening of an upload or import: a key allowed to write to the channel, then the
    /// query and the announced length, all before a byte of the body is read.
    pub async fn open_channel_write(&self, channel: &str) -> ApiResult<ChannelWrite> {
        let force = self.force_requested()?;
        let (caller, channel) = self
            .authorize_change(channel, Action::upload(force))
            .await?;
        Ok(ChannelWrite {
            caller,
            channel,
            force,
            length: self.upload_length()?,
        })
    }

    fn force_requested(&self) -> ApiResult<bool> {
        Ok(self
            .req
            .url()?
            .query_pairs()
            .any(|(k, v)| k == "force" && (v == "true" || v == "1")))
    }

    /// The request's Content-Length, within the upload limit (checked before the body is read).
    pub fn upload_length(&self) -> ApiResult<u64> {
        let length: u64 = self
            .header("Content-Length")
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::LengthRequired,
                    "send the upload with a Content-Length header",
                )
            })?
            .trim()
            .parse()
            .map_err(|_| ApiError::bad_request("Content-Length is not a number"))?;
        let limit = self.config.max_upload_bytes;
        if length > limit {
            return Err(ApiError::new(
                ErrorCode::TooLarge,
                format!("the upload is {length} bytes; this server accepts at most {limit}"),
            ));
        }
        Ok(length)
    }

    /// The body as the runtime's stream, for handing on without reading it in wasm.
    pub fn body(&self) -> Option<web_sys::ReadableStream> {
        self.req.inner().body()
    }

    /// The body as a stream of chunks.
    pub fn body_stream(&mut self) -> ApiResult<ByteStream> {
        Ok(self.req.stream()?)
    }

    /// A small JSON body; 413 past [`MAX_JSON_BODY`], announced or not (a chunked body is
    /// read only up to the limit), 400 when it is not the expected shape.
    pub async fn json_body<T: DeserializeOwned>(&mut self) -> ApiResult<T> {
        let too_large =
            || ApiError::new(ErrorCode::TooLarge, "the JSON body is larger than 64 KiB");
        let length: u64 = self
            .header("Content-Length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if length > MAX_JSON_BODY {
            return Err(too_large());
        }
        let mut body = Vec::new();
        // A request without a body has no stream.
        if let Ok(mut stream) = self.req.stream() {
            while let Some(chunk) = stream.next().await {
                body.extend_from_slice(&chunk?);
                if body.len() as u64 > MAX_JSON_BODY {
                    return Err(too_large());
                }
            }
        }
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}
