//! A mirror channel's index: each subdir's admitted upstream records are rows of the channel's
//! index like uploaded ones (marked as the upstream's), so every index file is built from them
//! by the same builder and filtered alike by construction.
//!
//! A refresh reads the upstream's shard index (CEP 16) and the shards whose hash changed since
//! the last one, or, when the upstream has no shard index, its repodata.json as it streams in,
//! a record at a time ([`crate::mirror::UpstreamFilter`]); it stages the admitted records in
//! SQLite, gives them the run exports the upstream's run_exports.json lists for them (read as it
//! streams in, [`crate::mirror::RunExportsReader`]) and, once everything is read, swaps them in
//! in one stretch (rows added, changed or dropped, their names marked), then builds the
//! subdir's files. A refresh that fails leaves the rows and files as they were. A subdir the
//! upstream has no repodata.json for is remembered as missing, so that it stays a 404 while the
//! upstream fails. Refreshes run one at a time, so concurrent reads of a subdir that is due
//! cause one upstream request.

use std::collections::{BTreeMap, HashMap};

use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use worker::{ByteStream, Date};

use super::super::error::{internal, ApiError, ApiResult};
use super::super::log::MirrorRefreshLog;
use super::super::mirror_counter;
use super::super::storage::file_key;
use super::super::upstream::{within_timeout, UpstreamAccess};
use super::{ChannelIndex, MirrorState};
use crate::index_plan::AlarmWork;
use crate::index_store::MirrorSubdir;
use crate::mirror::{
    needs_revalidation, shard_base_url, MirrorRules, MirrorRulesJson, RunExportsReader,
    UpstreamFailure, UpstreamFilter, Verdict,
};
use crate::shards;

/// What R2 deletes in one call.
const DELETE_BATCH: usize = 1000;
/// The largest upstream shard index a mirror reads, uncompressed or not: conda-forge's
/// linux-64 has about 30,000 names, some 1.5 MB.
const MAX_SHARD_INDEX_BYTES: usize = 32 * 1024 * 1024;
/// The largest upstream shard (all records of one name), uncompressed or not.
const MAX_SHARD_BYTES: usize = 32 * 1024 * 1024;
/// How many shards a refresh fetches at once (a Worker keeps six connections open).
const SHARD_FETCHES: usize = 6;

/// What the upstream answered a refresh.
enum Refreshed {
    NotModified,
    Replaced {
        etag: Option<String>,
        run_exports_etag: Option<String>,
        admits_more_at: Option<u64>,
    },
    /// It has neither a shard index nor a repodata.json for the subdir.
    Missing,
}

/// What a refresh staged from the shards or the repodata.json, before its run exports.
struct Staged {
    etag: Option<String>,
    admits_more_at: Option<u64>,
    /// The upstream's shard hash per name (none: read from repodata.json).
    upstream_shards: BTreeMap<String, String>,
    read: Read,
}

/// What a refresh fails with: the upstream URL and why.
type Failed = (String, UpstreamFailure);

/// What a refresh read from the upstream, for its log line.
struct Read {
    source: &'static str,
    /// The shard index and shards, or the one repodata.json.
    documents: usize,
    records: usize,
    admitted: usize,
    started: u64,
}

/// Whether `state` must be refreshed at `now`: its time is up, its rules changed, or a record
/// it left out as too young is old enough now.
fn due(state: &MirrorSubdir, rules: &str, now: u64, revalidate_ms: u64) -> bool {
    state.rules != rules
        || needs_revalidation(state.checked_at, now, revalidate_ms)
        || state.admits_more_at.is_some_and(|at| at <= now)
}

/// What a read of `subdir` gets from its state: the index, or a 404 when the upstream lacks
/// the subdir.
fn answer(
    state: &MirrorSubdir,
    rules: &MirrorRulesJson,
    subdir: &str,
    now: u64,
    behind: bool,
) -> ApiResult<MirrorState> {
    if state.missing_at.is_some() {
        return Err(missing(state, rules, subdir, now));
    }
    Ok(MirrorState {
        stale_age: state
            .failure
            .is_some()
            .then(|| now.saturating_sub(state.fetched_at) / 1000),
        behind,
    })
}

