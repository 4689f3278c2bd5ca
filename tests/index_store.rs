//! The channel index's statements run against real SQLite, as its Durable Object runs them:
//! the schema fresh and over an older one, the marks and their numbering, intents,
//! retirements, records and who published them, the pages the builds read, the check's
//! queries and browsing.

use condaflare::browse::{BrowseQuery, Cursor, Group};
use condaflare::index_plan::{ObjectIntent, Pages, PAGE_ROWS};
use condaflare::index_store::{
    DirectUpload, Figures, IndexStore, Intent, Mark, MirrorSubdir, NameRow, NewRecord, RecordSize,
    ShardEntry, StaleSubdir, StoredFile, StoredWork, SubdirRows, UpstreamFile,
};
use condaflare::mirror::{MirrorRecord, UpstreamRunExports};
use condaflare::provenance::{Provenance, WorkflowRun};
use condaflare::sqlite;
use condaflare::statement::Statement;
use rusqlite::Connection;
use serde_json::Value;

const CHANNEL: &str = "chan";

/// A database with the schema applied.
fn fresh() -> Connection {
    let conn = Connection::open_in_memory().unwrap();
    IndexStore::new(&conn).migrate().unwrap();
    conn
}

fn query(conn: &Connection, sql: &'static str) -> Vec<Value> {
    sqlite::rows(conn, &Statement::new(sql, Vec::new())).unwrap()
}

/// The column names of a table.
fn columns(conn: &Connection, table: &str) -> Vec<String> {
    let mut prepared = conn
        .prepare("SELECT name FROM pragma_table_info(?1)")
        .unwrap();
    prepared
        .query_map([table], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn record(name: &str, version: &str, build_number: u64) -> String {
    serde_json::json!({
        "name": name,
        "version": version,
        "build": format!("h_{build_number}"),
        "build_number": build_number,
        "depends": [],
        "size": 100 + build_number,
    })
    .to_string()
}

fn key(subdir: &str, filename: &str) -> String {
    format!("{CHANNEL}/{subdir}/{filename}")
}

fn published_by(user: &str, key: &str) -> Provenance {
    Provenance {
        user: user.into(),
        key: key.into(),
        workflow: None,
    }
}

/// Commits a file the way the object does: both stretches, the object written in between.
fn commit(
    store: &IndexStore<'_, Connection>,
    subdir: &str,
    filename: &str,
    version: &str,
    at: u64,
) {
    commit_as(
        store,
        subdir,
        filename,
        version,
        at,
        &published_by("alice", "tests"),
    );
}

/// [`commit`] by another publisher.
fn commit_as(
    store: &IndexStore<'_, Connection>,
    subdir: &str,
    filename: &str,
    version: &str,
    at: u64,
    provenance: &Provenance,
) {
    let name = filename.split('-').next().unwrap();
    let record = record(name, version, 0);
    let file = NewRecord {
        subdir,
        filename,
        name,
        sha256: "aa",
        record: &record,
        run_exports: None,
        about: None,
        indexed_at: at,
        provenance: Some(provenance),
    };
    let replaces = store.stored(subdir, filename).unwrap().is_some();
    let key = key(subdir, filename);
    let replacing = replaces.then_some(name);
    store
        .begin_commit(CHANNEL, subdir, filename, replacing, &key, at)
        .unwrap();
    store.finish_commit(CHANNEL, &file, &key).unwrap();
}

/// What a build of `subdir` does at its end: it releases the marks it claimed.
fn build_done(store: &IndexStore<'_, Connection>, subdir: &str) {
    store
        .release_dirty(subdir, &store.dirty_marks(subdir).unwrap())
        .unwrap();
    store
        .release_stale(subdir, store.stale_mark(subdir).unwrap().unwrap())
        .unwrap();
}

fn mark(name: &str, mark: i64) -> Mark {
    Mark {
        name: name.into(),
        mark,
    }
}

fn sorted(mut marks: Vec<Mark>) -> Vec<Mark> {
    marks.sort_by(|a, b| a.name.cmp(&b.name));
    marks
}

#[test]
fn the_schema_applies_fresh_and_again() {
    let conn = fresh();
    IndexStore::new(&conn).migrate().unwrap();
    let tables: Vec<String> = query(
        &conn,
        "SELECT name FROM sqlite_master WHERE type IN ('table', 'index') \
         AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .into_iter()
    .map(|row| row["name"].as_str().unwrap().to_owned())
    .collect();
    assert_eq!(
        tables,
        [
            "channel_name",
            "direct_uploads",
            "dirty",
            "mirror_staging",
            "mirror_subdirs",
            "packages",
            "packages_by_name",
            "packages_by_name_only",
            "packages_by_time",
            "pending_objects",
            "retired_shards",
            "shards",
            "stale_repodata",
            "upstream_shards",
        ]
    );
    assert_eq!(columns(&conn, "dirty"), ["subdir", "name", "mark"]);
    assert_eq!(
        columns(&conn, "stale_repodata"),
        ["subdir", "channel", "since", "mark"]
    );
    assert_eq!(
        columns(&conn, "packages"),
        [
            "subdir",
            "filename",
            "name",
            "sha256",
            "record",
            "run_exports",
            "about",
            "indexed_at",
            "provenance",
            "origin"
        ]
    );
}

#[test]
fn an_older_packages_table_gains_provenance_and_its_rows_show_as_unknown() {
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch(
        "CREATE TABLE packages (subdir TEXT NOT NULL, filename TEXT NOT NULL, name TEXT NOT NULL,
             sha256 TEXT NOT NULL, record TEXT NOT NULL, run_exports TEXT, about TEXT,
             indexed_at INTEGER NOT NULL, PRIMARY KEY (subdir, filename));",
    )
    .unwrap();
    conn.execute(
        "INSERT INTO packages VALUES ('noarch', 'old-1-0.conda', 'old', 'aa', ?1, NULL, NULL, 5)",
        [record("old", "1", 0)],
    )
    .unwrap();
    let store = IndexStore::new(&conn);
    store.migrate().unwrap();
    assert_eq!(columns(&conn, "packages").last().unwrap(), "origin");
    // The row is kept, its publisher unknown; a file committed now records its own.
    commit(&store, "noarch", "old-2-0.conda", "2", 9);
    let records = store.package(CHANNEL, "old").unwrap().unwrap().records;
    let publishers: Vec<_> = records
        .iter()
        .map(|r| (r.version.as_str(), r.provenance.clone()))
        .collect();
    assert_eq!(
        publishers,
        [("2", Some(published_by("alice", "tests"))), ("1", None)]
    );
    // Applying it again changes nothing.
    store.migrate().unwrap();
    assert_eq!(
        store.package(CHANNEL, "old").unwrap().unwrap().records,
        records
    );
}

#[test]
fn a_commit_records_its_publisher_beside_the_record_and_a_replacement_its_own() {
    let conn = fresh();
    let store = IndexStore::new(&conn);
    let ci = Provenance {
        workflow: Some(WorkflowRun {
            publisher: 7,
            issuer: "https://token.actions.githubusercontent.com".into(),
            repository: "org/<b>repo</b>".into(),
            workflow: Some("release.yml".into()),
            run_id: Some("1234".into()),
            git_ref: Some("refs/tags/v1.0".into()),
            commit: Some("0123abcd".into()),
            environment: Some("release".into()),
        }),
        ..published_by("bot", "minted")
    };
    commit_as(&store, "noarch", "a-1-0.conda", "1", 5, &ci);
    commit(&store, "linux-64", "a-1-0.conda", "1", 6);
    let publishers = |store: &IndexStore<'_, Connection>| -> Vec<(String, Option<Provenance>)> {
        let mut found: Vec<_> = store
            .package(CHANNEL, "a")
            .unwrap()
            .unwrap()
            .records
            .into_iter()
            .map(|r| (r.subdir, r.provenance))
            .collect();
        found.sort_by(|x, y| x.0.cmp(&y.0));
        found
    };
    assert_eq!(
        publishers(&store),
        [
            ("linux-64".into(), Some(published_by("alice", "tests"))),
            ("noarch".into(), Some(ci.clone())),
        ]
    );
    // Only the record goes into what the builds read: no publisher in it.
    let mut pages = Pages::default();
    let mut read = Vec::new();
    while let Some(page) = pages.next() {
        let rows = store.page("noarch", &page).unwrap();
        pages.advance(rows.len(), rows.last().map(|row| row.filename.as_str()));
        read.extend(rows);
    }
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].record, record("a", "1", 0));
    assert!(!read[0].record.contains("bot") && !read[0].record.contains("minted"));
    assert_eq!(
        store.name_rows("noarch", "a").unwrap()[0].record,
        record("a", "1", 0)
    );
    // A replacement is recorded as its publisher's.
    commit_as(
        &store,
        "noarch",
        "a-1-0.conda",
        "1",
        8,
        &published_by("carol", "laptop"),
    );
    assert_eq!(
        publishers(&store),
        [
            ("linux-64".into(), Some(published_by("alice", "tests"))),
            ("noarch".into(), Some(published_by("carol", "laptop"))),
        ]
    );
    // Marking everything for a rebuild leaves the rows, publishers included, as they are.
    store.mark_everything(CHANNEL, 9).unwrap();
    assert_eq!(
        publishers(&store)[1].1,
        Some(published_by("carol", "laptop"))
    );
}

