//! Mirror rules: parsing and validation, which records they admit, and the filtering of the
//! reference indexers' repodata.json files by them as they stream in, a record at a time; the
//! scanner on hostile input (truncated, garbage, a record over the bound).

use std::{fs, path::PathBuf};

use condaflare::mirror::{
    MirrorRecord, MirrorRules, MirrorRulesJson, RunExportsReader, UpstreamFilter,
    UpstreamRunExports, RECORD_MAPS,
};
use condaflare::repodata_scan::RepodataScanner;
use serde_json::{json, Value};

const DAY_MS: u64 = 24 * 3600 * 1000;
/// 2026-01-01, after every fixture's timestamp.
const NOW_MS: u64 = 1_767_225_600_000;

fn repodata(indexer: &str, subdir: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/reference")
        .join(indexer)
        .join(subdir)
        .join("repodata.json");
    fs::read(path).unwrap()
}

fn rules(value: Value) -> MirrorRules {
    MirrorRules::from_json(&value.to_string(), false).unwrap()
}

fn files(document: &[u8]) -> Vec<String> {
    let root: Value = serde_json::from_slice(document).unwrap();
    let mut names: Vec<String> = RECORD_MAPS
        .iter()
        .filter_map(|map| root.get(*map).and_then(Value::as_object))
        .flat_map(|records| records.keys().cloned())
        .collect();
    names.sort();
    names
}

#[test]
fn rules_are_read_with_defaults_and_trailing_slashes_removed() {
    let read = rules(json!({"url": "https://conda.example.org/forge/"}));
    assert_eq!(read.url, "https://conda.example.org/forge");
    assert!(read.allow.is_empty() && read.deny.is_empty());
    assert_eq!(read.min_age_days, 0);
    let read = rules(json!({
        "url": "https://conda.example.org/forge",
        "allow": ["zlib >=1.2", "test-package"],
        "deny": ["other-package 0.1.*"],
        "min_age_days": 3,
    }));
    assert_eq!(read.allow.len(), 2);
    assert_eq!(read.deny.len(), 1);
    assert_eq!(read.min_age_days, 3);
    let again = MirrorRules::from_parts(&read.to_json(), false).unwrap();
    assert_eq!(again, read);
}

#[test]
fn bad_rules_are_refused_with_a_sentence_naming_the_fault() {
    let refused = |value: Value, allow_http: bool| {
        MirrorRules::from_json(&value.to_string(), allow_http)
            .unwrap_err()
            .0
    };
    let message = refused(json!({"url": "http://127.0.0.1:9000/c"}), false);
    assert!(message.contains("MIRROR_ALLOW_HTTP"), "{message}");
    assert!(
        MirrorRules::from_json(&json!({"url": "http://127.0.0.1:9000/c"}).to_string(), true)
            .is_ok()
    );
    let message = refused(json!({"url": "ftp://example.org/c"}), true);
    assert!(message.contains("not an https URL"), "{message}");
    let message = refused(json!({"url": "https://"}), false);
    assert!(message.contains("needs a host"), "{message}");
    let message = refused(json!({"url": "https://example.org/c?x=1"}), false);
    assert!(message.contains("needs a host"), "{message}");
    let message = refused(
        json!({"url": "https://example.org/c", "allow": ["zlib >=>1"]}),
        false,
    );
    assert!(message.contains("'zlib >=>1' in allow"), "{message}");
    let message = refused(json!({"url": "https://example.org/c", "deny": [""]}), false);
    assert!(message.contains("in deny"), "{message}");
    let message = refused(
        json!({"url": "https://example.org/c", "min_age_days": -1}),
        false,
    );
    assert!(message.contains("min_age_days is -1"), "{message}");
    let message = refused(
        json!({"url": "https://example.org/c", "mirror": true}),
        false,
    );
    assert!(message.contains("unknown field"), "{message}");
    let message = refused(json!({"allow": []}), false);
    assert!(message.contains("url"), "{message}");
}

/// What a filter made of a whole document, fed in chunks of `chunk` bytes.
struct Filtered {
    records: Vec<MirrorRecord>,
    removed: usize,
    admits_more_at: Option<u64>,
}

impl Filtered {
    fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = self.records.iter().map(|r| r.filename.clone()).collect();
        names.sort();
        names
    }
}

