//! `POST /api/v1/upload/<channel>`: the prefix.dev upload API, raw body or multipart form.
//!
//! The body streams into a staging object while every byte is hashed and the package's
//! metadata is read; nothing large is buffered whole (files up to [`INLINE_BYTES`] are, and
//! travel in the commit request instead). Only a package that checks out is handed to the
//! channel index, which moves it into place. The staging object is deleted on every path.

use std::{cell::RefCell, pin::Pin, rc::Rc};

use base64::Engine;
use futures_util::{stream, Stream, StreamExt};
use serde::Serialize;
use worker::{ByteStream, FixedLengthStream, Headers, Response};

use super::channel_index::{CommitRequest, CommitStatus, Freshness, ObjectSource};
use super::context::RequestContext;
use super::error::{json, ApiError, ApiResult, ErrorCode};
use super::storage::{file_key, random_id, staging_key};
use crate::multipart::{Event, MultipartReader, PartHeaders};
use crate::names::check_package_filename;
use crate::package::{Package, PackageReader};
use crate::repodata::record_json;

/// Chunks handed between JS and wasm are gathered to this size: crossing the boundary per
/// 4 KiB network chunk costs more than the hashing.
const CHUNK: usize = 256 * 1024;
/// Files up to this size travel to the channel index inside the commit request rather than
/// through a staging object: three R2 operations fewer for the many small packages.
pub(super) const INLINE_BYTES: u64 = 1024 * 1024;

pub(super) type BodyStream = Pin<Box<dyn Stream<Item = worker::Result<Vec<u8>>>>>;

/// The file an upload carries, as its headers describe it.
pub(super) struct IncomingFile {
    pub filename: String,
    /// The SHA-256 the uploader claims; bulk imports carry none.
    pub sha256: Option<String>,
    pub length: u64,
    pub bytes: BodyStream,
}

/// A package that went into the channel index.
pub(super) struct Ingested {
    /// 201 for a new file, 200 for bytes that were already there.
    pub status: u16,
    pub subdir: String,
    /// The stored record, canonical JSON.
    pub record: String,
    /// Whether repodata.json holds it yet (`None` when the build was left to the caller).
    pub repodata: Option<Freshness>,
}

/// Tells the uploader whether repodata.json holds the package yet (`current`) or will with the
/// build already scheduled (`pending`); the shards always do.
pub const REPODATA_FRESHNESS_HEADER: &str = "X-Repodata-Json";

pub async fn upload(ctx: &mut RequestContext, channel_name: &str) -> ApiResult<Response> {
    let write = ctx.open_channel_write(channel_name).await?;
    let channel = &write.channel.name;
    let content_type = ctx.req().headers().get("Content-Type")?.unwrap_or_default();
    let body = ctx.body_stream()?;
    let file = match MultipartReader::boundary_of(&content_type) {
        Some(boundary) => multipart_file(body, boundary, write.length).await?,
        None => raw_file(ctx.req().headers(), body, write.length)?,
    };
    let filename = file.filename.clone();
    let result = ingest(ctx, channel, file, write.force, true).await;
    let status = result.as_ref().map_or_else(|e| e.status(), |r| r.status);
    let path = format!("{channel}/{filename}");
    super::log::change("upload", &write.caller.name, &path, status);
    let ingested = result?;
    let freshness = ingested.repodata.unwrap_or(Freshness::Current);
    Ok(Response::builder()
        .with_status(ingested.status)
        .with_header("Content-Type", "application/json")?
        .with_header(REPODATA_FRESHNESS_HEADER, freshness.as_str())?
        .with_header(
            "Location",
            &format!("/{}", file_key(channel, &ingested.subdir, &filename)),
        )?
        .fixed(ingested.record.into_bytes()))
}

/// Streams one package file into a staging object while hashing and reading it, checks it,
/// and commits it through the channel index (which rebuilds the artifacts unless `build` is
/// false). The staging object is gone afterwards, whatever happened.
pub(super) async fn ingest(
    ctx: &RequestContext,
    channel: &str,
    file: IncomingFile,
    force: bool,
    build: bool,
) -> ApiResult<Ingested> {
    let format = check_package_filename(&file.filename).map_err(ApiError::invalid_name)?;
    if let Some(sha256) = &file.sha256 {
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApiError::bad_request(
                "X-File-SHA256 must be the file's SHA-256 as 64 hex digits",
            ));
        }
    }
    if file.length == 0 {
        return Err(ApiError::invalid_package("the file is empty"));
    }

    let reader = Rc::new(RefCell::new(PackageReader::new(format)));
    let inspected = inspect(file.bytes, reader.clone());
    if file.length <= INLINE_BYTES {
        let bytes = read_whole(inspected, file.length).await?;
        let checked = Checked {
            filename: &file.filename,
            claimed_sha256: file.sha256.as_deref(),
            source: ObjectSource::Inline {
                base64: base64::engine::general_purpose::STANDARD.encode(bytes),
            },
        };
        return commit(ctx, channel, checked, finished(reader)?, force, build).await;
    }

    let bucket = ctx.bucket()?;
    let staging = staging_key(channel, &random_id());
    let stored = bucket
        .put(&staging, FixedLengthStream::wrap(inspected, file.length))
        .execute()
        .await;
    let result = match stored {
        Ok(_) => {
            let checked = Checked {
                filename: &file.filename,
                claimed_sha256: file.sha256.as_deref(),
                source: ObjectSource::Staged {
                    key: staging.clone(),
                },
            };
            commit(ctx, channel, checked, finished(reader)?, force, build).await
        }
        Err(error) => {
            super::log::error(&format!("upload stream to staging failed: {error}"));
            Err(short_body(file.length))
        }
    };
    // A put that failed left no object; one that succeeded was copied into place, or refused.
    if let Err(error) = bucket.delete(&staging).await {
        super::log::error(&format!(
            "could not delete staging object {staging}: {error}"
        ));
    }
    result
}

