//! The channel index's storage: every statement its Durable Object runs on its SQLite, the rows
//! they return, and the operations made of several statements, written once over [`Sql`]. The
//! object runs them on its SqlStorage (`edge::channel_index`), the native tests on SQLite
//! (`sqlite`). Both run a statement synchronously, so an operation here is one synchronous
//! stretch of the object: what it writes is committed together.
//!
//! The tables: `packages` holds one row per file (with who published it, which no artifact
//! serves); `shards` the current shard of each package name; `dirty` the names whose shard
//! must be rewritten by the next build (kept in storage, so a restart between a change and its
//! build loses nothing); `retired_shards` the superseded shards, deleted by the alarm once
//! clients can no longer hold an index naming them;
//! `stale_repodata` the subdirs whose monolithic files miss a change, and since when;
//! `pending_objects` the package objects a change was about to write or remove;
//! `direct_uploads` the keys an upload is writing straight to, before its commit
//! ([`IndexStore::reserve_upload`]);
//! `channel_name` the name the alarm works under (an object does not know its own name);
//! for a mirror channel, `mirror_subdirs` when each subdir was last refreshed from the upstream
//! and with what (or since when the upstream lacks it), `upstream_shards` the upstream's shard hash per name it was read from (when
//! the upstream has shards), and `mirror_staging` the admitted records of a refresh under way, swapped
//! into `packages` in one stretch once the upstream's document is read to its end. A row of
//! `packages` with `origin` `upstream` is a mirror's: its bytes come from the upstream on its
//! first request, so no object is expected before then.
//!
//! A mark (dirty or stale) carries a number, higher than any held when it was set, so that a
//! build releases only the marks it built ([`releases`]).
//!
//! The indexes: a shard build reads one name's rows through `packages_by_name`. Every browse
//! query runs on one: names in order through `packages_by_name_only` (or `packages_by_name`,
//! with a subdir), a prefix search as a range of it, a substring search as a scan of it from
//! the cursor on (the names only, never the records), one name's files through
//! `packages_by_name_only`, and the newest indexing time through `packages_by_time`.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::browse::{
    package_records, summarize, BrowseQuery, Cursor, FileRow, Group, PackagePage, PackageRecords,
};
use crate::index_plan::{releases, ObjectIntent, Page};
use crate::mirror::{MirrorRecord, UpstreamRunExports};
use crate::provenance::Provenance;
use crate::statement::{Param, Statement};

/// Runs statements synchronously: the Durable Object's SqlStorage, or SQLite natively.
pub trait Sql {
    type Error;

    /// Runs a statement, discarding what it returns.
    fn run(&self, statement: Statement) -> Result<(), Self::Error>;

    /// Every row a statement returns, read as `T` by column name.
    fn rows<T: DeserializeOwned>(&self, statement: Statement) -> Result<Vec<T>, Self::Error>;
}

/// One step of the schema, applied in order every time an object loads.
enum Step {
    /// A statement that changes nothing once applied (`IF NOT EXISTS`).
    Create(&'static str),
    /// A column tables created before it lack: added unless the table has it.
    AddColumn {
        table: &'static str,
        column: &'static str,
        add: &'static str,
    },
}

/// The schema: the tables as they are created today, then what older objects' tables lack.
const SCHEMA: [Step; 21] = [
    Step::Create(
        "CREATE TABLE IF NOT EXISTS packages (
            subdir TEXT NOT NULL,
            filename TEXT NOT NULL,
            name TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            record TEXT NOT NULL,
            run_exports TEXT,
            about TEXT,
            indexed_at INTEGER NOT NULL,
            provenance TEXT,
            origin TEXT,
            PRIMARY KEY (subdir, filename)
        )",
    ),
    Step::Create("CREATE INDEX IF NOT EXISTS packages_by_name ON packages (subdir, name)"),
    Step::Create("CREATE INDEX IF NOT EXISTS packages_by_name_only ON packages (name)"),
    Step::Create("CREATE INDEX IF NOT EXISTS packages_by_time ON packages (indexed_at)"),
    Step::Create(
        "CREATE TABLE IF NOT EXISTS shards (
            subdir TEXT NOT NULL, name TEXT NOT NULL, sha256 TEXT NOT NULL,
            PRIMARY KEY (subdir, name)
        )",
    ),
    Step::Create(
        "CREATE TABLE IF NOT EXISTS dirty (
            subdir TEXT NOT NULL, name TEXT NOT NULL, mark INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (subdir, name)
        )",
    ),
    Step::Create(
        "CREATE TABLE IF NOT EXISTS retired_shards (
            key TEXT PRIMARY KEY, retired_at INTEGER NOT NULL
        )",
    ),
    Step::Create(
        "CREATE TABLE IF NOT EXISTS stale_repodata (
            subdir TEXT PRIMARY KEY, channel TEXT NOT NULL, since INTEGER NOT NULL,
            mark INTEGER NOT NULL DEFAULT 0
        )",
    ),
    Step::Create(
        "CREATE TABLE IF NOT EXISTS pending_objects (
            key TEXT PRIMARY KEY, action TEXT NOT NULL, subdir TEXT NOT NULL,
            filename TEXT NOT NULL, since INTEGER NOT NULL
        )",
    ),
    Step::Create(
        "CREATE TABLE IF NOT EXISTS direct_uploads (
            key TEXT PRIMARY KEY, subdir TEXT NOT NULL, filename TEXT NOT NULL,
            sha256 TEXT NOT NULL, holders INTEGER NOT NULL, since INTEGER NOT NULL
        )",
    ),
    Step::Create(
        "CREATE TABLE IF NOT EXISTS channel_name (
            id INTEGER PRIMARY KEY CHECK (id = 0), name TEXT NOT NULL
        )",
    ),
    Step::Create(
        "CREATE TABLE IF NOT EXISTS mirror_subdirs (
            subdir TEXT PRIMARY KEY, rules TEXT NOT NULL, etag TEXT,
            fetched_at INTEGER NOT NULL, checked_at INTEGER NOT NULL, failure TEXT,
            admits_more_at INTEGER, run_exports_etag TEXT, missing_at INTEGER
        )",
    ),
    Step::Create(
        "CREATE TABLE IF NOT EXISTS upstream_shards (
            subdir TEXT NOT NULL, name TEXT NOT NULL, sha256 TEXT NOT NULL,
            PRIMARY KEY (subdir, name)
        )",
    ),
    Step::Create(
        "CREATE TABLE IF NOT EXISTS mirror_staging (
            subdir TEXT NOT NULL, filename TEXT NOT NULL, name TEXT NOT NULL,
            sha256 TEXT NOT NULL, record TEXT NOT NULL, run_exports TEXT,
            PRIMARY KEY (subdir, filename)
        )",
    ),
    // Marks were numbered after the first objects were created.
    Step::AddColumn {
        table: "dirty",
        column: "mark",
        add: "ALTER TABLE dirty ADD COLUMN mark INTEGER NOT NULL DEFAULT 0",
    },
    Step::AddColumn {
        table: "stale_repodata",
        column: "mark",
        add: "ALTER TABLE stale_repodata ADD COLUMN mark INTEGER NOT NULL DEFAULT 0",
    },
    // Who published each file was kept from then on; older rows hold NULL: unknown.
    Step::AddColumn {
        table: "packages",
        column: "provenance",
        add: "ALTER TABLE packages ADD COLUMN provenance TEXT",
    },
    // Mirror channels were indexed after that; older rows are all uploaded ones.
    Step::AddColumn {
        table: "packages",
        column: "origin",
        add: "ALTER TABLE packages ADD COLUMN origin TEXT",
    },
    // Mirrors read their upstream's run_exports.json, and remember a subdir it lacks, since.
    Step::AddColumn {
        table: "mirror_staging",
        column: "run_exports",
        add: "ALTER TABLE mirror_staging ADD COLUMN run_exports TEXT",
    },
    Step::AddColumn {
        table: "mirror_subdirs",
        column: "run_exports_etag",
        add: "ALTER TABLE mirror_subdirs ADD COLUMN run_exports_etag TEXT",
    },
    Step::AddColumn {
        table: "mirror_subdirs",
        column: "missing_at",
        add: "ALTER TABLE mirror_subdirs ADD COLUMN missing_at INTEGER",
    },
];

