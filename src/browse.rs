//! Browsing a channel: its package names with summary figures, searched and paged, and every
//! record of one name, as the web app shows them. The channel's index runs the SQL; what a
//! query means, how a page is cut and how rows become answers is decided here.
//!
//! A search matches names that start with `q` first, then names that contain it elsewhere, each
//! group in name order. The cursor is opaque to clients: it names the group and the last name
//! answered, so a page never repeats or skips a name even while uploads add others.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::str::FromStr;

use base64::Engine;
use rattler_conda_types::Version;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::names::check_subdir;
use crate::provenance::Provenance;

/// Names per page unless the client asks for another number.
pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 200;

/// A page's `limit` parameter: a number of items from 1 to `max`.
pub fn page_limit(value: &str, max: u32) -> Result<u32, String> {
    value
        .parse()
        .ok()
        .filter(|limit| (1..=max).contains(limit))
        .ok_or(format!("limit is a number from 1 to {max}"))
}
/// Longer searches cannot match a name (names are at most this long in practice) and are
/// refused rather than scanned for.
const MAX_QUERY_CHARS: usize = 200;

/// A search of a channel's package names, as the client asked for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrowseQuery {
    /// Lowercased; empty: every name.
    pub q: String,
    pub subdir: Option<String>,
    pub cursor: Option<Cursor>,
    pub limit: u32,
}

/// Which group of names a page is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    /// Every name (no search), or the names starting with the search.
    Prefix,
    /// The names containing the search, but not at their start.
    Substring,
}

/// Where the next page starts: after `after` in `group`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub group: Group,
    pub after: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        let tag = match self.group {
            Group::Prefix => 'p',
            Group::Substring => 's',
        };
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{tag}{}", self.after))
    }

    pub fn decode(text: &str) -> Option<Self> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let mut chars = text.chars();
        let group = match chars.next()? {
            'p' => Group::Prefix,
            's' => Group::Substring,
            _ => return None,
        };
        Some(Self {
            group,
            after: chars.as_str().to_owned(),
        })
    }
}

impl BrowseQuery {
    /// Reads `q`, `subdir`, `cursor` and `limit` from a query string's pairs; unknown
    /// parameters are ignored, malformed ones are an error saying which.
    pub fn from_query<K: AsRef<str>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, String> {
        let mut query = Self {
            q: String::new(),
            subdir: None,
            cursor: None,
            limit: DEFAULT_LIMIT,
        };
        for (key, value) in pairs {
            let value = value.as_ref();
            match key.as_ref() {
                "q" => {
                    if value.chars().count() > MAX_QUERY_CHARS {
                        return Err(format!("q is longer than {MAX_QUERY_CHARS} characters"));
                    }
                    query.q = value.trim().to_lowercase();
                }
                "subdir" if !value.is_empty() => {
                    check_subdir(value)?;
                    query.subdir = Some(value.to_owned());
                }
                "cursor" if !value.is_empty() => {
                    query.cursor =
                        Some(Cursor::decode(value).ok_or(
                            "cursor is not one this server gave out; start again without it",
                        )?);
                }
                "limit" => query.limit = page_limit(value, MAX_LIMIT)?,
                _ => {}
            }
        }
        Ok(query)
    }

    /// The group the page starts in, and the name it starts after.
    pub fn start(&self) -> (Group, &str) {
        match &self.cursor {
            Some(cursor) => (cursor.group, &cursor.after),
            None => (Group::Prefix, ""),
        }
    }

    /// The names of a prefix search lie in `[q, prefix_end)`: an index range.
    pub fn prefix_end(&self) -> String {
        // Greater than any continuation of `q` in UTF-8 byte order, which is SQLite's.
        format!("{}\u{10FFFF}", self.q)
    }

    /// Whether a page that ran out of names in `group` goes on with the next group.
    pub fn continues_after(&self, group: Group) -> bool {
        group == Group::Prefix && !self.q.is_empty()
    }
}

/// One page of names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackagePage {
    pub packages: Vec<PackageSummary>,
    /// How many names match, over every page.
    pub total: u64,
    pub next_cursor: Option<String>,
}

/// A package name as the channel page lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackageSummary {
    pub name: String,
    pub latest_version: String,
    /// How many files (builds of every version).
    pub builds: u64,
    pub subdirs: Vec<String>,
    /// When the newest file was indexed (milliseconds since the epoch).
    pub last_upload: u64,
    /// about.json's `summary` of the latest version.
    pub summary: Option<String>,
}

/// A stored file of one name, as the index holds it.
#[derive(Debug, Clone, Deserialize)]
pub struct FileRow {
    pub subdir: String,
    pub filename: String,
    /// The repodata record (JSON).
    pub record: String,
    /// info/about.json, if the package had one.
    pub about: Option<String>,
    pub indexed_at: u64,
    /// Who published it, as the index stored it (JSON); `None` for a record stored before
    /// that was kept, or where the query did not read it.
    #[serde(default)]
    pub provenance: Option<String>,
}

