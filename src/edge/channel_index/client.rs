//! The Worker's side of the channel index: [`ChannelIndexClient`] and the requests and answers
//! it exchanges with the object, one POST of an [`IndexRequest`] each, answered with its
//! outcome as JSON, or with an `ApiError` as JSON under that error's status, which the client
//! returns as the same error.

use std::borrow::Cow;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use worker::{Env, Method, Request, RequestInit, Response, ResponseBody};

use super::super::error::{internal, ApiResult};
use super::super::mirror_counter::MirrorCounts;
use crate::consistency::{CheckOptions, CheckReport};
use crate::index_plan::CommitStatus;
use crate::index_store::{MirrorSubdir, StaleSubdir, SubdirRows, UpstreamFile};
use crate::mirror::MirrorRulesJson;
use crate::provenance::Provenance;

/// A validated package, ready to be committed from its staging object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommitRequest {
    pub channel: String,
    pub source: ObjectSource,
    pub subdir: String,
    pub filename: String,
    pub name: String,
    pub sha256: String,
    /// The repodata record, serialized canonically.
    pub record: String,
    pub run_exports: Option<String>,
    pub about: Option<String>,
    /// Who publishes it: stored with a new record, kept when the bytes were already there.
    /// `None` only from a Worker of an earlier version, during a deployment: stored as unknown.
    #[serde(default)]
    pub provenance: Option<Provenance>,
    pub force: bool,
    /// Build the artifacts before answering. Bulk imports commit many packages without, then
    /// ask for one build per subdir.
    pub build: bool,
}

/// Where the package's bytes are: in the request itself for small files (which then cost no
/// staging put, get and delete), already at the file's own key when the upload reserved it
/// ([`ChannelIndexClient::reserve`]) and wrote them there, or else in a staging object that the
/// commit copies into place.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectSource {
    Staged { key: String },
    Inline { base64: String },
    Written { key: String },
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CommitOutcome {
    pub status: CommitStatus,
    /// The stored record (canonical JSON).
    pub record: String,
    /// Whether repodata.json holds the change yet (always, unless the commit skipped the build).
    pub repodata: Option<Freshness>,
}

/// Where the monolithic files stand when a change answers; the shards always hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Freshness {
    /// repodata.json, its .zst and run_exports.json hold the change.
    Current,
    /// A build of them was running; the next one, already scheduled, will hold the change.
    Pending,
}

impl Freshness {
    pub fn as_str(self) -> &'static str {
        match self {
            Freshness::Current => "current",
            Freshness::Pending => "pending",
        }
    }
}

/// One file of a channel, as a delete, a reservation and a release name it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileRequest {
    pub channel: String,
    pub subdir: String,
    pub filename: String,
}

/// A mirror's package file for the object to bring from the upstream into R2, checked against
/// the SHA-256 and size of its upstream record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MirrorFetchRequest {
    pub file: FileRequest,
    /// The file's URL at the upstream.
    pub url: String,
    /// The mirror's rules: the upstream's origin and the name of its credentials secret.
    pub rules: MirrorRulesJson,
    /// Hex.
    pub sha256: String,
    pub size: u64,
    /// Whether the caller wants the bytes streamed to it if its request starts the fetch;
    /// otherwise the object answers once the file is stored.
    pub stream: bool,
}

/// How a [`MirrorFetchRequest`] was answered.
pub enum MirrorFetched {
    /// This request started the fetch: the bytes as they come from the upstream. The stream
    /// ends in an error, not cleanly, if R2 refuses them (another SHA-256 or size).
    Streamed(ResponseBody),
    /// The file is in R2 (this or another request fetched it).
    Stored,
}

/// The header of an object's answer that streams a mirror's file.
pub(super) const STREAMED_HEADER: &str = "X-Condaflare-Mirror-Streamed";