#[test]
fn an_older_schema_gains_the_mark_columns_and_keeps_its_marks() {
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch(
        "CREATE TABLE dirty (subdir TEXT NOT NULL, name TEXT NOT NULL, PRIMARY KEY (subdir, name));
         CREATE TABLE stale_repodata (subdir TEXT PRIMARY KEY, channel TEXT NOT NULL,
             since INTEGER NOT NULL);
         INSERT INTO dirty VALUES ('noarch', 'old');
         INSERT INTO stale_repodata VALUES ('noarch', 'chan', 5);",
    )
    .unwrap();
    let store = IndexStore::new(&conn);
    store.migrate().unwrap();
    assert_eq!(columns(&conn, "dirty"), ["subdir", "name", "mark"]);
    assert_eq!(
        columns(&conn, "stale_repodata"),
        ["subdir", "channel", "since", "mark"]
    );
    // The marks held before are kept, numbered 0: below any a build claims from now on.
    assert_eq!(store.dirty_marks("noarch").unwrap(), [mark("old", 0)]);
    assert_eq!(store.stale_mark("noarch").unwrap(), Some(0));
    store.mark_dirty("noarch", "new").unwrap();
    assert_eq!(
        sorted(store.dirty_marks("noarch").unwrap()),
        [mark("new", 1), mark("old", 0)]
    );
    // Applying it again changes nothing.
    store.migrate().unwrap();
    assert_eq!(store.dirty_marks("noarch").unwrap().len(), 2);
}

#[test]
fn a_step_that_fails_stops_the_schema_with_its_error() {
    let conn = Connection::open_in_memory().unwrap();
    // A packages table without the name column the index by name needs.
    conn.execute_batch("CREATE TABLE packages (subdir TEXT, filename TEXT)")
        .unwrap();
    let error = IndexStore::new(&conn).migrate().unwrap_err();
    assert!(error.to_string().contains("name"), "{error}");
    // The steps after it did not run.
    assert!(columns(&conn, "dirty").is_empty());
}

#[test]
fn a_mark_is_numbered_above_every_mark_held() {
    let conn = fresh();
    let store = IndexStore::new(&conn);
    store.mark_dirty("noarch", "a").unwrap();
    store.mark_dirty("linux-64", "b").unwrap();
    store.mark_dirty("noarch", "a").unwrap();
    assert_eq!(store.dirty_marks("noarch").unwrap(), [mark("a", 3)]);
    assert_eq!(store.dirty_marks("linux-64").unwrap(), [mark("b", 2)]);
    commit(&store, "noarch", "c-1-0.conda", "1", 10);
    commit(&store, "linux-64", "c-1-0.conda", "1", 11);
    commit(&store, "noarch", "d-1-0.conda", "1", 12);
    assert_eq!(
        sorted(store.dirty_marks("noarch").unwrap()),
        [mark("a", 3), mark("c", 4), mark("d", 6)]
    );
    // Stale marks are numbered on their own.
    assert_eq!(store.stale_mark("linux-64").unwrap(), Some(2));
    assert_eq!(store.stale_mark("noarch").unwrap(), Some(3));
    assert_eq!(store.stale_mark("osx-64").unwrap(), None);
}

