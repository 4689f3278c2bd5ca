//! repodata.json and its records, written the way conda-index writes them: compact, keys sorted
//! at every level.
//!
//! Records are stored already serialized, so the document is assembled from them as they come,
//! in order, without parsing them again or holding the whole channel as values.

use std::collections::BTreeMap;

use rattler_conda_types::{
    package::{BuildString, CondaArchiveType},
    PackageName, VersionWithSource,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// A package's repodata record: its `info/index.json` without the keys conda-index drops, plus
/// the file's checksums and size and, once indexed, the time of indexing (CEP 47).
///
/// Fields the record does not name are carried through untouched in `other`, so a record holds
/// whatever conda-index would write for the same file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub name: PackageName,
    pub version: VersionWithSource,
    pub build: BuildString,
    pub build_number: u64,
    /// Absent in old packages, whose subdir follows from `platform` and `arch`. A null one is
    /// left out too: rattler cannot read a record with a null subdir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdir: Option<String>,
    pub md5: String,
    pub sha256: String,
    pub size: u64,
    /// Set by the channel index when it stores the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indexed_timestamp: Option<u64>,
    /// Every other field, as index.json has it.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// One record, serialized canonically (compact, keys sorted at every level).
pub fn record_json(record: &Record) -> String {
    let value = serde_json::to_value(record).expect("a record serializes to JSON");
    sorted_keys(value).to_string()
}

/// `value` with the keys of every object in sorted order, as conda-index and CEP 16 shards
/// write them.
pub fn sorted_keys(value: Value) -> Value {
    match value {
        // serde_json's Map keeps keys sorted unless its `preserve_order` feature is on; sort
        // explicitly so the output never depends on that, nor on a struct's field order.
        Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(key, value)| (key, sorted_keys(value)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted_keys).collect()),
        other => other,
    }
}

/// The key that lists records of this archive type in repodata.json.
pub fn section_key(archive_type: CondaArchiveType) -> &'static str {
    match archive_type {
        CondaArchiveType::Conda => "packages.conda",
        CondaArchiveType::TarBz2 => "packages",
    }
}

/// zstd level of repodata.json.zst. On a 7.8 MB repodata.json (20,000 records) level 3 took
/// 27 ms for 26.6% of the size, level 16 2.2 s for 23.0% and level 19 4.6 s (native; wasm is
/// slower): above 12 the CPU cost grows a hundredfold for a few percent, which a channel the
/// size of conda-forge's linux-64 (254 MB) could not afford inside one request.
pub const REPODATA_ZSTD_LEVEL: i32 = 3;

/// The record sections of repodata.json, in the order they are written.
const SECTIONS: [CondaArchiveType; 2] = [CondaArchiveType::TarBz2, CondaArchiveType::Conda];

/// Writes a channel index document (repodata.json, run_exports.json) from entries given in
/// order: all `.tar.bz2` files, then all `.conda` files, each group sorted by file name.
pub struct IndexWriter {
    out: String,
    /// Written after the sections, before the closing brace.
    trailer: &'static str,
    /// How many of [`SECTIONS`] have been opened; the last one opened is still open.
    opened: usize,
    section_empty: bool,
}

impl IndexWriter {
    /// repodata.json of `subdir`.
    pub fn repodata(subdir: &str) -> Self {
        Self::new(
            json!({ "subdir": subdir }),
            ",\"removed\":[],\"repodata_version\":1",
        )
    }

    /// run_exports.json (CEP 12) of `subdir`.
    pub fn run_exports(subdir: &str) -> Self {
        Self::new(json!({ "subdir": subdir, "version": 1 }), "")
    }

    fn new(info: Value, trailer: &'static str) -> Self {
        Self {
            out: format!("{{\"info\":{info}"),
            trailer,
            opened: 0,
            section_empty: true,
        }
    }

    /// Adds one entry; `value_json` must be canonical JSON (see [`record_json`]).
    pub fn push(&mut self, filename: &str, value_json: &str) {
        let archive_type = CondaArchiveType::split_str(filename)
            .map_or(CondaArchiveType::TarBz2, |(_, archive_type)| archive_type);
        let section = SECTIONS
            .iter()
            .position(|t| *t == archive_type)
            .unwrap_or(0);
        debug_assert!(
            section + 1 >= self.opened,
            "entries must come grouped by format"
        );
        self.open_through(section);
        if !self.section_empty {
            self.out.push(',');
        }
        self.section_empty = false;
        self.out.push_str(&Value::from(filename).to_string());
        self.out.push(':');
        self.out.push_str(value_json);
    }

    /// Bytes written but not yet taken.
    pub fn pending(&self) -> usize {
        self.out.len()
    }