fn filter(
    rules: &MirrorRules,
    subdir: &str,
    document: &[u8],
    now_ms: u64,
    chunk: usize,
) -> Result<Filtered, String> {
    let mut filter = UpstreamFilter::new(rules, subdir, now_ms, 1024 * 1024);
    let mut records = Vec::new();
    for part in document.chunks(chunk) {
        records.extend(filter.feed(part).map_err(|e| e.0)?);
    }
    let (removed, kept, admits_more_at) = (filter.removed, filter.kept, filter.admits_more_at);
    filter.finish().map_err(|e| e.0)?;
    assert_eq!(kept, records.len());
    Ok(Filtered {
        records,
        removed,
        admits_more_at,
    })
}

fn record_of<'a>(document: &'a Value, filename: &str) -> &'a Value {
    let map = if filename.ends_with(".conda") {
        "packages.conda"
    } else {
        "packages"
    };
    &document[map][filename]
}

#[test]
fn empty_rules_keep_every_record_as_the_upstream_wrote_it_whatever_the_chunks() {
    for indexer in ["rattler-index", "conda-index"] {
        for subdir in ["linux-64", "osx-64", "noarch", "win-64"] {
            let upstream = repodata(indexer, subdir);
            let document: Value = serde_json::from_slice(&upstream).unwrap();
            let everything = rules(json!({"url": "https://example.org/c"}));
            for chunk in [1, 7, 4096, upstream.len()] {
                let filtered = filter(&everything, subdir, &upstream, NOW_MS, chunk).unwrap();
                assert_eq!(filtered.removed, 0, "{indexer}/{subdir}");
                assert_eq!(filtered.files(), files(&upstream), "{indexer}/{subdir}");
                for record in &filtered.records {
                    let ours: Value = serde_json::from_str(&record.record).unwrap();
                    let mut theirs = record_of(&document, &record.filename).clone();
                    // Old records leave out the subdir, which the mirror writes in.
                    let fields = theirs.as_object_mut().unwrap();
                    fields.entry("subdir").or_insert(json!(subdir));
                    assert_eq!(ours, theirs, "{indexer}/{subdir}/{}", record.filename);
                    assert_eq!(record.sha256, theirs["sha256"].as_str().unwrap());
                    assert_eq!(record.name, theirs["name"].as_str().unwrap());
                }
            }
        }
    }
}

#[test]
fn allow_selects_and_deny_wins_in_both_record_maps() {
    let upstream = repodata("rattler-index", "linux-64");
    let filtered = filter(
        &rules(json!({
            "url": "https://example.org/c",
            "allow": ["zlib", "other-package"],
            "deny": ["other-package <0.2"],
        })),
        "linux-64",
        &upstream,
        NOW_MS,
        100,
    )
    .unwrap();
    assert_eq!(
        filtered.files(),
        [
            "other-package-0.2-0.conda",
            "other-package-0.2-0.tar.bz2",
            "zlib-1.2.11-h7b6447c_3.conda",
            "zlib-1.2.11-h7b6447c_3.tar.bz2",
        ]
    );
    assert_eq!(filtered.removed, 4);
}

#[test]
fn min_age_counts_from_the_timestamp_and_records_without_one_are_too_young() {
    let upstream = repodata("rattler-index", "noarch");
    // empty-0.1.0 was built 2025-08-11 (1754943403111); the others years before.
    let built = 1_754_943_403_111;
    let week = rules(json!({"url": "https://example.org/c", "min_age_days": 7}));
    let young = filter(&week, "noarch", &upstream, built + 6 * DAY_MS, 512).unwrap();
    let names = young.files();
    assert!(!names.contains(&"empty-0.1.0-h4616a5c_0.conda".to_string()));
    // flask and spiffy-test-app have no timestamp.
    assert!(!names.contains(&"flask-0.11.1-py_0.tar.bz2".to_string()));
    assert!(!names.contains(&"spiffy-test-app-0.5-pyh6afbcc8_0.tar.bz2".to_string()));
    assert!(names.contains(&"test_debug_pkg-1.0-0.tar.bz2".to_string()));
    assert_eq!(young.removed, 3);
    // The refresh that admits the young one is due when it is old enough.
    assert_eq!(young.admits_more_at, Some(built + 7 * DAY_MS));
    let old_enough = filter(&week, "noarch", &upstream, built + 7 * DAY_MS, 512).unwrap();
    assert!(old_enough
        .files()
        .contains(&"empty-0.1.0-h4616a5c_0.conda".to_string()));
    assert_eq!(old_enough.removed, 2);
    assert_eq!(old_enough.admits_more_at, None);
}

