//! The API's answers: a JSON body, or an [`ApiError`] as the client gets it (platform failures
//! become one, with the detail in the log).

use serde::Serialize;
use worker::{Headers, Response};

pub use crate::error::{ApiError, ApiResult, ErrorCode};

/// An unexpected failure of the platform: the detail goes to the log, not to the client.
pub fn internal(detail: impl std::fmt::Display) -> ApiError {
    super::log::error(&detail.to_string());
    ApiError::internal()
}

impl From<worker::Error> for ApiError {
    fn from(error: worker::Error) -> Self {
        internal(error)
    }
}

/// The answer for an error: its status, `{"error": ..., "code": ...}`, never cached.
pub fn response(error: &ApiError) -> Response {
    answer(error, error.to_json())
}

/// The answer for an error that still has something to report: `report`'s fields beside
/// `error` and `code` (an import's results for the packages it got to).
pub fn response_with(error: &ApiError, report: &impl Serialize) -> Response {
    #[derive(Serialize)]
    struct Body<'a, R> {
        #[serde(flatten)]
        error: &'a ApiError,
        #[serde(flatten)]
        report: &'a R,
    }
    match serde_json::to_string(&Body { error, report }) {
        Ok(body) => answer(error, body),
        Err(failure) => response(&internal(failure)),
    }
}

fn answer(error: &ApiError, body: String) -> Response {
    let headers = Headers::new();
    // Header names and values here are constants, so setting them cannot fail.
    let _ = headers.set("Content-Type", "application/json");
    let _ = headers.set("Cache-Control", "no-store");
    if error.status() == 401 {
        let _ = headers.set("WWW-Authenticate", "Bearer realm=\"condaflare\"");
    }
    Response::builder()
        .with_status(error.status())
        .with_headers(headers)
        .fixed(body.into_bytes())
}

/// A successful API answer: `body` as JSON, with `status`, kept by no cache. API answers hold
/// keys, sessions and what only their caller may see; none is worth a stale copy.
pub fn json(status: u16, body: &impl Serialize) -> ApiResult<Response> {
    let mut response = Response::from_json(body)?.with_status(status);
    response.headers_mut().set("Cache-Control", "no-store")?;
    Ok(response)
}
