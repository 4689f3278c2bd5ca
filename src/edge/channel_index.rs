//! The channel index: one Durable Object per channel, the only writer of its records and
//! artifacts.
//!
//! Requests to one object interleave at every await, so two locks order the work: `writes`
//! makes "check the existing record, move the object into place, store the row" one step, and
//! `builds` lets one rebuild of a subdir's repodata.json run at a time. A rebuild covers every
//! row stored before it started, so uploads that arrive during a rebuild share the next one.

use std::{cell::RefCell, collections::HashMap};

use futures_util::lock::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use worker::{
    durable_object, Bucket, Date, DurableObject, Env, Method, Request, RequestInit, Response,
    ResponseBody, SqlStorageValue, State,
};

use super::object_writer::{ObjectWriter, DEFAULT_PART_BYTES};
use super::storage::file_key;
use crate::names::ChannelFile;
use crate::repodata::{record_json, run_exports_entry, IndexWriter};
use crate::shards::{self, build_index, build_shard};

/// The index of record. `packages` holds one row per file; `shards` the current shard of each
/// package name; `dirty` the names whose shard must be rewritten by the next build (kept in
/// storage, so a restart between a change and its build loses nothing); `retired_shards` the
/// superseded shards, deleted by the alarm once clients can no longer hold an index naming them.
const SCHEMA: [&str; 4] = [
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
];

/// How long a superseded shard stays readable, unless `SHARD_RETENTION_SECONDS` says otherwise.
const DEFAULT_SHARD_RETENTION_MS: u64 = 7 * 24 * 3600 * 1000;
/// zstd level of repodata.json.zst. On a 7.8 MB repodata.json (20,000 records) level 3 took
/// 27 ms for 26.6% of the size, level 16 2.2 s for 23.0% and level 19 4.6 s (native; wasm is
/// slower): above 12 the CPU cost grows a hundredfold for a few percent, which a channel the
/// size of conda-forge's linux-64 (254 MB) could not afford inside one request.
const REPODATA_ZSTD_LEVEL: i32 = 3;
/// Rows read from SQLite at a time while building the monolithic files.
const BUILD_PAGE_ROWS: i64 = 500;

