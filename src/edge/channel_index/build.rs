//! Building a subdir's artifacts from the index rows: the shards of changed package names,
//! the shard index naming them, then repodata.json, its .zst and run_exports.json, streamed.

use worker::Date;

use super::super::edge_cache::purge;
use super::super::error::{internal, ApiResult};
use super::super::object_writer::ObjectWriter;
use super::super::storage::file_key;
use super::{metadata, ChannelIndex, Freshness};
use crate::edge_cache::key;
use crate::index_plan::{
    alarm_due, keeps_shard_index, moves_alarm, shard_update, AlarmWork, Pages, ShardUpdate,
};
use crate::repodata::{run_exports_entry, IndexWriter, REPODATA_ZSTD_LEVEL};
use crate::shards::{self, build_index, build_shard};

/// How much of a document is gathered before it is compressed and handed to its object.
const FLUSH_BYTES: usize = 256 * 1024;

/// The three monolithic files of a subdir while they are written.
struct Monolithic<'a> {
    repodata: IndexWriter,
    run_exports: IndexWriter,
    zstd: zstd::stream::write::Encoder<'static, Vec<u8>>,
    json: ObjectWriter<'a>,
    zst: ObjectWriter<'a>,
    run_exports_json: ObjectWriter<'a>,
    bytes: usize,
}

impl Monolithic<'_> {
    /// Hands on what the documents hold, once it is worth it (or always, with `all`).
    async fn flush(&mut self, all: bool) -> worker::Result<()> {
        if all || self.repodata.pending() >= FLUSH_BYTES {
            let chunk = self.repodata.take_output();
            self.bytes += chunk.len();
            std::io::Write::write_all(&mut self.zstd, chunk.as_bytes())?;
            self.zst.write(&std::mem::take(self.zstd.get_mut())).await?;
            self.json.write(chunk.as_bytes()).await?;
        }
        if all || self.run_exports.pending() >= FLUSH_BYTES {
            self.run_exports_json
                .write(self.run_exports.take_output().as_bytes())
                .await?;
        }
        Ok(())
    }

    /// Closes the documents and completes the objects: .zst first, so that a client that sees
    /// the new repodata.json finds its .zst too. Returns (bytes, repodata parts, .zst parts).
    async fn finish(mut self) -> worker::Result<(usize, usize, usize)> {
        self.repodata.close();
        self.run_exports.close();
        self.flush(true).await?;
        self.zst.write(&self.zstd.finish()?).await?;
        let zst_parts = self.zst.finish().await?;
        let json_parts = self.json.finish().await?;
        self.run_exports_json.finish().await?;
        Ok((self.bytes, json_parts, zst_parts))
    }
}

/// How many shards a build puts at once.
const SHARD_PUTS: usize = 32;

impl ChannelIndex {
    /// Brings the artifacts of `subdir` up to date with its rows: the shards of changed names
    /// and the shard index always, the monolithic files if no build of them is running or if
    /// `wait` (otherwise the alarm builds them next, and this answers `Pending`).
    pub(super) async fn bring_up_to_date(
        &self,
        channel: &str,
        subdir: &str,
        wait: bool,
    ) -> ApiResult<Freshness> {
        {
            // Under the lock, a name not marked dirty has its shard written.
            let _build = self.shard_builds.lock().await;
            self.build_shards(channel, subdir).await?;
        }
        let build = if wait {
            Some(self.repodata_builds.lock().await)
        } else {
            self.repodata_builds.try_lock()
        };
        if build.is_none() {
            self.behind.set(true);
            self.schedule_alarm(AlarmWork {
                behind: true,
                ..AlarmWork::default()
            })
            .await?;
            return Ok(Freshness::Pending);
        }
        self.build_repodata_if_stale(channel, subdir).await?;
        Ok(Freshness::Current)
    }

    /// Builds the monolithic files of `subdir` if they miss a change; the caller holds
    /// `repodata_builds`. The mark is claimed (its number read) before the first row is read
    /// and released only once the files are written and if no change marked the subdir again
    /// meanwhile: a build that fails or dies leaves it for the next one.
    pub(super) async fn build_repodata_if_stale(
        &self,
        channel: &str,
        subdir: &str,
    ) -> ApiResult<()> {
        let Some(claimed) = self.store().stale_mark(subdir)? else {
            return Ok(());
        };
        self.build_monolithic(channel, subdir).await?;
        self.store().release_stale(subdir, claimed)?;
        Ok(())
    }

    /// Rewrites the shards of the names marked dirty, then the shard index; the caller holds
    /// `shard_builds`. With no name marked, everything is written already. The marks are
    /// released only once the shard index is written, each only if no change marked its name
    /// again meanwhile, so a build that fails or dies leaves them for the next one.
    async fn build_shards(&self, channel: &str, subdir: &str) -> ApiResult<()> {
        let claimed = self.store().dirty_marks(subdir)?;
        if claimed.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = claimed.iter().map(|mark| mark.name.clone()).collect();
        self.write_shards(channel, subdir, &names).await?;
        self.store().release_dirty(subdir, &claimed)?;
        self.schedule_alarm(AlarmWork::default()).await
    }

