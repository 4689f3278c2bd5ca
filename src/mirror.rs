//! Mirror channels: the rules that say which of an upstream channel's packages a mirror
//! serves, the filtering of an upstream repodata.json by them, a record at a time, and the
//! reading of the upstream's run_exports.json, an entry at a time.
//!
//! A record is admitted when it matches one of the `allow` specs (or `allow` is empty), matches
//! none of the `deny` specs, and is at least `min_age_days` old by its `timestamp`. A record
//! without a timestamp has no known age, so it counts as too young whenever `min_age_days` is
//! above zero.

use crate::access::Action;
use crate::error::{ApiError, ErrorCode};
use rattler_conda_types::{MatchSpec, Matches, PackageRecord, ParseStrictness};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::repodata::sorted_keys;
use crate::repodata_scan::RepodataScanner;

/// The two maps of a repodata.json that hold package records.
pub const RECORD_MAPS: [&str; 2] = ["packages", "packages.conda"];

const DAY_MS: u64 = 24 * 3600 * 1000;

/// What a mirror channel serves of its upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorRules {
    /// The upstream channel's URL, without a trailing slash.
    pub url: String,
    pub allow: Vec<MatchSpec>,
    pub deny: Vec<MatchSpec>,
    pub min_age_days: u32,
    /// The name of the Worker secret whose value is sent as `Authorization` to the upstream.
    pub credentials: Option<String>,
}

/// The rules as JSON: what the API takes and answers and what D1 stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorRulesJson {
    pub url: String,
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
    #[serde(default)]
    pub min_age_days: i64,
    /// The name of a Worker secret (never its value), for a private upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<String>,
}

/// Why rules were refused; the message is a sentence for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RulesError(pub String);

impl MirrorRules {
    /// Parses rules from their JSON text; `allow_http` admits `http://` upstreams (local tests).
    pub fn from_json(text: &str, allow_http: bool) -> Result<Self, RulesError> {
        let json: MirrorRulesJson = serde_json::from_str(text)
            .map_err(|e| RulesError(format!("the mirror rules are not valid: {e}")))?;
        Self::from_parts(&json, allow_http)
    }

