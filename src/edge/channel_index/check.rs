//! The consistency check of a channel and its repair: gathers the R2 listing, the rows, the
//! shards the rows build and the digests of the served documents, and hands them to
//! [`crate::consistency`], which decides what disagrees.
//!
//! The facts are gathered under all three locks, so no change and no build is half done while
//! they are read; names and subdirs with a build pending are left out (the next build redoes
//! them) and reported as such. The repair keeps `writes` until it is done, so an orphan it
//! deletes cannot be a commit's object placed an instant before its row.
//!
//! A repair racing the alarm's recovery of a cut-short commit or delete (an intent whose
//! object no record names) deletes no live object and loses no record: the alarm finishes
//! intents under `writes` too, so one of the two runs wholly before the other; each decides
//! from what it read under its own hold (the repair: the listing and rows of this check; the
//! alarm: whether a row names the intent's file); neither deletes a row; and the object both
//! may delete is one no row names, deleted twice harmlessly. An upload that makes that file
//! live again takes `writes` as well, so it either precedes the check (its row is then read,
//! and the object is no orphan) or follows the repair (and writes the object anew). Stale
//! staging objects are those the alarm's sweep deletes (the same rule and
//! `STAGING_GRACE_SECONDS`, sparing the ones a commit is reading); an object an upload is
//! writing straight to its reserved key is neither checked nor repaired until it commits.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use worker::{Bucket, Date};

use super::super::error::{internal, ApiResult};
use super::super::storage::file_key;
use super::ChannelIndex;
use crate::attestation::sigs_filename;
use crate::consistency::{
    read_shard_index, Check, CheckOptions, CheckReport, Object, Pending, Repaired,
};
use crate::index_plan::Pages;
use crate::repodata::{run_exports_entry, IndexWriter};
use crate::shards::{build_shard, INDEX_FILENAME};

/// Objects per R2 list call (the most R2 answers) and rows per page of the row scan.
const PAGE: u32 = 1000;

/// What the channel's prefix holds, by kind.
#[derive(Default)]
struct Listing {
    /// (subdir, filename) → size.
    packages: BTreeMap<(String, String), u64>,
    /// (subdir, hex hash).
    shards: BTreeSet<(String, String)>,
    /// (subdir, file) of the index files.
    index_files: BTreeSet<(String, String)>,
    /// (subdir, package filename) of the attestation objects.
    attestations: Vec<(String, String)>,
}

/// A writer that only hashes, so a document is compared without being held.
#[derive(Default)]
struct Hasher(Sha256);

