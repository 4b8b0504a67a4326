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
pub mod notify;
mod rows;

pub use error::StoreError;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;
use warden_core::audit::{AuditEntry, AuditEvent, StatementRun};
use warden_core::{Connection, Review, ReviewStatus, Rule, RuleType, Session, SessionKind, User};

use backend::{Db, Q, Val, WriteTx, q};
use rows::{
    AuditRow, ConnectionRow, ConnectionSecretRow, ReviewRow, RuleRow, SessionRow, TokenRow,
    TokenUserRow, UserRow, to_json,
};

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

/// An API token's metadata (never the token itself: only its SHA-256 is stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: Uuid,
    pub user_id: Uuid,
    pub user_email: String,
    pub name: String,
    #[serde(with = "warden_core::timefmt::rfc3339_ms")]
    pub created_at: OffsetDateTime,
    #[serde(with = "warden_core::timefmt::rfc3339_ms::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "warden_core::timefmt::rfc3339_ms::option")]
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
    /// Only the reviews this user may see: their own, and those whose approval or
    /// force-approval groups include one of theirs (`None`: every review).
    pub visible_to: Option<Visibility>,
    pub page: u32,
    pub per_page: u32,
}

/// Who is looking at a review listing (see [`ReviewFilter::visible_to`]).
#[derive(Debug, Clone, Default)]
pub struct Visibility {
    pub email: String,
    pub groups: Vec<String>,
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
    #[serde(with = "warden_core::timefmt::rfc3339_ms")]
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
        f.debug_struct("Store")
            .field("backend", &self.backend_name())
            .finish()
    }
}

/// Column lists, one per table, shared by every SELECT of that table.
macro_rules! user_cols {
    () => {
        "id, email, groups_json, admin, auditor, created_at_ms"
    };
}
macro_rules! token_cols {
    () => {
        "id, user_id, user_email, name, created_at_ms, expires_at_ms, revoked_at_ms"
    };
}
macro_rules! connection_cols {
    () => {
        "id, name, kind, url_redacted, command_json, env_keys_json, access_groups_json, \
         slack_channel, teams_webhook, created_at_ms, updated_at_ms"
    };
}
macro_rules! rule_cols {
    () => {
        "id, name, description, kind, connections_json, required_groups_json, \
         approval_groups_json, require_all_groups, approval_amount, force_approval_groups_json, \
         exempt_groups_json, timeout_sec, max_duration_sec, require_reason, created_at_ms, \
         updated_at_ms"
    };
}
macro_rules! review_cols {
    () => {
        "id, kind, status, connection, requester, requester_groups_json, rule_name, policy_json, \
         command, command_sha256, duration_sec, request_reason, approvals_json, decided_by, reason, \
         forced, created_at_ms, decided_at_ms, expires_at_ms, window_end_ms, version"
    };
}
macro_rules! session_cols {
    () => {
        "id, kind, user_email, connection, review_id, command, started_at_ms, ended_at_ms, \
         exit_code, output, output_truncated, output_sha256, duration_ms, rows_json"
    };
}

/// Rows per multi-row statement insert (8 parameters each).
/// At most this many statements in one `statements` audit entry.
pub const STATEMENTS_PER_ENTRY: usize = 500;
/// A `statements` audit entry is closed once its statements' text reaches this many bytes.
pub const STATEMENT_BYTES_PER_ENTRY: usize = 1 << 20;

/// One future `statements` audit entry.
struct StatementGroup {
    session_id: Uuid,
    review_id: Option<Uuid>,
    user: String,
    connection: String,
    at: OffsetDateTime,
    runs: Vec<StatementRun>,
    bytes: usize,
}

/// Splits a batch (sessions interleaved) into per-session runs under one review, each session's
/// statements staying in order.
fn group_statements(batch: Vec<StatementRecord>) -> Vec<StatementGroup> {
    let mut groups: Vec<StatementGroup> = Vec::new();
    // The open group of each session (index into `groups`); sessions per batch are few.
    let mut open: Vec<(Uuid, usize)> = Vec::new();
    for s in batch {
        let slot = open.iter().position(|(id, _)| *id == s.session_id);
        let fits = slot.map(|i| &groups[open[i].1]).is_some_and(|g| {
            g.review_id == s.review_id
                && g.runs.len() < STATEMENTS_PER_ENTRY
                && g.bytes < STATEMENT_BYTES_PER_ENTRY
        });
        let at_ms = (s.at.unix_timestamp_nanos() / 1_000_000) as i64;
        let run = StatementRun {
            at_ms,
            statement: s.statement,
            tag: s.tag,
        };
        if fits && let Some(i) = slot {
            let g = &mut groups[open[i].1];
            g.bytes += run.statement.len();
            g.runs.push(run);
            continue;
        }
        match slot {
            Some(i) => open[i].1 = groups.len(),
            None => open.push((s.session_id, groups.len())),
        }
        groups.push(StatementGroup {
            session_id: s.session_id,
            review_id: s.review_id,
            user: s.user,
            connection: s.connection,
            at: s.at,
            bytes: run.statement.len(),
            runs: vec![run],
        });
    }
    groups
}
/// Page size when a filter leaves `per_page` at 0, and the largest page served.
const DEFAULT_PER_PAGE: u32 = 50;
const MAX_PER_PAGE: u32 = 1000;

/// `(LIMIT, OFFSET)` for a 1-based page (0 counts as 1).
/// One page of `SELECT {cols} FROM {table}{where} ORDER BY {order}` plus the total count of
/// matching rows: the shared shape of every paginated listing. `filter` adds the WHERE clause
/// and binds its values to the query it is given (it is called once per query).
async fn fetch_page<T: backend::Decode>(
    h: &mut backend::Handle,
    table: &str,
    cols: &str,
    order: &str,
    filter: impl Fn(&mut Q) -> String,
    page: u32,
    per_page: u32,
) -> Result<(Vec<T>, i64)> {
    let mut count = Q::dynamic(String::new());
    let w = filter(&mut count);
    let count = count.with_sql(format!("SELECT COUNT(*) FROM {table}{w}"));
    let (total,): (i64,) = h.fetch_one(count).await?;
    let mut q = Q::dynamic(String::new());
    let w = filter(&mut q);
    let (limit, offset) = limit_offset(page, per_page);
    let lim = q.next_param();
    q.push(limit);
    let off = q.next_param();
    q.push(offset);
    let q = q.with_sql(format!(
        "SELECT {cols} FROM {table}{w} ORDER BY {order} LIMIT {lim} OFFSET {off}"
    ));
    Ok((h.fetch_all(q).await?, total))
}

fn limit_offset(page: u32, per_page: u32) -> (i64, i64) {
    let per_page = match per_page {
        0 => DEFAULT_PER_PAGE,
        n => n.min(MAX_PER_PAGE),
    };
    let page = page.max(1);
    (
        i64::from(per_page),
        i64::from(page - 1) * i64::from(per_page),
    )
}

/// Appends `column op $n` to a WHERE list and binds `v`.
fn cond(w: &mut Vec<String>, query: &mut Q, clause: &str, v: impl Into<Val>) {
    w.push(clause.replace('?', &query.next_param()));
    query.push(v);
}

fn where_sql(w: &[String]) -> String {
    if w.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", w.join(" AND "))
    }
}

/// The conditions of a review listing other than visibility, binding their values onto
/// `query`. The columns named exist in `reviews` and in `review_deciders` alike.
fn review_conds(f: &ReviewFilter, query: &mut Q) -> Vec<String> {
    let mut w = Vec::new();
    if let Some(s) = f.status {
        cond(&mut w, query, "status = ?", s.as_str());
    }
    if let Some(c) = &f.connection {
        cond(&mut w, query, "connection = ?", c);
    }
    if let Some(r) = &f.requester {
        cond(&mut w, query, "requester = ?", r);
    }
    if let Some(k) = f.kind {
        cond(&mut w, query, "kind = ?", k.as_str());
    }
    if let Some(t) = f.since {
        cond(&mut w, query, "created_at_ms >= ?", t);
    }
    if let Some(t) = f.until {
        cond(&mut w, query, "created_at_ms < ?", t);
    }
    w
}

