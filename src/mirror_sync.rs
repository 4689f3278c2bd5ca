//! What `mirror sync` fetches: the package files a solve of the operator's specs needs, for
//! each target platform, from a mirror's own index (its repodata.json of the platform and of
//! noarch, with the mirror's rules already applied).
//!
//! The solve is rattler's (resolvo), as a pixi or py-rattler client on the site would run it,
//! with virtual packages standing in for the site's machines: defaults per platform
//! ([`default_virtual_packages`]) that the operator may override. Native only: the Worker
//! never solves.

use std::collections::BTreeMap;
use std::str::FromStr;

use rattler_conda_types::package::BuildString;
use rattler_conda_types::{
    Channel, GenericVirtualPackage, MatchSpec, PackageName, ParseStrictness, RepoData,
    RepoDataRecord, Subdir, Version,
};
use rattler_solve::{resolvo::Solver, SolveError, SolverImpl, SolverTask};
use serde::Serialize;

/// The virtual packages a solve for `subdir` assumes when the operator names none: a
/// present-day machine of that platform, as conda-forge builds for it.
pub fn default_virtual_packages(subdir: Subdir) -> Vec<GenericVirtualPackage> {
    let mut packages = Vec::new();
    if subdir.is_unix() {
        packages.push(("__unix", "0"));
    }
    if subdir.is_linux() {
        packages.extend([("__linux", "4.18"), ("__glibc", "2.28")]);
    }
    if subdir.is_osx() {
        packages.push(("__osx", "13.0"));
    }
    if subdir.is_windows() {
        packages.push(("__win", "0"));
    }
    packages
        .into_iter()
        .map(|(name, version)| virtual_package(name, version, "0").expect("a valid default"))
        .collect()
}

fn virtual_package(
    name: &str,
    version: &str,
    build: &str,
) -> Result<GenericVirtualPackage, String> {
    if !name.starts_with("__") {
        return Err(format!(
            "'{name}' is no virtual package name (those start with __)"
        ));
    }
    Ok(GenericVirtualPackage {
        name: PackageName::from_str(name).map_err(|e| format!("'{name}': {e}"))?,
        version: Version::from_str(version).map_err(|e| format!("'{version}': {e}"))?,
        build_string: BuildString::from_str(build).map_err(|e| format!("'{build}': {e}"))?,
    })
}

/// `NAME=VERSION` or `NAME=VERSION=BUILD` (`--virtual-package`).
pub fn parse_virtual_package(text: &str) -> Result<GenericVirtualPackage, String> {
    let mut parts = text.splitn(3, '=');
    let (Some(name), Some(version)) = (parts.next(), parts.next()) else {
        return Err(format!("'{text}' is not NAME=VERSION[=BUILD]"));
    };
    virtual_package(name, version, parts.next().unwrap_or("0"))
        .map_err(|e| format!("virtual package {text}: {e}"))
}

/// One platform to solve for, with the virtual packages the solve assumes.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub subdir: String,
    #[serde(serialize_with = "as_strings")]
    pub virtual_packages: Vec<GenericVirtualPackage>,
}

fn as_strings<S: serde::Serializer>(
    packages: &[GenericVirtualPackage],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(packages.iter().map(ToString::to_string))
}

/// What the operator asked for, checked: the specs and each target platform.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub specs: Vec<MatchSpec>,
    pub targets: Vec<Target>,
}

impl SyncRequest {
    /// Checks the specs (as the mirror rules are read), the subdirs (platforms; noarch is
    /// read with each of them) and the overrides, which replace a default of the same name
    /// or add to them, on every target.
    pub fn parse(
        specs: &[String],
        subdirs: &[String],
        overrides: &[String],
    ) -> Result<Self, String> {
        if specs.is_empty() {
            return Err("name at least one spec".into());
        }
        if subdirs.is_empty() {
            return Err(
                "name the platform to solve for with --subdir (e.g. --subdir linux-64)".into(),
            );
        }
        let specs = specs
            .iter()
            .map(|text| {
                MatchSpec::from_str(text, ParseStrictness::Strict)
                    .map_err(|e| format!("'{text}' is not a match spec: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let overrides = overrides
            .iter()
            .map(|text| parse_virtual_package(text))
            .collect::<Result<Vec<_>, _>>()?;
        let mut targets: Vec<Target> = Vec::new();
        for name in subdirs {
            let subdir = Subdir::from_str(name)
                .map_err(|_| format!("'{name}' is no platform subdir (such as linux-64)"))?;
            if subdir == Subdir::NoArch {
                return Err(
                    "noarch is read with every platform: name a platform such as linux-64".into(),
                );
            }
            if targets.iter().any(|t| t.subdir == subdir.as_str()) {
                continue;
            }
            let mut packages = default_virtual_packages(subdir);
            for package in &overrides {
                packages.retain(|p| p.name != package.name);
                packages.push(package.clone());
            }
            targets.push(Target {
                subdir: subdir.as_str().to_owned(),
                virtual_packages: packages,
            });
        }
        Ok(Self { specs, targets })
    }
}

/// A package file a solve chose: where it is in the mirror and what its record says it is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct SyncFile {
    pub subdir: String,
    pub filename: String,
    pub name: String,
    pub version: String,
    /// Hex; a mirror serves no record without one.
    pub sha256: Option<String>,
    pub size: Option<u64>,
}

/// Why a target could not be solved.
#[derive(Debug, thiserror::Error)]
#[error("cannot solve for {subdir}: {message}")]
pub struct Unsolvable {
    pub subdir: String,
    pub message: String,
}

/// Solves `specs` for `target` against the mirror's index of the target's subdir and of
/// noarch (`indexes`: repodata.json documents, read from `channel`), and answers the files
/// the solution installs, in subdir and filename order.
pub fn solve(
    specs: &[MatchSpec],
    target: &Target,
    channel: &Channel,
    indexes: Vec<RepoData>,
) -> Result<Vec<SyncFile>, Unsolvable> {
    let records: Vec<Vec<RepoDataRecord>> = indexes
        .into_iter()
        .map(|index| index.into_repo_data_records(channel))
        .collect();
    let task = SolverTask {
        specs: specs.to_vec(),
        virtual_packages: target.virtual_packages.clone(),
        ..SolverTask::from_iter(records.iter().map(|r| r.iter()))
    };
    let solution = Solver.solve(task).map_err(|error| Unsolvable {
        subdir: target.subdir.clone(),
        message: match error {
            SolveError::Unsolvable(reasons) => reasons.join("\n").trim_end().to_owned(),
            other => other.to_string(),
        },
    })?;
    let mut files: Vec<SyncFile> = solution
        .records
        .into_iter()
        .map(|record| SyncFile {
            filename: record.identifier.to_file_name(),
            subdir: record.package_record.subdir.clone(),
            name: record.package_record.name.as_normalized().to_owned(),
            version: record.package_record.version.to_string(),
            sha256: record.package_record.sha256.map(hex::encode),
            size: record.package_record.size,
        })
        .collect();
    files.sort();
    Ok(files)
}

/// The files of several solves, each once (a noarch file several platforms need).
pub fn union(solves: impl IntoIterator<Item = Vec<SyncFile>>) -> Vec<SyncFile> {
    let mut files = BTreeMap::new();
    for file in solves.into_iter().flatten() {
        files.insert((file.subdir.clone(), file.filename.clone()), file);
    }
    files.into_values().collect()
}
