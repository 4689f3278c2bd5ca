//! The channel index: one Durable Object per channel, the only writer of its records and
//! artifacts. What to do is decided in [`crate::index_plan`]; this module carries it out with
//! SQL and R2.
//!
//! The Worker reaches it through [`ChannelIndexClient`]: each call is one POST of an
//! `IndexRequest`, answered with its outcome as JSON, or with an `ApiError` as JSON under that
//! error's status, which the client returns as the same error. So a conflicting commit is a 409
//! wherever it starts, and a failure's detail is logged in the object, where it happened.
//!
//! Requests to one object interleave at every await, so three locks order the work, always
//! taken in this order:
//! - `writes` makes a change one step: a commit's "check the stored record, move the object
//!   into place, store the row"; a delete, from removing its row until its object is gone; a
//!   rebuild's marking of every name.
//! - `shard_builds` lets one build of shards and the shard index run at a time; under it, a
//!   name not marked dirty has its shard written.
//! - `repodata_builds` lets one build of the monolithic files (repodata.json, its .zst,
//!   run_exports.json) run at a time; a change that finds it taken does not wait for it.
//!
//! `destroy` holds all three. The alarm takes `repodata_builds` for each subdir it builds, and
//! deletes superseded shards once `SHARD_RETENTION_SECONDS` have passed.
//!
//! Freshness: a change answers once it is in the shards and the shard index. It also waits for
//! the monolithic files when no build of them is running (a quiet channel reads its own writes
//! everywhere). When one is running, the change answers `pending` at once and the alarm runs
//! the next build as soon as the running one ends, so under load repodata.json lags a change by
//! at most the build in progress plus one more, and a burst of uploads costs two builds.

mod build;
mod check;

use std::borrow::Cow;

use base64::Engine;
use futures_util::lock::Mutex;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use wasm_bindgen::JsCast;
use worker::{
    durable_object, Bucket, Date, DurableObject, Env, Method, Request, RequestInit, Response,
    ResponseBody, SqlStorageValue, State,
};

use super::error::{internal, ApiResult};
use super::storage::file_key;
use crate::config::Config;
pub use crate::index_plan::CommitStatus;
use crate::index_plan::{commit_status, expiry_cutoff};
use crate::names::ChannelFile;
use crate::repodata::{record_json, Record};

/// The index of record. `packages` holds one row per file; `shards` the current shard of each
/// package name; `dirty` the names whose shard must be rewritten by the next build (kept in
/// storage, so a restart between a change and its build loses nothing); `retired_shards` the
/// superseded shards, deleted by the alarm once clients can no longer hold an index naming them;
/// `stale_repodata` the subdirs whose monolithic files miss a change, since when, and the channel
/// name the alarm builds them under (an object does not know its own name). The index
/// by name serves shard builds, which read one name's rows.
const SCHEMA: [&str; 6] = [
    "CREATE TABLE IF NOT EXISTS packages (
        subdir TEXT NOT NULL,
        filename TEXT NOT NULL,
        name TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        record TEXT NOT NULL,
        run_exports TEXT,
        about TEXT,
        indexed_at INTEGER NOT NULL,
        PRIMARY KEY (subdir, filename)
    )",
    "CREATE INDEX IF NOT EXISTS packages_by_name ON packages (subdir, name)",
    "CREATE TABLE IF NOT EXISTS shards (
        subdir TEXT NOT NULL, name TEXT NOT NULL, sha256 TEXT NOT NULL,
        PRIMARY KEY (subdir, name)
    )",
    "CREATE TABLE IF NOT EXISTS dirty (
        subdir TEXT NOT NULL, name TEXT NOT NULL, PRIMARY KEY (subdir, name)
    )",
    "CREATE TABLE IF NOT EXISTS retired_shards (
        key TEXT PRIMARY KEY, retired_at INTEGER NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS stale_repodata (
        subdir TEXT PRIMARY KEY, channel TEXT NOT NULL, since INTEGER NOT NULL
    )",
];

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
    pub force: bool,
    /// Build the artifacts before answering. Bulk imports commit many packages without, then
    /// ask for one build per subdir.
    pub build: bool,
}

