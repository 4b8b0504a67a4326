//! Audit evidence an auditor can check offline: the export format (one row per review plus the
//! contiguous chain segment that proves it) with [`verify_export`]; the single-review export
//! (the review's entries with Merkle inclusion proofs against a signed checkpoint) checked by
//! the same function; and Ed25519-signed checkpoints of the chain head and its Merkle root with
//! [`sign_checkpoint`] / [`verify_checkpoint`] / [`verify_checkpoint_log`] (each checkpoint
//! carries the consistency proof that its tree extends the previous one's).
//!
//! Pure: keys and documents come in as values; nothing here reads files or clocks.

use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use thiserror::Error;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::audit::{AuditEntry, verify_chain};

/// One approval as exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportApproval {
    pub approver: String,
    pub group: String,
    pub forced: bool,
    pub auto: bool,
    pub reason: Option<String>,
    #[serde(with = "crate::timefmt::rfc3339_ms")]
    pub at: OffsetDateTime,
}

/// One review, flattened for auditors: who, what, where, when, who approved, what happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportRow {
    pub review_id: Uuid,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    pub requester: String,
    pub connection: String,
    pub rule: String,
    pub command: Option<String>,
    pub command_sha256: Option<String>,
    pub duration_sec: Option<i64>,
    pub request_reason: Option<String>,
    #[serde(with = "crate::timefmt::rfc3339_ms")]
    pub requested_at: OffsetDateTime,
    pub approvals: Vec<ExportApproval>,
    pub forced: bool,
    pub decided_by: Option<String>,
    pub decision_reason: Option<String>,
    #[serde(with = "crate::timefmt::rfc3339_ms::option")]
    pub decided_at: Option<OffsetDateTime>,
    pub exit_code: Option<i32>,
    pub output_sha256: Option<String>,
    /// Sequence numbers of this review's audit entries (all inside `entries` of the export).
    pub entry_seqs: Vec<i64>,
}

/// One session (exec, web terminal or proxied), flattened for auditors: who ran what where,
/// when, and how it ended. Proxied statements themselves are in the cited entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportSession {
    pub session_id: Uuid,
    pub kind: String,
    pub user: String,
    pub connection: String,
    pub review_id: Option<Uuid>,
    pub command: Option<String>,
    #[serde(with = "crate::timefmt::rfc3339_ms")]
    pub started_at: OffsetDateTime,
    #[serde(with = "crate::timefmt::rfc3339_ms::option")]
    pub ended_at: Option<OffsetDateTime>,
    pub exit_code: Option<i32>,
    pub output_sha256: Option<String>,
    /// Sequence numbers of this session's audit entries (all inside `entries` of the export).
    pub entry_seqs: Vec<i64>,
}

/// The JSON export: the chain segment of the period (from the last entry before `since`, the
/// anchor, up to the head) and one row per review the segment records as requested in the
/// period (`since`, `until`, `connection`). Exports of format 1 carried no period; their
/// segment started at the first row's entry and completeness was not provable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditExport {
    pub format: String,
    #[serde(with = "crate::timefmt::rfc3339_ms")]
    pub generated_at: OffsetDateTime,
    pub head_seq: i64,
    pub head_hash: String,
    #[serde(default, with = "crate::timefmt::rfc3339_ms::option")]
    pub since: Option<OffsetDateTime>,
    #[serde(default, with = "crate::timefmt::rfc3339_ms::option")]
    pub until: Option<OffsetDateTime>,
    #[serde(default)]
    pub connection: Option<String>,
    pub rows: Vec<ExportRow>,
    /// One row per session the segment records as started in the period (format 3).
    #[serde(default)]
    pub sessions: Vec<ExportSession>,
    pub entries: Vec<AuditEntry>,
    /// A single-review export ([`REVIEW_EXPORT_FORMAT`]): the review it proves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<Uuid>,
    /// Inclusion proofs of `entries` in the Merkle tree of the chain at `head_seq`, and the
    /// checkpoint signing that tree (single-review exports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merkle: Option<MerkleEvidence>,
}

/// The Merkle part of a single-review export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerkleEvidence {
    /// Entries the tree covers (= the export's `head_seq`).
    pub tree_size: i64,
    /// RFC 6962 root, hex.
    pub root: String,
    /// The signed checkpoint of this tree; `None` when the gateway has no signing key (the
    /// proofs then only show the entries belong to a tree with this root, signed by nobody).
    pub checkpoint: Option<Checkpoint>,
    pub proofs: Vec<EntryProof>,
}

/// One entry's inclusion proof (hex, RFC 9162 order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryProof {
    pub seq: i64,
    pub proof: String,
}

