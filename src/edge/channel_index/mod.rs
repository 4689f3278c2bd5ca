//! The channel index: one Durable Object per channel, the only writer of its records and
//! artifacts. What to do is decided in [`crate::index_plan`]; this module carries it out with
//! the statements of [`crate::index_store`] on the object's SQLite, and with R2.
//!
//! The Worker reaches it through [`ChannelIndexClient`] (`client.rs`): each call is one POST of
//! an `IndexRequest`, answered with its outcome or with an `ApiError` under that error's status,
//! which the client returns as the same error. So a conflicting commit is a 409 wherever it
//! starts, and a failure's detail is logged in the object, where it happened.
//!
//! Requests to one object interleave at every await, so four locks order the work, always
//! taken in this order:
//! - `mirror_refreshes` lets one refresh of a mirror's subdir from its upstream run at a time
//!   (`mirror.rs`); the refresh then builds under the two build locks.
//! - `writes` makes a change one step: a commit's "check the stored record, move the object
//!   into place, store the row"; a delete, from removing its row until its object is gone; a
//!   rebuild's marking of every name.
//! - `shard_builds` lets one build of shards and the shard index run at a time; under it, a
//!   name not marked dirty has its shard written.
//! - `repodata_builds` lets one build of the monolithic files (repodata.json, its .zst,
//!   run_exports.json) run at a time; a change that finds it taken does not wait for it.
//!
//! `destroy` holds all four. The alarm takes `repodata_builds` for each subdir it builds,
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

mod build;
mod check;
mod client;
mod mirror_fetch;
mod mirror_refresh;
mod sql;

use std::cell::{Cell, RefCell};
use std::collections::HashSet;

use base64::Engine;
use futures_util::lock::Mutex;
use wasm_bindgen::JsCast;
use worker::{
    durable_object, Bucket, Date, DurableObject, Env, Request, Response, ResponseBody, SqlStorage,
    State,
};

use super::db::Db;
use super::error::{internal, ApiError, ApiResult, ErrorCode};
use super::storage::{file_key, staging_key};
use crate::config::Config;
use crate::directory;
pub use crate::index_plan::CommitStatus;
use crate::index_plan::{
    commit_status, expiry_cutoff, sweep_staging, AlarmWork, Staged, RECOVERY_MS,
};
use crate::index_store::{IndexStore, NewRecord};
use crate::names::ChannelFile;
use crate::repodata::{record_json, Record};
use client::IndexRequest;
pub use client::{
    ChannelIndexClient, CommitOutcome, CommitRequest, DeleteOutcome, DestroyOutcome, FileRequest,
    Freshness, IndexStats, MirrorFetchRequest, MirrorFetched, MirrorState, ObjectSource,
};

#[durable_object]
pub struct ChannelIndex {
    state: State,
    env: Env,
    sql: SqlStorage,
    /// Applied when the object is loaded; if that failed, every request and alarm fails with
    /// the reason.
    schema: Result<(), String>,
    /// Read once, when the object is loaded; a malformed setting fails every request that
    /// needs it, with the reason in the log.
    config: Result<Config, String>,
    writes: Mutex<()>,
    shard_builds: Mutex<()>,
    repodata_builds: Mutex<()>,
    /// Lets one refresh of a mirror's subdirs from the upstream run at a time.
    mirror_refreshes: Mutex<()>,
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
    /// A mirror's package fetches in progress ([`mirror_fetch`]).
    mirror_fetches: mirror_fetch::InFlight,
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
        let sql = state.storage().sql();
        let schema = IndexStore::new(&sql)
            .migrate()
            .map_err(|error| error.to_string());
        let config = Config::from_vars(|name| env.var(name).ok().map(|v| v.to_string()));
        Self {
            state,
            env,
            sql,
            schema,
            config,
            writes: Mutex::new(()),
            shard_builds: Mutex::new(()),
            repodata_builds: Mutex::new(()),
            mirror_refreshes: Mutex::new(()),
            live: Cell::new(0),
            behind: Cell::new(false),
            in_flight: RefCell::new(HashSet::new()),
            sweep_at: Cell::new(Some(Date::now().as_millis() + RECOVERY_MS)),
            named: Cell::new(false),
            mirror_fetches: mirror_fetch::InFlight::default(),
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
    /// superseded shards whose retention has passed, and sets the next alarm. A failure is
    /// logged where it happens and the runtime retries the alarm.
    async fn alarm(&self) -> worker::Result<Response> {
        self.run_alarm()
            .await
            .map_err(|error| worker::Error::RustError(error.message))?;
        Response::ok("done")
    }
}

impl ChannelIndex {
    /// The packages bucket, its operations counted in this object's isolate.
    fn bucket(&self) -> worker::Result<Bucket> {
        Ok(super::r2_counter::counted(self.env.bucket("PACKAGES")?))
    }

