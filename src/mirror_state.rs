//! What a mirror channel holds and how fresh it is, as `GET /api/v1/channels/<c>/mirror`
//! answers it: the query that pages through its kept package files, which stored files count
//! as kept, and the shapes of the answer's parts.

use serde::Serialize;

use crate::names::{check_subdir, ChannelFile};

/// Kept files per page when the query names no `limit`.
pub const DEFAULT_LIMIT: u32 = 100;
/// R2 lists at most this many objects at a time.
pub const MAX_LIMIT: u32 = 1000;

/// A page of kept files: up to `limit` of them, after the file `after` (`<subdir>/<filename>`)
/// in key order, or from the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptQuery {
    pub after: Option<String>,
    pub limit: u32,
}

impl KeptQuery {
    /// Reads `cursor` and `limit` from a query string's pairs; unknown parameters are ignored,
    /// malformed ones are an error saying which.
    pub fn from_query<K: AsRef<str>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, String> {
        let mut query = Self {
            after: None,
            limit: DEFAULT_LIMIT,
        };
        for (key, value) in pairs {
            let value = value.as_ref();
            match key.as_ref() {
                "cursor" if !value.is_empty() => {
                    if kept_file(value).is_none() {
                        return Err(
                            "cursor is not one this server gave out; start again without it".into(),
                        );
                    }
                    query.after = Some(value.to_owned());
                }
                "limit" => query.limit = crate::browse::page_limit(value, MAX_LIMIT)?,
                _ => {}
            }
        }
        Ok(query)
    }
}

/// The subdir and filename of a stored path below `<channel>/` when it is a package file, the
/// only files a mirror keeps besides its index copies; `None` for anything else.
pub fn kept_file(path: &str) -> Option<(&str, &str)> {
    let (subdir, filename) = path.split_once('/')?;
    check_subdir(subdir).ok()?;
    (ChannelFile::of(filename) == Some(ChannelFile::Package)).then_some((subdir, filename))
}

/// When the mirror last had a subdir's repodata.json from its upstream (a 200 or a 304).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubdirFreshness {
    pub subdir: String,
    /// Milliseconds since the epoch.
    pub fetched_at: u64,
    pub age_seconds: u64,
    /// The last revalidation failed: the index stands in for a failing upstream.
    pub stale: bool,
}

impl SubdirFreshness {
    pub fn new(subdir: String, fetched_at: u64, stale: bool, now_ms: u64) -> Self {
        Self {
            subdir,
            fetched_at,
            age_seconds: now_ms.saturating_sub(fetched_at) / 1000,
            stale,
        }
    }
}

/// A package file the mirror fetched from its upstream and keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeptFile {
    pub subdir: String,
    pub filename: String,
    pub size: u64,
    /// When it was stored (milliseconds since the epoch).
    pub kept_at: u64,
}

/// One page of kept files, and the cursor of the next when more may follow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeptPage {
    pub kept: Vec<KeptFile>,
    pub next_cursor: Option<String>,
}
