//! `POST /api/v1/import/<channel>`: many packages in one request, as an uncompressed tar
//! (for migrations and for filling big channels fast).
//!
//! Each package file in the tar goes through the same path as a single upload (hashing,
//! validation, commit): large ones streamed through staging, small ones read whole, several of
//! them committing while the next are read; files that are not package files
//! (a channel's repodata.json, say) are skipped, and directories in paths are ignored: the
//! subdir comes from each package's metadata. The artifacts are rebuilt once per touched subdir
//! at the end, not once per package. The answer lists a result per package, and per subdir
//! whether repodata.json holds them yet (see the channel index on freshness).

use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet},
    future::Future,
    pin::Pin,
    rc::Rc,
};

use futures_util::{stream, stream::FuturesOrdered, StreamExt};
use serde::Serialize;
use worker::{ByteStream, Response};

use super::channel_index::{CommitStatus, Freshness};
use super::context::RequestContext;
use super::error::{json, ApiError, ApiResult};
use super::form::BodyStream;
use super::ingest::{ingest, Answer, Body, Named, Options, Stored, INLINE_BYTES};
use crate::names::check_package_filename;
use crate::names::ChannelName;
use crate::package::{padding_for, TarEntryKind, TarHeader, TarPaths};
use crate::provenance::Provenance;

/// The request body, read on demand by whichever part of the import needs the next bytes.
struct RequestBody {
    stream: ByteStream,
    buffered: Vec<u8>,
    /// Bytes handed out so far.
    offset: u64,
    /// The request's Content-Length: a body that stops short of it was cut off.
    announced: u64,
}

/// Shared between the import loop and the stream of the member being stored. The body is taken
/// out while it is awaited, so no borrow is held across an await.
#[derive(Clone)]
struct SharedBody(Rc<RefCell<Option<RequestBody>>>);

impl SharedBody {
    /// Up to `max` next bytes; `None` at the end of the body. A body that breaks off (an
    /// error of the stream, or its end before the announced length) is an incomplete body.
    async fn take(&self, max: usize) -> ApiResult<Option<Vec<u8>>> {
        let mut body = self
            .0
            .borrow_mut()
            .take()
            .expect("the body is put back after each read");
        let result = if body.buffered.is_empty() {
            body.stream.next().await.transpose()
        } else {
            Ok(Some(std::mem::take(&mut body.buffered)))
        };
        let out = match result {
            Ok(Some(mut chunk)) => {
                if chunk.len() > max {
                    body.buffered = chunk.split_off(max);
                }
                body.offset += chunk.len() as u64;
                Ok(Some(chunk))
            }
            Ok(None) if body.offset < body.announced => Err(ApiError::short_body(body.announced)),
            Ok(None) => Ok(None),
            Err(_) => Err(ApiError::short_body(body.announced)),
        };
        *self.0.borrow_mut() = Some(body);
        out
    }

    fn offset(&self) -> u64 {
        self.0.borrow().as_ref().map_or(0, |body| body.offset)
    }

    /// Exactly `n` bytes, or an error if the body ends first.
    async fn read_exact(&self, n: usize) -> ApiResult<Vec<u8>> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let chunk = self.take(n - out.len()).await?.ok_or_else(truncated)?;
            out.extend(chunk);
        }
        Ok(out)
    }

    /// Reads and drops bytes up to body offset `end`.
    async fn skip_to(&self, end: u64) -> ApiResult<()> {
        while self.offset() < end {
            let wanted = (end - self.offset()).min(256 * 1024) as usize;
            self.take(wanted).await?.ok_or_else(truncated)?;
        }
        Ok(())
    }

    /// The next `length` bytes as a stream, for storing one tar member.
    fn member(&self, length: u64) -> BodyStream {
        let body = self.clone();
        Box::pin(stream::unfold(length, move |remaining| {
            let body = body.clone();
            async move {
                if remaining == 0 {
                    return None;
                }
                let wanted = remaining.min(64 * 1024) as usize;
                match body.take(wanted).await {
                    Ok(Some(chunk)) => {
                        let left = remaining - chunk.len() as u64;
                        Some((Ok(chunk), left))
                    }
                    Ok(None) => Some((Err(worker::Error::RustError("body ended".into())), 0)),
                    Err(error) => Some((Err(worker::Error::RustError(error.message)), 0)),
                }
            }
        }))
    }
}

fn truncated() -> ApiError {
    ApiError::bad_request("the tar stream ends in the middle of an entry")
}

/// What became of one package file of the tar.
#[derive(Serialize)]
struct PackageResult {
    filename: String,
    status: u16,
    /// What the commit did; `None`: the package was refused.
    #[serde(skip)]
    outcome: Option<CommitStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subdir: Option<String>,
    /// Why it was refused, as `error` and `code`.
    #[serde(flatten)]
    refusal: Option<ApiError>,
}

impl PackageResult {
    fn of(filename: String, result: ApiResult<Stored>) -> Self {
        match result {
            Ok(stored) => Self {
                filename,
                status: stored.status(),
                outcome: Some(stored.outcome),
                subdir: Some(stored.subdir),
                refusal: None,
            },
            Err(error) => Self {
                filename,
                status: error.status(),
                outcome: None,
                subdir: None,
                refusal: Some(error),
            },
        }
    }
}

#[derive(Serialize)]
struct Summary {
    created: usize,
    unchanged: usize,
    failed: usize,
    results: Vec<PackageResult>,
    /// Per subdir, whether repodata.json holds the imported packages yet.
    repodata_json: BTreeMap<String, Freshness>,
}

/// The answer of an import that broke off: the results up to where it did.
#[derive(Serialize)]
struct BrokenOff<'a> {
    results: &'a [PackageResult],
}

