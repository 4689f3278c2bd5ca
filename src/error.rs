//! Every refusal condaflare answers with: a machine-readable code, the HTTP status it implies,
//! and one short sentence. The same shape travels from the channel index back to the Worker,
//! so a conflict is a 409 wherever it starts.

use serde::{Deserialize, Serialize};

/// What went wrong, as clients and scripts match on it. Each code has exactly one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A malformed request: a header, a parameter or a JSON body that does not parse.
    BadRequest,
    /// A channel, user, subdir or file name outside the naming rules.
    InvalidName,
    /// The bytes received do not have the SHA-256 the uploader announced.
    ChecksumMismatch,
    /// The body ended before the length it announced.
    IncompleteBody,
    /// No credentials where they are needed.
    Unauthenticated,
    /// Credentials that are malformed, unknown, revoked or expired.
    InvalidKey,
    /// Signed in, but without the right.
    Forbidden,
    NotFound,
    MethodNotAllowed,
    /// Something of that name exists with other content or settings.
    AlreadyExists,
    /// The change would leave a channel without an owner.
    LastOwner,
    /// An upload or delete on a mirror channel, whose files come from its upstream only.
    MirrorChannel,
    /// An upload without Content-Length.
    LengthRequired,
    /// A body over the configured limit.
    TooLarge,
    RangeNotSatisfiable,
    /// Not a valid conda package.
    InvalidPackage,
    /// A failure of the platform; the detail is in the log, not in the answer.
    Internal,
    /// A server this one depends on (an identity provider's keys) failed or answered nonsense.
    Upstream,
    /// A mirror's upstream did not answer in time.
    UpstreamTimeout,
}

impl ErrorCode {
    pub fn status(self) -> u16 {
        match self {
            Self::BadRequest
            | Self::InvalidName
            | Self::ChecksumMismatch
            | Self::IncompleteBody => 400,
            Self::Unauthenticated | Self::InvalidKey => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::AlreadyExists | Self::LastOwner | Self::MirrorChannel => 409,
            Self::LengthRequired => 411,
            Self::TooLarge => 413,
            Self::RangeNotSatisfiable => 416,
            Self::InvalidPackage => 422,
            Self::Internal => 500,
            Self::Upstream => 502,
            Self::UpstreamTimeout => 504,
        }
    }
}

/// An error answered to the client as `{"error": "...", "code": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: ErrorCode,
    #[serde(rename = "error")]
    pub message: String,
}

pub type ApiResult<T> = std::result::Result<T, ApiError>;

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn status(&self) -> u16 {
        self.code.status()
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub fn invalid_name(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidName, message)
    }

    /// A body that ended before the `length` bytes it announced.
    pub fn short_body(length: u64) -> Self {
        Self::new(
            ErrorCode::IncompleteBody,
            format!("the body ended before the {length} bytes announced arrived"),
        )
    }

    /// A body of unknown length whose connection broke off.
    pub fn broken_off() -> Self {
        Self::new(
            ErrorCode::IncompleteBody,
            "the body ended before it was complete",
        )
    }

    pub fn unauthenticated() -> Self {
        Self::new(
            ErrorCode::Unauthenticated,
            "this needs an API key: send 'Authorization: Bearer <key>'",
        )
    }

    pub fn invalid_key(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidKey, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn invalid_package(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidPackage, message)
    }

    /// The answer to give for a failure whose detail must not reach the client.
    pub fn internal() -> Self {
        Self::new(ErrorCode::Internal, "internal error; try again")
    }

    /// The JSON body of the answer.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an error serializes")
    }
}

impl From<crate::names::InvalidName> for ApiError {
    fn from(error: crate::names::InvalidName) -> Self {
        Self::invalid_name(error.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_names_the_sentence_and_the_code() {
        let error = ApiError::new(
            ErrorCode::LastOwner,
            "a channel must keep at least one owner",
        );
        assert_eq!(
            error.to_json(),
            r#"{"code":"last_owner","error":"a channel must keep at least one owner"}"#
        );
        assert_eq!(error.status(), 409);
        let back: ApiError = serde_json::from_str(&error.to_json()).unwrap();
        assert_eq!(back, error);
    }

    #[test]
    fn every_code_has_a_client_or_server_status() {
        for code in [
            ErrorCode::BadRequest,
            ErrorCode::InvalidKey,
            ErrorCode::AlreadyExists,
            ErrorCode::InvalidPackage,
        ] {
            assert!((400..500).contains(&code.status()), "{code:?}");
        }
        assert_eq!(ErrorCode::Internal.status(), 500);
    }
}
