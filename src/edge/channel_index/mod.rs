//! The channel index: one Durable Object per channel, the only writer of its records and
//! artifacts.
//!
//! Requests to one object interleave at every await, so three locks order the work: `writes`
//! makes "check the existing record, move the object into place, store the row" one step;
//! `shard_builds` lets one shard build run at a time, and `repodata_builds` one build of the
//! monolithic files (repodata.json, its .zst, run_exports.json).
//!
//! Freshness: a change answers once it is in the shards and the shard index. It also waits for
//! the monolithic files when no build of them is running (a quiet channel reads its own writes
//! everywhere). When one is running, the change answers `pending` at once and the alarm runs
//! the next build as soon as the running one ends, so under load repodata.json lags a change by
//! at most the build in progress plus one more, and a burst of uploads costs two builds.

mod build;

use futures_util::lock::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use worker::{
    durable_object, Bucket, Date, DurableObject, Env, Method, Request, RequestInit, Response,
    ResponseBody, SqlStorageValue, State,
};

use base64::Engine;
use wasm_bindgen::JsCast;

use super::storage::file_key;
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

/// How long a superseded shard stays readable, unless `SHARD_RETENTION_SECONDS` says otherwise.
const DEFAULT_SHARD_RETENTION_MS: u64 = 7 * 24 * 3600 * 1000;

