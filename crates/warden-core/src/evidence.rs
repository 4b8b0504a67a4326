//! Audit evidence an auditor can check offline: the export format (one row per review plus the
//! contiguous chain segment that proves it) with [`verify_export`], and Ed25519-signed
//! checkpoints of the chain head with [`sign_checkpoint`] / [`verify_checkpoint`].
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
    pub entries: Vec<AuditEntry>,
}

pub const EXPORT_FORMAT: &str = "warden-audit-export/2";
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
    #[error("incomplete: {0}")]
    Incomplete(String),
    #[error("checkpoint #{seq}: {problem}")]
    Checkpoint { seq: i64, problem: String },
    #[error("invalid key: {0}")]
    Key(String),
}

fn field<'a>(e: &'a AuditEntry, k: &str) -> Option<&'a Value> {
    e.event.get(k)
}

/// Re-verifies an export offline: the chain segment is intact and contiguous up to the stated
/// head, and every row agrees with the audit entries it cites (command digest, approvers,
/// decision, execution).
pub fn verify_export(x: &AuditExport) -> Result<(), EvidenceError> {
    if x.format != EXPORT_FORMAT && x.format != EXPORT_FORMAT_V1 {
        return Err(EvidenceError::Format(x.format.clone()));
    }
    if let Some(first) = x.entries.first() {
        verify_chain(&x.entries, Some((first.seq - 1, first.prev_hash.as_str())))?;
    }
    match x.entries.last() {
        Some(last) if last.seq == x.head_seq && last.hash == x.head_hash => {}
        None if x.rows.is_empty() => {}
        _ => return Err(EvidenceError::Head(x.head_seq)),
    }
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
        if x.format == EXPORT_FORMAT && !in_period(x, requested) {
            return Err(bad(
                "its request is outside the export's period: the chain does not put it here".into(),
            ));
        }
    }
    if x.format == EXPORT_FORMAT {
        verify_complete(x)?;
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

/// A signed statement "the chain had hash H at entry N".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: i64,
    pub hash: String,
    #[serde(with = "crate::timefmt::rfc3339_ms")]
    pub at: OffsetDateTime,
    /// First 16 hex chars of SHA-256(public key).
    pub key_id: String,
    /// base64 Ed25519 signature over `warden-checkpoint:{seq}:{hash}:{at_unix}`.
    pub signature: String,
}

fn checkpoint_message(seq: i64, hash: &str, at: OffsetDateTime) -> Vec<u8> {
    format!("warden-checkpoint:{seq}:{hash}:{}", at.unix_timestamp()).into_bytes()
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

pub fn sign_checkpoint(secret: &[u8; 32], seq: i64, hash: &str, at: OffsetDateTime) -> Checkpoint {
    let key = SigningKey::from_bytes(secret);
    let at = OffsetDateTime::from_unix_timestamp(at.unix_timestamp()).unwrap_or(at);
    let sig = key.sign(&checkpoint_message(seq, hash, at));
    Checkpoint {
        seq,
        hash: hash.to_string(),
        at,
        key_id: key_id(&key.verifying_key()),
        signature: base64::engine::general_purpose::STANDARD.encode(sig.to_bytes()),
    }
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
        &checkpoint_message(cp.seq, &cp.hash, cp.at),
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
        let cp = sign_checkpoint(&sk, 5, "abc", t());
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
            entries,
        }
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