/// Whether rules stored as `stored` (their JSON) name the upstream `rules` do.
fn same_upstream(stored: &str, rules: &MirrorRulesJson) -> bool {
    serde_json::from_str::<MirrorRulesJson>(stored).is_ok_and(|stored| stored.url == rules.url)
}

/// The 404 of a subdir the upstream lacks, from the memory of its last answer.
fn missing(state: &MirrorSubdir, rules: &MirrorRulesJson, subdir: &str, now: u64) -> ApiError {
    let url = format!("{}/{subdir}/repodata.json", rules.url);
    let said = state.missing_at.unwrap_or(state.fetched_at);
    match state.failure {
        Some(_) => ApiError::not_found(format!(
            "the upstream has no {url}: it answered so {} s ago, and it cannot be asked now",
            now.saturating_sub(said) / 1000
        )),
        None => UpstreamFailure::Missing.error(&url),
    }
}

impl ChannelIndex {
    pub(super) async fn mirror_refresh(
        &self,
        channel: &str,
        subdir: &str,
        rules: &MirrorRulesJson,
        wait: bool,
    ) -> ApiResult<MirrorState> {
        let revalidate_ms = self.config()?.mirror_revalidate_ms;
        let rules_text = serde_json::to_string(rules).map_err(internal)?;
        let now = Date::now().as_millis();
        if let Some(state) = self.store().mirror_subdir(subdir)? {
            let due = due(&state, &rules_text, now, revalidate_ms);
            // A subdir the upstream lacked has no index to answer from meanwhile: a read waits.
            if !due || (!wait && state.missing_at.is_none()) {
                return answer(&state, rules, subdir, now, due);
            }
        }
        let _refresh = self.mirror_refreshes.lock().await;
        // The refresh this one waited for may have done its work.
        let state = self.store().mirror_subdir(subdir)?;
        let now = Date::now().as_millis();
        if let Some(state) = &state {
            if !due(state, &rules_text, now, revalidate_ms) {
                return answer(state, rules, subdir, now, false);
            }
        }
        let stored = state
            .as_ref()
            .is_some_and(|state| state.missing_at.is_none());
        // Stored rules were checked when the channel was created.
        let parsed = MirrorRules::from_parts(rules, true)
            .map_err(|e| internal(format!("mirror rules of {channel}: {e}")))?;
        // A conditional request only when the rules and the ages it was filtered by still hold.
        let known = stored
            && state
                .as_ref()
                .is_some_and(|state| state.rules == rules_text && state.admits_more_at.is_none());
        let known_state = state.as_ref().filter(|_| known);
        let etags = (
            known_state.and_then(|state| state.etag.as_deref()),
            known_state.and_then(|state| state.run_exports_etag.as_deref()),
        );
        let refreshed = self
            .read_upstream(channel, subdir, &parsed, etags, known, !stored)
            .await;
        let refreshed = match refreshed {
            Ok(refreshed) => refreshed,
            Err(error) => {
                self.store().clear_staging(subdir)?;
                return Err(error);
            }
        };
        let failure = match refreshed {
            Ok(Refreshed::NotModified) => {
                let state = MirrorSubdir {
                    fetched_at: now,
                    checked_at: now,
                    failure: None,
                    ..state.expect("a conditional request has a stored state")
                };
                self.store().set_mirror_subdir(subdir, &state)?;
                return answer(&state, rules, subdir, now, false);
            }
            Ok(Refreshed::Replaced {
                etag,
                run_exports_etag,
                admits_more_at,
            }) => {
                let state = MirrorSubdir {
                    rules: rules_text,
                    etag,
                    fetched_at: now,
                    checked_at: now,
                    failure: None,
                    admits_more_at,
                    run_exports_etag,
                    missing_at: None,
                };
                self.store().set_mirror_subdir(subdir, &state)?;
                return answer(&state, rules, subdir, now, false);
            }
            // With nothing stored, remembered: the subdir stays a 404 while the upstream fails.
            Ok(Refreshed::Missing) if !stored => {
                let state = MirrorSubdir {
                    rules: rules_text,
                    etag: None,
                    fetched_at: now,
                    checked_at: now,
                    failure: None,
                    admits_more_at: None,
                    run_exports_etag: None,
                    missing_at: Some(now),
                };
                self.store().set_mirror_subdir(subdir, &state)?;
                return answer(&state, rules, subdir, now, false);
            }
            Ok(Refreshed::Missing) => (
                parsed.upstream_url(subdir, "repodata.json"),
                UpstreamFailure::Missing,
            ),
            Err(failure) => failure,
        };
        let (url, failure) = failure;
        self.store().clear_staging(subdir)?;
        super::super::log::error(&format!("mirror {channel}: {url}: {failure:?}"));
        match state {
            // What the upstream answered last stands in for it: the index, or that it has no
            // such subdir, which the same upstream lacks whatever the rules select.
            Some(state) if stored || same_upstream(&state.rules, rules) => {
                let state = MirrorSubdir {
                    rules: if stored { state.rules } else { rules_text },
                    checked_at: now,
                    failure: Some(format!("{failure:?}")),
                    ..state
                };
                self.store().set_mirror_subdir(subdir, &state)?;
                answer(&state, rules, subdir, now, false)
            }
            _ => Err(failure.error(&url)),
        }
    }

