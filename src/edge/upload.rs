//! `POST /api/v1/upload/<channel>`: the prefix.dev upload API, raw body or multipart form
//! (with an optional attestation), and the one upload path every publishing route shares
//! ([`receive`] or [`receive_unsized`], then [`Received::commit`]).
//!
//! The body streams into a staging object while every byte is hashed and the package's
//! metadata is read; nothing large is buffered whole (files up to [`INLINE_BYTES`] are, and
//! travel in the commit request instead; a body of unknown length is staged part by part).
//! Only a package that checks out is handed to the channel index, which moves it into place.
//! The staging object is deleted on every path.

use std::{cell::RefCell, pin::Pin, rc::Rc};

use base64::Engine;
use futures_util::{stream, Stream, StreamExt};
use rattler_conda_types::package::CondaArchiveType;
use worker::{ByteStream, Date, FixedLengthStream, Headers, HttpMetadata, Response};

use super::channel_index::{CommitRequest, CommitStatus, Freshness, ObjectSource};
use super::context::RequestContext;
use super::error::{ApiError, ApiResult, ErrorCode};
use super::object_writer::ObjectWriter;
use super::storage::{file_key, random_id, staging_key};
use crate::attestation::{sigs_document, sigs_filename};
use crate::multipart::{Event, MultipartReader, PartHeaders, SmallParts};
use crate::names::check_package_filename;
use crate::package::{ArchiveMetadata, Digests, Package, PackageError, PackageReader};
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
    let channel = write.channel.name.clone();
    let content_type = ctx.req().headers().get("Content-Type")?.unwrap_or_default();
    let body = ctx.body_stream()?;
    let (file, form) = match MultipartReader::boundary_of(&content_type) {
        Some(boundary) => {
            let (file, form) = multipart_file(body, boundary, write.length, None).await?;
            (Upload::Form(file), Some(form))
        }
        None => (
            Upload::Raw(raw_file(ctx.req().headers(), body, write.length)?),
            None,
        ),
    };
    let filename = match &file {
        Upload::Form(file) => file.filename.clone(),
        Upload::Raw(file) => file.filename.clone(),
    };
    let result = async {
        let received = match file {
            Upload::Form(file) => file.receive(ctx, &channel).await?,
            Upload::Raw(file) => receive(ctx, &channel, file).await?,
        };
        // The attestation is judged before the package is committed, so a bad one leaves
        // nothing behind; the file part comes first in rattler's form, so the rest is read now.
        let attestation = match form {
            Some(form) => {
                let fields = form.rest().await;
                match fields.and_then(|fields| attestation_document(&fields, received.sha256())) {
                    Ok(document) => document,
                    Err(error) => {
                        received.discard(ctx).await;
                        return Err(error);
                    }
                }
            }
            None => None,
        };
        let ingested = received.commit(ctx, &channel, write.force, true).await?;
        if let Some(document) = attestation {
            store_attestation(ctx, &channel, &ingested.subdir, &filename, document).await?;
        }
        Ok(ingested)
    }
    .await;
    let status = result.as_ref().map_or_else(|e| e.status(), |r| r.status);
    super::log::change(
        "upload",
        &write.caller.name,
        &format!("{channel}/{filename}"),
        status,
    );
    stored_response(&channel, &filename, &result?)
}

/// A prefix.dev upload's file, in either of its body forms.
enum Upload {
    Raw(IncomingFile),
    Form(FormFile),
}

/// The answer to a stored upload: the record as JSON, whether repodata.json holds it yet, and
/// where the file is served.
pub(super) fn stored_response(
    channel: &str,
    filename: &str,
    ingested: &Ingested,
) -> ApiResult<Response> {
    let freshness = ingested.repodata.unwrap_or(Freshness::Current);
    Ok(Response::builder()
        .with_status(ingested.status)
        .with_header("Content-Type", "application/json")?
        .with_header(REPODATA_FRESHNESS_HEADER, freshness.as_str())?
        .with_header(
            "Location",
            &format!("/{}", file_key(channel, &ingested.subdir, filename)),
        )?
        .fixed(ingested.record.clone().into_bytes()))
}