#[derive(Debug, Serialize, Deserialize)]
pub struct DeleteOutcome {
    pub deleted: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DestroyOutcome {
    /// How many R2 objects were removed.
    pub objects: u64,
}

/// What the index holds and what it costs, for operators.
#[derive(Debug, Serialize, Deserialize)]
pub struct IndexStats {
    pub subdirs: Vec<SubdirRows>,
    /// The subdirs whose repodata.json misses changes.
    pub stale_repodata: Vec<StaleSubdir>,
    /// The memory this object's wasm instance has grown to (wasm memory never shrinks, so this
    /// is the peak since the object was loaded).
    pub wasm_memory_bytes: u64,
    pub sqlite_bytes: u64,
    /// The R2 operations of this object's isolate, per kind (see [`super::super::r2_counter`]);
    /// empty from an object of an earlier version, mid-deployment.
    #[serde(default)]
    pub r2_operations: std::collections::BTreeMap<String, u64>,
    /// This object's isolate's upstream fetches of packages and the bytes it kept, for a
    /// mirror channel (see [`super::super::mirror_counter`]).
    #[serde(default)]
    pub mirror: MirrorCounts,
}

/// Where a mirror's index of one subdir stands when a read asks for it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct MirrorState {
    /// The last refresh failed: the index is this many seconds old and stands in for the
    /// upstream.
    pub stale_age: Option<u64>,
    /// It is due for a refresh, which the caller runs after its answer.
    pub behind: bool,
}

