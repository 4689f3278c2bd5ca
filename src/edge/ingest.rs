//! The one way a package file gets into a channel, whichever route brought it: [`ingest`].
//!
//! The body streams into a staging object while every byte is hashed and the package's
//! metadata is read; nothing large is buffered whole (files up to [`INLINE_BYTES`] are, and
//! travel in the commit request instead; a body of unknown length is staged part by part).
//! A larger request body of announced length is split by the runtime ([`super::tee`]): it
//! flows into R2, which hashes it, untouched, and wasm reads only what the package's scan asks
//! for.
//! Only a package that checks out is handed to the channel index, which moves it into place.
//! The staging object is deleted on every path.

use std::{cell::RefCell, rc::Rc};

use base64::Engine;
use futures_util::{stream, Stream, StreamExt};
use rattler_conda_types::package::CondaArchiveType;
use web_sys::ReadableStream;
use worker::{ByteStream, Date, FixedLengthStream, Response};

use super::attestation;
use super::auth::Principal;
use super::channel_index::{CommitRequest, CommitStatus, Freshness, ObjectSource};
use super::context::RequestContext;
use super::error::{internal, ApiError, ApiResult, ErrorCode};
use super::form::{self, BodyStream, Fields};
use super::object_writer::ObjectWriter;
use super::storage::{file_key, random_id, staging_key};
use super::tee;
use crate::names::check_package_filename;
use crate::package::{
    ArchiveMetadata, Digests, Package, PackageError, PackageReader, PackageScanner,
};
use crate::provenance::Provenance;
use crate::publish::content_md5_matches;
use crate::r2_checksum::sha256_refusal;
use crate::repodata::record_json;

/// Chunks handed between JS and wasm are gathered to this size: crossing the boundary per
/// 4 KiB network chunk costs more than the hashing.
const CHUNK: usize = 256 * 1024;
/// Files up to this size travel to the channel index inside the commit request rather than
/// through a staging object: three R2 operations fewer for the many small packages.
pub const INLINE_BYTES: u64 = 1024 * 1024;

/// Tells the uploader whether repodata.json holds the package yet (`current`) or will with the
/// build already scheduled (`pending`); the shards always do.
pub const REPODATA_FRESHNESS_HEADER: &str = "X-Repodata-Json";

/// A file as its upload names it.
pub struct Named {
    pub filename: String,
    /// The SHA-256 the uploader claims; an import claims none.
    pub sha256: Option<String>,
}

/// Where the file's bytes come from.
pub enum Body {
    /// The request's body (`None`: it has none): of the length its Content-Length announces,
    /// or, without one, of a length known at its end (rattler's quetz and Artifactory uploads
    /// are chunked).
    Request {
        file: Named,
        stream: Option<ReadableStream>,
    },
    /// Exactly `length` bytes (a member of an import's tar).
    Sized {
        file: Named,
        length: u64,
        bytes: BodyStream,
    },
    /// The `file` part of a `multipart/form-data` body of `length` bytes; named by the part's
    /// `X-File-Name` and `X-File-SHA256` headers unless `file` names it.
    Form {
        stream: ByteStream,
        boundary: String,
        length: u64,
        file: Option<Named>,
        fields: FormFields,
    },
}

/// Which fields of a form are judged with its file.
#[derive(Clone, Copy, Default)]
pub struct FormFields {
    /// anaconda-client's `Content-MD5`, before the file: must name the bytes received.
    pub content_md5: bool,
    /// prefix.dev's `attestation`, after the file: stored with the package (see
    /// [`attestation`]), refused with it when it does not speak of its bytes.
    pub attestation: bool,
}

/// How an ingest goes.
pub struct Options<'a> {
    /// Replace a file of the same name with other bytes.
    pub force: bool,
    /// Refuse the package unless it belongs in this subdir (for routes whose URL names it).
    pub subdir: Option<&'a str>,
    /// Rebuild the subdir's artifacts with the commit; an import builds once at its end.
    pub build: bool,
    /// The change's line in the audit log, once the file is named; `None`: the caller logs.
    pub audit: Option<Audit<'a>>,
    /// Who is recorded as the file's publisher (the caller's key, see
    /// [`Principal::provenance`]).
    pub provenance: Provenance,
    pub answer: Answer,
}

impl<'a> Options<'a> {
    /// One upload by `caller` through the route `action`: built with its commit, logged,
    /// recorded as the caller's, and answered by its outcome.
    pub fn upload(action: &'static str, caller: &'a Principal, force: bool) -> Self {
        Self {
            force,
            subdir: None,
            build: true,
            audit: Some(Audit {
                action,
                user: &caller.name,
            }),
            provenance: caller.provenance(),
            answer: Answer::ByOutcome,
        }
    }
}