    /// Reads the upstream's index of `subdir` into the rows (see the module's doc): its shard
    /// index and the shards that changed when it has them, else its repodata.json, then its
    /// run_exports.json. An error of the upstream's is the inner one, with the URL it was for,
    /// and leaves the rows as they were. `etags`: of the index document and of
    /// run_exports.json, when the rows were read from them by the same rules (`known`, so only
    /// changed shards need reading).
    async fn read_upstream(
        &self,
        channel: &str,
        subdir: &str,
        rules: &MirrorRules,
        (etag, run_exports_etag): (Option<&str>, Option<&str>),
        known: bool,
        first: bool,
    ) -> ApiResult<Result<Refreshed, Failed>> {
        let index_url = rules.upstream_url(subdir, shards::INDEX_FILENAME);
        let config = self.config()?;
        let access = match UpstreamAccess::new(&rules.to_json(), &config, |name| {
            self.env.secret(name).ok().map(|value| value.to_string())
        }) {
            Ok(access) => access,
            Err(failure) => return Ok(Err((index_url, failure))),
        };
        let max_record = config.mirror_max_record_bytes as usize;
        mirror_counter::upstream_fetch(channel);
        let staged = match fetch_whole(&access, &index_url, etag, MAX_SHARD_INDEX_BYTES).await {
            Ok(None) => return Ok(Ok(Refreshed::NotModified)),
            Ok(Some((bytes, etag))) => {
                let staged = self
                    .read_shards(channel, subdir, (rules, &access), &index_url, &bytes, known)
                    .await?;
                match staged {
                    Ok(staged) => Staged { etag, ..staged },
                    Err(failure) => return Ok(Err(failure)),
                }
            }
            // No shards: repodata.json.
            Err(UpstreamFailure::Missing) => {
                match self
                    .read_repodata(channel, subdir, (rules, &access), etag, max_record)
                    .await?
                {
                    Ok(Some(staged)) => staged,
                    Ok(None) => return Ok(Ok(Refreshed::NotModified)),
                    Err((_, UpstreamFailure::Missing)) => return Ok(Ok(Refreshed::Missing)),
                    Err(failure) => return Ok(Err(failure)),
                }
            }
            Err(failure) => return Ok(Err((index_url, failure))),
        };
        let run_exports_etag = match self
            .read_run_exports(
                channel,
                subdir,
                (rules, &access),
                run_exports_etag,
                max_record,
            )
            .await?
        {
            Ok(etag) => etag,
            Err(failure) => return Ok(Err(failure)),
        };
        self.swap_in(channel, subdir, first, &staged.upstream_shards, staged.read)
            .await?;
        Ok(Ok(Refreshed::Replaced {
            etag: staged.etag,
            run_exports_etag,
            admits_more_at: staged.admits_more_at,
        }))
    }

