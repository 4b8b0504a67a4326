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
}