/// The `.v0.sigs` document of an `attestation` field, checked against the package's bytes.
fn attestation_document(fields: &SmallParts, sha256: &str) -> ApiResult<Option<String>> {
    fields
        .get("attestation")
        .map(|text| sigs_document(text, sha256).map_err(ApiError::bad_request))
        .transpose()
}

/// Stores a package's attestations where they are served: `<package file>.v0.sigs`.
async fn store_attestation(
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
pub(super) async fn remove_attestation(
    ctx: &RequestContext,
    channel: &str,
    subdir: &str,
    filename: &str,
) -> ApiResult<()> {
    let key = file_key(channel, subdir, &sigs_filename(filename));
    ctx.bucket()?.delete(&key).await?;
    Ok(())
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
    receive(ctx, channel, file)
        .await?
        .commit(ctx, channel, force, build)
        .await
}

/// The checks a file name and claimed SHA-256 pass before any byte is read.
fn check_announced(filename: &str, sha256: Option<&str>) -> ApiResult<CondaArchiveType> {
    let format = check_package_filename(filename).map_err(ApiError::invalid_name)?;
    if let Some(sha256) = sha256 {
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApiError::bad_request(
                "X-File-SHA256 must be the file's SHA-256 as 64 hex digits",
            ));
        }
    }
    Ok(format)
}

/// Receives a file of announced length: read whole when small, else streamed into a staging
/// object; hashed and read on the way, and its checksum checked.
pub(super) async fn receive(
    ctx: &RequestContext,
    channel: &str,
    file: IncomingFile,
) -> ApiResult<Received> {
    let format = check_announced(&file.filename, file.sha256.as_deref())?;
    if file.length == 0 {
        return Err(ApiError::invalid_package("the file is empty"));
    }
    let reader = Rc::new(RefCell::new(PackageReader::new(format)));
    let inspected = inspect(file.bytes, reader.clone());
    let (source, staging) = if file.length <= INLINE_BYTES {
        (inline(read_whole(inspected, file.length).await?), None)
    } else {
        let staging = staging_key(channel, &random_id());
        let stored = ctx
            .bucket()?
            .put(&staging, FixedLengthStream::wrap(inspected, file.length))
            .execute()
            .await;
        if let Err(error) = stored {
            // A put that failed left no object.
            super::log::error(&format!("upload stream to staging failed: {error}"));
            return Err(short_body(file.length));
        }
        let source = ObjectSource::Staged {
            key: staging.clone(),
        };
        (source, Some(staging))
    };
    Received::checked(ctx, file.filename, file.sha256, source, staging, reader).await
}

/// Receives a file sent without a length (chunked, as rattler's quetz and Artifactory uploads
/// are): kept in memory up to [`INLINE_BYTES`], beyond that written to a staging object part
/// by part; refused once it grows past the upload limit.
pub(super) async fn receive_unsized(
    ctx: &RequestContext,
    channel: &str,
    filename: String,
    sha256: Option<String>,
    bytes: BodyStream,
) -> ApiResult<Received> {
    let format = check_announced(&filename, sha256.as_deref())?;
    let limit = ctx.config().max_upload_bytes;
    let reader = Rc::new(RefCell::new(PackageReader::new(format)));
    let mut inspected = Box::pin(inspect(bytes, reader.clone()));
    let bucket = ctx.bucket()?;
    let staging = staging_key(channel, &random_id());
    let mut head = Vec::new();
    let mut writer: Option<ObjectWriter> = None;
    let mut total = 0u64;
    // An unfinished multipart write is no object: nothing is left behind when this fails.
    while let Some(chunk) = inspected.next().await {
        let chunk = chunk.map_err(|_| {
            ApiError::new(
                ErrorCode::IncompleteBody,
                "the body ended before it was complete",
            )
        })?;
        total += chunk.len() as u64;
        if total > limit {
            return Err(ApiError::new(
                ErrorCode::TooLarge,
                format!("the upload is larger than {limit} bytes, the most this server accepts"),
            ));
        }
        match &mut writer {
            None if (head.len() + chunk.len()) as u64 <= INLINE_BYTES => head.extend(chunk),
            None => {
                let mut staged = ObjectWriter::new(
                    &bucket,
                    staging.clone(),
                    "application/octet-stream",
                    ctx.config().r2_part_bytes,
                );
                staged.write(&std::mem::take(&mut head)).await?;
                staged.write(&chunk).await?;
                writer = Some(staged);
            }
            Some(staged) => staged.write(&chunk).await?,
        }
    }
    drop(inspected);
    if total == 0 {
        return Err(ApiError::invalid_package("the file is empty"));
    }
    let (source, staging) = match writer {
        Some(staged) => {
            staged.finish().await?;
            let source = ObjectSource::Staged {
                key: staging.clone(),
            };
            (source, Some(staging))
        }
        None => (inline(head), None),
    };
    Received::checked(ctx, filename, sha256, source, staging, reader).await
}

