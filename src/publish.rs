//! The decisions of the publishing protocols that are not prefix.dev's own, as the clients
//! (rattler-build, pixi: `rattler_upload`) speak them: quetz, Artifactory and anaconda.org.
//! Each is an adapter onto the one upload path; what is pure logic lives here.

use rattler_conda_types::{PackageName, Version};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ErrorCode};
use crate::names::{ChannelName, InvalidName, PackageFilename, Subdir};

/// The query of an upload: `force=true|1` replaces a file with other content; `sha256=` is
/// the checksum quetz's clients send in the query instead of a header.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct UploadQuery {
    pub force: bool,
    pub sha256: Option<String>,
}

impl UploadQuery {
    pub fn parse<K: AsRef<str>, V: AsRef<str>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        let mut query = Self::default();
        for (key, value) in pairs {
            let value = value.as_ref();
            match key.as_ref() {
                "force" => query.force = value == "true" || value == "1",
                "sha256" if !value.is_empty() => query.sha256 = Some(value.to_owned()),
                _ => {}
            }
        }
        query
    }
}

/// The status quetz answers for an error: a checksum mismatch is its 406; every other answer
/// is the one condaflare gives on any route.
pub fn quetz_status(code: ErrorCode) -> u16 {
    match code {
        ErrorCode::ChecksumMismatch => 406,
        other => other.status(),
    }
}

/// The one anaconda.org label a condaflare channel has: its packages are the channel.
pub const MAIN_LABEL: &str = "main";

/// How long the transfer URL a stage hands out stays valid: long enough to start sending the
/// file right after the stage, as clients do, and no longer.
pub const TICKET_SECONDS: u64 = 600;

/// anaconda.org's labels: an owner's files carry labels, and `main` is what installers see.
/// condaflare's channel is the owner, and has no labels besides: only `main` is accepted, and
/// no label at all, which is what `anaconda upload` sends without `-l` and anaconda.org reads
/// as `main`.
pub fn check_labels(labels: &[String]) -> Result<(), String> {
    match labels.iter().find(|label| *label != MAIN_LABEL) {
        Some(label) => Err(format!(
            "condaflare channels have no labels: the label '{}' is not supported; upload to \
             'main' (the channel itself), or make a separate channel for these packages",
            label.chars().take(64).collect::<String>()
        )),
        None => Ok(()),
    }
}

/// A package name as anaconda.org's API paths carry it.
pub fn check_name(name: &str) -> Result<(), String> {
    name.parse::<PackageName>()
        .map(|_| ())
        .map_err(|_| format!("'{}' is not a package name", short(name)))
}

/// A version as anaconda.org's API paths carry it.
pub fn check_version(version: &str) -> Result<(), String> {
    version
        .parse::<Version>()
        .map(|_| ())
        .map_err(|_| format!("'{}' is not a version", short(version)))
}

fn short(text: &str) -> String {
    text.chars().take(80).collect()
}

/// A file as anaconda.org's API paths name it: `<owner>/<name>/<version>/<subdir>/<filename>`,
/// each part checked by its rule, and the file name the package's, so the path cannot put a
/// file under another package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistPath {
    /// The channel.
    pub owner: ChannelName,
    pub name: String,
    pub version: String,
    pub subdir: Subdir,
    pub filename: PackageFilename,
}

impl DistPath {
    pub fn parse(
        owner: &str,
        name: &str,
        version: &str,
        subdir: &str,
        filename: &str,
    ) -> Result<Self, InvalidName> {
        let (owner, subdir, filename): (ChannelName, Subdir, PackageFilename) =
            (owner.parse()?, subdir.parse()?, filename.parse()?);
        check_name(name).map_err(InvalidName)?;
        check_version(version).map_err(InvalidName)?;
        if !filename.starts_with(&format!("{name}-{version}-")) {
            return Err(InvalidName(format!(
                "the file '{}' is not a build of {name} {version}",
                filename.chars().take(120).collect::<String>()
            )));
        }
        Ok(Self {
            owner,
            name: name.to_owned(),
            version: version.to_owned(),
            subdir,
            filename,
        })
    }

    /// `<subdir>/<filename>`, as anaconda.org calls a file.
    pub fn basename(&self) -> String {
        format!("{}/{}", self.subdir, self.filename)
    }
}

