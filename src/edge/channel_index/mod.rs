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
//! `destroy` holds all three. The alarm takes `repodata_builds` for each subdir it builds,
//! `writes` while it finishes cut-short object changes, and deletes superseded shards once
//! `SHARD_RETENTION_SECONDS` have passed.
//!
//! Crashes: the process may die at any await, and what the storage writes made in one
//! synchronous stretch hold is committed together (R2 writes are separate). Each step leaves, at
//! every such instant, a state that the next step or the alarm finishes or undoes:
//! - The alarm is set (to [`RECOVERY_MS`] ahead) before any mark or intent it would finish is
//!   stored, so every prefix of a change has one; it finishes marks and intents only when no
//!   request of the instance is in progress (after a restart, none is), and the first alarm of
//!   an instance deletes the channel's staging objects older than `STAGING_GRACE_SECONDS` that
//!   no commit of it is reading: all an upload that died before committing can leave.
//! - Commit: the intent to place the object is stored (with the removal of a record it
//!   replaces, and that name's marks) before the object is written, and the record, its marks
//!   and the end of the intent in one stretch after, so a cut-short commit leaves an object no
//!   record names under an intent, which the alarm deletes once the artifacts are built.
//! - Retry of the same bytes: it re-marks the name dirty and brings the subdir up to date, so
//!   the shards hold the package (a shard rebuilt with unchanged bytes costs only the shard
//!   index); repodata.json needs no mark, since the record was stored with its stale mark, and
//!   that mark is released only by a monolithic build that read the rows after it.
//! - Delete: the record's removal, the intent to remove the object and the marks are stored in
//!   one stretch; the object goes only once the artifacts are built without the record, and the
//!   intent after it, so a cut-short delete is finished by the alarm the same way.
//! - Shard build: marks are claimed by number and released only after the shards and the shard
//!   index are written, each only if no change marked its name again meanwhile; each shard is
//!   written before the row naming it, so a cut-short build leaves the marks for the next one.
//! - Monolithic build: the stale mark is released only after repodata.json.zst, repodata.json
//!   and run_exports.json are complete, each replaced whole, so a cut-short build leaves the
//!   previous files and the mark.
//! - Shard retirement: a superseded shard is listed as retired in the stretch that names its
//!   successor, and the alarm deletes expired shards before their rows, so a cut-short
//!   deletion is repeated.
//!
//! Freshness: a change answers once it is in the shards and the shard index. It also waits for
//! the monolithic files when no build of them is running (a quiet channel reads its own writes
//! everywhere). When one is running, the change answers `pending` at once and the alarm runs
//! the next build as soon as the running one ends, so under load repodata.json lags a change by
//! at most the build in progress plus one more, and a burst of uploads costs two builds.

mod browse;
mod build;
mod check;

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::HashSet;

use base64::Engine;
use futures_util::lock::Mutex;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use wasm_bindgen::JsCast;
use worker::{
    durable_object, Bucket, Date, DurableObject, Env, Method, Request, RequestInit, Response,
    ResponseBody, SqlStorageValue, State,
};

use super::error::{internal, ApiResult};
use super::storage::{file_key, staging_key};
use crate::config::Config;
pub use crate::index_plan::CommitStatus;
use crate::index_plan::{
    commit_status, expiry_cutoff, keeps_object, sweep_staging, AlarmWork, ObjectIntent, Staged,
    RECOVERY_MS,
};
use crate::names::ChannelFile;
use crate::repodata::{record_json, Record};