    /// Stages the admitted records of the upstream's repodata.json, read as it streams in:
    /// `None` for a 304 to `etag`.
    async fn read_repodata(
        &self,
        channel: &str,
        subdir: &str,
        (rules, access): (&MirrorRules, &UpstreamAccess),
        etag: Option<&str>,
        max_record: usize,
    ) -> ApiResult<Result<Option<Staged>, Failed>> {
        let now = Date::now().as_millis();
        let url = rules.upstream_url(subdir, "repodata.json");
        let failed = |failure| Ok(Err((url.clone(), failure)));
        mirror_counter::upstream_fetch(channel);
        let (mut stream, etag) = match fetch_index(access, &url, etag).await {
            Ok(Some(body)) => body,
            Ok(None) => return Ok(Ok(None)),
            Err(failure) => return failed(failure),
        };
        self.store().clear_staging(subdir)?;
        let mut filter = UpstreamFilter::new(rules, subdir, now, max_record);
        loop {
            let chunk = match next_chunk(access, &mut stream).await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(failure) => return failed(failure),
            };
            let admitted = match filter.feed(&chunk) {
                Ok(admitted) => admitted,
                Err(e) => return failed(UpstreamFailure::Failed(e.0)),
            };
            self.store().stage_upstream(subdir, &admitted)?;
        }
        let admits_more_at = filter.admits_more_at;
        let read = Read {
            source: "repodata.json",
            documents: 1,
            records: filter.kept + filter.removed,
            admitted: filter.kept,
            started: now,
        };
        if let Err(e) = filter.finish() {
            return failed(UpstreamFailure::Failed(e.0));
        }
        Ok(Ok(Some(Staged {
            etag,
            admits_more_at,
            upstream_shards: BTreeMap::new(),
            read,
        })))
    }

    /// Gives the staged records of `subdir` the run exports the upstream's run_exports.json
    /// lists for them, read as it streams in (an entry of a record the rules left out is
    /// nobody's): none when the upstream has no run_exports.json, those the rows hold when it
    /// answers 304 to `etag`. Answers its ETag.
    async fn read_run_exports(
        &self,
        channel: &str,
        subdir: &str,
        (rules, access): (&MirrorRules, &UpstreamAccess),
        etag: Option<&str>,
        max_entry: usize,
    ) -> ApiResult<Result<Option<String>, Failed>> {
        let url = rules.upstream_url(subdir, "run_exports.json");
        let failed = |failure| Ok(Err((url.clone(), failure)));
        mirror_counter::upstream_fetch(channel);
        let (mut stream, new_etag) = match fetch_index(access, &url, etag).await {
            Ok(Some(body)) => body,
            Ok(None) => {
                self.store().stage_stored_run_exports(subdir)?;
                return Ok(Ok(etag.map(str::to_owned)));
            }
            Err(UpstreamFailure::Missing) => return Ok(Ok(None)),
            Err(failure) => return failed(failure),
        };
        let mut reader = RunExportsReader::new(max_entry);
        loop {
            let chunk = match next_chunk(access, &mut stream).await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(failure) => return failed(failure),
            };
            let entries = match reader.feed(&chunk) {
                Ok(entries) => entries,
                Err(e) => return failed(UpstreamFailure::Failed(e.0)),
            };
            self.store().stage_run_exports(subdir, &entries)?;
        }
        if let Err(e) = reader.finish() {
            return failed(UpstreamFailure::Failed(e.0));
        }
        Ok(Ok(new_etag))
    }

    /// Stages the records of an upstream shard index (`bytes`, from `index_url`): those of the
    /// shards whose hash changed since the last refresh (all unless `known`), the rows of the
    /// others.
    async fn read_shards(
        &self,
        channel: &str,
        subdir: &str,
        (rules, access): (&MirrorRules, &UpstreamAccess),
        index_url: &str,
        bytes: &[u8],
        known: bool,
    ) -> ApiResult<Result<Staged, Failed>> {
        let failed =
            |url: &str, why: String| Ok(Err((url.to_owned(), UpstreamFailure::Failed(why))));
        let index = match shards::read_upstream_index(bytes, MAX_SHARD_INDEX_BYTES) {
            Ok(index) => index,
            Err(e) => return failed(index_url, format!("its shard index is not valid: {e}")),
        };
        let base = match shard_base_url(index_url, &index.shards_base_url) {
            Ok(base) => base,
            Err(e) => return failed(index_url, e),
        };
        let previous: HashMap<String, String> = if known {
            self.store()
                .upstream_shards(subdir)?
                .into_iter()
                .map(|entry| (entry.name, entry.sha256))
                .collect()
        } else {
            HashMap::new()
        };
        let changed: Vec<(&str, &str)> = index
            .shards
            .iter()
            .filter(|(name, hash)| previous.get(*name) != Some(*hash))
            .map(|(name, hash)| (name.as_str(), hash.as_str()))
            .collect();
        self.store().clear_staging(subdir)?;
        if known {
            let vanished = previous
                .keys()
                .map(String::as_str)
                .filter(|name| !index.shards.contains_key(*name));
            let names: Vec<&str> = changed
                .iter()
                .map(|(name, _)| *name)
                .chain(vanished)
                .collect();
            self.store().stage_current_but(subdir, &names)?;
        }
        let now = Date::now().as_millis();
        let mut admits_more_at: Option<u64> = None;
        let mut read = Read {
            source: "shards",
            documents: changed.len() + 1,
            records: 0,
            admitted: 0,
            started: now,
        };
        let mut fetches = futures_util::stream::iter(changed.iter().map(|(_, hash)| {
            let url = format!("{base}{hash}.msgpack.zst");
            async move {
                mirror_counter::upstream_fetch(channel);
                let fetched = fetch_whole(access, &url, None, MAX_SHARD_BYTES).await;
                (url, *hash, fetched)
            }
        }))
        .buffered(SHARD_FETCHES);
        while let Some((url, hash, fetched)) = fetches.next().await {
            let bytes = match fetched {
                Ok(Some((bytes, _))) => bytes,
                Ok(None) => return failed(&url, "it answered 304 unasked".into()),
                Err(failure) => return Ok(Err((url, failure))),
            };
            // Shards are content-addressed: bytes of another hash are not the shard named.
            if hex::encode(Sha256::digest(&bytes)) != hash {
                return failed(
                    &url,
                    "its bytes do not have the SHA-256 the shard index names".into(),
                );
            }
            let records = match shards::read_shard(&bytes, MAX_SHARD_BYTES) {
                Ok(records) => records,
                Err(e) => return failed(&url, format!("the shard is not valid: {e}")),
            };
            read.records += records.len();
            let mut admitted = Vec::new();
            for (filename, record) in records {
                match rules.judge_value(subdir, &filename, record, now) {
                    Verdict::Admitted(record) => admitted.push(record),
                    Verdict::Later(at) => {
                        admits_more_at = Some(admits_more_at.map_or(at, |t| t.min(at)));
                    }
                    Verdict::Refused | Verdict::Unreadable => {}
                }
            }
            read.admitted += admitted.len();
            self.store().stage_upstream(subdir, &admitted)?;
        }
        drop(fetches);
        Ok(Ok(Staged {
            etag: None,
            admits_more_at,
            upstream_shards: index.shards,
            read,
        }))
    }

    /// Swaps the staged records in (with the upstream's shard hashes they were read from),
    /// deletes the kept copies of files dropped, and builds the subdir's files.
    async fn swap_in(
        &self,
        channel: &str,
        subdir: &str,
        first: bool,
        upstream_shards: &BTreeMap<String, String>,
        read: Read,
    ) -> ApiResult<()> {
        let read_ms = Date::now().as_millis().saturating_sub(read.started);
        // Set before the marks it would finish, should this refresh die before its build.
        self.schedule_alarm(AlarmWork {
            unfinished: true,
            ..AlarmWork::default()
        })
        .await?;
        let swap = self
            .store()
            .swap_in_staging(channel, subdir, Date::now().as_millis(), first)?;
        self.store().set_upstream_shards(
            subdir,
            upstream_shards
                .iter()
                .map(|(name, hash)| (name.as_str(), hash.as_str())),
        )?;
        // A file no longer admitted is a 404 by URL too, and one with other bytes upstream is
        // fetched again: the copy kept of either goes.
        let keys: Vec<String> = swap
            .outdated
            .iter()
            .map(|filename| file_key(channel, subdir, filename))
            .collect();
        let bucket = self.bucket()?;
        for batch in keys.chunks(DELETE_BATCH) {
            bucket.delete_multiple(batch.to_vec()).await?;
            let cached: Vec<String> = batch.iter().map(|k| crate::edge_cache::key(k)).collect();
            super::super::edge_cache::purge(&cached).await;
        }
        let swapped = Date::now().as_millis();
        self.bring_up_to_date(channel, subdir, true).await?;
        if swap.changed > 0 {
            self.report_figures(channel).await;
        }
        let built = Date::now().as_millis();
        super::super::log::mirror_refresh(&MirrorRefreshLog {
            channel,
            subdir,
            source: read.source,
            documents: read.documents,
            records: read.records,
            admitted: read.admitted,
            changed: swap.changed,
            read_ms,
            swap_ms: swapped.saturating_sub(read.started + read_ms),
            build_ms: built.saturating_sub(swapped),
        });
        Ok(())
    }
}