/// How many staged rows one statement inserts: a Durable Object's SQLite takes at most 100
/// bound parameters per statement, and a row has 5.
const STAGED_ROWS: usize = 20;

/// The tables a channel's destruction empties (the channel's name stays: the object is still
/// that channel's).
const CHANNEL_TABLES: [&str; 10] = [
    "DELETE FROM packages",
    "DELETE FROM shards",
    "DELETE FROM dirty",
    "DELETE FROM retired_shards",
    "DELETE FROM stale_repodata",
    "DELETE FROM pending_objects",
    "DELETE FROM direct_uploads",
    "DELETE FROM mirror_subdirs",
    "DELETE FROM mirror_staging",
    "DELETE FROM upstream_shards",
];

/// The sha256 and record stored for a file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StoredFile {
    pub sha256: String,
    /// Canonical JSON.
    pub record: String,
}

/// A file's row as a commit stores it.
#[derive(Debug, Clone, Copy)]
pub struct NewRecord<'a> {
    pub subdir: &'a str,
    pub filename: &'a str,
    pub name: &'a str,
    pub sha256: &'a str,
    pub record: &'a str,
    pub run_exports: Option<&'a str>,
    pub about: Option<&'a str>,
    /// Epoch milliseconds.
    pub indexed_at: u64,
    /// Who published it (`None`: unknown). Never part of the record, so never served.
    pub provenance: Option<&'a Provenance>,
}

/// A mark a build claims: a dirty name, or a stale subdir (as `name`), with its number.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Mark {
    pub name: String,
    pub mark: i64,
}

/// A row as the monolithic files list it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PageRow {
    pub filename: String,
    pub record: String,
    pub run_exports: Option<String>,
}

/// A file of one name, as its shard holds it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NameRow {
    pub filename: String,
    pub record: String,
}

/// A name of the shard index, with its shard's hex SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ShardEntry {
    pub name: String,
    pub sha256: String,
}

/// An object change whose request has not finished it yet.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Intent {
    pub key: String,
    pub action: ObjectIntent,
    pub subdir: String,
    pub filename: String,
}

/// A key uploads of one content are writing straight to: the content's SHA-256, how many
/// uploads hold it, and since when the last joined (epoch milliseconds).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DirectUpload {
    pub key: String,
    pub subdir: String,
    pub filename: String,
    pub sha256: String,
    pub holders: u64,
    pub since: u64,
}

/// What the rows hold for the alarm to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredWork {
    /// Some mark or intent is held.
    pub unfinished: bool,
    /// When the oldest retired shard retired.
    pub oldest_retired: Option<u64>,
}

/// How many files a subdir holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubdirRows {
    pub subdir: String,
    pub packages: u64,
}

/// A subdir whose monolithic files miss a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaleSubdir {
    pub subdir: String,
    /// Since when (epoch milliseconds).
    pub since: u64,
}

/// A file with the size its record states, as the consistency check compares it to its object.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RecordSize {
    pub subdir: String,
    pub filename: String,
    pub size: Option<u64>,
    /// `upstream` for a mirror's record, whose object is fetched from the upstream on its
    /// first request; `None` for an uploaded one.
    pub origin: Option<String>,
}

impl RecordSize {
    /// Whether the record is a mirror's, whose object may not be fetched yet.
    pub fn is_upstream(&self) -> bool {
        self.origin.as_deref() == Some("upstream")
    }
}

/// What a mirror's index holds of one upstream subdir.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorSubdir {
    /// The rules it was filtered by (their JSON).
    pub rules: String,
    /// The upstream's ETag of the document it was read from.
    pub etag: Option<String>,
    /// When the upstream last confirmed it (a 200 or a 304), epoch milliseconds.
    pub fetched_at: u64,
    /// When the upstream was last asked, whatever it answered.
    pub checked_at: u64,
    /// Why the last refresh failed, if it did.
    pub failure: Option<String>,
    /// When a record left out as too young becomes old enough.
    pub admits_more_at: Option<u64>,
    /// The upstream's ETag of the run_exports.json the rows' run exports were read from.
    #[serde(default)]
    pub run_exports_etag: Option<String>,
    /// When the upstream last answered that it has no such subdir, while none was stored:
    /// the subdir holds no rows, and a read is a 404 from this memory.
    #[serde(default)]
    pub missing_at: Option<u64>,
}

/// A mirror's file as package fetching needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamFile {
    /// Hex.
    pub sha256: String,
    pub size: Option<u64>,
}