pub const EXPORT_FORMAT: &str = "warden-audit-export/3";
/// Exports with a period and review completeness, written before session rows: verified
/// without the session checks.
pub const EXPORT_FORMAT_V2: &str = "warden-audit-export/2";
/// One review on its own: its entries (not contiguous), each with an inclusion proof.
pub const REVIEW_EXPORT_FORMAT: &str = "warden-audit-review/1";
/// Exports written before completeness was provable: verified without the completeness checks.
pub const EXPORT_FORMAT_V1: &str = "warden-audit-export/1";

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum EvidenceError {
    #[error("unknown export format {0:?}")]
    Format(String),
    #[error("chain segment does not verify: {0}")]
    Chain(#[from] crate::audit::ChainError),
    #[error("the segment does not end at the stated head #{0}")]
    Head(i64),
    #[error("review {review}: {problem}")]
    Row { review: Uuid, problem: String },
    #[error("session {session}: {problem}")]
    Session { session: Uuid, problem: String },
    #[error("incomplete: {0}")]
    Incomplete(String),
    #[error("checkpoint #{seq}: {problem}")]
    Checkpoint { seq: i64, problem: String },
    #[error("invalid key: {0}")]
    Key(String),
    #[error("merkle proof: {0}")]
    Merkle(#[from] crate::merkle::MerkleError),
}

fn field<'a>(e: &'a AuditEntry, k: &str) -> Option<&'a Value> {
    e.event.get(k)
}

/// Re-verifies an export offline: the chain segment is intact and contiguous up to the stated
/// head, and every row agrees with the audit entries it cites (command digest, approvers,
/// decision, execution).
pub fn verify_export(x: &AuditExport) -> Result<(), EvidenceError> {
    if x.format == REVIEW_EXPORT_FORMAT {
        verify_review_entries(x)?;
    } else if ![EXPORT_FORMAT, EXPORT_FORMAT_V2, EXPORT_FORMAT_V1].contains(&x.format.as_str()) {
        return Err(EvidenceError::Format(x.format.clone()));
    } else {
        if let Some(first) = x.entries.first() {
            verify_chain(&x.entries, Some((first.seq - 1, first.prev_hash.as_str())))?;
        }
        match x.entries.last() {
            Some(last) if last.seq == x.head_seq && last.hash == x.head_hash => {}
            None if x.rows.is_empty() => {}
            _ => return Err(EvidenceError::Head(x.head_seq)),
        }
    }
    verify_rows(x)?;
    if x.format == EXPORT_FORMAT || x.format == EXPORT_FORMAT_V2 {
        verify_complete(x)?;
    }
    if x.format == EXPORT_FORMAT {
        verify_sessions(x)?;
    }
    Ok(())
}

