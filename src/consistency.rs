//! The consistency check of one channel, like a file system's fsck: which disagreements between
//! its R2 objects, its index rows and its artifacts exist, given what was listed, read and
//! rebuilt. The channel index gathers the facts (`edge::channel_index::check`); this module
//! decides what they mean and what a repair does about them.

use std::collections::{BTreeMap, BTreeSet};

use rmpv::Value as Msgpack;
use serde::{Deserialize, Serialize};

use crate::names::{ChannelFile, INDEX_FILES};

/// How many examples each kind of disagreement reports.
pub const EXAMPLES: usize = 5;

/// A kind of disagreement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A row whose package object is missing or has another size. Not repairable by a
    /// rebuild: delete the record, or upload the file again.
    RecordWithoutObject,
    /// A package object that no row names, or an attestation object whose package object is
    /// gone; a repair deletes it.
    ObjectWithoutRecord,
    /// The shards table names a shard whose object is missing.
    ShardMissing,
    /// A name's current shard is not the one its rows build.
    ShardStale,
    /// A name with rows but no shard.
    NameWithoutShard,
    /// A shard for a name without rows.
    ShardWithoutRows,
    /// The served shard index does not map names to the shards table's hashes.
    ShardIndexMismatch,
    /// repodata.json or its .zst is not what the rows build.
    RepodataMismatch,
    /// run_exports.json is not what the rows build.
    RunExportsMismatch,
    /// A staging object older than the grace period: an upload that never finished.
    StaleStaging,
}

impl Kind {
    /// Whether rebuilding the subdir's artifacts repairs it.
    pub fn rebuilt(self) -> bool {
        !matches!(
            self,
            Kind::RecordWithoutObject | Kind::ObjectWithoutRecord | Kind::StaleStaging
        )
    }
}

/// How many disagreements of one kind, and a few of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub count: u64,
    pub examples: Vec<String>,
}

/// What a repair did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repaired {
    /// Package names marked for a new shard.
    pub names_marked: u64,
    /// Subdirs whose artifacts were rebuilt.
    pub subdirs_rebuilt: Vec<String>,
    /// Orphan package objects deleted.
    pub objects_deleted: u64,
    /// Stale staging objects deleted.
    pub staging_deleted: u64,
}

/// Work the index has queued, which is not a disagreement: the next build does it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub dirty_names: u64,
    pub stale_subdirs: Vec<String>,
}

/// The answer of a check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReport {
    /// Whether no disagreement was found (before any repair).
    pub consistent: bool,
    /// Per kind found, keyed by its snake_case name; kinds not found are left out.
    pub findings: BTreeMap<Kind, Finding>,
    pub pending: Pending,
    /// Present when the check was asked to repair.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repaired: Option<Repaired>,
}

/// What a check gathers as it goes: the findings, and what a repair would do about them.
#[derive(Debug, Default)]
pub struct Check {
    findings: BTreeMap<Kind, Finding>,
    /// (subdir, name) whose shard a repair rebuilds.
    pub marks: BTreeSet<(String, String)>,
    /// (subdir, name) whose shards row a repair removes first: their shard object is missing,
    /// and against the row their rows would build "the same shard" and write nothing.
    pub forget_shards: BTreeSet<(String, String)>,
    /// Subdirs whose monolithic files a repair rebuilds.
    pub stale: BTreeSet<String>,
    /// Objects a repair deletes: orphan packages and stale staging objects.
    pub orphans: Vec<String>,
    pub staging: Vec<String>,
}

impl Check {
    /// Records one disagreement in `subdir` (empty for staging), described by `example`.
    pub fn found(&mut self, kind: Kind, subdir: &str, example: String) {
        let finding = self.findings.entry(kind).or_default();
        finding.count += 1;
        if finding.examples.len() < EXAMPLES {
            finding.examples.push(example);
        }
        if kind.rebuilt() {
            self.stale.insert(subdir.to_owned());
        }
    }

    /// Compares one package name's shard: `built` is the hash its rows build (`None` without
    /// rows), `current` the shards table's, `object` whether that shard's object exists.
    pub fn shard(
        &mut self,
        subdir: &str,
        name: &str,
        built: Option<&str>,
        current: Option<&str>,
        object: bool,
    ) {
        let example = || format!("{subdir}/{name}");
        let kind = match (built, current) {
            (None, None) => return,
            (Some(_), None) => Kind::NameWithoutShard,
            (None, Some(_)) => Kind::ShardWithoutRows,
            (Some(built), Some(current)) if built != current => Kind::ShardStale,
            (Some(_), Some(_)) if !object => {
                self.forget_shards
                    .insert((subdir.to_owned(), name.to_owned()));
                Kind::ShardMissing
            }
            (Some(_), Some(_)) => return,
        };
        self.found(kind, subdir, example());
        self.marks.insert((subdir.to_owned(), name.to_owned()));
    }