/// What a refresh's swap changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MirrorSwap {
    /// Rows added, replaced or dropped.
    pub changed: u64,
    /// The files whose kept copy (if one was fetched) must go: dropped (no longer upstream,
    /// or no longer admitted), or with other bytes upstream.
    pub outdated: Vec<String>,
}

/// The channel's figures the channel list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Figures {
    pub count: i64,
    /// The newest indexing time (epoch milliseconds), if any file is indexed.
    pub last: Option<i64>,
}

#[derive(Deserialize)]
struct Subdir {
    subdir: String,
}

#[derive(Deserialize)]
struct Name {
    name: String,
}

#[derive(Deserialize)]
struct Filename {
    filename: String,
}

#[derive(Deserialize)]
struct Count {
    count: i64,
}

#[derive(Deserialize)]
struct Number {
    mark: i64,
}

/// The channel index's storage, over the object's SQL.
pub struct IndexStore<'a, S> {
    sql: &'a S,
}

impl<'a, S: Sql> IndexStore<'a, S> {
    pub fn new(sql: &'a S) -> Self {
        Self { sql }
    }

    fn run(&self, sql: &'static str, params: Vec<Param>) -> Result<(), S::Error> {
        self.sql.run(Statement::new(sql, params))
    }

    fn rows<T: DeserializeOwned>(
        &self,
        sql: impl Into<Cow<'static, str>>,
        params: Vec<Param>,
    ) -> Result<Vec<T>, S::Error> {
        self.sql.rows(Statement::new(sql, params))
    }

    fn first<T: DeserializeOwned>(
        &self,
        sql: &'static str,
        params: Vec<Param>,
    ) -> Result<Option<T>, S::Error> {
        Ok(self.rows(sql, params)?.into_iter().next())
    }

    fn subdirs(&self, sql: &'static str) -> Result<Vec<String>, S::Error> {
        Ok(self
            .rows::<Subdir>(sql, Vec::new())?
            .into_iter()
            .map(|row| row.subdir)
            .collect())
    }

