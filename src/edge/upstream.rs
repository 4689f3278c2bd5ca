//! GETs from a mirror's upstream. Redirects are followed by hand, at most
//! [`MAX_REDIRECTS`] of them and only to https (or http with `MIRROR_ALLOW_HTTP`), so an
//! upstream cannot lead the Worker to plain http. The rules' `credentials` secret is sent as
//! `Authorization` only to the upstream's own origin, never to a redirect elsewhere; its value
//! is in no answer, log or error.

use std::future::Future;
use std::time::Duration;

use futures_util::future;
use worker::{Delay, Fetch, Headers, Method, Request, RequestInit, RequestRedirect, Response};

use crate::config::Config;
use crate::mirror::{origin, redirect_target, MirrorRulesJson, UpstreamFailure, MAX_REDIRECTS};

/// How the Worker reaches one mirror's upstream.
pub struct UpstreamAccess {
    origin: Option<String>,
    authorization: Option<String>,
    allow_http: bool,
    timeout_ms: u64,
}

impl UpstreamAccess {
    /// For `rules`, with `secret` reading a Worker secret by name. A secret the rules name but
    /// the Worker lacks is a failure that says so without naming it (the log names it).
    pub fn new(
        rules: &MirrorRulesJson,
        config: &Config,
        secret: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, UpstreamFailure> {
        let authorization = match &rules.credentials {
            Some(name) => Some(secret(name).ok_or_else(|| {
                worker::console_error!(
                    "mirror of {}: the secret {name} its credentials name is not set",
                    rules.url
                );
                UpstreamFailure::Failed(
                    "the secret its credentials name is not set on this Worker".into(),
                )
            })?),
            None => None,
        };
        Ok(Self {
            origin: origin(&rules.url),
            authorization,
            allow_http: config.mirror_allow_http,
            timeout_ms: config.mirror_upstream_timeout_ms,
        })
    }

    /// How long the upstream may take to answer, or between two chunks of a body.
    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms
    }

    /// GETs `url` with `headers` (pairs), following redirects; answers the first response that
    /// is no redirect, within the timeout. A failure's sentence never holds the credentials.
    pub async fn get(
        &self,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Response, UpstreamFailure> {
        within_timeout(self.timeout_ms, self.follow(url, headers)).await
    }

    async fn follow(
        &self,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Response, UpstreamFailure> {
        let failed = |why: String| UpstreamFailure::Failed(why);
        let mut url = url.to_owned();
        for _ in 0..=MAX_REDIRECTS {
            let sent = Headers::new();
            for (name, value) in headers {
                sent.set(name, value).map_err(|e| failed(e.to_string()))?;
            }
            if let Some(authorization) = &self.authorization {
                if origin(&url) == self.origin {
                    sent.set("Authorization", authorization).map_err(|_| {
                        failed("its credentials are not a valid header value".into())
                    })?;
                }
            }
            let mut init = RequestInit::new();
            init.with_method(Method::Get)
                .with_headers(sent)
                .with_redirect(RequestRedirect::Manual);
            let request = Request::new_with_init(&url, &init).map_err(|e| failed(e.to_string()))?;
            let response = Fetch::Request(request)
                .send()
                .await
                .map_err(|e| failed(e.to_string()))?;
            if !matches!(response.status_code(), 301 | 302 | 303 | 307 | 308) {
                return Ok(response);
            }
            let location = response
                .headers()
                .get("Location")
                .ok()
                .flatten()
                .ok_or_else(|| failed("it answered a redirect without a Location".into()))?;
            url = redirect_target(&url, &location, self.allow_http).map_err(failed)?;
        }
        Err(failed(format!(
            "it redirected more than {MAX_REDIRECTS} times"
        )))
    }
}

/// `work`, or [`UpstreamFailure::TimedOut`] once `timeout_ms` have passed.
pub async fn within_timeout<T>(
    timeout_ms: u64,
    work: impl Future<Output = Result<T, UpstreamFailure>>,
) -> Result<T, UpstreamFailure> {
    let work = Box::pin(work);
    let timeout = Box::pin(Delay::from(Duration::from_millis(timeout_ms)));
    match future::select(work, timeout).await {
        future::Either::Left((answer, _)) => answer,
        future::Either::Right(_) => Err(UpstreamFailure::TimedOut(timeout_ms)),
    }
}