    /// Compares the served shard index (`None`: no object) with the shards table. A subdir
    /// without names needs none (clients read a missing one as empty).
    pub fn shard_index(
        &mut self,
        subdir: &str,
        table: &BTreeMap<String, String>,
        served: Option<Result<BTreeMap<String, String>, String>>,
    ) {
        let differing: Vec<String> = match served {
            None if table.is_empty() => return,
            None => {
                self.found(
                    Kind::ShardIndexMismatch,
                    subdir,
                    format!("{subdir}: missing"),
                );
                table.keys().take(1).cloned().collect()
            }
            Some(Err(error)) => {
                self.found(
                    Kind::ShardIndexMismatch,
                    subdir,
                    format!("{subdir}: unreadable: {error}"),
                );
                table.keys().take(1).cloned().collect()
            }
            Some(Ok(served)) => {
                let differing: Vec<String> = table
                    .iter()
                    .filter(|(name, hash)| served.get(*name) != Some(hash))
                    .chain(served.iter().filter(|(name, _)| !table.contains_key(*name)))
                    .map(|(name, _)| name.clone())
                    .collect();
                if let Some(name) = differing.first() {
                    let example =
                        format!("{subdir}: {} names differ, e.g. {name}", differing.len());
                    self.found(Kind::ShardIndexMismatch, subdir, example);
                }
                differing
            }
        };
        // The shard index is rewritten by a build that has a name to build.
        for name in differing.into_iter().take(1) {
            self.marks.insert((subdir.to_owned(), name));
        }
    }

    /// Compares a served monolithic file's SHA-256 (`None`: no object) with the rows'.
    pub fn document(
        &mut self,
        subdir: &str,
        file: &str,
        served: Option<[u8; 32]>,
        built: [u8; 32],
    ) {
        if served == Some(built) {
            return;
        }
        let kind = if file == "run_exports.json" {
            Kind::RunExportsMismatch
        } else {
            Kind::RepodataMismatch
        };
        let state = if served.is_some() {
            "differs"
        } else {
            "missing"
        };
        self.found(kind, subdir, format!("{subdir}/{file}: {state}"));
    }

    /// A package row against its object's size (`None`: no object).
    pub fn record(&mut self, subdir: &str, filename: &str, size: Option<u64>, object: Option<u64>) {
        if object.is_some() && object == size {
            return;
        }
        let state = match object {
            None => "no object".to_owned(),
            Some(object) => format!(
                "record says {} bytes, object has {object}",
                size.unwrap_or(0)
            ),
        };
        self.found(
            Kind::RecordWithoutObject,
            subdir,
            format!("{subdir}/{filename}: {state}"),
        );
    }

    /// A package object no row names.
    pub fn orphan(&mut self, key: String) {
        self.found(Kind::ObjectWithoutRecord, "", key.clone());
        self.orphans.push(key);
    }

    /// A staging object that only an upload that died can have left: the one the alarm's sweep
    /// would delete ([`crate::index_plan::sweep_staging`], `STAGING_GRACE_SECONDS`).
    pub fn stale_staging(&mut self, key: String) {
        self.found(Kind::StaleStaging, "", key.clone());
        self.staging.push(key);
    }

    /// The subdirs a repair rebuilds: those with a rebuildable finding or a name to build.
    pub fn subdirs_to_rebuild(&self) -> BTreeSet<String> {
        let mut subdirs: BTreeSet<String> = self
            .stale
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect();
        subdirs.extend(self.marks.iter().map(|(subdir, _)| subdir.clone()));
        subdirs
    }

    pub fn report(&self, pending: Pending) -> CheckReport {
        CheckReport {
            consistent: self.findings.is_empty(),
            findings: self.findings.clone(),
            pending,
            repaired: None,
        }
    }
}

/// A channel object, by its key relative to `<channel>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object<'a> {
    Package {
        subdir: &'a str,
        filename: &'a str,
    },
    Shard {
        subdir: &'a str,
        hash: &'a str,
    },
    /// The attestations of the package `filename` (`<filename>.v0.sigs`).
    Attestation {
        subdir: &'a str,
        filename: &'a str,
    },
    /// One of [`INDEX_FILES`].
    Index {
        subdir: &'a str,
        file: &'a str,
    },
    /// Anything else (never served, never written by this server).
    Other,
}