    /// Applies [`SCHEMA`] in order; the first step that fails stops it, with its error.
    pub fn migrate(&self) -> Result<(), S::Error> {
        for step in &SCHEMA {
            match *step {
                Step::Create(sql) => self.run(sql, Vec::new())?,
                Step::AddColumn { table, column, add } => {
                    let found: Vec<Count> = self.rows(
                        "SELECT COUNT(*) AS count FROM pragma_table_info(?) WHERE name = ?",
                        vec![table.into(), column.into()],
                    )?;
                    if found.first().is_none_or(|row| row.count == 0) {
                        self.run(add, Vec::new())?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The name the alarm works under: the one a request stored, or else one a stale mark
    /// names (marks were stored with their channel before the name was).
    pub fn channel_name(&self) -> Result<Option<String>, S::Error> {
        Ok(self
            .first::<Name>(
                "SELECT name FROM channel_name \
                 UNION ALL SELECT channel AS name FROM stale_repodata LIMIT 1",
                Vec::new(),
            )?
            .map(|row| row.name))
    }

    pub fn set_channel_name(&self, channel: &str) -> Result<(), S::Error> {
        self.run(
            "INSERT OR REPLACE INTO channel_name (id, name) VALUES (0, ?)",
            vec![channel.into()],
        )
    }

    // Records.

    pub fn stored(&self, subdir: &str, filename: &str) -> Result<Option<StoredFile>, S::Error> {
        self.first(
            "SELECT sha256, record FROM packages WHERE subdir = ? AND filename = ?",
            vec![subdir.into(), filename.into()],
        )
    }

    /// Removes a file's row; returns its package name, if it had one.
    fn remove_record(&self, subdir: &str, filename: &str) -> Result<Option<String>, S::Error> {
        Ok(self
            .first::<Name>(
                "DELETE FROM packages WHERE subdir = ? AND filename = ? RETURNING name",
                vec![subdir.into(), filename.into()],
            )?
            .map(|row| row.name))
    }

    /// A commit's stretch before its object is written: the intent to place the object at
    /// `key`, and, if the commit replaces the stored file of package `replacing`, that row's
    /// removal and the name's marks. Whatever is in place if the commit dies, no record names
    /// it.
    pub fn begin_commit(
        &self,
        channel: &str,
        subdir: &str,
        filename: &str,
        replacing: Option<&str>,
        key: &str,
        now: u64,
    ) -> Result<(), S::Error> {
        self.intend(key, ObjectIntent::Place, subdir, filename, now)?;
        if let Some(name) = replacing {
            self.remove_record(subdir, filename)?;
            self.mark_changed(channel, subdir, name, now)?;
        }
        Ok(())
    }

    /// A commit's stretch once its object is written: the record, its marks, and the end of
    /// the intent at `key`.
    pub fn finish_commit(
        &self,
        channel: &str,
        file: &NewRecord<'_>,
        key: &str,
    ) -> Result<(), S::Error> {
        self.run(
            "INSERT OR REPLACE INTO packages \
             (subdir, filename, name, sha256, record, run_exports, about, indexed_at, provenance) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            vec![
                file.subdir.into(),
                file.filename.into(),
                file.name.into(),
                file.sha256.into(),
                file.record.into(),
                file.run_exports.into(),
                file.about.into(),
                millis(file.indexed_at),
                file.provenance.map(Provenance::to_json).as_deref().into(),
            ],
        )?;
        self.mark_changed(channel, file.subdir, file.name, file.indexed_at)?;
        self.leave_upload(key)?;
        self.clear_intent(key)
    }

    /// A delete's stretch: the row's removal, the intent to remove its object at `key`, and
    /// the marks. Returns whether there was a row.
    pub fn begin_delete(
        &self,
        channel: &str,
        subdir: &str,
        filename: &str,
        key: &str,
        now: u64,
    ) -> Result<bool, S::Error> {
        let Some(name) = self.remove_record(subdir, filename)? else {
            return Ok(false);
        };
        self.intend(key, ObjectIntent::Remove, subdir, filename, now)?;
        self.mark_changed(channel, subdir, &name, now)?;
        Ok(true)
    }

    /// Empties every table of the channel.
    pub fn clear(&self) -> Result<(), S::Error> {
        for sql in CHANNEL_TABLES {
            self.run(sql, Vec::new())?;
        }
        Ok(())
    }

    // Intents.

    /// Stores what is about to happen to a package object, before it does.
    fn intend(
        &self,
        key: &str,
        intent: ObjectIntent,
        subdir: &str,
        filename: &str,
        now: u64,
    ) -> Result<(), S::Error> {
        self.run(
            "INSERT OR REPLACE INTO pending_objects (key, action, subdir, filename, since) \
             VALUES (?, ?, ?, ?, ?)",
            vec![
                key.into(),
                intent.as_str().into(),
                subdir.into(),
                filename.into(),
                millis(now),
            ],
        )
    }

    pub fn clear_intent(&self, key: &str) -> Result<(), S::Error> {
        self.run(
            "DELETE FROM pending_objects WHERE key = ?",
            vec![key.into()],
        )
    }

    pub fn intents(&self) -> Result<Vec<Intent>, S::Error> {
        self.rows(
            "SELECT key, action, subdir, filename FROM pending_objects",
            Vec::new(),
        )
    }

    // Direct uploads.

    /// Reserves `key` for an upload that writes the bytes of `sha256` straight to it, unless a
    /// record names the file or uploads of other bytes hold the key; answers whether it did.
    /// Uploads of the same bytes share the key (a retry joins the upload it repeats: R2 stores
    /// each put whole or not at all, and both store the same bytes). Until the last holder
    /// leaves, no other commit places an object there.
    pub fn reserve_upload(
        &self,
        file: (&str, &str),
        key: &str,
        sha256: &str,
        now: u64,
    ) -> Result<bool, S::Error> {
        let (subdir, filename) = file;
        if self.stored(subdir, filename)?.is_some() {
            return Ok(false);
        }
        match self.upload_at(key)? {
            Some(upload) if upload.sha256 != sha256 => Ok(false),
            Some(_) => {
                self.run(
                    "UPDATE direct_uploads SET holders = holders + 1, since = ? WHERE key = ?",
                    vec![millis(now), key.into()],
                )?;
                Ok(true)
            }
            None => {
                self.run(
                    "INSERT INTO direct_uploads (key, subdir, filename, sha256, holders, since) \
                     VALUES (?, ?, ?, ?, 1, ?)",
                    vec![
                        key.into(),
                        subdir.into(),
                        filename.into(),
                        sha256.into(),
                        millis(now),
                    ],
                )?;
                Ok(true)
            }
        }
    }

    /// The subdir an upload of package `name` most likely belongs in while its own is not
    /// known yet (see [`crate::placement`]): that of the channel's newest file of the name,
    /// else of its newest file; `None` in a channel without files.
    pub fn likely_subdir(&self, name: &str) -> Result<Option<String>, S::Error> {
        #[derive(Deserialize)]
        struct Row {
            subdir: String,
        }
        let found = match self.first::<Row>(
            "SELECT subdir FROM packages WHERE name = ? ORDER BY indexed_at DESC LIMIT 1",
            vec![name.into()],
        )? {
            Some(row) => Some(row),
            None => self.first::<Row>(
                "SELECT subdir FROM packages ORDER BY indexed_at DESC LIMIT 1",
                Vec::new(),
            )?,
        };
        Ok(found.map(|row| row.subdir))
    }

    /// The uploads holding `key`, if any do.
    pub fn upload_at(&self, key: &str) -> Result<Option<DirectUpload>, S::Error> {
        self.first(
            "SELECT key, subdir, filename, sha256, holders, since FROM direct_uploads \
             WHERE key = ?",
            vec![key.into()],
        )
    }

    /// One holder of `key` leaves it (committed or failed); answers whether that was the last.
    pub fn leave_upload(&self, key: &str) -> Result<bool, S::Error> {
        self.run(
            "UPDATE direct_uploads SET holders = holders - 1 WHERE key = ?",
            vec![key.into()],
        )?;
        let left = self
            .upload_at(key)?
            .is_some_and(|upload| upload.holders == 0);
        if left {
            self.end_upload(key)?;
        }
        Ok(left)
    }

    pub fn end_upload(&self, key: &str) -> Result<(), S::Error> {
        self.run("DELETE FROM direct_uploads WHERE key = ?", vec![key.into()])
    }

    /// The uploads reserved before `cutoff`, oldest first: only an upload that died holds one
    /// that long.
    pub fn uploads_before(&self, cutoff: u64) -> Result<Vec<DirectUpload>, S::Error> {
        self.rows(
            "SELECT key, subdir, filename, sha256, holders, since FROM direct_uploads \
             WHERE since < ? ORDER BY since",
            vec![millis(cutoff)],
        )
    }

    /// When the oldest reservation was made.
    pub fn oldest_upload(&self) -> Result<Option<u64>, S::Error> {
        #[derive(Deserialize)]
        struct Row {
            since: Option<u64>,
        }
        Ok(self
            .first::<Row>("SELECT MIN(since) AS since FROM direct_uploads", Vec::new())?
            .and_then(|row| row.since))
    }

    // Marks.

    /// The number a new mark in `table` takes: above every one held, so that a build under
    /// way, which claimed older numbers, releases none of the new marks.
    fn next_mark(&self, table: &'static str) -> Result<i64, S::Error> {
        let next: Vec<Number> = self.rows(
            format!("SELECT COALESCE(MAX(mark), 0) + 1 AS mark FROM {table}"),
            Vec::new(),
        )?;
        Ok(next.first().map_or(1, |row| row.mark))
    }

    /// Marks `name`'s shard stale.
    pub fn mark_dirty(&self, subdir: &str, name: &str) -> Result<(), S::Error> {
        let mark = self.next_mark("dirty")?;
        self.run(
            "INSERT INTO dirty (subdir, name, mark) VALUES (?, ?, ?) \
             ON CONFLICT (subdir, name) DO UPDATE SET mark = excluded.mark",
            vec![subdir.into(), name.into(), mark.into()],
        )
    }

    /// Records that `name` in `subdir` changed: its shard and the monolithic files are stale.
    fn mark_changed(
        &self,
        channel: &str,
        subdir: &str,
        name: &str,
        now: u64,
    ) -> Result<(), S::Error> {
        self.mark_dirty(subdir, name)?;
        let mark = self.next_mark("stale_repodata")?;
        self.run(
            "INSERT INTO stale_repodata (subdir, channel, since, mark) VALUES (?, ?, ?, ?) \
             ON CONFLICT (subdir) DO UPDATE SET mark = excluded.mark",
            vec![subdir.into(), channel.into(), millis(now), mark.into()],
        )
    }

    /// Marks every name and every subdir with a row changed; returns the stale subdirs.
    pub fn mark_everything(&self, channel: &str, now: u64) -> Result<Vec<String>, S::Error> {
        let mark = self.next_mark("dirty")?;
        self.run(
            "INSERT INTO dirty (subdir, name, mark) \
             SELECT DISTINCT subdir, name, ? FROM packages WHERE true \
             ON CONFLICT (subdir, name) DO UPDATE SET mark = excluded.mark",
            vec![mark.into()],
        )?;
        let mark = self.next_mark("stale_repodata")?;
        self.run(
            "INSERT INTO stale_repodata (subdir, channel, since, mark) \
             SELECT DISTINCT subdir, ?, ?, ? FROM packages WHERE true \
             ON CONFLICT (subdir) DO UPDATE SET mark = excluded.mark",
            vec![channel.into(), millis(now), mark.into()],
        )?;
        self.stale_subdirs()
    }

    /// Marks `name`'s shard stale for a repair, keeping the number of a mark already held (a
    /// build that claimed it builds the name anyway); a new mark takes 0.
    pub fn mark_dirty_for_repair(&self, subdir: &str, name: &str) -> Result<(), S::Error> {
        self.run(
            "INSERT OR IGNORE INTO dirty (subdir, name) VALUES (?, ?)",
            vec![subdir.into(), name.into()],
        )
    }

    /// Marks `subdir`'s monolithic files stale for a repair, as [`Self::mark_dirty_for_repair`]
    /// marks a name.
    pub fn mark_stale_for_repair(
        &self,
        channel: &str,
        subdir: &str,
        now: u64,
    ) -> Result<(), S::Error> {
        self.run(
            "INSERT OR IGNORE INTO stale_repodata (subdir, channel, since) VALUES (?, ?, ?)",
            vec![subdir.into(), channel.into(), millis(now)],
        )
    }

    /// The names of `subdir` marked dirty, with their numbers: what a shard build claims.
    pub fn dirty_marks(&self, subdir: &str) -> Result<Vec<Mark>, S::Error> {
        self.rows(
            "SELECT name, mark FROM dirty WHERE subdir = ?",
            vec![subdir.into()],
        )
    }

    /// Releases the `claimed` dirty marks of `subdir` that no change renewed meanwhile.
    pub fn release_dirty(&self, subdir: &str, claimed: &[Mark]) -> Result<(), S::Error> {
        let current = self.dirty_marks(subdir)?;
        for Mark { name, mark } in claimed {
            let now = current.iter().find(|c| &c.name == name).map(|c| c.mark);
            if releases(*mark, now) {
                self.run(
                    "DELETE FROM dirty WHERE subdir = ? AND name = ?",
                    vec![subdir.into(), name.as_str().into()],
                )?;
            }
        }
        Ok(())
    }

    /// The number of `subdir`'s stale mark, if it is marked: what a monolithic build claims.
    pub fn stale_mark(&self, subdir: &str) -> Result<Option<i64>, S::Error> {
        Ok(self
            .first::<Number>(
                "SELECT mark FROM stale_repodata WHERE subdir = ?",
                vec![subdir.into()],
            )?
            .map(|row| row.mark))
    }

    /// Releases `subdir`'s stale mark if it is still the `claimed` one.
    pub fn release_stale(&self, subdir: &str, claimed: i64) -> Result<(), S::Error> {
        if releases(claimed, self.stale_mark(subdir)?) {
            self.run(
                "DELETE FROM stale_repodata WHERE subdir = ?",
                vec![subdir.into()],
            )?;
        }
        Ok(())
    }

    pub fn stale_subdirs(&self) -> Result<Vec<String>, S::Error> {
        self.subdirs("SELECT subdir FROM stale_repodata ORDER BY subdir")
    }

    /// The subdirs with any mark, dirty or stale.
    pub fn marked_subdirs(&self) -> Result<Vec<String>, S::Error> {
        self.subdirs("SELECT subdir FROM dirty UNION SELECT subdir FROM stale_repodata")
    }

    pub fn dirty_count(&self) -> Result<u64, S::Error> {
        let rows: Vec<Count> = self.rows("SELECT COUNT(*) AS count FROM dirty", Vec::new())?;
        Ok(rows.first().map_or(0, |row| row.count as u64))
    }

    pub fn stale(&self) -> Result<Vec<StaleSubdir>, S::Error> {
        self.rows(
            "SELECT subdir, since FROM stale_repodata ORDER BY subdir",
            Vec::new(),
        )
    }

    /// Whether marks or intents are held, and when the oldest retired shard retired.
    pub fn stored_work(&self) -> Result<StoredWork, S::Error> {
        #[derive(Deserialize)]
        struct Row {
            unfinished: i64,
            oldest: Option<u64>,
        }
        let row = self.first::<Row>(
            "SELECT EXISTS (SELECT 1 FROM stale_repodata) \
               OR EXISTS (SELECT 1 FROM dirty) \
               OR EXISTS (SELECT 1 FROM pending_objects) AS unfinished, \
             (SELECT MIN(retired_at) FROM retired_shards) AS oldest",
            Vec::new(),
        )?;
        Ok(StoredWork {
            unfinished: row.as_ref().is_some_and(|row| row.unfinished != 0),
            oldest_retired: row.and_then(|row| row.oldest),
        })
    }

    // Shards.

    /// The files of one name in `subdir`: what its shard holds.
    pub fn name_rows(&self, subdir: &str, name: &str) -> Result<Vec<NameRow>, S::Error> {
        self.rows(
            "SELECT filename, record FROM packages WHERE subdir = ? AND name = ?",
            vec![subdir.into(), name.into()],
        )
    }

    /// The hex SHA-256 of `name`'s current shard.
    pub fn shard_of(&self, subdir: &str, name: &str) -> Result<Option<String>, S::Error> {
        #[derive(Deserialize)]
        struct Row {
            sha256: String,
        }
        Ok(self
            .first::<Row>(
                "SELECT sha256 FROM shards WHERE subdir = ? AND name = ?",
                vec![subdir.into(), name.into()],
            )?
            .map(|row| row.sha256))
    }

    /// Every name of `subdir`'s shard index.
    pub fn shards(&self, subdir: &str) -> Result<Vec<ShardEntry>, S::Error> {
        self.rows(
            "SELECT name, sha256 FROM shards WHERE subdir = ?",
            vec![subdir.into()],
        )
    }

    /// Names the shard `sha256` (written at `key`) current for `name`, and takes it off the
    /// retired list: it may be one retired earlier that has not expired yet.
    pub fn name_shard(
        &self,
        subdir: &str,
        name: &str,
        sha256: &str,
        key: &str,
    ) -> Result<(), S::Error> {
        self.run(
            "INSERT OR REPLACE INTO shards (subdir, name, sha256) VALUES (?, ?, ?)",
            vec![subdir.into(), name.into(), sha256.into()],
        )?;
        self.run("DELETE FROM retired_shards WHERE key = ?", vec![key.into()])
    }

    /// Takes `name` out of the shard index.
    pub fn forget_shard(&self, subdir: &str, name: &str) -> Result<(), S::Error> {
        self.run(
            "DELETE FROM shards WHERE subdir = ? AND name = ?",
            vec![subdir.into(), name.into()],
        )
    }

    /// Lists the shard object at `key` as retired since `now`.
    pub fn retire_shard(&self, key: &str, now: u64) -> Result<(), S::Error> {
        self.run(
            "INSERT OR REPLACE INTO retired_shards (key, retired_at) VALUES (?, ?)",
            vec![key.into(), millis(now)],
        )
    }

    /// The keys of the shards retired at `cutoff` or before.
    pub fn expired_shards(&self, cutoff: u64) -> Result<Vec<String>, S::Error> {
        #[derive(Deserialize)]
        struct Row {
            key: String,
        }
        Ok(self
            .rows::<Row>(
                "SELECT key FROM retired_shards WHERE retired_at <= ?",
                vec![millis(cutoff)],
            )?
            .into_iter()
            .map(|row| row.key)
            .collect())
    }

    /// Drops a retired shard from the list, once its object is deleted.
    pub fn forget_retired(&self, key: &str) -> Result<(), S::Error> {
        self.run("DELETE FROM retired_shards WHERE key = ?", vec![key.into()])
    }

    // The monolithic files and the check.

    /// One page of a subdir's rows, in the order repodata.json lists them.
    pub fn page(&self, subdir: &str, page: &Page<'_>) -> Result<Vec<PageRow>, S::Error> {
        self.rows(
            "SELECT filename, record, run_exports FROM packages \
             WHERE subdir = ? AND filename > ? AND (filename GLOB '*.conda') = ? \
             ORDER BY filename LIMIT ?",
            vec![
                subdir.into(),
                page.after.into(),
                page.conda.into(),
                count(page.limit),
            ],
        )
    }

    /// Up to `limit` files after `(subdir, filename)`, in that order, with their recorded
    /// sizes.
    pub fn record_sizes(
        &self,
        subdir: &str,
        filename: &str,
        limit: usize,
    ) -> Result<Vec<RecordSize>, S::Error> {
        self.rows(
            "SELECT subdir, filename, json_extract(record, '$.size') AS size, origin \
             FROM packages \
             WHERE (subdir, filename) > (?, ?) ORDER BY subdir, filename LIMIT ?",
            vec![subdir.into(), filename.into(), count(limit)],
        )
    }

    /// The subdirs with a row or a shard.
    pub fn indexed_subdirs(&self) -> Result<Vec<String>, S::Error> {
        self.subdirs("SELECT subdir FROM packages UNION SELECT subdir FROM shards")
    }

    /// The package names with a row in `subdir`.
    pub fn names(&self, subdir: &str) -> Result<Vec<String>, S::Error> {
        Ok(self
            .rows::<Name>(
                "SELECT DISTINCT name FROM packages WHERE subdir = ?",
                vec![subdir.into()],
            )?
            .into_iter()
            .map(|row| row.name)
            .collect())
    }

    /// Files per subdir.
    pub fn subdir_rows(&self) -> Result<Vec<SubdirRows>, S::Error> {
        self.rows(
            "SELECT subdir, COUNT(*) AS packages FROM packages GROUP BY subdir ORDER BY subdir",
            Vec::new(),
        )
    }

    /// The channel's file count and newest indexing time.
    pub fn figures(&self) -> Result<Option<Figures>, S::Error> {
        self.first(
            "SELECT COUNT(*) AS count, MAX(indexed_at) AS last FROM packages",
            Vec::new(),
        )
    }

    // Mirrors.

    pub fn mirror_subdir(&self, subdir: &str) -> Result<Option<MirrorSubdir>, S::Error> {
        self.first(
            "SELECT rules, etag, fetched_at, checked_at, failure, admits_more_at, \
             run_exports_etag, missing_at FROM mirror_subdirs WHERE subdir = ?",
            vec![subdir.into()],
        )
    }

    /// Every subdir a mirror's index has read from its upstream, with its state (not those the
    /// upstream lacks).
    pub fn mirror_subdirs(&self) -> Result<Vec<(String, MirrorSubdir)>, S::Error> {
        let mut states = Vec::new();
        let read = "SELECT subdir FROM mirror_subdirs WHERE missing_at IS NULL ORDER BY subdir";
        for subdir in self.subdirs(read)? {
            if let Some(state) = self.mirror_subdir(&subdir)? {
                states.push((subdir, state));
            }
        }
        Ok(states)
    }

    pub fn set_mirror_subdir(&self, subdir: &str, state: &MirrorSubdir) -> Result<(), S::Error> {
        self.run(
            "INSERT OR REPLACE INTO mirror_subdirs \
             (subdir, rules, etag, fetched_at, checked_at, failure, admits_more_at, \
             run_exports_etag, missing_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            vec![
                subdir.into(),
                state.rules.as_str().into(),
                state.etag.as_deref().into(),
                millis(state.fetched_at),
                millis(state.checked_at),
                state.failure.as_deref().into(),
                state.admits_more_at.map(|at| at as i64).into(),
                state.run_exports_etag.as_deref().into(),
                state.missing_at.map(|at| at as i64).into(),
            ],
        )
    }

    /// Adds admitted records to the refresh of `subdir` under way, [`STAGED_ROWS`] per
    /// statement.
    pub fn stage_upstream(&self, subdir: &str, records: &[MirrorRecord]) -> Result<(), S::Error> {
        for batch in records.chunks(STAGED_ROWS) {
            let rows = vec!["(?, ?, ?, ?, ?)"; batch.len()].join(", ");
            let params = batch
                .iter()
                .flat_map(|record| {
                    [
                        subdir.into(),
                        record.filename.as_str().into(),
                        record.name.as_str().into(),
                        record.sha256.as_str().into(),
                        record.record.as_str().into(),
                    ]
                })
                .collect();
            self.sql.run(Statement::new(
                format!(
                    "INSERT OR REPLACE INTO mirror_staging (subdir, filename, name, sha256, record) \
                     VALUES {rows}"
                ),
                params,
            ))?;
        }
        Ok(())
    }

    /// Sets the run exports of the staged records of `subdir` that `entries` name, [`STAGED_ROWS`]
    /// per statement; an entry for a file not staged (left out by the rules) is no row's.
    pub fn stage_run_exports(
        &self,
        subdir: &str,
        entries: &[UpstreamRunExports],
    ) -> Result<(), S::Error> {
        for batch in entries.chunks(STAGED_ROWS) {
            let rows = vec!["(?, ?)"; batch.len()].join(", ");
            let mut params: Vec<Param> = batch
                .iter()
                .flat_map(|entry| {
                    [
                        entry.filename.as_str().into(),
                        entry.run_exports.as_str().into(),
                    ]
                })
                .collect();
            params.push(subdir.into());
            self.sql.run(Statement::new(
                format!(
                    "WITH entries (filename, run_exports) AS (VALUES {rows}) \
                     UPDATE mirror_staging SET run_exports = entries.run_exports FROM entries \
                     WHERE mirror_staging.subdir = ? \
                     AND mirror_staging.filename = entries.filename"
                ),
                params,
            ))?;
        }
        Ok(())
    }

    /// Gives the staged records of `subdir` the run exports their rows hold: the upstream's
    /// run_exports.json did not change.
    pub fn stage_stored_run_exports(&self, subdir: &str) -> Result<(), S::Error> {
        self.run(
            "UPDATE mirror_staging SET run_exports = p.run_exports FROM packages p \
             WHERE mirror_staging.subdir = ? AND p.subdir = mirror_staging.subdir \
             AND p.filename = mirror_staging.filename AND p.origin = 'upstream'",
            vec![subdir.into()],
        )
    }

    /// Forgets a refresh that did not finish.
    pub fn clear_staging(&self, subdir: &str) -> Result<(), S::Error> {
        self.run(
            "DELETE FROM mirror_staging WHERE subdir = ?",
            vec![subdir.into()],
        )
    }

    /// Makes the staged records of `subdir` its mirror rows, in one stretch: rows new or
    /// changed are stored, rows no longer staged dropped (answered with those whose bytes
    /// changed, as [`MirrorSwap::outdated`]), and the names and the subdir that
    /// changed marked (the subdir also when `first`, so its files are built even empty).
    pub fn swap_in_staging(
        &self,
        channel: &str,
        subdir: &str,
        now: u64,
        first: bool,
    ) -> Result<MirrorSwap, S::Error> {
        const CHANGED: &str = "FROM mirror_staging s LEFT JOIN packages p \
             ON p.subdir = s.subdir AND p.filename = s.filename \
             WHERE s.subdir = ? AND (p.filename IS NULL OR p.sha256 != s.sha256 \
             OR p.record != s.record OR p.run_exports IS NOT s.run_exports \
             OR p.origin IS NOT 'upstream')";
        const VANISHED: &str = "FROM packages p WHERE p.subdir = ? AND p.origin = 'upstream' \
             AND NOT EXISTS (SELECT 1 FROM mirror_staging s \
             WHERE s.subdir = p.subdir AND s.filename = p.filename)";
        let counted: Vec<Count> = self.rows(
            format!("SELECT (SELECT COUNT(*) {CHANGED}) + (SELECT COUNT(*) {VANISHED}) AS count"),
            vec![subdir.into(), subdir.into()],
        )?;
        let changed = counted.first().map_or(0, |row| row.count as u64);
        if changed > 0 {
            let mark = self.next_mark("dirty")?;
            self.sql.run(Statement::new(
                format!(
                    "INSERT INTO dirty (subdir, name, mark) SELECT subdir, name, ? FROM ( \
                     SELECT s.subdir AS subdir, s.name AS name {CHANGED} \
                     UNION SELECT p.subdir, p.name {CHANGED} AND p.filename IS NOT NULL \
                     UNION SELECT p.subdir, p.name {VANISHED}) WHERE true \
                     ON CONFLICT (subdir, name) DO UPDATE SET mark = excluded.mark"
                ),
                vec![mark.into(), subdir.into(), subdir.into(), subdir.into()],
            ))?;
        }
        // A file the upstream now has other bytes for: a copy kept of it is stale.
        let mut outdated: Vec<Filename> = self.rows(
            "SELECT s.filename FROM mirror_staging s JOIN packages p \
             ON p.subdir = s.subdir AND p.filename = s.filename \
             WHERE s.subdir = ? AND p.sha256 != s.sha256",
            vec![subdir.into()],
        )?;
        let dropped: Vec<Filename> = self.rows(
            format!(
                "DELETE FROM packages WHERE rowid IN (SELECT p.rowid {VANISHED}) \
                 RETURNING filename"
            ),
            vec![subdir.into()],
        )?;
        outdated.extend(dropped);
        self.sql.run(Statement::new(
            format!(
                "INSERT OR REPLACE INTO packages \
                 (subdir, filename, name, sha256, record, run_exports, indexed_at, origin) \
                 SELECT s.subdir, s.filename, s.name, s.sha256, s.record, s.run_exports, ?, \
                 'upstream' {CHANGED}"
            ),
            vec![millis(now), subdir.into()],
        ))?;
        if changed > 0 || first {
            let mark = self.next_mark("stale_repodata")?;
            self.run(
                "INSERT INTO stale_repodata (subdir, channel, since, mark) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (subdir) DO UPDATE SET mark = excluded.mark",
                vec![subdir.into(), channel.into(), millis(now), mark.into()],
            )?;
        }
        self.clear_staging(subdir)?;
        Ok(MirrorSwap {
            changed,
            outdated: outdated.into_iter().map(|row| row.filename).collect(),
        })
    }

    /// Stages the subdir's current mirror rows but those of `names`: what a refresh from
    /// shards keeps of the names whose shard did not change (their run exports come from the
    /// upstream's run_exports.json, as every staged record's).
    pub fn stage_current_but(&self, subdir: &str, names: &[&str]) -> Result<(), S::Error> {
        self.run(
            "INSERT OR REPLACE INTO mirror_staging (subdir, filename, name, sha256, record) \
             SELECT subdir, filename, name, sha256, record FROM packages \
             WHERE subdir = ? AND origin = 'upstream'",
            vec![subdir.into()],
        )?;
        for name in names {
            self.run(
                "DELETE FROM mirror_staging WHERE subdir = ? AND name = ?",
                vec![subdir.into(), (*name).into()],
            )?;
        }
        Ok(())
    }

    /// The upstream's shard hash per name, as the subdir's rows were last read from.
    pub fn upstream_shards(&self, subdir: &str) -> Result<Vec<ShardEntry>, S::Error> {
        self.rows(
            "SELECT name, sha256 FROM upstream_shards WHERE subdir = ?",
            vec![subdir.into()],
        )
    }

    /// Replaces the subdir's upstream shard hashes (none: read from repodata.json).
    pub fn set_upstream_shards<'s>(
        &self,
        subdir: &str,
        shards: impl IntoIterator<Item = (&'s str, &'s str)>,
    ) -> Result<(), S::Error> {
        self.run(
            "DELETE FROM upstream_shards WHERE subdir = ?",
            vec![subdir.into()],
        )?;
        for (name, sha256) in shards {
            self.run(
                "INSERT INTO upstream_shards (subdir, name, sha256) VALUES (?, ?, ?)",
                vec![subdir.into(), name.into(), sha256.into()],
            )?;
        }
        Ok(())
    }

    /// A mirror's file, if its index holds it.
    pub fn upstream_file(
        &self,
        subdir: &str,
        filename: &str,
    ) -> Result<Option<UpstreamFile>, S::Error> {
        self.first(
            "SELECT sha256, json_extract(record, '$.size') AS size FROM packages \
             WHERE subdir = ? AND filename = ? AND origin = 'upstream'",
            vec![subdir.into(), filename.into()],
        )
    }

    // Browsing (see [`crate::browse`] for what a query means).

    /// One page of names matching `query`, with their figures.
    pub fn browse(&self, query: &BrowseQuery) -> Result<PackagePage, S::Error> {
        let want = query.limit as usize + 1;
        let (mut group, after) = query.start();
        let mut after = after.to_owned();
        let mut names: Vec<(Group, String)> = Vec::with_capacity(want);
        loop {
            let found = self.names_in(query, group, &after, want - names.len())?;
            let exhausted = found.len() < want - names.len();
            names.extend(found.into_iter().map(|name| (group, name)));
            if names.len() == want || !exhausted || !query.continues_after(group) {
                break;
            }
            group = Group::Substring;
            after.clear();
        }
        let next_cursor = if names.len() == want {
            names.pop();
            names.last().map(|(group, name)| {
                Cursor {
                    group: *group,
                    after: name.clone(),
                }
                .encode()
            })
        } else {
            None
        };
        let names: Vec<String> = names.into_iter().map(|(_, name)| name).collect();
        let mut files: HashMap<String, Vec<FileRow>> = HashMap::new();
        for (name, file) in self.files_of(&names, query.subdir.as_deref())? {
            files.entry(name).or_default().push(file);
        }
        let packages = names
            .iter()
            .filter_map(|name| summarize(name, files.get(name)?))
            .collect();
        Ok(PackagePage {
            packages,
            total: self.total(query)?,
            next_cursor,
        })
    }

    /// Up to `limit` names of `group` after `after`, in order.
    fn names_in(
        &self,
        query: &BrowseQuery,
        group: Group,
        after: &str,
        limit: usize,
    ) -> Result<Vec<String>, S::Error> {
        let mut params: Vec<Param> = vec![after.into()];
        let mut sql = String::from("SELECT DISTINCT name FROM packages WHERE name > ?");
        if let Some(subdir) = &query.subdir {
            sql.push_str(" AND subdir = ?");
            params.push(subdir.as_str().into());
        }
        match group {
            Group::Prefix if query.q.is_empty() => {}
            Group::Prefix => {
                sql.push_str(" AND name >= ? AND name < ?");
                params.push(query.q.as_str().into());
                params.push(query.prefix_end().as_str().into());
            }
            Group::Substring => {
                sql.push_str(" AND instr(name, ?) > 1");
                params.push(query.q.as_str().into());
            }
        }
        sql.push_str(" ORDER BY name LIMIT ?");
        params.push(count(limit));
        let rows: Vec<Name> = self.rows(sql, params)?;
        Ok(rows.into_iter().map(|row| row.name).collect())
    }

    /// How many names match, over every page.
    fn total(&self, query: &BrowseQuery) -> Result<u64, S::Error> {
        let mut params: Vec<Param> = Vec::new();
        let mut sql = String::from("SELECT COUNT(DISTINCT name) AS count FROM packages WHERE true");
        if let Some(subdir) = &query.subdir {
            sql.push_str(" AND subdir = ?");
            params.push(subdir.as_str().into());
        }
        if !query.q.is_empty() {
            sql.push_str(" AND instr(name, ?) > 0");
            params.push(query.q.as_str().into());
        }
        let rows: Vec<Count> = self.rows(sql, params)?;
        Ok(rows.first().map_or(0, |row| row.count as u64))
    }

    /// The files of `names` (in `subdir`, if given), with their names.
    fn files_of(
        &self,
        names: &[String],
        subdir: Option<&str>,
    ) -> Result<Vec<(String, FileRow)>, S::Error> {
        #[derive(Deserialize)]
        struct Row {
            name: String,
            #[serde(flatten)]
            file: FileRow,
        }
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders = vec!["?"; names.len()].join(", ");
        let mut sql = format!(
            "SELECT name, subdir, filename, record, about, indexed_at FROM packages \
             WHERE name IN ({placeholders})"
        );
        let mut params: Vec<Param> = names.iter().map(|name| name.as_str().into()).collect();
        if let Some(subdir) = subdir {
            sql.push_str(" AND subdir = ?");
            params.push(subdir.into());
        }
        let rows: Vec<Row> = self.rows(sql, params)?;
        Ok(rows.into_iter().map(|row| (row.name, row.file)).collect())
    }

    /// Every file of one name, newest first; `None` when the channel has none.
    pub fn package(&self, channel: &str, name: &str) -> Result<Option<PackageRecords>, S::Error> {
        let rows: Vec<FileRow> = self.rows(
            "SELECT subdir, filename, record, about, indexed_at, provenance FROM packages \
             WHERE name = ?",
            vec![name.into()],
        )?;
        Ok((!rows.is_empty()).then(|| package_records(channel, name, rows)))
    }
}

/// Epoch milliseconds as SQLite stores them.
fn millis(at: u64) -> Param {
    Param::Int(at as i64)
}

fn count(n: usize) -> Param {
    Param::Int(n as i64)
}