/// The reviews `v` may see that match `f`, as `(id, created_at_ms)` rows: their own (off the
/// `reviews` index by requester) united with those one of their groups decides (off the
/// deciders' own index, which carries the filtered columns). Both are read from covering
/// indexes; no review that does not match is visited. With `newest`, each half stops at that
/// many rows, newest first (a page needs no more than `offset + limit` of either).
fn visible_ids(f: &ReviewFilter, v: &Visibility, query: &mut Q, newest: Option<i64>) -> String {
    let limit = |query: &mut Q, order: &str| match newest {
        Some(n) => {
            let p = query.next_param();
            query.push(n);
            format!(" ORDER BY {order} LIMIT {p}")
        }
        None => String::new(),
    };
    let me = query.next_param();
    query.push(v.email.as_str());
    let mut own = vec![format!("requester = {me}")];
    own.extend(review_conds(f, query));
    let own_limit = limit(query, "created_at_ms DESC, id DESC");
    let mut sql = format!(
        "SELECT * FROM (SELECT id, created_at_ms FROM reviews{}{own_limit}) own",
        where_sql(&own)
    );
    if !v.groups.is_empty() {
        let groups: Vec<String> = v
            .groups
            .iter()
            .map(|g| {
                let p = query.next_param();
                query.push(g.as_str());
                p
            })
            .collect();
        let mut decided = vec![format!("grp IN ({})", groups.join(", "))];
        decided.extend(review_conds(f, query));
        let decided_limit = limit(query, "created_at_ms DESC, id DESC");
        sql.push_str(&format!(
            " UNION SELECT * FROM (SELECT DISTINCT review_id AS id, created_at_ms \
             FROM review_deciders{}{decided_limit}) decided",
            where_sql(&decided)
        ));
    }
    sql
}

fn session_where(f: &SessionFilter, query: &mut Q) -> String {
    let mut w = Vec::new();
    if let Some(u) = &f.user {
        cond(&mut w, query, "user_email = ?", u);
    }
    if let Some(c) = &f.connection {
        cond(&mut w, query, "connection = ?", c);
    }
    if let Some(k) = f.kind {
        cond(&mut w, query, "kind = ?", k.as_str());
    }
    if let Some(r) = f.review_id {
        cond(&mut w, query, "review_id = ?", r);
    }
    if let Some(t) = f.since {
        cond(&mut w, query, "started_at_ms >= ?", t);
    }
    where_sql(&w)
}

fn already_bound(connection: &str, kind: RuleType, other: &str) -> StoreError {
    StoreError::Duplicate(format!(
        "connection {connection} already has a {} rule ({other}); a connection has at most one \
         rule of each type: remove it from {other} first or edit that rule",
        kind.as_str()
    ))
}

fn unknown_connection(connection: &str) -> StoreError {
    StoreError::Invalid(format!(
        "unknown connection {connection} (create it first: warden admin create connection {connection} …)"
    ))
}

/// Maps a UNIQUE violation of one write to `Duplicate(msg)`, leaving other errors alone.
fn dup<T>(res: Result<T>, msg: impl FnOnce() -> String) -> Result<T> {
    match res {
        Err(e) if e.is_unique_violation() => Err(StoreError::Duplicate(msg())),
        other => other,
    }
}

