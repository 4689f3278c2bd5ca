//! The upload protocols of the other publishers, each a thin adapter onto the one upload path
//! of [`super::upload`] (the same checks, idempotency and index commit), answering as its
//! client expects. The protocols' pure decisions are in [`crate::publish`].
//!
//! - [`quetz`]: `POST /api/channels/<channel>/upload/<filename>?sha256=…&force=…`
//! - [`artifactory`]: `PUT /<channel>/<subdir>/<filename>`
//! - [`anaconda`]: anaconda.org's package, release, stage, transfer, commit and dist calls
//!   under `/api/anaconda/`
//! - [`prefix`]: `POST /api/v1/reindex/<channel>/<subdir>` (the upload itself is
//!   [`super::upload::upload`])

pub mod anaconda;
pub mod artifactory;
pub mod prefix;
pub mod quetz;

use super::context::RequestContext;
use super::error::{ApiError, ApiResult};
use super::upload::{receive, receive_unsized, IncomingFile, Received};

/// Receives a raw request body as the file `filename`, with or without a Content-Length
/// (rattler's quetz and Artifactory uploads stream it chunked).
async fn receive_body(
    ctx: &mut RequestContext,
    channel: &str,
    filename: &str,
    sha256: Option<String>,
) -> ApiResult<Received> {
    let announced = ctx.req().headers().get("Content-Length")?.is_some();
    let length = if announced {
        Some(ctx.upload_length()?)
    } else {
        None
    };
    let body = ctx
        .body_stream()
        .map_err(|_| ApiError::invalid_package("the file is empty"))?;
    match length {
        Some(length) => {
            let file = IncomingFile {
                filename: filename.to_owned(),
                sha256,
                length,
                bytes: Box::pin(body),
            };
            receive(ctx, channel, file).await
        }
        None => receive_unsized(ctx, channel, filename.to_owned(), sha256, Box::pin(body)).await,
    }
}
