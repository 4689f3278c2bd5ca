//! The one way a package file gets into a channel, whichever route brought it: [`ingest`].
//!
//! The body streams into R2 while every byte is hashed and the package's metadata is read;
//! nothing large is buffered whole (files up to [`INLINE_BYTES`] are, and travel in the commit
//! request instead; a body of unknown length is staged part by part).
//! A larger request body of announced length is split by the runtime ([`super::tee`]): it
//! flows into R2 untouched, R2 hashing what it stores, and wasm reads only what the package's
//! scan asks for; past a long stretch it steps over (a `.conda`'s pkg component), from the
//! stored object ([`Scan::resume`]). When the uploader claims the SHA-256 and the scan finds the subdir early,
//! the bytes go once, straight to the file's own key, which the channel index reserves for the
//! upload; otherwise ([`crate::placement`]) through a staging object.
//! Only a package that checks out is handed to the channel index, which stores its record (and
//! copies a staging object into place). A staging object is deleted, and a reservation
//! released with what it holds, on every path that does not commit.

use std::{cell::RefCell, rc::Rc};

use base64::Engine;
use futures_util::{stream, Stream, StreamExt};
use rattler_conda_types::package::{CondaArchiveIdentifier, CondaArchiveType};
use web_sys::ReadableStream;
use worker::{ByteStream, Date, FixedLengthStream, HttpMetadata, Response};

use super::attestation;
use super::auth::Principal;
use super::channel_index::{CommitRequest, CommitStatus, FileRequest, Freshness, ObjectSource};
use super::context::RequestContext;
use super::error::{internal, ApiError, ApiResult, ErrorCode};
use super::form::{self, BodyStream, Fields};
use super::object_writer::ObjectWriter;
use super::storage::{file_key, random_id, staging_key};
use super::tee;
use crate::names::{check_package_filename, ChannelFile};
use crate::package::{
    ArchiveMetadata, Digests, Package, PackageError, PackageReader, PackageScanner,
};
use crate::placement::{placement, Placement, Scanned};
use crate::provenance::Provenance;
use crate::publish::content_md5_matches;
use crate::r2_checksum::sha256_refusal;
use crate::repodata::record_json;