/// Who changes the channel, through which route.
pub struct Audit<'a> {
    pub action: &'static str,
    pub user: &'a str,
}

/// The status a stored file is answered with.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 201 for a new file, 200 for bytes that were already there.
    ByOutcome,
    /// 201 either way, as the storage anaconda.org's clients post to answers.
    Created,
}

/// A package that went into the channel index.
pub struct Stored {
    pub filename: String,
    pub subdir: String,
    pub outcome: CommitStatus,
    /// The stored record, canonical JSON.
    pub record: String,
    /// Whether repodata.json holds it yet (`None` when the build was left to the caller).
    pub repodata: Option<Freshness>,
    answer: Answer,
}

impl Stored {
    pub fn status(&self) -> u16 {
        match (self.answer, self.outcome) {
            (Answer::Created, _) | (_, CommitStatus::Created) => 201,
            (Answer::ByOutcome, CommitStatus::Unchanged) => 200,
        }
    }

    /// The record as JSON, whether repodata.json holds it yet, and where the file is served.
    pub fn response(&self, channel: &str) -> ApiResult<Response> {
        let freshness = self.repodata.unwrap_or(Freshness::Current);
        Ok(Response::builder()
            .with_status(self.status())
            .with_header("Content-Type", "application/json")?
            .with_header(REPODATA_FRESHNESS_HEADER, freshness.as_str())?
            .with_header(
                "Location",
                &format!("/{}", file_key(channel, &self.subdir, &self.filename)),
            )?
            .fixed(self.record.clone().into_bytes()))
    }
}

/// Receives one package file into `channel`: read, checked, committed through the channel
/// index (with its attestation, if the form brings one), and logged. A form whose file part
/// names the file is refused unlogged until it does.
pub async fn ingest(
    ctx: &RequestContext,
    channel: &str,
    body: Body,
    options: Options<'_>,
) -> ApiResult<Stored> {
    let (file, incoming) = match body {
        Body::Request { file, stream } => {
            let incoming = request_bytes(ctx, stream);
            (file, incoming)
        }
        Body::Sized {
            file,
            length,
            bytes,
        } => {
            let incoming = Incoming {
                length: Some(length),
                bytes: Bytes::Chunks(bytes),
                form: None,
            };
            (file, Ok(incoming))
        }
        Body::Form {
            stream,
            boundary,
            length,
            file,
            fields,
        } => {
            let (file, opened) = match (file, form::file_part(stream, &boundary, length).await) {
                (Some(file), opened) => (file, opened),
                // Named by its part: refused unlogged until the part is read.
                (None, opened) => {
                    let (part, fields) = opened?;
                    let (filename, sha256) = part
                        .headers
                        .upload_naming()
                        .map_err(ApiError::bad_request)?;
                    let file = Named {
                        filename,
                        sha256: Some(sha256),
                    };
                    (file, Ok((part, fields)))
                }
            };
            let incoming = opened.map(|(part, rest)| Incoming {
                length: part.length,
                bytes: Bytes::Chunks(part.bytes),
                form: Some((rest, fields)),
            });
            (file, incoming)
        }
    };
    let result = match incoming {
        Ok(incoming) => {
            store(
                ctx,
                channel,
                file.filename.clone(),
                file.sha256,
                incoming,
                &options,
            )
            .await
        }
        Err(error) => Err(error),
    };
    if let Some(audit) = &options.audit {
        let path = match options.subdir {
            Some(subdir) => file_key(channel, subdir, &file.filename),
            None => format!("{channel}/{}", file.filename),
        };
        let status = result
            .as_ref()
            .map_or_else(ApiError::status, Stored::status);
        super::log::change(audit.action, audit.user, &path, status);
    }
    result
}

/// A file's bytes, with its length when that is known before they are read.
struct Incoming {
    length: Option<u64>,
    bytes: Bytes,
    form: Option<(Fields, FormFields)>,
}

enum Bytes {
    /// Read in wasm.
    Chunks(BodyStream),
    /// The request's body, for the runtime to split when it is large.
    Body(ReadableStream),
}

fn request_bytes(ctx: &RequestContext, stream: Option<ReadableStream>) -> ApiResult<Incoming> {
    let length = match ctx.req().headers().get("Content-Length")? {
        Some(_) => Some(ctx.upload_length()?),
        None => None,
    };
    let stream = stream.ok_or_else(|| ApiError::invalid_package("the file is empty"))?;
    Ok(Incoming {
        length,
        bytes: Bytes::Body(stream),
        form: None,
    })
}

