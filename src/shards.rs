//! Sharded repodata (CEP 16): one zstd-compressed msgpack shard per package name, and a shard
//! index that names each shard by the SHA-256 of its compressed bytes.
//!
//! Shards are content-addressed, so their bytes must depend on nothing but their records:
//! map keys are sorted at every level and `md5`/`sha256` are binary, as rattler writes them.
//! They are written with rmpv rather than rattler's `Shard`/`ShardedRepodata` types: `Shard`
//! holds rattler's `PackageRecord`, which would drop fields that repodata.json serves (such as
//! `requires` or `preferred_env`), and `ShardedRepodata` keeps its shards in a hash map, whose
//! order, and so the index's bytes, would vary from run to run.

use rmpv::Value as Msgpack;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::repodata::sorted_keys;

/// Where shards live, relative to the shard index.
pub const SHARDS_BASE_URL: &str = "./shards/";
/// The shard index's file name in a subdir.
pub const INDEX_FILENAME: &str = "repodata_shards.msgpack.zst";

/// zstd level for shards and the shard index: small documents, written on every upload.
pub const SHARD_ZSTD_LEVEL: i32 = 19;

/// A compressed shard and its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    pub bytes: Vec<u8>,
    pub sha256: [u8; 32],
}

impl Shard {
    pub fn hex(&self) -> String {
        hex::encode(self.sha256)
    }
}

/// Where the shard with this (hex) hash lives inside its subdir.
pub fn shard_path(hex: &str) -> String {
    format!("shards/{hex}.msgpack.zst")
}

/// Is `name` the file name of a shard (`<64 hex digits>.msgpack.zst`)?
pub fn is_shard_filename(name: &str) -> bool {
    name.strip_suffix(".msgpack.zst").is_some_and(|hash| {
        hash.len() == 64
            && hash
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The shard of one package name from its records, given as (file name, canonical record JSON).
pub fn build_shard<'a>(records: impl IntoIterator<Item = (&'a str, &'a str)>) -> Shard {
    let mut tar_bz2 = Vec::new();
    let mut conda = Vec::new();
    for (filename, record) in records {
        let record: Value = serde_json::from_str(record).expect("stored records are valid JSON");
        let entry = (Msgpack::from(filename), record_to_msgpack(record));
        if filename.ends_with(".conda") {
            conda.push(entry);
        } else {
            tar_bz2.push(entry);
        }
    }
    tar_bz2.sort_by(|a, b| a.0.as_str().cmp(&b.0.as_str()));
    conda.sort_by(|a, b| a.0.as_str().cmp(&b.0.as_str()));
    let document = Msgpack::Map(vec![
        ("packages".into(), Msgpack::Map(tar_bz2)),
        ("packages.conda".into(), Msgpack::Map(conda)),
        ("removed".into(), Msgpack::Array(Vec::new())),
    ]);
    let bytes = compress(&encode(&document), SHARD_ZSTD_LEVEL);
    let sha256 = Sha256::digest(&bytes).into();
    Shard { bytes, sha256 }
}

/// The compressed shard index of a subdir: `shards` lists (package name, shard sha256).
pub fn build_index(subdir: &str, created_at: &str, shards: &[(String, [u8; 32])]) -> Vec<u8> {
    let mut entries: Vec<(Msgpack, Msgpack)> = shards
        .iter()
        .map(|(name, hash)| (Msgpack::from(name.as_str()), Msgpack::Binary(hash.to_vec())))
        .collect();
    entries.sort_by(|a, b| a.0.as_str().cmp(&b.0.as_str()));
    let document = Msgpack::Map(vec![
        (
            "info".into(),
            Msgpack::Map(vec![
                ("base_url".into(), "./".into()),
                ("created_at".into(), created_at.into()),
                ("shards_base_url".into(), SHARDS_BASE_URL.into()),
                ("subdir".into(), subdir.into()),
            ]),
        ),
        ("shards".into(), Msgpack::Map(entries)),
        ("version".into(), 1.into()),
    ]);
    compress(&encode(&document), SHARD_ZSTD_LEVEL)
}

fn encode(value: &Msgpack) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, value).expect("writing to a Vec cannot fail");
    out
}

