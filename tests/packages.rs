//! Every fixture package read through the streaming reader, compared field for field with what
//! conda-index made of the same file.

use std::{fs, path::PathBuf};

use condaflare::{
    names::check_package_filename,
    package::{ArchiveMetadata, Package, PackageError, PackageReader, PackageScanner},
    repodata::{record_json, run_exports_entry, IndexWriter},
};
use rattler_conda_types::{package::CondaArchiveType, MatchSpec, ParseStrictness};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn files_in(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<_> = fs::read_dir(fixtures().join(dir))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
}

fn read_package(path: &PathBuf, chunk: usize) -> Result<Package, PackageError> {
    let filename = path.file_name().unwrap().to_str().unwrap();
    read_bytes(filename, &fs::read(path).unwrap(), chunk)
}

fn read_bytes(filename: &str, bytes: &[u8], chunk: usize) -> Result<Package, PackageError> {
    let archive_type = CondaArchiveType::try_from(filename).unwrap();
    let mut reader = PackageReader::new(archive_type);
    for part in bytes.chunks(chunk) {
        reader.update(part);
    }
    let (digests, metadata) = reader.finish();
    assert_eq!(digests.size, bytes.len() as u64);
    let skipping = scan_skipping(archive_type, bytes, chunk);
    let read = Package::from_parts(filename, &digests, metadata?, now());
    // Seeing only the bytes it asks for, the scan comes to the same verdict.
    let scanned =
        skipping.and_then(|metadata| Package::from_parts(filename, &digests, metadata, now()));
    assert_eq!(scanned.as_ref().err(), read.as_ref().err(), "{filename}");
    assert_eq!(
        scanned.as_ref().ok().map(|p| &p.record),
        read.as_ref().ok().map(|p| &p.record)
    );
    read
}

/// The metadata as [`PackageScanner`] finds it when fed, chunk by chunk, only the bytes it does
/// not say it may skip; it stops being fed once it needs nothing more.
fn scan_skipping(
    archive_type: CondaArchiveType,
    bytes: &[u8],
    chunk: usize,
) -> Result<ArchiveMetadata, PackageError> {
    let mut scanner = PackageScanner::new(archive_type);
    'chunks: for mut part in bytes.chunks(chunk) {
        while !part.is_empty() {
            let skippable = scanner.skippable();
            if skippable == u64::MAX {
                break 'chunks;
            }
            let skipped = skippable.min(part.len() as u64);
            scanner.skip(skipped);
            part = &part[skipped as usize..];
            if skipped == 0 {
                scanner.feed(part);
                break;
            }
        }
    }
    scanner.finish(bytes.len() as u64)
}

/// The time of upload, in milliseconds since the epoch.
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn reference_record(subdir: &str, filename: &str) -> Value {
    let path = fixtures().join(format!("reference/conda-index/{subdir}/repodata.json"));
    let repodata: Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
    let key = if filename.ends_with(".conda") {
        "packages.conda"
    } else {
        "packages"
    };
    repodata[key][filename].clone()
}

#[test]
fn every_valid_fixture_matches_conda_index() {
    let packages = files_in("packages");
    assert_eq!(packages.len(), 25);
    for path in &packages {
        // Odd chunk sizes cross every header and entry boundary somewhere.
        for chunk in [1021, 4096, 1 << 20] {
            let package =
                read_package(path, chunk).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let expected = reference_record(&package.subdir, &package.filename);
            assert!(
                expected.is_object(),
                "{} not in reference {}",
                package.filename,
                package.subdir
            );
            assert_eq!(
                serde_json::to_value(&package.record).unwrap(),
                expected,
                "{}",
                package.filename
            );
            // What is served: compact, keys sorted at every level, as conda-index writes it.
            assert_eq!(
                record_json(&package.record),
                expected.to_string(),
                "{}",
                package.filename
            );
        }
    }
}

#[test]
fn subdir_comes_from_platform_and_arch_when_missing() {
    let package = read_package(&fixtures().join("packages/nano-2.4.1-0.tar.bz2"), 4096).unwrap();
    assert_eq!(package.subdir, "osx-64");
}