/// One review's rows (the review, its deciders, its claim) and audit entries, inside `tx`.
async fn insert_review_tx(
    tx: &mut WriteTx,
    r: &Review,
    audit: &AuditCtx,
    claimed: bool,
) -> Result<()> {
    let res = tx
            .execute(
                q("INSERT INTO reviews (id, kind, status, connection, requester, requester_groups_json, \
                   rule_name, policy_json, command, command_sha256, duration_sec, request_reason, \
                   approvals_json, decided_by, reason, forced, created_at_ms, decided_at_ms, \
                   expires_at_ms, window_end_ms, version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
                   $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)")
                .bind(r.id)
                .bind(r.kind.as_str())
                .bind(r.status.as_str())
                .bind(&r.connection)
                .bind(&r.requester)
                .bind(to_json("requester groups", &r.requester_groups)?)
                .bind(&r.rule)
                .bind(to_json("policy", &r.policy)?)
                .bind(&r.command)
                .bind(&r.command_sha256)
                .bind(r.duration_sec)
                .bind(&r.request_reason)
                .bind(to_json("approvals", &r.approvals)?)
                .bind(&r.decided_by)
                .bind(&r.reason)
                .bind(r.forced)
                .bind(r.created_at)
                .bind(r.decided_at)
                .bind(r.expires_at)
                .bind(r.window_end)
                .bind(r.version),
            )
            .await;
    dup(res, || format!("review {} already exists", r.id))?;
    let mut deciders: Vec<&String> = r
        .policy
        .approval_groups
        .iter()
        .chain(&r.policy.force_approval_groups)
        .collect();
    deciders.sort();
    deciders.dedup();
    for g in deciders {
        tx.execute(
            q(
                "INSERT INTO review_deciders (review_id, grp, status, created_at_ms, connection, \
                   requester, kind) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(r.id)
            .bind(g)
            .bind(r.status.as_str())
            .bind(r.created_at)
            .bind(&r.connection)
            .bind(&r.requester)
            .bind(r.kind.as_str()),
        )
        .await?;
    }
    if claimed {
        tx.execute(
            q("UPDATE reviews SET exec_claimed_at_ms = $2 WHERE id = $1")
                .bind(r.id)
                .bind(r.created_at),
        )
        .await?;
    }
    tx.audit(audit.now, &audit.actor, &audit.events)
}

/// Inserts or replaces a rule and its bindings inside `tx`. With `replace_by_name`, an existing
/// rule of the same name is replaced (keeping its id); otherwise a name clash is `Duplicate`.
async fn upsert_rule_tx(tx: &mut WriteTx, rule: &Rule, replace_by_name: bool) -> Result<()> {
    let rule_id = rule.id.to_string();
    let by_name: Option<(String,)> = tx
        .fetch_optional(q("SELECT id FROM rules WHERE name = $1").bind(&rule.name))
        .await?;
    let target = match by_name {
        Some((id,)) if id == rule_id || replace_by_name => id,
        Some(_) => {
            return Err(StoreError::Duplicate(format!(
                "rule {} already exists: choose another name or edit that rule",
                rule.name
            )));
        }
        None => rule_id,
    };
    let exists = tx
        .fetch_optional::<(String,)>(q("SELECT id FROM rules WHERE id = $1").bind(&target))
        .await?
        .is_some();

    let mut connections: Vec<&str> = Vec::new();
    for c in &rule.connections {
        if !connections.contains(&c.as_str()) {
            connections.push(c);
        }
    }
    // Checked inside the write lock, so these reads are current; the UNIQUE and FOREIGN KEY
    // constraints below are the backstop.
    for c in &connections {
        let known: Option<(String,)> = tx
            .fetch_optional(q("SELECT name FROM connections WHERE name = $1").bind(*c))
            .await?;
        if known.is_none() {
            return Err(unknown_connection(c));
        }
        let other: Option<(String,)> = tx
            .fetch_optional(
                q(
                    "SELECT r.name FROM rule_bindings b JOIN rules r ON r.id = b.rule_id \
                   WHERE b.connection = $1 AND b.rule_type = $2 AND b.rule_id <> $3",
                )
                .bind(*c)
                .bind(rule.kind.as_str())
                .bind(&target),
            )
            .await?;
        if let Some((other,)) = other {
            return Err(already_bound(c, rule.kind, &other));
        }
    }

    let rule_q = |sql: &'static str| -> Result<Q> {
        Ok(q(sql)
            .bind(&target)
            .bind(&rule.name)
            .bind(&rule.description)
            .bind(rule.kind.as_str())
            .bind(to_json("rule connections", &rule.connections)?)
            .bind(to_json("required groups", &rule.required_groups)?)
            .bind(to_json("approval groups", &rule.approval_groups)?)
            .bind(rule.require_all_groups)
            .bind(i64::from(rule.approval_amount))
            .bind(to_json(
                "force approval groups",
                &rule.force_approval_groups,
            )?)
            .bind(to_json("exempt groups", &rule.exempt_groups)?)
            .bind(rule.timeout_sec)
            .bind(rule.max_duration_sec)
            .bind(rule.require_reason)
            .bind(rule.updated_at))
    };
    let res = if exists {
        tx.execute(rule_q(
            "UPDATE rules SET name = $2, description = $3, kind = $4, connections_json = $5, \
             required_groups_json = $6, approval_groups_json = $7, require_all_groups = $8, \
             approval_amount = $9, force_approval_groups_json = $10, exempt_groups_json = $11, \
             timeout_sec = $12, max_duration_sec = $13, require_reason = $14, updated_at_ms = $15 \
             WHERE id = $1",
        )?)
        .await
    } else {
        tx.execute(rule_q(
            "INSERT INTO rules (id, name, description, kind, connections_json, required_groups_json, \
             approval_groups_json, require_all_groups, approval_amount, force_approval_groups_json, \
             exempt_groups_json, timeout_sec, max_duration_sec, require_reason, updated_at_ms, \
             created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )?
        .bind(rule.created_at))
        .await
    };
    dup(res, || {
        format!(
            "rule {} already exists: choose another name or edit that rule",
            rule.name
        )
    })?;

    tx.execute(q("DELETE FROM rule_bindings WHERE rule_id = $1").bind(&target))
        .await?;
    for c in connections {
        let res = tx
            .execute(
                q("INSERT INTO rule_bindings (connection, rule_type, rule_id) VALUES ($1, $2, $3)")
                    .bind(c)
                    .bind(rule.kind.as_str())
                    .bind(&target),
            )
            .await;
        match res {
            Err(e) if e.is_unique_violation() => {
                return Err(already_bound(c, rule.kind, "another rule"));
            }
            Err(e) if e.is_foreign_key_violation() => return Err(unknown_connection(c)),
            other => {
                other?;
            }
        }
    }
    Ok(())
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

    // ---- users & groups ----------------------------------------------------------------

    pub async fn count_users(&self) -> Result<i64> {
        let mut h = self.db.read("counting users").await?;
        let (n,): (i64,) = h.fetch_one(q("SELECT COUNT(*) FROM users")).await?;
        Ok(n)
    }
    /// Creates a user; `StoreError::Duplicate` if the email exists (or replaces groups/admin
    /// when `overwrite`). `password_hash` is an argon2id PHC string or `None` (token-only users).
    ///
    /// On overwrite the user keeps its id and creation time, and `None` keeps the current
    /// password. Returns the stored user.
    pub async fn upsert_user(
        &self,
        user: &User,
        password_hash: Option<&str>,
        overwrite: bool,
        audit: AuditCtx,
    ) -> Result<User> {
        let email = user.email.as_str();
        let mut tx = self.db.write(format!("saving user {email}")).await?;
        let existing: Option<(String,)> = tx
            .fetch_optional(q("SELECT id FROM users WHERE email = $1").bind(email))
            .await?;
        let groups = to_json("groups", &user.groups)?;
        match existing {
            Some(_) if !overwrite => {
                return Err(StoreError::Duplicate(format!(
                    "user {email} already exists (use --overwrite to replace its groups and admin flag)"
                )));
            }
            Some(_) => {
                tx.execute(
                    q(
                        "UPDATE users SET groups_json = $2, admin = $3, auditor = $6, \
                       password_hash = COALESCE($4, password_hash), updated_at_ms = $5 \
                       WHERE email = $1",
                    )
                    .bind(email)
                    .bind(groups)
                    .bind(user.admin)
                    .bind(password_hash)
                    .bind(audit.now)
                    .bind(user.auditor),
                )
                .await?;
            }
            None => {
                let res = tx
                    .execute(
                        q(
                            "INSERT INTO users (id, email, groups_json, admin, password_hash, \
                           created_at_ms, updated_at_ms, auditor) \
                           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                        )
                        .bind(user.id)
                        .bind(email)
                        .bind(groups)
                        .bind(user.admin)
                        .bind(password_hash)
                        .bind(user.created_at)
                        .bind(audit.now)
                        .bind(user.auditor),
                    )
                    .await;
                dup(res, || {
                    format!("user id {} already exists (with another email)", user.id)
                })?;
            }
        }
        tx.audit(audit.now, &audit.actor, &audit.events)?;
        let stored: UserRow = tx
            .fetch_one(
                q(concat!(
                    "SELECT ",
                    user_cols!(),
                    " FROM users WHERE email = $1"
                ))
                .bind(email),
            )
            .await?;
        tx.commit().await?;
        stored.into_user()
    }
    pub async fn get_user(&self, email: &str) -> Result<Option<User>> {
        let mut h = self.db.read(format!("reading user {email}")).await?;
        let row: Option<UserRow> = h
            .fetch_optional(
                q(concat!(
                    "SELECT ",
                    user_cols!(),
                    " FROM users WHERE email = $1"
                ))
                .bind(email),
            )
            .await?;
        row.map(UserRow::into_user).transpose()
    }
    pub async fn get_user_by_id(&self, id: Uuid) -> Result<Option<User>> {
        let mut h = self.db.read(format!("reading user {id}")).await?;
        let row: Option<UserRow> = h
            .fetch_optional(
                q(concat!(
                    "SELECT ",
                    user_cols!(),
                    " FROM users WHERE id = $1"
                ))
                .bind(id),
            )
            .await?;
        row.map(UserRow::into_user).transpose()
    }
    pub async fn password_hash(&self, email: &str) -> Result<Option<String>> {
        let mut h = self
            .db
            .read(format!("reading the password of {email}"))
            .await?;
        let row: Option<(Option<String>,)> = h
            .fetch_optional(q("SELECT password_hash FROM users WHERE email = $1").bind(email))
            .await?;
        Ok(row.and_then(|(hash,)| hash))
    }
    /// `NotFound` if the user is unknown.
    pub async fn set_password_hash(&self, email: &str, hash: &str, audit: AuditCtx) -> Result<()> {
        let mut tx = self
            .db
            .write(format!("setting the password of {email}"))
            .await?;
        let n = tx
            .execute(
                q("UPDATE users SET password_hash = $2, updated_at_ms = $3 WHERE email = $1")
                    .bind(email)
                    .bind(hash)
                    .bind(audit.now),
            )
            .await?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("user {email} not found")));
        }
        tx.audit(audit.now, &audit.actor, &audit.events)?;
        tx.commit().await
    }
    /// Ordered by email.
    pub async fn list_users(&self) -> Result<Vec<User>> {
        let mut h = self.db.read("listing users").await?;
        let rows: Vec<UserRow> = h
            .fetch_all(q(concat!(
                "SELECT ",
                user_cols!(),
                " FROM users ORDER BY email"
            )))
            .await?;
        rows.into_iter().map(UserRow::into_user).collect()
    }
    /// Deletes the user and revokes their tokens. `NotFound` if unknown.
    pub async fn delete_user(&self, email: &str, audit: AuditCtx) -> Result<()> {
        let mut tx = self.db.write(format!("deleting user {email}")).await?;
        let Some((id,)): Option<(String,)> = tx
            .fetch_optional(q("SELECT id FROM users WHERE email = $1").bind(email))
            .await?
        else {
            return Err(StoreError::NotFound(format!("user {email} not found")));
        };
        tx.execute(
            q("UPDATE tokens SET revoked_at_ms = $2 WHERE user_id = $1 AND revoked_at_ms IS NULL")
                .bind(&id)
                .bind(audit.now),
        )
        .await?;
        tx.execute(q("DELETE FROM users WHERE id = $1").bind(&id))
            .await?;
        tx.audit(audit.now, &audit.actor, &audit.events)?;
        tx.commit().await
    }
    /// Every group named by a user, a rule or a connection, with its members.
    ///
    /// Sorted by name; members (emails) sorted too. Groups only named by rules or connection
    /// access lists have no members.
    pub async fn list_groups(&self) -> Result<Vec<GroupInfo>> {
        let mut h = self.db.read("listing groups").await?;
        let users: Vec<(String, String)> = h
            .fetch_all(q("SELECT email, groups_json FROM users"))
            .await?;
        let rules: Vec<(String, String, String, String, String)> = h
            .fetch_all(q(
                "SELECT name, required_groups_json, approval_groups_json, \
                          force_approval_groups_json, exempt_groups_json FROM rules",
            ))
            .await?;
        let conns: Vec<(String, String)> = h
            .fetch_all(q("SELECT name, access_groups_json FROM connections"))
            .await?;

        let parse = |table: &str, key: &str, column: &str, s: &str| -> Result<Vec<String>> {
            serde_json::from_str(s)
                .map_err(|e| rows::corrupt(table, key, column, format_args!("bad JSON: {e}")))
        };
        let mut groups: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (email, g) in users {
            for g in parse("users", &email, "groups_json", &g)? {
                groups.entry(g).or_default().insert(email.clone());
            }
        }
        for (name, a, b, c, d) in rules {
            for (col, s) in [
                ("required_groups_json", a),
                ("approval_groups_json", b),
                ("force_approval_groups_json", c),
                ("exempt_groups_json", d),
            ] {
                for g in parse("rules", &name, col, &s)? {
                    groups.entry(g).or_default();
                }
            }
        }
        for (name, g) in conns {
            for g in parse("connections", &name, "access_groups_json", &g)? {
                groups.entry(g).or_default();
            }
        }
        Ok(groups
            .into_iter()
            .map(|(name, members)| GroupInfo {
                name,
                members: members.into_iter().collect(),
            })
            .collect())
    }

    // ---- tokens --------------------------------------------------------------------------

    /// Stores a token's hash for `info.user_id` (`NotFound` if that user does not exist). The
    /// stored owner email is the user's current one.
    pub async fn insert_token(
        &self,
        info: &TokenInfo,
        token_sha256: &str,
        audit: AuditCtx,
    ) -> Result<()> {
        let mut tx = self
            .db
            .write(format!(
                "creating token {} for {}",
                info.name, info.user_email
            ))
            .await?;
        let Some((email,)): Option<(String,)> = tx
            .fetch_optional(q("SELECT email FROM users WHERE id = $1").bind(info.user_id))
            .await?
        else {
            return Err(StoreError::NotFound(format!(
                "user {} ({}) not found: create the user before its token",
                info.user_email, info.user_id
            )));
        };
        let res = tx
            .execute(
                q("INSERT INTO tokens (id, user_id, user_email, name, token_sha256, created_at_ms, \
                   expires_at_ms, revoked_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
                .bind(info.id)
                .bind(info.user_id)
                .bind(email)
                .bind(&info.name)
                .bind(token_sha256)
                .bind(info.created_at)
                .bind(info.expires_at)
                .bind(info.revoked_at),
            )
            .await;
        dup(res, || {
            format!(
                "token {} already exists (or the same token was issued twice)",
                info.id
            )
        })?;
        tx.audit(audit.now, &audit.actor, &audit.events)?;
        tx.commit().await
    }
    /// The token's owner if the hash is known, not revoked and not expired at `now`.
    pub async fn user_by_token(
        &self,
        token_sha256: &str,
        now: OffsetDateTime,
    ) -> Result<Option<(TokenInfo, User)>> {
        let mut h = self.db.read("looking up an API token").await?;
        let row: Option<TokenUserRow> = h
            .fetch_optional(
                q("SELECT t.id, t.user_id, t.user_email, t.name, t.created_at_ms, t.expires_at_ms, \
                   t.revoked_at_ms, u.id AS u_id, u.email AS u_email, u.groups_json AS u_groups_json, \
                   u.admin AS u_admin, u.auditor AS u_auditor, u.created_at_ms AS u_created_at_ms \
                   FROM tokens t JOIN users u ON u.id = t.user_id \
                   WHERE t.token_sha256 = $1 AND t.revoked_at_ms IS NULL \
                   AND (t.expires_at_ms IS NULL OR t.expires_at_ms > $2)")
                .bind(token_sha256)
                .bind(now),
            )
            .await?;
        row.map(TokenUserRow::into_pair).transpose()
    }
    /// Oldest first; revoked and expired tokens included.
    pub async fn list_tokens(&self, user_email: Option<&str>) -> Result<Vec<TokenInfo>> {
        let mut h = self.db.read("listing tokens").await?;
        let rows: Vec<TokenRow> = match user_email {
            Some(email) => {
                h.fetch_all(
                    q(concat!(
                        "SELECT ",
                        token_cols!(),
                        " FROM tokens WHERE user_email = $1 ORDER BY created_at_ms, id"
                    ))
                    .bind(email),
                )
                .await?
            }
            None => {
                h.fetch_all(q(concat!(
                    "SELECT ",
                    token_cols!(),
                    " FROM tokens ORDER BY created_at_ms, id"
                )))
                .await?
            }
        };
        rows.into_iter().map(TokenRow::into_info).collect()
    }
    /// `NotFound` if unknown; revoking twice keeps the first revocation time.
    pub async fn revoke_token(&self, id: Uuid, audit: AuditCtx) -> Result<()> {
        let mut tx = self.db.write(format!("revoking token {id}")).await?;
        let n = tx
            .execute(
                q("UPDATE tokens SET revoked_at_ms = COALESCE(revoked_at_ms, $2) WHERE id = $1")
                    .bind(id)
                    .bind(audit.now),
            )
            .await?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("token {id} not found")));
        }
        tx.audit(audit.now, &audit.actor, &audit.events)?;
        tx.commit().await
    }

    // ---- connections ---------------------------------------------------------------------

    /// Creates (or with `overwrite` replaces) a connection; `Duplicate` if it exists and
    /// `!overwrite`. `rule`, when given (the `--reviewers` shorthand), is upserted in the same
    /// transaction with its bindings.
    ///
    /// A replaced connection takes every field of `rec` (its id too: the secret's AAD may be
    /// bound to it) except `created_at`, which stays. The shorthand rule replaces a rule of the
    /// same name when `overwrite` (keeping that rule's id), else a name clash is `Duplicate`.
    pub async fn upsert_connection(
        &self,
        rec: &ConnectionRecord,
        overwrite: bool,
        rule: Option<&Rule>,
        audit: AuditCtx,
    ) -> Result<()> {
        let c = &rec.connection;
        let mut tx = self
            .db
            .write(format!("saving connection {}", c.name))
            .await?;
        let exists = tx
            .fetch_optional::<(String,)>(
                q("SELECT id FROM connections WHERE name = $1").bind(&c.name),
            )
            .await?
            .is_some();
        if exists && !overwrite {
            return Err(StoreError::Duplicate(format!(
                "connection {} already exists (use --overwrite to replace it)",
                c.name
            )));
        }
        let query = |sql: &'static str| -> Result<Q> {
            Ok(q(sql)
                .bind(c.id)
                .bind(&c.name)
                .bind(c.kind.as_str())
                .bind(&c.url_redacted)
                .bind(to_json("command", &c.command)?)
                .bind(to_json("env keys", &c.env_keys)?)
                .bind(to_json("access groups", &c.access_groups)?)
                .bind(&c.slack_channel)
                .bind(&c.teams_webhook)
                .bind(rec.secret.as_slice())
                .bind(c.updated_at))
        };
        let res = if exists {
            tx.execute(query(
                "UPDATE connections SET id = $1, kind = $3, url_redacted = $4, command_json = $5, \
                 env_keys_json = $6, access_groups_json = $7, slack_channel = $8, teams_webhook = $9, \
                 secret = $10, updated_at_ms = $11 WHERE name = $2",
            )?)
            .await
        } else {
            tx.execute(
                query(
                    "INSERT INTO connections (id, name, kind, url_redacted, command_json, env_keys_json, \
                     access_groups_json, slack_channel, teams_webhook, secret, updated_at_ms, created_at_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                )?
                .bind(c.created_at),
            )
            .await
        };
        dup(res, || {
            format!(
                "connection id {} is already used by another connection",
                c.id
            )
        })?;
        if let Some(rule) = rule {
            upsert_rule_tx(&mut tx, rule, overwrite).await?;
        }
        tx.audit(audit.now, &audit.actor, &audit.events)?;
        tx.commit().await
    }
    pub async fn get_connection(&self, name: &str) -> Result<Option<ConnectionRecord>> {
        let mut h = self.db.read(format!("reading connection {name}")).await?;
        let row: Option<ConnectionSecretRow> = h
            .fetch_optional(
                q(concat!(
                    "SELECT ",
                    connection_cols!(),
                    ", secret FROM connections WHERE name = $1"
                ))
                .bind(name),
            )
            .await?;
        row.map(|r| {
            Ok(ConnectionRecord {
                connection: r.conn.into_connection()?,
                secret: r.secret,
            })
        })
        .transpose()
    }
    /// Ordered by name (secrets are not read).
    pub async fn list_connections(&self) -> Result<Vec<Connection>> {
        let mut h = self.db.read("listing connections").await?;
        let rows: Vec<ConnectionRow> = h
            .fetch_all(q(concat!(
                "SELECT ",
                connection_cols!(),
                " FROM connections ORDER BY name"
            )))
            .await?;
        rows.into_iter()
            .map(ConnectionRow::into_connection)
            .collect()
    }
    /// `Invalid` if a rule still binds it (the message names the rules); `NotFound` if unknown.
    pub async fn delete_connection(&self, name: &str, audit: AuditCtx) -> Result<()> {
        let mut tx = self.db.write(format!("deleting connection {name}")).await?;
        let exists = tx
            .fetch_optional::<(String,)>(q("SELECT id FROM connections WHERE name = $1").bind(name))
            .await?
            .is_some();
        if !exists {
            return Err(StoreError::NotFound(format!("connection {name} not found")));
        }
        let rules: Vec<(String,)> = tx
            .fetch_all(
                q(
                    "SELECT r.name FROM rule_bindings b JOIN rules r ON r.id = b.rule_id \
                   WHERE b.connection = $1 ORDER BY r.name",
                )
                .bind(name),
            )
            .await?;
        if !rules.is_empty() {
            let names: Vec<String> = rules.into_iter().map(|(n,)| n).collect();
            return Err(StoreError::Invalid(format!(
                "connection {name} is still bound to rule(s) {}: remove it from those rules (or delete them) first",
                names.join(", ")
            )));
        }
        tx.execute(q("DELETE FROM connections WHERE name = $1").bind(name))
            .await?;
        tx.audit(audit.now, &audit.actor, &audit.events)?;
        tx.commit().await
    }

    // ---- rules ---------------------------------------------------------------------------

    /// Inserts or replaces (by id) a rule validated by the core; bindings (connection, type) are
    /// unique in the database too, so a race between two admins cannot bind twice (`Duplicate`).
    ///
    /// Also `Duplicate` if another rule has the name, `Invalid` for an unknown connection. A
    /// replaced rule keeps its `created_at`.
    pub async fn upsert_rule(&self, rule: &Rule, audit: AuditCtx) -> Result<()> {
        let mut tx = self.db.write(format!("saving rule {}", rule.name)).await?;
        upsert_rule_tx(&mut tx, rule, false).await?;
        tx.audit(audit.now, &audit.actor, &audit.events)?;
        tx.commit().await
    }
    pub async fn get_rule(&self, name: &str) -> Result<Option<Rule>> {
        let mut h = self.db.read(format!("reading rule {name}")).await?;
        let row: Option<RuleRow> = h
            .fetch_optional(
                q(concat!(
                    "SELECT ",
                    rule_cols!(),
                    " FROM rules WHERE name = $1"
                ))
                .bind(name),
            )
            .await?;
        row.map(RuleRow::into_rule).transpose()
    }
    /// Ordered by name.
    pub async fn list_rules(&self) -> Result<Vec<Rule>> {
        let mut h = self.db.read("listing rules").await?;
        let rows: Vec<RuleRow> = h
            .fetch_all(q(concat!(
                "SELECT ",
                rule_cols!(),
                " FROM rules ORDER BY name"
            )))
            .await?;
        rows.into_iter().map(RuleRow::into_rule).collect()
    }
    /// Rules bound to a connection (at most one per type).
    pub async fn rules_for_connection(&self, connection: &str) -> Result<Vec<Rule>> {
        let mut h = self
            .db
            .read(format!("reading the rules of connection {connection}"))
            .await?;
        let rows: Vec<RuleRow> = h
            .fetch_all(
                q(concat!(
                    "SELECT ",
                    rule_cols!(),
                    " FROM rules WHERE id IN (SELECT rule_id FROM rule_bindings WHERE connection = $1) \
                     ORDER BY kind, name"
                ))
                .bind(connection),
            )
            .await?;
        rows.into_iter().map(RuleRow::into_rule).collect()
    }
    /// Deletes the rule and its bindings. `NotFound` if unknown.
    pub async fn delete_rule(&self, name: &str, audit: AuditCtx) -> Result<()> {
        let mut tx = self.db.write(format!("deleting rule {name}")).await?;
        let Some((id,)): Option<(String,)> = tx
            .fetch_optional(q("SELECT id FROM rules WHERE name = $1").bind(name))
            .await?
        else {
            return Err(StoreError::NotFound(format!("rule {name} not found")));
        };
        tx.execute(q("DELETE FROM rule_bindings WHERE rule_id = $1").bind(&id))
            .await?;
        tx.execute(q("DELETE FROM rules WHERE id = $1").bind(&id))
            .await?;
        tx.audit(audit.now, &audit.actor, &audit.events)?;
        tx.commit().await
    }

    // ---- reviews -------------------------------------------------------------------------

    /// Inserts a new review (version 0 as given) with its audit events.
    ///
    /// Returns the stored review (timestamps truncated to milliseconds).
    pub async fn insert_review(&self, review: &Review, audit: AuditCtx) -> Result<Review> {
        self.insert_review_inner(review, audit, false).await
    }

    /// Inserts a review whose execution belongs to someone else (a proxied statement runs in
    /// its client's session once approved): its execution slot is claimed from the start, so
    /// neither `execute_review` nor the sweeper's recovery ever runs it through an executor.
    pub async fn insert_review_claimed(&self, review: &Review, audit: AuditCtx) -> Result<Review> {
        self.insert_review_inner(review, audit, true).await
    }

    async fn insert_review_inner(
        &self,
        review: &Review,
        audit: AuditCtx,
        claimed: bool,
    ) -> Result<Review> {
        let mut tx = self
            .db
            .write(format!("creating review {}", review.id))
            .await?;
        insert_review_tx(&mut tx, review, &audit, claimed).await?;
        let stored = review_in_tx(&mut tx, review.id).await?;
        tx.commit().await?;
        Ok(stored)
    }

    /// Inserts many reviews, each with its own audit entries, in one transaction: all of them
    /// or none. What an import (or `bench/scale.sh`'s seeding) uses; the rows and the chain
    /// are exactly those of as many [`Store::insert_review`] calls.
    pub async fn insert_reviews(&self, batch: &[(Review, AuditCtx)]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self
            .db
            .write(format!("creating {} reviews", batch.len()))
            .await?;
        for (review, audit) in batch {
            insert_review_tx(&mut tx, review, audit, false).await?;
        }
        tx.commit().await
    }
    pub async fn get_review(&self, id: Uuid) -> Result<Option<Review>> {
        let mut h = self.db.read(format!("reading review {id}")).await?;
        let row: Option<ReviewRow> = h
            .fetch_optional(
                q(concat!(
                    "SELECT ",
                    review_cols!(),
                    " FROM reviews WHERE id = $1"
                ))
                .bind(id),
            )
            .await?;
        row.map(ReviewRow::into_review).transpose()
    }
    /// Newest first. Returns the page and the total count matching the filter.
    ///
    /// `since` is inclusive, `until` exclusive (on `created_at`); `per_page` 0 means 50, at most
    /// 1000 per page.
    pub async fn list_reviews(&self, filter: &ReviewFilter) -> Result<(Vec<Review>, i64)> {
        let mut h = self.db.read("listing reviews").await?;
        let (rows, total): (Vec<ReviewRow>, i64) = match &filter.visible_to {
            None => {
                fetch_page(
                    &mut h,
                    "reviews",
                    review_cols!(),
                    "created_at_ms DESC, id DESC",
                    |q| where_sql(&review_conds(filter, q)),
                    filter.page,
                    filter.per_page,
                )
                .await?
            }
            Some(v) => {
                // Counted and paged on the visible ids alone; only the page's reviews are read.
                let mut count = Q::dynamic(String::new());
                let ids = visible_ids(filter, v, &mut count, None);
                let count = count.with_sql(format!("SELECT COUNT(*) FROM ({ids}) v"));
                let (total,): (i64,) = h.fetch_one(count).await?;
                let (limit, offset) = limit_offset(filter.page, filter.per_page);
                let mut page = Q::dynamic(String::new());
                let ids = visible_ids(filter, v, &mut page, Some(offset + limit));
                let lim = page.next_param();
                page.push(limit);
                let off = page.next_param();
                page.push(offset);
                let page = page.with_sql(format!(
                    concat!(
                        "SELECT ",
                        review_cols!(),
                        " FROM reviews WHERE id IN (SELECT id FROM ({}) v \
                         ORDER BY created_at_ms DESC, id DESC LIMIT {} OFFSET {}) \
                         ORDER BY created_at_ms DESC, id DESC"
                    ),
                    ids, lim, off
                ));
                (h.fetch_all(page).await?, total)
            }
        };
        Ok((
            rows.into_iter()
                .map(ReviewRow::into_review)
                .collect::<Result<_>>()?,
            total,
        ))
    }
    /// Persists a transition computed by the core: succeeds only if the stored version is still
    /// `review.version` (the version the transition started from); stores `version + 1` and
    /// returns the stored review. `Conflict` otherwise — the caller reloads and retries.
    ///
    /// Only the fields a transition may change are written (status, duration, approvals,
    /// decision, expiry, window); the command, requester, connection, rule and policy recorded
    /// at request time never change. `NotFound` if the review does not exist. On `Conflict` or
    /// `NotFound` nothing is written, audit entries included.
    pub async fn update_review(&self, review: &Review, audit: AuditCtx) -> Result<Review> {
        let mut tx = self
            .db
            .write(format!("updating review {}", review.id))
            .await?;
        let stored = update_review_tx(&mut tx, review, &audit).await?;
        tx.commit().await?;
        Ok(stored)
    }
    /// PENDING reviews whose `expires_at <= now`.
    pub async fn reviews_to_expire(&self, now: OffsetDateTime) -> Result<Vec<Review>> {
        self.reviews_where(
            "finding reviews to expire",
            q(concat!(
                "SELECT ",
                review_cols!(),
                " FROM reviews WHERE status = 'PENDING' AND expires_at_ms <= $1 ORDER BY expires_at_ms, id"
            ))
            .bind(now),
        )
        .await
    }
    /// APPROVED jit reviews whose `window_end <= now`.
    pub async fn windows_to_finish(&self, now: OffsetDateTime) -> Result<Vec<Review>> {
        self.reviews_where(
            "finding JIT windows to finish",
            q(concat!(
                "SELECT ",
                review_cols!(),
                " FROM reviews WHERE status = 'APPROVED' AND kind = 'jit' AND window_end_ms <= $1 \
                 ORDER BY window_end_ms, id"
            ))
            .bind(now),
        )
        .await
    }
    /// APPROVED jit reviews of `requester` on `connection` (the caller checks the window).
    ///
    /// Newest first.
    pub async fn approved_windows(&self, requester: &str, connection: &str) -> Result<Vec<Review>> {
        self.reviews_where(
            "finding approved JIT windows",
            q(concat!(
                "SELECT ",
                review_cols!(),
                " FROM reviews WHERE status = 'APPROVED' AND kind = 'jit' AND requester = $1 \
                 AND connection = $2 ORDER BY created_at_ms DESC, id DESC"
            ))
            .bind(requester)
            .bind(connection),
        )
        .await
    }
    /// Claims the one execution of an approved command review: true for exactly one caller,
    /// across threads and replicas.
    ///
    /// A single conditional UPDATE (`status = 'APPROVED' AND exec_claimed_at IS NULL`); it does
    /// not change the review's version.
    pub async fn claim_execution(&self, review_id: Uuid, now: OffsetDateTime) -> Result<bool> {
        // A write like any other, so it shares the commit of writes running beside it.
        let mut tx = self
            .db
            .write(format!("claiming the execution of review {review_id}"))
            .await?;
        let n = tx
            .execute(
                q("UPDATE reviews SET exec_claimed_at_ms = $2 \
                   WHERE id = $1 AND status = 'APPROVED' AND exec_claimed_at_ms IS NULL")
                .bind(review_id)
                .bind(now),
            )
            .await?;
        tx.commit().await?;
        Ok(n == 1)
    }
    /// Renews the execution claims of reviews a live proxy session still holds. A claim is a
    /// lease: the sweeper takes a claim older than the execution timeout for a crashed
    /// execution, so a held statement that waits (or runs) long must keep renewing it.
    pub async fn renew_claims(&self, review_ids: &[Uuid], now: OffsetDateTime) -> Result<()> {
        if review_ids.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.write("renewing execution claims").await?;
        for id in review_ids {
            tx.execute(
                q("UPDATE reviews SET exec_claimed_at_ms = $2 WHERE id = $1 \
                   AND status IN ('PENDING', 'APPROVED') AND exec_claimed_at_ms IS NOT NULL")
                .bind(*id)
                .bind(now),
            )
            .await?;
        }
        tx.commit().await
    }
    /// APPROVED command reviews nobody has claimed (crash between approval and execution),
    /// decided before `decided_before`: a review approved a moment ago is about to be claimed
    /// by the request that approved it, which must not lose that race to the recovery.
    pub async fn unclaimed_approved(&self, decided_before: OffsetDateTime) -> Result<Vec<Review>> {
        self.reviews_where(
            "finding unclaimed approved reviews",
            q(concat!(
                "SELECT ",
                review_cols!(),
                " FROM reviews WHERE status = 'APPROVED' AND kind = 'command' \
                 AND exec_claimed_at_ms IS NULL AND decided_at_ms < $1 ORDER BY created_at_ms, id"
            ))
            .bind(decided_before),
        )
        .await
    }
    /// APPROVED command reviews claimed before `before` that never reached EXECUTED.
    pub async fn stale_claims(&self, before: OffsetDateTime) -> Result<Vec<Review>> {
        self.reviews_where(
            "finding stale execution claims",
            q(concat!(
                "SELECT ",
                review_cols!(),
                " FROM reviews WHERE status = 'APPROVED' AND kind = 'command' \
                 AND exec_claimed_at_ms < $1 ORDER BY exec_claimed_at_ms, id"
            ))
            .bind(before),
        )
        .await
    }

    async fn reviews_where(&self, ctx: &'static str, query: Q) -> Result<Vec<Review>> {
        let mut h = self.db.read(ctx).await?;
        let rows: Vec<ReviewRow> = h.fetch_all(query).await?;
        rows.into_iter().map(ReviewRow::into_review).collect()
    }

    // ---- sessions ------------------------------------------------------------------------

    /// Inserts a session; `audit` usually carries `SessionStarted`.
    pub async fn insert_session(&self, session: &Session, audit: AuditCtx) -> Result<()> {
        let mut tx = self
            .db
            .write(format!("recording session {}", session.id))
            .await?;
        insert_session_tx(&mut tx, session, &audit).await?;
        tx.commit().await
    }
    /// Updates end time, exit code, output… of a session (by id).
    ///
    /// Writes `command`, `ended_at`, `exit_code`, `output`, `output_truncated`, `output_sha256`,
    /// `duration_ms` and `rows_json`; `NotFound` if the session does not exist.
    pub async fn finish_session(&self, session: &Session, audit: AuditCtx) -> Result<()> {
        let mut tx = self
            .db
            .write(format!("finishing session {}", session.id))
            .await?;
        finish_session_tx(&mut tx, session, &audit).await?;
        tx.commit().await
    }
    /// Claims the one execution of an approved command review **and** records the start of
    /// the session that runs it, in one write: false (and nothing recorded) when someone else
    /// claimed it or it is no longer APPROVED.
    pub async fn claim_execution_and_start(
        &self,
        review_id: Uuid,
        now: OffsetDateTime,
        session: &Session,
        audit: AuditCtx,
    ) -> Result<bool> {
        let mut tx = self
            .db
            .write(format!("starting the execution of review {review_id}"))
            .await?;
        let n = tx
            .execute(
                q("UPDATE reviews SET exec_claimed_at_ms = $2 \
                   WHERE id = $1 AND status = 'APPROVED' AND exec_claimed_at_ms IS NULL")
                .bind(review_id)
                .bind(now),
            )
            .await?;
        if n != 1 {
            return Ok(false);
        }
        insert_session_tx(&mut tx, session, &audit).await?;
        tx.commit().await?;
        Ok(true)
    }
    /// Records how a review's execution ended, in one write: the session's outcome (as
    /// [`Store::finish_session`]) and the review's version-checked update to `review` (as
    /// [`Store::update_review`]: `Conflict` when it changed meanwhile, and then neither is
    /// recorded).
    pub async fn finish_review_execution(
        &self,
        session: &Session,
        session_audit: AuditCtx,
        review: &Review,
        review_audit: AuditCtx,
    ) -> Result<Review> {
        let mut tx = self
            .db
            .write(format!("recording the execution of review {}", review.id))
            .await?;
        finish_session_tx(&mut tx, session, &session_audit).await?;
        let stored = update_review_tx(&mut tx, review, &review_audit).await?;
        tx.commit().await?;
        Ok(stored)
    }
    pub async fn get_session(&self, id: Uuid) -> Result<Option<Session>> {
        let mut h = self.db.read(format!("reading session {id}")).await?;
        let row: Option<SessionRow> = h
            .fetch_optional(
                q(concat!(
                    "SELECT ",
                    session_cols!(),
                    " FROM sessions WHERE id = $1"
                ))
                .bind(id),
            )
            .await?;
        row.map(SessionRow::into_session).transpose()
    }
    /// Newest first, with the total count.
    ///
    /// `since` is inclusive (on `started_at`); paging as for reviews.
    pub async fn list_sessions(&self, filter: &SessionFilter) -> Result<(Vec<Session>, i64)> {
        let mut h = self.db.read("listing sessions").await?;
        let (rows, total): (Vec<SessionRow>, i64) = fetch_page(
            &mut h,
            "sessions",
            session_cols!(),
            "started_at_ms DESC, id DESC",
            |q| session_where(filter, q),
            filter.page,
            filter.per_page,
        )
        .await?;
        Ok((
            rows.into_iter()
                .map(SessionRow::into_session)
                .collect::<Result<_>>()?,
            total,
        ))
    }
    /// The latest session that executed a review (its result).
    pub async fn session_for_review(&self, review_id: Uuid) -> Result<Option<Session>> {
        let mut h = self
            .db
            .read(format!("reading the session of review {review_id}"))
            .await?;
        let row: Option<SessionRow> = h
            .fetch_optional(
                q(concat!(
                    "SELECT ",
                    session_cols!(),
                    " FROM sessions WHERE review_id = $1 ORDER BY started_at_ms DESC, id DESC LIMIT 1"
                ))
                .bind(review_id),
            )
            .await?;
        row.map(SessionRow::into_session).transpose()
    }
    /// The latest session of each of `review_ids` (one query for a page of reviews).
    pub async fn sessions_for_reviews(
        &self,
        review_ids: &[Uuid],
    ) -> Result<std::collections::HashMap<Uuid, Session>> {
        let mut out = std::collections::HashMap::new();
        if review_ids.is_empty() {
            return Ok(out);
        }
        let mut query = Q::one_off(String::new());
        let params: Vec<String> = review_ids
            .iter()
            .map(|id| {
                let p = query.next_param();
                query.push(*id);
                p
            })
            .collect();
        let sql = format!(
            "SELECT {} FROM sessions WHERE review_id IN ({}) ORDER BY started_at_ms, id",
            session_cols!(),
            params.join(", ")
        );
        let mut h = self.db.read("reading the sessions of reviews").await?;
        let rows: Vec<SessionRow> = h.fetch_all(query.with_sql(sql)).await?;
        for row in rows {
            let s = row.into_session()?;
            if let Some(r) = s.review_id {
                // Ordered by start: the latest one wins, as in `session_for_review`.
                out.insert(r, s);
            }
        }
        Ok(out)
    }
    /// Appends proxied statements to the audit chain in one transaction.
    ///
    /// Consecutive statements of one session under the same review (or none) become one
    /// [`AuditEvent::Statements`] entry, whose actor is the session's user and whose time is its
    /// first statement's: one hash and one row per session per batch instead of per statement,
    /// with every statement's text, time and tag inside the hashed event. Order within a session
    /// is kept; an entry is closed at [`STATEMENTS_PER_ENTRY`] statements or
    /// [`STATEMENT_BYTES_PER_ENTRY`] bytes of text.
    pub async fn record_statements(&self, batch: Vec<StatementRecord>) -> Result<()> {
        let Some(first) = batch.first() else {
            return Ok(());
        };
        let mut tx = self
            .db
            .write(format!(
                "recording {} statement(s) of session {}",
                batch.len(),
                first.session_id
            ))
            .await?;
        for g in group_statements(batch) {
            let event = AuditEvent::Statements {
                session_id: g.session_id,
                connection: g.connection,
                review_id: g.review_id,
                statements: g.runs,
            };
            tx.audit(g.at, &g.user, std::slice::from_ref(&event))?;
        }
        tx.commit().await
    }
    /// A session's statements in the order they ran, from its `statements` audit entries.
    pub async fn statements_for_session(&self, session_id: Uuid) -> Result<Vec<StatementRecord>> {
        let mut h = self
            .db
            .read(format!("reading the statements of session {session_id}"))
            .await?;
        let rows: Vec<AuditRow> = h
            .fetch_all(
                q(
                    "SELECT seq, at_ms, actor, event, prev_hash, hash FROM audit_log \
                   WHERE session_id = $1 ORDER BY seq",
                )
                .bind(session_id),
            )
            .await?;
        let mut out = Vec::new();
        for row in rows {
            let seq = row.seq;
            let entry = row.into_entry()?;
            let AuditEvent::Statements {
                session_id,
                connection,
                review_id,
                statements,
            } = serde_json::from_value(entry.event).map_err(|e| {
                StoreError::Corrupt(format!(
                    "audit_log {seq}: not a statements event although it names session {session_id}: {e}"
                ))
            })?
            else {
                return Err(StoreError::Corrupt(format!(
                    "audit_log {seq}: not a statements event although it names session {session_id}"
                )));
            };
            for r in statements {
                out.push(StatementRecord {
                    session_id,
                    user: entry.actor.clone(),
                    connection: connection.clone(),
                    review_id,
                    statement: r.statement,
                    at: rows::time("audit_log", &seq.to_string(), "statements.at_ms", r.at_ms)?,
                    tag: r.tag,
                });
            }
        }
        Ok(out)
    }

    // ---- audit ---------------------------------------------------------------------------

    /// Retention: drops the stored output (and JSON rows) of sessions that ended before
    /// `before`, keeping their SHA-256 so the audit chain's digests still match what was shown.
    /// The audit log itself is never pruned. Returns how many sessions were pruned.
    pub async fn prune_outputs(&self, before: OffsetDateTime, audit: AuditCtx) -> Result<u64> {
        let mut tx = self.db.write("pruning session outputs").await?;
        let n = tx
            .execute(
                q("UPDATE sessions SET output = NULL, rows_json = NULL \
                   WHERE ended_at_ms IS NOT NULL AND ended_at_ms < $1 AND (output IS NOT NULL OR rows_json IS NOT NULL)")
                .bind(before),
            )
            .await?;
        if n > 0 {
            tx.audit(audit.now, &audit.actor, &audit.events)?;
        }
        tx.commit().await?;
        Ok(n)
    }

    /// Appends events on their own (logins, denials…).
    pub async fn append_audit(&self, audit: AuditCtx) -> Result<()> {
        if audit.events.is_empty() {
            return Ok(());
        }
        let mut tx = self
            .db
            .write(format!("appending {} audit event(s)", audit.events.len()))
            .await?;
        tx.audit(audit.now, &audit.actor, &audit.events)?;
        tx.commit().await
    }
    /// Entries with `seq > after`, in order, at most `limit`.
    pub async fn audit_entries(&self, after: i64, limit: i64) -> Result<Vec<AuditEntry>> {
        let mut h = self.db.read("reading the audit log").await?;
        let rows: Vec<AuditRow> = h
            .fetch_all(
                q(
                    "SELECT seq, at_ms, actor, event, prev_hash, hash FROM audit_log \
                   WHERE seq > $1 ORDER BY seq LIMIT $2",
                )
                .bind(after)
                .bind(limit.max(0)),
            )
            .await?;
        rows.into_iter().map(AuditRow::into_entry).collect()
    }
    /// `(seq, hash)` of the entries after `after`, in order: what the Merkle tree over the chain
    /// is built from, without reading the events.
    pub async fn audit_hashes(&self, after: i64, limit: i64) -> Result<Vec<(i64, String)>> {
        let mut h = self.db.read("reading the audit log's hashes").await?;
        h.fetch_all(
            q("SELECT seq, hash FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2")
                .bind(after)
                .bind(limit.max(0)),
        )
        .await
    }
    /// Like [`Store::audit_entries`] without the `statements` entries (the bulk of a busy log):
    /// what the notifier reads, since no statement is ever notified. Uses a partial index, so
    /// the statement entries are not even read.
    pub async fn audit_entries_except_statements(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<AuditEntry>> {
        let mut h = self
            .db
            .read("reading the audit log (statements left out)")
            .await?;
        let rows: Vec<AuditRow> = h
            .fetch_all(
                q(
                    "SELECT seq, at_ms, actor, event, prev_hash, hash FROM audit_log \
                   WHERE seq > $1 AND session_id IS NULL ORDER BY seq LIMIT $2",
                )
                .bind(after)
                .bind(limit.max(0)),
            )
            .await?;
        rows.into_iter().map(AuditRow::into_entry).collect()
    }
    /// Entries mentioning a review (for its timeline), in order.
    pub async fn audit_for_review(&self, review_id: Uuid) -> Result<Vec<AuditEntry>> {
        let mut h = self
            .db
            .read(format!("reading the audit timeline of review {review_id}"))
            .await?;
        let rows: Vec<AuditRow> = h
            .fetch_all(
                q(
                    "SELECT seq, at_ms, actor, event, prev_hash, hash FROM audit_log \
                   WHERE review_id = $1 ORDER BY seq",
                )
                .bind(review_id),
            )
            .await?;
        rows.into_iter().map(AuditRow::into_entry).collect()
    }
    /// The chain's recorded head `(seq, hash)`, `None` while the log is empty. A verifier
    /// compares it with the last entry: deleting entries at the end of the log leaves the
    /// chain itself intact but no longer reaching the head.
    pub async fn audit_head(&self) -> Result<Option<(i64, String)>> {
        let mut h = self.db.read("reading the audit head").await?;
        let head: Option<(i64, String)> = h
            .fetch_optional(q("SELECT seq, hash FROM audit_head WHERE id = 1"))
            .await?;
        match head {
            None => Err(StoreError::Corrupt(
                "audit_head: the head row is missing".into(),
            )),
            Some((0, _)) => Ok(None),
            Some(head) => Ok(Some(head)),
        }
    }
}

