//! Statements assembled from parts: each part binds its values as it is written and gets their
//! placeholders, so parts from several modules can form one statement (one round trip). Columns
//! travel as arrays, one row per element.

use sqlx::postgres::PgArguments;
use sqlx::{Arguments as _, Encode, Postgres, Type};

/// One statement's arguments, each bound where the statement's text names it.
#[derive(Default)]
pub struct Arguments(PgArguments);

impl Arguments {
    /// Binds `value`; returns its placeholder.
    pub fn bind<'t, T>(&mut self, value: T) -> Result<String, sqlx::Error>
    where
        T: Encode<'t, Postgres> + Type<Postgres>,
    {
        self.0.add(value).map_err(sqlx::Error::Encode)?;
        Ok(format!("${}", self.0.len()))
    }

    /// The arguments, for [`sqlx::query_with`].
    pub fn into_inner(self) -> PgArguments {
        self.0
    }
}

/// Collects a field of each row into a column to bind.
pub fn column<'r, R, T>(rows: &[&'r R], field: impl Fn(&'r R) -> T) -> Vec<T> {
    rows.iter().map(|row| field(row)).collect()
}
