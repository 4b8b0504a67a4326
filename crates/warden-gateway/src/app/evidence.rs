//! Audit evidence: exports auditors can re-verify offline (a period's, or one review's with
//! Merkle inclusion proofs), signed checkpoints of the chain head and Merkle root (each with
//! the consistency proof from the previous one, appended to the checkpoint file and sent to
//! the witness), and the retention policy for session outputs (which never touches the chain).
//!
//! It must never sign a tree it has not checked: a checkpoint is refused when the chain no
//! longer extends the previous checkpoint's tree.

use std::io::Write;

use anyhow::Context;
use time::OffsetDateTime;
use tokio::sync::MutexGuard;
use uuid::Uuid;
use warden_core::audit::AuditEvent;
use warden_core::evidence::{
    AuditExport, Checkpoint, ConsistencyLink, EXPORT_FORMAT, EntryProof, ExportApproval, ExportRow,
    ExportSession, MerkleEvidence, REVIEW_EXPORT_FORMAT, parse_key32, sign_checkpoint,
};
use warden_core::merkle::{ChainTree, verify_consistency};
use warden_core::{Review, RuleType, User};
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
        self.require_reader(user)?;
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
            rows.push(self.export_row(&r, entry_seqs).await?);
        }
        // Sessions too, reviewed or not (no rule, exempt users, windows): chosen by the chain's
        // start entries, so a session row deleted from the store is named by the verifier.
        let started: Vec<Uuid> = entries
            .iter()
            .filter(|e| e.seq >= from && until.is_none_or(|u| e.at <= u))
            .filter_map(
                |e| match serde_json::from_value::<AuditEvent>(e.event.clone()) {
                    Ok(AuditEvent::SessionStarted {
                        session_id,
                        connection,
                        ..
                    }) if f.connection.as_ref().is_none_or(|c| *c == connection) => {
                        Some(session_id)
                    }
                    _ => None,
                },
            )
            .collect();
        if started.len() > MAX_EXPORT_ROWS {
            return Err(AppError::bad(
                "export_too_large",
                format!("more than {MAX_EXPORT_ROWS} sessions: narrow --since/--until"),
            ));
        }
        let mut sessions = Vec::with_capacity(started.len());
        for id in started {
            let Some(s) = self.store.get_session(id).await? else {
                tracing::warn!(session = %id, "export: the chain records a session the store does not have");
                continue;
            };
            let sid = id.to_string();
            sessions.push(ExportSession {
                session_id: s.id,
                kind: s.kind.as_str().into(),
                user: s.user,
                connection: s.connection,
                review_id: s.review_id,
                command: s.command,
                started_at: s.started_at,
                ended_at: s.ended_at,
                exit_code: s.exit_code,
                output_sha256: s.output_sha256,
                entry_seqs: entries
                    .iter()
                    .filter(|e| {
                        e.event
                            .get("session_id")
                            .and_then(serde_json::Value::as_str)
                            == Some(sid.as_str())
                    })
                    .map(|e| e.seq)
                    .collect(),
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
            sessions,
            entries,
            review: None,
            merkle: None,
        })
    }

    async fn export_row(&self, r: &Review, entry_seqs: Vec<i64>) -> AppResult<ExportRow> {
        let session = if r.kind == RuleType::Command {
            self.store.session_for_review(r.id).await?
        } else {
            None
        };
        Ok(ExportRow {
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
        })
    }

    /// One review on its own: its entries, each with an inclusion proof in the Merkle tree of
    /// the chain at the head, and (with a signing key) a checkpoint of that tree made now — an
    /// outsider checks the review with the public key alone, without the rest of the chain.
    pub async fn export_review(&self, user: &User, id: Uuid) -> AppResult<AuditExport> {
        self.require_reader(user)?;
        let review = self
            .store
            .get_review(id)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("no review {id}")))?;
        let key = match self.config.checkpoint_key {
            Some(_) => Some(self.checkpoint_key()?),
            None => None,
        };
        let (tree, head_seq, head_hash) = self.tree_at_head().await?;
        let mut entries = self.store.audit_for_review(id).await?;
        entries.retain(|e| e.seq <= head_seq);
        let proofs = entries
            .iter()
            .map(|e| {
                Ok(EntryProof {
                    seq: e.seq,
                    proof: tree.inclusion(e.seq).map_err(anyhow::Error::from)?,
                })
            })
            .collect::<AppResult<Vec<_>>>()?;
        let root = tree.root();
        let checkpoint = match key {
            Some(k) => Some(
                self.sign_and_publish(&k, &tree, head_seq, &head_hash)
                    .await?,
            ),
            None => None,
        };
        drop(tree);
        let row = self
            .export_row(&review, entries.iter().map(|e| e.seq).collect())
            .await?;
        Ok(AuditExport {
            format: REVIEW_EXPORT_FORMAT.into(),
            generated_at: self.now(),
            head_seq,
            head_hash,
            since: None,
            until: None,
            connection: None,
            rows: vec![row],
            sessions: vec![],
            entries,
            review: Some(id),
            merkle: Some(MerkleEvidence {
                tree_size: head_seq,
                root,
                checkpoint,
                proofs,
            }),
        })
    }

    /// The Merkle tree grown to the head read now, under the tree's lock (held by the caller
    /// while it proves and signs, so the tree never runs ahead of a head read under it). A
    /// chain that lost entries the tree already has, or whose head no longer is the tree's
    /// last leaf, is an error: its rows were rewritten after the tree read them.
    async fn tree_at_head(&self) -> AppResult<(MutexGuard<'_, ChainTree>, i64, String)> {
        let broken = |m: String| {
            tracing::error!("audit chain: {m}");
            AppError::conflict("chain_rewritten", m)
        };
        let mut tree = self.merkle.lock().await;
        let (head_seq, head_hash) = self
            .store
            .audit_head()
            .await?
            .unwrap_or((0, warden_core::audit::GENESIS_HASH.into()));
        let size = |t: &ChainTree| i64::try_from(t.len()).unwrap_or(i64::MAX);
        if size(&tree) > head_seq {
            return Err(broken(format!(
                "the chain's head is entry {head_seq}, but {} entries were read before: entries were deleted from the store",
                size(&tree)
            )));
        }
        while size(&tree) < head_seq {
            let after = size(&tree);
            let page = self.store.audit_hashes(after, 10_000).await?;
            if page.is_empty() {
                return Err(broken(format!(
                    "the chain ends at entry {after}, before its head {head_seq}"
                )));
            }
            for (seq, hash) in page {
                if seq > head_seq {
                    break;
                }
                if seq != size(&tree) + 1 {
                    return Err(broken(format!(
                        "entry {} is missing from the chain",
                        size(&tree) + 1
                    )));
                }
                tree.push(&hash).map_err(anyhow::Error::from)?;
            }
        }
        if head_seq > 0 && tree.leaf(head_seq).as_deref() != Some(head_hash.as_str()) {
            return Err(broken(format!(
                "the chain's head {head_seq} is not the entry read before: the chain was rewritten"
            )));
        }
        Ok((tree, head_seq, head_hash))
    }

    /// The last checkpoint of the checkpoint file, if any.
    fn last_checkpoint(&self) -> AppResult<Option<Checkpoint>> {
        let text = match std::fs::read_to_string(&self.config.checkpoint_file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(AppError::Internal(e.into())),
        };
        match text.lines().rev().find(|l| !l.trim().is_empty()) {
            Some(line) => Ok(Some(serde_json::from_str(line).map_err(|e| {
                AppError::Internal(anyhow::anyhow!("corrupt checkpoint line: {e}"))
            })?)),
            None => Ok(None),
        }
    }

    /// Signs the tree (which the caller holds at the head), with the consistency proof from the
    /// previous checkpoint checked first; appends it to the checkpoint file and sends it to the
    /// witness. Refuses to sign a chain that does not extend the previous checkpoint's.
    async fn sign_and_publish(
        &self,
        key: &[u8; 32],
        tree: &ChainTree,
        seq: i64,
        hash: &str,
    ) -> AppResult<Checkpoint> {
        let root = tree.root();
        let mut cp = sign_checkpoint(key, seq, hash, Some(&root), self.now());
        if let Some(prev) = self.last_checkpoint()? {
            let refuse = |why: String| {
                metrics::counter!("warden_audit_checkpoints_refused_total").increment(1);
                tracing::error!(
                    previous = prev.seq,
                    head = seq,
                    "refusing to sign an audit checkpoint: {why}"
                );
                AppError::conflict(
                    "chain_rewritten",
                    format!(
                        "refusing to sign a checkpoint: {why} (compare the chain with the witness's checkpoints: warden audit verify --checkpoints FILE --public-key KEY)"
                    ),
                )
            };
            if prev.seq > seq {
                return Err(refuse(format!(
                    "the chain has {seq} entries, fewer than the {} of checkpoint #{}",
                    prev.seq, prev.seq
                )));
            }
            if let Some(prev_root) = prev.root.clone() {
                let old = u64::try_from(prev.seq).unwrap_or(0);
                let proof = tree.consistency(old).map_err(anyhow::Error::from)?;
                verify_consistency(old, &prev_root, tree.len(), &root, &proof)
                    .map_err(|e| refuse(e.to_string()))?;
                cp.consistency = Some(ConsistencyLink {
                    from_seq: prev.seq,
                    from_root: prev_root,
                    proof,
                });
            } else if prev.seq == seq && prev.hash != hash {
                return Err(refuse(format!(
                    "entry {seq} no longer has the hash checkpoint #{} signed",
                    prev.seq
                )));
            }
        }
        let line = serde_json::to_string(&cp).map_err(anyhow::Error::from)?;
        let path = &self.config.checkpoint_file;
        let mut f = crate::datadir::append_private(path).context("opening the checkpoint file")?;
        writeln!(f, "{line}").with_context(|| format!("writing {}", path.display()))?;
        f.sync_all().ok();
        self.send_to_witness(&cp).await;
        Ok(cp)
    }

    /// POSTs the checkpoint (JSON) to `WARDEN_CHECKPOINT_WITNESS_URL`. A witness that cannot
    /// be reached is logged and counted; the checkpoint stays in the local file (and the next
    /// one, with its consistency proof, reaches the witness when it is back).
    async fn send_to_witness(&self, cp: &Checkpoint) {
        let Some(url) = &self.config.checkpoint_witness_url else {
            return;
        };
        let sent = super::notify::http()
            .post(url.expose())
            .timeout(std::time::Duration::from_secs(10))
            .json(cp)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {
                metrics::counter!("warden_audit_checkpoints_witnessed_total").increment(1);
            }
            Ok(r) => {
                metrics::counter!("warden_audit_checkpoint_witness_failures_total").increment(1);
                tracing::warn!(seq = cp.seq, status = %r.status(), "the checkpoint witness refused the checkpoint");
            }
            Err(e) => {
                metrics::counter!("warden_audit_checkpoint_witness_failures_total").increment(1);
                tracing::warn!(seq = cp.seq, error = %e, "the checkpoint witness is unreachable");
            }
        }
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

    /// Signs the current head and Merkle root; appends the checkpoint to the checkpoint file
    /// and sends it to the witness.
    pub async fn checkpoint_now(&self) -> AppResult<Option<Checkpoint>> {
        let key = self.checkpoint_key()?;
        let (tree, seq, hash) = self.tree_at_head().await?;
        if seq == 0 {
            return Ok(None);
        }
        let cp = self.sign_and_publish(&key, &tree, seq, &hash).await?;
        drop(tree);
        Ok(Some(cp))
    }

    pub async fn create_checkpoint(&self, user: &User) -> AppResult<Option<Checkpoint>> {
        self.require_admin(user)?;
        self.checkpoint_now().await
    }

    pub async fn list_checkpoints(&self, user: &User) -> AppResult<Vec<Checkpoint>> {
        self.require_reader(user)?;
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
    let mut out = String::new();
    let header = "review_id,type,status,requester,connection,rule,command,command_sha256,duration_sec,requested_at,approvals,forced,decided_by,decision_reason,decided_at,exit_code,output_sha256,entry_seqs,entry_hashes";
    csv_line(
        &mut out,
        &header.split(',').map(str::to_string).collect::<Vec<_>>(),
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
        csv_line(&mut out, &fields);
    }
    out
}