#[test]
fn a_build_releases_only_the_marks_it_claimed() {
    let conn = fresh();
    let store = IndexStore::new(&conn);
    store.mark_dirty("noarch", "a").unwrap();
    store.mark_dirty("noarch", "b").unwrap();
    store.mark_dirty("linux-64", "a").unwrap();
    let claimed = store.dirty_marks("noarch").unwrap();
    // While the build runs, b changes again and c changes for the first time.
    store.mark_dirty("noarch", "b").unwrap();
    store.mark_dirty("noarch", "c").unwrap();
    store.release_dirty("noarch", &claimed).unwrap();
    assert_eq!(
        sorted(store.dirty_marks("noarch").unwrap()),
        [mark("b", 4), mark("c", 5)]
    );
    // Another subdir's marks are not touched.
    assert_eq!(store.dirty_marks("linux-64").unwrap(), [mark("a", 3)]);
    assert_eq!(store.dirty_count().unwrap(), 3);

    commit(&store, "noarch", "a-1-0.conda", "1", 10);
    let claimed = store.stale_mark("noarch").unwrap().unwrap();
    commit(&store, "noarch", "a-2-0.conda", "2", 11);
    store.release_stale("noarch", claimed).unwrap();
    assert_eq!(store.stale_mark("noarch").unwrap(), Some(claimed + 1));
    store.release_stale("noarch", claimed + 1).unwrap();
    assert_eq!(store.stale_mark("noarch").unwrap(), None);
}

#[test]
fn marking_everything_numbers_above_a_build_under_way() {
    let conn = fresh();
    let store = IndexStore::new(&conn);
    commit(&store, "noarch", "a-1-0.conda", "1", 10);
    commit(&store, "noarch", "a-2-0.conda", "2", 11);
    commit(&store, "linux-64", "b-1-0.conda", "1", 12);
    let claimed = store.dirty_marks("noarch").unwrap();
    let stale = store.stale_mark("noarch").unwrap().unwrap();
    assert_eq!(
        store.mark_everything(CHANNEL, 20).unwrap(),
        ["linux-64", "noarch"]
    );
    store.release_dirty("noarch", &claimed).unwrap();
    store.release_stale("noarch", stale).unwrap();
    // Every name takes the same number, above the held ones.
    assert_eq!(store.dirty_marks("noarch").unwrap(), [mark("a", 4)]);
    assert_eq!(store.dirty_marks("linux-64").unwrap(), [mark("b", 4)]);
    assert_eq!(store.stale_mark("noarch").unwrap(), Some(4));
    assert_eq!(store.stale_mark("linux-64").unwrap(), Some(4));
    // The first stale mark's time stays.
    assert_eq!(
        store.stale().unwrap(),
        [
            StaleSubdir {
                subdir: "linux-64".into(),
                since: 12
            },
            StaleSubdir {
                subdir: "noarch".into(),
                since: 10
            },
        ]
    );
}

#[test]
fn a_repair_marks_keep_the_number_held_and_new_ones_take_zero() {
    let conn = fresh();
    let store = IndexStore::new(&conn);
    store.mark_dirty("noarch", "a").unwrap();
    store.mark_dirty_for_repair("noarch", "a").unwrap();
    store.mark_dirty_for_repair("noarch", "b").unwrap();
    assert_eq!(
        sorted(store.dirty_marks("noarch").unwrap()),
        [mark("a", 1), mark("b", 0)]
    );
    commit(&store, "noarch", "c-1-0.conda", "1", 10);
    store.mark_stale_for_repair(CHANNEL, "noarch", 50).unwrap();
    store.mark_stale_for_repair(CHANNEL, "osx-64", 60).unwrap();
    assert_eq!(store.stale_mark("noarch").unwrap(), Some(1));
    assert_eq!(store.stale_mark("osx-64").unwrap(), Some(0));
    assert_eq!(store.stale().unwrap()[0].since, 10);
    assert_eq!(store.stale_subdirs().unwrap(), ["noarch", "osx-64"]);
}