/// A validated package, ready to be committed from its staging object.
#[derive(Debug, Serialize, Deserialize)]
pub struct CommitRequest {
    pub channel: String,
    pub staging_key: String,
    pub subdir: String,
    pub filename: String,
    pub name: String,
    pub sha256: String,
    /// The repodata record, serialized canonically.
    pub record: String,
    pub run_exports: Option<String>,
    pub about: Option<String>,
    pub force: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CommitOutcome {
    pub status: CommitStatus,
    /// The stored record (canonical JSON), unless the commit conflicted.
    pub record: Option<String>,
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
pub struct DestroyRequest {
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

    /// Removes every record and object of the channel.
    pub async fn destroy(&self, channel: &str) -> worker::Result<DestroyOutcome> {
        self.call(
            "/destroy",
            &DestroyRequest {
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

#[derive(Default, Clone, Copy)]
struct Generation {
    /// Bumped by every change to the subdir.
    changed: u64,
    /// The value of `changed` that the last finished rebuild covered.
    built: u64,
}

#[durable_object]
pub struct ChannelIndex {
    state: State,
    env: Env,
    writes: Mutex<()>,
    builds: Mutex<()>,
    generations: RefCell<HashMap<String, Generation>>,
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
            builds: Mutex::new(()),
            generations: RefCell::new(HashMap::new()),
        }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        match req.path().as_str() {
            "/commit" => Response::from_json(&self.commit(req.json().await?).await?),
            "/delete" => Response::from_json(&self.delete(req.json().await?).await?),
            "/destroy" => Response::from_json(&self.destroy(req.json().await?).await?),
            other => Response::error(format!("no such channel index operation: {other}"), 404),
        }
    }

    /// Deletes the superseded shards whose retention has passed.
    async fn alarm(&self) -> worker::Result<Response> {
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
        self.schedule_shard_cleanup().await?;
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
                self.build_if_dirty(&request.channel, &request.subdir)
                    .await?;
                return Ok(CommitOutcome {
                    status: CommitStatus::Unchanged,
                    record: Some(record),
                });
            }
            Some(_) if !request.force => {
                return Ok(CommitOutcome {
                    status: CommitStatus::Conflict,
                    record: None,
                })
            }
            _ => {}
        }
        // The object is in place before the record that names it.
        let key = file_key(&request.channel, &request.subdir, &request.filename);
        self.copy_object(&request.staging_key, &key, &request.filename)
            .await?;
        // CEP 47: the server's time of indexing, in every record of every artifact.
        let now = Date::now().as_millis();
        let mut record: Map<String, Value> = serde_json::from_str(&request.record)?;
        record.insert("indexed_timestamp".into(), now.into());
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
        let generation = self.mark_changed(&request.subdir, &request.name)?;
        drop(write);
        self.build(&request.channel, &request.subdir, generation)
            .await?;
        Ok(CommitOutcome {
            status: CommitStatus::Created,
            record: Some(record),
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
        let generation = self.mark_changed(&request.subdir, &row.name)?;
        // The record leaves repodata.json before its object goes.
        self.build(&request.channel, &request.subdir, generation)
            .await?;
        let key = file_key(&request.channel, &request.subdir, &request.filename);
        self.bucket()?.delete(key).await?;
        drop(write);
        Ok(DeleteOutcome { deleted: true })
    }

    async fn destroy(&self, request: DestroyRequest) -> worker::Result<DestroyOutcome> {
        let _write = self.writes.lock().await;
        let _build = self.builds.lock().await;
        for table in ["packages", "shards", "dirty", "retired_shards"] {
            self.sql().exec(&format!("DELETE FROM {table}"), None)?;
        }
        self.state.storage().delete_alarm().await?;
        self.generations.borrow_mut().clear();
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

    async fn copy_object(&self, from: &str, to: &str, filename: &str) -> worker::Result<()> {
        let bucket = self.bucket()?;
        let object = bucket
            .get(from)
            .execute()
            .await?
            .ok_or_else(|| worker::Error::RustError(format!("staged upload {from} is gone")))?;
        let body = object
            .body()
            .ok_or_else(|| worker::Error::RustError("staged upload has no body".into()))?;
        let ResponseBody::Stream(stream) = body.response_body()? else {
            return Err(worker::Error::RustError(
                "staged upload is not a stream".into(),
            ));
        };
        bucket
            .put(to, stream)
            .http_metadata(metadata(ChannelFile::content_type(filename)))
            .execute()
            .await?;
        Ok(())
    }

    /// Records that `name` in `subdir` changed; returns the change number to build for.
    fn mark_changed(&self, subdir: &str, name: &str) -> worker::Result<u64> {
        self.sql().exec(
            "INSERT OR IGNORE INTO dirty (subdir, name) VALUES (?, ?)",
            vec![subdir.into(), name.into()],
        )?;
        let mut generations = self.generations.borrow_mut();
        let generation = generations.entry(subdir.to_owned()).or_default();
        generation.changed += 1;
        Ok(generation.changed)
    }

    async fn build_if_dirty(&self, channel: &str, subdir: &str) -> worker::Result<()> {
        let pending: Vec<serde_json::Value> = self
            .sql()
            .exec(
                "SELECT name FROM dirty WHERE subdir = ? LIMIT 1",
                vec![subdir.into()],
            )?
            .to_array()?;
        if pending.is_empty() {
            return Ok(());
        }
        let generation = self
            .generations
            .borrow()
            .get(subdir)
            .map_or(1, |g| g.changed.max(1));
        self.build(channel, subdir, generation).await
    }

    /// Makes sure every artifact of `subdir` covers change number `generation`: first the
    /// shards of changed names, then the shard index naming them, then the monolithic files.
    async fn build(&self, channel: &str, subdir: &str, generation: u64) -> worker::Result<()> {
        let _build = self.builds.lock().await;
        let covered = {
            let generations = self.generations.borrow();
            let current = generations.get(subdir).copied().unwrap_or_default();
            if current.built >= generation {
                return Ok(());
            }
            current.changed
        };
        self.build_shards(channel, subdir).await?;
        self.build_monolithic(channel, subdir).await?;
        if let Some(entry) = self.generations.borrow_mut().get_mut(subdir) {
            entry.built = entry.built.max(covered);
        }
        Ok(())
    }

    async fn build_shards(&self, channel: &str, subdir: &str) -> worker::Result<()> {
        #[derive(Deserialize)]
        struct Name {
            name: String,
        }
        #[derive(Deserialize)]
        struct Row {
            filename: String,
            record: String,
        }
        #[derive(Deserialize)]
        struct Current {
            sha256: String,
        }
        let bucket = self.bucket()?;
        let shard_key = |hex: &str| file_key(channel, subdir, &format!("shards/{hex}.msgpack.zst"));
        let now = Date::now().as_millis();
        let dirty: Vec<Name> = self
            .sql()
            .exec(
                "SELECT name FROM dirty WHERE subdir = ?",
                vec![subdir.into()],
            )?
            .to_array()?;
        for Name { name } in dirty {
            let rows: Vec<Row> = self
                .sql()
                .exec(
                    "SELECT filename, record FROM packages WHERE subdir = ? AND name = ?",
                    vec![subdir.into(), name.as_str().into()],
                )?
                .to_array()?;
            let old: Option<String> = self
                .sql()
                .exec(
                    "SELECT sha256 FROM shards WHERE subdir = ? AND name = ?",
                    vec![subdir.into(), name.as_str().into()],
                )?
                .to_array::<Current>()?
                .into_iter()
                .next()
                .map(|row| row.sha256);
            let new = if rows.is_empty() {
                self.sql().exec(
                    "DELETE FROM shards WHERE subdir = ? AND name = ?",
                    vec![subdir.into(), name.as_str().into()],
                )?;
                None
            } else {
                let shard = build_shard(
                    rows.iter()
                        .map(|r| (r.filename.as_str(), r.record.as_str())),
                );
                let hex = shard.hex();
                if old.as_deref() != Some(hex.as_str()) {
                    bucket
                        .put(shard_key(&hex), shard.bytes)
                        .http_metadata(metadata("application/zstd"))
                        .execute()
                        .await?;
                    self.sql().exec(
                        "INSERT OR REPLACE INTO shards (subdir, name, sha256) VALUES (?, ?, ?)",
                        vec![subdir.into(), name.as_str().into(), hex.as_str().into()],
                    )?;
                    self.sql().exec(
                        "DELETE FROM retired_shards WHERE key = ?",
                        vec![shard_key(&hex).into()],
                    )?;
                }
                Some(hex)
            };
            if let Some(old) = old.filter(|old| Some(old) != new.as_ref()) {
                self.sql().exec(
                    "INSERT OR REPLACE INTO retired_shards (key, retired_at) VALUES (?, ?)",
                    vec![shard_key(&old).into(), millis(now)?],
                )?;
            }
            self.sql().exec(
                "DELETE FROM dirty WHERE subdir = ? AND name = ?",
                vec![subdir.into(), name.as_str().into()],
            )?;
        }

        #[derive(Deserialize)]
        struct Entry {
            name: String,
            sha256: String,
        }
        let entries: Vec<Entry> = self
            .sql()
            .exec(
                "SELECT name, sha256 FROM shards WHERE subdir = ?",
                vec![subdir.into()],
            )?
            .to_array()?;
        let index_key = file_key(channel, subdir, shards::INDEX_FILENAME);
        if entries.is_empty() && subdir != "noarch" {
            // Clients read a missing shard index as an empty subdir.
            bucket.delete(index_key).await?;
        } else {
            let shards: Vec<(String, [u8; 32])> = entries
                .into_iter()
                .filter_map(|e| Some((e.name, hex::decode(&e.sha256).ok()?.try_into().ok()?)))
                .collect();
            let created_at = String::from(js_sys::Date::new_0().to_iso_string());
            bucket
                .put(index_key, build_index(subdir, &created_at, &shards))
                .http_metadata(metadata("application/zstd"))
                .execute()
                .await?;
        }
        self.schedule_shard_cleanup().await
    }

    /// repodata.json (and its .zst) and run_exports.json, from every row of the subdir.
    ///
    /// Memory stays bounded whatever the subdir's size: rows are read a page at a time, the
    /// documents are written out as they grow, and each object holds at most one part.
    async fn build_monolithic(&self, channel: &str, subdir: &str) -> worker::Result<()> {
        #[derive(Deserialize)]
        struct Row {
            filename: String,
            record: String,
            run_exports: Option<String>,
            is_conda: i64,
        }
        let bucket = self.bucket()?;
        let part_bytes = self.part_bytes();
        let object = |name: &str, content_type| {
            ObjectWriter::new(
                &bucket,
                file_key(channel, subdir, name),
                content_type,
                part_bytes,
            )
        };
        let mut json_out = object("repodata.json", "application/json");
        let mut zst_out = object("repodata.json.zst", "application/zstd");
        let mut run_exports_out = object("run_exports.json", "application/json");
        let mut repodata = IndexWriter::repodata(subdir);
        let mut run_exports = IndexWriter::run_exports(subdir);
        let mut zstd = zstd::stream::write::Encoder::new(Vec::new(), REPODATA_ZSTD_LEVEL)?;
        let mut total = 0usize;

        // Keyset pagination in the order repodata.json lists files: .tar.bz2, then .conda.
        let mut after: (i64, String) = (-1, String::new());
        loop {
            let page: Vec<Row> = self
                .sql()
                .exec(
                    "SELECT filename, record, run_exports, filename GLOB '*.conda' AS is_conda \
                     FROM packages WHERE subdir = ? AND (filename GLOB '*.conda', filename) > (?, ?) \
                     ORDER BY filename GLOB '*.conda', filename LIMIT ?",
                    vec![
                        subdir.into(),
                        SqlStorageValue::try_from_i64(after.0)?,
                        after.1.as_str().into(),
                        SqlStorageValue::try_from_i64(BUILD_PAGE_ROWS)?,
                    ],
                )?
                .to_array()?;
            let last_page = (page.len() as i64) < BUILD_PAGE_ROWS;
            for row in &page {
                repodata.push(&row.filename, &row.record);
                run_exports.push(
                    &row.filename,
                    &run_exports_entry(row.run_exports.as_deref()),
                );
            }
            if let Some(row) = page.into_iter().last() {
                after = (row.is_conda, row.filename);
            }
            let (chunk, exports) = if last_page {
                (
                    std::mem::replace(&mut repodata, IndexWriter::repodata(subdir)).finish(),
                    std::mem::replace(&mut run_exports, IndexWriter::run_exports(subdir)).finish(),
                )
            } else {
                (repodata.take_output(), run_exports.take_output())
            };
            total += chunk.len();
            std::io::Write::write_all(&mut zstd, chunk.as_bytes())?;
            zst_out.write(&std::mem::take(zstd.get_mut())).await?;
            json_out.write(chunk.as_bytes()).await?;
            run_exports_out.write(exports.as_bytes()).await?;
            if last_page {
                break;
            }
        }
        zst_out.write(&zstd.finish()?).await?;
        // The .zst goes first, so a client that sees the new repodata.json finds it too.
        let zst_parts = zst_out.finish().await?;
        let json_parts = json_out.finish().await?;
        run_exports_out.finish().await?;
        super::log::build(channel, subdir, total, json_parts, zst_parts);
        Ok(())
    }

    fn part_bytes(&self) -> usize {
        self.env
            .var("R2_PART_BYTES")
            .ok()
            .and_then(|v| v.to_string().parse().ok())
            .unwrap_or(DEFAULT_PART_BYTES)
    }

    /// Sets the alarm for when the oldest superseded shard may go.
    async fn schedule_shard_cleanup(&self) -> worker::Result<()> {
        #[derive(Deserialize)]
        struct Oldest {
            oldest: Option<f64>,
        }
        let oldest = self
            .sql()
            .exec("SELECT MIN(retired_at) AS oldest FROM retired_shards", None)?
            .one::<Oldest>()?
            .oldest;
        if let Some(oldest) = oldest {
            let due = oldest as u64 + self.shard_retention_ms();
            let storage = self.state.storage();
            if storage.get_alarm().await?.is_none_or(|at| at as u64 > due) {
                // An integer alarm time is an offset from now, in milliseconds.
                let offset = due.saturating_sub(Date::now().as_millis());
                storage.set_alarm(offset as i64).await?;
            }
        }
        Ok(())
    }
}

fn metadata(content_type: &str) -> worker::HttpMetadata {
    worker::HttpMetadata {
        content_type: Some(content_type.into()),
        ..Default::default()
    }
}