pub fn compress(bytes: &[u8], level: i32) -> Vec<u8> {
    zstd::bulk::compress(bytes, level).expect("zstd compresses any input in memory")
}

/// A record as msgpack: keys sorted at every level, hex checksums as binary.
fn record_to_msgpack(record: Value) -> Msgpack {
    match sorted_keys(record) {
        Value::Object(map) => Msgpack::Map(
            map.into_iter()
                .map(|(key, value)| {
                    let value = match (key.as_str(), value.as_str().map(hex::decode)) {
                        ("md5" | "sha256", Some(Ok(bytes))) => Msgpack::Binary(bytes),
                        _ => json_to_msgpack(value),
                    };
                    (Msgpack::from(key), value)
                })
                .collect(),
        ),
        other => json_to_msgpack(other),
    }
}

/// JSON as msgpack, keeping the order of its keys.
fn json_to_msgpack(value: Value) -> Msgpack {
    match value {
        Value::Null => Msgpack::Nil,
        Value::Bool(b) => Msgpack::Boolean(b),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Msgpack::from(u),
            (None, Some(i), _) => Msgpack::from(i),
            (_, _, Some(f)) => Msgpack::F64(f),
            _ => Msgpack::Nil,
        },
        Value::String(s) => Msgpack::from(s),
        Value::Array(items) => Msgpack::Array(items.into_iter().map(json_to_msgpack).collect()),
        Value::Object(map) => Msgpack::Map(
            map.into_iter()
                .map(|(k, v)| (Msgpack::from(k), json_to_msgpack(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECORD: &str = r#"{"build":"0","depends":[],"md5":"00112233445566778899aabbccddeeff","name":"a","sha256":"0000000000000000000000000000000000000000000000000000000000000001","size":1,"version":"1"}"#;

    fn decode(bytes: &[u8]) -> Msgpack {
        let raw = zstd::decode_all(bytes).unwrap();
        rmpv::decode::read_value(&mut raw.as_slice()).unwrap()
    }

    #[test]
    fn shards_are_deterministic_and_content_addressed() {
        let one = build_shard([("a-1-0.tar.bz2", RECORD), ("a-1-0.conda", RECORD)]);
        let two = build_shard([("a-1-0.conda", RECORD), ("a-1-0.tar.bz2", RECORD)]);
        assert_eq!(one, two);
        assert_eq!(one.sha256, <[u8; 32]>::from(Sha256::digest(&one.bytes)));
        let path = shard_path(&one.hex());
        assert!(is_shard_filename(path.strip_prefix("shards/").unwrap()));
        assert!(!is_shard_filename("../x.msgpack.zst"));
    }

    #[test]
    fn checksums_are_binary_and_keys_sorted() {
        let shard = decode(&build_shard([("a-1-0.tar.bz2", RECORD)]).bytes);
        let record = &shard["packages"]["a-1-0.tar.bz2"];
        assert_eq!(record["sha256"].as_slice().unwrap().len(), 32);
        assert_eq!(record["md5"].as_slice().unwrap()[0], 0x00);
        let keys: Vec<_> = record
            .as_map()
            .unwrap()
            .iter()
            .map(|(k, _)| k.as_str().unwrap())
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(shard["removed"], Msgpack::Array(vec![]));
    }

    #[test]
    fn index_names_each_shard() {
        let index = decode(&build_index(
            "noarch",
            "2026-01-01T00:00:00Z",
            &[("b".into(), [2; 32]), ("a".into(), [1; 32])],
        ));
        assert_eq!(index["info"]["shards_base_url"].as_str(), Some("./shards/"));
        assert_eq!(index["info"]["subdir"].as_str(), Some("noarch"));
        let names: Vec<_> = index["shards"]
            .as_map()
            .unwrap()
            .iter()
            .map(|(k, _)| k.as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(index["shards"]["a"].as_slice(), Some(&[1u8; 32][..]));
    }
}

/// An upstream's shard index, as a mirror reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamIndex {
    /// Where its shards are, as it says (relative to the index's URL, or absolute).
    pub shards_base_url: String,
    /// Package name → hex SHA-256 of its shard.
    pub shards: std::collections::BTreeMap<String, String>,
}

/// Reads a compressed shard index of at most `max_bytes` uncompressed.
pub fn read_upstream_index(compressed: &[u8], max_bytes: usize) -> Result<UpstreamIndex, String> {
    let document = decode(compressed, max_bytes)?;
    let field = |map: &Msgpack, key: &str| {
        map.as_map()
            .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some(key)))
            .map(|(_, v)| v.clone())
    };
    let shards_base_url = field(&document, "info")
        .and_then(|info| field(&info, "shards_base_url"))
        .and_then(|url| url.as_str().map(str::to_owned))
        .unwrap_or_else(|| SHARDS_BASE_URL.to_owned());
    let Some(Msgpack::Map(entries)) = field(&document, "shards") else {
        return Err("the shard index has no shards map".into());
    };
    let shards = entries
        .into_iter()
        .map(|(name, hash)| match (name.as_str(), hash.as_slice()) {
            (Some(name), Some(hash)) if hash.len() == 32 => {
                Ok((name.to_owned(), hex::encode(hash)))
            }
            _ => Err("an entry of the shard index is not name → 32-byte hash".to_owned()),
        })
        .collect::<Result<_, _>>()?;
    Ok(UpstreamIndex {
        shards_base_url,
        shards,
    })
}

/// The records of a compressed shard of at most `max_bytes` uncompressed, as (file name,
/// record JSON with `md5` and `sha256` in hex, as repodata.json writes them).
pub fn read_shard(compressed: &[u8], max_bytes: usize) -> Result<Vec<(String, Value)>, String> {
    let document = decode(compressed, max_bytes)?;
    let mut records = Vec::new();
    for (key, map) in document.as_map().into_iter().flatten() {
        if !matches!(key.as_str(), Some("packages" | "packages.conda")) {
            continue;
        }
        let Msgpack::Map(entries) = map else {
            return Err("a record map of the shard is not a map".into());
        };
        for (filename, record) in entries {
            let Some(filename) = filename.as_str() else {
                return Err("a file name of the shard is not a string".into());
            };
            records.push((filename.to_owned(), msgpack_to_json(record)));
        }
    }
    Ok(records)
}

fn decode(compressed: &[u8], max_bytes: usize) -> Result<Msgpack, String> {
    let raw = crate::unzstd::decompress(compressed, max_bytes, "it")?;
    rmpv::decode::read_value(&mut raw.as_slice()).map_err(|e| format!("msgpack: {e}"))
}

/// msgpack as JSON; binary values (a record's `md5` and `sha256`) as hex.
fn msgpack_to_json(value: &Msgpack) -> Value {
    match value {
        Msgpack::Nil => Value::Null,
        Msgpack::Boolean(b) => Value::Bool(*b),
        Msgpack::Integer(i) => i
            .as_u64()
            .map(Value::from)
            .or_else(|| i.as_i64().map(Value::from))
            .unwrap_or(Value::Null),
        Msgpack::F32(f) => Value::from(f64::from(*f)),
        Msgpack::F64(f) => Value::from(*f),
        Msgpack::String(s) => Value::String(s.as_str().unwrap_or_default().to_owned()),
        Msgpack::Binary(bytes) => Value::String(hex::encode(bytes)),
        Msgpack::Array(items) => Value::Array(items.iter().map(msgpack_to_json).collect()),
        Msgpack::Map(entries) => Value::Object(
            entries
                .iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), msgpack_to_json(v))))
                .collect(),
        ),
        Msgpack::Ext(..) => Value::Null,
    }
}