#[test]
fn a_commit_holds_an_intent_until_its_record_is_stored() {
    let conn = fresh();
    let store = IndexStore::new(&conn);
    let record = record("a", "1", 0);
    let file = NewRecord {
        subdir: "noarch",
        filename: "a-1-0.conda",
        name: "a",
        sha256: "aa",
        record: &record,
        run_exports: Some("{\"weak\": []}"),
        about: Some("{\"summary\": \"A\"}"),
        indexed_at: 7,
        provenance: Some(&published_by("alice", "tests")),
    };
    let key = key("noarch", "a-1-0.conda");
    store
        .begin_commit(CHANNEL, "noarch", "a-1-0.conda", None, &key, 5)
        .unwrap();
    // Cut short here: the intent is held, no record names the object and nothing is marked.
    assert_eq!(
        store.intents().unwrap(),
        [Intent {
            key: key.clone(),
            action: ObjectIntent::Place,
            subdir: "noarch".into(),
            filename: "a-1-0.conda".into(),
        }]
    );
    assert_eq!(store.stored("noarch", "a-1-0.conda").unwrap(), None);
    assert!(store.dirty_marks("noarch").unwrap().is_empty());
    assert_eq!(
        store.stored_work().unwrap(),
        StoredWork {
            unfinished: true,
            oldest_retired: None
        }
    );

    store.finish_commit(CHANNEL, &file, &key).unwrap();
    assert!(store.intents().unwrap().is_empty());
    assert_eq!(
        store.stored("noarch", "a-1-0.conda").unwrap(),
        Some(StoredFile {
            sha256: "aa".into(),
            record: record.clone(),
        })
    );
    assert_eq!(store.dirty_marks("noarch").unwrap(), [mark("a", 1)]);
    assert_eq!(
        store.stale().unwrap(),
        [StaleSubdir {
            subdir: "noarch".into(),
            since: 7
        }]
    );
    let rows = query(&conn, "SELECT * FROM packages");
    assert_eq!(rows[0]["run_exports"], "{\"weak\": []}");
    assert_eq!(rows[0]["about"], "{\"summary\": \"A\"}");
    assert_eq!(rows[0]["indexed_at"], 7);
    assert_eq!(rows[0]["provenance"], r#"{"user":"alice","key":"tests"}"#);
}

#[test]
fn a_replacing_commit_removes_the_old_record_before_its_object_is_written() {
    let conn = fresh();
    let store = IndexStore::new(&conn);
    commit(&store, "noarch", "a-1-0.conda", "1", 5);
    let claimed = store.dirty_marks("noarch").unwrap();
    store.release_dirty("noarch", &claimed).unwrap();
    let record = record("a", "1", 1);
    let file = NewRecord {
        subdir: "noarch",
        filename: "a-1-0.conda",
        name: "a",
        sha256: "bb",
        record: &record,
        run_exports: None,
        about: None,
        indexed_at: 9,
        provenance: None,
    };
    let key = key("noarch", "a-1-0.conda");
    store
        .begin_commit(CHANNEL, "noarch", "a-1-0.conda", Some("a"), &key, 8)
        .unwrap();
    assert_eq!(store.stored("noarch", "a-1-0.conda").unwrap(), None);
    // With no mark held, numbering starts over.
    assert_eq!(store.dirty_marks("noarch").unwrap(), [mark("a", 1)]);
    assert_eq!(store.intents().unwrap().len(), 1);
    store.finish_commit(CHANNEL, &file, &key).unwrap();
    assert_eq!(
        store
            .stored("noarch", "a-1-0.conda")
            .unwrap()
            .unwrap()
            .sha256,
        "bb"
    );
    assert_eq!(store.subdir_rows().unwrap()[0].packages, 1);
    // It named no publisher (as a Worker of an earlier version sends it): unknown, not the
    // replaced file's.
    let records = store.package(CHANNEL, "a").unwrap().unwrap().records;
    assert_eq!(records[0].provenance, None);
}

#[test]
fn a_delete_removes_the_record_and_holds_the_intent_to_remove_its_object() {
    let conn = fresh();
    let store = IndexStore::new(&conn);
    let key = key("noarch", "a-1-0.conda");
    assert!(!store
        .begin_delete(CHANNEL, "noarch", "a-1-0.conda", &key, 5)
        .unwrap());
    assert!(store.intents().unwrap().is_empty());
    assert!(store.stale().unwrap().is_empty());

    commit(&store, "noarch", "a-1-0.conda", "1", 5);
    let claimed = store.dirty_marks("noarch").unwrap();
    store.release_dirty("noarch", &claimed).unwrap();
    assert!(store
        .begin_delete(CHANNEL, "noarch", "a-1-0.conda", &key, 6)
        .unwrap());
    assert_eq!(store.stored("noarch", "a-1-0.conda").unwrap(), None);
    assert_eq!(store.intents().unwrap()[0].action, ObjectIntent::Remove);
    assert_eq!(store.dirty_marks("noarch").unwrap(), [mark("a", 1)]);
    assert_eq!(store.stale_mark("noarch").unwrap(), Some(2));
    store.clear_intent(&key).unwrap();
    assert!(store.intents().unwrap().is_empty());
}

#[test]
fn what_the_alarm_finds_to_do() {
    let conn = fresh();
    let store = IndexStore::new(&conn);
    let idle = StoredWork {
        unfinished: false,
        oldest_retired: None,
    };
    assert_eq!(store.stored_work().unwrap(), idle);
    store.mark_dirty("noarch", "a").unwrap();
    assert!(store.stored_work().unwrap().unfinished);
    store
        .release_dirty("noarch", &store.dirty_marks("noarch").unwrap())
        .unwrap();
    store.mark_stale_for_repair(CHANNEL, "noarch", 1).unwrap();
    assert!(store.stored_work().unwrap().unfinished);
    store.release_stale("noarch", 0).unwrap();
    assert_eq!(store.stored_work().unwrap(), idle);
    store.retire_shard("k2", 200).unwrap();
    store.retire_shard("k1", 100).unwrap();
    assert_eq!(store.stored_work().unwrap().oldest_retired, Some(100));
    assert!(!store.stored_work().unwrap().unfinished);
}

#[test]
fn the_subdirs_with_marks() {
    let conn = fresh();
    let store = IndexStore::new(&conn);
    store.mark_dirty("osx-64", "a").unwrap();
    store.mark_stale_for_repair(CHANNEL, "noarch", 1).unwrap();
    store.mark_stale_for_repair(CHANNEL, "osx-64", 1).unwrap();
    let marked = || {
        let mut subdirs = store.marked_subdirs().unwrap();
        subdirs.sort();
        subdirs
    };
    assert_eq!(marked(), ["noarch", "osx-64"]);
    assert_eq!(store.stale_subdirs().unwrap(), ["noarch", "osx-64"]);
    store.release_stale("osx-64", 0).unwrap();
    // Its dirty name keeps it marked.
    assert_eq!(marked(), ["noarch", "osx-64"]);
    assert_eq!(store.stale_subdirs().unwrap(), ["noarch"]);
}

#[test]
fn shards_are_named_retired_and_expire() {
    let conn = fresh();
    let store = IndexStore::new(&conn);
    store.name_shard("noarch", "a", "h1", "k1").unwrap();
    store.name_shard("noarch", "b", "h2", "k2").unwrap();
    assert_eq!(
        store.shard_of("noarch", "a").unwrap().as_deref(),
        Some("h1")
    );
    assert_eq!(store.shard_of("linux-64", "a").unwrap(), None);
    // a's shard is replaced: the old one retires.
    store.name_shard("noarch", "a", "h3", "k3").unwrap();
    store.retire_shard("k1", 100).unwrap();
    store.forget_shard("noarch", "b").unwrap();
    store.retire_shard("k2", 200).unwrap();
    assert_eq!(
        store.shards("noarch").unwrap(),
        [ShardEntry {
            name: "a".into(),
            sha256: "h3".into()
        }]
    );
    // Retired at the cutoff or before: expired.
    assert!(store.expired_shards(99).unwrap().is_empty());
    assert_eq!(store.expired_shards(100).unwrap(), ["k1"]);
    // b's old shard is named again before it expires: it is no longer retired.
    store.name_shard("noarch", "b", "h2", "k2").unwrap();
    let mut expired = store.expired_shards(1_000).unwrap();
    expired.sort();
    assert_eq!(expired, ["k1"]);
    store.forget_retired("k1").unwrap();
    assert!(store.expired_shards(1_000).unwrap().is_empty());
    assert_eq!(store.stored_work().unwrap().oldest_retired, None);
}

#[test]
fn the_channel_name_is_the_stored_one_or_a_stale_marks() {
    let conn = fresh();
    let store = IndexStore::new(&conn);
    assert_eq!(store.channel_name().unwrap(), None);
    store
        .mark_stale_for_repair("from-mark", "noarch", 1)
        .unwrap();
    assert_eq!(store.channel_name().unwrap().as_deref(), Some("from-mark"));
    store.set_channel_name("named").unwrap();
    store.set_channel_name(CHANNEL).unwrap();
    assert_eq!(store.channel_name().unwrap().as_deref(), Some(CHANNEL));
}

#[test]
fn clearing_empties_every_table_but_the_name() {
    let conn = fresh();
    let store = IndexStore::new(&conn);
    store.set_channel_name(CHANNEL).unwrap();
    commit(&store, "noarch", "a-1-0.conda", "1", 5);
    store.name_shard("noarch", "a", "h1", "k1").unwrap();
    store.retire_shard("k0", 1).unwrap();
    store
        .begin_commit(CHANNEL, "noarch", "b-1-0.conda", None, "intent", 1)
        .unwrap();
    assert!(store
        .reserve_upload(
            ("noarch", "c-1-0.conda"),
            &key("noarch", "c-1-0.conda"),
            "s",
            1
        )
        .unwrap());
    store.clear().unwrap();
    for table in [
        "SELECT * FROM packages",
        "SELECT * FROM shards",
        "SELECT * FROM dirty",
        "SELECT * FROM retired_shards",
        "SELECT * FROM stale_repodata",
        "SELECT * FROM pending_objects",
        "SELECT * FROM direct_uploads",
    ] {
        assert!(query(&conn, table).is_empty(), "{table}");
    }
    assert_eq!(store.channel_name().unwrap().as_deref(), Some(CHANNEL));
}

#[test]
fn pages_list_a_subdirs_tar_bz2_files_then_its_conda_files() {
    let conn = fresh();
    let store = IndexStore::new(&conn);
    let mut expected = Vec::new();
    for i in (0..PAGE_ROWS + 3).rev() {
        commit(&store, "linux-64", &format!("p{i:03}-1-0.tar.bz2"), "1", 1);
    }
    for i in 0..PAGE_ROWS + 3 {
        expected.push(format!("p{i:03}-1-0.tar.bz2"));
    }
    for i in 0..2 {
        commit(&store, "linux-64", &format!("q{i}-1-0.conda"), "1", 1);
        expected.push(format!("q{i}-1-0.conda"));
    }
    commit(&store, "noarch", "other-1-0.conda", "1", 1);
    let mut pages = Pages::default();
    let (mut read, mut queries) = (Vec::new(), 0);
    while let Some(page) = pages.next() {
        let rows = store.page("linux-64", &page).unwrap();
        assert!(rows.len() <= PAGE_ROWS);
        queries += 1;
        pages.advance(rows.len(), rows.last().map(|row| row.filename.as_str()));
        read.extend(rows);
    }
    assert_eq!(
        read.iter()
            .map(|row| row.filename.as_str())
            .collect::<Vec<_>>(),
        expected
    );
    assert_eq!(queries, 3);
    assert_eq!(read[0].record, record("p000", "1", 0));
    assert_eq!(read[0].run_exports, None);
}

#[test]
fn the_checks_queries() {
    let conn = fresh();
    let store = IndexStore::new(&conn);
    commit(&store, "noarch", "a-1-0.conda", "1", 5);
    commit(&store, "noarch", "a-2-0.conda", "2", 6);
    commit(&store, "noarch", "b-1-0.conda", "1", 7);
    commit(&store, "linux-64", "a-1-0.conda", "1", 8);
    store.name_shard("osx-64", "gone", "h", "k").unwrap();
    assert_eq!(
        store.indexed_subdirs().unwrap(),
        ["linux-64", "noarch", "osx-64"]
    );
    let mut names = store.names("noarch").unwrap();
    names.sort();
    assert_eq!(names, ["a", "b"]);
    let mut rows = store.name_rows("noarch", "a").unwrap();
    rows.sort_by(|x, y| x.filename.cmp(&y.filename));
    assert_eq!(
        rows,
        [
            NameRow {
                filename: "a-1-0.conda".into(),
                record: record("a", "1", 0)
            },
            NameRow {
                filename: "a-2-0.conda".into(),
                record: record("a", "2", 0)
            },
        ]
    );
    // The row scan goes along (subdir, filename) from the cursor.
    let size = |subdir: &str, filename: &str| RecordSize {
        subdir: subdir.into(),
        filename: filename.into(),
        size: Some(100),
        origin: None,
    };
    assert_eq!(
        store.record_sizes("", "", 2).unwrap(),
        [
            size("linux-64", "a-1-0.conda"),
            size("noarch", "a-1-0.conda")
        ]
    );
    assert_eq!(
        store.record_sizes("noarch", "a-1-0.conda", 5).unwrap(),
        [size("noarch", "a-2-0.conda"), size("noarch", "b-1-0.conda")]
    );
    assert_eq!(
        store.subdir_rows().unwrap(),
        [
            SubdirRows {
                subdir: "linux-64".into(),
                packages: 1
            },
            SubdirRows {
                subdir: "noarch".into(),
                packages: 3
            },
        ]
    );
    assert_eq!(
        store.figures().unwrap(),
        Some(Figures {
            count: 4,
            last: Some(8)
        })
    );
    store.clear().unwrap();
    assert_eq!(
        store.figures().unwrap(),
        Some(Figures {
            count: 0,
            last: None
        })
    );
}

fn browse_query(q: &str, subdir: Option<&str>, cursor: Option<&str>, limit: u32) -> BrowseQuery {
    BrowseQuery {
        q: q.into(),
        subdir: subdir.map(str::to_owned),
        cursor: cursor.map(|text| Cursor::decode(text).unwrap()),
        limit,
    }
}

/// A channel with names that start with "py", contain it, or neither.
fn browsable() -> Connection {
    let conn = fresh();
    let store = IndexStore::new(&conn);
    commit(&store, "noarch", "pyyaml-6.0-0.conda", "6.0", 10);
    commit(&store, "noarch", "pyyaml-5.4-0.conda", "5.4", 20);
    commit(&store, "linux-64", "python-3.12-0.conda", "3.12", 30);
    commit(&store, "noarch", "numpy-2.0-0.conda", "2.0", 40);
    commit(&store, "linux-64", "cpython-3.12-0.conda", "3.12", 50);
    commit(&store, "noarch", "happy-1.0-0.conda", "1.0", 60);
    conn
}

#[test]
fn browsing_pages_every_name_in_order() {
    let conn = browsable();
    let store = IndexStore::new(&conn);
    let first = store.browse(&browse_query("", None, None, 4)).unwrap();
    let names: Vec<&str> = first.packages.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["cpython", "happy", "numpy", "python"]);
    assert_eq!(first.total, 5);
    let cursor = first.next_cursor.unwrap();
    assert_eq!(
        Cursor::decode(&cursor),
        Some(Cursor {
            group: Group::Prefix,
            after: "python".into()
        })
    );
    let second = store
        .browse(&browse_query("", None, Some(&cursor), 4))
        .unwrap();
    let pyyaml = &second.packages[0];
    assert_eq!(second.packages.len(), 1);
    assert_eq!(second.next_cursor, None);
    assert_eq!(pyyaml.name, "pyyaml");
    assert_eq!(pyyaml.builds, 2);
    assert_eq!(pyyaml.latest_version, "6.0");
    assert_eq!(pyyaml.last_upload, 20);
    assert_eq!(pyyaml.subdirs, ["noarch"]);
}

