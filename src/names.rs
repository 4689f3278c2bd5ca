//! Rules for the names that become parts of URLs and object keys, and the parsed names the
//! router hands to handlers ([`ChannelName`], [`Subdir`], [`PackageFilename`]).
//!
//! Every name is checked before it touches storage, so no caller can reach outside the
//! channel's own prefix with `..`, slashes or other path tricks.

use std::{fmt, ops::Deref, str::FromStr};

use rattler_conda_types::package::{ArchiveIdentifier, CondaArchiveType};

/// Channel names that would shadow a top-level route.
const RESERVED_CHANNELS: [&str; 3] = ["api", "t", "health"];

/// What a file in a subdir is, which decides how it is cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelFile {
    /// repodata.json, its .zst, run_exports.json, the shard index: change with every upload.
    Index,
    /// `shards/<sha256>.msgpack.zst`: content-addressed, never changes.
    Shard,
    /// A package file.
    Package,
    /// `<package file>.v0.sigs`: the package's attestations (see [`crate::attestation`]).
    Attestation,
}

/// The index files every subdir may have.
pub const INDEX_FILES: [&str; 4] = [
    "repodata.json",
    "repodata.json.zst",
    "run_exports.json",
    "repodata_shards.msgpack.zst",
];

impl ChannelFile {
    /// Classifies a path below `<channel>/<subdir>/`; `None` for anything that is never served.
    pub fn of(path: &str) -> Option<Self> {
        if INDEX_FILES.contains(&path) {
            Some(Self::Index)
        } else if path
            .strip_prefix("shards/")
            .is_some_and(crate::shards::is_shard_filename)
        {
            Some(Self::Shard)
        } else if check_package_filename(path).is_ok() {
            Some(Self::Package)
        } else if crate::attestation::sigs_package(path)
            .is_some_and(|package| check_package_filename(package).is_ok())
        {
            Some(Self::Attestation)
        } else {
            None
        }
    }

    pub fn content_type(path: &str) -> &'static str {
        if path.ends_with(".json") || path.ends_with(crate::attestation::SIGS_SUFFIX) {
            "application/json"
        } else if path.ends_with(".zst") {
            "application/zstd"
        } else if path.ends_with(".tar.bz2") {
            "application/x-bzip2"
        } else {
            "application/octet-stream"
        }
    }
}

/// A channel name: lowercase letters, digits, `-`, `_` and `.`, starting with a letter or digit.
pub fn check_channel_name(name: &str) -> Result<(), String> {
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    let starts_well = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if name.is_empty() || name.len() > 64 || !valid_chars || !starts_well || name.contains("..") {
        return Err(format!(
            "invalid channel name '{}': use 1 to 64 lowercase letters, digits, '-', '_' or '.', starting with a letter or digit",
            truncate(name)
        ));
    }
    if RESERVED_CHANNELS.contains(&name) {
        return Err(format!("the channel name '{name}' is reserved"));
    }
    Ok(())
}

/// A conda subdir that clients know, such as `noarch` or `linux-64`.
pub fn check_subdir(subdir: &str) -> Result<rattler_conda_types::Subdir, String> {
    subdir
        .parse::<rattler_conda_types::Subdir>()
        .map_err(|_| format!("unknown subdir '{}'", truncate(subdir)))
}

/// A package file name: `<name>-<version>-<build>.conda` or `.tar.bz2`, in the characters conda
/// allows there. Whether it matches the package's own metadata is checked once that is read.
pub fn check_package_filename(filename: &str) -> Result<CondaArchiveType, String> {
    let (stem, archive_type) = CondaArchiveType::split_str(filename).ok_or_else(|| {
        format!(
            "'{}' is not a conda package file name: it must end in .conda or .tar.bz2",
            truncate(filename)
        )
    })?;
    // The name becomes an object key and a URL path: rattler's parse accepts any characters,
    // so the safe ones are checked here.
    let safe = filename.len() <= 255
        && filename
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.+!".contains(&b))
        && !stem.starts_with(['.', '-'])
        && !filename.contains("..");
    if !safe || stem.parse::<ArchiveIdentifier>().is_err() {
        return Err(format!(
            "invalid package file name '{}': expected <name>-<version>-<build>{}",
            truncate(filename),
            archive_type.extension()
        ));
    }
    Ok(archive_type)
}

/// A name that breaks its rule; the message says which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidName(pub String);

impl fmt::Display for InvalidName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidName {}