/// Reads a review back inside a write transaction (to return what was stored).
/// The version-checked update of [`Store::update_review`], inside `tx`.
async fn update_review_tx(tx: &mut WriteTx, review: &Review, audit: &AuditCtx) -> Result<Review> {
    let r = review;
    let n = tx
        .execute(
            q(
                "UPDATE reviews SET status = $2, duration_sec = $3, approvals_json = $4, \
               decided_by = $5, reason = $6, forced = $7, decided_at_ms = $8, expires_at_ms = $9, \
               window_end_ms = $10, version = version + 1 WHERE id = $1 AND version = $11",
            )
            .bind(r.id)
            .bind(r.status.as_str())
            .bind(r.duration_sec)
            .bind(to_json("approvals", &r.approvals)?)
            .bind(&r.decided_by)
            .bind(&r.reason)
            .bind(r.forced)
            .bind(r.decided_at)
            .bind(r.expires_at)
            .bind(r.window_end)
            .bind(r.version),
        )
        .await?;
    if n == 0 {
        let exists = tx
            .fetch_optional::<(String,)>(q("SELECT id FROM reviews WHERE id = $1").bind(r.id))
            .await?
            .is_some();
        return Err(if exists {
            StoreError::Conflict
        } else {
            StoreError::NotFound(format!("review {} not found", r.id))
        });
    }
    // The deciders' copy of the status follows the review's (listings filter on it).
    tx.execute(
        q("UPDATE review_deciders SET status = $2 WHERE review_id = $1 AND status <> $2")
            .bind(r.id)
            .bind(r.status.as_str()),
    )
    .await?;
    tx.audit(audit.now, &audit.actor, &audit.events)?;
    review_in_tx(tx, r.id).await
}

