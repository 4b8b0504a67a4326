//! Audit evidence: exports auditors can re-verify offline, signed checkpoints of the chain head,
//! and the retention policy for session outputs (which never touches the chain).

use std::io::Write;

use anyhow::Context;
use time::OffsetDateTime;
use uuid::Uuid;
use warden_core::audit::AuditEvent;
use warden_core::evidence::{
    AuditExport, Checkpoint, EXPORT_FORMAT, ExportApproval, ExportRow, parse_key32, sign_checkpoint,
};
use warden_core::{RuleType, User};
use warden_store::AuditCtx;

use super::{App, AppError, AppResult};

/// What to export.
#[derive(Debug, Clone, Default)]
pub struct ExportFilter {
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    pub connection: Option<String>,
}

const MAX_EXPORT_ROWS: usize = 100_000;

impl App {
    /// The chain segment of the period (from the last entry before `since`, the anchor, up to
    /// the head) and one row per review that segment records as requested in the period: the
    /// rows are chosen by the chain, not by the store's rows, so a review row deleted from the
    /// store leaves a request in the segment without its row, and `verify_export` names it.
    pub async fn export_audit(&self, user: &User, f: ExportFilter) -> AppResult<AuditExport> {
        self.require_admin(user)?;
        let (head_seq, head_hash) = self
            .store
            .audit_head()
            .await?
            .unwrap_or((0, warden_core::audit::GENESIS_HASH.into()));
        let from = match f.since {
            Some(since) => self.first_entry_at_or_after(since, head_seq).await?,
            None => 1,
        };
        // The anchor shows the verifier that nothing before `from` is in the period.
        let mut entries = Vec::new();
        let mut after = (from - 2).max(0);
        while after < head_seq {
            let mut page = self.store.audit_entries(after, 5000).await?;
            page.retain(|e| e.seq <= head_seq);
            let Some(last) = page.last().map(|e| e.seq) else {
                break;
            };
            after = last;
            entries.extend(page);
        }
        let until = f.until;
        let requested: Vec<Uuid> = entries
            .iter()
            .filter(|e| e.seq >= from && until.is_none_or(|u| e.at <= u))
            .filter_map(
                |e| match serde_json::from_value::<AuditEvent>(e.event.clone()) {
                    Ok(AuditEvent::ReviewRequested {
                        review_id,
                        connection,
                        ..
                    }) if f.connection.as_ref().is_none_or(|c| *c == connection) => Some(review_id),
                    _ => None,
                },
            )
            .collect();
        if requested.len() > MAX_EXPORT_ROWS {
            return Err(AppError::bad(
                "export_too_large",
                format!("more than {MAX_EXPORT_ROWS} reviews: narrow --since/--until"),
            ));
        }
        let mut rows = Vec::with_capacity(requested.len());
        for id in requested {
            // A review the chain records but the store lost stays missing: the verifier says so.
            let Some(r) = self.store.get_review(id).await? else {
                tracing::warn!(review = %id, "export: the chain records a review the store does not have");
                continue;
            };
            let entry_seqs: Vec<i64> = entries
                .iter()
                .filter(|e| {
                    e.event.get("review_id").and_then(serde_json::Value::as_str)
                        == Some(id.to_string().as_str())
                })
                .map(|e| e.seq)
                .collect();
            let session = if r.kind == RuleType::Command {
                self.store.session_for_review(r.id).await?
            } else {
                None
            };
            rows.push(ExportRow {
                review_id: r.id,
                kind: r.kind.as_str().into(),
                status: r.status.as_str().into(),
                requester: r.requester.clone(),
                connection: r.connection.clone(),
                rule: r.rule.clone(),
                command: r.command.clone(),
                command_sha256: r.command_sha256.clone(),
                duration_sec: r.duration_sec,
                request_reason: r.request_reason.clone(),
                requested_at: r.created_at,
                approvals: r
                    .approvals
                    .iter()
                    .map(|a| ExportApproval {
                        approver: a.approver.clone(),
                        group: a.group.clone(),
                        forced: a.forced,
                        auto: a.auto,
                        reason: a.reason.clone(),
                        at: a.at,
                    })
                    .collect(),
                forced: r.forced,
                decided_by: r.decided_by.clone(),
                decision_reason: r.reason.clone(),
                decided_at: r.decided_at,
                exit_code: session.as_ref().and_then(|s| s.exit_code),
                output_sha256: session.as_ref().and_then(|s| s.output_sha256.clone()),
                entry_seqs,
            });
        }
        Ok(AuditExport {
            format: EXPORT_FORMAT.into(),
            generated_at: self.now(),
            head_seq,
            head_hash,
            since: f.since,
            until: f.until,
            connection: f.connection,
            rows,
            entries,
        })
    }