    /// Takes what was written so far, for writers that stream the document out in parts.
    pub fn take_output(&mut self) -> String {
        std::mem::take(&mut self.out)
    }

    /// Writes the end of the document; nothing may be pushed after it.
    pub fn close(&mut self) {
        self.open_through(SECTIONS.len() - 1);
        self.out.push('}');
        self.out.push_str(self.trailer);
        self.out.push('}');
    }

    pub fn finish(mut self) -> String {
        self.close();
        self.out
    }

    /// Opens every section up to and including `section`, closing the one before each.
    fn open_through(&mut self, section: usize) {
        while self.opened <= section {
            if self.opened > 0 {
                self.out.push('}');
            }
            let key = section_key(SECTIONS[self.opened]);
            self.out.push_str(&format!(",\"{key}\":{{"));
            self.opened += 1;
            self.section_empty = true;
        }
    }
}

/// The run_exports.json entry of one package: `{"run_exports": ...}`, `{}` when it has none.
pub fn run_exports_entry(run_exports_json: Option<&str>) -> String {
    format!("{{\"run_exports\":{}}}", run_exports_json.unwrap_or("{}"))
}

/// The repodata.json of a subdir without packages.
pub fn empty_repodata(subdir: &str) -> String {
    IndexWriter::repodata(subdir).finish()
}

/// The index files of a `noarch` subdir that has no packages yet: every channel has a noarch
/// subdir, since clients test a channel's existence with it. `created_at` (RFC 3339) dates the
/// shard index.
pub fn empty_noarch(filename: &str, created_at: &str) -> Option<Vec<u8>> {
    let repodata = || empty_repodata("noarch").into_bytes();
    match filename {
        "repodata.json" => Some(repodata()),
        "repodata.json.zst" => Some(crate::shards::compress(&repodata(), REPODATA_ZSTD_LEVEL)),
        "run_exports.json" => Some(IndexWriter::run_exports("noarch").finish().into_bytes()),
        "repodata_shards.msgpack.zst" => {
            Some(crate::shards::build_index("noarch", created_at, &[]))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_document_matches_conda_index() {
        assert_eq!(
            empty_repodata("noarch"),
            r#"{"info":{"subdir":"noarch"},"packages":{},"packages.conda":{},"removed":[],"repodata_version":1}"#
        );
    }

    #[test]
    fn sections_and_separators() {
        let mut writer = IndexWriter::repodata("linux-64");
        writer.push("a-1-0.tar.bz2", "{\"x\":1}");
        writer.push("b-1-0.tar.bz2", "{}");
        writer.push("a-1-0.conda", "{}");
        assert_eq!(
            writer.finish(),
            r#"{"info":{"subdir":"linux-64"},"packages":{"a-1-0.tar.bz2":{"x":1},"b-1-0.tar.bz2":{}},"packages.conda":{"a-1-0.conda":{}},"removed":[],"repodata_version":1}"#
        );
        let mut writer = IndexWriter::repodata("noarch");
        writer.push("a-1-0.conda", "{}");
        let mut streamed = writer.take_output();
        streamed.push_str(&writer.finish());
        let parsed: Value = serde_json::from_str(&streamed).unwrap();
        assert_eq!(parsed["packages"], serde_json::json!({}));
        assert_eq!(
            parsed["packages.conda"]["a-1-0.conda"],
            serde_json::json!({})
        );
    }

    #[test]
    fn records_are_sorted_at_every_level() {
        let stored = r#"{"z":1,"version":"1.0","size":3,"sha256":"s","name":"a","md5":"m","build_number":0,"build":"h_0","a":{"y":[{"b":1,"a":2}],"x":null}}"#;
        let mut record: Record = serde_json::from_str(stored).unwrap();
        assert_eq!(
            record_json(&record),
            r#"{"a":{"x":null,"y":[{"a":2,"b":1}]},"build":"h_0","build_number":0,"md5":"m","name":"a","sha256":"s","size":3,"version":"1.0","z":1}"#
        );
        record.indexed_timestamp = Some(7);
        record.subdir = Some("noarch".into());
        let again: Record = serde_json::from_str(&record_json(&record)).unwrap();
        assert_eq!(again, record);
        assert_eq!(
            record_json(&again),
            r#"{"a":{"x":null,"y":[{"a":2,"b":1}]},"build":"h_0","build_number":0,"indexed_timestamp":7,"md5":"m","name":"a","sha256":"s","size":3,"subdir":"noarch","version":"1.0","z":1}"#
        );
    }

    #[test]
    fn section_keys() {
        assert_eq!(section_key(CondaArchiveType::Conda), "packages.conda");
        assert_eq!(section_key(CondaArchiveType::TarBz2), "packages");
    }
}