pub(super) fn short_body(length: u64) -> ApiError {
    ApiError::new(
        ErrorCode::IncompleteBody,
        format!("the body ended before the {length} bytes announced arrived"),
    )
}

/// The reader, once the stream that fed it is done.
fn finished(reader: Rc<RefCell<PackageReader>>) -> ApiResult<PackageReader> {
    Ok(Rc::try_unwrap(reader)
        .map_err(|_| super::error::internal("upload reader still shared"))?
        .into_inner())
}

/// All of a small file, which must be exactly `length` bytes.
async fn read_whole(
    bytes: impl Stream<Item = worker::Result<Vec<u8>>>,
    length: u64,
) -> ApiResult<Vec<u8>> {
    let mut bytes = Box::pin(bytes);
    let mut whole = Vec::with_capacity(length as usize);
    while let Some(chunk) = bytes.next().await {
        whole.extend(chunk.map_err(|_| short_body(length))?);
        if whole.len() as u64 > length {
            return Err(ApiError::bad_request(format!(
                "the file is longer than the {length} bytes announced"
            )));
        }
    }
    if (whole.len() as u64) < length {
        return Err(short_body(length));
    }
    Ok(whole)
}

/// What is known of a received file before its bytes are judged.
struct Checked<'a> {
    filename: &'a str,
    claimed_sha256: Option<&'a str>,
    source: ObjectSource,
}

async fn commit(
    ctx: &RequestContext,
    channel: &str,
    checked: Checked<'_>,
    reader: PackageReader,
    force: bool,
    build: bool,
) -> ApiResult<Ingested> {
    let (digests, metadata) = reader.finish();
    if let Some(claimed) = checked.claimed_sha256 {
        if !digests.sha256.eq_ignore_ascii_case(claimed) {
            return Err(ApiError::new(
                ErrorCode::ChecksumMismatch,
                format!(
                    "X-File-SHA256 does not match the received bytes, whose SHA-256 is {}",
                    digests.sha256
                ),
            ));
        }
    }
    let metadata =
        metadata.map_err(|e| ApiError::invalid_package(format!("invalid package: {e}")))?;
    let package = Package::from_parts(checked.filename, &digests, metadata)
        .map_err(|e| ApiError::invalid_package(format!("invalid package: {e}")))?;
    let outcome = ctx
        .channel_index(channel)?
        .commit(&CommitRequest {
            channel: channel.to_owned(),
            source: checked.source,
            subdir: package.subdir.clone(),
            filename: package.filename.clone(),
            name: package.name.clone(),
            sha256: digests.sha256.clone(),
            record: record_json(&package.record),
            run_exports: package.run_exports.as_ref().map(|v| v.to_string()),
            about: package.about.as_ref().map(|v| v.to_string()),
            force,
            build,
        })
        .await?;
    let status = match outcome.status {
        CommitStatus::Created => 201,
        CommitStatus::Unchanged => 200,
    };
    Ok(Ingested {
        status,
        subdir: package.subdir,
        record: outcome.record,
        repodata: outcome.repodata,
    })
}

fn required_header(headers: &Headers, name: &str) -> ApiResult<String> {
    headers
        .get(name)?
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("the {name} header is missing")))
}

fn raw_file(headers: &Headers, body: ByteStream, length: u64) -> ApiResult<IncomingFile> {
    Ok(IncomingFile {
        filename: required_header(headers, "X-File-Name")?,
        sha256: Some(required_header(headers, "X-File-SHA256")?),
        length,
        bytes: Box::pin(body),
    })
}