/// Every session row agrees with the entries it cites (its start: user, connection, review and
/// command digest; its end: exit code and output digest), lies in the period, and every session
/// the segment records as started in the period has its row.
fn verify_sessions(x: &AuditExport) -> Result<(), EvidenceError> {
    let str_of = |e: &AuditEntry, k: &str| field(e, k).and_then(Value::as_str).map(str::to_string);
    for s in &x.sessions {
        let bad = |problem: String| EvidenceError::Session {
            session: s.session_id,
            problem,
        };
        let id = s.session_id.to_string();
        let mine: Vec<&AuditEntry> = s
            .entry_seqs
            .iter()
            .map(|q| {
                x.entries
                    .iter()
                    .find(|e| e.seq == *q)
                    .ok_or_else(|| bad(format!("cites entry {q} missing from the export")))
            })
            .collect::<Result<_, _>>()?;
        if mine
            .iter()
            .any(|e| field(e, "session_id").and_then(Value::as_str) != Some(id.as_str()))
        {
            return Err(bad("cites an entry of another session".into()));
        }
        let kind = |e: &AuditEntry| str_of(e, "kind").unwrap_or_default();
        let started = mine
            .iter()
            .find(|e| kind(e) == "session_started")
            .ok_or_else(|| bad("no start entry".into()))?;
        if started.actor != s.user
            || str_of(started, "connection").as_deref() != Some(s.connection.as_str())
            || str_of(started, "review_id") != s.review_id.map(|r| r.to_string())
        {
            return Err(bad(
                "user, connection or review differ from what the chain recorded at its start"
                    .into(),
            ));
        }
        // Sessions started before the digest was recorded have none to compare with.
        match (&s.command, str_of(started, "command_sha256")) {
            (Some(cmd), Some(recorded))
                if hex::encode(Sha256::digest(cmd.as_bytes())) != recorded =>
            {
                return Err(bad(
                    "command does not match the SHA-256 recorded at its start".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(bad(
                    "the chain recorded a command that the row no longer has".into(),
                ));
            }
            _ => {}
        }
        if s.exit_code.is_some() || s.output_sha256.is_some() {
            let ended = mine.iter().any(|e| {
                kind(e) == "session_ended"
                    && field(e, "exit_code").and_then(Value::as_i64) == s.exit_code.map(i64::from)
                    && str_of(e, "output_sha256") == s.output_sha256
            });
            if !ended {
                return Err(bad("its result does not match the chain".into()));
            }
        }
        if !in_period(x, started) {
            return Err(bad(
                "its start is outside the export's period: the chain does not put it here".into(),
            ));
        }
    }
    for e in &x.entries {
        if field(e, "kind").and_then(Value::as_str) != Some("session_started") || !in_period(x, e) {
            continue;
        }
        let id = field(e, "session_id").and_then(Value::as_str).unwrap_or("");
        if !x.sessions.iter().any(|s| s.session_id.to_string() == id) {
            return Err(EvidenceError::Incomplete(format!(
                "session {id} (started at entry {}) is in the chain but not in the export",
                e.seq
            )));
        }
    }
    Ok(())
}

/// A single-review export's entries: each hashes to what it says (content and predecessor),
/// each is leaf `seq - 1` of the tree whose root the checkpoint signs, and the one row cites
/// every entry. What it cannot show alone is that the review has no *other* entry: that needs
/// the chain (a full export or `warden audit verify`).
fn verify_review_entries(x: &AuditExport) -> Result<(), EvidenceError> {
    let m = x
        .merkle
        .as_ref()
        .ok_or_else(|| EvidenceError::Incomplete("a single-review export without proofs".into()))?;
    let size = u64::try_from(m.tree_size)
        .map_err(|_| EvidenceError::Incomplete("negative tree size".into()))?;
    if m.tree_size != x.head_seq {
        return Err(EvidenceError::Head(x.head_seq));
    }
    if let Some(cp) = &m.checkpoint
        && (cp.seq != m.tree_size
            || cp.hash != x.head_hash
            || cp.root.as_deref() != Some(m.root.as_str()))
    {
        return Err(EvidenceError::Checkpoint {
            seq: cp.seq,
            problem: "does not sign this export's tree (size, head hash or root differ)".into(),
        });
    }
    let [row] = x.rows.as_slice() else {
        return Err(EvidenceError::Incomplete(format!(
            "a single-review export has one row, not {}",
            x.rows.len()
        )));
    };
    if x.review != Some(row.review_id) {
        return Err(EvidenceError::Row {
            review: row.review_id,
            problem: "is not the review this export is for".into(),
        });
    }
    for e in &x.entries {
        verify_chain(
            std::slice::from_ref(e),
            Some((e.seq - 1, e.prev_hash.as_str())),
        )?;
        let proof =
            m.proofs.iter().find(|p| p.seq == e.seq).ok_or_else(|| {
                EvidenceError::Incomplete(format!("entry {} has no proof", e.seq))
            })?;
        crate::merkle::verify_inclusion(&m.root, size, e.seq, &e.hash, &proof.proof)?;
        if !row.entry_seqs.contains(&e.seq) {
            return Err(EvidenceError::Row {
                review: row.review_id,
                problem: format!("does not cite entry {} of the export", e.seq),
            });
        }
    }
    Ok(())
}

/// Checks the signature of the checkpoint a single-review export carries (the proofs are
/// checked by [`verify_export`]; this says *who* vouches for the tree).
pub fn verify_export_signature(public: &[u8; 32], x: &AuditExport) -> Result<(), EvidenceError> {
    match x.merkle.as_ref().and_then(|m| m.checkpoint.as_ref()) {
        Some(cp) => verify_checkpoint(public, cp, Some(&x.head_hash)),
        None => Err(EvidenceError::Incomplete(
            "the export carries no signed checkpoint (the gateway had no WARDEN_CHECKPOINT_KEY)"
                .into(),
        )),
    }
}

fn verify_rows(x: &AuditExport) -> Result<(), EvidenceError> {
    for row in &x.rows {
        let bad = |problem: String| EvidenceError::Row {
            review: row.review_id,
            problem,
        };
        let id = row.review_id.to_string();
        let mine: Vec<&AuditEntry> = row
            .entry_seqs
            .iter()
            .map(|s| {
                x.entries
                    .iter()
                    .find(|e| e.seq == *s)
                    .ok_or_else(|| bad(format!("cites entry {s} missing from the export")))
            })
            .collect::<Result<_, _>>()?;
        if mine
            .iter()
            .any(|e| field(e, "review_id").and_then(Value::as_str) != Some(id.as_str()))
        {
            return Err(bad("cites an entry of another review".into()));
        }
        let kind = |e: &&AuditEntry| {
            field(e, "kind")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let requested = mine
            .iter()
            .find(|e| kind(e) == "review_requested")
            .ok_or_else(|| bad("no request entry".into()))?;
        if let Some(cmd) = &row.command {
            let digest = hex::encode(Sha256::digest(cmd.as_bytes()));
            if row.command_sha256.as_deref() != Some(digest.as_str())
                || field(requested, "command_sha256").and_then(Value::as_str)
                    != Some(digest.as_str())
            {
                return Err(bad(
                    "command does not match the SHA-256 recorded at request time".into(),
                ));
            }
        }
        if requested.actor != row.requester {
            return Err(bad(format!(
                "requester {} but the chain says {}",
                row.requester, requested.actor
            )));
        }
        for a in &row.approvals {
            let found = mine.iter().any(|e| {
                kind(e) == "review_approved"
                    && field(e, "approver").and_then(Value::as_str) == Some(a.approver.as_str())
            });
            if !found {
                return Err(bad(format!(
                    "approval by {} is not in the chain",
                    a.approver
                )));
            }
        }
        if let Some(code) = row.exit_code {
            let ok = mine.iter().any(|e| {
                kind(e) == "review_executed"
                    && field(e, "exit_code").and_then(Value::as_i64) == Some(i64::from(code))
                    && field(e, "output_sha256").and_then(Value::as_str)
                        == row.output_sha256.as_deref()
            });
            if !ok {
                return Err(bad("execution result does not match the chain".into()));
            }
        }
        if row.status == "REJECTED" && !mine.iter().any(|e| kind(e) == "review_rejected") {
            return Err(bad("rejected, but the chain has no rejection".into()));
        }
        if (x.format == EXPORT_FORMAT || x.format == EXPORT_FORMAT_V2) && !in_period(x, requested) {
            return Err(bad(
                "its request is outside the export's period: the chain does not put it here".into(),
            ));
        }
    }
    Ok(())
}

/// The request entry `e` falls in the export's period and connection.
fn in_period(x: &AuditExport, e: &AuditEntry) -> bool {
    let anchor = x.since.is_some() && x.entries.first().is_some_and(|f| f.seq == e.seq);
    !anchor
        && x.since.is_none_or(|s| e.at >= s)
        && x.until.is_none_or(|u| e.at <= u)
        && x.connection
            .as_deref()
            .is_none_or(|c| field(e, "connection").and_then(Value::as_str) == Some(c))
}

/// The segment covers the whole period, and every review it records as requested in the
/// period has its row: a review (row) deleted from the store, or left out, is named.
fn verify_complete(x: &AuditExport) -> Result<(), EvidenceError> {
    let Some(first) = x.entries.first() else {
        return Ok(());
    };
    match x.since {
        // The anchor (the last entry before the period) shows nothing earlier belongs in it.
        Some(since) if first.seq > 1 && first.at >= since => {
            return Err(EvidenceError::Incomplete(format!(
                "the segment starts at entry {} inside the period: earlier entries of the period are missing",
                first.seq
            )));
        }
        None if first.seq != 1 => {
            return Err(EvidenceError::Incomplete(format!(
                "an export without `since` covers the whole chain, but its segment starts at entry {}",
                first.seq
            )));
        }
        _ => {}
    }
    for e in &x.entries {
        if field(e, "kind").and_then(Value::as_str) != Some("review_requested") || !in_period(x, e)
        {
            continue;
        }
        let id = field(e, "review_id").and_then(Value::as_str).unwrap_or("");
        if !x.rows.iter().any(|r| r.review_id.to_string() == id) {
            return Err(EvidenceError::Incomplete(format!(
                "review {id} (requested at entry {}) is in the chain but not in the export",
                e.seq
            )));
        }
    }
    Ok(())
}

/// A signed statement "the chain had hash H at entry N, and the Merkle tree over entries
/// 1..=N has root R".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: i64,
    pub hash: String,
    /// RFC 6962 root over entries 1..=seq, hex (absent in checkpoints signed before the tree).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    #[serde(with = "crate::timefmt::rfc3339_ms")]
    pub at: OffsetDateTime,
    /// First 16 hex chars of SHA-256(public key).
    pub key_id: String,
    /// base64 Ed25519 signature over `warden-checkpoint/2:{seq}:{hash}:{root}:{at_unix}`
    /// (`warden-checkpoint:{seq}:{hash}:{at_unix}` when there is no root).
    pub signature: String,
    /// Proof that this tree extends the previous checkpoint's (unsigned: a proof needs none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<ConsistencyLink>,
}

/// The previous checkpoint this one extends, and the RFC 9162 consistency proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyLink {
    pub from_seq: i64,
    pub from_root: String,
    pub proof: String,
}

fn checkpoint_message(seq: i64, hash: &str, root: Option<&str>, at: OffsetDateTime) -> Vec<u8> {
    match root {
        Some(root) => format!(
            "warden-checkpoint/2:{seq}:{hash}:{root}:{}",
            at.unix_timestamp()
        ),
        None => format!("warden-checkpoint:{seq}:{hash}:{}", at.unix_timestamp()),
    }
    .into_bytes()
}

pub fn key_id(public: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(public.as_bytes())[..8])
}