    async fn write_shards(&self, channel: &str, subdir: &str, names: &[String]) -> ApiResult<()> {
        let bucket = self.bucket()?;
        let shard_key = |hex: &str| file_key(channel, subdir, &shards::shard_path(hex));
        let now = Date::now().as_millis();
        // A batch's shards are put concurrently: a first build of a large subdir (an import,
        // a mirror's first refresh) writes thousands. Batches bound the shards held at once.
        for batch in names.chunks(SHARD_PUTS) {
            let mut writes = Vec::new();
            for name in batch {
                let rows = self.store().name_rows(subdir, name)?;
                let old = self.store().shard_of(subdir, name)?;
                let rebuilt = (!rows.is_empty()).then(|| {
                    let shard = build_shard(
                        rows.iter()
                            .map(|r| (r.filename.as_str(), r.record.as_str())),
                    );
                    (shard.hex(), shard.bytes)
                });
                match shard_update(old.as_deref(), rebuilt) {
                    ShardUpdate::Keep => {}
                    ShardUpdate::Write {
                        sha256,
                        bytes,
                        retire,
                    } => writes.push((name, sha256, bytes, retire)),
                    ShardUpdate::Remove { retire } => {
                        self.store().forget_shard(subdir, name)?;
                        if let Some(old) = retire {
                            self.store().retire_shard(&shard_key(&old), now)?;
                        }
                    }
                }
            }
            let (named, puts): (Vec<_>, Vec<_>) = writes
                .into_iter()
                .map(|(name, hex, bytes, retire)| {
                    let put = bucket
                        .put(shard_key(&hex), bytes)
                        .http_metadata(metadata("application/zstd"))
                        .execute();
                    ((name, hex, retire), put)
                })
                .unzip();
            let stored = futures_util::future::join_all(puts).await;
            // Each shard is written before the row that names it, so a failed put is retried.
            for ((name, hex, retire), stored) in named.iter().zip(stored) {
                stored?;
                self.store()
                    .name_shard(subdir, name, hex, &shard_key(hex))?;
                if let Some(old) = retire {
                    self.store().retire_shard(&shard_key(old), now)?;
                }
            }
        }

        let entries = self.store().shards(subdir)?;
        let index_key = file_key(channel, subdir, shards::INDEX_FILENAME);
        if !keeps_shard_index(subdir, entries.len()) {
            bucket.delete(&index_key).await?;
        } else {
            let shards: Vec<(String, [u8; 32])> = entries
                .into_iter()
                .filter_map(|e| Some((e.name, hex::decode(&e.sha256).ok()?.try_into().ok()?)))
                .collect();
            let created_at = String::from(js_sys::Date::new_0().to_iso_string());
            bucket
                .put(&index_key, build_index(subdir, &created_at, &shards))
                .http_metadata(metadata("application/zstd"))
                .execute()
                .await?;
        }
        purge(&[key(&index_key)]).await;
        Ok(())
    }

    /// repodata.json (and its .zst) and run_exports.json, from every row of the subdir.
    ///
    /// Memory stays bounded whatever the subdir's size: rows are read a page at a time, the
    /// documents are handed on every [`FLUSH_BYTES`], and each object holds at most one part.
    async fn build_monolithic(&self, channel: &str, subdir: &str) -> ApiResult<()> {
        let bucket = self.bucket()?;
        let part_bytes = self.config()?.r2_part_bytes;
        let object = |name: &str, content_type| {
            ObjectWriter::new(
                &bucket,
                file_key(channel, subdir, name),
                content_type,
                part_bytes,
            )
        };
        let mut out = Monolithic {
            repodata: IndexWriter::repodata(subdir),
            run_exports: IndexWriter::run_exports(subdir),
            zstd: zstd::stream::write::Encoder::new(Vec::new(), REPODATA_ZSTD_LEVEL)
                .map_err(internal)?,
            json: object("repodata.json", "application/json"),
            zst: object("repodata.json.zst", "application/zstd"),
            run_exports_json: object("run_exports.json", "application/json"),
            bytes: 0,
        };

        let mut pages = Pages::default();
        while let Some(page) = pages.next() {
            let rows = self.store().page(subdir, &page)?;
            for row in &rows {
                out.repodata.push(&row.filename, &row.record);
                out.run_exports.push(
                    &row.filename,
                    &run_exports_entry(row.run_exports.as_deref()),
                );
                out.flush(false).await?;
            }
            pages.advance(rows.len(), rows.last().map(|row| row.filename.as_str()));
        }
        let (bytes, json_parts, zst_parts) = out.finish().await?;
        let written = ["repodata.json", "repodata.json.zst", "run_exports.json"];
        purge(&written.map(|name| key(&file_key(channel, subdir, name)))).await;
        super::super::log::build(channel, subdir, bytes, json_parts, zst_parts);
        Ok(())
    }

    /// Sets the alarm for the next thing due, given what the caller knows besides the rows
    /// (`known`), unless an earlier alarm will run first.
    pub(super) async fn schedule_alarm(&self, known: AlarmWork) -> ApiResult<()> {
        let stored = self.store().stored_work()?;
        let work = AlarmWork {
            behind: known.behind,
            unfinished: known.unfinished || stored.unfinished,
            sweep_at: self.sweep_at.get(),
            oldest_retired: stored.oldest_retired,
        };
        let now = Date::now().as_millis();
        let Some(due) = alarm_due(now, work, self.config()?.shard_retention_ms) else {
            return Ok(());
        };
        let storage = self.state.storage();
        if moves_alarm(storage.get_alarm().await?.map(|at| at as u64), due) {
            // An integer alarm time is an offset from now, in milliseconds.
            storage.set_alarm(due.saturating_sub(now) as i64).await?;
        }
        Ok(())
    }
}