impl<'a> Object<'a> {
    pub fn of(relative: &'a str) -> Self {
        let Some((subdir, path)) = relative.split_once('/') else {
            return Object::Other;
        };
        match ChannelFile::of(path) {
            Some(ChannelFile::Package) => Object::Package {
                subdir,
                filename: path,
            },
            Some(ChannelFile::Shard) => Object::Shard {
                subdir,
                hash: &path["shards/".len()..path.len() - ".msgpack.zst".len()],
            },
            Some(ChannelFile::Attestation) => Object::Attestation {
                subdir,
                filename: crate::attestation::sigs_package(path).unwrap_or(path),
            },
            Some(ChannelFile::Index) => Object::Index {
                subdir,
                file: INDEX_FILES
                    .iter()
                    .find(|f| **f == path)
                    .copied()
                    .unwrap_or(path),
            },
            None => Object::Other,
        }
    }
}

/// The name → hex hash map of a compressed shard index.
pub fn read_shard_index(compressed: &[u8]) -> Result<BTreeMap<String, String>, String> {
    let raw = zstd::decode_all(compressed).map_err(|e| format!("zstd: {e}"))?;
    let document =
        rmpv::decode::read_value(&mut raw.as_slice()).map_err(|e| format!("msgpack: {e}"))?;
    let Some(Msgpack::Map(shards)) = document
        .as_map()
        .and_then(|map| map.iter().find(|(k, _)| k.as_str() == Some("shards")))
        .map(|(_, v)| v.clone())
    else {
        return Err("no shards map".into());
    };
    shards
        .into_iter()
        .map(|(name, hash)| match (name.as_str(), hash.as_slice()) {
            (Some(name), Some(hash)) => Ok((name.to_owned(), hex::encode(hash))),
            _ => Err("an entry is not name → binary hash".into()),
        })
        .collect()
}

/// The check's options, from the request's query: `repair=true|1|false|0`. How old a stale
/// staging object is, is not an option: the check and the alarm's sweep read the one setting,
/// `STAGING_GRACE_SECONDS`, so the check reports what the sweep would delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckOptions {
    pub repair: bool,
}

impl CheckOptions {
    pub fn from_query<K: AsRef<str>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, String> {
        let mut options = CheckOptions { repair: false };
        for (key, value) in pairs {
            if key.as_ref() == "repair" {
                options.repair = match value.as_ref() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    other => return Err(format!("repair must be true or false, not {other:?}")),
                };
            }
        }
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shards::build_index;