async fn store(
    ctx: &RequestContext,
    channel: &str,
    filename: String,
    sha256: Option<String>,
    incoming: Incoming,
    options: &Options<'_>,
) -> ApiResult<Stored> {
    let received = receive(
        ctx,
        channel,
        filename,
        sha256,
        incoming.length,
        incoming.bytes,
    )
    .await?;
    // The form is judged before the package is committed, so a bad one leaves nothing behind.
    let attestation = match incoming.form {
        Some((fields, which)) => match judge_form(fields, which, &received).await {
            Ok(attestation) => attestation,
            Err(error) => {
                received.discard(ctx).await;
                return Err(error);
            }
        },
        None => None,
    };
    let stored = received.commit(ctx, channel, options).await?;
    if options.force && stored.outcome == CommitStatus::Created {
        // A forced replacement: attestations of the bytes it replaced no longer apply.
        attestation::remove(ctx, channel, &stored.subdir, &stored.filename).await?;
    }
    if let Some(document) = attestation {
        attestation::store(ctx, channel, &stored.subdir, &stored.filename, document).await?;
    }
    Ok(stored)
}

/// Checks the form's fields against the bytes received; the attestation document to store,
/// if the form brings one.
async fn judge_form(
    fields: Fields,
    which: FormFields,
    received: &Received,
) -> ApiResult<Option<String>> {
    if which.content_md5 {
        if let Some(claimed) = fields.before_file("Content-MD5") {
            if !content_md5_matches(&String::from_utf8_lossy(&claimed), &received.digests.md5) {
                return Err(ApiError::new(
                    ErrorCode::ChecksumMismatch,
                    "the Content-MD5 sent does not match the received bytes",
                ));
            }
        }
    }
    if !which.attestation {
        return Ok(None);
    }
    // The file part comes first in rattler's form, so the rest is read now.
    let fields = fields.all().await?;
    fields
        .get("attestation")
        .map(|text| attestation::document(text, &received.digests.sha256))
        .transpose()
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

/// Reads the file, hashing and inspecting it on the way, and checks its claimed checksum.
async fn receive(
    ctx: &RequestContext,
    channel: &str,
    filename: String,
    sha256: Option<String>,
    length: Option<u64>,
    bytes: Bytes,
) -> ApiResult<Received> {
    let format = check_announced(&filename, sha256.as_deref())?;
    let bytes = match (bytes, length) {
        (Bytes::Body(body), Some(length)) if length > INLINE_BYTES => {
            let claimed = sha256.as_deref();
            let received =
                receive_split(ctx, channel, filename, format, &body, length, claimed).await?;
            return check_claimed(ctx, received, sha256).await;
        }
        (Bytes::Body(body), _) => Box::pin(ByteStream::from(body)),
        (Bytes::Chunks(bytes), _) => bytes,
    };
    let reader = Rc::new(RefCell::new(PackageReader::new(format)));
    let inspected = inspect(bytes, reader.clone());
    let (source, staging) = match length {
        Some(length) => receive_sized(ctx, channel, inspected, length).await?,
        None => receive_unsized(ctx, channel, inspected).await?,
    };
    let reader = Rc::try_unwrap(reader)
        .map_err(|_| internal("upload reader still shared"))?
        .into_inner();
    let (digests, metadata) = reader.finish();
    let received = Received {
        filename,
        source,
        staging,
        digests,
        metadata,
    };
    check_claimed(ctx, received, sha256).await
}

/// The received file, unless its bytes are not those the uploader claims to have sent.
async fn check_claimed(
    ctx: &RequestContext,
    received: Received,
    sha256: Option<String>,
) -> ApiResult<Received> {
    match sha256 {
        Some(claimed) if !received.digests.sha256.eq_ignore_ascii_case(&claimed) => {
            let error = checksum_mismatch(Some(&received.digests.sha256));
            received.discard(ctx).await;
            Err(error)
        }
        _ => Ok(received),
    }
}

/// Where a received file's bytes are, and the staging object to delete once it has served.
type Source = (ObjectSource, Option<String>);

/// A request body of announced `length`, beyond [`INLINE_BYTES`]: split by the runtime, which
/// streams one branch into a staging object while the package's scan reads another as far as
/// it must. R2 hashes what it stores: it checks the `claimed` SHA-256 (refusing the put when
/// the bytes differ) and gives the MD5; with no claim, a third branch goes to the runtime's
/// SHA-256 digest stream.
async fn receive_split(
    ctx: &RequestContext,
    channel: &str,
    filename: String,
    format: CondaArchiveType,
    body: &ReadableStream,
    length: u64,
    claimed: Option<&str>,
) -> ApiResult<Received> {
    let split = tee::split(body, claimed.is_none());
    let bucket = ctx.bucket()?;
    let staging = staging_key(channel, &random_id());
    let mut put = bucket.put(&staging, split.store);
    if let Some(claimed) = claimed {
        let claimed = hex::decode(claimed).map_err(|_| internal("claimed SHA-256 is not hex"))?;
        put = put.sha256(claimed);
    }
    let sha256 = async {
        match split.sha256 {
            Some(digest) => digest.finish().await.map(Some),
            None => Ok(None),
        }
    };
    let (stored, sha256, scanned) = futures_util::join!(
        put.execute(),
        sha256,
        scan(split.read, PackageScanner::new(format)),
    );
    let object = match stored {
        Ok(Some(object)) => object,
        Ok(None) => return Err(internal("the staging put stored nothing")),
        // A put that failed left no object.
        Err(error) => {
            let message = error.to_string();
            if let Some(actual) = sha256_refusal(&message) {
                return Err(checksum_mismatch(actual.as_deref()));
            }
            super::log::error(&format!("upload stream to staging failed: {message}"));
            return Err(ApiError::short_body(length));
        }
    };
    let md5 = object.checksum().md5.map(hex::encode);
    let sha256 = sha256.map(|digest| digest.or_else(|| claimed.map(str::to_ascii_lowercase)));
    let (digests, scanner) = match (sha256, md5, scanned) {
        (Ok(Some(sha256)), Some(md5), Ok(scanner)) => {
            let digests = Digests {
                sha256,
                md5,
                size: length,
            };
            (digests, scanner)
        }
        (sha256, md5, scanned) => {
            let why = match (sha256, md5, scanned) {
                (Err(error), _, _) | (_, _, Err(error)) => error.to_string(),
                _ => "R2 gave no MD5".to_owned(),
            };
            super::log::error(&format!("upload stream broke off after staging: {why}"));
            delete_staging(ctx, &staging).await;
            return Err(ApiError::short_body(length));
        }
    };
    Ok(Received {
        filename,
        source: ObjectSource::Staged {
            key: staging.clone(),
        },
        staging: Some(staging),
        digests,
        metadata: scanner.finish(length),
    })
}

/// The bytes received are not those the uploader claims to have sent, whose SHA-256 is
/// `actual` (when known).
fn checksum_mismatch(actual: Option<&str>) -> ApiError {
    let message = match actual {
        Some(actual) => format!(
            "the announced SHA-256 does not match the received bytes, whose SHA-256 is {actual}"
        ),
        None => "the announced SHA-256 does not match the received bytes".to_owned(),
    };
    ApiError::new(ErrorCode::ChecksumMismatch, message)
}

/// Hands the scan the parts of each chunk it asks for, until it needs no more (when the rest
/// of the branch is let go) or the branch ends.
async fn scan(
    mut chunks: tee::Chunks,
    mut scanner: PackageScanner,
) -> worker::Result<PackageScanner> {
    while let Some(chunk) = chunks.next().await? {
        let skippable = scanner.skippable();
        if skippable == u64::MAX {
            chunks.cancel();
            break;
        }
        let length = chunk.length();
        let skipped = skippable.min(length.into()) as u32;
        scanner.skip(skipped.into());
        if skipped < length {
            scanner.feed(&chunk.subarray(skipped, length).to_vec());
        }
    }
    Ok(scanner)
}

/// A file of announced length: read whole when small, else streamed into a staging object.
async fn receive_sized(
    ctx: &RequestContext,
    channel: &str,
    bytes: impl Stream<Item = worker::Result<Vec<u8>>> + 'static,
    length: u64,
) -> ApiResult<Source> {
    if length == 0 {
        return Err(ApiError::invalid_package("the file is empty"));
    }
    if length <= INLINE_BYTES {
        return Ok((inline(read_whole(bytes, length).await?), None));
    }
    let staging = staging_key(channel, &random_id());
    let stored = ctx
        .bucket()?
        .put(&staging, FixedLengthStream::wrap(bytes, length))
        .execute()
        .await;
    if let Err(error) = stored {
        // A put that failed left no object.
        super::log::error(&format!("upload stream to staging failed: {error}"));
        return Err(ApiError::short_body(length));
    }
    let source = ObjectSource::Staged {
        key: staging.clone(),
    };
    Ok((source, Some(staging)))
}

/// A file sent without a length: kept in memory up to [`INLINE_BYTES`], beyond that written to
/// a staging object part by part; refused once it grows past the upload limit.
async fn receive_unsized(
    ctx: &RequestContext,
    channel: &str,
    bytes: impl Stream<Item = worker::Result<Vec<u8>>>,
) -> ApiResult<Source> {
    let limit = ctx.config().max_upload_bytes;
    let mut bytes = Box::pin(bytes);
    let bucket = ctx.bucket()?;
    let staging = staging_key(channel, &random_id());
    let mut head = Vec::new();
    let mut writer: Option<ObjectWriter> = None;
    let mut total = 0u64;
    // An unfinished multipart write is no object: nothing is left behind when this fails.
    while let Some(chunk) = bytes.next().await {
        let chunk = chunk.map_err(|_| ApiError::broken_off())?;
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
    if total == 0 {
        return Err(ApiError::invalid_package("the file is empty"));
    }
    match writer {
        Some(staged) => {
            staged.finish().await?;
            let source = ObjectSource::Staged {
                key: staging.clone(),
            };
            Ok((source, Some(staging)))
        }
        None => Ok((inline(head), None)),
    }
}

fn inline(bytes: Vec<u8>) -> ObjectSource {
    ObjectSource::Inline {
        base64: base64::engine::general_purpose::STANDARD.encode(bytes),
    }
}

/// All of a small file, which must be exactly `length` bytes.
async fn read_whole(
    bytes: impl Stream<Item = worker::Result<Vec<u8>>>,
    length: u64,
) -> ApiResult<Vec<u8>> {
    let mut bytes = Box::pin(bytes);
    let mut whole = Vec::with_capacity(length as usize);
    while let Some(chunk) = bytes.next().await {
        whole.extend(chunk.map_err(|_| ApiError::short_body(length))?);
        if whole.len() as u64 > length {
            return Err(ApiError::bad_request(format!(
                "the file is longer than the {length} bytes announced"
            )));
        }
    }
    if (whole.len() as u64) < length {
        return Err(ApiError::short_body(length));
    }
    Ok(whole)
}

/// A file received whole, its claimed checksum checked, not yet committed: commit or discard
/// it, either of which deletes its staging object.
struct Received {
    filename: String,
    source: ObjectSource,
    staging: Option<String>,
    digests: Digests,
    metadata: Result<ArchiveMetadata, PackageError>,
}

impl Received {
    /// Drops the file unstored.
    async fn discard(self, ctx: &RequestContext) {
        if let Some(staging) = &self.staging {
            delete_staging(ctx, staging).await;
        }
    }

    /// Checks the package and commits it through the channel index.
    async fn commit(
        mut self,
        ctx: &RequestContext,
        channel: &str,
        options: &Options<'_>,
    ) -> ApiResult<Stored> {
        let staging = self.staging.take();
        let result = async {
            let request = self.into_request(channel, options)?;
            let outcome = ctx.channel_index(channel)?.commit(&request).await?;
            Ok(Stored {
                filename: request.filename,
                subdir: request.subdir,
                outcome: outcome.status,
                record: outcome.record,
                repodata: outcome.repodata,
                answer: options.answer,
            })
        }
        .await;
        if let Some(staging) = &staging {
            // Copied into place, or refused: the staging object has served either way.
            delete_staging(ctx, staging).await;
        }
        result
    }

    fn into_request(self, channel: &str, options: &Options<'_>) -> ApiResult<CommitRequest> {
        let invalid = |e: PackageError| ApiError::invalid_package(format!("invalid package: {e}"));
        let metadata = self.metadata.map_err(invalid)?;
        let package = Package::from_parts(
            &self.filename,
            &self.digests,
            metadata,
            Date::now().as_millis(),
        )
        .map_err(invalid)?;
        if let Some(expected) = options.subdir.filter(|subdir| *subdir != package.subdir) {
            return Err(ApiError::bad_request(format!(
                "{} belongs in {}, not in {expected}",
                self.filename, package.subdir
            )));
        }
        Ok(CommitRequest {
            channel: channel.to_owned(),
            source: self.source,
            subdir: package.subdir,
            filename: package.filename,
            name: package.name,
            sha256: self.digests.sha256,
            record: record_json(&package.record),
            run_exports: package.run_exports.as_ref().map(|v| v.to_string()),
            about: package.about.as_ref().map(|v| v.to_string()),
            provenance: Some(options.provenance.clone()),
            force: options.force,
            build: options.build,
        })
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

/// Passes the bytes on in chunks of about [`CHUNK`] bytes, feeding each to the package reader.
fn inspect(
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