    fn store(&self) -> IndexStore<'_, SqlStorage> {
        IndexStore::new(&self.sql)
    }

    fn schema(&self) -> ApiResult<()> {
        self.schema
            .clone()
            .map_err(|error| internal(format!("index schema: {error}")))
    }

    fn config(&self) -> ApiResult<Config> {
        self.config
            .clone()
            .map_err(|error| internal(format!("configuration: {error}")))
    }

    async fn answer(&self, request: IndexRequest<'_>) -> ApiResult<Response> {
        self.live.set(self.live.get() + 1);
        let _live = OnDrop(|| self.live.set(self.live.get() - 1));
        self.schema()?;
        if let Some(channel) = request.channel() {
            if !self.named.replace(true) {
                self.store().set_channel_name(channel)?;
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
            IndexRequest::Reserve { file, sha256 } => {
                Response::from_json(&self.reserve(&file, &sha256).await?)
            }
            IndexRequest::ReserveLikely {
                channel,
                filename,
                name,
                sha256,
            } => {
                let subdir = self.store().likely_subdir(&name)?;
                let reserved = match subdir {
                    Some(subdir) => {
                        let file = FileRequest {
                            channel: channel.into_owned(),
                            subdir,
                            filename: filename.into_owned(),
                        };
                        self.reserve(&file, &sha256).await?.then_some(file.subdir)
                    }
                    None => None,
                };
                Response::from_json(&reserved)
            }
            IndexRequest::Release(file) => Response::from_json(&self.release(&file).await?),
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
            IndexRequest::Browse { query } => Response::from_json(&self.store().browse(&query)?),
            IndexRequest::Package { channel, name } => {
                Response::from_json(&self.store().package(&channel, &name)?)
            }
            IndexRequest::MirrorRefresh {
                channel,
                subdir,
                rules,
                wait,
            } => Response::from_json(&self.mirror_refresh(&channel, &subdir, &rules, wait).await?),
            IndexRequest::MirrorSubdirs { .. } => {
                Response::from_json(&self.store().mirror_subdirs()?)
            }
            IndexRequest::MirrorFile { subdir, filename } => {
                Response::from_json(&self.store().upstream_file(&subdir, &filename)?)
            }
            IndexRequest::MirrorFetch(request) => {
                Ok(self.mirror_fetch(request.into_owned()).await?)
            }
        };
        if let Some(channel) = changed {
            self.report_figures(&channel).await;
        }
        Ok(response?)
    }

    async fn run_alarm(&self) -> ApiResult<()> {
        self.schema()?;
        // With no request in progress, every mark and intent is unfinished work of one that
        // died or failed; otherwise the live requests finish their own.
        let recover = self.live.get() == 0;
        let behind = self.behind.replace(false);
        if let Some(channel) = self.store().channel_name()? {
            if recover {
                self.finish_intents(&channel).await?;
            }
            let marked = if recover {
                self.store().marked_subdirs()?
            } else {
                self.store().stale_subdirs()?
            };
            for subdir in marked {
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
            let expired = self.store().expired_shards(cutoff)?;
            if !expired.is_empty() {
                // The objects go before their rows, so a cut-short deletion is repeated.
                self.bucket()?.delete_multiple(expired.clone()).await?;
                let cached: Vec<String> =
                    expired.iter().map(|k| crate::edge_cache::key(k)).collect();
                super::edge_cache::purge(&cached).await;
                for key in expired {
                    self.store().forget_retired(&key)?;
                }
            }
        }
        self.schedule_alarm(AlarmWork {
            behind: self.behind.get(),
            ..AlarmWork::default()
        })
        .await
    }

    /// Finishes the object changes whose request died or failed: an object no record names
    /// goes, once the artifacts are built without it.
    async fn finish_intents(&self, channel: &str) -> ApiResult<()> {
        let _write = self.writes.lock().await;
        for intent in self.store().intents()? {
            // Whichever the change was, the object stays only if a record names it (a later
            // commit put the file back); otherwise no record will.
            let recorded = self
                .store()
                .stored(&intent.subdir, &intent.filename)?
                .is_some();
            if !recorded {
                self.bring_up_to_date(channel, &intent.subdir, true).await?;
                self.bucket()?.delete(&intent.key).await?;
            }
            // The object changed or went, and the request that changed it may have died before
            // dropping its cached copy.
            super::edge_cache::purge(&[crate::edge_cache::key(&intent.key)]).await;
            self.store().clear_intent(&intent.key)?;
            super::log::recovered(intent.action.as_str(), &intent.key, recorded);
        }
        Ok(())
    }

    /// Deletes the channel's staging objects and direct uploads that only an upload that died
    /// can have left, and notes when to come back for the younger ones.
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
        let cutoff = Date::now().as_millis().saturating_sub(grace_ms);
        {
            let _write = self.writes.lock().await;
            for upload in self.store().uploads_before(cutoff)? {
                self.store().end_upload(&upload.key)?;
                self.drop_unstored(&upload.subdir, &upload.filename, &upload.key)
                    .await?;
            }
        }
        let next_upload = self
            .store()
            .oldest_upload()?
            .map(|since| since.saturating_add(grace_ms));
        self.sweep_at.set(next.into_iter().chain(next_upload).min());
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
            ObjectSource::Inline { .. } | ObjectSource::Written { .. } => None,
        };
        let key = file_key(&request.channel, &request.subdir, &request.filename);
        let write = self.writes.lock().await;
        let reserved = self.store().upload_at(&key)?.is_some();
        let stored = self.store().stored(&request.subdir, &request.filename)?;
        match &request.source {
            ObjectSource::Written { key: written } if *written != key || !reserved => {
                return Err(internal(format!("no reservation of {key} for {written}")));
            }
            // Only an answer that places no object (the stored file's, unforced) may pass a
            // direct upload still writing to the key.
            ObjectSource::Staged { .. } | ObjectSource::Inline { .. }
                if reserved && (stored.is_none() || request.force) =>
            {
                return Err(ApiError::new(
                    ErrorCode::AlreadyExists,
                    format!(
                        "{}/{} is being uploaded by another request; retry once it has finished",
                        request.subdir, request.filename
                    ),
                ));
            }
            _ => {}
        }
        let status = commit_status(
            &request.subdir,
            &request.filename,
            stored.as_ref().map(|stored| stored.sha256.as_str()),
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
        if let (CommitStatus::Unchanged, Some(stored)) = (status, stored) {
            // A retry heals its package: its name is re-marked (rebuilding a shard whose bytes
            // are unchanged writes only the shard index) and the subdir brought up to date.
            self.store().mark_dirty(&request.subdir, &request.name)?;
            if matches!(request.source, ObjectSource::Written { .. }) {
                // Another holder of the same bytes committed first.
                self.store().leave_upload(&key)?;
            }
            drop(write);
            let repodata = self
                .bring_up_to_date(&request.channel, &request.subdir, false)
                .await?;
            return Ok(CommitOutcome {
                status,
                record: stored.record,
                repodata: Some(repodata),
            });
        }
        if !matches!(request.source, ObjectSource::Written { .. }) {
            // The intent is stored before the object is written, and a replaced record goes
            // with it: whatever is in place if this commit dies, no record names it and the
            // alarm deletes it. (An object already written is its upload's reservation's until
            // the record below ends it, in the same stretch; the reservation kept any other
            // record of the file from being stored meanwhile.)
            self.store().begin_commit(
                &request.channel,
                &request.subdir,
                &request.filename,
                replaces.then_some(request.name.as_str()),
                &key,
                Date::now().as_millis(),
            )?;
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
        let file = NewRecord {
            subdir: &request.subdir,
            filename: &request.filename,
            name: &request.name,
            sha256: &request.sha256,
            record: &record,
            run_exports: request.run_exports.as_deref(),
            about: request.about.as_deref(),
            indexed_at: now,
            provenance: request.provenance.as_ref(),
        };
        self.store().finish_commit(&request.channel, &file, &key)?;
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

    async fn delete(&self, request: &FileRequest) -> ApiResult<DeleteOutcome> {
        let write = self.writes.lock().await;
        self.schedule_alarm(AlarmWork {
            unfinished: true,
            ..AlarmWork::default()
        })
        .await?;
        let key = file_key(&request.channel, &request.subdir, &request.filename);
        // The record goes, and the intent to remove its object and the marks are stored, in
        // one synchronous stretch.
        let deleted = self.store().begin_delete(
            &request.channel,
            &request.subdir,
            &request.filename,
            &key,
            Date::now().as_millis(),
        )?;
        if !deleted {
            return Ok(DeleteOutcome { deleted: false });
        }
        // The record leaves every artifact before its object goes.
        self.bring_up_to_date(&request.channel, &request.subdir, true)
            .await?;
        self.bucket()?.delete(&key).await?;
        super::edge_cache::purge(&[crate::edge_cache::key(&key)]).await;
        self.store().clear_intent(&key)?;
        drop(write);
        Ok(DeleteOutcome { deleted: true })
    }

    /// Reserves a file's key for an upload that writes it before committing (see
    /// [`crate::index_store::IndexStore::reserve_upload`]); the sweep ends a reservation left
    /// by an upload that died, once `STAGING_GRACE_SECONDS` have passed.
    async fn reserve(&self, file: &FileRequest, sha256: &str) -> ApiResult<bool> {
        let _write = self.writes.lock().await;
        let key = file_key(&file.channel, &file.subdir, &file.filename);
        let now = Date::now().as_millis();
        let reserved =
            self.store()
                .reserve_upload((&file.subdir, &file.filename), &key, sha256, now)?;
        if reserved {
            let expires = now.saturating_add(self.config()?.staging_grace_ms);
            let due = self.sweep_at.get().map_or(expires, |at| at.min(expires));
            self.sweep_at.set(Some(due));
            self.schedule_alarm(AlarmWork::default()).await?;
        }
        Ok(reserved)
    }

    /// One holder of a reservation leaves it without committing; the last one deletes the
    /// object unless a record names the file (another holder committed the same bytes). A
    /// reservation already ended (by the sweep) is left alone.
    async fn release(&self, file: &FileRequest) -> ApiResult<()> {
        let _write = self.writes.lock().await;
        let key = file_key(&file.channel, &file.subdir, &file.filename);
        if self.store().upload_at(&key)?.is_some() && self.store().leave_upload(&key)? {
            self.drop_unstored(&file.subdir, &file.filename, &key)
                .await?;
        }
        Ok(())
    }

    /// Deletes the object at `key` of a reservation just ended, unless a record names the
    /// file (under `writes`).
    async fn drop_unstored(&self, subdir: &str, filename: &str, key: &str) -> ApiResult<()> {
        if self.store().stored(subdir, filename)?.is_none() {
            self.bucket()?.delete(key).await?;
            // A reader may have cached it in the instant it was there.
            super::edge_cache::purge(&[crate::edge_cache::key(key)]).await;
        }
        Ok(())
    }

    async fn destroy(&self, channel: &str) -> ApiResult<DestroyOutcome> {
        let _refresh = self.mirror_refreshes.lock().await;
        let _write = self.writes.lock().await;
        let _shards = self.shard_builds.lock().await;
        let _repodata = self.repodata_builds.lock().await;
        self.store().clear()?;
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
        let subdirs = {
            let _write = self.writes.lock().await;
            self.schedule_alarm(AlarmWork {
                unfinished: true,
                ..AlarmWork::default()
            })
            .await?;
            self.store()
                .mark_everything(channel, Date::now().as_millis())?
        };
        for subdir in &subdirs {
            self.bring_up_to_date(channel, subdir, true).await?;
        }
        Ok(subdirs)
    }

    fn stats(&self) -> ApiResult<IndexStats> {
        let memory: js_sys::WebAssembly::Memory = wasm_bindgen::memory().unchecked_into();
        let wasm_memory_bytes = js_sys::ArrayBuffer::from(memory.buffer()).byte_length();
        Ok(IndexStats {
            subdirs: self.store().subdir_rows()?,
            stale_repodata: self.store().stale()?,
            wasm_memory_bytes: wasm_memory_bytes.into(),
            sqlite_bytes: self.sql.database_size() as u64,
            r2_operations: super::r2_counter::counts(),
            mirror: super::mirror_counter::counts(
                &self.store().channel_name()?.unwrap_or_default(),
            ),
        })
    }

    /// Writes the package object from its source.
    async fn place_object(&self, source: &ObjectSource, to: &str, filename: &str) -> ApiResult<()> {
        let bucket = self.bucket()?;
        let put = match source {
            // Its upload wrote it there.
            ObjectSource::Written { .. } => return Ok(()),
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
        // A replacement (`?force`): the old bytes leave this data centre's cache at once.
        super::edge_cache::purge(&[crate::edge_cache::key(to)]).await;
        Ok(())
    }

    /// Writes the channel's package count and newest indexing time to D1, where the channel
    /// list reads them. A failure is logged, not answered: the change itself is stored, and
    /// the next one writes the figures again.
    async fn report_figures(&self, channel: &str) {
        let reported = async {
            let Some(figures) = self.store().figures()? else {
                return Ok(());
            };
            Db::new(self.env.d1("DB")?)
                .batch([directory::set_channel_figures(
                    channel,
                    figures.count,
                    figures.last,
                )])
                .await
        };
        let result: ApiResult<()> = reported.await;
        if let Err(error) = result {
            super::log::error(&format!("channel figures of {channel}: {}", error.message));
        }
    }
}

fn metadata(content_type: &str) -> worker::HttpMetadata {
    worker::HttpMetadata {
        content_type: Some(content_type.into()),
        ..Default::default()
    }
}
