//! A package's attestations in R2: the `.v0.sigs` document an upload's `attestation` field
//! becomes (checked by [`crate::attestation`]), stored beside the package once it is
//! committed, and deleted when the bytes it speaks of are replaced or deleted.

use worker::HttpMetadata;

use super::context::RequestContext;
use super::error::{ApiError, ApiResult};
use super::storage::file_key;
use crate::attestation::{sigs_document, sigs_filename};

/// The document to serve for the text of an `attestation` field, checked against the bytes
/// it must speak of.
pub fn document(text: &[u8], sha256: &str) -> ApiResult<String> {
    sigs_document(text, sha256).map_err(ApiError::bad_request)
}

/// Stores a package's attestations where they are served: `<package file>.v0.sigs`.
pub async fn store(
    ctx: &RequestContext,
    channel: &str,
    subdir: &str,
    filename: &str,
    document: String,
) -> ApiResult<()> {
    ctx.bucket()?
        .put(
            file_key(channel, subdir, &sigs_filename(filename)),
            document.into_bytes(),
        )
        .http_metadata(HttpMetadata {
            content_type: Some("application/json".into()),
            ..Default::default()
        })
        .execute()
        .await?;
    Ok(())
}

/// Deletes a package's attestations, which speak of bytes no longer stored under its name.
pub async fn remove(
    ctx: &RequestContext,
    channel: &str,
    subdir: &str,
    filename: &str,
) -> ApiResult<()> {
    let key = file_key(channel, subdir, &sigs_filename(filename));
    ctx.bucket()?.delete(&key).await?;
    Ok(())
}