/// Parses a 32-byte key given as base64 (or hex).
pub fn parse_key32(text: &str) -> Result<[u8; 32], EvidenceError> {
    let t = text.trim();
    let bytes = if t.len() == 64 && t.chars().all(|c| c.is_ascii_hexdigit()) {
        hex::decode(t).map_err(|e| EvidenceError::Key(e.to_string()))?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(t)
            .map_err(|e| EvidenceError::Key(e.to_string()))?
    };
    bytes
        .try_into()
        .map_err(|_| EvidenceError::Key("expected 32 bytes".into()))
}

pub fn public_key_b64(secret: &[u8; 32]) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(SigningKey::from_bytes(secret).verifying_key().as_bytes())
}

/// Signs "entry `seq` has `hash` and the tree over 1..=seq has `root`".
pub fn sign_checkpoint(
    secret: &[u8; 32],
    seq: i64,
    hash: &str,
    root: Option<&str>,
    at: OffsetDateTime,
) -> Checkpoint {
    let key = SigningKey::from_bytes(secret);
    let at = OffsetDateTime::from_unix_timestamp(at.unix_timestamp()).unwrap_or(at);
    let sig = key.sign(&checkpoint_message(seq, hash, root, at));
    Checkpoint {
        seq,
        hash: hash.to_string(),
        root: root.map(str::to_string),
        at,
        key_id: key_id(&key.verifying_key()),
        signature: base64::engine::general_purpose::STANDARD.encode(sig.to_bytes()),
        consistency: None,
    }
}

