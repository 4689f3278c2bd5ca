//! Reading and validating conda package files as they stream in.
//!
//! [`PackageReader`] takes the file chunk by chunk, hashes every byte and pulls out the
//! `info/` metadata; [`Package::from_parts`] then checks that metadata against the file name and
//! turns it into the repodata record.

mod conda_zip;
mod tar_bz2;
mod tar_scan;

use md5::Md5;
use rattler_conda_types::{
    package::{
        ArchiveIdentifier, CondaArchiveIdentifier, CondaArchiveType, IndexJson, PackageMetadata,
    },
    MatchSpec, PackageName, ParseStrictness,
};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::names::{check_package_filename, check_subdir};
use crate::repodata::Record;
use conda_zip::CondaScanner;
use tar_bz2::TarBz2Scanner;
pub use tar_scan::{padding_for, InfoFiles, TarEntryKind, TarHeader, TarPaths};

/// Why a file is not an acceptable conda package. Both kinds are the uploader's to fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PackageError {
    /// The archive itself cannot be read.
    #[error("{0}")]
    Corrupt(String),
    /// The archive reads, but its content is not a valid package.
    #[error("{0}")]
    Invalid(String),
}

/// Keys conda-index drops from `info/index.json` when it makes a repodata record.
const DROPPED_INDEX_KEYS: [&str; 10] = [
    "arch",
    "has_prefix",
    "mtime",
    "platform",
    "ucs",
    "requires_features",
    "binstar",
    "target-triplet",
    "machine",
    "operatingsystem",
];

/// Checksums and size of a whole file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    pub sha256: String,
    pub md5: String,
    pub size: u64,
}

#[derive(Default)]
struct Digester {
    sha256: Sha256,
    md5: Md5,
    size: u64,
}

impl Digester {
    fn update(&mut self, chunk: &[u8]) {
        self.sha256.update(chunk);
        self.md5.update(chunk);
        self.size += chunk.len() as u64;
    }

    fn finish(self) -> Digests {
        Digests {
            sha256: hex::encode(self.sha256.finalize()),
            md5: hex::encode(self.md5.finalize()),
            size: self.size,
        }
    }
}

enum Scanner {
    Conda(Box<CondaScanner>),
    TarBz2(Box<TarBz2Scanner>),
}

/// What was read from an archive's metadata.
#[derive(Debug, Clone)]
pub struct ArchiveMetadata {
    pub info: InfoFiles,
    /// The names of a `.conda` file's info and payload components; `None` for a `.tar.bz2`.
    pub components: Option<ComponentNames>,
}

/// The zip entry names of a `.conda` file's two tar components.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentNames {
    pub info: String,
    pub payload: String,
}

/// Hashes a package file and extracts its metadata in one pass over its bytes.
pub struct PackageReader {
    digester: Digester,
    scanner: PackageScanner,
}

impl PackageReader {
    pub fn new(archive_type: CondaArchiveType) -> Self {
        Self {
            digester: Digester::default(),
            scanner: PackageScanner::new(archive_type),
        }
    }

    pub fn update(&mut self, chunk: &[u8]) {
        self.digester.update(chunk);
        self.scanner.feed(chunk);
    }

    /// The digests of everything fed, and the metadata if the archive was readable.
    pub fn finish(self) -> (Digests, Result<ArchiveMetadata, PackageError>) {
        let digests = self.digester.finish();
        let metadata = self.scanner.finish(digests.size);
        (digests, metadata)
    }
}

/// Extracts a package file's metadata from its bytes in order, and says which of them it
/// need not see: the caller hashes the file elsewhere and hands over only those it needs.
pub struct PackageScanner {
    archive_type: CondaArchiveType,
    /// The first error stops the scan for good: a checksum mismatch, found by whoever hashes
    /// the bytes, is reported before a broken archive, since it means they were damaged.
    scanner: Result<Scanner, PackageError>,
}

