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

mod backend;
pub mod error;

pub use error::StoreError;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;
use warden_core::audit::{AuditEntry, AuditEvent};
use warden_core::{Connection, Review, ReviewStatus, Rule, RuleType, Session, SessionKind, User};

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
        Self { actor: actor.into(), now, events }
    }
}

/// An API token's metadata (never the token itself: only its SHA-256 is stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: Uuid,
    pub user_id: Uuid,
    pub user_email: String,
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

/// A group and its members (groups exist while a user or a rule names them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfo {
    pub name: String,
    pub members: Vec<String>,
}

/// Filters for listing reviews. `page` starts at 1.
#[derive(Debug, Clone, Default)]
pub struct ReviewFilter {
    pub status: Option<ReviewStatus>,
    pub connection: Option<String>,
    pub requester: Option<String>,
    pub kind: Option<RuleType>,
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    pub page: u32,
    pub per_page: u32,
}

#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    pub user: Option<String>,
    pub connection: Option<String>,
    pub kind: Option<SessionKind>,
    pub review_id: Option<Uuid>,
    pub since: Option<OffsetDateTime>,
    pub page: u32,
    pub per_page: u32,
}

/// One statement of a proxied session (batched by the proxy, written in one transaction).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementRecord {
    pub session_id: Uuid,
    pub user: String,
    pub connection: String,
    pub review_id: Option<Uuid>,
    pub statement: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Command tag from the upstream (`SELECT 3`, `UPDATE 1`) or the error's SQLSTATE.
    pub tag: Option<String>,
}

/// The stored form of a connection: public fields plus the encrypted secret blob.
#[derive(Debug, Clone)]
pub struct ConnectionRecord {
    pub connection: Connection,
    /// Opaque ciphertext produced by the gateway's secret box (never interpreted here).
    pub secret: Vec<u8>,
}

/// The connection of a store: SQLite file/memory or PostgreSQL.
#[derive(Clone)]
pub struct Store {
    db: backend::Db,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("backend", &self.backend_name()).finish()
    }
}

impl Store {
    /// Opens (creating if needed) and migrates. `url` is `sqlite://PATH` (or `sqlite::memory:`)
    /// or `postgres://…`.
    pub async fn connect(url: &str) -> Result<Store> {
        todo!("{url}")
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        todo!()
    }

    /// A cheap round trip, for `/api/health`.
    pub async fn ping(&self) -> Result<()> {
        todo!()
    }

    // ---- users & groups ----------------------------------------------------------------

    pub async fn count_users(&self) -> Result<i64> {
        todo!()
    }
    /// Creates a user; `StoreError::Duplicate` if the email exists (or replaces groups/admin
    /// when `overwrite`). `password_hash` is an argon2id PHC string or `None` (token-only users).
    pub async fn upsert_user(
        &self,
        user: &User,
        password_hash: Option<&str>,
        overwrite: bool,
        audit: AuditCtx,
    ) -> Result<User> {
        todo!("{user:?}{password_hash:?}{overwrite}{audit:?}")
    }
    pub async fn get_user(&self, email: &str) -> Result<Option<User>> {
        todo!("{email}")
    }
    pub async fn get_user_by_id(&self, id: Uuid) -> Result<Option<User>> {
        todo!("{id}")
    }
    pub async fn password_hash(&self, email: &str) -> Result<Option<String>> {
        todo!("{email}")
    }
    pub async fn set_password_hash(&self, email: &str, hash: &str, audit: AuditCtx) -> Result<()> {
        todo!("{email}{hash}{audit:?}")
    }
    pub async fn list_users(&self) -> Result<Vec<User>> {
        todo!()
    }
    /// Deletes the user and revokes their tokens. `NotFound` if unknown.
    pub async fn delete_user(&self, email: &str, audit: AuditCtx) -> Result<()> {
        todo!("{email}{audit:?}")
    }
    /// Every group named by a user, a rule or a connection, with its members.
    pub async fn list_groups(&self) -> Result<Vec<GroupInfo>> {
        todo!()
    }

    // ---- tokens --------------------------------------------------------------------------

    pub async fn insert_token(&self, info: &TokenInfo, token_sha256: &str, audit: AuditCtx) -> Result<()> {
        todo!("{info:?}{token_sha256}{audit:?}")
    }
    /// The token's owner if the hash is known, not revoked and not expired at `now`.
    pub async fn user_by_token(&self, token_sha256: &str, now: OffsetDateTime) -> Result<Option<(TokenInfo, User)>> {
        todo!("{token_sha256}{now}")
    }
    pub async fn list_tokens(&self, user_email: Option<&str>) -> Result<Vec<TokenInfo>> {
        todo!("{user_email:?}")
    }
    pub async fn revoke_token(&self, id: Uuid, audit: AuditCtx) -> Result<()> {
        todo!("{id}{audit:?}")
    }

    // ---- connections ---------------------------------------------------------------------

    /// Creates (or with `overwrite` replaces) a connection; `Duplicate` if it exists and
    /// `!overwrite`. `rule`, when given (the `--reviewers` shorthand), is upserted in the same
    /// transaction with its bindings.
    pub async fn upsert_connection(
        &self,
        rec: &ConnectionRecord,
        overwrite: bool,
        rule: Option<&Rule>,
        audit: AuditCtx,
    ) -> Result<()> {
        todo!("{overwrite}{rule:?}{audit:?}{}", rec.secret.len())
    }
    pub async fn get_connection(&self, name: &str) -> Result<Option<ConnectionRecord>> {
        todo!("{name}")
    }
    pub async fn list_connections(&self) -> Result<Vec<Connection>> {
        todo!()
    }
    /// `Invalid` if a rule still binds it (the message names the rules); `NotFound` if unknown.
    pub async fn delete_connection(&self, name: &str, audit: AuditCtx) -> Result<()> {
        todo!("{name}{audit:?}")
    }