/// Checks a log of checkpoints (oldest first) without the chain: every signature, sizes that
/// never shrink, and each checkpoint's consistency proof from the one before it — so a witness
/// holding this log catches a chain rewritten (or truncated) after any checkpoint it holds.
pub fn verify_checkpoint_log(public: &[u8; 32], log: &[Checkpoint]) -> Result<(), EvidenceError> {
    let mut prev: Option<&Checkpoint> = None;
    for cp in log {
        verify_checkpoint(public, cp, None)?;
        let bad = |problem: String| EvidenceError::Checkpoint {
            seq: cp.seq,
            problem,
        };
        if let Some(p) = prev {
            if cp.seq < p.seq {
                return Err(bad(format!(
                    "the chain shrank from {} to {} entries since the previous checkpoint",
                    p.seq, cp.seq
                )));
            }
            if let (Some(old_root), Some(new_root)) = (&p.root, &cp.root) {
                let link = cp
                    .consistency
                    .as_ref()
                    .filter(|l| l.from_seq == p.seq && l.from_root == *old_root);
                let Some(link) = link else {
                    return Err(bad(format!(
                        "does not prove it extends the previous checkpoint #{}",
                        p.seq
                    )));
                };
                crate::merkle::verify_consistency(
                    u64::try_from(p.seq).unwrap_or(0),
                    old_root,
                    u64::try_from(cp.seq).unwrap_or(0),
                    new_root,
                    &link.proof,
                )?;
            } else if cp.seq == p.seq && cp.hash != p.hash {
                return Err(bad(
                    "same size, another head: the chain was rewritten".into()
                ));
            }
        }
        prev = Some(cp);
    }
    Ok(())
}