impl PackageScanner {
    pub fn new(archive_type: CondaArchiveType) -> Self {
        let scanner = match archive_type {
            CondaArchiveType::Conda => Scanner::Conda(Box::default()),
            CondaArchiveType::TarBz2 => Scanner::TarBz2(Box::default()),
        };
        Self {
            archive_type,
            scanner: Ok(scanner),
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        let result = match &mut self.scanner {
            Ok(Scanner::Conda(scanner)) => scanner.feed(chunk),
            Ok(Scanner::TarBz2(scanner)) => scanner.feed(chunk),
            Err(_) => Ok(()),
        };
        if let Err(error) = result {
            self.scanner = Err(error);
        }
    }

    /// How many of the next bytes the scan does not need to see: those of a `.conda` entry it
    /// only steps over, or all of them ([`u64::MAX`]) once no byte can change its result.
    pub fn skippable(&self) -> u64 {
        match &self.scanner {
            Ok(Scanner::Conda(scanner)) => scanner.skippable(),
            Ok(Scanner::TarBz2(scanner)) if !scanner.is_done() => 0,
            Ok(Scanner::TarBz2(_)) | Err(_) => u64::MAX,
        }
    }

    /// Steps over `count` bytes unseen, at most [`Self::skippable`].
    pub fn skip(&mut self, count: u64) {
        if let Ok(Scanner::Conda(scanner)) = &mut self.scanner {
            scanner.skip(count);
        }
    }

    /// The subdir the package belongs in, as soon as its `info/index.json` has been read (and
    /// names one): a file's key is known before the rest of it arrives. [`Package::from_parts`]
    /// derives the same from the same bytes.
    pub fn subdir(&self) -> Option<String> {
        let index = match &self.scanner {
            Ok(Scanner::Conda(scanner)) => scanner.index(),
            Ok(Scanner::TarBz2(scanner)) => scanner.index(),
            Err(_) => None,
        }?;
        let index = serde_json::from_slice::<IndexJson>(index).ok()?;
        subdir_of(&index).ok()
    }

    /// The metadata, if the archive of `size` bytes was readable.
    pub fn finish(self, size: u64) -> Result<ArchiveMetadata, PackageError> {
        let extension = self.archive_type.extension();
        let metadata = if size == 0 {
            Err(PackageError::Corrupt("the file is empty".into()))
        } else {
            self.scanner.and_then(|scanner| match scanner {
                Scanner::Conda(scanner) => {
                    let (metadata_json, info, components) = scanner.finish()?;
                    check_conda_metadata(&metadata_json)?;
                    Ok(ArchiveMetadata {
                        info,
                        components: Some(components),
                    })
                }
                Scanner::TarBz2(scanner) => Ok(ArchiveMetadata {
                    info: scanner.finish()?,
                    components: None,
                }),
            })
        };
        metadata.map_err(|error| match error {
            PackageError::Corrupt(msg) => {
                PackageError::Corrupt(format!("not a valid {extension} file: {msg}"))
            }
            invalid => invalid,
        })
    }
}

fn check_conda_metadata(bytes: &[u8]) -> Result<(), PackageError> {
    match serde_json::from_slice::<PackageMetadata>(bytes) {
        Ok(metadata) if metadata.conda_pkg_format_version == 2 => Ok(()),
        Err(e) if !e.is_data() => Err(PackageError::Invalid(format!(
            "metadata.json is not valid JSON ({e})"
        ))),
        _ => Err(PackageError::Invalid(
            "metadata.json does not declare conda_pkg_format_version 2".into(),
        )),
    }
}

/// A validated package: where it belongs and the record that describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Package {
    pub filename: String,
    pub name: String,
    pub subdir: String,
    /// The repodata record, as conda-index would write it for this file.
    pub record: Record,
    /// `info/run_exports.json`, when the package has one.
    pub run_exports: Option<Value>,
    /// `info/about.json`, when the package has one small enough to keep.
    pub about: Option<Value>,
}

/// How far a package's `timestamp` may lie ahead of the server's clock: the builder's clock may
/// run a little fast.
pub const MAX_CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;

/// Seconds since the epoch below which conda reads an `index.json` `timestamp` as seconds
/// (year 9999); above it, as milliseconds, which is what conda-build writes.
const LATEST_TIMESTAMP_IN_SECONDS: f64 = 253_402_300_799.0;