/// The insert of [`Store::insert_session`], inside `tx`.
async fn insert_session_tx(tx: &mut WriteTx, session: &Session, audit: &AuditCtx) -> Result<()> {
    let s = session;
    let res = tx
        .execute(
            q("INSERT INTO sessions (id, kind, user_email, connection, review_id, command, \
               started_at_ms, ended_at_ms, exit_code, output, output_truncated, output_sha256, \
               duration_ms, rows_json) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)")
            .bind(s.id)
            .bind(s.kind.as_str())
            .bind(&s.user)
            .bind(&s.connection)
            .bind(s.review_id)
            .bind(&s.command)
            .bind(s.started_at)
            .bind(s.ended_at)
            .bind(s.exit_code.map(i64::from))
            .bind(s.output.as_ref().map(|o| o.as_bytes().to_vec()))
            .bind(s.output_truncated)
            .bind(&s.output_sha256)
            .bind(s.duration_ms)
            .bind(s.rows_json.as_ref().map(|v| to_json("result rows", v)).transpose()?),
        )
        .await;
    dup(res, || format!("session {} already exists", s.id))?;
    tx.audit(audit.now, &audit.actor, &audit.events)
}

/// The session update of [`Store::finish_session`], inside `tx`.
async fn finish_session_tx(tx: &mut WriteTx, session: &Session, audit: &AuditCtx) -> Result<()> {
    let s = session;
    let n = tx
        .execute(
            q("UPDATE sessions SET command = $2, ended_at_ms = $3, exit_code = $4, output = $5, \
               output_truncated = $6, output_sha256 = $7, duration_ms = $8, rows_json = $9 WHERE id = $1")
            .bind(s.id)
            .bind(&s.command)
            .bind(s.ended_at)
            .bind(s.exit_code.map(i64::from))
            .bind(s.output.as_ref().map(|o| o.as_bytes().to_vec()))
            .bind(s.output_truncated)
            .bind(&s.output_sha256)
            .bind(s.duration_ms)
            .bind(s.rows_json.as_ref().map(|v| to_json("result rows", v)).transpose()?),
        )
        .await?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("session {} not found", s.id)));
    }
    tx.audit(audit.now, &audit.actor, &audit.events)
}

async fn review_in_tx(tx: &mut WriteTx, id: Uuid) -> Result<Review> {
    let row: ReviewRow = tx
        .fetch_one(
            q(concat!(
                "SELECT ",
                review_cols!(),
                " FROM reviews WHERE id = $1"
            ))
            .bind(id),
        )
        .await?;
    row.into_review()
}