#[test]
fn records_without_a_subdir_take_the_documents() {
    // conda-index leaves out no subdir, so take one out: old channels' records do.
    let mut upstream: Value = serde_json::from_slice(&repodata("conda-index", "osx-64")).unwrap();
    let record = upstream["packages"]["nano-2.4.1-0.tar.bz2"]
        .as_object_mut()
        .unwrap();
    record.remove("subdir");
    let bytes = serde_json::to_vec(&upstream).unwrap();
    let filtered = filter(
        &rules(json!({"url": "https://example.org/c", "allow": ["nano"]})),
        "osx-64",
        &bytes,
        NOW_MS,
        64,
    )
    .unwrap();
    assert_eq!(filtered.files(), ["nano-2.4.1-0.tar.bz2"]);
    let stored: Value = serde_json::from_str(&filtered.records[0].record).unwrap();
    assert_eq!(stored["subdir"], "osx-64");
}

#[test]
fn a_record_without_a_sha256_or_unreadable_is_left_out() {
    let document = json!({
        "info": {"subdir": "noarch"},
        "packages": {
            "a-1-0.tar.bz2": {"name": "a", "version": "1", "build": "0", "build_number": 0,
                               "depends": [], "size": 10},
            "b-1-0.tar.bz2": {"name": "b", "version": "1", "build": "0", "build_number": 0,
                               "depends": [], "size": 10, "sha256": "ab".repeat(32)},
            "c-1-0.tar.bz2": {"name": 7},
        },
    })
    .to_string();
    let everything = rules(json!({"url": "https://example.org/c"}));
    let filtered = filter(&everything, "noarch", document.as_bytes(), NOW_MS, 5).unwrap();
    assert_eq!(filtered.files(), ["b-1-0.tar.bz2"]);
    assert_eq!(filtered.removed, 2);
}

#[test]
fn the_scanner_keeps_info_and_skips_everything_else() {
    let document = br#" { "removed" : ["x", {"y": [1, "}"]}], "info": {"subdir": "linux-64", "base_url": "a\"b"},
        "repodata_version": 2, "packages": {}, "packages.conda": {"f-1-0.conda": {"k": "v\\"}}} "#;
    for chunk in [1, 3, document.len()] {
        let mut scanner = RepodataScanner::new(1024);
        let mut records = Vec::new();
        for part in document.chunks(chunk) {
            records.extend(scanner.feed(part).unwrap());
        }
        let scanned = scanner.finish().unwrap();
        let info: Value = serde_json::from_slice(&scanned.info.unwrap()).unwrap();
        assert_eq!(info, json!({"subdir": "linux-64", "base_url": "a\"b"}));
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].map, "packages.conda");
        assert_eq!(records[0].filename, "f-1-0.conda");
        assert_eq!(records[0].bytes, br#"{"k": "v\\"}"#);
    }
}

fn scan(document: &[u8], max: usize) -> Result<usize, String> {
    let mut scanner = RepodataScanner::new(max);
    let mut count = 0;
    for part in document.chunks(9) {
        count += scanner.feed(part).map_err(|e| e.0)?.len();
    }
    scanner.finish().map_err(|e| e.0)?;
    Ok(count)
}

#[test]
fn a_truncated_document_is_an_error_wherever_it_is_cut() {
    let upstream = repodata("rattler-index", "linux-64");
    assert_eq!(scan(&upstream, 1 << 20).unwrap(), files(&upstream).len());
    let trimmed = upstream.trim_ascii_end();
    for cut in (0..trimmed.len()).step_by(37).chain([trimmed.len() - 1]) {
        let error = scan(&trimmed[..cut], 1 << 20).unwrap_err();
        assert!(error.contains("truncated"), "cut at {cut}: {error}");
    }
}

#[test]
fn garbage_is_an_error_naming_where() {
    for (document, fault) in [
        (&b"<html>not found</html>"[..], "'<' at byte 0"),
        (b"[]", "'[' at byte 0"),
        (b"{\"packages\": []}", "the object of 'packages'"),
        (
            b"{\"packages\": {\"a.conda\": 1}}",
            "the record of 'a.conda'",
        ),
        (b"{\"packages\": {\"a.conda\" {}}}", "':'"),
        (b"{\"info\": {}} trailing", "'t'"),
        (b"{\"info\": {} \"x\": 1}", "',' or '}'"),
        (b"{\"info\": @}", "starts with '@'"),
        (b"{\"packages\": {\"a.conda\": {}, }}", "a file name"),
    ] {
        let error = scan(document, 1024).unwrap_err();
        assert!(error.contains(fault), "{error} lacks {fault}");
    }
}