    /// Validates rules already read as [`MirrorRulesJson`].
    pub fn from_parts(json: &MirrorRulesJson, allow_http: bool) -> Result<Self, RulesError> {
        let url = check_url(&json.url, allow_http)?;
        let specs = |list: &[String], which: &str| {
            list.iter()
                .map(|text| {
                    MatchSpec::from_str(text, ParseStrictness::Strict).map_err(|e| {
                        RulesError(format!("'{text}' in {which} is not a match spec: {e}"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let allow = specs(&json.allow, "allow")?;
        let deny = specs(&json.deny, "deny")?;
        let min_age_days = u32::try_from(json.min_age_days).map_err(|_| {
            RulesError(format!(
                "min_age_days is {}, not a number of days from 0 to {}",
                json.min_age_days,
                u32::MAX
            ))
        })?;
        let credentials = json
            .credentials
            .as_deref()
            .map(check_secret_name)
            .transpose()?;
        Ok(Self {
            url,
            allow,
            deny,
            min_age_days,
            credentials,
        })
    }

    /// The rules as JSON, with each spec written as it is canonically spelled.
    pub fn to_json(&self) -> MirrorRulesJson {
        MirrorRulesJson {
            url: self.url.clone(),
            allow: self.allow.iter().map(ToString::to_string).collect(),
            deny: self.deny.iter().map(ToString::to_string).collect(),
            min_age_days: i64::from(self.min_age_days),
            credentials: self.credentials.clone(),
        }
    }

    /// Whether the mirror serves `record` at `now_ms` (milliseconds since the Unix epoch).
    pub fn admits(&self, record: &PackageRecord, now_ms: u64) -> bool {
        self.admission(record, now_ms) == Admission::Admitted
    }

    /// Whether the mirror serves `record` at `now_ms`, and if not yet, from when.
    pub fn admission(&self, record: &PackageRecord, now_ms: u64) -> Admission {
        if !self.allow.is_empty() && !self.allow.iter().any(|spec| spec.matches(record)) {
            return Admission::Refused;
        }
        if self.deny.iter().any(|spec| spec.matches(record)) {
            return Admission::Refused;
        }
        if self.min_age_days == 0 {
            return Admission::Admitted;
        }
        let Some(made) = record.timestamp.as_ref().map(|t| t.timestamp_millis()) else {
            return Admission::Refused;
        };
        let Ok(made) = u64::try_from(made) else {
            return Admission::Refused;
        };
        let from = made.saturating_add(u64::from(self.min_age_days) * DAY_MS);
        if now_ms >= from {
            Admission::Admitted
        } else {
            Admission::From(from)
        }
    }

    /// The upstream URL of a file of `subdir`.
    pub fn upstream_url(&self, subdir: &str, file: &str) -> String {
        format!("{}/{subdir}/{file}", self.url)
    }

    /// Judges one upstream record of `subdir` (its JSON text): the record as the mirror's
    /// index stores it when the rules admit it. A record rattler cannot read is refused (its
    /// match against the rules is unknown), and so is one without a sha256: the bytes fetched
    /// for it could not be checked.
    pub fn judge(&self, subdir: &str, filename: &str, raw: &[u8], now_ms: u64) -> Verdict {
        match serde_json::from_slice::<Value>(raw) {
            Ok(value) => self.judge_value(subdir, filename, value, now_ms),
            Err(_) => Verdict::Unreadable,
        }
    }

    /// [`Self::judge`] of a record already read (from a shard, say).
    pub fn judge_value(&self, subdir: &str, filename: &str, value: Value, now_ms: u64) -> Verdict {
        let Value::Object(mut fields) = value else {
            return Verdict::Unreadable;
        };
        // Old records leave out `subdir`, which their document's URL gives.
        if !fields.contains_key("subdir") {
            fields.insert("subdir".into(), Value::String(subdir.into()));
        }
        let value = Value::Object(fields);
        let Ok(record) = PackageRecord::deserialize(&value) else {
            return Verdict::Unreadable;
        };
        let Some(sha256) = record.sha256 else {
            return Verdict::Unreadable;
        };
        match self.admission(&record, now_ms) {
            Admission::Admitted => Verdict::Admitted(MirrorRecord {
                filename: filename.to_owned(),
                name: record.name.as_normalized().to_owned(),
                sha256: hex::encode(sha256),
                record: sorted_keys(value).to_string(),
            }),
            Admission::From(at) => Verdict::Later(at),
            Admission::Refused => Verdict::Refused,
        }
    }
}

/// Whether the rules admit a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// Too young: admitted from this time on (epoch milliseconds).
    From(u64),
    Refused,
}

/// What the mirror makes of one upstream record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Admitted(MirrorRecord),
    /// Too young until this time (epoch milliseconds).
    Later(u64),
    Refused,
    /// Not a record rattler reads, or one without a sha256.
    Unreadable,
}

/// An upstream record the rules admit, as the mirror's index stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorRecord {
    pub filename: String,
    pub name: String,
    /// Hex.
    pub sha256: String,
    /// The upstream's record as canonical JSON, with `subdir` when the upstream left it out.
    pub record: String,
}

/// Reads an upstream repodata.json of one subdir as it streams in, with memory bounded by one
/// record (see [`crate::repodata_scan`]): hands back the admitted records of each chunk.
pub struct UpstreamFilter<'a> {
    rules: &'a MirrorRules,
    subdir: String,
    now_ms: u64,
    scanner: RepodataScanner,
    /// How many records the rules left out or rattler could not read.
    pub removed: usize,
    pub kept: usize,
    /// When the first record too young now becomes old enough.
    pub admits_more_at: Option<u64>,
}

impl<'a> UpstreamFilter<'a> {
    /// A filter for `subdir` at `now_ms`, refusing a record larger than `max_record` bytes.
    pub fn new(rules: &'a MirrorRules, subdir: &str, now_ms: u64, max_record: usize) -> Self {
        Self {
            rules,
            subdir: subdir.to_owned(),
            now_ms,
            scanner: RepodataScanner::new(max_record),
            removed: 0,
            kept: 0,
            admits_more_at: None,
        }
    }

    /// Reads the next chunk; answers the admitted records it completes.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<MirrorRecord>, RulesError> {
        let scanned = self
            .scanner
            .feed(chunk)
            .map_err(|e| RulesError(format!("the upstream repodata.json is not valid: {e}")))?;
        let mut admitted = Vec::new();
        for record in scanned {
            match self
                .rules
                .judge(&self.subdir, &record.filename, &record.bytes, self.now_ms)
            {
                Verdict::Admitted(record) => admitted.push(record),
                Verdict::Later(at) => {
                    self.admits_more_at = Some(self.admits_more_at.map_or(at, |t| t.min(at)));
                    self.removed += 1;
                }
                Verdict::Refused | Verdict::Unreadable => self.removed += 1,
            }
        }
        self.kept += admitted.len();
        Ok(admitted)
    }

    /// Ends the document: an error unless it was complete.
    pub fn finish(self) -> Result<(), RulesError> {
        self.scanner
            .finish()
            .map(|_| ())
            .map_err(|e| RulesError(format!("the upstream repodata.json is not valid: {e}")))
    }
}

/// One upstream file's run exports, as the upstream's run_exports.json lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamRunExports {
    pub filename: String,
    /// The `run_exports` object as canonical JSON, as the index stores an upload's.
    pub run_exports: String,
}

/// Reads an upstream run_exports.json (`{"info": …, "packages": {"<filename>": {"run_exports":
/// {…}}}, "packages.conda": {…}}`) as it streams in, with memory bounded by one entry, by the
/// scanner that reads repodata.json: hands back the entries of each chunk.
pub struct RunExportsReader {
    scanner: RepodataScanner,
}

/// An entry of run_exports.json; what else it holds is not the mirror's.
#[derive(Deserialize)]
struct RunExportsEntry {
    run_exports: serde_json::Map<String, Value>,
}

impl RunExportsReader {
    /// A reader refusing an entry larger than `max_entry` bytes.
    pub fn new(max_entry: usize) -> Self {
        Self {
            scanner: RepodataScanner::new(max_entry),
        }
    }

