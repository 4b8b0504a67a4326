//! Sessions (one execution of a command or one proxied connection) and the statements of proxied
//! sessions, which are stored as `statements` entries of the audit chain.
//!
//! It must never rewrite or drop a recorded statement: statements are only appended, in the
//! order they ran, inside hashed audit entries.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;
use warden_core::audit::{AuditEvent, StatementRun};
use warden_core::{Review, Session, SessionKind};

use crate::backend::{Q, WriteTx, q};
use crate::query::{cond, fetch_page, where_sql};
use crate::reviews::update_review_tx;
use crate::rows::{self, AuditRow, SessionRow, to_json};
use crate::{AuditCtx, Result, Store, StoreError, dup};

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

/// Column lists, one per table, shared by every SELECT of that table.
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

impl Store {
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
