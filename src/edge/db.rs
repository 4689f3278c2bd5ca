//! The D1 executor: runs the statements of [`crate::directory`], which holds every query the
//! Worker makes of D1, so no SQL is written here or anywhere else in the Worker.

use std::future::Future;
use std::time::Duration;

use serde::de::{DeserializeOwned, IgnoredAny};
use wasm_bindgen::JsValue;
use worker::{D1Database, D1PreparedStatement, Delay};

use super::error::ApiResult;
use crate::d1_retry::{is_lock_conflict, PAUSES_MS};
use crate::statement::{Param, Statement};

pub struct Db(D1Database);

impl Db {
    pub fn new(database: D1Database) -> Self {
        Self(database)
    }

    /// The first row, if any.
    pub async fn first<T: DeserializeOwned>(&self, statement: Statement) -> ApiResult<Option<T>> {
        let prepared = self.prepare(&statement)?;
        retried(|| prepared.first(None)).await
    }

    /// Whether the statement returned a row: for changes whose `RETURNING` row says they
    /// happened, when its values are known already.
    pub async fn returns_row(&self, statement: Statement) -> ApiResult<bool> {
        Ok(self.first::<IgnoredAny>(statement).await?.is_some())
    }

    pub async fn all<T: DeserializeOwned>(&self, statement: Statement) -> ApiResult<Vec<T>> {
        let prepared = self.prepare(&statement)?;
        Ok(retried(|| prepared.all()).await?.results()?)
    }

    /// Runs the statements in one transaction.
    pub async fn batch(&self, statements: impl IntoIterator<Item = Statement>) -> ApiResult<()> {
        let prepared = statements
            .into_iter()
            .map(|statement| self.prepare(&statement))
            .collect::<ApiResult<Vec<_>>>()?;
        retried(|| self.0.batch(prepared.clone())).await?;
        Ok(())
    }

    fn prepare(&self, statement: &Statement) -> ApiResult<D1PreparedStatement> {
        let params: Vec<JsValue> = statement
            .params
            .iter()
            .map(|param| match param {
                Param::Text(text) => JsValue::from(text.as_str()),
                // D1 binds JS numbers; ids and millisecond times are exact in an f64.
                Param::Int(value) => JsValue::from(*value as f64),
                Param::Null => JsValue::NULL,
            })
            .collect();
        Ok(self.0.prepare(statement.sql.as_ref()).bind(&params)?)
    }
}

/// `attempt`'s answer, run again after a pause while it fails on another connection's lock on
/// the database file (see [`crate::d1_retry`]).
async fn retried<T, F, A>(attempt: A) -> ApiResult<T>
where
    F: Future<Output = worker::Result<T>>,
    A: Fn() -> F,
{
    let mut pauses = PAUSES_MS.iter();
    loop {
        match attempt().await {
            Err(error) if is_lock_conflict(&error.to_string()) => match pauses.next() {
                Some(&ms) => Delay::from(Duration::from_millis(ms)).await,
                None => return Err(error.into()),
            },
            answer => return Ok(answer?),
        }
    }
}