/// Checks the signature, and (when the chain's entry at `cp.seq` is given) that the chain
/// still has the signed hash there.
pub fn verify_checkpoint(
    public: &[u8; 32],
    cp: &Checkpoint,
    chain_hash_at_seq: Option<&str>,
) -> Result<(), EvidenceError> {
    let bad = |problem: &str| EvidenceError::Checkpoint {
        seq: cp.seq,
        problem: problem.into(),
    };
    let key = VerifyingKey::from_bytes(public).map_err(|e| EvidenceError::Key(e.to_string()))?;
    let sig_bytes: [u8; 64] = base64::engine::general_purpose::STANDARD
        .decode(&cp.signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("malformed signature"))?;
    key.verify(
        &checkpoint_message(cp.seq, &cp.hash, cp.root.as_deref(), cp.at),
        &Signature::from_bytes(&sig_bytes),
    )
    .map_err(|_| bad("signature does not verify with this public key"))?;
    match chain_hash_at_seq {
        Some(h) if h != cp.hash => Err(bad(
            "the chain's hash at this entry differs from the signed one: the chain was rewritten",
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditEvent, next_entry};

    fn t() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap()
    }

    #[test]
    fn checkpoints_sign_and_detect_rewrites() {
        let sk = [9u8; 32];
        let pk = parse_key32(&public_key_b64(&sk)).unwrap();
        let cp = sign_checkpoint(&sk, 5, "abc", None, t());
        assert!(verify_checkpoint(&pk, &cp, Some("abc")).is_ok());
        assert!(verify_checkpoint(&pk, &cp, Some("abd")).is_err());
        let mut forged = cp.clone();
        forged.hash = "abd".into();
        assert!(verify_checkpoint(&pk, &forged, None).is_err());
        let other = parse_key32(&public_key_b64(&[1u8; 32])).unwrap();
        assert!(verify_checkpoint(&other, &cp, None).is_err());
    }

    fn export() -> AuditExport {
        let id = Uuid::new_v4();
        let cmd = "DELETE FROM t";
        let sha = crate::command_sha256(cmd);
        let evs = [
            (
                "dev@x",
                AuditEvent::ReviewRequested {
                    review_id: id,
                    review_type: "command".into(),
                    connection: "pg".into(),
                    rule: "r".into(),
                    command_sha256: Some(sha.clone()),
                    duration_sec: None,
                    reason: None,
                },
            ),
            (
                "dba@x",
                AuditEvent::ReviewApproved {
                    review_id: id,
                    approver: "dba@x".into(),
                    group: "dba".into(),
                    forced: false,
                    auto: false,
                    reason: None,
                    approved: true,
                },
            ),
            (
                "system",
                AuditEvent::ReviewExecuted {
                    review_id: id,
                    session_id: Uuid::new_v4(),
                    exit_code: 0,
                    output_sha256: "o".into(),
                    duration_ms: 3,
                },
            ),
        ];
        let mut entries: Vec<AuditEntry> = Vec::new();
        for (actor, ev) in evs {
            let prev = entries.last().map(|e| (e.seq, e.hash.as_str()));
            entries.push(next_entry(prev, t(), actor, &ev));
        }
        let row = ExportRow {
            review_id: id,
            kind: "command".into(),
            status: "EXECUTED".into(),
            requester: "dev@x".into(),
            connection: "pg".into(),
            rule: "r".into(),
            command: Some(cmd.into()),
            command_sha256: Some(sha),
            duration_sec: None,
            request_reason: None,
            requested_at: t(),
            approvals: vec![ExportApproval {
                approver: "dba@x".into(),
                group: "dba".into(),
                forced: false,
                auto: false,
                reason: None,
                at: t(),
            }],
            forced: false,
            decided_by: None,
            decision_reason: None,
            decided_at: Some(t()),
            exit_code: Some(0),
            output_sha256: Some("o".into()),
            entry_seqs: vec![1, 2, 3],
        };
        let last = entries.last().unwrap().clone();
        AuditExport {
            format: EXPORT_FORMAT.into(),
            generated_at: t(),
            head_seq: last.seq,
            head_hash: last.hash,
            since: None,
            until: None,
            connection: None,
            rows: vec![row],
            sessions: vec![],
            entries,
            review: None,
            merkle: None,
        }
    }

    /// [`export`] plus an exec session run without review (no rule): its start and end entries
    /// appended to the chain, and its row.
    fn export_with_session() -> AuditExport {
        let mut x = export();
        let sid = Uuid::new_v4();
        let cmd = "rm -rf /tmp/x";
        for ev in [
            AuditEvent::SessionStarted {
                session_id: sid,
                session_kind: "exec".into(),
                connection: "shell".into(),
                review_id: None,
                command_sha256: Some(crate::command_sha256(cmd)),
            },
            AuditEvent::SessionEnded {
                session_id: sid,
                exit_code: Some(0),
                output_sha256: Some("out".into()),
            },
        ] {
            let prev = x.entries.last().map(|e| (e.seq, e.hash.clone()));
            let e = next_entry(
                prev.as_ref().map(|(s, h)| (*s, h.as_str())),
                t(),
                "ops@x",
                &ev,
            );
            x.entries.push(e);
        }
        let last = x.entries.last().unwrap().clone();
        x.head_seq = last.seq;
        x.head_hash = last.hash;
        x.sessions.push(ExportSession {
            session_id: sid,
            kind: "exec".into(),
            user: "ops@x".into(),
            connection: "shell".into(),
            review_id: None,
            command: Some(cmd.into()),
            started_at: t(),
            ended_at: Some(t()),
            exit_code: Some(0),
            output_sha256: Some("out".into()),
            entry_seqs: vec![last.seq - 1, last.seq],
        });
        x
    }

    #[test]
    fn sessions_without_review_are_exported_and_checked() {
        let x = export_with_session();
        verify_export(&x).unwrap();
        let mut y = x.clone();
        y.sessions.clear();
        assert!(
            matches!(verify_export(&y), Err(EvidenceError::Incomplete(_))),
            "a session row deleted from the store (or cut from the file) is named"
        );
        let mut y = x.clone();
        y.sessions[0].command = Some("ls".into());
        assert!(verify_export(&y).is_err(), "command swapped");
        let mut y = x.clone();
        y.sessions[0].exit_code = Some(1);
        assert!(verify_export(&y).is_err(), "result edited");
        let mut y = x.clone();
        y.sessions[0].user = "someone@x".into();
        assert!(verify_export(&y).is_err(), "user swapped");
        let mut y = x.clone();
        y.sessions[0].entry_seqs = vec![1];
        assert!(verify_export(&y).is_err(), "cites another entry");
        let mut y = x.clone();
        y.connection = Some("pg".into());
        assert!(
            verify_export(&y).is_err(),
            "outside the period's connection"
        );
        // Format 2 exports (before session rows) are verified without them.
        let mut y = x;
        y.format = EXPORT_FORMAT_V2.into();
        y.sessions.clear();
        verify_export(&y).unwrap();
    }

    /// A chain of `noise` unrelated entries, then the review's three entries interleaved with
    /// more noise; the single-review export of it with a checkpoint signed by `sk`.
    fn review_export(sk: &[u8; 32]) -> AuditExport {
        let base = export();
        let id = base.rows[0].review_id;
        let noise = |i: usize| AuditEvent::LoginSucceeded {
            via: format!("noise-{i}"),
        };
        let mut chain: Vec<AuditEntry> = Vec::new();
        let push = |chain: &mut Vec<AuditEntry>, actor: &str, ev: &AuditEvent| {
            let prev = chain.last().map(|e| (e.seq, e.hash.clone()));
            let e = next_entry(prev.as_ref().map(|(s, h)| (*s, h.as_str())), t(), actor, ev);
            chain.push(e);
        };
        for i in 0..5 {
            push(&mut chain, "x@x", &noise(i));
        }
        let mut mine = Vec::new();
        for (k, e) in base.entries.iter().enumerate() {
            let ev: AuditEvent = serde_json::from_value(e.event.clone()).unwrap();
            push(&mut chain, &e.actor, &ev);
            mine.push(chain.last().unwrap().clone());
            push(&mut chain, "x@x", &noise(10 + k));
        }
        let mut tree = crate::merkle::ChainTree::new();
        for e in &chain {
            tree.push(&e.hash).unwrap();
        }
        let head = chain.last().unwrap().clone();
        let root = tree.root();
        let mut row = base.rows[0].clone();
        row.entry_seqs = mine.iter().map(|e| e.seq).collect();
        AuditExport {
            format: REVIEW_EXPORT_FORMAT.into(),
            head_seq: head.seq,
            head_hash: head.hash.clone(),
            rows: vec![row],
            review: Some(id),
            merkle: Some(MerkleEvidence {
                tree_size: head.seq,
                root: root.clone(),
                checkpoint: Some(sign_checkpoint(sk, head.seq, &head.hash, Some(&root), t())),
                proofs: mine
                    .iter()
                    .map(|e| EntryProof {
                        seq: e.seq,
                        proof: tree.inclusion(e.seq).unwrap(),
                    })
                    .collect(),
            }),
            entries: mine,
            ..base
        }
    }

    #[test]
    fn one_review_verifies_alone_against_a_signed_root() {
        let sk = [7u8; 32];
        let pk = parse_key32(&public_key_b64(&sk)).unwrap();
        let x = review_export(&sk);
        verify_export(&x).unwrap();
        verify_export_signature(&pk, &x).unwrap();
        let other = parse_key32(&public_key_b64(&[8u8; 32])).unwrap();
        assert!(verify_export_signature(&other, &x).is_err(), "another key");
        // The row edited: caught by the entries it cites.
        let mut y = x.clone();
        y.rows[0].approvals[0].approver = "boss@x".into();
        assert!(verify_export(&y).is_err(), "approver swapped");
        // An entry edited and re-hashed on its own: its proof no longer reaches the root.
        let mut y = x.clone();
        let e = &mut y.entries[1];
        e.event["approver"] = "boss@x".into();
        e.hash = crate::audit::entry_hash(&e.prev_hash, e.seq, e.at, &e.actor, &e.event);
        y.rows[0].approvals[0].approver = "boss@x".into();
        assert!(
            matches!(verify_export(&y), Err(EvidenceError::Merkle(_))),
            "{:?}",
            verify_export(&y)
        );
        // A forged tree (root and proofs recomputed) is not the signed one.
        let mut y = x.clone();
        y.merkle.as_mut().unwrap().root = "ab".repeat(32);
        assert!(verify_export(&y).is_err(), "root swapped");
        // A proof missing, an entry not cited, or another review's row.
        let mut y = x.clone();
        y.merkle.as_mut().unwrap().proofs.pop();
        assert!(verify_export(&y).is_err(), "proof missing");
        let mut y = x.clone();
        y.rows[0].entry_seqs.pop();
        assert!(verify_export(&y).is_err(), "entry not cited");
        let mut y = x.clone();
        y.review = Some(Uuid::new_v4());
        assert!(verify_export(&y).is_err(), "another review");
        // Without a checkpoint the proofs still check, but nobody vouches for the root.
        let mut y = x;
        y.merkle.as_mut().unwrap().checkpoint = None;
        verify_export(&y).unwrap();
        assert!(verify_export_signature(&pk, &y).is_err());
    }

    #[test]
    fn a_checkpoint_log_proves_the_chain_only_grew() {
        let sk = [5u8; 32];
        let pk = parse_key32(&public_key_b64(&sk)).unwrap();
        let h = |i: u64| hex::encode(Sha256::digest(i.to_be_bytes()));
        let mut tree = crate::merkle::ChainTree::new();
        let mut log: Vec<Checkpoint> = Vec::new();
        for size in [3u64, 4, 9, 9, 17] {
            while tree.len() < size {
                tree.push(&h(tree.len())).unwrap();
            }
            let root = tree.root();
            let seq = size as i64;
            let mut cp = sign_checkpoint(&sk, seq, &h(size - 1), Some(&root), t());
            if let Some(p) = log.last() {
                cp.consistency = Some(ConsistencyLink {
                    from_seq: p.seq,
                    from_root: p.root.clone().unwrap(),
                    proof: tree.consistency(p.seq as u64).unwrap(),
                });
            }
            log.push(cp);
        }
        verify_checkpoint_log(&pk, &log).unwrap();
        // The chain rewritten after checkpoint #4, and re-signed with the key: the next
        // checkpoint cannot prove it extends #4.
        let mut forged = crate::merkle::ChainTree::new();
        for i in 0..9u64 {
            forged.push(&h(if i == 2 { 99 } else { i })).unwrap();
        }
        let mut bad = log.clone();
        let root = forged.root();
        let mut cp = sign_checkpoint(&sk, 9, &h(8), Some(&root), t());
        cp.consistency = Some(ConsistencyLink {
            from_seq: 4,
            from_root: log[1].root.clone().unwrap(),
            proof: forged.consistency(4).unwrap(),
        });
        bad[2] = cp;
        bad.truncate(3);
        assert!(verify_checkpoint_log(&pk, &bad).is_err(), "rewritten");
        // Truncated: a later checkpoint smaller than an earlier one.
        let mut bad = log.clone();
        bad.swap(2, 4);
        assert!(verify_checkpoint_log(&pk, &bad).is_err(), "shrank");
        // A link left out, or pointing elsewhere.
        let mut bad = log.clone();
        bad[3].consistency = None;
        assert!(verify_checkpoint_log(&pk, &bad).is_err(), "no link");
        let mut bad = log;
        bad[4].consistency.as_mut().unwrap().from_seq = 4;
        assert!(verify_checkpoint_log(&pk, &bad).is_err(), "wrong link");
    }

    #[test]
    fn exports_verify_and_catch_edits() {
        let x = export();
        assert!(verify_export(&x).is_ok());
        let mut y = x.clone();
        y.rows[0].command = Some("DELETE FROM t WHERE 1=0".into());
        assert!(verify_export(&y).is_err(), "command swapped");
        let mut y = x.clone();
        y.rows[0].approvals[0].approver = "boss@x".into();
        assert!(verify_export(&y).is_err(), "approver swapped");
        let mut y = x.clone();
        y.entries.remove(1);
        assert!(verify_export(&y).is_err(), "entry removed");
        let mut y = x.clone();
        y.rows[0].exit_code = Some(1);
        assert!(verify_export(&y).is_err(), "result edited");
        let mut y = x.clone();
        y.head_hash = "f".repeat(64);
        assert!(verify_export(&y).is_err(), "head");
        // completeness: a review the segment records must have its row
        let mut y = x.clone();
        y.rows.clear();
        assert!(
            matches!(verify_export(&y), Err(EvidenceError::Incomplete(_))),
            "row left out"
        );
        let mut y = x.clone();
        y.connection = Some("other".into());
        assert!(
            verify_export(&y).is_err(),
            "row outside the period's connection"
        );
        y.rows.clear();
        assert!(
            verify_export(&y).is_ok(),
            "nothing of `other` in the period"
        );
        // the period: the segment must reach back to before `since`
        let mut y = x.clone();
        y.entries.remove(0);
        y.rows[0].entry_seqs.retain(|s| *s != 1);
        y.since = Some(t());
        assert!(verify_export(&y).is_err(), "segment cut inside the period");
        let mut y = x;
        y.format = EXPORT_FORMAT_V1.into();
        y.rows.clear();
        assert!(
            verify_export(&y).is_ok(),
            "format 1 is verified without completeness"
        );
    }
}
