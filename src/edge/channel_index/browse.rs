//! The browse API's reads of the index (see [`crate::browse`] for what they mean), and the
//! channel's figures it reports to D1 after a change.
//!
//! Every query runs on an index: names in order through `packages_by_name_only` (or
//! `packages_by_name`, on subdir and name, with a subdir), a prefix search as a range of it, a
//! substring search as a scan of it from the cursor on (the names only, never the records),
//! one name's files through `packages_by_name_only`, and the newest indexing time through
//! `packages_by_time`.

use std::collections::HashMap;

use serde::Deserialize;
use worker::SqlStorageValue;

use super::ChannelIndex;
use crate::browse::{
    package_records, summarize, BrowseQuery, Cursor, FileRow, Group, PackagePage, PackageRecords,
};
use crate::directory;
use crate::edge::db::Db;
use crate::edge::error::ApiResult;

/// The indexes the browse queries use, added to the index's schema.
pub(super) const SCHEMA: [&str; 2] = [
    "CREATE INDEX IF NOT EXISTS packages_by_name_only ON packages (name)",
    "CREATE INDEX IF NOT EXISTS packages_by_time ON packages (indexed_at)",
];

#[derive(Deserialize)]
struct Name {
    name: String,
}

#[derive(Deserialize)]
struct Count {
    count: i64,
}

impl ChannelIndex {
    /// One page of names matching `query`, with their figures.
    pub(super) fn browse(&self, query: &BrowseQuery) -> ApiResult<PackagePage> {
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
    ) -> ApiResult<Vec<String>> {
        let mut params: Vec<SqlStorageValue> = vec![after.into()];
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
                params.push(query.prefix_end().into());
            }
            Group::Substring => {
                sql.push_str(" AND instr(name, ?) > 1");
                params.push(query.q.as_str().into());
            }
        }
        sql.push_str(" ORDER BY name LIMIT ?");
        params.push(SqlStorageValue::try_from_i64(limit as i64)?);
        let rows: Vec<Name> = self.rows(&sql, params)?;
        Ok(rows.into_iter().map(|row| row.name).collect())
    }

    /// How many names match, over every page.
    fn total(&self, query: &BrowseQuery) -> ApiResult<u64> {
        let mut params: Vec<SqlStorageValue> = Vec::new();
        let mut sql = String::from("SELECT COUNT(DISTINCT name) AS count FROM packages WHERE true");
        if let Some(subdir) = &query.subdir {
            sql.push_str(" AND subdir = ?");
            params.push(subdir.as_str().into());
        }
        if !query.q.is_empty() {
            sql.push_str(" AND instr(name, ?) > 0");
            params.push(query.q.as_str().into());
        }
        let rows: Vec<Count> = self.rows(&sql, params)?;
        Ok(rows.first().map_or(0, |row| row.count as u64))
    }

    /// The files of `names` (in `subdir`, if given), with their names.
    fn files_of(
        &self,
        names: &[String],
        subdir: Option<&str>,
    ) -> ApiResult<Vec<(String, FileRow)>> {
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
        let mut params: Vec<SqlStorageValue> =
            names.iter().map(|name| name.as_str().into()).collect();
        if let Some(subdir) = subdir {
            sql.push_str(" AND subdir = ?");
            params.push(subdir.into());
        }
        let rows: Vec<Row> = self.rows(&sql, params)?;
        Ok(rows.into_iter().map(|row| (row.name, row.file)).collect())
    }

    /// Every file of one name, newest first; `None` when the channel has none.
    pub(super) fn package(&self, channel: &str, name: &str) -> ApiResult<Option<PackageRecords>> {
        let rows: Vec<FileRow> = self.rows(
            "SELECT subdir, filename, record, about, indexed_at FROM packages WHERE name = ?",
            vec![name.into()],
        )?;
        Ok((!rows.is_empty()).then(|| package_records(channel, name, rows)))
    }

    /// Writes the channel's package count and newest indexing time to D1, where the channel
    /// list reads them. A failure is logged, not answered: the change itself is stored, and
    /// the next one writes the figures again.
    pub(super) async fn report_figures(&self, channel: &str) {
        #[derive(Deserialize)]
        struct Figures {
            count: i64,
            last: Option<i64>,
        }
        let reported = async {
            let figures: Vec<Figures> = self.rows(
                "SELECT COUNT(*) AS count, MAX(indexed_at) AS last FROM packages",
                None,
            )?;
            let Some(figures) = figures.into_iter().next() else {
                return Ok(());
            };
            Db::new(self.env.d1("DB")?)
                .batch([directory::set_channel_figures(
                    channel,
                    figures.count,
                    figures.last,
                )])
                .await
        };
        let result: ApiResult<()> = reported.await;
        if let Err(error) = result {
            crate::edge::log::error(&format!("channel figures of {channel}: {}", error.message));
        }
    }
}
