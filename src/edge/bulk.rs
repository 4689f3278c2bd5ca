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

use std::{cell::RefCell, collections::BTreeSet, future::Future, pin::Pin, rc::Rc};

use futures_util::{stream, stream::FuturesOrdered, StreamExt};
use serde_json::json;
use worker::{ByteStream, Env, Request, Response};

use super::auth::authorize_change;
use super::channel_index::ChannelIndexClient;
use super::error::{ApiError, ApiResult};
use super::upload::{
    checked_length, force_requested, ingest, BodyStream, IncomingFile, Ingested, INLINE_BYTES,
};
use crate::access::Action;
use crate::names::check_package_filename;
use crate::package::{padding_for, TarEntryKind, TarHeader, TarPaths};

/// The request body, read on demand by whichever part of the import needs the next bytes.
struct Body {
    stream: ByteStream,
    buffered: Vec<u8>,
    /// Bytes handed out so far.
    offset: u64,
}

/// Shared between the import loop and the stream of the member being stored. The body is taken
/// out while it is awaited, so no borrow is held across an await.
#[derive(Clone)]
struct SharedBody(Rc<RefCell<Option<Body>>>);

impl SharedBody {
    /// Up to `max` next bytes; `None` at the end of the body.
    async fn take(&self, max: usize) -> worker::Result<Option<Vec<u8>>> {
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
            other => other,
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
                    Err(error) => Some((Err(error), 0)),
                }
            }
        }))
    }
}

fn truncated() -> ApiError {
    ApiError::bad_request("the tar stream ends in the middle of an entry")
}

pub async fn import(
    env: &Env,
    mut req: Request,
    path_token: Option<&str>,
    channel_name: &str,
) -> ApiResult<Response> {
    let (caller, channel) =
        authorize_change(env, &req, path_token, channel_name, Action::Write).await?;
    let force = force_requested(&req)?;
    checked_length(env, &req)?;
    let body = SharedBody(Rc::new(RefCell::new(Some(Body {
        stream: req.stream()?,
        buffered: Vec::new(),
        offset: 0,
    }))));

    let mut results = Vec::new();
    let mut subdirs = BTreeSet::new();
    let outcome = read_members(env, &channel.name, &body, force, &mut results, &mut subdirs).await;
    // Whatever was committed is built, even when the tar turned out broken further on.
    let index = ChannelIndexClient::new(env, &channel.name)?;
    let mut repodata = serde_json::Map::new();
    for subdir in &subdirs {
        let freshness = index.build(&channel.name, subdir).await?;
        repodata.insert(subdir.clone(), freshness.as_str().into());
    }
    let count = |status: u16| results.iter().filter(|r| r["status"] == status).count();
    let summary = json!({
        "created": count(201),
        "unchanged": count(200),
        "failed": results.iter().filter(|r| r["status"].as_u64().unwrap_or(0) >= 400).count(),
        "results": results,
        "repodata_json": repodata,
    });
    let status = outcome.as_ref().map_or_else(|e| e.status(), |()| 200);
    super::log::change("import", &caller.name, &channel.name, status);
    match outcome {
        Ok(()) => Ok(Response::from_json(&summary)?),
        Err(error) => {
            let body = json!({ "error": error.message, "code": error.code, "results": summary["results"] });
            Ok(Response::from_json(&body)?.with_status(error.status()))
        }
    }
}

/// Packages whose commits may be under way at once. Small members are read whole, so the next
/// member can be read while earlier ones are checked and committed.
const IN_FLIGHT: usize = 8;

type Outcome = (String, ApiResult<Ingested>);

async fn read_members(
    env: &Env,
    channel: &str,
    body: &SharedBody,
    force: bool,
    results: &mut Vec<serde_json::Value>,
    subdirs: &mut BTreeSet<String>,
) -> ApiResult<()> {
    let mut in_flight = FuturesOrdered::new();
    let mut record = |(filename, result): Outcome| {
        results.push(match result {
            Ok(ingested) => {
                subdirs.insert(ingested.subdir.clone());
                json!({ "filename": filename, "status": ingested.status, "subdir": ingested.subdir })
            }
            Err(error) => {
                json!({ "filename": filename, "status": error.status(), "error": error.message, "code": error.code })
            }
        })
    };
    let read = read_tar(env, channel, body, force, &mut in_flight, &mut record).await;
    // Every commit that started is seen through and reported, whatever ended the stream.
    while let Some(outcome) = in_flight.next().await {
        record(outcome);
    }
    read
}

async fn read_tar<'a>(
    env: &'a Env,
    channel: &'a str,
    body: &SharedBody,
    force: bool,
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
                    let file = IncomingFile {
                        filename: filename.clone(),
                        sha256: None,
                        length: header.size,
                        bytes,
                    };
                    let ingesting = async move {
                        let result = ingest(env, channel, file, force, false).await;
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