#[test]
fn a_search_answers_prefixes_first_then_substrings() {
    let conn = browsable();
    let store = IndexStore::new(&conn);
    let page = store.browse(&browse_query("py", None, None, 2)).unwrap();
    let names: Vec<&str> = page.packages.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["python", "pyyaml"]);
    assert_eq!(page.total, 5);
    let cursor = page.next_cursor.unwrap();
    let rest = store
        .browse(&browse_query("py", None, Some(&cursor), 2))
        .unwrap();
    let names: Vec<&str> = rest.packages.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["cpython", "happy"]);
    let cursor = rest.next_cursor.unwrap();
    assert_eq!(
        Cursor::decode(&cursor),
        Some(Cursor {
            group: Group::Substring,
            after: "happy".into()
        })
    );
    let last = store
        .browse(&browse_query("py", None, Some(&cursor), 2))
        .unwrap();
    let names: Vec<&str> = last.packages.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["numpy"]);
    assert_eq!(last.next_cursor, None);

    // A page that ends in the prefix group goes on in the substring group.
    let all = store.browse(&browse_query("py", None, None, 10)).unwrap();
    let names: Vec<&str> = all.packages.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["python", "pyyaml", "cpython", "happy", "numpy"]);
}

#[test]
fn a_subdir_narrows_names_figures_and_total() {
    let conn = browsable();
    let store = IndexStore::new(&conn);
    let page = store
        .browse(&browse_query("py", Some("linux-64"), None, 10))
        .unwrap();
    let names: Vec<&str> = page.packages.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["python", "cpython"]);
    assert_eq!(page.total, 2);
    assert!(page.packages.iter().all(|p| p.subdirs == ["linux-64"]));
    let none = store.browse(&browse_query("zzz", None, None, 10)).unwrap();
    assert!(none.packages.is_empty());
    assert_eq!(none.total, 0);
}

