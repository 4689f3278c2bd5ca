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
use worker::{
    durable_object, Bucket, Date, DurableObject, Env, Method, Request, RequestInit, Response,
    ResponseBody, SqlStorageValue, State,
};

use super::storage::{content_type, file_key};
use crate::repodata::RepodataWriter;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS packages (
    subdir TEXT NOT NULL,
    filename TEXT NOT NULL,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    record TEXT NOT NULL,
    run_exports TEXT,
    about TEXT,
    indexed_at INTEGER NOT NULL,
    PRIMARY KEY (subdir, filename)
)";

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommitOutcome {
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
        // Creating the table is synchronous and idempotent; if it failed, every later query
        // would fail with the reason.
        let _ = state.storage().sql().exec(SCHEMA, None);
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
}

impl ChannelIndex {
    fn bucket(&self) -> worker::Result<Bucket> {
        self.env.bucket("PACKAGES")
    }

    async fn commit(&self, request: CommitRequest) -> worker::Result<CommitOutcome> {
        let write = self.writes.lock().await;
        let existing = self.stored_sha256(&request.subdir, &request.filename)?;
        match existing {
            Some(sha) if sha == request.sha256 => return Ok(CommitOutcome::Unchanged),
            Some(_) if !request.force => return Ok(CommitOutcome::Conflict),
            _ => {}
        }
        // The object is in place before the record that names it.
        let key = file_key(&request.channel, &request.subdir, &request.filename);
        self.copy_object(&request.staging_key, &key, &request.filename)
            .await?;
        self.state.storage().sql().exec(
            "INSERT OR REPLACE INTO packages \
             (subdir, filename, name, sha256, record, run_exports, about, indexed_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            vec![
                request.subdir.as_str().into(),
                request.filename.as_str().into(),
                request.name.as_str().into(),
                request.sha256.as_str().into(),
                request.record.as_str().into(),
                request.run_exports.clone().into(),
                request.about.clone().into(),
                SqlStorageValue::try_from_i64(Date::now().as_millis() as i64)?,
            ],
        )?;
        let generation = self.mark_changed(&request.subdir);
        drop(write);
        self.build(&request.channel, &request.subdir, generation)
            .await?;
        Ok(CommitOutcome::Created)
    }

    async fn delete(&self, request: DeleteRequest) -> worker::Result<DeleteOutcome> {
        let write = self.writes.lock().await;
        if self
            .stored_sha256(&request.subdir, &request.filename)?
            .is_none()
        {
            return Ok(DeleteOutcome { deleted: false });
        }
        self.state.storage().sql().exec(
            "DELETE FROM packages WHERE subdir = ? AND filename = ?",
            vec![
                request.subdir.as_str().into(),
                request.filename.as_str().into(),
            ],
        )?;
        let generation = self.mark_changed(&request.subdir);
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
        self.state
            .storage()
            .sql()
            .exec("DELETE FROM packages", None)?;
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

    fn stored_sha256(&self, subdir: &str, filename: &str) -> worker::Result<Option<String>> {
        #[derive(Deserialize)]
        struct Row {
            sha256: String,
        }
        let rows: Vec<Row> = self
            .state
            .storage()
            .sql()
            .exec(
                "SELECT sha256 FROM packages WHERE subdir = ? AND filename = ?",
                vec![subdir.into(), filename.into()],
            )?
            .to_array()?;
        Ok(rows.into_iter().next().map(|row| row.sha256))
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
            .http_metadata(worker::HttpMetadata {
                content_type: Some(content_type(filename).into()),
                ..Default::default()
            })
            .execute()
            .await?;
        Ok(())
    }

    fn mark_changed(&self, subdir: &str) -> u64 {
        let mut generations = self.generations.borrow_mut();
        let generation = generations.entry(subdir.to_owned()).or_default();
        generation.changed += 1;
        generation.changed
    }

    /// Makes sure repodata.json of `subdir` covers change number `generation`.
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

        #[derive(Deserialize)]
        struct Row {
            filename: String,
            record: String,
        }
        let rows = self.state.storage().sql().exec(
            "SELECT filename, record FROM packages WHERE subdir = ? \
             ORDER BY filename GLOB '*.conda', filename",
            vec![subdir.into()],
        )?;
        let mut writer = RepodataWriter::new(subdir);
        for row in rows.next::<Row>() {
            let row = row?;
            writer.push(&row.filename, &row.record);
        }
        let key = file_key(channel, subdir, "repodata.json");
        self.bucket()?
            .put(key, writer.finish())
            .http_metadata(worker::HttpMetadata {
                content_type: Some("application/json".into()),
                ..Default::default()
            })
            .execute()
            .await?;
        if let Some(entry) = self.generations.borrow_mut().get_mut(subdir) {
            entry.built = entry.built.max(covered);
        }
        Ok(())
    }
}