fn inline(bytes: Vec<u8>) -> ObjectSource {
    ObjectSource::Inline {
        base64: base64::engine::general_purpose::STANDARD.encode(bytes),
    }
}

pub(super) fn short_body(length: u64) -> ApiError {
    ApiError::new(
        ErrorCode::IncompleteBody,
        format!("the body ended before the {length} bytes announced arrived"),
    )
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

/// A file received whole, with the checksum it was announced with, not yet committed: commit
/// or discard it, either of which deletes its staging object.
pub(super) struct Received {
    filename: String,
    source: ObjectSource,
    staging: Option<String>,
    digests: Digests,
    metadata: Result<ArchiveMetadata, PackageError>,
    expected_subdir: Option<String>,
}

impl Received {
    async fn checked(
        ctx: &RequestContext,
        filename: String,
        claimed_sha256: Option<String>,
        source: ObjectSource,
        staging: Option<String>,
        reader: Rc<RefCell<PackageReader>>,
    ) -> ApiResult<Self> {
        let reader = Rc::try_unwrap(reader)
            .map_err(|_| super::error::internal("upload reader still shared"))?
            .into_inner();
        let (digests, metadata) = reader.finish();
        let received = Self {
            filename,
            source,
            staging,
            digests,
            metadata,
            expected_subdir: None,
        };
        match claimed_sha256 {
            Some(claimed) if !received.digests.sha256.eq_ignore_ascii_case(&claimed) => {
                let error = ApiError::new(
                    ErrorCode::ChecksumMismatch,
                    format!(
                        "the announced SHA-256 does not match the received bytes, whose SHA-256 is {}",
                        received.digests.sha256
                    ),
                );
                received.discard(ctx).await;
                Err(error)
            }
            _ => Ok(received),
        }
    }

    /// The SHA-256 of the bytes received, in hex.
    pub fn sha256(&self) -> &str {
        &self.digests.sha256
    }

    /// The MD5 of the bytes received, in hex.
    pub fn md5(&self) -> &str {
        &self.digests.md5
    }

    /// Refuses the package at commit unless it belongs in `subdir`: for uploads whose URL
    /// names the subdir.
    pub fn expect_subdir(&mut self, subdir: &str) {
        self.expected_subdir = Some(subdir.to_owned());
    }

    /// Drops the file unstored.
    pub async fn discard(self, ctx: &RequestContext) {
        if let Some(staging) = &self.staging {
            delete_staging(ctx, staging).await;
        }
    }

    /// Checks the package and commits it through the channel index (which rebuilds the
    /// artifacts unless `build` is false).
    pub async fn commit(
        self,
        ctx: &RequestContext,
        channel: &str,
        force: bool,
        build: bool,
    ) -> ApiResult<Ingested> {
        let Self {
            filename,
            source,
            staging,
            digests,
            metadata,
            expected_subdir,
        } = self;
        let checked = Checked {
            filename: &filename,
            source,
            digests,
            metadata,
            expected_subdir: expected_subdir.as_deref(),
        };
        let result = commit(ctx, channel, checked, force, build).await;
        if let Some(staging) = &staging {
            // Copied into place, or refused: the staging object has served either way.
            delete_staging(ctx, staging).await;
        }
        let ingested = result?;
        if force && ingested.status == 201 {
            // A forced replacement: attestations of the bytes it replaced no longer apply.
            remove_attestation(ctx, channel, &ingested.subdir, &filename).await?;
        }
        Ok(ingested)
    }
}

async fn delete_staging(ctx: &RequestContext, staging: &str) {
    let deleted = match ctx.bucket() {
        Ok(bucket) => bucket.delete(staging).await.map_err(|e| e.to_string()),
        Err(error) => Err(error.to_string()),
    };
    if let Err(error) = deleted {
        super::log::error(&format!(
            "could not delete staging object {staging}: {error}"
        ));
    }
}

/// A received file on its way into the channel index.
struct Checked<'a> {
    filename: &'a str,
    source: ObjectSource,
    digests: Digests,
    metadata: Result<ArchiveMetadata, PackageError>,
    expected_subdir: Option<&'a str>,
}

