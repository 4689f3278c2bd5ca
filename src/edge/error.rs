//! Every refusal the Worker answers with: a status and one short sentence as JSON.

use worker::{Headers, Response};

/// An error answered to the client as `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

pub type ApiResult<T> = std::result::Result<T, ApiError>;

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, message)
    }

    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(422, message)
    }

    /// An unexpected failure of the platform; the detail goes to the log, not to the client.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        super::log::error(&detail.to_string());
        Self::new(500, "internal error; try again")
    }

    pub fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message }).to_string();
        let headers = Headers::new();
        // Header names and values here are constants, so setting them cannot fail.
        let _ = headers.set("Content-Type", "application/json");
        let _ = headers.set("Cache-Control", "no-store");
        if self.status == 401 {
            let _ = headers.set("WWW-Authenticate", "Bearer realm=\"condaflare\"");
        }
        Response::builder()
            .with_status(self.status)
            .with_headers(headers)
            .fixed(body.into_bytes())
    }
}

impl From<worker::Error> for ApiError {
    fn from(error: worker::Error) -> Self {
        Self::internal(error)
    }
}
