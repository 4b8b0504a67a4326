//! The audit log as a reader sees it (entries, hashes, the recorded head), stand-alone appends,
//! and output retention. Appends that belong to a change are written by that change's own
//! transaction (`WriteTx::audit`), not here.
//!
//! It must never delete, reorder or rewrite an audit entry: retention prunes session outputs
//! only, keeping their digests, and the chain is never pruned.

use time::OffsetDateTime;
use uuid::Uuid;
use warden_core::audit::AuditEntry;

use crate::backend::q;
use crate::rows::AuditRow;
use crate::{AuditCtx, Result, Store, StoreError};

impl Store {
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
