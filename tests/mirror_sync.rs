//! `mirror sync`'s solve: the request's checks (specs, platforms, virtual packages), the
//! defaults per platform, and solves against the reference indexer's repodata.json of the
//! fixture packages (with one record added where a real dependency is missing from them).

use std::{fs, path::PathBuf};

use condaflare::mirror_sync::{default_virtual_packages, solve, union, SyncFile, SyncRequest};
use rattler_conda_types::{Channel, ChannelConfig, RepoData, Subdir};
use serde_json::{json, Value};

fn reference(subdir: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/reference/rattler-index")
        .join(subdir)
        .join("repodata.json");
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

/// The fixtures' linux-64 index with the libgcc-ng that their zlib depends on, which needs
/// glibc 2.17.
fn linux_with_libgcc() -> Value {
    let mut index = reference("linux-64");
    index["packages"]["libgcc-ng-9.3.0-h5101ec6_17.tar.bz2"] = json!({
        "build": "h5101ec6_17", "build_number": 17, "depends": ["__glibc >=2.17", "_libgcc_mutex 0.1 main"],
        "license": "GPL-3.0-only WITH GCC-exception-3.1", "name": "libgcc-ng",
        "sha256": "b2e4e8e2a9a5da4e9a2e22a8f1ae9b6a8c8a4f3d1b7a1c4c0d2c8a5b0c7e3f1a", "size": 4960,
        "subdir": "linux-64", "timestamp": 1632763211000u64, "version": "9.3.0",
    });
    index["packages"]["_libgcc_mutex-0.1-main.tar.bz2"] = json!({
        "build": "main", "build_number": 0, "depends": [], "license": "None", "name": "_libgcc_mutex",
        "sha256": "476626712f60e5ef0fe04c354727152b1ee5285d57ccd3575c7be930122bd051", "size": 3121,
        "subdir": "linux-64", "version": "0.1",
    });
    index
}

fn channel() -> Channel {
    Channel::from_str(
        "https://mirror.example.org/m",
        &ChannelConfig::default_with_root_dir(PathBuf::from("/")),
    )
    .unwrap()
}

fn request(specs: &[&str], subdirs: &[&str], overrides: &[&str]) -> Result<SyncRequest, String> {
    let strings = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    SyncRequest::parse(&strings(specs), &strings(subdirs), &strings(overrides))
}

fn solved(specs: &[&str], overrides: &[&str], linux: Value) -> Result<Vec<SyncFile>, String> {
    let request = request(specs, &["linux-64"], overrides).unwrap();
    let indexes = [linux, reference("noarch")]
        .into_iter()
        .map(|v| serde_json::from_value::<RepoData>(v).unwrap())
        .collect();
    solve(&request.specs, &request.targets[0], &channel(), indexes).map_err(|e| e.to_string())
}

fn filenames(files: &[SyncFile]) -> Vec<String> {
    files
        .iter()
        .map(|f| format!("{}/{}", f.subdir, f.filename))
        .collect()
}

#[test]
fn a_spec_with_dependencies_needs_its_dependencies_files_and_no_others() {
    let files = solved(&["zlib"], &[], linux_with_libgcc()).unwrap();
    // The .conda of zlib, which exists in both formats; none of the index's other packages.
    assert_eq!(
        filenames(&files),
        [
            "linux-64/_libgcc_mutex-0.1-main.tar.bz2",
            "linux-64/libgcc-ng-9.3.0-h5101ec6_17.tar.bz2",
            "linux-64/zlib-1.2.11-h7b6447c_3.conda",
        ]
    );
    let index = reference("linux-64");
    let record = &index["packages.conda"]["zlib-1.2.11-h7b6447c_3.conda"];
    let zlib = &files[2];
    assert_eq!(
        (zlib.name.as_str(), zlib.version.as_str()),
        ("zlib", "1.2.11")
    );
    assert_eq!(zlib.sha256.as_deref(), record["sha256"].as_str());
    assert_eq!(zlib.size, record["size"].as_u64());
}

#[test]
fn the_newest_version_a_spec_admits_is_chosen() {
    let newest = solved(&["other-package"], &[], reference("linux-64")).unwrap();
    assert_eq!(filenames(&newest), ["linux-64/other-package-0.2-0.conda"]);
    let older = solved(
        &["other-package <0.2", "run_exports_versions"],
        &[],
        reference("linux-64"),
    )
    .unwrap();
    assert_eq!(
        filenames(&older),
        [
            "linux-64/other-package-0.1-0.tar.bz2",
            "noarch/run_exports_versions-2.0-h39de5ba_0.tar.bz2"
        ]
    );
}

#[test]
fn a_missing_dependency_or_virtual_package_is_unsolvable_with_the_solvers_reason() {
    let error = solved(&["flask"], &[], reference("linux-64")).unwrap_err();
    assert!(error.starts_with("cannot solve for linux-64: "), "{error}");
    assert!(error.contains("click"), "{error}");
    // Without libgcc-ng in the index, zlib cannot be installed.
    let error = solved(&["zlib"], &[], reference("linux-64")).unwrap_err();
    assert!(error.contains("libgcc-ng"), "{error}");
    // An older glibc than libgcc-ng needs, given in place of the default.
    let error = solved(&["zlib"], &["__glibc=2.12"], linux_with_libgcc()).unwrap_err();
    assert!(error.contains("__glibc"), "{error}");
    assert!(solved(&["zlib"], &["__glibc=2.17"], linux_with_libgcc()).is_ok());
    assert!(solved(&["other-package >=1"], &[], reference("linux-64")).is_err());
}

#[test]
fn each_platform_has_default_virtual_packages_and_an_override_replaces_one_of_them() {
    let names = |subdir: Subdir| {
        default_virtual_packages(subdir)
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(Subdir::Linux64),
        ["__unix=0=0", "__linux=4.18=0", "__glibc=2.28=0"]
    );
    assert_eq!(names(Subdir::LinuxAarch64), names(Subdir::Linux64));
    assert_eq!(names(Subdir::OsxArm64), ["__unix=0=0", "__osx=13.0=0"]);
    assert_eq!(names(Subdir::Win64), ["__win=0=0"]);

    let parsed = request(
        &["zlib"],
        &["linux-64", "osx-64", "linux-64"],
        &["__glibc=2.17", "__cuda=12.4", "__archspec=1=x86_64"],
    )
    .unwrap();
    let targets = serde_json::to_value(&parsed.targets).unwrap();
    assert_eq!(
        targets,
        json!([
            {"subdir": "linux-64", "virtual_packages": ["__unix=0=0", "__linux=4.18=0", "__glibc=2.17=0", "__cuda=12.4=0", "__archspec=1=x86_64"]},
            {"subdir": "osx-64", "virtual_packages": ["__unix=0=0", "__osx=13.0=0", "__glibc=2.17=0", "__cuda=12.4=0", "__archspec=1=x86_64"]},
        ])
    );
}

#[test]
fn bad_requests_are_refused_with_what_is_wrong() {
    // (specs, subdirs, virtual packages, what the error says)
    type Case<'a> = (&'a [&'a str], &'a [&'a str], &'a [&'a str], &'a str);
    let cases: [Case; 8] = [
        (
            &["zlib >=>1"],
            &["linux-64"],
            &[],
            "'zlib >=>1' is not a match spec",
        ),
        (&[], &["linux-64"], &[], "at least one spec"),
        (&["zlib"], &[], &[], "--subdir"),
        (
            &["zlib"],
            &["linux64"],
            &[],
            "'linux64' is no platform subdir",
        ),
        (
            &["zlib"],
            &["noarch"],
            &[],
            "noarch is read with every platform",
        ),
        (&["zlib"], &["linux-64"], &["glibc=2.17"], "start with __"),
        (&["zlib"], &["linux-64"], &["__glibc"], "NAME=VERSION"),
        (
            &["zlib"],
            &["linux-64"],
            &["__glibc=x..y"],
            "virtual package __glibc=x..y",
        ),
    ];
    for (specs, subdirs, overrides, fault) in cases {
        let error = request(specs, subdirs, overrides).unwrap_err();
        assert!(
            error.contains(fault),
            "{specs:?} {subdirs:?} {overrides:?}: {error}"
        );
    }
}

#[test]
fn the_files_of_several_platforms_are_listed_once() {
    let linux = solved(
        &["other-package", "run_exports_versions"],
        &[],
        reference("linux-64"),
    )
    .unwrap();
    let noarch_only = solved(&["run_exports_versions"], &[], reference("linux-64")).unwrap();
    let files = union([linux.clone(), noarch_only]);
    assert_eq!(files, linux);
}