#[test]
fn a_package_lists_every_file_of_its_name_newest_first() {
    let conn = browsable();
    let store = IndexStore::new(&conn);
    let records = store.package(CHANNEL, "pyyaml").unwrap().unwrap();
    assert_eq!(records.name, "pyyaml");
    let files: Vec<(&str, &str)> = records
        .records
        .iter()
        .map(|r| (r.version.as_str(), r.url.as_str()))
        .collect();
    assert_eq!(
        files,
        [
            ("6.0", "/chan/noarch/pyyaml-6.0-0.conda"),
            ("5.4", "/chan/noarch/pyyaml-5.4-0.conda"),
        ]
    );
    assert_eq!(store.package(CHANNEL, "pyyam").unwrap(), None);
}

#[test]
fn a_direct_upload_reserves_a_key_for_its_bytes_until_its_last_holder_leaves() {
    let conn = fresh();
    let store = IndexStore::new(&conn);
    let file = ("linux-64", "a-1-0.tar.bz2");
    let at = key(file.0, file.1);
    assert!(store.reserve_upload(file, &at, "s1", 10).unwrap());
    // Other bytes under the name while the first writes it: no.
    assert!(!store.reserve_upload(file, &at, "s2", 11).unwrap());
    // The same bytes (a retry, or a second publisher of the same build) join, and refresh it.
    assert!(store.reserve_upload(file, &at, "s1", 12).unwrap());
    let reserved = DirectUpload {
        key: at.clone(),
        subdir: file.0.into(),
        filename: file.1.into(),
        sha256: "s1".into(),
        holders: 2,
        since: 12,
    };
    assert_eq!(store.upload_at(&at).unwrap(), Some(reserved.clone()));
    assert_eq!(store.oldest_upload().unwrap(), Some(12));
    // Expired only once older than the cutoff.
    assert!(store.uploads_before(12).unwrap().is_empty());
    assert_eq!(store.uploads_before(13).unwrap(), [reserved]);
    // One holder's commit stores the record and leaves; the other still holds the key.
    commit(&store, file.0, file.1, "1", 13);
    assert_eq!(store.upload_at(&at).unwrap().map(|u| u.holders), Some(1));
    assert!(store.leave_upload(&at).unwrap());
    assert_eq!(store.upload_at(&at).unwrap(), None);
    assert_eq!(store.oldest_upload().unwrap(), None);
    // A file a record names is not reserved: its upload is staged and answered by its commit.
    assert!(!store.reserve_upload(file, &at, "s1", 14).unwrap());
    // A released reservation frees the key for other bytes.
    let other = ("linux-64", "b-1-0.tar.bz2");
    let other_at = key(other.0, other.1);
    assert!(store.reserve_upload(other, &other_at, "s3", 15).unwrap());
    assert!(store.leave_upload(&other_at).unwrap());
    assert!(store.reserve_upload(other, &other_at, "s4", 16).unwrap());
}