impl Package {
    /// Checks the metadata against the file name and builds the record. `received_at` (ms
    /// since the epoch) is when the upload arrived: a package built later is refused.
    pub fn from_parts(
        filename: &str,
        digests: &Digests,
        metadata: ArchiveMetadata,
        received_at: u64,
    ) -> Result<Self, PackageError> {
        let info = metadata.info;
        let index_bytes = info
            .index
            .ok_or_else(|| PackageError::Invalid("the package has no info/index.json".into()))?;
        let Value::Object(mut fields) = parse_json("info/index.json", &index_bytes)? else {
            return Err(PackageError::Invalid(
                "info/index.json is not a JSON object".into(),
            ));
        };
        let invalid_index = |e: serde_json::Error| {
            PackageError::Invalid(format!("info/index.json is not valid: {e}"))
        };
        let index = IndexJson::deserialize(&fields).map_err(invalid_index)?;
        let name = index.name.as_source().to_owned();
        PackageName::try_from(name.as_str())
            .map_err(|e| PackageError::Invalid(format!("invalid package name '{name}': {e}")))?;
        // Clients look names up lower-cased: a name with capitals would never be found.
        if name.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(PackageError::Invalid(format!(
                "the package name '{}' has upper-case letters; conda package names are lower case",
                shortened(&name)
            )));
        }
        check_timestamp(fields.get("timestamp"), received_at)?;
        let archive_type = check_package_filename(filename).map_err(PackageError::Invalid)?;
        let described = CondaArchiveIdentifier {
            identifier: ArchiveIdentifier {
                name: name.clone(),
                version: index.version.as_str().into_owned(),
                build_string: index.build.as_str().to_owned(),
            },
            archive_type,
        }
        .to_file_name();
        if described != filename {
            return Err(PackageError::Invalid(format!(
                "the file name does not match info/index.json, which describes '{described}'"
            )));
        }
        if let Some(components) = &metadata.components {
            check_component_names(filename, components)?;
        }
        let subdir = subdir_of(&index)?;
        for (field, specs) in [
            ("depends", &index.depends),
            ("constrains", &index.constrains),
        ] {
            check_match_specs(field, specs)?;
        }

        for key in DROPPED_INDEX_KEYS {
            fields.remove(key);
        }
        // The channel index sets the time of indexing when it stores the record.
        fields.remove("indexed_timestamp");
        fields.insert("md5".into(), digests.md5.clone().into());
        fields.insert("sha256".into(), digests.sha256.clone().into());
        fields.insert("size".into(), digests.size.into());
        let record = Record::deserialize(fields).map_err(invalid_index)?;

        let run_exports = info
            .run_exports
            .map(|bytes| parse_json("info/run_exports.json", &bytes))
            .transpose()?;
        // about.json is informational: an unreadable one is not a reason to refuse a package.
        let about = info
            .about
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .filter(Value::is_object);
        Ok(Self {
            filename: filename.to_owned(),
            name,
            subdir,
            record,
            run_exports,
            about,
        })
    }
}

/// CEP 47: `exclude-newer` and cooldowns trust a package's `timestamp`, so one in the future
/// (beyond [`MAX_CLOCK_SKEW_MS`]) is refused. Seconds and milliseconds are both read, as conda
/// reads them.
fn check_timestamp(timestamp: Option<&Value>, received_at: u64) -> Result<(), PackageError> {
    // A timestamp that is not a number was refused when index.json was read.
    let Some((value, number)) = timestamp.and_then(|v| Some((v, v.as_f64()?))) else {
        return Ok(());
    };
    let millis = if number > LATEST_TIMESTAMP_IN_SECONDS {
        number
    } else {
        number * 1000.0
    };
    if millis > (received_at + MAX_CLOCK_SKEW_MS) as f64 {
        return Err(PackageError::Invalid(format!(
            "info/index.json: the timestamp '{value}' lies in the future (the server's time is {received_at} ms since the epoch); rebuild the package with a correct clock"
        )));
    }
    Ok(())
}

/// Every entry must be a match spec, parsed in the lenient mode, the one meant for existing
/// metadata in historical syntax. It still refuses what no reading makes sense of
/// (`foo >=>=1`); the strict mode would also refuse forms that old packages carry and clients
/// install (nano's `ncurses 5.9`).
fn check_match_specs(field: &str, specs: &[String]) -> Result<(), PackageError> {
    for spec in specs {
        MatchSpec::from_str(spec, ParseStrictness::Lenient).map_err(|e| {
            PackageError::Invalid(format!(
                "info/index.json: the {field} entry '{}' is not a valid match spec ({})",
                shortened(spec),
                shortened(&e.to_string())
            ))
        })?;
    }
    Ok(())
}

/// A value quoted in an error, cut to keep the answer short.
fn shortened(value: &str) -> String {
    const MAX_CHARS: usize = 100;
    match value.char_indices().nth(MAX_CHARS) {
        Some((end, _)) => format!("{}…", &value[..end]),
        None => value.to_owned(),
    }
}

