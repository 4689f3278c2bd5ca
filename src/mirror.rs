//! Mirror channels: the rules that say which of an upstream channel's packages a mirror
//! serves, and the filtering of an upstream repodata.json by them.
//!
//! A record is admitted when it matches one of the `allow` specs (or `allow` is empty), matches
//! none of the `deny` specs, and is at least `min_age_days` old by its `timestamp`. A record
//! without a timestamp has no known age, so it counts as too young whenever `min_age_days` is
//! above zero.

use crate::access::Action;
use crate::error::{ApiError, ErrorCode};
use rattler_conda_types::{MatchSpec, Matches, PackageRecord, ParseStrictness};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

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
        if !self.allow.is_empty() && !self.allow.iter().any(|spec| spec.matches(record)) {
            return false;
        }
        if self.deny.iter().any(|spec| spec.matches(record)) {
            return false;
        }
        if self.min_age_days == 0 {
            return true;
        }
        let Some(made) = record.timestamp.as_ref().map(|t| t.timestamp_millis()) else {
            return false;
        };
        let min_age_ms = u64::from(self.min_age_days) * DAY_MS;
        u64::try_from(made).is_ok_and(|made| now_ms.saturating_sub(made) >= min_age_ms)
    }

    /// The upstream URL of a file of `subdir`.
    pub fn upstream_url(&self, subdir: &str, file: &str) -> String {
        format!("{}/{subdir}/{file}", self.url)
    }

    /// Filters an upstream repodata.json: the records of `packages` and `packages.conda` the
    /// rules do not admit are removed, everything else is kept as the upstream wrote it. A
    /// record rattler cannot read is removed too: its match against the rules is unknown.
    pub fn filter_repodata(&self, document: &[u8], now_ms: u64) -> Result<Filtered, RulesError> {
        let mut root: Map<String, Value> = serde_json::from_slice(document)
            .map_err(|e| RulesError(format!("the upstream repodata.json is not valid: {e}")))?;
        let subdir = root
            .get("info")
            .and_then(|info| info.get("subdir"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let mut removed = 0;
        for map in RECORD_MAPS {
            let Some(Value::Object(records)) = root.get_mut(map) else {
                continue;
            };
            let before = records.len();
            records.retain(|_, raw| {
                read_record(raw, subdir.as_deref()).is_some_and(|r| self.admits(&r, now_ms))
            });
            removed += before - records.len();
        }
        let kept = RECORD_MAPS
            .iter()
            .filter_map(|map| root.get(*map).and_then(Value::as_object))
            .map(Map::len)
            .sum();
        let bytes = serde_json::to_vec(&root).expect("a JSON map serializes");
        Ok(Filtered {
            bytes,
            kept,
            removed,
        })
    }
}

/// A filtered repodata.json and how many records it kept and removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filtered {
    pub bytes: Vec<u8>,
    pub kept: usize,
    pub removed: usize,
}

/// The record of `filename` in a (filtered) repodata.json, if it lists it.
pub fn find_record(document: &[u8], filename: &str) -> Option<PackageRecord> {
    let root: Map<String, Value> = serde_json::from_slice(document).ok()?;
    let subdir = root
        .get("info")
        .and_then(|info| info.get("subdir"))
        .and_then(Value::as_str);
    RECORD_MAPS
        .iter()
        .filter_map(|map| root.get(*map)?.get(filename))
        .find_map(|raw| read_record(raw, subdir))
}

/// Reads one record; old records leave out `subdir`, which `info` then gives.
fn read_record(raw: &Value, subdir: Option<&str>) -> Option<PackageRecord> {
    match (raw, subdir) {
        (Value::Object(fields), Some(subdir)) if !fields.contains_key("subdir") => {
            let mut fields = fields.clone();
            fields.insert("subdir".into(), Value::String(subdir.into()));
            serde_json::from_value(Value::Object(fields)).ok()
        }
        _ => PackageRecord::deserialize(raw).ok(),
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
/// uploads and deletes (and a reindex, which is a write) are refused, whoever asks; so are a
/// rebuild and a repair, which would write the channel's own (empty) index over the mirror's
/// copy of the upstream's.
pub fn refusal(action: Action) -> Option<ApiError> {
    matches!(action, Action::Write | Action::Delete | Action::Repair).then(|| {
        ApiError::new(
            ErrorCode::MirrorChannel,
            "this channel is a mirror: its packages come from its upstream channel, \
             so it takes no uploads, deletes, rebuilds or repairs",
        )
    })
}

/// How a fetch from a mirror's upstream failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// The upstream has no such file (404 or 410).
    Missing,
    /// Another status, a network error, or a document the mirror cannot use.
    Failed(String),
    /// No answer within [`UPSTREAM_TIMEOUT_MS`].
    TimedOut,
}

/// How long a fetch from an upstream may take, its body included.
pub const UPSTREAM_TIMEOUT_MS: u64 = 15_000;

impl UpstreamFailure {
    /// The answer when nothing cached can stand in: a sentence naming the upstream URL.
    pub fn error(&self, url: &str) -> ApiError {
        match self {
            Self::Missing => ApiError::not_found(format!("the upstream has no {url}")),
            Self::Failed(why) => ApiError::new(
                ErrorCode::Upstream,
                format!("the mirror's upstream failed for {url}: {why}"),
            ),
            Self::TimedOut => ApiError::new(
                ErrorCode::UpstreamTimeout,
                format!(
                    "the mirror's upstream did not answer {url} within {} s",
                    UPSTREAM_TIMEOUT_MS / 1000
                ),
            ),
        }
    }
}

/// Whether a copy fetched at `fetched_ms` must be revalidated with the upstream at `now_ms`.
pub fn needs_revalidation(fetched_ms: u64, now_ms: u64, revalidate_ms: u64) -> bool {
    now_ms.saturating_sub(fetched_ms) >= revalidate_ms
}
