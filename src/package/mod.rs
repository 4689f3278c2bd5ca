//! Reading and validating conda package files as they stream in.
//!
//! [`PackageReader`] takes the file chunk by chunk, hashes every byte and pulls out the
//! `info/` metadata; [`Package::from_parts`] then checks that metadata against the file name and
//! turns it into the repodata record.

mod conda_zip;
mod tar_bz2;
mod tar_scan;

use md5::Md5;
use rattler_conda_types::{package::IndexJson, PackageName};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::names::{check_subdir, ArchiveFormat};
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
}

/// Hashes a package file and extracts its metadata in one pass over its bytes.
pub struct PackageReader {
    digester: Digester,
    format: ArchiveFormat,
    /// The first error stops the scan, but hashing goes on: a checksum mismatch is reported
    /// before a broken archive, since it means the bytes were damaged on the way.
    scanner: Result<Scanner, PackageError>,
}

impl PackageReader {
    pub fn new(format: ArchiveFormat) -> Self {
        let scanner = match format {
            ArchiveFormat::Conda => Scanner::Conda(Box::default()),
            ArchiveFormat::TarBz2 => Scanner::TarBz2(Box::default()),
        };
        Self {
            digester: Digester::default(),
            format,
            scanner: Ok(scanner),
        }
    }

    pub fn update(&mut self, chunk: &[u8]) {
        self.digester.update(chunk);
        let result = match &mut self.scanner {
            Ok(Scanner::Conda(scanner)) => scanner.feed(chunk),
            Ok(Scanner::TarBz2(scanner)) => scanner.feed(chunk),
            Err(_) => Ok(()),
        };
        if let Err(error) = result {
            self.scanner = Err(error);
        }
    }

    /// The digests of everything fed, and the metadata if the archive was readable.
    pub fn finish(self) -> (Digests, Result<ArchiveMetadata, PackageError>) {
        let digests = self.digester.finish();
        let format = self.format;
        let metadata = if digests.size == 0 {
            Err(PackageError::Corrupt("the file is empty".into()))
        } else {
            self.scanner.and_then(|scanner| match scanner {
                Scanner::Conda(scanner) => {
                    let (metadata_json, info) = scanner.finish()?;
                    check_conda_metadata(&metadata_json)?;
                    Ok(ArchiveMetadata { info })
                }
                Scanner::TarBz2(scanner) => Ok(ArchiveMetadata {
                    info: scanner.finish()?,
                }),
            })
        };
        let metadata = metadata.map_err(|error| match error {
            PackageError::Corrupt(msg) => {
                PackageError::Corrupt(format!("not a valid {} file: {msg}", format.extension()))
            }
            invalid => invalid,
        });
        (digests, metadata)
    }
}

fn check_conda_metadata(bytes: &[u8]) -> Result<(), PackageError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| PackageError::Invalid(format!("metadata.json is not valid JSON ({e})")))?;
    match value
        .get("conda_pkg_format_version")
        .and_then(Value::as_u64)
    {
        Some(2) => Ok(()),
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
    /// The repodata record: index.json without the keys conda-index drops, plus checksums.
    pub record: Map<String, Value>,
    /// `info/run_exports.json`, when the package has one.
    pub run_exports: Option<Value>,
    /// `info/about.json`, when the package has one small enough to keep.
    pub about: Option<Value>,
}

impl Package {
    /// Checks the metadata against the file name and builds the record.
    pub fn from_parts(
        filename: &str,
        digests: &Digests,
        metadata: ArchiveMetadata,
    ) -> Result<Self, PackageError> {
        let info = metadata.info;
        let index_bytes = info
            .index
            .ok_or_else(|| PackageError::Invalid("the package has no info/index.json".into()))?;
        let Value::Object(mut index) = parse_json("info/index.json", &index_bytes)? else {
            return Err(PackageError::Invalid(
                "info/index.json is not a JSON object".into(),
            ));
        };
        let typed: IndexJson = serde_json::from_value(Value::Object(index.clone()))
            .map_err(|e| PackageError::Invalid(format!("info/index.json is not valid: {e}")))?;
        let name = typed.name.as_source().to_owned();
        PackageName::try_from(name.as_str())
            .map_err(|e| PackageError::Invalid(format!("invalid package name '{name}': {e}")))?;
        let version = index
            .get("version")
            .and_then(Value::as_str)
            .ok_or_else(|| PackageError::Invalid("info/index.json has no version".into()))?;
        let expected = format!(
            "{name}-{version}-{}{}",
            typed.build,
            ArchiveFormat::from_filename(filename)
                .map(ArchiveFormat::extension)
                .unwrap_or_default()
        );
        if expected != filename {
            return Err(PackageError::Invalid(format!(
                "the file name does not match info/index.json, which describes '{expected}'"
            )));
        }
        let subdir = subdir_of(&index)?;

        for key in DROPPED_INDEX_KEYS {
            index.remove(key);
        }
        index.insert("md5".into(), digests.md5.clone().into());
        index.insert("sha256".into(), digests.sha256.clone().into());
        index.insert("size".into(), digests.size.into());

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
            record: index,
            run_exports,
            about,
        })
    }
}

fn parse_json(path: &str, bytes: &[u8]) -> Result<Value, PackageError> {
    serde_json::from_slice(bytes)
        .map_err(|e| PackageError::Invalid(format!("{path} is not valid JSON ({e})")))
}

/// The subdir a package belongs in: its `subdir` field, else derived from `platform` and
/// `arch` the way conda does, else `noarch` for noarch packages.
fn subdir_of(index: &Map<String, Value>) -> Result<String, PackageError> {
    let field = |key: &str| {
        index
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let subdir = if let Some(subdir) = field("subdir") {
        subdir.to_owned()
    } else if let (Some(platform), Some(arch)) = (field("platform"), field("arch")) {
        let bits = match arch {
            "x86_64" => "64",
            "x86" => "32",
            other => other,
        };
        format!("{platform}-{bits}")
    } else if index.get("noarch").is_some_and(|v| !v.is_null()) {
        "noarch".to_owned()
    } else {
        return Err(PackageError::Invalid(
            "info/index.json names no subdir, no platform and arch, and is not noarch".into(),
        ));
    };
    check_subdir(&subdir).map_err(PackageError::Invalid)?;
    Ok(subdir)
}