/// The body of anaconda.org's stage call (`POST /stage/<owner>/<name>/<version>/<subdir>/<file>`).
#[derive(Debug, Deserialize)]
pub struct StageRequest {
    pub sha256: String,
    /// The labels the file goes to.
    #[serde(default)]
    pub channels: Vec<String>,
}

/// The answer to a stage: where to send the bytes and the form fields to send with them.
/// anaconda.org hands out a presigned storage URL; condaflare's points back at itself.
#[derive(Debug, Serialize)]
pub struct StageAnswer {
    pub post_url: String,
    pub form_data: serde_json::Map<String, serde_json::Value>,
    /// What the commit call names the file by: its SHA-256.
    pub dist_id: String,
}

/// What a stage authorizes: one file, with these bytes, into this channel, until `expires_at`
/// (ms), on behalf of the key that staged it, which must still be allowed to write there when
/// the file arrives. Kept in a staging object named by a random id, which the transfer URL
/// carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadTicket {
    pub channel: String,
    pub subdir: String,
    pub filename: String,
    pub sha256: String,
    /// The key that staged it.
    pub key_id: i64,
    /// Its user, for the log.
    pub user: String,
    pub expires_at: u64,
}

impl UploadTicket {
    pub fn check(&self, channel: &str, now: u64) -> Result<(), String> {
        if self.channel != channel {
            return Err("this upload URL is for another channel".into());
        }
        if now >= self.expires_at {
            return Err("this upload URL has expired: run the upload again".into());
        }
        Ok(())
    }
}

/// Whether the `Content-MD5` form field anaconda-client sends with the file (base64 of the
/// digest, as S3 takes it) names the bytes received, whose MD5 is `md5_hex`.
pub fn content_md5_matches(content_md5: &str, md5_hex: &str) -> bool {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(content_md5.trim())
        .is_ok_and(|digest| hex::encode(digest).eq_ignore_ascii_case(md5_hex))
}

/// An error of the transfer URL as the storage service it stands in for words it (S3's
/// `<Error>` document), which is what anaconda-client reads there: the code and sentence of
/// `error`, escaped.
pub fn storage_error_xml(error: &ApiError) -> String {
    let escape = |text: &str| {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let code = serde_json::to_value(error.code)
        .ok()
        .and_then(|code| code.as_str().map(str::to_owned))
        .unwrap_or_default();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message></Error>",
        escape(&code),
        escape(&error.message)
    )
}

