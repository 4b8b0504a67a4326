//! The store's one error type: what failed, in terms a caller can map to a status code.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    /// A unique name/email/binding already exists.
    #[error("{0}")]
    Duplicate(String),
    /// The referenced row does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Optimistic concurrency: the row changed since it was read.
    #[error("concurrent update: the record changed, reload and retry")]
    Conflict,
    /// A write that would break an invariant (e.g. deleting a connection a rule binds).
    #[error("{0}")]
    Invalid(String),
    /// Stored data could not be decoded (corruption or a newer schema).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A database operation failed; `context` names the operation and its subject (never a
    /// secret), e.g. `update review 0190…: error returned from database: …`.
    #[error("{context}: {source}")]
    Database {
        context: String,
        #[source]
        source: sqlx::Error,
    },
}

impl StoreError {
    /// The underlying driver error, if this is a database failure.
    pub fn db_error(&self) -> Option<&sqlx::Error> {
        match self {
            Self::Db(e) | Self::Database { source: e, .. } => Some(e),
            _ => None,
        }
    }

    /// True when the database refused a write because of a UNIQUE constraint.
    pub(crate) fn is_unique_violation(&self) -> bool {
        self.db_error()
            .and_then(sqlx::Error::as_database_error)
            .is_some_and(|e| e.is_unique_violation())
    }

    /// True when the database refused a write because of a FOREIGN KEY constraint.
    pub(crate) fn is_foreign_key_violation(&self) -> bool {
        self.db_error()
            .and_then(sqlx::Error::as_database_error)
            .is_some_and(|e| e.is_foreign_key_violation())
    }
}
