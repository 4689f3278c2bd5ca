//! A mirror's package fetches, made by its channel's object so that concurrent first requests
//! of one file cause one upstream fetch.
//!
//! The object keeps the fetches in progress by key. The request that finds none (and no object
//! in R2) starts one: the upstream's body is read chunk by chunk into two bounded channels, one
//! feeding R2's put (which checks the record's SHA-256 and size), one streamed back to that
//! request, so memory holds a few chunks whatever the file's size (each left in JS: no byte is
//! copied into wasm); the slower reader paces both, and a caller that goes away leaves the put
//! running. The caller's stream ends only once
//! the put has ended: cleanly if R2 kept the file, in an error (an aborted body, never a clean
//! end) if R2 refused it. Requests that find a fetch in progress wait for its put to end and
//! then read R2 like any request, or get its refusal. A refused file is not kept; the object
//! remembers that the fetch failed (until it is unloaded), so a later request fetches it again
//! without streaming (the upstream may have put the right bytes back) and gets a clean 502 if
//! it is still wrong: the bytes R2 refused reach no caller again. An upstream `Content-Length` other
//! than the record's size is refused before any byte is streamed.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use futures_channel::{mpsc, oneshot};
use futures_util::future::{self, FutureExt, LocalBoxFuture, Shared};
use futures_util::{stream, SinkExt, StreamExt};
use js_sys::{BigInt, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::ReadableStream;
use worker::worker_sys::FixedLengthStream;
use worker::{HttpMetadata, Response, ResponseBody};

use super::super::error::{internal, ApiError, ApiResult};
use super::super::mirror_counter;
use super::super::storage::file_key;
use super::super::tee::Chunks;
use super::super::upstream::{within_timeout, UpstreamAccess};
use super::client::{MirrorFetchRequest, STREAMED_HEADER};
use super::ChannelIndex;
use crate::mirror::UpstreamFailure;
use crate::names::ChannelFile;
use crate::r2_checksum::sha256_refusal;

/// How many chunks each branch may hold unread.
const CHUNKS_IN_FLIGHT: usize = 4;

/// How a fetch in progress ends: the file stored, or the refusal every waiter answers.
type Outcome = Shared<LocalBoxFuture<'static, Result<(), ApiError>>>;

/// The fetches in progress, by R2 key, and the files (key and SHA-256) whose last fetch failed.
#[derive(Clone, Default)]
pub(super) struct InFlight {
    fetches: Rc<RefCell<HashMap<String, Outcome>>>,
    refused: Rc<RefCell<HashSet<String>>>,
}

impl InFlight {
    fn get(&self, key: &str) -> Option<Outcome> {
        self.fetches.borrow().get(key).cloned()
    }
}

impl ChannelIndex {
    pub(super) async fn mirror_fetch(&self, request: MirrorFetchRequest) -> ApiResult<Response> {
        let file = &request.file;
        let key = file_key(&file.channel, &file.subdir, &file.filename);
        if let Some(outcome) = self.mirror_fetches.get(&key) {
            outcome.await?;
            return stored();
        }
        let bucket = self.bucket()?;
        if bucket.head(&key).await?.is_some() {
            return stored();
        }
        // Another request may have started the fetch while R2 answered.
        if let Some(outcome) = self.mirror_fetches.get(&key) {
            outcome.await?;
            return stored();
        }
        let (done, ended) = oneshot::channel::<Result<(), ApiError>>();
        let outcome: Outcome = ended
            .map(|ended| ended.unwrap_or_else(|_| Err(internal("a mirror fetch was dropped"))))
            .boxed_local()
            .shared();
        self.mirror_fetches
            .fetches
            .borrow_mut()
            .insert(key.clone(), outcome.clone());
        let body = match self.open_upstream(&request).await {
            Ok(body) => body,
            Err(error) => {
                self.mirror_fetches.fetches.borrow_mut().remove(&key);
                let _ = done.send(Err(error.clone()));
                return Err(error);
            }
        };
        let refusal = format!("{key} {}", request.sha256);
        let refused_before = self.mirror_fetches.refused.borrow().contains(&refusal);
        let (to_caller, for_caller) = if request.stream && !refused_before {
            let (sender, receiver) = mpsc::channel::<Uint8Array>(CHUNKS_IN_FLIGHT);
            (Some(sender), Some(receiver))
        } else {
            (None, None)
        };
        let fetches = self.mirror_fetches.clone();
        let stall_ms = self.config()?.mirror_upstream_timeout_ms;
        let work = async move {
            let stored = store(&bucket, &key, &request, (body, stall_ms), to_caller).await;
            match &stored {
                Ok(()) => {
                    mirror_counter::cached(&request.file.channel, request.size);
                    fetches.refused.borrow_mut().remove(&refusal);
                }
                Err(_) => {
                    fetches.refused.borrow_mut().insert(refusal);
                }
            }
            fetches.fetches.borrow_mut().remove(&key);
            let _ = done.send(stored);
        };
        // The put runs to its end whoever reads the answer, or if nobody does.
        wasm_bindgen_futures::spawn_local(work);
        let Some(for_caller) = for_caller else {
            outcome.await?;
            return stored();
        };
        let ending = stream::once(outcome).filter_map(|ended| {
            future::ready(ended.err().map(|error| Err(JsValue::from(error.message))))
        });
        let body = js_stream(for_caller.map(|chunk| Ok(chunk.into())).chain(ending));
        let mut response = Response::builder().stream(body);
        response.headers_mut().set(STREAMED_HEADER, "true")?;
        Ok(response)
    }

    /// The upstream's answer for the file, up to its body.
    async fn open_upstream(&self, request: &MirrorFetchRequest) -> ApiResult<Chunks> {
        let url = &request.url;
        let access = UpstreamAccess::new(&request.rules, &self.config()?, |name| {
            self.env.secret(name).ok().map(|value| value.to_string())
        })
        .map_err(|failure| failure.error(url))?;
        mirror_counter::upstream_fetch(&request.file.channel);
        let response = access
            .get(url, &[])
            .await
            .map_err(|failure| failure.error(url))?;
        match response.status_code() {
            200 => {}
            404 | 410 => return Err(UpstreamFailure::Missing.error(url)),
            status => return Err(UpstreamFailure::Failed(format!("HTTP {status}")).error(url)),
        }
        let length = response.headers().get("Content-Length")?;
        if let Some(length) = length.and_then(|v| v.parse::<u64>().ok()) {
            if length != request.size {
                return Err(UpstreamFailure::Failed(format!(
                    "its size is {length} bytes, not the {} bytes its repodata.json gives; \
                     nothing was kept",
                    request.size
                ))
                .error(url));
            }
        }
        match response.body() {
            ResponseBody::Stream(body) => Ok(Chunks::of(body)),
            _ => Err(UpstreamFailure::Failed("it answered no body".into()).error(url)),
        }
    }
}

fn stored() -> ApiResult<Response> {
    Ok(Response::from_json(&())?)
}

/// A JS stream of `chunks`, pulled as its reader asks.
fn js_stream(
    chunks: impl stream::Stream<Item = Result<JsValue, JsValue>> + 'static,
) -> ReadableStream {
    wasm_streams::ReadableStream::from_stream(chunks)
        .into_raw()
        .unchecked_into()
}

/// Reads the upstream body (failed when it stalls for `stall_ms`) into R2's checked put and,
/// if there is one, the caller's branch.
async fn store(
    bucket: &worker::Bucket,
    key: &str,
    request: &MirrorFetchRequest,
    (mut body, stall_ms): (Chunks, u64),
    mut to_caller: Option<mpsc::Sender<Uint8Array>>,
) -> ApiResult<()> {
    let url = &request.url;
    let refused = |why: String| UpstreamFailure::Failed(why).error(url);
    let sha256 = hex::decode(&request.sha256).map_err(internal)?;
    let (mut to_r2, for_r2) = mpsc::channel::<Result<JsValue, JsValue>>(CHUNKS_IN_FLIGHT);
    // R2 takes a stream of a known length; this one also fails if the length differs.
    let sized = FixedLengthStream::new_big_int(BigInt::from(request.size))
        .map_err(|e| internal(format!("FixedLengthStream: {e:?}")))?;
    let piped = JsFuture::from(js_stream(for_r2).pipe_to(&sized.writable()));
    // A failed pipe fails the put, which says why.
    wasm_bindgen_futures::spawn_local(async move {
        let _ = piped.await;
    });
    let put = bucket
        .put(key, sized.readable())
        .sha256(sha256)
        .http_metadata(HttpMetadata {
            content_type: Some(ChannelFile::content_type(&request.file.filename).to_owned()),
            ..Default::default()
        })
        .execute();
    let pump = async move {
        loop {
            // Each chunk within the timeout: an upstream that stalls fails the put.
            let chunk = match within_timeout(stall_ms, async { Ok(body.next().await) }).await {
                Ok(Ok(None)) => break,
                Ok(Ok(Some(chunk))) => chunk,
                Ok(Err(error)) => {
                    let _ = to_r2.send(Err(JsValue::from(error.to_string()))).await;
                    break;
                }
                Err(_) => {
                    let _ = to_r2.send(Err(JsValue::from("the upstream stalled"))).await;
                    break;
                }
            };
            if let Some(caller) = to_caller.as_mut() {
                if caller.send(chunk.clone()).await.is_err() {
                    to_caller = None;
                }
            }
            // A put that ended (refused) takes nothing more.
            if to_r2.send(Ok(chunk.into())).await.is_err() {
                break;
            }
        }
        body.cancel();
    };
    let ((), stored) = future::join(pump, put).await;
    // A put that failed left no object.
    stored.map(|_| ()).map_err(|error| {
        let message = error.to_string();
        worker::console_warn!("mirror {}: {url}: {message}", request.file.channel);
        if sha256_refusal(&message).is_some() {
            refused(
                "its bytes do not have the SHA-256 its repodata.json gives; nothing was kept"
                    .into(),
            )
        } else {
            refused(format!(
                "its bytes could not be stored as {} bytes; nothing was kept",
                request.size
            ))
        }
    })
}