/// GETs a small upstream file whole (a shard index, a shard): its bytes and ETag, or `None`
/// for a 304; one larger than `max_bytes` is a failure.
async fn fetch_whole(
    access: &UpstreamAccess,
    url: &str,
    etag: Option<&str>,
    max_bytes: usize,
) -> Result<Option<(Vec<u8>, Option<String>)>, UpstreamFailure> {
    let Some((mut stream, etag)) = fetch_index(access, url, etag).await? else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    while let Some(chunk) = next_chunk(access, &mut stream).await? {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > max_bytes {
            return Err(UpstreamFailure::Failed(format!(
                "it is larger than {max_bytes} bytes, the most a mirror reads of it"
            )));
        }
    }
    Ok(Some((bytes, etag)))
}

/// GETs an upstream index file through `access`, `If-None-Match: etag` when given: its body
/// and ETag, or `None` for a 304.
async fn fetch_index(
    access: &UpstreamAccess,
    url: &str,
    etag: Option<&str>,
) -> Result<Option<(ByteStream, Option<String>)>, UpstreamFailure> {
    let headers: Vec<(&str, &str)> = etag
        .map(|etag| ("If-None-Match", etag))
        .into_iter()
        .collect();
    let mut response = access.get(url, &headers).await?;
    match response.status_code() {
        200 => {}
        304 if etag.is_some() => return Ok(None),
        404 | 410 => return Err(UpstreamFailure::Missing),
        status => return Err(UpstreamFailure::Failed(format!("HTTP {status}"))),
    }
    let etag = response.headers().get("ETag").ok().flatten();
    let stream = response
        .stream()
        .map_err(|e| UpstreamFailure::Failed(e.to_string()))?;
    Ok(Some((stream, etag)))
}

/// The next chunk of an upstream body; a body that stalls for the upstream's timeout has
/// timed out (a whole document may take longer: it is read as it comes).
async fn next_chunk(
    access: &UpstreamAccess,
    stream: &mut ByteStream,
) -> Result<Option<Vec<u8>>, UpstreamFailure> {
    within_timeout(access.timeout_ms(), async {
        match stream.next().await {
            Some(Ok(chunk)) => Ok(Some(chunk)),
            Some(Err(e)) => Err(UpstreamFailure::Failed(e.to_string())),
            None => Ok(None),
        }
    })
    .await
}