/// The fields of a record the pages show, read from its JSON (other fields are skipped).
#[derive(Debug, Default, Deserialize)]
struct RecordFields {
    #[serde(default)]
    version: String,
    #[serde(default)]
    build: String,
    #[serde(default)]
    build_number: u64,
    #[serde(default)]
    depends: Vec<String>,
    #[serde(default)]
    constrains: Vec<String>,
    license: Option<String>,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    sha256: String,
    #[serde(default)]
    md5: String,
}

/// about.json's fields the pages show; anything else in it, or a field of another type, is
/// left out.
#[derive(Debug, Default)]
struct AboutFields {
    summary: Option<String>,
    description: Option<String>,
    home: Option<String>,
}

impl AboutFields {
    fn of(about: Option<&str>) -> Self {
        let Some(Value::Object(about)) = about.and_then(|text| serde_json::from_str(text).ok())
        else {
            return Self::default();
        };
        let text = |key: &str| about.get(key).and_then(Value::as_str).map(str::to_owned);
        Self {
            summary: text("summary"),
            description: text("description"),
            home: text("home"),
        }
    }
}

fn fields(row: &FileRow) -> RecordFields {
    serde_json::from_str(&row.record).unwrap_or_default()
}

/// Newest first: by version (conda's ordering), then build number, then indexing time. A
/// version conda cannot parse sorts below those it can, by its text.
fn newer_first(a: (&RecordFields, u64), b: (&RecordFields, u64)) -> Ordering {
    let version = |fields: &RecordFields| Version::from_str(&fields.version).ok();
    let by_version = match (version(a.0), version(b.0)) {
        (Some(x), Some(y)) => y.cmp(&x),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => b.0.version.cmp(&a.0.version),
    };
    by_version
        .then(b.0.build_number.cmp(&a.0.build_number))
        .then(b.1.cmp(&a.1))
}

/// The summary figures of `name` from its rows (in the subdir searched, if one was).
pub fn summarize(name: &str, rows: &[FileRow]) -> Option<PackageSummary> {
    let parsed: Vec<(RecordFields, &FileRow)> = rows.iter().map(|row| (fields(row), row)).collect();
    let latest = parsed
        .iter()
        .min_by(|a, b| newer_first((&a.0, a.1.indexed_at), (&b.0, b.1.indexed_at)))?;
    let subdirs: BTreeSet<&str> = rows.iter().map(|row| row.subdir.as_str()).collect();
    Some(PackageSummary {
        name: name.to_owned(),
        latest_version: latest.0.version.clone(),
        builds: rows.len() as u64,
        subdirs: subdirs.into_iter().map(str::to_owned).collect(),
        last_upload: rows.iter().map(|row| row.indexed_at).max().unwrap_or(0),
        summary: AboutFields::of(latest.1.about.as_deref()).summary,
    })
}

/// Every file of one name, as the package page shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackageRecords {
    pub name: String,
    pub records: Vec<RecordView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordView {
    pub subdir: String,
    pub filename: String,
    pub version: String,
    pub build: String,
    pub build_number: u64,
    pub depends: Vec<String>,
    pub constrains: Vec<String>,
    pub license: Option<String>,
    pub size: u64,
    pub sha256: String,
    pub md5: String,
    pub indexed_at: u64,
    pub summary: Option<String>,
    pub description: Option<String>,
    pub home: Option<String>,
    /// Where the file is downloaded: `/<channel>/<subdir>/<filename>`.
    pub url: String,
    /// Who published it; `null` when unknown (stored before this was kept).
    pub provenance: Option<Provenance>,
}