#[test]
fn run_exports_are_kept() {
    let package = read_package(
        &fixtures().join("packages/run_exports_versions-1.0-he35c369_0.tar.bz2"),
        4096,
    )
    .unwrap();
    let reference: Value = serde_json::from_slice(
        &fs::read(fixtures().join("reference/conda-index/noarch/run_exports.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        package.run_exports.unwrap(),
        reference["packages"]["run_exports_versions-1.0-he35c369_0.tar.bz2"]["run_exports"]
    );
    let zlib = read_package(
        &fixtures().join("packages/zlib-1.2.11-h7b6447c_3.conda"),
        4096,
    )
    .unwrap();
    assert_eq!(
        zlib.run_exports.unwrap()["weak"][0],
        "zlib >=1.2.11,<1.3.0a0"
    );
    assert!(zlib.about.unwrap()["license"].is_string());
}

#[test]
fn corrupt_fixtures_are_refused() {
    let expectations = [
        ("another_bad_package.conda", "empty"),
        ("bad_package.tar.bz2", "bzip2"),
        (
            "ca-certificates-2024.7.4-hbcca054_0.conda",
            "not at the archive root",
        ),
    ];
    for (name, reason) in expectations {
        let err = read_package(&fixtures().join("corrupt").join(name), 4096).unwrap_err();
        assert!(err.to_string().contains(reason), "{name}: {err}");
    }
}

#[test]
fn renamed_package_is_refused() {
    let source = fs::read(fixtures().join("packages/flask-0.11.1-py_0.tar.bz2")).unwrap();
    let mut reader = PackageReader::new(CondaArchiveType::TarBz2);
    reader.update(&source);
    let (digests, metadata) = reader.finish();
    let err = Package::from_parts(
        "flask-0.12-py_0.tar.bz2",
        &digests,
        metadata.unwrap(),
        now(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("flask-0.11.1-py_0.tar.bz2"),
        "{err}"
    );
}

#[test]
fn truncated_packages_are_refused() {
    for name in [
        "zlib-1.2.11-h7b6447c_3.conda",
        "zlib-1.2.11-h7b6447c_3.tar.bz2",
    ] {
        let path = fixtures().join("packages").join(name);
        let bytes = fs::read(&path).unwrap();
        // A .tar.bz2 is read only up to the end of its info/ section (the payload after it is
        // covered by the sha256 the uploader sends), so only a .conda is checked to its last byte.
        let mut cuts = vec![10, 100, bytes.len() / 2];
        if name.ends_with(".conda") {
            cuts.push(bytes.len() - 1);
        }
        for cut in cuts {
            let mut reader = PackageReader::new(check_package_filename(name).unwrap());
            reader.update(&bytes[..cut]);
            let (_, metadata) = reader.finish();
            let result = metadata.and_then(|m| {
                Package::from_parts(
                    name,
                    &condaflare::package::Digests {
                        sha256: String::new(),
                        md5: String::new(),
                        size: 0,
                    },
                    m,
                    now(),
                )
            });
            assert!(result.is_err(), "{name} cut at {cut} was accepted");
        }
    }
}

#[test]
fn repodata_of_fixtures_equals_conda_index() {
    for subdir in ["noarch", "linux-64", "osx-64", "win-64"] {
        let mut packages: Vec<Package> = files_in("packages")
            .iter()
            .map(|path| read_package(path, 65536).unwrap())
            .filter(|p| p.subdir == subdir)
            .collect();
        packages.sort_by_key(|p| (p.filename.ends_with(".conda"), p.filename.clone()));
        let mut writer = IndexWriter::repodata(subdir);
        for package in &packages {
            writer.push(&package.filename, &record_json(&package.record));
        }
        let ours: Value = serde_json::from_str(&writer.finish()).unwrap();
        let path = fixtures().join(format!("reference/conda-index/{subdir}/repodata.json"));
        let reference: Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
        assert_eq!(ours, reference, "{subdir}");

        let mut writer = IndexWriter::run_exports(subdir);
        for package in &packages {
            let run_exports = package.run_exports.as_ref().map(Value::to_string);
            writer.push(
                &package.filename,
                &run_exports_entry(run_exports.as_deref()),
            );
        }
        let ours: Value = serde_json::from_str(&writer.finish()).unwrap();
        let path = fixtures().join(format!("reference/conda-index/{subdir}/run_exports.json"));
        let reference: Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
        assert_eq!(ours, reference, "run_exports.json of {subdir}");
    }
}

/// The match specs of every fixture pass the lenient parse the check uses; the strict one
/// would refuse an old package every client installs, which is why the check is lenient.
#[test]
fn every_fixture_spec_parses_leniently_and_strict_would_refuse_one() {
    let mut strict_refusals = Vec::new();
    for path in files_in("packages") {
        let package = read_package(&path, 65536).unwrap();
        let record = serde_json::to_value(&package.record).unwrap();
        for field in ["depends", "constrains"] {
            for spec in record[field].as_array().into_iter().flatten() {
                let spec = spec.as_str().unwrap();
                assert!(
                    MatchSpec::from_str(spec, ParseStrictness::Lenient).is_ok(),
                    "{spec}"
                );
                if MatchSpec::from_str(spec, ParseStrictness::Strict).is_err() {
                    strict_refusals.push(format!("{} {spec}", package.filename));
                }
            }
        }
    }
    assert_eq!(strict_refusals, ["nano-2.4.1-0.tar.bz2 ncurses 5.9"]);
}

/// A fixture `.conda` rewritten with its zip entries renamed by `rename`.
fn renamed_components(source: &str, rename: impl Fn(&str) -> String) -> Vec<u8> {
    use std::io::{Cursor, Read, Write};
    let bytes = fs::read(fixtures().join("packages").join(source)).unwrap();
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).unwrap();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        writer.start_file(rename(entry.name()), stored).unwrap();
        writer.write_all(&data).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

#[test]
fn conda_components_named_for_another_file_are_refused() {
    let source = "zlib-1.2.11-h7b6447c_3.conda";
    // The same entries, names unchanged: read as the fixture is.
    let same = renamed_components(source, str::to_owned);
    assert!(read_bytes(source, &same, 4096).is_ok());
    for kind in ["info-", "pkg-"] {
        let bytes = renamed_components(source, |name| {
            if name.starts_with(kind) {
                name.replace("zlib-1.2.11-h7b6447c_3", "zlib-1.2.11-other_3")
            } else {
                name.to_owned()
            }
        });
        let err = read_bytes(source, &bytes, 4096).unwrap_err();
        let expected =
            format!("component '{kind}zlib-1.2.11-other_3.tar.zst' is named for another file");
        assert!(err.to_string().contains(&expected), "{err}");
    }
}

/// The byte offset by which [`PackageScanner::subdir`] names the subdir when fed `bytes` in
/// chunks of `chunk` (skipping what it may), and that subdir.
fn subdir_found_at(filename: &str, bytes: &[u8], chunk: usize) -> Option<(usize, String)> {
    let mut scanner = PackageScanner::new(CondaArchiveType::try_from(filename).unwrap());
    let mut read = 0;
    for part in bytes.chunks(chunk) {
        if let Some(subdir) = scanner.subdir() {
            return Some((read, subdir));
        }
        if scanner.skippable() == u64::MAX {
            break;
        }
        let skipped = scanner.skippable().min(part.len() as u64) as usize;
        scanner.skip(skipped as u64);
        scanner.feed(&part[skipped..]);
        read += part.len();
    }
    scanner.subdir().map(|subdir| (read, subdir))
}

#[test]
fn the_scan_names_the_subdir_the_package_is_stored_under() {
    for path in &files_in("packages") {
        let filename = path.file_name().unwrap().to_str().unwrap();
        let bytes = fs::read(path).unwrap();
        let package = read_package(path, 4096).unwrap();
        for chunk in [1021, 1 << 20] {
            let (_, subdir) = subdir_found_at(filename, &bytes, chunk)
                .unwrap_or_else(|| panic!("{filename}: no subdir found"));
            assert_eq!(subdir, package.subdir, "{filename}");
        }
    }
}

/// A fixture `.conda` rewritten with its info component first or last.
fn with_info(source: &str, first: bool) -> Vec<u8> {
    use std::io::{Cursor, Read, Write};
    let bytes = fs::read(fixtures().join("packages").join(source)).unwrap();
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
    let mut entries: Vec<(String, Vec<u8>)> = (0..archive.len())
        .map(|i| {
            let mut entry = archive.by_index(i).unwrap();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            (entry.name().to_owned(), data)
        })
        .collect();
    entries.sort_by_key(|(name, _)| name.starts_with("info-") != first);
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in entries {
        writer.start_file(name, stored).unwrap();
        writer.write_all(&data).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

#[test]
fn a_conda_names_its_subdir_before_its_pkg_component_only_when_its_info_comes_first() {
    let source = "zlib-1.2.11-h7b6447c_3.conda";
    let pkg_at = |bytes: &[u8]| {
        bytes
            .windows(4)
            .position(|window| window == b"pkg-")
            .unwrap()
    };
    // Checked after each chunk of 512 bytes: found within the chunk where pkg's header starts.
    let first = with_info(source, true);
    assert_eq!(read_bytes(source, &first, 4096).unwrap().subdir, "linux-64");
    let (found, subdir) = subdir_found_at(source, &first, 512).unwrap();
    assert_eq!(subdir, "linux-64");
    assert!(found <= pkg_at(&first) + 512, "found at {found}");
    // As conda-package-handling writes it: the info component after pkg's 98 KB.
    let last = with_info(source, false);
    assert_eq!(read_bytes(source, &last, 4096).unwrap().subdir, "linux-64");
    let (found, _) = subdir_found_at(source, &last, 512).unwrap();
    assert!(found > pkg_at(&last) + 90_000, "found at {found}");
}