    /// Reads the next chunk; answers the entries it completes. An entry without a
    /// `run_exports` object makes the document invalid: its run exports are unknown.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<UpstreamRunExports>, RulesError> {
        let invalid =
            |e: String| RulesError(format!("the upstream run_exports.json is not valid: {e}"));
        let scanned = self.scanner.feed(chunk).map_err(|e| invalid(e.0))?;
        scanned
            .into_iter()
            .map(|entry| {
                let read: RunExportsEntry = serde_json::from_slice(&entry.bytes).map_err(|e| {
                    invalid(format!(
                        "the entry of '{}' has no run_exports object: {e}",
                        entry.filename
                    ))
                })?;
                Ok(UpstreamRunExports {
                    filename: entry.filename,
                    run_exports: sorted_keys(Value::Object(read.run_exports)).to_string(),
                })
            })
            .collect()
    }

    /// Ends the document: an error unless it was complete.
    pub fn finish(self) -> Result<(), RulesError> {
        self.scanner
            .finish()
            .map(|_| ())
            .map_err(|e| RulesError(format!("the upstream run_exports.json is not valid: {e}")))
    }
}

/// A secret's name as Cloudflare takes it and as this project spells settings: capitals,
/// digits and `_`, not starting with a digit, at most 64 characters.
fn check_secret_name(name: &str) -> Result<String, RulesError> {
    let shaped = (1..=64).contains(&name.len())
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    if shaped {
        Ok(name.to_owned())
    } else {
        Err(RulesError(
            "credentials must name a Worker secret: up to 64 capitals, digits and '_', \
             not starting with a digit"
                .into(),
        ))
    }
}

/// How many redirects a fetch from an upstream follows.
pub const MAX_REDIRECTS: usize = 5;

/// Where a redirect from `from` to `location` leads: the absolute URL, if its scheme is https
/// (or http when `allow_http`); otherwise the reason, a sentence naming the target.
pub fn redirect_target(from: &str, location: &str, allow_http: bool) -> Result<String, String> {
    let location = location.trim();
    let origin = origin(from).unwrap_or_default();
    let target = if location.starts_with("https://") || location.starts_with("http://") {
        location.to_owned()
    } else if let Some(rest) = location.strip_prefix("//") {
        let scheme = from.split("://").next().unwrap_or("https");
        format!("{scheme}://{rest}")
    } else if location.starts_with('/') {
        format!("{origin}{location}")
    } else if location.contains(':') {
        return Err(format!(
            "it redirected to '{location}', which is not an https URL"
        ));
    } else {
        let path = from.split(['?', '#']).next().unwrap_or(from);
        let base = path.rsplit_once('/').map_or(path, |(base, _)| base);
        format!("{base}/{location}")
    };
    let admitted = target.starts_with("https://") || (allow_http && target.starts_with("http://"));
    if !admitted {
        return Err(format!(
            "it redirected to '{target}', which is not https; the mirror follows redirects to https only"
        ));
    }
    Ok(target)
}

