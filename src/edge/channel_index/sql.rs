//! The object's SQLite as the executor of [`crate::index_store`]: rows are read straight from
//! the cursor into their types.

use serde::de::DeserializeOwned;
use worker::{SqlStorage, SqlStorageValue};

use crate::index_store::Sql;
use crate::statement::{Param, Statement};

impl Sql for SqlStorage {
    type Error = worker::Error;

    fn run(&self, statement: Statement) -> worker::Result<()> {
        self.exec(&statement.sql, bind(statement.params)?)?;
        Ok(())
    }

    fn rows<T: DeserializeOwned>(&self, statement: Statement) -> worker::Result<Vec<T>> {
        self.exec(&statement.sql, bind(statement.params)?)?
            .to_array()
    }
}

fn bind(params: Vec<Param>) -> worker::Result<Vec<SqlStorageValue>> {
    params
        .into_iter()
        .map(|param| match param {
            Param::Text(text) => Ok(text.into()),
            // Refused outside JavaScript's safe integers, which the object's SQLite reads exactly.
            Param::Int(value) => SqlStorageValue::try_from_i64(value),
            Param::Null => Ok(SqlStorageValue::Null),
        })
        .collect()
}