/// Chunks handed between JS and wasm are gathered to this size: crossing the boundary per
/// 4 KiB network chunk costs more than the hashing.
const CHUNK: usize = 256 * 1024;
/// A stretch of a package's bytes that its scan steps over unseen, at least this long, is not
/// read from the request: the scan stops there and goes on from the stored object after the
/// put (see [`Scan::resume`]). From about this size, a second reader of every byte costs more
/// than one ranged R2 read.
const RESUME_BYTES: u64 = 1024 * 1024;
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
    let length = match ctx.header("Content-Length") {
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
        options,
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
    options: &Options<'_>,
) -> ApiResult<Received> {
    let format = check_announced(&filename, sha256.as_deref())?;
    let bytes = match (bytes, length) {
        (Bytes::Body(body), Some(length)) if length > INLINE_BYTES => {
            let file = SplitFile {
                filename,
                format,
                length,
                claimed: sha256.as_deref(),
                named: options.subdir,
                force: options.force,
            };
            let received = receive_split(ctx, channel, file, &body).await?;
            return check_claimed(ctx, received, sha256).await;
        }
        (Bytes::Body(body), _) => Box::pin(ByteStream::from(body)),
        (Bytes::Chunks(bytes), _) => bytes,
    };
    let reader = Rc::new(RefCell::new(PackageReader::new(format)));
    let inspected = inspect(bytes, reader.clone());
    let source = match length {
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
        reservation: None,
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

/// A request body of announced length beyond [`INLINE_BYTES`], as [`receive_split`] takes it.
struct SplitFile<'a> {
    filename: String,
    format: CondaArchiveType,
    length: u64,
    /// The SHA-256 the uploader claims.
    claimed: Option<&'a str>,
    /// The subdir the route's URL names.
    named: Option<&'a str>,
    /// A forced replacement.
    force: bool,
}

/// A request body of announced length, beyond [`INLINE_BYTES`]: split by the runtime. The
/// package's scan reads one branch as far as it must while the other is held, until the scan
/// knows the subdir or [`crate::placement`] gives up waiting; the held branch then goes straight
/// to the file's key ([`receive_direct`]) or to a staging object ([`receive_staged`]).
async fn receive_split(
    ctx: &RequestContext,
    channel: &str,
    file: SplitFile<'_>,
    body: &ReadableStream,
) -> ApiResult<Received> {
    let split = tee::split(body);
    let mut scan = Scan {
        chunks: Some(split.read),
        scanner: PackageScanner::new(file.format),
        read: 0,
        resume_at: None,
    };
    let held_bytes = ctx.config().upload_hold_bytes;
    let placed = match scan.until_placed(&file, held_bytes).await {
        Ok(placed) => placed,
        // Nothing is stored yet.
        Err(error) => {
            super::log::error(&format!("upload stream broke off before storing: {error}"));
            return Err(ApiError::short_body(file.length));
        }
    };
    match placed {
        Placement::Direct { subdir } => {
            receive_direct(ctx, channel, file, Some(&subdir), &split.store, scan).await
        }
        Placement::Guessed => receive_direct(ctx, channel, file, None, &split.store, scan).await,
        Placement::Staged => receive_staged(ctx, channel, file, &split.store, scan).await,
    }
}

/// The held branch written once, straight to `<channel>/<subdir>/<filename>` (see
/// [`crate::placement`]): in one put that R2 checks against the claimed SHA-256 and that gives
/// the MD5, to the key the channel index reserves for this upload. `subdir` is `None` when the
/// package names its own only at its end: the index then reserves the key of the subdir its
/// records suggest, and if the package proves to belong elsewhere, its commit copies the object
/// into place as it would a staging object. When the index reserves no key (a record names the
/// file, or uploads of other bytes are writing it, or the channel has no records to go by), the
/// file is staged instead, and its commit answers as for any file of that name.
async fn receive_direct(
    ctx: &RequestContext,
    channel: &str,
    file: SplitFile<'_>,
    subdir: Option<&str>,
    store: &ReadableStream,
    scan: Scan,
) -> ApiResult<Received> {
    let Some(claimed) = file.claimed else {
        return receive_staged(ctx, channel, file, store, scan).await;
    };
    let claimed_hex = claimed.to_ascii_lowercase();
    let index = ctx.channel_index(channel)?;
    let reservation = match subdir {
        Some(subdir) => {
            let reservation = FileRequest {
                channel: channel.to_owned(),
                subdir: subdir.to_owned(),
                filename: file.filename.clone(),
            };
            let reserved = index.reserve(&reservation, &claimed_hex).await?;
            reserved.then_some(reservation)
        }
        None => match CondaArchiveIdentifier::try_from_filename(&file.filename) {
            Some(id) => {
                index
                    .reserve_likely(channel, &file.filename, &id.identifier.name, &claimed_hex)
                    .await?
            }
            None => None,
        },
    };
    let Some(reservation) = reservation else {
        return receive_staged(ctx, channel, file, store, scan).await;
    };
    let guessed = subdir.is_none();
    let subdir = reservation.subdir.as_str();
    let key = file_key(channel, subdir, &file.filename);
    let sha256 = hex::decode(claimed).map_err(|_| internal("claimed SHA-256 is not hex"))?;
    let bucket = ctx.bucket()?;
    let put = bucket
        .put(&key, store.clone())
        .sha256(sha256)
        .http_metadata(HttpMetadata {
            content_type: Some(ChannelFile::content_type(&file.filename).to_owned()),
            ..Default::default()
        });
    let (stored, scanned) = futures_util::join!(put.execute(), scan.read_on(file.length));
    let length = file.length;
    let md5 = stored.map(|object| object.and_then(|object| object.checksum().md5));
    let scanned = match (&md5, scanned) {
        (Ok(Some(_)), Ok(scan)) => match scan.resume(&bucket, &key).await {
            Ok(scanner) => Ok(scanner),
            // Stored whole, but not read back: the upload is not committed.
            Err(error) => {
                release(ctx, &reservation).await;
                return Err(internal(format!("reading {key} back: {error}")));
            }
        },
        (_, scanned) => scanned.map(|scan| scan.scanner),
    };
    match (md5, scanned) {
        (Ok(Some(md5)), Ok(scanner)) => Ok(Received {
            filename: file.filename,
            // Where the records suggested, but the package names another subdir: the object
            // serves as a staging object.
            source: match guessed && scanner.subdir().as_deref() != Some(subdir) {
                true => ObjectSource::Staged { key },
                false => ObjectSource::Written { key },
            },
            reservation: Some(reservation),
            digests: Digests {
                sha256: claimed_hex,
                md5: hex::encode(md5),
                size: length,
            },
            metadata: scanner.finish(length),
        }),
        (md5, scanned) => {
            // A put that failed stored nothing; one that succeeded is deleted with the
            // reservation.
            release(ctx, &reservation).await;
            match (md5, scanned) {
                (Err(error), _) => Err(put_refused(&error, length)),
                (_, Err(error)) => {
                    super::log::error(&format!("upload stream to {key} broke off: {error}"));
                    Err(ApiError::short_body(length))
                }
                _ => Err(internal("R2 stored no object, or gave no MD5")),
            }
        }
    }
}

/// A put of an upload's bytes that R2 refused: other bytes than the claimed SHA-256, or a body
/// that broke off before its announced `length`.
fn put_refused(error: &worker::Error, length: u64) -> ApiError {
    let message = error.to_string();
    if let Some(actual) = sha256_refusal(&message) {
        return checksum_mismatch(actual.as_deref());
    }
    super::log::error(&format!("upload stream to R2 failed: {message}"));
    ApiError::short_body(length)
}

/// Ends a reservation whose upload will not commit (the index deletes what it wrote).
async fn release(ctx: &RequestContext, reservation: &FileRequest) {
    let released = match ctx.channel_index(&reservation.channel) {
        Ok(index) => index.release(reservation).await,
        Err(error) => Err(error),
    };
    if let Err(error) = released {
        // The index's sweep ends it once STAGING_GRACE_SECONDS have passed.
        super::log::error(&format!(
            "could not release the upload of {}/{}: {}",
            reservation.subdir, reservation.filename, error.message
        ));
    }
}

/// The held branch streamed into a staging object. R2 hashes what it stores: it checks the
/// claimed SHA-256 (refusing the put when the bytes differ) and gives the MD5; with no claim, a
/// branch of it goes to the runtime's SHA-256 digest stream.
async fn receive_staged(
    ctx: &RequestContext,
    channel: &str,
    file: SplitFile<'_>,
    store: &ReadableStream,
    scan: Scan,
) -> ApiResult<Received> {
    let (store, sha256) = match file.claimed {
        Some(_) => (store.clone(), None),
        None => {
            let (store, hashed) = tee::branch(store);
            (store, Some(tee::Digest::of(&hashed, "SHA-256")))
        }
    };
    let bucket = ctx.bucket()?;
    let staging = staging_key(channel, &random_id());
    let mut put = bucket.put(&staging, store);
    if let Some(claimed) = file.claimed {
        let claimed = hex::decode(claimed).map_err(|_| internal("claimed SHA-256 is not hex"))?;
        put = put.sha256(claimed);
    }
    let sha256 = async {
        match sha256 {
            Some(digest) => digest.finish().await.map(Some),
            None => Ok(None),
        }
    };
    let (stored, sha256, scanned) =
        futures_util::join!(put.execute(), sha256, scan.read_on(file.length));
    let length = file.length;
    let object = match stored {
        Ok(Some(object)) => object,
        Ok(None) => return Err(internal("the staging put stored nothing")),
        // A put that failed left no object.
        Err(error) => return Err(put_refused(&error, length)),
    };
    let scanned = match scanned {
        Ok(scan) => match scan.resume(&bucket, &staging).await {
            Ok(scanner) => Ok(scanner),
            Err(error) => {
                delete_staging(ctx, &staging).await;
                return Err(internal(format!("reading {staging} back: {error}")));
            }
        },
        Err(error) => Err(error),
    };
    let md5 = object.checksum().md5.map(hex::encode);
    let claimed = file.claimed;
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
        filename: file.filename,
        source: ObjectSource::Staged { key: staging },
        reservation: None,
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

/// The package's scan of a branch: it is handed the parts of each chunk it asks for, until it
/// needs no more (when the rest of the branch is let go) or the branch ends.
struct Scan {
    /// `None` once the scan reads no more.
    chunks: Option<tee::Chunks>,
    scanner: PackageScanner,
    /// Bytes of the branch read so far.
    read: u64,
    /// Where the scan goes on in the stored object ([`Self::resume`]): set when it let its
    /// branch go at a long stretch it steps over unseen (a `.conda`'s pkg component before
    /// its info component), so that the runtime feeds one reader to the end, not two.
    resume_at: Option<u64>,
}

impl Scan {
    /// Reads on until it is known where the bytes of `file` go (`held_bytes`: the most read
    /// before giving up on the subdir).
    async fn until_placed(
        &mut self,
        file: &SplitFile<'_>,
        held_bytes: u64,
    ) -> worker::Result<Placement> {
        let named = file.named;
        loop {
            let found = match named {
                Some(_) => None,
                None => self.scanner.subdir(),
            };
            let scanned = Scanned {
                claimed: file.claimed.is_some(),
                force: file.force,
                named,
                found: found.as_deref(),
                read: self.read,
                // `u64::MAX`: the scan needs nothing more (and `finished` says so next).
                steps_over: match self.scanner.skippable() {
                    u64::MAX => 0,
                    skippable => skippable,
                },
                finished: self.chunks.is_none(),
                held_bytes,
            };
            if let Some(placed) = placement(scanned) {
                return Ok(placed);
            }
            self.step().await?;
        }
    }

    /// Reads the branch of a file of `length` bytes on to the scan's end, or to a stretch of
    /// at least [`RESUME_BYTES`] it steps over and bytes beyond it, where it stops until the
    /// bytes are stored. (A stretch that would end past the file is read on: the scan then
    /// finds the archive cut short, as it would in any other.)
    async fn read_on(mut self, length: u64) -> worker::Result<Self> {
        while self.chunks.is_some() {
            let skippable = self.scanner.skippable();
            if skippable >= RESUME_BYTES && self.read.saturating_add(skippable) < length {
                if let Some(chunks) = self.chunks.take() {
                    chunks.cancel();
                }
                self.scanner.skip(skippable);
                self.resume_at = Some(self.read + skippable);
                break;
            }
            self.step().await?;
        }
        Ok(self)
    }

    /// The finished scan: what [`Self::read_on`] left, read from the object stored at `key`
    /// (one ranged R2 read, the scan stepping over whatever else it does not keep).
    async fn resume(self, bucket: &worker::Bucket, key: &str) -> worker::Result<PackageScanner> {
        let mut scanner = self.scanner;
        let Some(offset) = self.resume_at else {
            return Ok(scanner);
        };
        let object = bucket
            .get(key)
            .range(worker::Range::OffsetToEnd { offset })
            .execute()
            .await?
            .ok_or_else(|| worker::Error::RustError(format!("{key} is not stored")))?;
        let body = object
            .body()
            .ok_or_else(|| worker::Error::RustError(format!("{key} has no body")))?;
        let mut chunks = body.stream()?;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            let skippable = scanner.skippable();
            if skippable == u64::MAX {
                break;
            }
            let skipped = skippable.min(chunk.len() as u64);
            scanner.skip(skipped);
            scanner.feed(&chunk[skipped as usize..]);
        }
        Ok(scanner)
    }

    /// Feeds the scan the next chunk, or ends the reading.
    async fn step(&mut self) -> worker::Result<()> {
        let Some(chunks) = &mut self.chunks else {
            return Ok(());
        };
        let skippable = self.scanner.skippable();
        if skippable == u64::MAX {
            if let Some(chunks) = self.chunks.take() {
                chunks.cancel();
            }
            return Ok(());
        }
        let Some(chunk) = chunks.next().await? else {
            self.chunks = None;
            return Ok(());
        };
        let length = chunk.length();
        let skipped = skippable.min(length.into()) as u32;
        self.scanner.skip(skipped.into());
        if skipped < length {
            self.scanner.feed(&chunk.subarray(skipped, length).to_vec());
        }
        self.read += u64::from(length);
        Ok(())
    }
}

/// A file of announced length: read whole when small, else streamed into a staging object.
async fn receive_sized(
    ctx: &RequestContext,
    channel: &str,
    bytes: impl Stream<Item = worker::Result<Vec<u8>>> + 'static,
    length: u64,
) -> ApiResult<ObjectSource> {
    if length == 0 {
        return Err(ApiError::invalid_package("the file is empty"));
    }
    if length <= INLINE_BYTES {
        return Ok(inline(read_whole(bytes, length).await?));
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
    Ok(ObjectSource::Staged { key: staging })
}

/// A file sent without a length: kept in memory up to [`INLINE_BYTES`], beyond that written to
/// a staging object part by part; refused once it grows past the upload limit.
async fn receive_unsized(
    ctx: &RequestContext,
    channel: &str,
    bytes: impl Stream<Item = worker::Result<Vec<u8>>>,
) -> ApiResult<ObjectSource> {
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
            Ok(ObjectSource::Staged { key: staging })
        }
        None => Ok(inline(head)),
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
/// it, either of which deletes its staging object; discarding it, or refusing it before the
/// channel index is handed it, releases its reservation.
struct Received {
    filename: String,
    source: ObjectSource,
    /// The reservation of the key its bytes were written to.
    reservation: Option<FileRequest>,
    digests: Digests,
    metadata: Result<ArchiveMetadata, PackageError>,
}

/// What a received file holds in R2 until it is committed or dropped.
enum Held {
    Nothing,
    Staging(String),
    Reserved(FileRequest),
    /// A reserved key the bytes were written to that is not the file's own: the commit copies
    /// them from there, and the reservation ends with the object either way.
    Misplaced(FileRequest),
}

impl Held {
    fn of(received: &Received) -> Self {
        match (&received.reservation, &received.source) {
            (Some(reservation), ObjectSource::Staged { .. }) => {
                Held::Misplaced(reservation.clone())
            }
            (Some(reservation), _) => Held::Reserved(reservation.clone()),
            (None, ObjectSource::Staged { key }) => Held::Staging(key.clone()),
            (None, ObjectSource::Inline { .. } | ObjectSource::Written { .. }) => Held::Nothing,
        }
    }

    /// Lets it go: the file will not be committed from it.
    async fn release(&self, ctx: &RequestContext) {
        match self {
            Held::Nothing => {}
            Held::Staging(key) => delete_staging(ctx, key).await,
            Held::Reserved(reservation) | Held::Misplaced(reservation) => {
                release(ctx, reservation).await
            }
        }
    }
}

impl Received {
    /// Drops the file unstored.
    async fn discard(self, ctx: &RequestContext) {
        Held::of(&self).release(ctx).await;
    }

    /// Checks the package and commits it through the channel index.
    async fn commit(
        self,
        ctx: &RequestContext,
        channel: &str,
        options: &Options<'_>,
    ) -> ApiResult<Stored> {
        let held = Held::of(&self);
        let prepared = self
            .into_request(channel, options)
            .and_then(|request| Ok((ctx.channel_index(channel)?, request)));
        let (index, request) = match prepared {
            Ok(prepared) => prepared,
            Err(error) => {
                held.release(ctx).await;
                return Err(error);
            }
        };
        let result = index.commit(&request).await.map(|outcome| Stored {
            filename: request.filename,
            subdir: request.subdir,
            outcome: outcome.status,
            record: outcome.record,
            repodata: outcome.repodata,
            answer: options.answer,
        });
        match &held {
            // Copied into place, or refused: the staging object has served either way.
            Held::Staging(key) => delete_staging(ctx, key).await,
            // Refused, or its answer lost: a release after the commit changes nothing.
            Held::Reserved(reservation) if result.is_err() => release(ctx, reservation).await,
            Held::Misplaced(reservation) => release(ctx, reservation).await,
            Held::Reserved(_) | Held::Nothing => {}
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
        if let ObjectSource::Written { key } = &self.source {
            // Written where the scan first found the subdir: a second info/index.json may not
            // name another.
            if *key != file_key(channel, &package.subdir, &package.filename) {
                return Err(ApiError::invalid_package(
                    "invalid package: its info/index.json is there twice, naming two subdirs",
                ));
            }
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