    fn map(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
        entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_consistent_channel_reports_nothing() {
        let mut check = Check::default();
        check.shard("noarch", "a", Some("aa"), Some("aa"), true);
        check.shard("noarch", "gone", None, None, false);
        check.shard_index(
            "noarch",
            &map(&[("a", "aa")]),
            Some(Ok(map(&[("a", "aa")]))),
        );
        check.shard_index("linux-64", &BTreeMap::new(), None);
        check.document("noarch", "repodata.json", Some([1; 32]), [1; 32]);
        check.record("noarch", "a-1-0.conda", Some(10), Some(10));
        let report = check.report(Pending::default());
        assert!(report.consistent);
        assert!(report.findings.is_empty());
        assert!(check.subdirs_to_rebuild().is_empty() && check.orphans.is_empty());
    }

    #[test]
    fn each_shard_disagreement_marks_its_name() {
        let mut check = Check::default();
        check.shard("noarch", "new", Some("aa"), None, false);
        check.shard("noarch", "old", None, Some("bb"), true);
        check.shard("noarch", "stale", Some("aa"), Some("bb"), true);
        check.shard("linux-64", "lost", Some("cc"), Some("cc"), false);
        let report = check.report(Pending::default());
        for kind in [
            Kind::NameWithoutShard,
            Kind::ShardWithoutRows,
            Kind::ShardStale,
            Kind::ShardMissing,
        ] {
            assert_eq!(report.findings[&kind].count, 1, "{kind:?}");
        }
        assert_eq!(
            report.findings[&Kind::ShardMissing].examples,
            ["linux-64/lost"]
        );
        assert_eq!(check.marks.len(), 4);
        assert_eq!(
            check.forget_shards,
            BTreeSet::from([("linux-64".to_owned(), "lost".to_owned())])
        );
        assert_eq!(
            check.subdirs_to_rebuild(),
            BTreeSet::from(["linux-64".to_owned(), "noarch".to_owned()])
        );
    }

    #[test]
    fn shard_index_differences() {
        let table = map(&[("a", "aa"), ("b", "bb")]);
        let mut check = Check::default();
        check.shard_index("noarch", &table, Some(Ok(map(&[("a", "aa"), ("c", "cc")]))));
        check.shard_index("linux-64", &table, None);
        check.shard_index("osx-64", &table, Some(Err("zstd: bad".into())));
        let finding = &check.report(Pending::default()).findings[&Kind::ShardIndexMismatch];
        assert_eq!(finding.count, 3);
        assert_eq!(finding.examples[0], "noarch: 2 names differ, e.g. b");
        assert!(check.marks.contains(&("noarch".into(), "b".into())));
        assert!(check.marks.contains(&("linux-64".into(), "a".into())));
    }

    #[test]
    fn documents_records_and_objects() {
        let mut check = Check::default();
        check.document("noarch", "repodata.json", Some([1; 32]), [2; 32]);
        check.document("noarch", "repodata.json.zst", None, [2; 32]);
        check.document("noarch", "run_exports.json", Some([1; 32]), [2; 32]);
        check.record("noarch", "a-1-0.conda", Some(10), None);
        check.record("noarch", "b-1-0.conda", Some(10), Some(9));
        check.orphan("c/noarch/z-1-0.conda".into());
        check.stale_staging(".staging/c/old".into());
        let report = check.report(Pending::default());
        assert!(!report.consistent);
        assert_eq!(report.findings[&Kind::RepodataMismatch].count, 2);
        assert_eq!(
            report.findings[&Kind::RepodataMismatch].examples[1],
            "noarch/repodata.json.zst: missing"
        );
        assert_eq!(report.findings[&Kind::RunExportsMismatch].count, 1);
        assert_eq!(
            report.findings[&Kind::RecordWithoutObject].examples,
            [
                "noarch/a-1-0.conda: no object",
                "noarch/b-1-0.conda: record says 10 bytes, object has 9"
            ]
        );
        assert_eq!(check.orphans, ["c/noarch/z-1-0.conda"]);
        assert_eq!(check.staging, [".staging/c/old"]);
        // Neither records nor orphans ask for a rebuild: a build would not change them.
        assert_eq!(
            check.subdirs_to_rebuild(),
            BTreeSet::from(["noarch".to_owned()])
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["findings"]["stale_staging"]["count"], 1);
    }

    #[test]
    fn examples_are_capped() {
        let mut check = Check::default();
        for i in 0..12 {
            check.orphan(format!("c/noarch/x-{i}-0.conda"));
        }
        let finding = &check.report(Pending::default()).findings[&Kind::ObjectWithoutRecord];
        assert_eq!(finding.count, 12);
        assert_eq!(finding.examples.len(), EXAMPLES);
        assert_eq!(check.orphans.len(), 12);
    }

    #[test]
    fn objects_are_classified() {
        let hash = "a".repeat(64);
        let shard = format!("noarch/shards/{hash}.msgpack.zst");
        assert_eq!(
            Object::of("noarch/a-1-0.conda"),
            Object::Package {
                subdir: "noarch",
                filename: "a-1-0.conda"
            }
        );
        assert_eq!(
            Object::of(&shard),
            Object::Shard {
                subdir: "noarch",
                hash: &hash
            }
        );
        assert_eq!(
            Object::of("linux-64/repodata.json.zst"),
            Object::Index {
                subdir: "linux-64",
                file: "repodata.json.zst"
            }
        );
        assert_eq!(
            Object::of("noarch/a-1-0.conda.v0.sigs"),
            Object::Attestation {
                subdir: "noarch",
                filename: "a-1-0.conda"
            }
        );
        assert_eq!(Object::of("noarch/notes.txt"), Object::Other);
        assert_eq!(Object::of("stray"), Object::Other);
    }

    #[test]
    fn shard_index_is_read_back() {
        let index = build_index("noarch", "2026-01-01T00:00:00Z", &[("a".into(), [1; 32])]);
        assert_eq!(
            read_shard_index(&index).unwrap(),
            map(&[("a", &"01".repeat(32))])
        );
        assert!(read_shard_index(b"not zstd").is_err());
    }

    #[test]
    fn options_from_the_query() {
        let none: [(&str, &str); 0] = [];
        assert_eq!(
            CheckOptions::from_query(none).unwrap(),
            CheckOptions { repair: false }
        );
        assert!(
            CheckOptions::from_query([("repair", "true")])
                .unwrap()
                .repair
        );
        assert!(!CheckOptions::from_query([("repair", "0")]).unwrap().repair);
        assert!(CheckOptions::from_query([("repair", "yes")]).is_err());
    }
}