/// The index of record. `packages` holds one row per file; `shards` the current shard of each
/// package name; `dirty` the names whose shard must be rewritten by the next build (kept in
/// storage, so a restart between a change and its build loses nothing); `retired_shards` the
/// superseded shards, deleted by the alarm once clients can no longer hold an index naming them;
/// `stale_repodata` the subdirs whose monolithic files miss a change, and since when. A mark
/// (dirty or stale) carries a number, higher than any held when it was set, so that a build
/// releases only the marks it built. `pending_objects` the package objects a change was about
/// to write or remove; `channel_name` the name the alarm works under (an object does not know
/// its own name). The index by name serves shard builds, which read one name's rows.
const SCHEMA: [&str; 10] = [
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
        subdir TEXT NOT NULL, name TEXT NOT NULL, mark INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (subdir, name)
    )",
    "CREATE TABLE IF NOT EXISTS retired_shards (
        key TEXT PRIMARY KEY, retired_at INTEGER NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS stale_repodata (
        subdir TEXT PRIMARY KEY, channel TEXT NOT NULL, since INTEGER NOT NULL,
        mark INTEGER NOT NULL DEFAULT 0
    )",
    // For objects created before marks were numbered; fails harmlessly once the column exists.
    "ALTER TABLE dirty ADD COLUMN mark INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE stale_repodata ADD COLUMN mark INTEGER NOT NULL DEFAULT 0",
    "CREATE TABLE IF NOT EXISTS pending_objects (
        key TEXT PRIMARY KEY, action TEXT NOT NULL, subdir TEXT NOT NULL,
        filename TEXT NOT NULL, since INTEGER NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS channel_name (
        id INTEGER PRIMARY KEY CHECK (id = 0), name TEXT NOT NULL
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
    /// Answers a [`crate::browse::PackagePage`].
    Browse {
        query: Cow<'a, crate::browse::BrowseQuery>,
    },
    /// Answers the [`crate::browse::PackageRecords`] of a name, or `null` if it has none.
    Package {
        channel: Cow<'a, str>,
        name: Cow<'a, str>,
    },
}