    // ---- rules ---------------------------------------------------------------------------

    /// Inserts or replaces (by id) a rule validated by the core; bindings (connection, type) are
    /// unique in the database too, so a race between two admins cannot bind twice (`Duplicate`).
    pub async fn upsert_rule(&self, rule: &Rule, audit: AuditCtx) -> Result<()> {
        todo!("{rule:?}{audit:?}")
    }
    pub async fn get_rule(&self, name: &str) -> Result<Option<Rule>> {
        todo!("{name}")
    }
    pub async fn list_rules(&self) -> Result<Vec<Rule>> {
        todo!()
    }
    /// Rules bound to a connection (at most one per type).
    pub async fn rules_for_connection(&self, connection: &str) -> Result<Vec<Rule>> {
        todo!("{connection}")
    }
    pub async fn delete_rule(&self, name: &str, audit: AuditCtx) -> Result<()> {
        todo!("{name}{audit:?}")
    }

    // ---- reviews -------------------------------------------------------------------------

    /// Inserts a new review (version 0 as given) with its audit events.
    pub async fn insert_review(&self, review: &Review, audit: AuditCtx) -> Result<Review> {
        todo!("{review:?}{audit:?}")
    }
    pub async fn get_review(&self, id: Uuid) -> Result<Option<Review>> {
        todo!("{id}")
    }
    /// Newest first. Returns the page and the total count matching the filter.
    pub async fn list_reviews(&self, filter: &ReviewFilter) -> Result<(Vec<Review>, i64)> {
        todo!("{filter:?}")
    }
    /// Persists a transition computed by the core: succeeds only if the stored version is still
    /// `review.version` (the version the transition started from); stores `version + 1` and
    /// returns the stored review. `Conflict` otherwise — the caller reloads and retries.
    pub async fn update_review(&self, review: &Review, audit: AuditCtx) -> Result<Review> {
        todo!("{review:?}{audit:?}")
    }
    /// PENDING reviews whose `expires_at <= now`.
    pub async fn reviews_to_expire(&self, now: OffsetDateTime) -> Result<Vec<Review>> {
        todo!("{now}")
    }
    /// APPROVED jit reviews whose `window_end <= now`.
    pub async fn windows_to_finish(&self, now: OffsetDateTime) -> Result<Vec<Review>> {
        todo!("{now}")
    }
    /// APPROVED jit reviews of `requester` on `connection` (the caller checks the window).
    pub async fn approved_windows(&self, requester: &str, connection: &str) -> Result<Vec<Review>> {
        todo!("{requester}{connection}")
    }
    /// Claims the one execution of an approved command review: true for exactly one caller,
    /// across threads and replicas.
    pub async fn claim_execution(&self, review_id: Uuid, now: OffsetDateTime) -> Result<bool> {
        todo!("{review_id}{now}")
    }
    /// APPROVED command reviews nobody has claimed (crash between approval and execution).
    pub async fn unclaimed_approved(&self) -> Result<Vec<Review>> {
        todo!()
    }
    /// APPROVED command reviews claimed before `before` that never reached EXECUTED.
    pub async fn stale_claims(&self, before: OffsetDateTime) -> Result<Vec<Review>> {
        todo!("{before}")
    }

    // ---- sessions ------------------------------------------------------------------------

    /// Inserts a session; `audit` usually carries `SessionStarted`.
    pub async fn insert_session(&self, session: &Session, audit: AuditCtx) -> Result<()> {
        todo!("{session:?}{audit:?}")
    }
    /// Updates end time, exit code, output… of a session (by id).
    pub async fn finish_session(&self, session: &Session, audit: AuditCtx) -> Result<()> {
        todo!("{session:?}{audit:?}")
    }
    pub async fn get_session(&self, id: Uuid) -> Result<Option<Session>> {
        todo!("{id}")
    }
    /// Newest first, with the total count.
    pub async fn list_sessions(&self, filter: &SessionFilter) -> Result<(Vec<Session>, i64)> {
        todo!("{filter:?}")
    }
    /// The latest session that executed a review (its result).
    pub async fn session_for_review(&self, review_id: Uuid) -> Result<Option<Session>> {
        todo!("{review_id}")
    }
    /// Appends proxied statements and their audit entries (one `Statement` event each) in one
    /// transaction.
    pub async fn record_statements(&self, batch: &[StatementRecord]) -> Result<()> {
        todo!("{}", batch.len())
    }
    pub async fn statements_for_session(&self, session_id: Uuid) -> Result<Vec<StatementRecord>> {
        todo!("{session_id}")
    }

    // ---- audit ---------------------------------------------------------------------------

    /// Appends events on their own (logins, denials…).
    pub async fn append_audit(&self, audit: AuditCtx) -> Result<()> {
        todo!("{audit:?}")
    }
    /// Entries with `seq > after`, in order, at most `limit`.
    pub async fn audit_entries(&self, after: i64, limit: i64) -> Result<Vec<AuditEntry>> {
        todo!("{after}{limit}")
    }
    /// Entries mentioning a review (for its timeline), in order.
    pub async fn audit_for_review(&self, review_id: Uuid) -> Result<Vec<AuditEntry>> {
        todo!("{review_id}")
    }
}