async fn commit(
    ctx: &RequestContext,
    channel: &str,
    checked: Checked<'_>,
    force: bool,
    build: bool,
) -> ApiResult<Ingested> {
    let Checked {
        filename,
        source,
        digests,
        metadata,
        expected_subdir,
    } = checked;
    let metadata =
        metadata.map_err(|e| ApiError::invalid_package(format!("invalid package: {e}")))?;
    let package = Package::from_parts(filename, &digests, metadata, Date::now().as_millis())
        .map_err(|e| ApiError::invalid_package(format!("invalid package: {e}")))?;
    if let Some(expected) = expected_subdir.filter(|subdir| *subdir != package.subdir) {
        return Err(ApiError::bad_request(format!(
            "{filename} belongs in {}, not in {expected}",
            package.subdir
        )));
    }
    let outcome = ctx
        .channel_index(channel)?
        .commit(&CommitRequest {
            channel: channel.to_owned(),
            source,
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

/// What a multipart body holds besides its `file` part: the small parts before it, and the
/// body after it once the file's content has been read.
pub(super) struct FormRest {
    before: SmallParts,
    after: Rc<RefCell<Option<AfterFile>>>,
}

/// The body once the file part has ended, with what its last chunk held beyond the file.
struct AfterFile {
    body: ByteStream,
    reader: MultipartReader,
    events: Vec<Event>,
}

impl FormRest {
    /// A small part that came before the file part, such as a form field.
    pub fn field_before_file(&self, name: &str) -> Option<&[u8]> {
        self.before.get(name)
    }

    /// The small parts of the whole body; call once the file's content has been consumed.
    pub async fn rest(self) -> ApiResult<SmallParts> {
        let mut fields = self.before;
        let after = self.after.borrow_mut().take();
        let Some(AfterFile {
            mut body,
            mut reader,
            events,
        }) = after
        else {
            return Err(ApiError::bad_request("the file part does not end"));
        };
        fields.feed(events).map_err(ApiError::bad_request)?;
        while !reader.is_done() {
            let Some(chunk) = body.next().await else {
                break;
            };
            let chunk = chunk.map_err(|_| {
                ApiError::new(
                    ErrorCode::IncompleteBody,
                    "the body ended before it was complete",
                )
            })?;
            let events = reader.feed(&chunk).map_err(ApiError::bad_request)?;
            fields.feed(events).map_err(ApiError::bad_request)?;
        }
        Ok(fields)
    }
}

/// The `file` part of a multipart body.
pub(super) struct FormFile {
    filename: String,
    sha256: String,
    /// The part's Content-Length header, or its length when it ended in the first chunk read;
    /// otherwise unknown, since other parts may follow it.
    length: Option<u64>,
    bytes: BodyStream,
}

impl FormFile {
    /// Receives the file, streamed to staging when its length is known, else as it comes.
    pub async fn receive(self, ctx: &RequestContext, channel: &str) -> ApiResult<Received> {
        match self.length {
            Some(length) => {
                let file = IncomingFile {
                    filename: self.filename,
                    sha256: Some(self.sha256),
                    length,
                    bytes: self.bytes,
                };
                receive(ctx, channel, file).await
            }
            None => {
                receive_unsized(ctx, channel, self.filename, Some(self.sha256), self.bytes).await
            }
        }
    }
}

/// Reads a multipart body up to the start of its `file` part and returns that part's content
/// as a stream. The file's name and SHA-256 are its part's `X-File-Name` and `X-File-SHA256`
/// headers, unless `named` gives them.
pub(super) async fn multipart_file(
    mut body: ByteStream,
    boundary: &str,
    total_length: u64,
    named: Option<(String, String)>,
) -> ApiResult<(FormFile, FormRest)> {
    let mut reader = MultipartReader::new(boundary);
    let mut before = SmallParts::default();
    loop {
        // The stream fails only when the client's connection breaks off mid-body.
        let chunk = body
            .next()
            .await
            .transpose()
            .map_err(|_| short_body(total_length))?
            .ok_or_else(|| ApiError::bad_request("the multipart body has no 'file' part"))?;
        let mut events = reader.feed(&chunk).map_err(ApiError::bad_request)?;
        let Some(start) = events
            .iter()
            .position(|e| matches!(e, Event::PartStart(h) if h.field_name() == Some("file")))
        else {
            before.feed(events).map_err(ApiError::bad_request)?;
            continue;
        };
        let mut rest = events.split_off(start);
        before.feed(events).map_err(ApiError::bad_request)?;
        let Event::PartStart(headers) = rest.remove(0) else {
            unreachable!("position matched a part start")
        };
        let mut first = Vec::new();
        let mut ended = false;
        let mut beyond = Vec::new();
        for event in rest {
            match event {
                Event::Data(data) if !ended => first.extend(data),
                Event::PartEnd if !ended => ended = true,
                other => beyond.push(other),
            }
        }
        let length = match headers.get("content-length") {
            Some(value) => Some(value.parse().map_err(|_| {
                ApiError::bad_request("the file part's Content-Length is not a number")
            })?),
            None if ended => Some(first.len() as u64),
            None => None,
        };
        let (filename, sha256) = match named {
            Some(named) => named,
            None => part_naming(&headers)?,
        };
        let after = Rc::new(RefCell::new(None));
        let rest = file_part_rest(body, reader, ended, beyond, after.clone());
        let bytes = stream::iter([Ok(first)]).chain(rest);
        let file = FormFile {
            filename,
            sha256,
            length,
            bytes: Box::pin(bytes),
        };
        return Ok((file, FormRest { before, after }));
    }
}

/// The file's name and SHA-256 from its part's headers.
fn part_naming(headers: &PartHeaders) -> ApiResult<(String, String)> {
    let filename = headers
        .get("x-file-name")
        .or(headers.file_name())
        .map(str::to_owned)
        .ok_or_else(|| ApiError::bad_request("the file part has no X-File-Name header"))?;
    let sha256 = headers
        .get("x-file-sha256")
        .map(str::to_owned)
        .ok_or_else(|| ApiError::bad_request("the file part has no X-File-SHA256 header"))?;
    Ok((filename, sha256))
}

/// The rest of the file part's content, ending where the part ends. The body after it is
/// left in `after` as soon as the part's end is read, in the same step as its last bytes: a
/// consumer that stops once it has the announced length still leaves it there.
fn file_part_rest(
    body: ByteStream,
    reader: MultipartReader,
    ended: bool,
    beyond: Vec<Event>,
    after: Rc<RefCell<Option<AfterFile>>>,
) -> impl Stream<Item = worker::Result<Vec<u8>>> {
    let state = if ended {
        *after.borrow_mut() = Some(AfterFile {
            body,
            reader,
            events: beyond,
        });
        None
    } else {
        Some((body, reader))
    };
    stream::unfold(state, move |state| {
        let after = after.clone();
        async move {
            let (mut body, mut reader) = state?;
            let chunk = match body.next().await {
                Some(Ok(chunk)) => chunk,
                Some(Err(error)) => return Some((Err(error), None)),
                None => return None,
            };
            let events = match reader.feed(&chunk) {
                Ok(events) => events,
                Err(message) => return Some((Err(worker::Error::RustError(message)), None)),
            };
            let mut data = Vec::new();
            let mut ended = false;
            let mut beyond = Vec::new();
            for event in events {
                match event {
                    Event::Data(bytes) if !ended => data.extend(bytes),
                    Event::PartEnd if !ended => ended = true,
                    other => beyond.push(other),
                }
            }
            if ended {
                *after.borrow_mut() = Some(AfterFile {
                    body,
                    reader,
                    events: beyond,
                });
                return Some((Ok(data), None));
            }
            Some((Ok(data), Some((body, reader))))
        }
    })
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