/// The files of `name` in `channel`, newest version first.
pub fn package_records(channel: &str, name: &str, rows: Vec<FileRow>) -> PackageRecords {
    let mut parsed: Vec<(RecordFields, FileRow)> =
        rows.into_iter().map(|row| (fields(&row), row)).collect();
    parsed.sort_by(|a, b| {
        newer_first((&a.0, a.1.indexed_at), (&b.0, b.1.indexed_at))
            .then_with(|| a.1.subdir.cmp(&b.1.subdir))
            .then_with(|| a.1.filename.cmp(&b.1.filename))
    });
    let records = parsed
        .into_iter()
        .map(|(fields, row)| {
            let about = AboutFields::of(row.about.as_deref());
            RecordView {
                url: format!("/{channel}/{}/{}", row.subdir, row.filename),
                subdir: row.subdir,
                filename: row.filename,
                version: fields.version,
                build: fields.build,
                build_number: fields.build_number,
                depends: fields.depends,
                constrains: fields.constrains,
                license: fields.license,
                size: fields.size,
                sha256: fields.sha256,
                md5: fields.md5,
                indexed_at: row.indexed_at,
                summary: about.summary,
                description: about.description,
                home: about.home,
                provenance: Provenance::from_stored(row.provenance.as_deref()),
            }
        })
        .collect();
    PackageRecords {
        name: name.to_owned(),
        records,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> Result<BrowseQuery, String> {
        BrowseQuery::from_query(pairs.iter().copied())
    }

    fn row(
        subdir: &str,
        version: &str,
        build_number: u64,
        indexed_at: u64,
        about: Option<&str>,
    ) -> FileRow {
        FileRow {
            subdir: subdir.into(),
            filename: format!("pkg-{version}-h_{build_number}.conda"),
            record: serde_json::json!({
                "name": "pkg", "version": version, "build": format!("h_{build_number}"),
                "build_number": build_number, "depends": ["python >=3.8"], "license": "MIT",
                "size": 10, "sha256": "ab", "md5": "cd", "subdir": subdir,
            })
            .to_string(),
            about: about.map(str::to_owned),
            indexed_at,
            provenance: None,
        }
    }

    #[test]
    fn cursors_round_trip_and_refuse_forgeries() {
        for group in [Group::Prefix, Group::Substring] {
            let cursor = Cursor {
                group,
                after: "numpy-base".into(),
            };
            assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor));
        }
        assert_eq!(Cursor::decode("not base64!"), None);
        let other_tag = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("xnumpy");
        assert_eq!(Cursor::decode(&other_tag), None);
        assert!(query(&[("cursor", "%%%")]).is_err());
    }

    #[test]
    fn query_parameters_are_checked() {
        let parsed = query(&[("q", " NumPy "), ("subdir", "linux-64"), ("limit", "10")]).unwrap();
        assert_eq!(parsed.q, "numpy");
        assert_eq!(parsed.subdir.as_deref(), Some("linux-64"));
        assert_eq!(parsed.limit, 10);
        assert_eq!(query(&[]).unwrap().limit, DEFAULT_LIMIT);
        assert_eq!(query(&[("subdir", "")]).unwrap().subdir, None);
        for bad in [
            ("limit", "0"),
            ("limit", "201"),
            ("limit", "ten"),
            ("subdir", "../x"),
        ] {
            assert!(query(&[bad]).is_err(), "{bad:?}");
        }
        assert!(query(&[("q", &"a".repeat(201))]).is_err());
    }

    #[test]
    fn a_search_goes_on_from_prefixes_to_substrings() {
        let search = query(&[("q", "py")]).unwrap();
        assert_eq!(search.start(), (Group::Prefix, ""));
        assert!(search.continues_after(Group::Prefix));
        assert!(!search.continues_after(Group::Substring));
        assert!(!query(&[]).unwrap().continues_after(Group::Prefix));
        let end = search.prefix_end();
        for name in ["py", "py-zzz", "pyzzzzzzzzzz", "py\u{ff}"] {
            assert!(name >= "py" && name < end.as_str(), "{name}");
        }
        assert!("pz" > end.as_str());
    }

    #[test]
    fn the_latest_version_is_conda_s_newest() {
        let rows = [
            row("linux-64", "1.10.0", 0, 5, Some(r#"{"summary": "new"}"#)),
            row("noarch", "1.9.0", 3, 9, Some(r#"{"summary": "old"}"#)),
            row("linux-64", "1.10.0rc1", 0, 7, None),
        ];
        let summary = summarize("pkg", &rows).unwrap();
        assert_eq!(summary.latest_version, "1.10.0");
        assert_eq!(summary.builds, 3);
        assert_eq!(summary.subdirs, ["linux-64", "noarch"]);
        assert_eq!(summary.last_upload, 9);
        assert_eq!(summary.summary.as_deref(), Some("new"));
        assert_eq!(summarize("pkg", &[]), None);
    }

    #[test]
    fn records_come_newest_first_with_their_about_fields() {
        let hostile =
            r#"{"summary": "<script>alert(1)</script>", "home": "javascript:x", "description": 5}"#;
        let rows = vec![
            row("linux-64", "2.0", 0, 1, None),
            row("linux-64", "2.0", 1, 2, Some(hostile)),
            row("noarch", "10.0", 0, 3, Some("not json")),
        ];
        let listed = package_records("chan", "pkg", rows);
        let order: Vec<_> = listed
            .records
            .iter()
            .map(|r| (r.version.as_str(), r.build_number))
            .collect();
        assert_eq!(order, [("10.0", 0), ("2.0", 1), ("2.0", 0)]);
        let second = &listed.records[1];
        // Text is passed on as text; a field of the wrong type is left out.
        assert_eq!(second.summary.as_deref(), Some("<script>alert(1)</script>"));
        assert_eq!(second.description, None);
        assert_eq!(second.url, "/chan/linux-64/pkg-2.0-h_1.conda");
        assert_eq!(second.depends, ["python >=3.8"]);
        assert_eq!(second.license.as_deref(), Some("MIT"));
        assert_eq!(listed.records[0].summary, None);
    }

    #[test]
    fn a_record_shows_who_published_it_or_null() {
        let publisher = Provenance {
            user: "alice".into(),
            key: "ci".into(),
            workflow: None,
        };
        let rows = vec![
            FileRow {
                provenance: Some(publisher.to_json()),
                ..row("noarch", "2.0", 0, 2, None)
            },
            row("noarch", "1.0", 0, 1, None),
        ];
        let listed = package_records("chan", "pkg", rows);
        assert_eq!(listed.records[0].provenance, Some(publisher));
        assert_eq!(listed.records[1].provenance, None);
        let json = serde_json::to_value(&listed.records[1]).unwrap();
        assert_eq!(json["provenance"], Value::Null);
    }
}