impl IndexRequest<'_> {
    /// The channel the request names, if it names one.
    fn channel(&self) -> Option<&str> {
        match self {
            IndexRequest::Commit(request) => Some(&request.channel),
            IndexRequest::Delete(request) => Some(&request.channel),
            IndexRequest::Build { channel, .. }
            | IndexRequest::Rebuild { channel }
            | IndexRequest::Destroy { channel }
            | IndexRequest::Check { channel, .. }
            | IndexRequest::Package { channel, .. } => Some(channel),
            IndexRequest::Stats | IndexRequest::Browse { .. } => None,
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
    /// Requests of this instance in progress: with none, every mark and intent is left over
    /// from a request that died or failed, and the alarm finishes it.
    live: Cell<u32>,
    /// A change answered `pending`: the alarm builds the monolithic files next.
    behind: Cell<bool>,
    /// The staging objects commits of this instance are reading, which a sweep leaves alone.
    in_flight: RefCell<HashSet<String>>,
    /// When the alarm next sweeps the channel's staging objects: shortly after the instance
    /// starts (whatever an upload that died with the last one left), then while young ones
    /// remain.
    sweep_at: Cell<Option<u64>>,
    /// Whether this instance has stored the channel's name.
    named: Cell<bool>,
}

/// Runs its closure when dropped: ends a request's count in `live`, or its hold on a key.
struct OnDrop<F: Fn()>(F);

impl<F: Fn()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

impl DurableObject for ChannelIndex {
    fn new(state: State, env: Env) -> Self {
        // Creating the tables is synchronous and idempotent; if it failed, every later query
        // would fail with the reason.
        for statement in SCHEMA.iter().chain(&browse::SCHEMA) {
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
            live: Cell::new(0),
            behind: Cell::new(false),
            in_flight: RefCell::new(HashSet::new()),
            sweep_at: Cell::new(Some(Date::now().as_millis() + RECOVERY_MS)),
            named: Cell::new(false),
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

    /// Finishes what requests left unfinished (when none is in progress), builds the
    /// monolithic files that miss changes, sweeps left-over staging objects, deletes the
    /// superseded shards whose retention has passed, and sets the next alarm. A failure is logged where it happens and
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
        self.live.set(self.live.get() + 1);
        let _live = OnDrop(|| self.live.set(self.live.get() - 1));
        if let Some(channel) = request.channel() {
            if !self.named.replace(true) {
                self.sql().exec(
                    "INSERT OR REPLACE INTO channel_name (id, name) VALUES (0, ?)",
                    vec![channel.into()],
                )?;
            }
        }
        // Changes that leave the channel's figures changed, to report once they are stored.
        let changed = match &request {
            IndexRequest::Commit(commit) if commit.build => Some(commit.channel.clone()),
            IndexRequest::Delete(delete) => Some(delete.channel.clone()),
            IndexRequest::Build { channel, .. } | IndexRequest::Rebuild { channel } => {
                Some(channel.to_string())
            }
            _ => None,
        };
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
            IndexRequest::Browse { query } => Response::from_json(&self.browse(&query)?),
            IndexRequest::Package { channel, name } => {
                Response::from_json(&self.package(&channel, &name)?)
            }
        };
        if let Some(channel) = changed {
            self.report_figures(&channel).await;
        }
        Ok(response?)
    }

    async fn run_alarm(&self) -> ApiResult<()> {
        #[derive(Deserialize)]
        struct Subdir {
            subdir: String,
        }
        // With no request in progress, every mark and intent is unfinished work of one that
        // died or failed; otherwise the live requests finish their own.
        let recover = self.live.get() == 0;
        let behind = self.behind.replace(false);
        if let Some(channel) = self.channel_name()? {
            if recover {
                self.finish_intents(&channel).await?;
            }
            let marked = if recover {
                "SELECT subdir FROM dirty UNION SELECT subdir FROM stale_repodata"
            } else {
                "SELECT subdir FROM stale_repodata"
            };
            for Subdir { subdir } in self.rows(marked, None)? {
                if recover {
                    self.bring_up_to_date(&channel, &subdir, true).await?;
                } else if behind {
                    let _build = self.repodata_builds.lock().await;
                    self.build_repodata_if_stale(&channel, &subdir).await?;
                }
            }
            if self
                .sweep_at
                .get()
                .is_some_and(|at| at <= Date::now().as_millis())
            {
                self.sweep_staging(&channel).await?;
            }
        } else {
            // No request named the channel yet: nothing to sweep under, and no sweep to wait for.
            self.sweep_at.set(None);
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
        self.schedule_alarm(AlarmWork {
            behind: self.behind.get(),
            ..AlarmWork::default()
        })
        .await
    }

    /// The channel this object indexes, once a request has named it.
    fn channel_name(&self) -> worker::Result<Option<String>> {
        #[derive(Deserialize)]
        struct Row {
            name: String,
        }
        Ok(self
            .rows::<Row>(
                "SELECT name FROM channel_name \
                 UNION ALL SELECT channel AS name FROM stale_repodata LIMIT 1",
                None,
            )?
            .into_iter()
            .next()
            .map(|row| row.name))
    }

    /// Finishes the object changes whose request died or failed: an object no record names
    /// goes, once the artifacts are built without it.
    async fn finish_intents(&self, channel: &str) -> ApiResult<()> {
        #[derive(Deserialize)]
        struct Intent {
            key: String,
            action: ObjectIntent,
            subdir: String,
            filename: String,
        }
        let _write = self.writes.lock().await;
        let intents: Vec<Intent> = self.rows(
            "SELECT key, action, subdir, filename FROM pending_objects",
            None,
        )?;
        for intent in intents {
            let recorded = self.stored(&intent.subdir, &intent.filename)?.is_some();
            if !keeps_object(intent.action, recorded) {
                self.bring_up_to_date(channel, &intent.subdir, true).await?;
                self.bucket()?.delete(&intent.key).await?;
            }
            self.sql().exec(
                "DELETE FROM pending_objects WHERE key = ?",
                vec![intent.key.as_str().into()],
            )?;
            super::log::recovered(intent.action.as_str(), &intent.key, recorded);
        }
        Ok(())
    }

    /// Deletes the channel's staging objects that only an upload that died can have left, and
    /// notes when to come back for the younger ones.
    async fn sweep_staging(&self, channel: &str) -> ApiResult<()> {
        let bucket = self.bucket()?;
        let grace_ms = self.config()?.staging_grace_ms;
        let mut next: Option<u64> = None;
        let mut cursor = None;
        loop {
            let mut list = bucket.list().prefix(staging_key(channel, "")).limit(1000);
            if let Some(cursor) = cursor.take() {
                list = list.cursor(cursor);
            }
            let listed = list.execute().await?;
            let objects: Vec<(String, u64)> = listed
                .objects()
                .iter()
                .map(|object| (object.key(), object.uploaded().as_millis()))
                .collect();
            let (expired, later) =
                self.expired_staging(&objects, Date::now().as_millis(), grace_ms);
            next = next.into_iter().chain(later).min();
            if !expired.is_empty() {
                bucket.delete_multiple(expired).await?;
            }
            cursor = listed.cursor().filter(|_| listed.truncated());
            if cursor.is_none() {
                break;
            }
        }
        self.sweep_at.set(next);
        Ok(())
    }

    /// Which of the staging objects `(key, uploaded)` the sweep deletes now, by
    /// [`sweep_staging`] (sparing those a commit is reading), and when the next one expires.
    fn expired_staging(
        &self,
        objects: &[(String, u64)],
        now: u64,
        grace_ms: u64,
    ) -> (Vec<String>, Option<u64>) {
        let in_flight = self.in_flight.borrow();
        let staged: Vec<Staged> = objects
            .iter()
            .map(|(key, uploaded)| Staged {
                key,
                uploaded: *uploaded,
                in_flight: in_flight.contains(key),
            })
            .collect();
        let (expired, later) = sweep_staging(&staged, now, grace_ms);
        (expired.into_iter().map(str::to_owned).collect(), later)
    }

    async fn commit(&self, request: CommitRequest) -> ApiResult<CommitOutcome> {
        let _reading = match &request.source {
            ObjectSource::Staged { key } => {
                self.in_flight.borrow_mut().insert(key.clone());
                Some(OnDrop(|| {
                    self.in_flight.borrow_mut().remove(key);
                }))
            }
            ObjectSource::Inline { .. } => None,
        };
        let write = self.writes.lock().await;
        let stored = self.stored(&request.subdir, &request.filename)?;
        let status = commit_status(
            &request.subdir,
            &request.filename,
            stored.as_ref().map(|(sha256, _)| sha256.as_str()),
            &request.sha256,
            request.force,
        )?;
        // Set before the marks and intent it would finish, so no prefix of this commit lacks it.
        self.schedule_alarm(AlarmWork {
            unfinished: true,
            ..AlarmWork::default()
        })
        .await?;
        let replaces = stored.is_some();
        if let (CommitStatus::Unchanged, Some((_, record))) = (status, stored) {
            // A retry heals its package: its name is re-marked (rebuilding a shard whose bytes
            // are unchanged writes only the shard index) and the subdir brought up to date.
            self.mark_dirty(&request.subdir, &request.name)?;
            drop(write);
            let repodata = self
                .bring_up_to_date(&request.channel, &request.subdir, false)
                .await?;
            return Ok(CommitOutcome {
                status,
                record,
                repodata: Some(repodata),
            });
        }
        let key = file_key(&request.channel, &request.subdir, &request.filename);
        // The intent is stored before the object is written, and a replaced record goes with
        // it: whatever is in place if this commit dies, no record names it and the alarm
        // deletes it.
        self.intend(
            &key,
            ObjectIntent::Place,
            &request.subdir,
            &request.filename,
        )?;
        if replaces {
            self.sql().exec(
                "DELETE FROM packages WHERE subdir = ? AND filename = ?",
                vec![
                    request.subdir.as_str().into(),
                    request.filename.as_str().into(),
                ],
            )?;
            self.mark_changed(&request.channel, &request.subdir, &request.name)?;
        }
        self.place_object(&request.source, &key, &request.filename)
            .await?;
        // CEP 47: the server's time of indexing, in every record of every artifact.
        let now = Date::now().as_millis();
        let mut record: Record = serde_json::from_str(&request.record)
            .map_err(|e| internal(format!("committed record: {e}")))?;
        record.indexed_timestamp = Some(now);
        let record = record_json(&record);
        // One synchronous stretch, so stored together: the record, its marks, and the end of
        // the intent.
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
        self.sql().exec(
            "DELETE FROM pending_objects WHERE key = ?",
            vec![key.as_str().into()],
        )?;
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
        self.schedule_alarm(AlarmWork {
            unfinished: true,
            ..AlarmWork::default()
        })
        .await?;
        #[derive(Deserialize)]
        struct Row {
            name: String,
        }
        // The record goes, and the intent to remove its object and the marks are stored, in
        // one synchronous stretch.
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
        let key = file_key(&request.channel, &request.subdir, &request.filename);
        self.intend(
            &key,
            ObjectIntent::Remove,
            &request.subdir,
            &request.filename,
        )?;
        self.mark_changed(&request.channel, &request.subdir, &row.name)?;
        // The record leaves every artifact before its object goes.
        self.bring_up_to_date(&request.channel, &request.subdir, true)
            .await?;
        self.bucket()?.delete(&key).await?;
        self.sql().exec(
            "DELETE FROM pending_objects WHERE key = ?",
            vec![key.as_str().into()],
        )?;
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
            "pending_objects",
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
            self.schedule_alarm(AlarmWork {
                unfinished: true,
                ..AlarmWork::default()
            })
            .await?;
            // Numbered above every held mark, so that no build under way releases them.
            self.sql().exec(
                "INSERT INTO dirty (subdir, name, mark) \
                 SELECT DISTINCT subdir, name, (SELECT COALESCE(MAX(mark), 0) + 1 FROM dirty) \
                 FROM packages WHERE true \
                 ON CONFLICT (subdir, name) DO UPDATE SET mark = excluded.mark",
                None,
            )?;
            self.sql().exec(
                "INSERT INTO stale_repodata (subdir, channel, since, mark) \
                 SELECT DISTINCT subdir, ?, ?, \
                   (SELECT COALESCE(MAX(mark), 0) + 1 FROM stale_repodata) \
                 FROM packages WHERE true \
                 ON CONFLICT (subdir) DO UPDATE SET mark = excluded.mark",
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
        self.mark_dirty(subdir, name)?;
        self.sql().exec(
            "INSERT INTO stale_repodata (subdir, channel, since, mark) \
             VALUES (?, ?, ?, (SELECT COALESCE(MAX(mark), 0) + 1 FROM stale_repodata)) \
             ON CONFLICT (subdir) DO UPDATE SET mark = excluded.mark",
            vec![
                subdir.into(),
                channel.into(),
                millis(Date::now().as_millis())?,
            ],
        )?;
        Ok(())
    }

    /// Marks `name`'s shard stale, numbered above every mark held: a build under way, which
    /// claimed an older number, leaves it for the next one.
    fn mark_dirty(&self, subdir: &str, name: &str) -> worker::Result<()> {
        self.sql().exec(
            "INSERT INTO dirty (subdir, name, mark) \
             VALUES (?, ?, (SELECT COALESCE(MAX(mark), 0) + 1 FROM dirty)) \
             ON CONFLICT (subdir, name) DO UPDATE SET mark = excluded.mark",
            vec![subdir.into(), name.into()],
        )?;
        Ok(())
    }

    /// Stores what is about to happen to a package object, before it does.
    fn intend(
        &self,
        key: &str,
        intent: ObjectIntent,
        subdir: &str,
        filename: &str,
    ) -> worker::Result<()> {
        self.sql().exec(
            "INSERT OR REPLACE INTO pending_objects (key, action, subdir, filename, since) \
             VALUES (?, ?, ?, ?, ?)",
            vec![
                key.into(),
                intent.as_str().into(),
                subdir.into(),
                filename.into(),
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