    /// The first entry dated `since` or later (`head + 1` when none): a binary search over
    /// `seq`, which `at` follows (it never decreases along the chain).
    async fn first_entry_at_or_after(&self, since: OffsetDateTime, head: i64) -> AppResult<i64> {
        let (mut lo, mut hi) = (1i64, head + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let at = self
                .store
                .audit_entries(mid - 1, 1)
                .await?
                .first()
                .map(|e| e.at);
            match at {
                Some(at) if at < since => lo = mid + 1,
                _ => hi = mid,
            }
        }
        Ok(lo)
    }

    fn checkpoint_key(&self) -> AppResult<[u8; 32]> {
        let path = self.config.checkpoint_key.as_ref().ok_or_else(|| {
            AppError::bad("checkpoints_disabled", "no signing key: start the gateway with WARDEN_CHECKPOINT_KEY=/path/to/key (create one with warden audit keygen)")
        })?;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading checkpoint key {}", path.display()))?;
        parse_key32(&text).map_err(|e| {
            AppError::Internal(anyhow::anyhow!("checkpoint key {}: {e}", path.display()))
        })
    }

    /// Signs the current head and appends the checkpoint to the checkpoint file.
    pub async fn checkpoint_now(&self) -> AppResult<Option<Checkpoint>> {
        let key = self.checkpoint_key()?;
        let Some((seq, hash)) = self.store.audit_head().await? else {
            return Ok(None);
        };
        let cp = sign_checkpoint(&key, seq, &hash, self.now());
        let line = serde_json::to_string(&cp).map_err(anyhow::Error::from)?;
        let path = &self.config.checkpoint_file;
        let mut f = crate::datadir::append_private(path).context("opening the checkpoint file")?;
        writeln!(f, "{line}").with_context(|| format!("writing {}", path.display()))?;
        f.sync_all().ok();
        Ok(Some(cp))
    }

    pub async fn create_checkpoint(&self, user: &User) -> AppResult<Option<Checkpoint>> {
        self.require_admin(user)?;
        self.checkpoint_now().await
    }

    pub async fn list_checkpoints(&self, user: &User) -> AppResult<Vec<Checkpoint>> {
        self.require_admin(user)?;
        let text = match std::fs::read_to_string(&self.config.checkpoint_file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(AppError::Internal(e.into())),
        };
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).map_err(|e| {
                    AppError::Internal(anyhow::anyhow!("corrupt checkpoint line: {e}"))
                })
            })
            .collect()
    }

    /// Retention: prunes outputs of sessions older than `WARDEN_AUDIT_RETENTION`.
    pub async fn apply_retention(&self) -> AppResult<u64> {
        let Some(secs) = self.config.audit_retention_sec else {
            return Ok(0);
        };
        let now = self.now();
        let before = now - time::Duration::seconds(secs);
        let ev = AuditEvent::AdminChange {
            entity: "retention".into(),
            action: "prune_outputs".into(),
            name: "sessions".into(),
            before: None,
            after: Some(serde_json::json!({"ended_before": before.unix_timestamp()})),
        };
        Ok(self
            .store
            .prune_outputs(before, AuditCtx::new("system", now, vec![ev]))
            .await?)
    }
}

fn rfc(t: OffsetDateTime) -> String {
    warden_core::timefmt::format(t)
}

/// CSV of an export (one line per review), safe against spreadsheet formula injection.
pub fn export_csv(x: &AuditExport) -> String {
    fn cell(s: &str) -> String {
        let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
            format!("'{s}")
        } else {
            s.to_string()
        };
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s
        }
    }
    let mut out = String::from(
        "review_id,type,status,requester,connection,rule,command,command_sha256,duration_sec,requested_at,approvals,forced,decided_by,decision_reason,decided_at,exit_code,output_sha256,entry_seqs,entry_hashes\n",
    );
    for r in &x.rows {
        let approvals: Vec<String> = r
            .approvals
            .iter()
            .map(|a| {
                format!(
                    "{} ({}) {}{}",
                    a.approver,
                    a.group,
                    rfc(a.at),
                    if a.forced {
                        " FORCED"
                    } else if a.auto {
                        " auto"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        let hashes: Vec<String> = r
            .entry_seqs
            .iter()
            .filter_map(|s| x.entries.iter().find(|e| e.seq == *s))
            .map(|e| e.hash.clone())
            .collect();
        let fields = [
            r.review_id.to_string(),
            r.kind.clone(),
            r.status.clone(),
            r.requester.clone(),
            r.connection.clone(),
            r.rule.clone(),
            r.command.clone().unwrap_or_default(),
            r.command_sha256.clone().unwrap_or_default(),
            r.duration_sec.map(|d| d.to_string()).unwrap_or_default(),
            rfc(r.requested_at),
            approvals.join("; "),
            r.forced.to_string(),
            r.decided_by.clone().unwrap_or_default(),
            r.decision_reason.clone().unwrap_or_default(),
            r.decided_at.map(rfc).unwrap_or_default(),
            r.exit_code.map(|c| c.to_string()).unwrap_or_default(),
            r.output_sha256.clone().unwrap_or_default(),
            r.entry_seqs
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(" "),
            hashes.join(" "),
        ];
        out.push_str(&fields.iter().map(|f| cell(f)).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    out
}
