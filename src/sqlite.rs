//! Statements run on SQLite natively: the directory's as D1 runs them (the admin command on the
//! local state's D1 file, the native tests on an in-memory database), and the channel index's
//! as its Durable Object runs them (the native tests).

use std::path::{Path, PathBuf};

use rusqlite::types::{Null, ValueRef};
use rusqlite::Connection;
use serde_json::{json, Map, Value};

use crate::index_store::Sql;
use crate::statement::{Param, Statement};

/// The rows a statement returns, as JSON objects by column name (as D1 answers).
pub fn rows(conn: &Connection, statement: &Statement) -> rusqlite::Result<Vec<Value>> {
    let mut prepared = conn.prepare(&statement.sql)?;
    for (at, param) in statement.params.iter().enumerate() {
        match param {
            Param::Text(text) => prepared.raw_bind_parameter(at + 1, text)?,
            Param::Int(value) => prepared.raw_bind_parameter(at + 1, value)?,
            Param::Null => prepared.raw_bind_parameter(at + 1, Null)?,
        }
    }
    query(prepared)
}

/// The rows of a prepared statement whose parameters are bound.
pub fn query(mut prepared: rusqlite::Statement<'_>) -> rusqlite::Result<Vec<Value>> {
    let columns: Vec<String> = prepared.column_names().map(str::to_owned).collect();
    let mut rows = prepared.raw_query();
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let mut object = Map::new();
        for (at, name) in columns.iter().enumerate() {
            let value = match row.get_ref(at)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(i) => json!(i),
                ValueRef::Real(f) => json!(f),
                ValueRef::Text(t) => json!(String::from_utf8_lossy(t)),
                // D1 answers a blob as its bytes; no directory statement returns one.
                ValueRef::Blob(b) => json!(b),
            };
            object.insert(name.clone(), value);
        }
        out.push(Value::Object(object));
    }
    Ok(out)
}

/// Why a channel index statement failed natively.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
    #[error("row: {0}")]
    Row(#[from] serde_json::Error),
}

impl Sql for Connection {
    type Error = IndexError;

    fn run(&self, statement: Statement) -> Result<(), IndexError> {
        rows(self, &statement)?;
        Ok(())
    }

    fn rows<T: serde::de::DeserializeOwned>(
        &self,
        statement: Statement,
    ) -> Result<Vec<T>, IndexError> {
        rows(self, &statement)?
            .into_iter()
            .map(|row| Ok(serde_json::from_value(row)?))
            .collect()
    }
}

/// The D1 database file of a local state folder (`wrangler ... --persist-to DIR`): the one
/// SQLite file in its D1 object folder, which exists once the migrations were applied.
pub fn local_d1_file(persist_to: &Path) -> Result<PathBuf, String> {
    let dir = persist_to.join("v3/d1/miniflare-D1DatabaseObject");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|_| no_database(persist_to))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.extension().is_some_and(|e| e == "sqlite")
                && path.file_stem().is_some_and(|s| s != "metadata")
        })
        .collect();
    match files.len() {
        0 => Err(no_database(persist_to)),
        1 => Ok(files.remove(0)),
        n => Err(format!(
            "{} holds {n} D1 databases; this command knows only one (binding DB)",
            dir.display()
        )),
    }
}

fn no_database(persist_to: &Path) -> String {
    format!(
        "no local D1 database in {}: apply the migrations first \
         (npm start does, or: wrangler d1 migrations apply DB --local --persist-to {0})",
        persist_to.display()
    )
}