/// A `.conda` file's components are named for its file name: conda's extractor
/// (conda-package-handling) opens `info-<stem>.tar.zst` and `pkg-<stem>.tar.zst` by name and
/// fails on a file whose components are named otherwise.
fn check_component_names(filename: &str, components: &ComponentNames) -> Result<(), PackageError> {
    let stem = filename.strip_suffix(".conda").unwrap_or(filename);
    for (found, kind) in [(&components.info, "info"), (&components.payload, "pkg")] {
        let expected = format!("{kind}-{stem}.tar.zst");
        if *found != expected {
            return Err(PackageError::Invalid(format!(
                "the .conda file's component '{}' is named for another file; for '{filename}' it must be '{expected}'",
                shortened(found)
            )));
        }
    }
    Ok(())
}

fn parse_json(path: &str, bytes: &[u8]) -> Result<Value, PackageError> {
    serde_json::from_slice(bytes)
        .map_err(|e| PackageError::Invalid(format!("{path} is not valid JSON ({e})")))
}

/// The subdir a package belongs in: its `subdir` field, else derived from `platform` and
/// `arch` the way conda does, else `noarch` for noarch packages.
fn subdir_of(index: &IndexJson) -> Result<String, PackageError> {
    fn field(value: &Option<String>) -> Option<&str> {
        value.as_deref().filter(|s| !s.is_empty())
    }
    let subdir = if let Some(subdir) = field(&index.subdir) {
        subdir.to_owned()
    } else if let (Some(platform), Some(arch)) = (field(&index.platform), field(&index.arch)) {
        let bits = match arch {
            "x86_64" => "64",
            "x86" => "32",
            other => other,
        };
        format!("{platform}-{bits}")
    } else if !index.noarch.is_none() {
        "noarch".to_owned()
    } else {
        return Err(PackageError::Invalid(
            "info/index.json names no subdir, no platform and arch, and is not noarch".into(),
        ));
    };
    check_subdir(&subdir).map_err(PackageError::Invalid)?;
    Ok(subdir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repodata::record_json;

    fn package(index_json: &str, filename: &str) -> Result<Package, PackageError> {
        let digests = Digests {
            sha256: "ab".repeat(32),
            md5: "cd".repeat(16),
            size: 42,
        };
        let info = InfoFiles {
            index: Some(index_json.as_bytes().to_vec()),
            ..InfoFiles::default()
        };
        Package::from_parts(
            filename,
            &digests,
            ArchiveMetadata {
                info,
                components: None,
            },
            NOW,
        )
    }

    /// 2026-12-01, in milliseconds.
    const NOW: u64 = 1_796_083_200_000;

    #[test]
    fn upper_case_names_are_refused() {
        let error = package(
            r#"{"name":"Foo","version":"1.0","build":"0","build_number":0,"subdir":"noarch"}"#,
            "Foo-1.0-0.conda",
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("'Foo' has upper-case"),
            "{error}"
        );
    }

    #[test]
    fn timestamps_in_the_future_are_refused() {
        let with = |timestamp: &str| {
            package(
                &format!(
                    r#"{{"name":"a","version":"1.0","build":"0","build_number":0,"subdir":"noarch","timestamp":{timestamp}}}"#
                ),
                "a-1.0-0.conda",
            )
        };
        // Milliseconds and seconds, within the allowed skew.
        assert!(with(&(NOW + MAX_CLOCK_SKEW_MS).to_string()).is_ok());
        assert!(with(&((NOW + MAX_CLOCK_SKEW_MS) / 1000).to_string()).is_ok());
        assert!(with("1500000000").is_ok());
        assert!(with("null").is_ok());
        let ahead = (NOW + MAX_CLOCK_SKEW_MS + 1000).to_string();
        let error = with(&ahead).unwrap_err().to_string();
        assert!(
            error.contains(&format!("timestamp '{ahead}' lies in the future")),
            "{error}"
        );
        assert!(with(&((NOW + 3_600_000) / 1000).to_string()).is_err());
        // Not a number: index.json itself is refused.
        assert!(with(r#""yesterday""#).is_err());
    }

    #[test]
    fn record_carries_every_field_conda_index_keeps() {
        let package = package(
            r#"{"name":"a","version":"1.0","build":"h_0","build_number":0,"platform":"osx",
                "arch":"arm64","subdir":null,"indexed_timestamp":1,"md5":"0","depends":["b"],
                "x":{"z":1.5,"y":null}}"#,
            "a-1.0-h_0.conda",
        )
        .unwrap();
        assert_eq!(package.subdir, "osx-arm64");
        assert_eq!(
            record_json(&package.record),
            format!(
                r#"{{"build":"h_0","build_number":0,"depends":["b"],"md5":"{}","name":"a","sha256":"{}","size":42,"version":"1.0","x":{{"y":null,"z":1.5}}}}"#,
                "cd".repeat(16),
                "ab".repeat(32)
            )
        );
    }

    #[test]
    fn file_name_must_match_index_json() {
        let index =
            r#"{"name":"a","version":"1.0","build":"h_0","build_number":0,"noarch":"generic"}"#;
        assert_eq!(
            package(index, "a-1.0-h_0.tar.bz2").unwrap().subdir,
            "noarch"
        );
        let err = package(index, "a-1.1-h_0.conda").unwrap_err();
        assert!(
            err.to_string().contains("describes 'a-1.0-h_0.conda'"),
            "{err}"
        );
        assert!(package(index, "a-1.0-h_0.zip").is_err());
    }

    #[test]
    fn depends_and_constrains_must_be_match_specs() {
        let index = |field: &str, spec: &str| {
            serde_json::json!({
                "name": "a", "version": "1.0", "build": "0", "build_number": 0,
                "noarch": "generic", field: ["python >=3.8", spec],
            })
            .to_string()
        };
        // Forms packages carry and clients accept, old-style ones included.
        for spec in [
            "ncurses 5.9",
            "python 2.7*",
            "foo >=1.*",
            "foo 1.0 0",
            "foo >=1,<2|>3",
            "__glibc >=2.17",
            "libgcc-ng >=7.3.0",
            "zlib >=1.2.11,<1.3.0a0",
        ] {
            for field in ["depends", "constrains"] {
                let got = package(&index(field, spec), "a-1.0-0.conda");
                assert!(got.is_ok(), "{field} {spec}: {got:?}");
            }
        }
        let long = format!("foo >={}", "=".repeat(100_000));
        let err = package(&index("depends", &long), "a-1.0-0.conda").unwrap_err();
        assert!(err.to_string().len() < 400, "{err}");
        assert!(err.to_string().contains(&format!("'{}…'", &long[..100])));
        for spec in ["foo >=>=1", "bar ==<<2", "foo <=>1", "", "foo >=1 ["] {
            for field in ["depends", "constrains"] {
                let err = package(&index(field, spec), "a-1.0-0.conda").unwrap_err();
                assert!(
                    err.to_string().contains(&format!(
                        "the {field} entry '{spec}' is not a valid match spec"
                    )),
                    "{err}"
                );
            }
        }
    }

    #[test]
    fn conda_components_must_be_named_for_the_file() {
        let index =
            r#"{"name":"a","version":"1.0","build":"h_0","build_number":0,"noarch":"generic"}"#;
        let read = |info: &str, payload: &str| {
            Package::from_parts(
                "a-1.0-h_0.conda",
                &Digests {
                    sha256: "ab".repeat(32),
                    md5: "cd".repeat(16),
                    size: 42,
                },
                ArchiveMetadata {
                    info: InfoFiles {
                        index: Some(index.as_bytes().to_vec()),
                        ..InfoFiles::default()
                    },
                    components: Some(ComponentNames {
                        info: info.into(),
                        payload: payload.into(),
                    }),
                },
                NOW,
            )
        };
        assert!(read("info-a-1.0-h_0.tar.zst", "pkg-a-1.0-h_0.tar.zst").is_ok());
        for (info, payload, named) in [
            (
                "info-b-1.0-h_0.tar.zst",
                "pkg-a-1.0-h_0.tar.zst",
                "info-b-1.0-h_0.tar.zst",
            ),
            (
                "info-a-1.0-h_0.tar.zst",
                "pkg-a-1.0-h_1.tar.zst",
                "pkg-a-1.0-h_1.tar.zst",
            ),
            (
                "info-a-1.0-h_0.conda.tar.zst",
                "pkg-a-1.0-h_0.tar.zst",
                "info-a-1.0-h_0.conda.tar.zst",
            ),
        ] {
            let err = read(info, payload).unwrap_err();
            assert!(
                err.to_string()
                    .contains(&format!("component '{named}' is named for another file")),
                "{err}"
            );
        }
    }

    #[test]
    fn metadata_json_must_declare_format_2() {
        assert_eq!(
            check_conda_metadata(br#"{"conda_pkg_format_version": 2}"#),
            Ok(())
        );
        for (bytes, reason) in [
            (&b"{"[..], "not valid JSON"),
            (br#"{"conda_pkg_format_version": 1}"#, "does not declare"),
            (br#"{"conda_pkg_format_version": "2"}"#, "does not declare"),
            (b"{}", "does not declare"),
        ] {
            let err = check_conda_metadata(bytes).unwrap_err();
            assert!(err.to_string().contains(reason), "{err}");
        }
    }
}