/// Where the package's bytes are: a staging object for large files, or in the request itself
/// for small ones (which then cost no staging put, get and delete).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectSource {
    Staged { key: String },
    Inline { base64: String },
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteRequest {
    pub channel: String,
    pub subdir: String,
    pub filename: String,
}

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
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SubdirRows {
    pub subdir: String,
    pub packages: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct StaleSubdir {
    pub subdir: String,
    /// Since when (epoch milliseconds).
    pub since: u64,
}

/// One operation on the index: the body of every request to the object, which answers with
/// the operation's outcome (status 200) or an `ApiError` (its own status), as JSON. The client
/// sends borrowed values, the object reads owned ones.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum IndexRequest<'a> {
    /// Answers a [`CommitOutcome`].
    Commit(Cow<'a, CommitRequest>),
    /// Answers a [`DeleteOutcome`].
    Delete(Cow<'a, DeleteRequest>),
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
        options: crate::consistency::CheckOptions,
    },
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

    pub async fn delete(&self, request: &DeleteRequest) -> ApiResult<DeleteOutcome> {
        self.call(&IndexRequest::Delete(Cow::Borrowed(request)))
            .await
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

    /// Sends one request; an error the object answered comes back as that error.
    async fn call<T: DeserializeOwned>(&self, request: &IndexRequest<'_>) -> ApiResult<T> {
        let body = serde_json::to_string(request).map_err(internal)?;
        let mut init = RequestInit::new();
        init.with_method(Method::Post).with_body(Some(body.into()));
        let http = Request::new_with_init("https://channel-index/", &init)?;
        let mut response = self.stub.fetch_with_request(http).await?;
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

#[durable_object]
pub struct ChannelIndex {
    state: State,
    env: Env,
    /// Read once, when the object is loaded; a malformed setting fails every request that
    /// needs it, with the reason in the log.
    config: Result<Config, String>,
    writes: Mutex<()>,
    shard_builds: Mutex<()>,
    repodata_builds: Mutex<()>,
}

impl DurableObject for ChannelIndex {
    fn new(state: State, env: Env) -> Self {
        // Creating the tables is synchronous and idempotent; if it failed, every later query
        // would fail with the reason.
        for statement in SCHEMA {
            let _ = state.storage().sql().exec(statement, None);
        }
        let config = Config::from_vars(|name| env.var(name).ok().map(|v| v.to_string()));
        Self {
            state,
            env,
            config,
            writes: Mutex::new(()),
            shard_builds: Mutex::new(()),
            repodata_builds: Mutex::new(()),
        }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        let answer = match req.json::<IndexRequest>().await {
            Ok(request) => self.answer(request).await,
            // Only the Worker sends these, so an unreadable one is a bug, not a bad request.
            Err(error) => Err(internal(format!(
                "channel index request unreadable: {error}"
            ))),
        };
        Ok(answer.unwrap_or_else(|error| super::error::response(&error)))
    }

    /// Builds the monolithic files that miss changes, deletes the superseded shards whose
    /// retention has passed, and sets the next alarm. A failure is logged where it happens and
    /// the runtime retries the alarm.
    async fn alarm(&self) -> worker::Result<Response> {
        self.run_alarm()
            .await
            .map_err(|error| worker::Error::RustError(error.message))?;
        Response::ok("done")
    }
}

fn millis(value: u64) -> worker::Result<SqlStorageValue> {
    SqlStorageValue::try_from_i64(value as i64)
}

impl ChannelIndex {
    fn bucket(&self) -> worker::Result<Bucket> {
        self.env.bucket("PACKAGES")
    }

    fn sql(&self) -> worker::SqlStorage {
        self.state.storage().sql()
    }

    /// Every row a query returns.
    fn rows<T: DeserializeOwned>(
        &self,
        query: &str,
        params: impl Into<Option<Vec<SqlStorageValue>>>,
    ) -> worker::Result<Vec<T>> {
        self.sql().exec(query, params)?.to_array()
    }

    fn config(&self) -> ApiResult<Config> {
        self.config
            .clone()
            .map_err(|error| internal(format!("configuration: {error}")))
    }

    async fn answer(&self, request: IndexRequest<'_>) -> ApiResult<Response> {
        let response = match request {
            IndexRequest::Commit(request) => {
                Response::from_json(&self.commit(request.into_owned()).await?)
            }
            IndexRequest::Delete(request) => Response::from_json(&self.delete(&request).await?),
            IndexRequest::Build { channel, subdir } => {
                Response::from_json(&self.bring_up_to_date(&channel, &subdir, false).await?)
            }
            IndexRequest::Rebuild { channel } => {
                Response::from_json(&self.rebuild(&channel).await?)
            }
            IndexRequest::Stats => Response::from_json(&self.stats()?),
            IndexRequest::Destroy { channel } => {
                Response::from_json(&self.destroy(&channel).await?)
            }
            IndexRequest::Check { channel, options } => {
                Response::from_json(&self.check(&channel, options).await?)
            }
        };
        Ok(response?)
    }

    async fn run_alarm(&self) -> ApiResult<()> {
        #[derive(Deserialize)]
        struct Stale {
            channel: String,
            subdir: String,
        }
        let stale: Vec<Stale> = self.rows("SELECT channel, subdir FROM stale_repodata", None)?;
        for Stale { channel, subdir } in stale {
            let _build = self.repodata_builds.lock().await;
            self.build_repodata_if_stale(&channel, &subdir).await?;
        }

        let now = Date::now().as_millis();
        if let Some(cutoff) = expiry_cutoff(now, self.config()?.shard_retention_ms) {
            #[derive(Deserialize)]
            struct Row {
                key: String,
            }
            let expired: Vec<Row> = self.rows(
                "SELECT key FROM retired_shards WHERE retired_at <= ?",
                vec![millis(cutoff)?],
            )?;
            if !expired.is_empty() {
                let keys: Vec<String> = expired.into_iter().map(|row| row.key).collect();
                self.bucket()?.delete_multiple(keys.clone()).await?;
                for key in keys {
                    self.sql()
                        .exec("DELETE FROM retired_shards WHERE key = ?", vec![key.into()])?;
                }
            }
        }
        self.schedule_alarm().await
    }

    async fn commit(&self, request: CommitRequest) -> ApiResult<CommitOutcome> {
        let write = self.writes.lock().await;
        let stored = self.stored(&request.subdir, &request.filename)?;
        let status = commit_status(
            &request.subdir,
            &request.filename,
            stored.as_ref().map(|(sha256, _)| sha256.as_str()),
            &request.sha256,
            request.force,
        )?;
        if let (CommitStatus::Unchanged, Some((_, record))) = (status, stored) {
            drop(write);
            // A retry of an upload whose build was cut short still gets its artifacts.
            let repodata = self
                .bring_up_to_date(&request.channel, &request.subdir, false)
                .await?;
            return Ok(CommitOutcome {
                status,
                record,
                repodata: Some(repodata),
            });
        }
        // The object is in place before the record that names it.
        let key = file_key(&request.channel, &request.subdir, &request.filename);
        self.place_object(&request.source, &key, &request.filename)
            .await?;
        // CEP 47: the server's time of indexing, in every record of every artifact.
        let now = Date::now().as_millis();
        let mut record: Record = serde_json::from_str(&request.record)
            .map_err(|e| internal(format!("committed record: {e}")))?;
        record.indexed_timestamp = Some(now);
        let record = record_json(&record);
        self.sql().exec(
            "INSERT OR REPLACE INTO packages \
             (subdir, filename, name, sha256, record, run_exports, about, indexed_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            vec![
                request.subdir.as_str().into(),
                request.filename.as_str().into(),
                request.name.as_str().into(),
                request.sha256.as_str().into(),
                record.as_str().into(),
                request.run_exports.clone().into(),
                request.about.clone().into(),
                millis(now)?,
            ],
        )?;
        self.mark_changed(&request.channel, &request.subdir, &request.name)?;
        drop(write);
        let repodata = if request.build {
            Some(
                self.bring_up_to_date(&request.channel, &request.subdir, false)
                    .await?,
            )
        } else {
            None
        };
        Ok(CommitOutcome {
            status: CommitStatus::Created,
            record,
            repodata,
        })
    }

    async fn delete(&self, request: &DeleteRequest) -> ApiResult<DeleteOutcome> {
        let write = self.writes.lock().await;
        #[derive(Deserialize)]
        struct Row {
            name: String,
        }
        let rows: Vec<Row> = self.rows(
            "DELETE FROM packages WHERE subdir = ? AND filename = ? RETURNING name",
            vec![
                request.subdir.as_str().into(),
                request.filename.as_str().into(),
            ],
        )?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(DeleteOutcome { deleted: false });
        };
        self.mark_changed(&request.channel, &request.subdir, &row.name)?;
        // The record leaves every artifact before its object goes.
        self.bring_up_to_date(&request.channel, &request.subdir, true)
            .await?;
        let key = file_key(&request.channel, &request.subdir, &request.filename);
        self.bucket()?.delete(key).await?;
        drop(write);
        Ok(DeleteOutcome { deleted: true })
    }

    async fn destroy(&self, channel: &str) -> ApiResult<DestroyOutcome> {
        let _write = self.writes.lock().await;
        let _shards = self.shard_builds.lock().await;
        let _repodata = self.repodata_builds.lock().await;
        for table in [
            "packages",
            "shards",
            "dirty",
            "retired_shards",
            "stale_repodata",
        ] {
            self.sql().exec(&format!("DELETE FROM {table}"), None)?;
        }
        self.state.storage().delete_alarm().await?;
        let bucket = self.bucket()?;
        let mut objects = 0;
        for prefix in [format!("{channel}/"), format!(".staging/{channel}/")] {
            loop {
                let listed = bucket
                    .list()
                    .prefix(prefix.clone())
                    .limit(1000)
                    .execute()
                    .await?;
                let keys: Vec<String> = listed.objects().iter().map(|o| o.key()).collect();
                if keys.is_empty() {
                    break;
                }
                objects += keys.len() as u64;
                bucket.delete_multiple(keys).await?;
            }
        }
        Ok(DestroyOutcome { objects })
    }

    /// Marks every name and subdir changed and builds them all, waiting for each.
    async fn rebuild(&self, channel: &str) -> ApiResult<Vec<String>> {
        #[derive(Deserialize)]
        struct Subdir {
            subdir: String,
        }
        let subdirs: Vec<String> = {
            let _write = self.writes.lock().await;
            self.sql().exec(
                "INSERT OR IGNORE INTO dirty (subdir, name) SELECT DISTINCT subdir, name FROM packages",
                None,
            )?;
            self.sql().exec(
                "INSERT OR IGNORE INTO stale_repodata (subdir, channel, since) \
                 SELECT DISTINCT subdir, ?, ? FROM packages",
                vec![channel.into(), millis(Date::now().as_millis())?],
            )?;
            self.rows::<Subdir>("SELECT subdir FROM stale_repodata ORDER BY subdir", None)?
                .into_iter()
                .map(|row| row.subdir)
                .collect()
        };
        for subdir in &subdirs {
            self.bring_up_to_date(channel, subdir, true).await?;
        }
        Ok(subdirs)
    }

    fn stats(&self) -> ApiResult<IndexStats> {
        let stale_repodata = self.rows(
            "SELECT subdir, since FROM stale_repodata ORDER BY subdir",
            None,
        )?;
        let subdirs = self.rows(
            "SELECT subdir, COUNT(*) AS packages FROM packages GROUP BY subdir ORDER BY subdir",
            None,
        )?;
        let memory: js_sys::WebAssembly::Memory = wasm_bindgen::memory().unchecked_into();
        let wasm_memory_bytes = js_sys::ArrayBuffer::from(memory.buffer()).byte_length();
        Ok(IndexStats {
            subdirs,
            stale_repodata,
            wasm_memory_bytes: wasm_memory_bytes.into(),
            sqlite_bytes: self.sql().database_size() as u64,
        })
    }

    /// The sha256 and record stored for a file.
    fn stored(&self, subdir: &str, filename: &str) -> worker::Result<Option<(String, String)>> {
        #[derive(Deserialize)]
        struct Row {
            sha256: String,
            record: String,
        }
        let rows: Vec<Row> = self.rows(
            "SELECT sha256, record FROM packages WHERE subdir = ? AND filename = ?",
            vec![subdir.into(), filename.into()],
        )?;
        Ok(rows.into_iter().next().map(|row| (row.sha256, row.record)))
    }

    /// Writes the package object from its source.
    async fn place_object(&self, source: &ObjectSource, to: &str, filename: &str) -> ApiResult<()> {
        let bucket = self.bucket()?;
        let put = match source {
            ObjectSource::Inline { base64 } => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(base64)
                    .map_err(|e| internal(format!("inline package: {e}")))?;
                bucket.put(to, bytes)
            }
            ObjectSource::Staged { key } => {
                let object = bucket
                    .get(key)
                    .execute()
                    .await?
                    .ok_or_else(|| internal(format!("staged upload {key} is gone")))?;
                let body = object
                    .body()
                    .ok_or_else(|| internal("staged upload has no body"))?;
                let ResponseBody::Stream(stream) = body.response_body()? else {
                    return Err(internal("staged upload is not a stream"));
                };
                bucket.put(to, stream)
            }
        };
        put.http_metadata(metadata(ChannelFile::content_type(filename)))
            .execute()
            .await?;
        Ok(())
    }

    /// Records that `name` in `subdir` changed: its shard and the monolithic files are stale.
    fn mark_changed(&self, channel: &str, subdir: &str, name: &str) -> worker::Result<()> {
        self.sql().exec(
            "INSERT OR IGNORE INTO dirty (subdir, name) VALUES (?, ?)",
            vec![subdir.into(), name.into()],
        )?;
        self.sql().exec(
            "INSERT OR IGNORE INTO stale_repodata (subdir, channel, since) VALUES (?, ?, ?)",
            vec![
                subdir.into(),
                channel.into(),
                millis(Date::now().as_millis())?,
            ],
        )?;
        Ok(())
    }
}

fn metadata(content_type: &str) -> worker::HttpMetadata {
    worker::HttpMetadata {
        content_type: Some(content_type.into()),
        ..Default::default()
    }
}