/// The origin (`scheme://host[:port]`, lowercased) of an absolute http(s) URL.
pub fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    // Credentials in the authority are no part of the origin.
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    (!host.is_empty()).then(|| {
        format!(
            "{}://{}",
            scheme.to_ascii_lowercase(),
            host.to_ascii_lowercase()
        )
    })
}

fn check_url(url: &str, allow_http: bool) -> Result<String, RulesError> {
    let rest = if let Some(rest) = url.strip_prefix("https://") {
        rest
    } else if let Some(rest) = url.strip_prefix("http://") {
        if !allow_http {
            return Err(RulesError(format!(
                "the mirror URL '{url}' is not https (http is allowed only when MIRROR_ALLOW_HTTP is set)"
            )));
        }
        rest
    } else {
        return Err(RulesError(format!(
            "the mirror URL '{url}' is not an https URL"
        )));
    };
    let rest = rest.trim_end_matches('/');
    let host = rest.split('/').next().unwrap_or_default();
    let bad = |c: char| c.is_whitespace() || c.is_control() || "?#@\\".contains(c);
    if host.is_empty() || rest.chars().any(bad) {
        return Err(RulesError(format!(
            "the mirror URL '{url}' needs a host and a path without '?', '#', '@' or spaces"
        )));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// What the access policy adds for a mirror channel: its files come from the upstream only, so
/// uploads and deletes (and a reindex, which is a write) are refused, whoever asks. A rebuild
/// and a repair work as on any channel: they rewrite the files from the index's rows.
pub fn refusal(action: Action) -> Option<ApiError> {
    matches!(action, Action::Write | Action::Delete).then(|| {
        ApiError::new(
            ErrorCode::MirrorChannel,
            "this channel is a mirror: its packages come from its upstream channel, \
             so it takes no uploads or deletes",
        )
    })
}

/// The URL shards are fetched under (ending in `/`), from the shard index's URL and its
/// `shards_base_url`: relative to the index, or an absolute URL of the index's own scheme or
/// https.
pub fn shard_base_url(index_url: &str, base: &str) -> Result<String, String> {
    let base = if base.contains("://") {
        let scheme = index_url.split("://").next().unwrap_or_default();
        if !(base.starts_with("https://") || base.starts_with(&format!("{scheme}://"))) {
            return Err(format!("its shards_base_url '{base}' has another scheme"));
        }
        base.to_owned()
    } else {
        let directory = &index_url[..index_url.rfind('/').map_or(0, |i| i + 1)];
        format!("{directory}{}", base.trim_start_matches("./"))
    };
    Ok(if base.ends_with('/') {
        base
    } else {
        format!("{base}/")
    })
}

/// How a fetch from a mirror's upstream failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// The upstream has no such file (404 or 410).
    Missing,
    /// Another status, a network error, or a document the mirror cannot use.
    Failed(String),
    /// No answer, or a body that stalled, for this many milliseconds
    /// (`MIRROR_UPSTREAM_TIMEOUT_SECONDS`).
    TimedOut(u64),
}

impl UpstreamFailure {
    /// The answer when nothing cached can stand in: a sentence naming the upstream URL.
    pub fn error(&self, url: &str) -> ApiError {
        match self {
            Self::Missing => ApiError::not_found(format!("the upstream has no {url}")),
            Self::Failed(why) => ApiError::new(
                ErrorCode::Upstream,
                format!("the mirror's upstream failed for {url}: {why}"),
            ),
            Self::TimedOut(ms) => ApiError::new(
                ErrorCode::UpstreamTimeout,
                format!(
                    "the mirror's upstream did not answer {url} within {} s",
                    *ms as f64 / 1000.0
                ),
            ),
        }
    }
}

/// Whether a copy fetched at `fetched_ms` must be revalidated with the upstream at `now_ms`.
pub fn needs_revalidation(fetched_ms: u64, now_ms: u64, revalidate_ms: u64) -> bool {
    now_ms.saturating_sub(fetched_ms) >= revalidate_ms
}