fn upstream(filename: &str, name: &str, version: &str, sha: char) -> MirrorRecord {
    MirrorRecord {
        filename: filename.into(),
        name: name.into(),
        sha256: sha.to_string().repeat(64),
        record: record(name, version, 0),
    }
}

fn dirty_names(store: &IndexStore<'_, Connection>, subdir: &str) -> Vec<String> {
    let mut names: Vec<String> = store
        .dirty_marks(subdir)
        .unwrap()
        .into_iter()
        .map(|mark| mark.name)
        .collect();
    names.sort();
    names
}

#[test]
fn a_mirror_refresh_swaps_in_its_staged_records_and_marks_only_what_changed() {
    let conn = fresh();
    let store = IndexStore::new(&conn);
    // The first refresh: every record is new, and the subdir is marked even if empty.
    store
        .stage_upstream(
            "linux-64",
            &[
                upstream("a-1-0.conda", "a", "1", 'a'),
                upstream("b-1-0.conda", "b", "1", 'b'),
                upstream("c-1-0.conda", "c", "1", 'c'),
            ],
        )
        .unwrap();
    let swap = store
        .swap_in_staging(CHANNEL, "linux-64", 10, true)
        .unwrap();
    assert_eq!((swap.changed, swap.outdated.len()), (3, 0));
    assert_eq!(dirty_names(&store, "linux-64"), ["a", "b", "c"]);
    assert!(store.stale_mark("linux-64").unwrap().is_some());
    assert!(query(&conn, "SELECT * FROM mirror_staging").is_empty());
    assert_eq!(
        store.upstream_file("linux-64", "b-1-0.conda").unwrap(),
        Some(UpstreamFile {
            sha256: "b".repeat(64),
            size: Some(100)
        })
    );
    // Their objects come from the upstream on demand: the check does not miss them.
    let sizes = store.record_sizes("", "", 10).unwrap();
    assert!(sizes.iter().all(RecordSize::is_upstream));
    build_done(&store, "linux-64");

    // The next: a unchanged, b with other bytes, c gone (no longer admitted), d new.
    store
        .stage_upstream(
            "linux-64",
            &[
                upstream("a-1-0.conda", "a", "1", 'a'),
                upstream("b-1-0.conda", "b", "1", 'e'),
                upstream("d-1-0.conda", "d", "1", 'd'),
            ],
        )
        .unwrap();
    let swap = store
        .swap_in_staging(CHANNEL, "linux-64", 20, false)
        .unwrap();
    assert_eq!(swap.changed, 3);
    // c is gone, and a copy of b holds bytes the upstream no longer has.
    assert_eq!(swap.outdated, ["b-1-0.conda", "c-1-0.conda"]);
    assert_eq!(dirty_names(&store, "linux-64"), ["b", "c", "d"]);
    assert!(store
        .upstream_file("linux-64", "c-1-0.conda")
        .unwrap()
        .is_none());
    assert_eq!(
        store
            .upstream_file("linux-64", "b-1-0.conda")
            .unwrap()
            .unwrap()
            .sha256,
        "e".repeat(64)
    );
    build_done(&store, "linux-64");

    // Nothing changed: nothing marked, nothing dropped.
    let many: Vec<MirrorRecord> = (0..45)
        .map(|i| upstream(&format!("m-{i}-0.conda"), "m", &i.to_string(), 'f'))
        .collect();
    store.stage_upstream("osx-64", &many).unwrap();
    assert_eq!(
        query(&conn, "SELECT COUNT(*) AS n FROM mirror_staging")[0]["n"],
        45
    );
    store.clear_staging("osx-64").unwrap();
    store
        .stage_upstream(
            "linux-64",
            &[
                upstream("a-1-0.conda", "a", "1", 'a'),
                upstream("b-1-0.conda", "b", "1", 'e'),
                upstream("d-1-0.conda", "d", "1", 'd'),
            ],
        )
        .unwrap();
    let swap = store
        .swap_in_staging(CHANNEL, "linux-64", 30, false)
        .unwrap();
    assert_eq!((swap.changed, swap.outdated.len()), (0, 0));
    assert!(dirty_names(&store, "linux-64").is_empty());
    assert!(store.stale_mark("linux-64").unwrap().is_none());

    // A refresh from shards keeps the names whose shard did not change.
    store.stage_current_but("linux-64", &["d"]).unwrap();
    let swap = store
        .swap_in_staging(CHANNEL, "linux-64", 40, false)
        .unwrap();
    assert_eq!(swap.outdated, ["d-1-0.conda"]);
    assert_eq!(dirty_names(&store, "linux-64"), ["d"]);
    assert!(store
        .upstream_file("linux-64", "a-1-0.conda")
        .unwrap()
        .is_some());
    // Uploaded rows of another subdir are never touched.
    commit(&store, "noarch", "own-1-0.conda", "1", 9);
    store
        .stage_upstream("linux-64", &[upstream("a-1-0.conda", "a", "1", 'a')])
        .unwrap();
    store
        .swap_in_staging(CHANNEL, "linux-64", 50, false)
        .unwrap();
    assert!(store.stored("noarch", "own-1-0.conda").unwrap().is_some());
}

