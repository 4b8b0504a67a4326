//! The store: SQLite (embedded default) and PostgreSQL behind one [`Store`] type, migrations, and
//! the hash-chained audit log.
//!
//! # What this crate is for
//! It is the only crate that knows SQL. It persists values computed by `warden-core` and never
//! decides anything itself: no access decisions, no quorum logic. Every mutation that matters for
//! the audit trail takes the [`AuditEvent`]s to append and writes them **in the same transaction**
//! as the change, so an admin change without its audit entry cannot exist.
//!
//! # Concurrency
//! - Review transitions are optimistic: `update_review` writes only if the stored `version`
//!   equals the one the transition started from, else [`StoreError::Conflict`].
//! - Audit appends serialise on the single `audit_head` row (row lock on PostgreSQL, the write
//!   lock on SQLite), so concurrent writers and several gateway replicas extend one ordered chain.
//!
//! # What it must never do
//! Store a secret in clear (connection secrets arrive already encrypted as opaque bytes), log a
//! secret, or return partial writes: every public method is one transaction.

mod audit;
mod backend;
mod connections;
pub mod error;
pub mod notify;
mod query;
mod reviews;
mod rows;
mod rules;
mod sessions;
mod users;

pub use connections::ConnectionRecord;
pub use error::StoreError;
pub use reviews::{ReviewFilter, Visibility};
pub use sessions::{
    STATEMENT_BYTES_PER_ENTRY, STATEMENTS_PER_ENTRY, SessionFilter, StatementRecord,
};
pub use users::{GroupInfo, TokenInfo};

use time::OffsetDateTime;
use warden_core::audit::AuditEvent;

use backend::{Db, q};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Who performed a change and when; attached to every audited write.
#[derive(Debug, Clone)]
pub struct AuditCtx {
    pub actor: String,
    pub now: OffsetDateTime,
    pub events: Vec<AuditEvent>,
}

impl AuditCtx {
    pub fn new(actor: impl Into<String>, now: OffsetDateTime, events: Vec<AuditEvent>) -> Self {
        Self {
            actor: actor.into(),
            now,
            events,
        }
    }
}

/// The connection of a store: SQLite file/memory or PostgreSQL.
#[derive(Clone)]
pub struct Store {
    db: backend::Db,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend_name())
            .finish()
    }
}

/// Maps a UNIQUE violation of one write to `Duplicate(msg)`, leaving other errors alone.
fn dup<T>(res: Result<T>, msg: impl FnOnce() -> String) -> Result<T> {
    match res {
        Err(e) if e.is_unique_violation() => Err(StoreError::Duplicate(msg())),
        other => other,
    }
}

impl Store {
    /// Opens (creating if needed) and migrates. `url` is `sqlite://PATH` (or `sqlite::memory:`)
    /// or `postgres://…`.
    ///
    /// SQLite files (and their directory) are created if missing and opened in WAL mode with
    /// foreign keys on and a 5 s busy timeout; `sqlite::memory:` uses one connection.
    pub async fn connect(url: &str) -> Result<Store> {
        Ok(Store {
            db: Db::connect(url).await?,
        })
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        self.db.name()
    }

    /// `(writes, commits)` since the store was opened: writes that arrive while another runs
    /// share its commit, so under load there are fewer commits than writes.
    pub fn write_stats(&self) -> (u64, u64) {
        self.db.write_stats()
    }

    /// A cheap round trip, for `/api/health`.
    pub async fn ping(&self) -> Result<()> {
        let mut h = self.db.read("ping").await?;
        let _: (i64,) = h.fetch_one(q("SELECT CAST(1 AS BIGINT)")).await?;
        Ok(())
    }

    /// Closes the pool: waits for checked-out connections to come back, then closes them all.
    pub async fn close(&self) {
        self.db.close().await;
    }
}