/// Reads a multipart body up to the start of its `file` part and returns that part's content
/// as a stream. Its length is the part's Content-Length header, or else what remains of the
/// body less the closing boundary (the file being the last part).
async fn multipart_file(
    mut body: ByteStream,
    boundary: &str,
    total_length: u64,
) -> ApiResult<IncomingFile> {
    let mut reader = MultipartReader::new(boundary);
    let closing_len = boundary.len() as u64 + 8; // "\r\n--" boundary "--\r\n"
    let mut consumed = 0u64;
    loop {
        // The stream fails only when the client's connection breaks off mid-body.
        let chunk = body
            .next()
            .await
            .transpose()
            .map_err(|_| short_body(total_length))?
            .ok_or_else(|| ApiError::bad_request("the multipart body has no 'file' part"))?;
        consumed += chunk.len() as u64;
        let events = reader.feed(&chunk).map_err(ApiError::bad_request)?;
        let Some(start) = events
            .iter()
            .position(|e| matches!(e, Event::PartStart(h) if h.field_name() == Some("file")))
        else {
            continue;
        };
        let Event::PartStart(headers) = &events[start] else {
            unreachable!("position matched a part start")
        };
        let headers: PartHeaders = headers.clone();
        let mut first = Vec::new();
        let mut ended = false;
        for event in events.into_iter().skip(start + 1) {
            match event {
                Event::Data(data) if !ended => first.extend(data),
                Event::PartEnd => ended = true,
                _ => {}
            }
        }
        let data_start = consumed - reader.buffered() as u64 - first.len() as u64;
        let length = match headers.get("content-length") {
            Some(value) => value.parse().map_err(|_| {
                ApiError::bad_request("the file part's Content-Length is not a number")
            })?,
            None if ended => first.len() as u64,
            None => total_length
                .checked_sub(data_start + closing_len)
                .ok_or_else(|| {
                    ApiError::bad_request("the multipart body is shorter than announced")
                })?,
        };
        let filename = headers
            .get("x-file-name")
            .or(headers.file_name())
            .map(str::to_owned)
            .ok_or_else(|| ApiError::bad_request("the file part has no X-File-Name header"))?;
        let sha256 = headers
            .get("x-file-sha256")
            .map(str::to_owned)
            .ok_or_else(|| ApiError::bad_request("the file part has no X-File-SHA256 header"))?;
        let rest = file_part_rest(body, reader, ended);
        let bytes = stream::iter([Ok(first)]).chain(rest);
        return Ok(IncomingFile {
            filename,
            sha256: Some(sha256),
            length,
            bytes: Box::pin(bytes),
        });
    }
}

/// The rest of the file part's content, ending where the part ends.
fn file_part_rest(
    body: ByteStream,
    reader: MultipartReader,
    ended: bool,
) -> impl Stream<Item = worker::Result<Vec<u8>>> {
    stream::unfold(
        (body, reader, ended),
        |(mut body, mut reader, ended)| async move {
            if ended {
                return None;
            }
            let chunk = match body.next().await? {
                Ok(chunk) => chunk,
                Err(error) => return Some((Err(error), (body, reader, true))),
            };
            let events = match reader.feed(&chunk) {
                Ok(events) => events,
                Err(message) => {
                    return Some((Err(worker::Error::RustError(message)), (body, reader, true)))
                }
            };
            let mut data = Vec::new();
            let mut ended = false;
            for event in events {
                match event {
                    Event::Data(bytes) if !ended => data.extend(bytes),
                    Event::PartEnd => ended = true,
                    _ => {}
                }
            }
            Some((Ok(data), (body, reader, ended)))
        },
    )
}

/// Passes the bytes on in chunks of about [`CHUNK`] bytes, feeding each to the package reader.
pub(super) fn inspect(
    source: BodyStream,
    reader: Rc<RefCell<PackageReader>>,
) -> impl Stream<Item = worker::Result<Vec<u8>>> {
    stream::unfold(Some(source), move |source| {
        let reader = reader.clone();
        async move {
            let mut source = source?;
            let mut buf = Vec::with_capacity(CHUNK);
            loop {
                match source.next().await {
                    Some(Ok(chunk)) => {
                        buf.extend_from_slice(&chunk);
                        if buf.len() >= CHUNK {
                            reader.borrow_mut().update(&buf);
                            return Some((Ok(buf), Some(source)));
                        }
                    }
                    Some(Err(error)) => return Some((Err(error), None)),
                    None if buf.is_empty() => return None,
                    None => {
                        reader.borrow_mut().update(&buf);
                        return Some((Ok(buf), None));
                    }
                }
            }
        }
    })
}

/// `POST /api/v1/debug/put`: the floor the upload path is measured against — the body streamed
/// into R2 as it is, with no hashing, reading or index, then deleted. Site admins only.
pub async fn bare_put(ctx: &RequestContext) -> ApiResult<Response> {
    #[derive(Serialize)]
    struct Stored {
        bytes: u64,
    }
    ctx.signed_in()
        .await?
        .require_admin("the storage floor measurement")?;
    let length = ctx.upload_length()?;
    let key = format!(".bench/{}", random_id());
    let bucket = ctx.bucket()?;
    let body = ctx
        .req()
        .inner()
        .body()
        .ok_or_else(|| ApiError::bad_request("the request has no body"))?;
    let stored = bucket.put(&key, body).execute().await;
    bucket.delete(&key).await?;
    stored.map_err(|e| ApiError::bad_request(format!("the body could not be stored: {e}")))?;
    json(200, &Stored { bytes: length })
}