/// One operation on the index: the body of every request to the object, which answers with
/// the operation's outcome (status 200) or an `ApiError` (its own status), as JSON. The client
/// sends borrowed values, the object reads owned ones.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(super) enum IndexRequest<'a> {
    /// Answers a [`CommitOutcome`].
    Commit(Cow<'a, CommitRequest>),
    /// Answers a [`DeleteOutcome`].
    Delete(Cow<'a, FileRequest>),
    /// Reserves a file's key for an upload that writes these bytes (their SHA-256) directly;
    /// answers whether it did.
    Reserve {
        file: Cow<'a, FileRequest>,
        sha256: Cow<'a, str>,
    },
    /// Reserves, for an upload whose subdir is not known yet, the key of the subdir the
    /// channel's records suggest; answers that subdir, or `null` when it reserved none.
    ReserveLikely {
        channel: Cow<'a, str>,
        filename: Cow<'a, str>,
        name: Cow<'a, str>,
        sha256: Cow<'a, str>,
    },
    /// Ends an upload's reservation, deleting what it wrote unless its commit stored it.
    Release(Cow<'a, FileRequest>),
    /// Brings a subdir's artifacts up to date with its rows; answers a [`Freshness`].
    Build {
        channel: Cow<'a, str>,
        subdir: Cow<'a, str>,
    },
    /// Rewrites every artifact from the rows; answers the subdirs.
    Rebuild { channel: Cow<'a, str> },
    /// Answers [`IndexStats`].
    Stats,
    /// Removes every row and object of the channel; answers a [`DestroyOutcome`].
    Destroy { channel: Cow<'a, str> },
    /// Compares objects, rows and artifacts, repairing if asked; answers a
    /// [`crate::consistency::CheckReport`].
    Check {
        channel: Cow<'a, str>,
        options: CheckOptions,
    },
    /// Answers a [`crate::browse::PackagePage`].
    Browse {
        query: Cow<'a, crate::browse::BrowseQuery>,
    },
    /// Answers the [`crate::browse::PackageRecords`] of a name, or `null` if it has none.
    Package {
        channel: Cow<'a, str>,
        name: Cow<'a, str>,
    },
    /// Refreshes a mirror's subdir from its upstream if it is due (or answers at once that it
    /// is, unless `wait` or nothing is stored yet); answers a [`MirrorState`].
    MirrorRefresh {
        channel: Cow<'a, str>,
        subdir: Cow<'a, str>,
        rules: Cow<'a, MirrorRulesJson>,
        wait: bool,
    },
    /// Answers each subdir a mirror's index read from its upstream, with its
    /// [`MirrorSubdir`] state.
    MirrorSubdirs { channel: Cow<'a, str> },
    /// Answers the [`UpstreamFile`] a mirror's index holds for a file, or `null`.
    MirrorFile {
        subdir: Cow<'a, str>,
        filename: Cow<'a, str>,
    },
    /// Answers the file's bytes under [`STREAMED_HEADER`] or `null` once it is stored (see
    /// [`MirrorFetched`]).
    MirrorFetch(Cow<'a, MirrorFetchRequest>),
}

impl IndexRequest<'_> {
    /// The channel the request names, if it names one.
    pub(super) fn channel(&self) -> Option<&str> {
        match self {
            IndexRequest::Commit(request) => Some(&request.channel),
            IndexRequest::Delete(request)
            | IndexRequest::Reserve { file: request, .. }
            | IndexRequest::Release(request) => Some(&request.channel),
            IndexRequest::MirrorFetch(request) => Some(&request.file.channel),
            IndexRequest::Build { channel, .. }
            | IndexRequest::Rebuild { channel }
            | IndexRequest::Destroy { channel }
            | IndexRequest::Check { channel, .. }
            | IndexRequest::ReserveLikely { channel, .. }
            | IndexRequest::Package { channel, .. }
            | IndexRequest::MirrorRefresh { channel, .. }
            | IndexRequest::MirrorSubdirs { channel } => Some(channel),
            IndexRequest::Stats | IndexRequest::Browse { .. } | IndexRequest::MirrorFile { .. } => {
                None
            }
        }
    }
}

/// The Worker's handle on one channel's index.
pub struct ChannelIndexClient {
    stub: worker::Stub,
}

impl ChannelIndexClient {
    pub fn new(env: &Env, channel: &str) -> worker::Result<Self> {
        let stub = env.durable_object("CHANNEL_INDEX")?.get_by_name(channel)?;
        Ok(Self { stub })
    }

    /// Commits a package; a file of that name with other bytes is an `AlreadyExists` error
    /// unless the request forces it.
    pub async fn commit(&self, request: &CommitRequest) -> ApiResult<CommitOutcome> {
        self.call(&IndexRequest::Commit(Cow::Borrowed(request)))
            .await
    }

    pub async fn delete(&self, request: &FileRequest) -> ApiResult<DeleteOutcome> {
        self.call(&IndexRequest::Delete(Cow::Borrowed(request)))
            .await
    }

    /// Reserves the file's key for an upload that writes the bytes of `sha256` there before
    /// committing: `false` when a record names the file or uploads of other bytes hold the
    /// key. The upload holds it until its commit, or [`Self::release`].
    pub async fn reserve(&self, file: &FileRequest, sha256: &str) -> ApiResult<bool> {
        self.call(&IndexRequest::Reserve {
            file: Cow::Borrowed(file),
            sha256: sha256.into(),
        })
        .await
    }

    /// Reserves, as [`Self::reserve`] does, the key of `filename` (of package `name`) in the
    /// subdir the channel's records suggest for it
    /// ([`crate::index_store::IndexStore::likely_subdir`]); answers the reservation, if any.
    pub async fn reserve_likely(
        &self,
        channel: &str,
        filename: &str,
        name: &str,
        sha256: &str,
    ) -> ApiResult<Option<FileRequest>> {
        let subdir: Option<String> = self
            .call(&IndexRequest::ReserveLikely {
                channel: channel.into(),
                filename: filename.into(),
                name: name.into(),
                sha256: sha256.into(),
            })
            .await?;
        Ok(subdir.map(|subdir| FileRequest {
            channel: channel.to_owned(),
            subdir,
            filename: filename.to_owned(),
        }))
    }

    /// Leaves a reservation whose upload will not commit; the last holder to leave deletes
    /// the object unless a commit stored it.
    pub async fn release(&self, file: &FileRequest) -> ApiResult<()> {
        self.call(&IndexRequest::Release(Cow::Borrowed(file))).await
    }

    /// Brings a subdir's artifacts up to date with its rows.
    pub async fn build(&self, channel: &str, subdir: &str) -> ApiResult<Freshness> {
        self.call(&IndexRequest::Build {
            channel: channel.into(),
            subdir: subdir.into(),
        })
        .await
    }

    /// Rewrites every artifact of every subdir from the stored rows; returns the subdirs.
    pub async fn rebuild(&self, channel: &str) -> ApiResult<Vec<String>> {
        self.call(&IndexRequest::Rebuild {
            channel: channel.into(),
        })
        .await
    }

    /// Rows per subdir and the object's memory, for operators.
    pub async fn stats(&self) -> ApiResult<IndexStats> {
        self.call(&IndexRequest::Stats).await
    }

    /// Removes every record and object of the channel.
    pub async fn destroy(&self, channel: &str) -> ApiResult<DestroyOutcome> {
        self.call(&IndexRequest::Destroy {
            channel: channel.into(),
        })
        .await
    }

    /// One page of the channel's package names.
    pub async fn browse(
        &self,
        query: &crate::browse::BrowseQuery,
    ) -> ApiResult<crate::browse::PackagePage> {
        self.call(&IndexRequest::Browse {
            query: Cow::Borrowed(query),
        })
        .await
    }

    /// Every file of one name; `None` when the channel has none.
    pub async fn package(
        &self,
        channel: &str,
        name: &str,
    ) -> ApiResult<Option<crate::browse::PackageRecords>> {
        self.call(&IndexRequest::Package {
            channel: channel.into(),
            name: name.into(),
        })
        .await
    }

    /// Checks the channel's objects, rows and artifacts against each other, and with
    /// `options.repair` fixes what can be fixed.
    pub async fn check(&self, channel: &str, options: CheckOptions) -> ApiResult<CheckReport> {
        self.call(&IndexRequest::Check {
            channel: Cow::Borrowed(channel),
            options,
        })
        .await
    }

    /// Brings a mirror's subdir up to date with its upstream when it is due: waits for the
    /// refresh when `wait` or when nothing is stored yet, else answers `behind` at once.
    pub async fn mirror_refresh(
        &self,
        channel: &str,
        subdir: &str,
        rules: &MirrorRulesJson,
        wait: bool,
    ) -> ApiResult<MirrorState> {
        self.call(&IndexRequest::MirrorRefresh {
            channel: channel.into(),
            subdir: subdir.into(),
            rules: Cow::Borrowed(rules),
            wait,
        })
        .await
    }

    /// Each subdir the mirror's index read from its upstream, with its state.
    pub async fn mirror_subdirs(&self, channel: &str) -> ApiResult<Vec<(String, MirrorSubdir)>> {
        self.call(&IndexRequest::MirrorSubdirs {
            channel: channel.into(),
        })
        .await
    }

    /// The record facts of a mirror's file, if its index holds (so its rules admit) it.
    pub async fn mirror_file(
        &self,
        subdir: &str,
        filename: &str,
    ) -> ApiResult<Option<UpstreamFile>> {
        self.call(&IndexRequest::MirrorFile {
            subdir: subdir.into(),
            filename: filename.into(),
        })
        .await
    }

    /// Brings a mirror's package file from its upstream into R2, unless it is there; concurrent
    /// requests of one file share one upstream fetch.
    pub async fn mirror_fetch(&self, request: &MirrorFetchRequest) -> ApiResult<MirrorFetched> {
        let response = self
            .send(&IndexRequest::MirrorFetch(Cow::Borrowed(request)))
            .await?;
        if response.status_code() == 200 && response.headers().has(STREAMED_HEADER)? {
            return Ok(MirrorFetched::Streamed(response.body().clone()));
        }
        let () = Self::read(response).await?;
        Ok(MirrorFetched::Stored)
    }

    /// Sends one request; an error the object answered comes back as that error.
    async fn call<T: DeserializeOwned>(&self, request: &IndexRequest<'_>) -> ApiResult<T> {
        Self::read(self.send(request).await?).await
    }

    async fn send(&self, request: &IndexRequest<'_>) -> ApiResult<Response> {
        let body = serde_json::to_string(request).map_err(internal)?;
        let mut init = RequestInit::new();
        init.with_method(Method::Post).with_body(Some(body.into()));
        let http = Request::new_with_init("https://channel-index/", &init)?;
        Ok(self.stub.fetch_with_request(http).await?)
    }

    async fn read<T: DeserializeOwned>(mut response: Response) -> ApiResult<T> {
        let status = response.status_code();
        let text = response.text().await?;
        if status == 200 {
            return serde_json::from_str(&text)
                .map_err(|e| internal(format!("channel index answer unreadable: {e}")));
        }
        Err(serde_json::from_str(&text)
            .unwrap_or_else(|_| internal(format!("channel index answered {status}: {text}"))))
    }
}