#[test]
fn a_record_over_the_bound_is_an_error_naming_it_and_the_setting() {
    let big = format!(
        "{{\"packages.conda\": {{\"big-1-0.conda\": {{\"depends\": [\"{}\"]}}}}}}",
        "x".repeat(5000)
    );
    let error = scan(big.as_bytes(), 4096).unwrap_err();
    assert!(error.contains("'big-1-0.conda'"), "{error}");
    assert!(error.contains("4096 bytes"), "{error}");
    assert!(error.contains("MIRROR_MAX_RECORD_BYTES"), "{error}");
    assert_eq!(scan(big.as_bytes(), 8192).unwrap(), 1);
    // A file name is bounded alike.
    let long_name = format!("{{\"packages\": {{\"{}\": {{}}}}}}", "n".repeat(5000));
    assert!(scan(long_name.as_bytes(), 4096)
        .unwrap_err()
        .contains("a file name"));
}

fn read_run_exports(document: &[u8], chunk: usize) -> Result<Vec<UpstreamRunExports>, String> {
    let mut reader = RunExportsReader::new(1024);
    let mut entries = Vec::new();
    for part in document.chunks(chunk) {
        entries.extend(reader.feed(part).map_err(|e| e.0)?);
    }
    reader.finish().map_err(|e| e.0)?;
    Ok(entries)
}