/// Parsed names: a value of one of these has passed its rule.
macro_rules! parsed_name {
    ($(#[$doc:meta])* $name:ident, $check:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name(String);

        impl FromStr for $name {
            type Err = InvalidName;

            fn from_str(name: &str) -> Result<Self, InvalidName> {
                $check(name).map_err(InvalidName)?;
                Ok(Self(name.to_owned()))
            }
        }

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<&str> for $name {
            type Error = InvalidName;

            fn try_from(name: &str) -> Result<Self, InvalidName> {
                name.parse()
            }
        }

        impl Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

parsed_name!(
    /// A channel name ([`check_channel_name`]).
    ChannelName,
    check_channel_name
);
parsed_name!(
    /// A subdir clients know ([`check_subdir`]).
    Subdir,
    check_subdir
);
parsed_name!(
    /// A package file name ([`check_package_filename`]).
    PackageFilename,
    check_package_filename
);

/// Names echoed in errors are cut short: clients show at most 512 characters of a message.
fn truncate(name: &str) -> String {
    if name.chars().count() <= 80 {
        name.to_owned()
    } else {
        name.chars().take(77).chain("...".chars()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names() {
        for good in ["conda-forge", "my_channel", "a", "team.internal", "0day"] {
            assert!(check_channel_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "..",
            "a..b",
            ".hidden",
            "-x",
            "UPPER",
            "a/b",
            "a%2fb",
            "sp ace",
            "api",
            "t",
            &"x".repeat(65),
        ] {
            assert!(check_channel_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn package_filenames() {
        assert_eq!(
            check_package_filename("zlib-1.2.11-h7b6447c_3.conda"),
            Ok(CondaArchiveType::Conda)
        );
        assert_eq!(
            check_package_filename("conda-index-pkg-a-1.0-py27h5e241af_0.tar.bz2"),
            Ok(CondaArchiveType::TarBz2)
        );
        for bad in [
            "zlib.zip",
            "../zlib-1.0-0.conda",
            "a/b-1-0.conda",
            "zlib-1.0.conda",
            ".conda",
            "-a-1-0.conda",
            "z\u{e9}-1-0.conda",
            "a-1-0%2f.conda",
        ] {
            assert!(check_package_filename(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn channel_files() {
        assert_eq!(ChannelFile::of("repodata.json"), Some(ChannelFile::Index));
        assert_eq!(
            ChannelFile::of("repodata_shards.msgpack.zst"),
            Some(ChannelFile::Index)
        );
        let shard = format!("shards/{}.msgpack.zst", "a".repeat(64));
        assert_eq!(ChannelFile::of(&shard), Some(ChannelFile::Shard));
        assert_eq!(
            ChannelFile::of("zlib-1-0.conda"),
            Some(ChannelFile::Package)
        );
        for never in [
            "current_repodata.json",
            "shards/../x",
            "shards/abc.msgpack.zst",
            "notices.json",
        ] {
            assert_eq!(ChannelFile::of(never), None, "{never}");
        }
        assert_eq!(
            ChannelFile::of("zlib-1-0.conda.v0.sigs"),
            Some(ChannelFile::Attestation)
        );
        assert_eq!(ChannelFile::of("zlib.v0.sigs"), None);
        assert_eq!(
            ChannelFile::content_type("zlib-1-0.conda.v0.sigs"),
            "application/json"
        );
        assert_eq!(
            ChannelFile::content_type("repodata.json.zst"),
            "application/zstd"
        );
    }

    #[test]
    fn parsed_names_give_the_rules_messages() {
        let channel: ChannelName = "conda-forge".parse().unwrap();
        assert_eq!(&*channel, "conda-forge");
        assert_eq!(
            ChannelName::try_from("api").unwrap_err(),
            InvalidName("the channel name 'api' is reserved".into())
        );
        assert_eq!(
            "linux-65".parse::<Subdir>().unwrap_err().to_string(),
            "unknown subdir 'linux-65'"
        );
        let filename = PackageFilename::try_from("zlib-1-0.conda").unwrap();
        assert_eq!(filename.to_string(), "zlib-1-0.conda");
        assert_eq!(
            PackageFilename::try_from("zlib.zip").unwrap_err().0,
            check_package_filename("zlib.zip").unwrap_err()
        );
    }

    #[test]
    fn subdirs() {
        assert!(check_subdir("noarch").is_ok());
        assert!(check_subdir("linux-aarch64").is_ok());
        assert!(check_subdir("linux-65").is_err());
        assert!(check_subdir("../noarch").is_err());
    }
}