pub async fn import(ctx: &mut RequestContext, channel_name: &ChannelName) -> ApiResult<Response> {
    let write = ctx.open_channel_write(channel_name).await?;
    let channel = &write.channel.name;
    let body = SharedBody(Rc::new(RefCell::new(Some(RequestBody {
        stream: ctx.body_stream()?,
        buffered: Vec::new(),
        offset: 0,
        announced: write.length,
    }))));

    let ctx = &*ctx;
    let mut results = Vec::new();
    let mut subdirs = BTreeSet::new();
    let importing = Importing {
        force: write.force,
        provenance: write.caller.provenance(),
    };
    let outcome = read_members(ctx, channel, &body, &importing, &mut results, &mut subdirs).await;
    // Whatever was committed is built, even when the tar turned out broken further on.
    let index = ctx.channel_index(channel)?;
    let mut repodata_json = BTreeMap::new();
    for subdir in subdirs {
        let freshness = index.build(channel, &subdir).await?;
        repodata_json.insert(subdir, freshness);
    }
    let status = outcome.as_ref().map_or_else(|e| e.status(), |()| 200);
    super::log::change("import", &write.caller.name, channel, status);
    if let Err(error) = outcome {
        return Ok(super::error::response_with(
            &error,
            &BrokenOff { results: &results },
        ));
    }
    let count =
        |outcome: Option<CommitStatus>| results.iter().filter(|r| r.outcome == outcome).count();
    let summary = Summary {
        created: count(Some(CommitStatus::Created)),
        unchanged: count(Some(CommitStatus::Unchanged)),
        failed: count(None),
        results,
        repodata_json,
    };
    json(200, &summary)
}

/// Packages whose commits may be under way at once. Small members are read whole, so the next
/// member can be read while earlier ones are checked and committed.
const IN_FLIGHT: usize = 8;

type Outcome = (String, ApiResult<Stored>);

/// What holds for every package of an import.
struct Importing {
    /// `?force=true`.
    force: bool,
    /// The importing key, recorded as each file's publisher.
    provenance: Provenance,
}

async fn read_members(
    ctx: &RequestContext,
    channel: &str,
    body: &SharedBody,
    importing: &Importing,
    results: &mut Vec<PackageResult>,
    subdirs: &mut BTreeSet<String>,
) -> ApiResult<()> {
    let mut in_flight = FuturesOrdered::new();
    let mut record = |(filename, outcome): Outcome| {
        if let Ok(stored) = &outcome {
            subdirs.insert(stored.subdir.clone());
        }
        results.push(PackageResult::of(filename, outcome));
    };
    let read = read_tar(ctx, channel, body, importing, &mut in_flight, &mut record).await;
    // Every commit that started is seen through and reported, whatever ended the stream.
    while let Some(outcome) = in_flight.next().await {
        record(outcome);
    }
    read
}

async fn read_tar<'a>(
    ctx: &'a RequestContext,
    channel: &'a str,
    body: &SharedBody,
    importing: &Importing,
    in_flight: &mut FuturesOrdered<Pin<Box<dyn Future<Output = Outcome> + 'a>>>,
    record: &mut impl FnMut(Outcome),
) -> ApiResult<()> {
    let mut paths = TarPaths::default();
    loop {
        let block = match body.take(512).await? {
            None => return Ok(()),
            Some(first) => {
                let mut block = first;
                block.extend(body.read_exact(512 - block.len()).await?);
                block
            }
        };
        let header = TarHeader::parse(&block)
            .map_err(|e| ApiError::bad_request(format!("not a tar stream: {e}")))?;
        let Some(header) = header else {
            return Ok(());
        };
        let end = body.offset() + header.size + padding_for(header.size) as u64;
        match header.kind {
            TarEntryKind::LongName | TarEntryKind::PaxHeader => {
                let data = body.read_exact(header.size as usize).await?;
                paths
                    .read_extended(header.kind, &data)
                    .map_err(|e| ApiError::bad_request(format!("not a tar stream: {e}")))?;
            }
            TarEntryKind::File => {
                let path = paths.entry_path(header.path);
                let filename = path.rsplit('/').next().unwrap_or_default().to_owned();
                if check_package_filename(&filename).is_ok() {
                    let small = header.size <= INLINE_BYTES;
                    let bytes = if small {
                        let whole = body.read_exact(header.size as usize).await?;
                        Box::pin(stream::iter([Ok(whole)])) as BodyStream
                    } else {
                        // A large member is read from the body as it is stored: the commits
                        // under way finish first.
                        while let Some(outcome) = in_flight.next().await {
                            record(outcome);
                        }
                        body.member(header.size)
                    };
                    let body = Body::Sized {
                        file: Named {
                            filename: filename.clone(),
                            sha256: None,
                        },
                        length: header.size,
                        bytes,
                    };
                    // The artifacts are built once at the end; the import logs its own line.
                    let options = Options {
                        force: importing.force,
                        subdir: None,
                        build: false,
                        audit: None,
                        provenance: importing.provenance.clone(),
                        answer: Answer::ByOutcome,
                    };
                    let ingesting = async move {
                        let result = ingest(ctx, channel, body, options).await;
                        (filename, result)
                    };
                    if small {
                        in_flight.push_back(Box::pin(ingesting));
                        if in_flight.len() >= IN_FLIGHT {
                            if let Some(outcome) = in_flight.next().await {
                                record(outcome);
                            }
                        }
                    } else {
                        // A body that ended inside this member fails it, and the skip below.
                        record(ingesting.await);
                    }
                }
            }
            TarEntryKind::Other => {
                paths.entry_path(header.path);
            }
        }
        body.skip_to(end).await?;
    }
}
