//! Turning an [`ApiError`] into the answer the client gets, and platform failures into one.

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
        .fixed(error.to_json().into_bytes())
}