/// Appends one CSV record to `out`, written by the `csv` crate (RFC 4180: every cell quoted,
/// quotes doubled, CRLF), each cell first neutralised against formula injection (a leading
/// `=`, `+`, `-`, `@`, tab or CR gets a `'`: commands and reasons are attacker text that
/// spreadsheets would otherwise evaluate). The one CSV writer of every export.
pub fn csv_line(out: &mut String, cells: &[String]) {
    let safe: Vec<String> = cells
        .iter()
        .map(|c| {
            if c.starts_with(['=', '+', '-', '@', '\t', '\r']) {
                format!("'{c}")
            } else {
                c.clone()
            }
        })
        .collect();
    let mut w = csv::WriterBuilder::new()
        .quote_style(csv::QuoteStyle::Always)
        .terminator(csv::Terminator::CRLF)
        .flexible(true)
        .from_writer(Vec::new());
    // Writing to memory cannot fail (and `flexible` accepts any number of cells).
    if let Err(e) = w.write_record(&safe) {
        tracing::error!(error = %e, "could not write a CSV record");
        return;
    }
    match w.into_inner() {
        Ok(bytes) => out.push_str(&String::from_utf8_lossy(&bytes)),
        Err(e) => tracing::error!(error = %e, "could not write a CSV record"),
    }
}