#[test]
fn run_exports_json_is_read_an_entry_at_a_time_with_canonical_run_exports() {
    let document = br#"{"info": {"subdir": "linux-64"}, "packages": {"a-1-0.tar.bz2":
        {"run_exports": {"weak": ["a >=1,<2"], "strong": ["s"]}}}, "packages.conda":
        {"b-1-0.conda": {"run_exports": {}}, "c-1-0.conda": {"run_exports": {"noarch": ["c"]}, "other": 1}}}"#;
    for chunk in [1, 7, document.len()] {
        let entries = read_run_exports(document, chunk).unwrap();
        let got: Vec<(&str, &str)> = entries
            .iter()
            .map(|e| (e.filename.as_str(), e.run_exports.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("a-1-0.tar.bz2", r#"{"strong":["s"],"weak":["a >=1,<2"]}"#),
                ("b-1-0.conda", "{}"),
                ("c-1-0.conda", r#"{"noarch":["c"]}"#),
            ]
        );
    }
    for (document, fault) in [
        (
            &br#"{"packages": {"a.conda": {"depends": []}}}"#[..],
            "'a.conda' has no run_exports",
        ),
        (
            br#"{"packages": {"a.conda": {"run_exports": ["x"]}}}"#,
            "'a.conda' has no run_exports",
        ),
        (
            br#"{"packages": {"a.conda": {"run_exports": {}}"#,
            "truncated",
        ),
        (b"<html>", "'<' at byte 0"),
    ] {
        let error = read_run_exports(document, 3).unwrap_err();
        assert!(error.contains("run_exports.json is not valid"), "{error}");
        assert!(error.contains(fault), "{error} lacks {fault}");
    }
}

#[test]
fn rules_json_round_trips() {
    let text = r#"{"url":"https://example.org/c","allow":["zlib"],"deny":[],"min_age_days":2}"#;
    let json: MirrorRulesJson = serde_json::from_str(text).unwrap();
    assert_eq!(serde_json::to_string(&json).unwrap(), text);
}

#[test]
fn a_mirror_refuses_uploads_and_deletes_with_a_conflict() {
    use condaflare::{access::Action, mirror::refusal};
    for action in [Action::Write, Action::Delete] {
        let refused = refusal(action).unwrap();
        assert_eq!(refused.status(), 409);
        assert!(refused.message.contains("mirror"), "{refused}");
    }
    for action in [
        Action::Read,
        Action::Manage,
        Action::Inspect,
        Action::Repair,
    ] {
        assert!(refusal(action).is_none());
    }
}

#[test]
fn upstream_failures_name_the_upstream_with_their_status() {
    use condaflare::mirror::UpstreamFailure;
    let url = "https://conda.example.org/c/noarch/repodata.json";
    for (failure, status) in [
        (UpstreamFailure::Missing, 404),
        (UpstreamFailure::Failed("HTTP 503".into()), 502),
        (UpstreamFailure::TimedOut(2500), 504),
    ] {
        let error = failure.error(url);
        assert_eq!(error.status(), status);
        assert!(error.message.contains(url), "{error}");
    }
    let timed_out = UpstreamFailure::TimedOut(2500).error(url);
    assert!(timed_out.message.ends_with("within 2.5 s"), "{timed_out}");
}

#[test]
fn a_copy_is_revalidated_once_its_time_is_up() {
    use condaflare::mirror::needs_revalidation;
    assert!(!needs_revalidation(1_000, 60_999, 60_000));
    assert!(needs_revalidation(1_000, 61_000, 60_000));
    assert!(needs_revalidation(1_000, 1_000, 0));
    // A clock behind the copy's time: not yet.
    assert!(!needs_revalidation(5_000, 1_000, 60_000));
}

#[test]
fn shards_are_fetched_under_the_index_or_an_absolute_base_of_its_scheme() {
    use condaflare::mirror::shard_base_url;
    let index = "http://127.0.0.1:9/c/linux-64/repodata_shards.msgpack.zst";
    assert_eq!(
        shard_base_url(index, "./shards/").unwrap(),
        "http://127.0.0.1:9/c/linux-64/shards/"
    );
    assert_eq!(
        shard_base_url(index, "shards").unwrap(),
        "http://127.0.0.1:9/c/linux-64/shards/"
    );
    assert_eq!(
        shard_base_url(index, "https://cdn.example.org/s/").unwrap(),
        "https://cdn.example.org/s/"
    );
    let https = "https://conda.example.org/c/noarch/repodata_shards.msgpack.zst";
    assert!(shard_base_url(https, "http://cdn.example.org/s/")
        .unwrap_err()
        .contains("scheme"));
}

#[test]
fn credentials_name_a_secret_and_round_trip() {
    let read = rules(
        json!({"url": "https://conda.example.org/private", "credentials": "UPSTREAM_TOKEN_2"}),
    );
    assert_eq!(read.credentials.as_deref(), Some("UPSTREAM_TOKEN_2"));
    let shown = serde_json::to_value(read.to_json()).unwrap();
    assert_eq!(shown["credentials"], "UPSTREAM_TOKEN_2");
    // Rules without credentials show none.
    let plain =
        serde_json::to_value(rules(json!({"url": "https://example.org/c"})).to_json()).unwrap();
    assert!(plain.get("credentials").is_none());
    for bad in [
        "",
        "token",
        "2TOKEN",
        "TOKEN-X",
        "Bearer abc",
        &"A".repeat(65),
    ] {
        let refused = MirrorRules::from_json(
            &json!({"url": "https://example.org/c", "credentials": bad}).to_string(),
            false,
        )
        .unwrap_err()
        .0;
        assert!(refused.contains("Worker secret"), "{bad}: {refused}");
        assert!(!refused.contains(bad) || bad.is_empty(), "{refused}");
    }
}

#[test]
fn redirects_are_followed_to_https_only_unless_http_is_allowed() {
    use condaflare::mirror::redirect_target;
    let from = "https://up.example.org/c/noarch/repodata.json";
    assert_eq!(
        redirect_target(from, "https://cdn.example.org/x/repodata.json", false).unwrap(),
        "https://cdn.example.org/x/repodata.json"
    );
    assert_eq!(
        redirect_target(from, "/other/noarch/repodata.json", false).unwrap(),
        "https://up.example.org/other/noarch/repodata.json"
    );
    assert_eq!(
        redirect_target(from, "//cdn.example.org/y", false).unwrap(),
        "https://cdn.example.org/y"
    );
    assert_eq!(
        redirect_target(from, "repodata2.json", false).unwrap(),
        "https://up.example.org/c/noarch/repodata2.json"
    );
    let downgrade = redirect_target(from, "http://up.example.org/c/noarch/repodata.json", false);
    assert!(downgrade.unwrap_err().contains("not https"));
    assert!(redirect_target(from, "ftp://up.example.org/x", true).is_err());
    assert!(redirect_target(from, "javascript:alert(1)", true).is_err());
    let local = "http://127.0.0.1:8000/c/noarch/x.conda";
    assert_eq!(
        redirect_target(local, "/d/noarch/x.conda", true).unwrap(),
        "http://127.0.0.1:8000/d/noarch/x.conda"
    );
    assert!(redirect_target(local, "/d/noarch/x.conda", false).is_err());
}

#[test]
fn an_origin_is_scheme_host_and_port() {
    use condaflare::mirror::origin;
    assert_eq!(
        origin("https://Up.Example.org/c/x?y").as_deref(),
        Some("https://up.example.org")
    );
    assert_eq!(
        origin("http://127.0.0.1:8000/c").as_deref(),
        Some("http://127.0.0.1:8000")
    );
    assert_ne!(
        origin("http://127.0.0.1:8000/c"),
        origin("http://127.0.0.1:8001/c")
    );
    assert_ne!(
        origin("https://a.example.org/c"),
        origin("http://a.example.org/c")
    );
    assert_eq!(origin("not a url"), None);
}

#[test]
fn kept_files_are_the_package_files_below_a_subdir() {
    use condaflare::mirror_state::kept_file;
    assert_eq!(
        kept_file("linux-64/zlib-1.2.11-h7b6447c_3.conda"),
        Some(("linux-64", "zlib-1.2.11-h7b6447c_3.conda"))
    );
    assert_eq!(
        kept_file("noarch/flask-0.11.1-py_0.tar.bz2"),
        Some(("noarch", "flask-0.11.1-py_0.tar.bz2"))
    );
    // Index copies, shards, attestations and anything else are not.
    for path in [
        "linux-64/repodata.json",
        "linux-64/repodata.json.zst",
        "linux-64/run_exports.json",
        "linux-64/repodata_shards.msgpack.zst",
        &format!("linux-64/shards/{}.msgpack.zst", "a".repeat(64)),
        "linux-64/zlib-1.2.11-h7b6447c_3.conda.v0.sigs",
        "no-such-subdir/zlib-1.2.11-h7b6447c_3.conda",
        "zlib-1.2.11-h7b6447c_3.conda",
        "linux-64/notes.txt",
        "",
    ] {
        assert_eq!(kept_file(path), None, "{path}");
    }
}

#[test]
fn the_kept_files_query_takes_a_cursor_and_a_limit() {
    use condaflare::mirror_state::{KeptQuery, DEFAULT_LIMIT, MAX_LIMIT};
    let none: [(&str, &str); 0] = [];
    assert_eq!(
        KeptQuery::from_query(none).unwrap(),
        KeptQuery {
            after: None,
            limit: DEFAULT_LIMIT
        }
    );
    let read = KeptQuery::from_query([
        ("cursor", "noarch/flask-0.11.1-py_0.tar.bz2"),
        ("limit", "7"),
        ("other", "ignored"),
    ])
    .unwrap();
    assert_eq!(
        read,
        KeptQuery {
            after: Some("noarch/flask-0.11.1-py_0.tar.bz2".into()),
            limit: 7
        }
    );
    assert_eq!(KeptQuery::from_query([("cursor", "")]).unwrap().after, None);
    let max = MAX_LIMIT.to_string();
    assert_eq!(
        KeptQuery::from_query([("limit", max.as_str())])
            .unwrap()
            .limit,
        MAX_LIMIT
    );
    for (key, value, fault) in [
        ("cursor", "noarch/repodata.json", "cursor"),
        ("cursor", "../other/x-1-0.conda", "cursor"),
        ("limit", "0", "limit"),
        ("limit", "1001", "limit"),
        ("limit", "ten", "limit"),
    ] {
        let refused = KeptQuery::from_query([(key, value)]).unwrap_err();
        assert!(refused.contains(fault), "{key}={value}: {refused}");
    }
}

#[test]
fn freshness_is_the_age_of_the_last_fetch() {
    use condaflare::mirror_state::SubdirFreshness;
    let fresh = SubdirFreshness::new("noarch".into(), NOW_MS - 42_500, false, NOW_MS);
    assert_eq!(fresh.age_seconds, 42);
    assert_eq!(fresh.fetched_at, NOW_MS - 42_500);
    // A clock behind the stored time says 0, not a wrapped number.
    assert_eq!(
        SubdirFreshness::new("noarch".into(), NOW_MS + 5, true, NOW_MS).age_seconds,
        0
    );
}