fn run_exports(filename: &str, weak: &str) -> UpstreamRunExports {
    UpstreamRunExports {
        filename: filename.into(),
        run_exports: format!(r#"{{"weak":["{weak}"]}}"#),
    }
}

fn stored_run_exports(conn: &Connection) -> Vec<Value> {
    query(
        conn,
        "SELECT filename, run_exports FROM packages ORDER BY filename",
    )
}

#[test]
fn a_mirror_refresh_gives_its_staged_records_the_upstreams_run_exports_and_only_them() {
    let conn = fresh();
    let store = IndexStore::new(&conn);
    store
        .stage_upstream(
            "linux-64",
            &[
                upstream("a-1-0.conda", "a", "1", 'a'),
                upstream("b-1-0.conda", "b", "1", 'b'),
            ],
        )
        .unwrap();
    // More entries than one statement takes, and one of a file the rules left out.
    let mut entries: Vec<UpstreamRunExports> = (0..45)
        .map(|i| run_exports(&format!("x-{i}-0.conda"), "x"))
        .collect();
    entries.push(run_exports("a-1-0.conda", "a >=1"));
    entries.push(run_exports("denied-1-0.conda", "denied"));
    store.stage_run_exports("linux-64", &entries).unwrap();
    // Another subdir's staged record of the same name is not this one's.
    store
        .stage_upstream("noarch", &[upstream("a-1-0.conda", "a", "1", 'a')])
        .unwrap();
    store
        .swap_in_staging(CHANNEL, "linux-64", 10, true)
        .unwrap();
    store.swap_in_staging(CHANNEL, "noarch", 10, true).unwrap();
    let rows = stored_run_exports(&conn);
    let got: Vec<(&str, Option<&str>)> = rows
        .iter()
        .map(|row| {
            (
                row["filename"].as_str().unwrap(),
                row["run_exports"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("a-1-0.conda", Some(r#"{"weak":["a >=1"]}"#)),
            ("a-1-0.conda", None),
            ("b-1-0.conda", None),
        ]
    );
    assert_eq!(
        query(&conn, "SELECT COUNT(*) AS n FROM packages")[0]["n"],
        3
    );
    build_done(&store, "linux-64");

    // Unchanged upstream run_exports.json (a 304): the rows keep theirs, nothing is marked.
    store
        .stage_upstream(
            "linux-64",
            &[
                upstream("a-1-0.conda", "a", "1", 'a'),
                upstream("b-1-0.conda", "b", "1", 'b'),
            ],
        )
        .unwrap();
    store.stage_stored_run_exports("linux-64").unwrap();
    let swap = store
        .swap_in_staging(CHANNEL, "linux-64", 20, false)
        .unwrap();
    assert_eq!(swap.changed, 0);
    assert!(store.stale_mark("linux-64").unwrap().is_none());

    // Run exports that changed are a change: the subdir's files are rebuilt.
    store
        .stage_upstream(
            "linux-64",
            &[
                upstream("a-1-0.conda", "a", "1", 'a'),
                upstream("b-1-0.conda", "b", "1", 'b'),
            ],
        )
        .unwrap();
    store
        .stage_run_exports("linux-64", &[run_exports("b-1-0.conda", "b")])
        .unwrap();
    let swap = store
        .swap_in_staging(CHANNEL, "linux-64", 30, false)
        .unwrap();
    assert_eq!(swap.changed, 2);
    assert_eq!(dirty_names(&store, "linux-64"), ["a", "b"]);
    assert!(store.stale_mark("linux-64").unwrap().is_some());
    let rows = stored_run_exports(&conn);
    assert_eq!(rows[0]["run_exports"], Value::Null);
    assert_eq!(rows[2]["run_exports"], r#"{"weak":["b"]}"#);
}

#[test]
fn a_mirror_subdirs_refresh_state_and_upstream_shards_are_kept() {
    let conn = fresh();
    let store = IndexStore::new(&conn);
    assert!(store.mirror_subdir("noarch").unwrap().is_none());
    let state = MirrorSubdir {
        rules: "{}".into(),
        etag: Some("\"x\"".into()),
        fetched_at: 5,
        checked_at: 6,
        failure: None,
        admits_more_at: Some(7),
        run_exports_etag: Some("\"r\"".into()),
        missing_at: None,
    };
    store.set_mirror_subdir("noarch", &state).unwrap();
    assert_eq!(store.mirror_subdir("noarch").unwrap(), Some(state.clone()));
    // A subdir the upstream lacks is remembered, since when, but listed among none read.
    let missing = MirrorSubdir {
        etag: None,
        run_exports_etag: None,
        missing_at: Some(8),
        ..state
    };
    store.set_mirror_subdir("osx-arm64", &missing).unwrap();
    assert_eq!(store.mirror_subdir("osx-arm64").unwrap(), Some(missing));
    let listed: Vec<String> = store
        .mirror_subdirs()
        .unwrap()
        .into_iter()
        .map(|(subdir, _)| subdir)
        .collect();
    assert_eq!(listed, ["noarch"]);
    store
        .set_upstream_shards("noarch", [("a", "aa"), ("b", "bb")])
        .unwrap();
    store.set_upstream_shards("noarch", [("a", "cc")]).unwrap();
    assert_eq!(
        store.upstream_shards("noarch").unwrap(),
        [ShardEntry {
            name: "a".into(),
            sha256: "cc".into()
        }]
    );
    store.clear().unwrap();
    assert!(store.mirror_subdir("noarch").unwrap().is_none());
    assert!(store.upstream_shards("noarch").unwrap().is_empty());
}

#[test]
fn an_upload_not_yet_placed_likely_goes_where_its_name_went_last_else_where_the_channel_did() {
    let conn = fresh();
    let store = IndexStore::new(&conn);
    assert_eq!(store.likely_subdir("a").unwrap(), None);
    commit(&store, "linux-64", "a-1-0.conda", "1", 10);
    commit(&store, "osx-arm64", "a-1-1.conda", "1", 11);
    commit(&store, "noarch", "b-1-0.conda", "1", 12);
    // The name's newest file wins over the channel's newest.
    assert_eq!(
        store.likely_subdir("a").unwrap().as_deref(),
        Some("osx-arm64")
    );
    assert_eq!(store.likely_subdir("b").unwrap().as_deref(), Some("noarch"));
    // A name the channel has not seen: where its last file went.
    assert_eq!(store.likely_subdir("c").unwrap().as_deref(), Some("noarch"));
    commit(&store, "linux-64", "a-2-0.conda", "2", 13);
    assert_eq!(
        store.likely_subdir("a").unwrap().as_deref(),
        Some("linux-64")
    );
    assert_eq!(
        store.likely_subdir("c").unwrap().as_deref(),
        Some("linux-64")
    );
}