impl Write for Hasher {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Hasher {
    fn digest(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

impl ChannelIndex {
    pub(super) async fn check(
        &self,
        channel: &str,
        options: CheckOptions,
    ) -> ApiResult<CheckReport> {
        let _write = self.writes.lock().await;
        let mut check = Check::default();
        let pending = {
            let _shards = self.shard_builds.lock().await;
            let _repodata = self.repodata_builds.lock().await;
            let pending = self.pending()?;
            self.compare(channel, &pending, &mut check).await?;
            pending
        };
        let mut report = check.report(pending);
        if options.repair {
            report.repaired = Some(self.repair(channel, &check).await?);
        }
        Ok(report)
    }

    fn pending(&self) -> worker::Result<Pending> {
        Ok(Pending {
            dirty_names: self.store().dirty_count()?,
            stale_subdirs: self.store().stale_subdirs()?,
        })
    }

    async fn compare(&self, channel: &str, pending: &Pending, check: &mut Check) -> ApiResult<()> {
        let bucket = self.bucket()?;
        let now = Date::now().as_millis();
        let mut listing = Listing::default();
        let mut subdirs = BTreeSet::new();
        let prefix = format!("{channel}/");
        // An upload writing straight to its key has no record until it commits.
        let uploading: BTreeSet<String> = self
            .store()
            .uploads_before(u64::MAX)?
            .into_iter()
            .map(|upload| upload.key)
            .collect();
        list(&bucket, &prefix, |object| {
            let key = object.key();
            match Object::of(&key[prefix.len()..]) {
                Object::Package { .. } if uploading.contains(&key) => {}
                Object::Package { subdir, filename } => {
                    subdirs.insert(subdir.to_owned());
                    listing
                        .packages
                        .insert((subdir.to_owned(), filename.to_owned()), object.size());
                }
                Object::Shard { subdir, hash } => {
                    listing.shards.insert((subdir.to_owned(), hash.to_owned()));
                }
                Object::Attestation { subdir, filename } => {
                    listing
                        .attestations
                        .push((subdir.to_owned(), filename.to_owned()));
                }
                Object::Index { subdir, file } => {
                    subdirs.insert(subdir.to_owned());
                    listing
                        .index_files
                        .insert((subdir.to_owned(), file.to_owned()));
                }
                Object::Other => {}
            }
        })
        .await?;
        let mut staged: Vec<(String, u64)> = Vec::new();
        list(&bucket, &format!(".staging/{channel}/"), |object| {
            staged.push((object.key(), object.uploaded().as_millis()));
        })
        .await?;
        // The sweep's own rule and setting, so the check reports what the sweep deletes.
        let (stale, _) = self.expired_staging(&staged, now, self.config()?.staging_grace_ms);
        stale.into_iter().for_each(|key| check.stale_staging(key));

        // Attestations go with their package's object; without it, they attest nothing.
        for (subdir, filename) in std::mem::take(&mut listing.attestations) {
            if !listing
                .packages
                .contains_key(&(subdir.clone(), filename.clone()))
            {
                check.orphan(file_key(channel, &subdir, &sigs_filename(&filename)));
            }
        }
        self.compare_records(channel, &mut listing, check)?;

        subdirs.extend(self.store().indexed_subdirs()?);
        for subdir in &subdirs {
            // A pending build rewrites the shard index anyway; comparing it would report its work.
            if let Some(table) = self.compare_shards(subdir, &listing, check)? {
                self.compare_shard_index(channel, subdir, &table, &listing, check)
                    .await?;
            }
            if !pending.stale_subdirs.contains(subdir) {
                self.compare_documents(channel, subdir, &listing, check)
                    .await?;
            }
        }
        Ok(())
    }

    /// Every row against its object; what is left of the listing names no row.
    fn compare_records(
        &self,
        channel: &str,
        listing: &mut Listing,
        check: &mut Check,
    ) -> ApiResult<()> {
        let (mut subdir, mut filename) = (String::new(), String::new());
        loop {
            let rows = self
                .store()
                .record_sizes(&subdir, &filename, PAGE as usize)?;
            for row in &rows {
                let object = listing
                    .packages
                    .remove(&(row.subdir.clone(), row.filename.clone()));
                // A mirror's file is fetched from the upstream on its first request.
                if object.is_some() || !row.is_upstream() {
                    check.record(&row.subdir, &row.filename, row.size, object);
                }
            }
            match rows.last() {
                Some(last) if rows.len() == PAGE as usize => {
                    last.subdir.clone_into(&mut subdir);
                    last.filename.clone_into(&mut filename);
                }
                _ => break,
            }
        }
        for (subdir, filename) in std::mem::take(&mut listing.packages).into_keys() {
            check.orphan(file_key(channel, &subdir, &filename));
        }
        Ok(())
    }

    /// Each name's shard against the one its rows build, leaving out the names marked dirty
    /// (the pending build writes them); returns the shards table of the subdir, or `None` when
    /// some name is marked.
    fn compare_shards(
        &self,
        subdir: &str,
        listing: &Listing,
        check: &mut Check,
    ) -> ApiResult<Option<BTreeMap<String, String>>> {
        let store = self.store();
        let dirty: BTreeSet<String> = store
            .dirty_marks(subdir)?
            .into_iter()
            .map(|mark| mark.name)
            .collect();
        let table: BTreeMap<String, String> = store
            .shards(subdir)?
            .into_iter()
            .map(|entry| (entry.name, entry.sha256))
            .collect();
        let mut names: BTreeSet<String> = store.names(subdir)?.into_iter().collect();
        names.extend(table.keys().cloned());
        for name in names.difference(&dirty) {
            let rows = store.name_rows(subdir, name)?;
            let built = (!rows.is_empty()).then(|| {
                build_shard(
                    rows.iter()
                        .map(|r| (r.filename.as_str(), r.record.as_str())),
                )
                .hex()
            });
            let current = table.get(name);
            let object = current
                .is_some_and(|hash| listing.shards.contains(&(subdir.to_owned(), hash.clone())));
            check.shard(
                subdir,
                name,
                built.as_deref(),
                current.map(String::as_str),
                object,
            );
        }
        Ok(dirty.is_empty().then_some(table))
    }

    /// The served shard index against the shards table.
    async fn compare_shard_index(
        &self,
        channel: &str,
        subdir: &str,
        table: &BTreeMap<String, String>,
        listing: &Listing,
        check: &mut Check,
    ) -> ApiResult<()> {
        let served = if listing
            .index_files
            .contains(&(subdir.to_owned(), INDEX_FILENAME.to_owned()))
        {
            let key = file_key(channel, subdir, INDEX_FILENAME);
            let bytes = match self.bucket()?.get(&key).execute().await? {
                Some(object) => {
                    object
                        .body()
                        .ok_or_else(|| internal("shard index without a body"))?
                        .bytes()
                        .await?
                }
                None => Vec::new(),
            };
            Some(read_shard_index(&bytes))
        } else {
            None
        };
        check.shard_index(subdir, table, served);
        Ok(())
    }

    /// repodata.json, its .zst and run_exports.json against what the rows build, by SHA-256,
    /// both sides streamed: the expected documents are written page by page as a build writes
    /// them and hashed as they come.
    async fn compare_documents(
        &self,
        channel: &str,
        subdir: &str,
        listing: &Listing,
        check: &mut Check,
    ) -> ApiResult<()> {
        let mut repodata = IndexWriter::repodata(subdir);
        let mut run_exports = IndexWriter::run_exports(subdir);
        let (mut repodata_hash, mut run_exports_hash) = (Sha256::new(), Sha256::new());
        let mut any_rows = false;
        let mut pages = Pages::default();
        while let Some(page) = pages.next() {
            let rows = self.store().page(subdir, &page)?;
            for row in &rows {
                repodata.push(&row.filename, &row.record);
                run_exports.push(
                    &row.filename,
                    &run_exports_entry(row.run_exports.as_deref()),
                );
            }
            any_rows |= !rows.is_empty();
            repodata_hash.update(repodata.take_output());
            run_exports_hash.update(run_exports.take_output());
            pages.advance(rows.len(), rows.last().map(|row| row.filename.as_str()));
        }
        repodata_hash.update(repodata.finish());
        run_exports_hash.update(run_exports.finish());
        let (repodata_hash, run_exports_hash) = (
            repodata_hash.finalize().into(),
            run_exports_hash.finalize().into(),
        );

        let listed = |file: &str| {
            listing
                .index_files
                .contains(&(subdir.to_owned(), file.to_owned()))
        };
        // A subdir that never had a package has no documents (noarch's are served empty).
        if !any_rows && !listed("repodata.json") {
            return Ok(());
        }
        for (file, built) in [
            ("repodata.json", repodata_hash),
            ("repodata.json.zst", repodata_hash),
            ("run_exports.json", run_exports_hash),
        ] {
            let served = if listed(file) {
                self.served_digest(&file_key(channel, subdir, file), file.ends_with(".zst"))
                    .await?
            } else {
                None
            };
            check.document(subdir, file, served, built);
        }
        Ok(())
    }

    /// The SHA-256 of an object's bytes (decompressed, with `zstd`), read as a stream; `None`
    /// when it is gone, or when it does not decompress (which then differs from any digest).
    async fn served_digest(&self, key: &str, zstd: bool) -> ApiResult<Option<[u8; 32]>> {
        let Some(object) = self.bucket()?.get(key).execute().await? else {
            return Ok(None);
        };
        let mut stream = object
            .body()
            .ok_or_else(|| internal("document without a body"))?
            .stream()?;
        if !zstd {
            let mut hasher = Hasher::default();
            while let Some(chunk) = stream.next().await {
                hasher.0.update(chunk?);
            }
            return Ok(Some(hasher.digest()));
        }
        let mut decoder = zstd::stream::write::Decoder::new(Hasher::default()).map_err(internal)?;
        while let Some(chunk) = stream.next().await {
            if decoder.write_all(&chunk?).is_err() {
                return Ok(Some([0; 32]));
            }
        }
        if decoder.flush().is_err() {
            return Ok(Some([0; 32]));
        }
        Ok(Some(decoder.into_inner().digest()))
    }

    /// Marks what disagrees and rebuilds it with the builds' own path, then deletes orphan
    /// package objects and stale staging objects. The caller holds `writes`.
    async fn repair(&self, channel: &str, check: &Check) -> ApiResult<Repaired> {
        let store = self.store();
        for (subdir, name) in &check.forget_shards {
            store.forget_shard(subdir, name)?;
        }
        for (subdir, name) in &check.marks {
            store.mark_dirty_for_repair(subdir, name)?;
        }
        let subdirs = check.subdirs_to_rebuild();
        for subdir in &subdirs {
            store.mark_stale_for_repair(channel, subdir, Date::now().as_millis())?;
        }
        for subdir in &subdirs {
            self.bring_up_to_date(channel, subdir, true).await?;
        }
        let bucket = self.bucket()?;
        for keys in check.orphans.chunks(PAGE as usize) {
            bucket.delete_multiple(keys.to_vec()).await?;
            let cached: Vec<String> = keys.iter().map(|k| crate::edge_cache::key(k)).collect();
            super::super::edge_cache::purge(&cached).await;
        }
        for keys in check.staging.chunks(PAGE as usize) {
            bucket.delete_multiple(keys.to_vec()).await?;
        }
        Ok(Repaired {
            names_marked: check.marks.len() as u64,
            subdirs_rebuilt: subdirs.into_iter().collect(),
            objects_deleted: check.orphans.len() as u64,
            staging_deleted: check.staging.len() as u64,
        })
    }
}

/// Calls `each` for every object under `prefix`, a page of [`PAGE`] at a time.
async fn list(
    bucket: &Bucket,
    prefix: &str,
    mut each: impl FnMut(worker::Object),
) -> worker::Result<()> {
    let mut cursor = None;
    loop {
        let mut request = bucket.list().prefix(prefix).limit(PAGE);
        if let Some(cursor) = cursor.take() {
            request = request.cursor(cursor);
        }
        let page = request.execute().await?;
        page.objects().into_iter().for_each(&mut each);
        if !page.truncated() {
            return Ok(());
        }
        cursor = page.cursor();
    }
}