/// A validated package, ready to be committed from its staging object.
#[derive(Debug, Serialize, Deserialize)]
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
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectSource {
    Staged { key: String },
    Inline { base64: String },
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BuildRequest {
    pub channel: String,
    pub subdir: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CommitOutcome {
    pub status: CommitStatus,
    /// The stored record (canonical JSON), unless the commit conflicted.
    pub record: Option<String>,
    /// Whether repodata.json holds the change yet (always, unless the commit conflicted or
    /// skipped the build).
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommitStatus {
    /// The file is new, or replaced a different one under `force`.
    Created,
    /// The same bytes were already there.
    Unchanged,
    /// Different bytes are there under that name.
    Conflict,
}

#[derive(Debug, Serialize, Deserialize)]
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
pub struct ChannelRequest {
    pub channel: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DestroyOutcome {
    /// How many R2 objects were removed.
    pub objects: u64,
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

    pub async fn commit(&self, request: &CommitRequest) -> worker::Result<CommitOutcome> {
        self.call("/commit", request).await
    }

    pub async fn delete(&self, request: &DeleteRequest) -> worker::Result<DeleteOutcome> {
        self.call("/delete", request).await
    }

    /// Brings a subdir's artifacts up to date with its rows.
    pub async fn build(&self, channel: &str, subdir: &str) -> worker::Result<Freshness> {
        self.call(
            "/build",
            &BuildRequest {
                channel: channel.to_owned(),
                subdir: subdir.to_owned(),
            },
        )
        .await
    }

    /// Rewrites every artifact of every subdir from the stored rows; returns the subdirs.
    pub async fn rebuild(&self, channel: &str) -> worker::Result<Vec<String>> {
        self.call(
            "/rebuild",
            &ChannelRequest {
                channel: channel.to_owned(),
            },
        )
        .await
    }

    /// Rows per subdir and the object's memory, for operators.
    pub async fn stats(&self) -> worker::Result<Value> {
        self.call("/stats", &()).await
    }

    /// Removes every record and object of the channel.
    pub async fn destroy(&self, channel: &str) -> worker::Result<DestroyOutcome> {
        self.call(
            "/destroy",
            &ChannelRequest {
                channel: channel.to_owned(),
            },
        )
        .await
    }

    async fn call<B: Serialize, T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        body: &B,
    ) -> worker::Result<T> {
        let mut init = RequestInit::new();
        init.with_method(Method::Post)
            .with_body(Some(serde_json::to_string(body)?.into()));
        let request = Request::new_with_init(&format!("https://channel-index{path}"), &init)?;
        let mut response = self.stub.fetch_with_request(request).await?;
        if response.status_code() != 200 {
            let detail = response.text().await.unwrap_or_default();
            return Err(worker::Error::RustError(format!(
                "channel index {path} answered {}: {detail}",
                response.status_code()
            )));
        }
        response.json().await
    }
}

#[durable_object]
pub struct ChannelIndex {
    state: State,
    env: Env,
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
        Self {
            state,
            env,
            writes: Mutex::new(()),
            shard_builds: Mutex::new(()),
            repodata_builds: Mutex::new(()),
        }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        match req.path().as_str() {
            "/commit" => Response::from_json(&self.commit(req.json().await?).await?),
            "/delete" => Response::from_json(&self.delete(req.json().await?).await?),
            "/destroy" => Response::from_json(&self.destroy(req.json().await?).await?),
            "/stats" => Response::from_json(&self.stats()?),
            "/rebuild" => {
                let request: ChannelRequest = req.json().await?;
                Response::from_json(&self.rebuild(&request.channel).await?)
            }
            "/build" => {
                let request: BuildRequest = req.json().await?;
                let freshness = self
                    .bring_up_to_date(&request.channel, &request.subdir, false)
                    .await?;
                Response::from_json(&freshness)
            }
            other => Response::error(format!("no such channel index operation: {other}"), 404),
        }
    }

    /// Builds the monolithic files that miss changes, deletes the superseded shards whose
    /// retention has passed, and sets the next alarm.
    async fn alarm(&self) -> worker::Result<Response> {
        #[derive(Deserialize)]
        struct Stale {
            channel: String,
            subdir: String,
        }
        let stale: Vec<Stale> = self
            .sql()
            .exec("SELECT channel, subdir FROM stale_repodata", None)?
            .to_array()?;
        for Stale { channel, subdir } in stale {
            let _build = self.repodata_builds.lock().await;
            self.build_repodata_if_stale(&channel, &subdir).await?;
        }

        let now = Date::now().as_millis();
        let cutoff = now.saturating_sub(self.shard_retention_ms());
        #[derive(Deserialize)]
        struct Row {
            key: String,
        }
        let expired: Vec<Row> = self
            .sql()
            .exec(
                "SELECT key FROM retired_shards WHERE retired_at <= ?",
                vec![millis(cutoff)?],
            )?
            .to_array()?;
        if !expired.is_empty() {
            let keys: Vec<String> = expired.into_iter().map(|row| row.key).collect();
            self.bucket()?.delete_multiple(keys.clone()).await?;
            for key in keys {
                self.sql()
                    .exec("DELETE FROM retired_shards WHERE key = ?", vec![key.into()])?;
            }
        }
        self.schedule_alarm().await?;
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

    fn shard_retention_ms(&self) -> u64 {
        self.env
            .var("SHARD_RETENTION_SECONDS")
            .ok()
            .and_then(|v| v.to_string().parse::<f64>().ok())
            .map(|seconds| (seconds * 1000.0) as u64)
            .unwrap_or(DEFAULT_SHARD_RETENTION_MS)
    }

    async fn commit(&self, request: CommitRequest) -> worker::Result<CommitOutcome> {
        let write = self.writes.lock().await;
        let existing = self.stored(&request.subdir, &request.filename)?;
        match existing {
            Some((sha, record)) if sha == request.sha256 => {
                drop(write);
                // A retry of an upload whose build was cut short still gets its artifacts.
                let repodata = self
                    .bring_up_to_date(&request.channel, &request.subdir, false)
                    .await?;
                return Ok(CommitOutcome {
                    status: CommitStatus::Unchanged,
                    record: Some(record),
                    repodata: Some(repodata),
                });
            }
            Some(_) if !request.force => {
                return Ok(CommitOutcome {
                    status: CommitStatus::Conflict,
                    record: None,
                    repodata: None,
                })
            }
            _ => {}
        }
        // The object is in place before the record that names it.
        let key = file_key(&request.channel, &request.subdir, &request.filename);
        self.place_object(&request.source, &key, &request.filename)
            .await?;
        // CEP 47: the server's time of indexing, in every record of every artifact.
        let now = Date::now().as_millis();
        let mut record: Record = serde_json::from_str(&request.record)?;
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
            record: Some(record),
            repodata,
        })
    }

    async fn delete(&self, request: DeleteRequest) -> worker::Result<DeleteOutcome> {
        let write = self.writes.lock().await;
        #[derive(Deserialize)]
        struct Row {
            name: String,
        }
        let rows: Vec<Row> = self
            .sql()
            .exec(
                "DELETE FROM packages WHERE subdir = ? AND filename = ? RETURNING name",
                vec![
                    request.subdir.as_str().into(),
                    request.filename.as_str().into(),
                ],
            )?
            .to_array()?;
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

    async fn destroy(&self, request: ChannelRequest) -> worker::Result<DestroyOutcome> {
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
        for prefix in [
            format!("{}/", request.channel),
            format!(".staging/{}/", request.channel),
        ] {
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
    async fn rebuild(&self, channel: &str) -> worker::Result<Vec<String>> {
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
            self.sql()
                .exec("SELECT subdir FROM stale_repodata ORDER BY subdir", None)?
                .to_array::<Subdir>()?
                .into_iter()
                .map(|row| row.subdir)
                .collect()
        };
        for subdir in &subdirs {
            self.bring_up_to_date(channel, subdir, true).await?;
        }
        Ok(subdirs)
    }

    /// Rows per subdir, the subdirs whose repodata.json misses changes (since when), and the
    /// memory this object's wasm instance has grown to (wasm memory never shrinks, so this is
    /// the peak since the object was loaded).
    fn stats(&self) -> worker::Result<Value> {
        let stale: Vec<Value> = self
            .sql()
            .exec(
                "SELECT subdir, since FROM stale_repodata ORDER BY subdir",
                None,
            )?
            .to_array()?;
        let subdirs: Vec<Value> = self
            .sql()
            .exec(
                "SELECT subdir, COUNT(*) AS packages FROM packages GROUP BY subdir ORDER BY subdir",
                None,
            )?
            .to_array()?;
        let memory: js_sys::WebAssembly::Memory = wasm_bindgen::memory().unchecked_into();
        let wasm_bytes = js_sys::ArrayBuffer::from(memory.buffer()).byte_length();
        Ok(serde_json::json!({
            "subdirs": subdirs,
            "stale_repodata": stale,
            "wasm_memory_bytes": wasm_bytes,
            "sqlite_bytes": self.sql().database_size(),
        }))
    }

    /// The sha256 and record stored for a file.
    fn stored(&self, subdir: &str, filename: &str) -> worker::Result<Option<(String, String)>> {
        #[derive(Deserialize)]
        struct Row {
            sha256: String,
            record: String,
        }
        let rows: Vec<Row> = self
            .sql()
            .exec(
                "SELECT sha256, record FROM packages WHERE subdir = ? AND filename = ?",
                vec![subdir.into(), filename.into()],
            )?
            .to_array()?;
        Ok(rows.into_iter().next().map(|row| (row.sha256, row.record)))
    }

    /// Writes the package object from its source.
    async fn place_object(
        &self,
        source: &ObjectSource,
        to: &str,
        filename: &str,
    ) -> worker::Result<()> {
        let bucket = self.bucket()?;
        let put = match source {
            ObjectSource::Inline { base64 } => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(base64)
                    .map_err(|e| worker::Error::RustError(format!("inline package: {e}")))?;
                bucket.put(to, bytes)
            }
            ObjectSource::Staged { key } => {
                let object = bucket.get(key).execute().await?.ok_or_else(|| {
                    worker::Error::RustError(format!("staged upload {key} is gone"))
                })?;
                let body = object
                    .body()
                    .ok_or_else(|| worker::Error::RustError("staged upload has no body".into()))?;
                let ResponseBody::Stream(stream) = body.response_body()? else {
                    return Err(worker::Error::RustError(
                        "staged upload is not a stream".into(),
                    ));
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