/// The SHA-256 (hex) a shard's record of `filename` gives, if the shard has one.
pub fn shard_sha256(compressed_shard: &[u8], filename: &str) -> Result<Option<String>, String> {
    let raw = zstd::decode_all(compressed_shard).map_err(|e| format!("zstd: {e}"))?;
    let document =
        rmpv::decode::read_value(&mut raw.as_slice()).map_err(|e| format!("msgpack: {e}"))?;
    let entry = |value: &rmpv::Value, key: &str| -> Option<rmpv::Value> {
        value
            .as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v.clone())
    };
    for section in ["packages", "packages.conda"] {
        let Some(records) = entry(&document, section) else {
            continue;
        };
        if let Some(record) = entry(&records, filename) {
            return match entry(&record, "sha256") {
                Some(rmpv::Value::Binary(bytes)) => Ok(Some(hex::encode(bytes))),
                _ => Err(format!("the shard's record of {filename} has no sha256")),
            };
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_queries() {
        assert_eq!(
            UploadQuery::parse([("force", "false"), ("sha256", "ab")]),
            UploadQuery {
                force: false,
                sha256: Some("ab".into())
            }
        );
        assert!(UploadQuery::parse([("force", "true")]).force);
        assert!(UploadQuery::parse([("force", "1")]).force);
        assert_eq!(UploadQuery::parse([("sha256", "")]).sha256, None);
        assert_eq!(UploadQuery::parse::<&str, &str>([]), UploadQuery::default());
    }

    #[test]
    fn quetz_statuses() {
        assert_eq!(quetz_status(ErrorCode::ChecksumMismatch), 406);
        assert_eq!(quetz_status(ErrorCode::AlreadyExists), 409);
        assert_eq!(quetz_status(ErrorCode::InvalidKey), 401);
        assert_eq!(quetz_status(ErrorCode::InvalidPackage), 422);
    }

    #[test]
    fn labels() {
        assert!(check_labels(&["main".into()]).is_ok());
        assert!(check_labels(&["main".into(), "main".into()]).is_ok());
        assert!(check_labels(&[]).is_ok());
        let error = check_labels(&["main".into(), "dev".into()]).unwrap_err();
        assert!(error.contains("'dev'"), "{error}");
    }

    #[test]
    fn dist_paths() {
        let dist =
            |name, version, filename| DistPath::parse("c", name, version, "noarch", filename);
        let zlib = dist("zlib", "1.2.11", "zlib-1.2.11-h7b6447c_3.conda").unwrap();
        assert_eq!(zlib.basename(), "noarch/zlib-1.2.11-h7b6447c_3.conda");
        let other = dist("zlib", "1.2.11", "zlib-1.2.1-h7b6447c_3.conda").unwrap_err();
        assert!(other.0.contains("is not a build of zlib 1.2.11"), "{other}");
        assert!(dist("zlib", "1.2", "zlibx-1.2-0.conda").is_err());
        assert!(dist("Zlib!", "1.2", "Zlib!-1.2-0.conda").is_err());
        assert!(dist("zlib", "1..2", "zlib-1..2-0.conda").is_err());
        // The path's own names first, in path order.
        let bad_subdir = DistPath::parse("c", "Zlib!", "1.2", "nowhere", "x.conda").unwrap_err();
        assert!(bad_subdir.0.contains("nowhere"), "{bad_subdir}");
        assert!(DistPath::parse("c", "zlib", "1.2", "noarch", "zlib-1.2-0.zip").is_err());
        assert!(check_name("python-dateutil").is_ok());
        assert!(check_version("2024.7.4").is_ok());
    }

    #[test]
    fn tickets() {
        let ticket = UploadTicket {
            channel: "c".into(),
            subdir: "noarch".into(),
            filename: "a-1-0.conda".into(),
            sha256: "0".repeat(64),
            key_id: 7,
            user: "u".into(),
            expires_at: 1_000,
        };
        assert!(ticket.check("c", 999).is_ok());
        assert!(ticket.check("c", 1_000).unwrap_err().contains("expired"));
        assert!(ticket
            .check("d", 0)
            .unwrap_err()
            .contains("another channel"));
        let back: UploadTicket =
            serde_json::from_str(&serde_json::to_string(&ticket).unwrap()).unwrap();
        assert_eq!(back, ticket);
    }

    #[test]
    fn content_md5_is_base64_of_the_digest() {
        // md5("") in hex and in base64.
        let hex = "d41d8cd98f00b204e9800998ecf8427e";
        assert!(content_md5_matches("1B2M2Y8AsgTpgAmY7PhCfg==", hex));
        assert!(content_md5_matches(
            " 1B2M2Y8AsgTpgAmY7PhCfg==\n",
            &hex.to_uppercase()
        ));
        assert!(!content_md5_matches("1B2M2Y8AsgTpgAmY7PhCfh==", hex));
        assert!(!content_md5_matches("not base64!", hex));
    }

    #[test]
    fn storage_errors_are_escaped_xml() {
        let error = ApiError::new(ErrorCode::InvalidPackage, "bad <name> & \"quote\"");
        assert_eq!(
            storage_error_xml(&error),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>invalid_package</Code>\
             <Message>bad &lt;name&gt; &amp; &quot;quote&quot;</Message></Error>"
        );
    }

    #[test]
    fn a_shard_gives_a_file_sha256() {
        let sha = "ab".repeat(32);
        let record = format!(
            r#"{{"name":"a","sha256":"{sha}","md5":"{}"}}"#,
            "cd".repeat(16)
        );
        let shard = crate::shards::build_shard([("a-1-0.conda", record.as_str())]);
        assert_eq!(shard_sha256(&shard.bytes, "a-1-0.conda"), Ok(Some(sha)));
        assert_eq!(shard_sha256(&shard.bytes, "a-1-0.tar.bz2"), Ok(None));
        assert!(shard_sha256(b"garbage", "a-1-0.conda").is_err());
    }
}
