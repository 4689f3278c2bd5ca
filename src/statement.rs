//! A SQL statement with its parameters, as the stores write them: the directory (D1,
//! [`crate::directory`]) and the channel index ([`crate::index_store`]). Each runtime binds
//! them its own way; the SQL is the same everywhere.

use std::borrow::Cow;

/// A value bound to a statement's placeholder.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Text(String),
    Int(i64),
    Null,
}

impl From<&str> for Param {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

impl From<i64> for Param {
    fn from(value: i64) -> Self {
        Self::Int(value)
    }
}

impl From<bool> for Param {
    fn from(value: bool) -> Self {
        Self::Int(value.into())
    }
}

impl<T: Into<Param>> From<Option<T>> for Param {
    fn from(value: Option<T>) -> Self {
        value.map_or(Self::Null, Into::into)
    }
}

/// One SQL statement and its parameters: `?N` is `params[N - 1]`, and a bare `?` the one after
/// the highest placeholder before it (SQLite's numbering). The text is fixed, except where a
/// query's shape depends on its request (a search's filters, a list of names).
///
/// Only the directory's statements, which number every placeholder, are ever inlined.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub sql: Cow<'static, str>,
    pub params: Vec<Param>,
}

impl Statement {
    pub fn new(sql: impl Into<Cow<'static, str>>, params: Vec<Param>) -> Self {
        Self {
            sql: sql.into(),
            params,
        }
    }

    /// The statement with its parameters written in as SQL literals, for tools that take SQL
    /// text only (`wrangler d1 execute --remote`). Placeholders inside string literals are left
    /// alone; every other one must be numbered.
    pub fn inline(&self) -> String {
        let mut out = String::with_capacity(self.sql.len());
        let mut chars = self.sql.chars().peekable();
        let mut in_string = false;
        while let Some(c) = chars.next() {
            if c == '\'' {
                in_string = !in_string;
            }
            if c != '?' || in_string {
                out.push(c);
                continue;
            }
            let mut digits = String::new();
            while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                digits.push(*d);
                chars.next();
            }
            let index: usize = digits.parse().expect("placeholders are numbered");
            out.push_str(&match &self.params[index - 1] {
                Param::Text(text) => format!("'{}'", text.replace('\'', "''")),
                Param::Int(value) => value.to_string(),
                Param::Null => "NULL".to_owned(),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inlined_literals_are_quoted() {
        let statement = Statement::new(
            "SELECT ?1, ?2, ?3, '?1' WHERE x = ?1",
            vec!["it's".into(), 7i64.into(), Param::Null],
        );
        assert_eq!(
            statement.inline(),
            "SELECT 'it''s', 7, NULL, '?1' WHERE x = 'it''s'"
        );
    }
}
