//! Typed audit events and the SHA-256 hash chain.
//!
//! Each entry's hash is `SHA-256(prev_hash ‖ canonical_bytes(entry))`, where the canonical bytes
//! are a JSON object with recursively sorted keys. Deleting, altering or reordering any entry
//! breaks either the sequence, a link, or a recomputed hash; [`verify_chain`] names the first
//! entry at fault. The store only persists what this module computes.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use thiserror::Error;
use time::OffsetDateTime;
use uuid::Uuid;

/// The hash that precedes the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Every security-relevant event. Never parsed from log lines: built where the event happens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AuditEvent {
    ReviewRequested {
        review_id: Uuid,
        review_type: String,
        connection: String,
        rule: String,
        command_sha256: Option<String>,
        duration_sec: Option<i64>,
        reason: Option<String>,
    },
    ReviewApproved {
        review_id: Uuid,
        approver: String,
        group: String,
        forced: bool,
        auto: bool,
        reason: Option<String>,
        /// True when this approval completed the quorum (status became APPROVED).
        approved: bool,
    },
    ReviewRejected {
        review_id: Uuid,
        by: String,
        reason: String,
        withdrawn: bool,
        /// An admin outside the review's approval and force groups rejected it (an admin
        /// action, so nothing stays stuck). Absent from events written before it existed.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        by_admin: bool,
    },
    ReviewExpired {
        review_id: Uuid,
    },
    ReviewRevoked {
        review_id: Uuid,
        by: String,
        reason: String,
    },
    ReviewExecuted {
        review_id: Uuid,
        session_id: Uuid,
        exit_code: i32,
        output_sha256: String,
        duration_ms: i64,
    },
    WindowEnded {
        review_id: Uuid,
    },
    AccessDenied {
        connection: String,
        reason: String,
    },
    SessionStarted {
        session_id: Uuid,
        session_kind: String,
        connection: String,
        review_id: Option<Uuid>,
        /// SHA-256 of the command the session runs (exec/web sessions; absent in entries
        /// written before it was recorded, and for proxied sessions, whose statements are in
        /// [`AuditEvent::Statements`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        command_sha256: Option<String>,
    },
    SessionEnded {
        session_id: Uuid,
        exit_code: Option<i32>,
        output_sha256: Option<String>,
    },
    /// One statement of a proxied session, as written before statements were grouped into
    /// [`AuditEvent::Statements`]. Kept so chains written then still read as typed events.
    Statement {
        session_id: Uuid,
        statement: String,
        review_id: Option<Uuid>,
        tag: Option<String>,
    },
    /// Consecutive statements of one proxied session run under the same review (or under none),
    /// in the order they ran. The proxy's audit writer appends one such entry per session per
    /// batch, so the chain commits to every statement's text, time and result without one
    /// entry (and one hash, one row) per statement.
    Statements {
        session_id: Uuid,
        connection: String,
        review_id: Option<Uuid>,
        statements: Vec<StatementRun>,
    },
    LoginSucceeded {
        via: String,
    },
    LoginFailed {
        email: String,
        via: String,
        reason: String,
    },
    TokenCreated {
        token_id: Uuid,
        user: String,
        expires_at: Option<String>,
    },
    TokenRevoked {
        token_id: Uuid,
        user: String,
    },
    /// Any admin change: users, tokens, connections, rules, webhooks. Secrets never appear here.
    AdminChange {
        entity: String,
        action: String,
        name: String,
        before: Option<Value>,
        after: Option<Value>,
    },
}

/// One statement inside [`AuditEvent::Statements`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementRun {
    /// When the proxy read it, unix milliseconds.
    pub at_ms: i64,
    pub statement: String,
    /// Command tag from the upstream (`SELECT 3`, `UPDATE 1`) or the error's SQLSTATE.
    pub tag: Option<String>,
}

impl AuditEvent {
    pub fn kind(&self) -> String {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_string(),
            _ => "unknown".into(),
        }
    }
    pub fn review_id(&self) -> Option<Uuid> {
        match self {
            Self::ReviewRequested { review_id, .. }
            | Self::ReviewApproved { review_id, .. }
            | Self::ReviewRejected { review_id, .. }
            | Self::ReviewExpired { review_id }
            | Self::ReviewRevoked { review_id, .. }
            | Self::ReviewExecuted { review_id, .. }
            | Self::WindowEnded { review_id } => Some(*review_id),
            Self::SessionStarted { review_id, .. }
            | Self::Statement { review_id, .. }
            | Self::Statements { review_id, .. } => *review_id,
            _ => None,
        }
    }
    /// The session whose statements this event records (`None` for every other event): stored
    /// beside the entry so a session's statements are one indexed lookup, and so readers that
    /// care only about reviews and sessions (the notifier) can skip statement entries unread.
    pub fn statements_of(&self) -> Option<Uuid> {
        match self {
            Self::Statements { session_id, .. } => Some(*session_id),
            _ => None,
        }
    }
}

/// One persisted entry of the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: i64,
    #[serde(with = "crate::timefmt::rfc3339_ms")]
    pub at: OffsetDateTime,
    pub actor: String,
    /// The event as JSON (an [`AuditEvent`] when written by this version).
    pub event: Value,
    pub prev_hash: String,
    pub hash: String,
}

/// Canonical JSON: keys sorted at every level, no whitespace. Independent of serde_json's map
/// ordering feature, so a verifier built elsewhere gets the same bytes.
pub fn canonical_json(v: &Value) -> String {
    let mut out = Vec::new();
    write_canonical(v, &mut out);
    // Only serde_json's own output and ASCII punctuation were written: valid UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

fn write_canonical(v: &Value, out: &mut Vec<u8>) {
    // Writing a string or number to a Vec cannot fail; its escaping is serde_json's.
    fn scalar<T: Serialize + ?Sized>(x: &T, out: &mut Vec<u8>) {
        let _ = serde_json::to_writer(&mut *out, x);
    }
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_unstable();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                scalar(k.as_str(), out);
                out.push(b':');
                write_canonical(&m[k], out);
            }
            out.push(b'}');
        }
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(x, out);
            }
            out.push(b']');
        }
        other => scalar(other, out),
    }
}

/// The bytes hashed for an entry: seq, time (unix ms), actor and event.
///
/// Exactly `canonical_json` of `{"seq", "at_ms", "actor", "event"}`, written without building
/// that object (no copy of the event): its keys in sorted order are actor, at_ms, event, seq.
pub fn canonical_bytes(seq: i64, at: OffsetDateTime, actor: &str, event: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_entry(seq, at, actor, &canonical_json(event), &mut out);
    out
}

fn write_entry(
    seq: i64,
    at: OffsetDateTime,
    actor: &str,
    canonical_event: &str,
    out: &mut Vec<u8>,
) {
    let (head, tail) = entry_frame(seq, at, actor);
    out.extend_from_slice(&head);
    out.extend_from_slice(canonical_event.as_bytes());
    out.extend_from_slice(tail.as_bytes());
}

/// What surrounds the event in an entry's canonical bytes: `{"actor":…,"at_ms":…,"event":` and
/// `,"seq":…}`.
fn entry_frame(seq: i64, at: OffsetDateTime, actor: &str) -> (Vec<u8>, String) {
    let at_ms = (at.unix_timestamp_nanos() / 1_000_000) as i64;
    let mut head = Vec::with_capacity(actor.len() + 48);
    head.extend_from_slice(b"{\"actor\":");
    let _ = serde_json::to_writer(&mut head, actor);
    head.extend_from_slice(format!(",\"at_ms\":{at_ms},\"event\":").as_bytes());
    (head, format!(",\"seq\":{seq}}}"))
}

/// `SHA-256(prev_hash ‖ canonical bytes)`, hex.
pub fn entry_hash(
    prev_hash: &str,
    seq: i64,
    at: OffsetDateTime,
    actor: &str,
    event: &Value,
) -> String {
    hash_canonical(prev_hash, seq, at, actor, &canonical_json(event))
}

fn hash_canonical(
    prev_hash: &str,
    seq: i64,
    at: OffsetDateTime,
    actor: &str,
    canonical_event: &str,
) -> String {
    // The same bytes as `write_entry`, fed to the hash in pieces: the event (up to a megabyte
    // for a statement batch) is not copied.
    let (head, tail) = entry_frame(seq, at, actor);
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(&head);
    h.update(canonical_event.as_bytes());
    h.update(tail.as_bytes());
    hex::encode(h.finalize())
}

/// The canonical JSON of a typed event: `canonical_json(&to_value(event))`, byte for byte.
///
/// [`AuditEvent::Statements`] (the proxy's statement batches: by far the most frequent and the
/// largest entries) is written directly, keys in sorted order, without building a
/// `serde_json::Value` tree of every statement first; every other event takes the generic path.
/// A test checks both paths give the same bytes.
pub fn event_canonical(event: &AuditEvent) -> String {
    let AuditEvent::Statements {
        session_id,
        connection,
        review_id,
        statements,
    } = event
    else {
        return canonical_json(&serde_json::to_value(event).unwrap_or(Value::Null));
    };
    // Writing strings, numbers and options to a Vec cannot fail; escaping is serde_json's.
    fn json<T: Serialize + ?Sized>(x: &T, out: &mut Vec<u8>) {
        let _ = serde_json::to_writer(&mut *out, x);
    }
    let text_len: usize = statements.iter().map(|r| r.statement.len() + 48).sum();
    let mut out = Vec::with_capacity(text_len + connection.len() + 160);
    out.extend_from_slice(b"{\"connection\":");
    json(connection.as_str(), &mut out);
    out.extend_from_slice(b",\"kind\":\"statements\",\"review_id\":");
    json(review_id, &mut out);
    out.extend_from_slice(b",\"session_id\":");
    json(session_id, &mut out);
    out.extend_from_slice(b",\"statements\":[");
    for (i, r) in statements.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"at_ms\":");
        json(&r.at_ms, &mut out);
        out.extend_from_slice(b",\"statement\":");
        json(r.statement.as_str(), &mut out);
        out.extend_from_slice(b",\"tag\":");
        json(&r.tag, &mut out);
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    // Only serde_json's own output and ASCII punctuation were written: valid UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

/// What a store persists for a new entry: [`next_entry`] without the event parsed back into a
/// `serde_json::Value` (a store keeps the text, which is exactly what was hashed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedText {
    pub seq: i64,
    /// Truncated to milliseconds, as hashed.
    pub at: OffsetDateTime,
    pub prev_hash: String,
    pub hash: String,
    /// The event's canonical JSON.
    pub event: String,
}

/// Chains `event` after `prev` (`None` = the first entry) and returns what to store.
pub fn seal_text(
    prev: Option<(i64, &str)>,
    at: OffsetDateTime,
    actor: &str,
    event: &AuditEvent,
) -> SealedText {
    let (seq, prev_hash) = match prev {
        Some((s, h)) => (s + 1, h.to_string()),
        None => (1, GENESIS_HASH.to_string()),
    };
    let at = truncate_ms(at);
    let text = event_canonical(event);
    let hash = hash_canonical(&prev_hash, seq, at, actor, &text);
    SealedText {
        seq,
        at,
        prev_hash,
        hash,
        event: text,
    }
}

/// Builds the next entry after `prev` (`None` = the first entry), with the event as JSON (for
/// verifiers and tests; a store keeps [`seal_text`]'s text instead). Time is truncated to
/// milliseconds so what is stored is exactly what was hashed.
pub fn next_entry(
    prev: Option<(i64, &str)>,
    at: OffsetDateTime,
    actor: &str,
    event: &AuditEvent,
) -> AuditEntry {
    let sealed = seal_text(prev, at, actor, event);
    AuditEntry {
        seq: sealed.seq,
        at: sealed.at,
        actor: actor.to_string(),
        event: serde_json::to_value(event).unwrap_or(Value::Null),
        prev_hash: sealed.prev_hash,
        hash: sealed.hash,
    }
}

pub fn truncate_ms(at: OffsetDateTime) -> OffsetDateTime {
    let ms = at.unix_timestamp_nanos() / 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000).unwrap_or(at)
}

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ChainError {
    #[error(
        "entry {seq}: sequence gap or reordering (expected seq {expected}) — an entry was deleted or moved"
    )]
    Sequence { seq: i64, expected: i64 },
    #[error("entry {seq}: link broken (prev_hash does not match the hash of entry {})", seq - 1)]
    Link { seq: i64 },
    #[error("entry {seq}: content altered (hash mismatch)")]
    Content { seq: i64 },
    #[error(
        "entry {seq}: dated before the entry it follows (`at` never decreases along the chain)"
    )]
    Time { seq: i64 },
}

impl ChainError {
    pub fn seq(&self) -> i64 {
        match self {
            Self::Sequence { seq, .. }
            | Self::Link { seq }
            | Self::Content { seq }
            | Self::Time { seq } => *seq,
        }
    }
}

/// Walks entries in order, starting after `start` (`None` = from genesis), returning the head
/// hash or the first entry at fault.
pub fn verify_chain<'a>(
    entries: impl IntoIterator<Item = &'a AuditEntry>,
    start: Option<(i64, &str)>,
) -> Result<Option<(i64, String)>, ChainError> {
    let (mut expected, mut prev) = match start {
        Some((s, h)) => (s + 1, h.to_string()),
        None => (1, GENESIS_HASH.to_string()),
    };
    let mut head = start.map(|(s, h)| (s, h.to_string()));
    let mut last_at: Option<OffsetDateTime> = None;
    for e in entries {
        if e.seq != expected {
            return Err(ChainError::Sequence {
                seq: e.seq,
                expected,
            });
        }
        if e.prev_hash != prev {
            return Err(ChainError::Link { seq: e.seq });
        }
        if entry_hash(&e.prev_hash, e.seq, e.at, &e.actor, &e.event) != e.hash {
            return Err(ChainError::Content { seq: e.seq });
        }
        if last_at.is_some_and(|t| e.at < t) {
            return Err(ChainError::Time { seq: e.seq });
        }
        last_at = Some(e.at);
        prev = e.hash.clone();
        expected += 1;
        head = Some((e.seq, e.hash.clone()));
    }
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: usize) -> Vec<AuditEntry> {
        let t = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let mut out: Vec<AuditEntry> = Vec::new();
        for i in 0..n {
            let ev = AuditEvent::LoginSucceeded {
                via: format!("api{i}"),
            };
            let prev = out.last().map(|e| (e.seq, e.hash.as_str()));
            let e = next_entry(prev, t, "a@x", &ev);
            out.push(e);
        }
        out
    }

    #[test]
    fn intact_chain_verifies() {
        let c = chain(5);
        assert_eq!(verify_chain(&c, None).unwrap().unwrap().0, 5);
        // verifying a suffix from a trusted checkpoint
        assert!(verify_chain(&c[2..], Some((2, &c[1].hash))).is_ok());
    }

    #[test]
    fn altered_deleted_and_reordered_entries_are_named() {
        let mut c = chain(5);
        c[2].event = serde_json::json!({"kind": "login_succeeded", "via": "evil"});
        assert_eq!(
            verify_chain(&c, None).unwrap_err(),
            ChainError::Content { seq: 3 }
        );

        let mut c = chain(5);
        c.remove(2);
        assert_eq!(verify_chain(&c, None).unwrap_err().seq(), 4);

        let mut c = chain(5);
        c.swap(1, 2);
        assert_eq!(verify_chain(&c, None).unwrap_err().seq(), 3);

        // renumbering after a deletion still breaks the link
        let mut c = chain(5);
        c.remove(2);
        for (i, e) in c.iter_mut().enumerate() {
            e.seq = i as i64 + 1;
        }
        assert!(matches!(
            verify_chain(&c, None).unwrap_err(),
            ChainError::Link { seq: 3 } | ChainError::Content { seq: 3 }
        ));
    }

    #[test]
    fn time_never_decreases() {
        let t = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let a = next_entry(
            None,
            t,
            "a@x",
            &AuditEvent::LoginSucceeded { via: "a".into() },
        );
        let b = next_entry(
            Some((a.seq, &a.hash)),
            t - time::Duration::milliseconds(1),
            "a@x",
            &AuditEvent::LoginSucceeded { via: "b".into() },
        );
        assert_eq!(
            verify_chain([&a, &b], None).unwrap_err(),
            ChainError::Time { seq: 2 }
        );
        let same = next_entry(
            Some((a.seq, &a.hash)),
            t,
            "a@x",
            &AuditEvent::LoginSucceeded { via: "c".into() },
        );
        assert!(verify_chain([&a, &same], None).is_ok());
    }

    #[test]
    fn canonical_bytes_are_the_canonical_json_of_the_whole_entry() {
        // The stored chains were hashed over canonical_json of this object: the fast path must
        // give the same bytes, or old entries would stop verifying.
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_000_000).unwrap();
        let event = serde_json::json!({"type": "statement", "statement": "SELECT '\"é\n'", "z": [1, {"b": null, "a": 2.5}], "review_id": null});
        for actor in ["admin@warden.local", "we\"ird\\actor\u{1}"] {
            let whole = serde_json::json!({ "seq": 42, "at_ms": 1_700_000_000_123i64, "actor": actor, "event": event });
            assert_eq!(
                String::from_utf8(canonical_bytes(42, at, actor, &event)).unwrap(),
                canonical_json(&whole)
            );
        }
    }

    #[test]
    fn sealed_text_is_what_was_hashed_and_parses_back_to_the_event() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
        let ev = AuditEvent::Statements {
            session_id: Uuid::nil(),
            connection: "prod".into(),
            review_id: None,
            statements: vec![
                StatementRun {
                    at_ms: 1,
                    statement: "SELECT '\"é\n'".into(),
                    tag: Some("SELECT 1".into()),
                },
                StatementRun {
                    at_ms: 2,
                    statement: "BOGUS".into(),
                    tag: Some("42601".into()),
                },
            ],
        };
        let entry = next_entry(Some((6, "ab")), at, "a@x", &ev);
        let text = seal_text(Some((6, "ab")), at, "a@x", &ev).event;
        assert_eq!(entry.seq, 7);
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed, entry.event);
        assert_eq!(canonical_json(&parsed), text);
        assert_eq!(serde_json::from_value::<AuditEvent>(parsed).unwrap(), ev);
        assert_eq!(
            entry.hash,
            entry_hash("ab", 7, entry.at, "a@x", &entry.event)
        );
        assert!(verify_chain([&entry], Some((6, "ab"))).is_ok());
        assert_eq!(ev.statements_of(), Some(Uuid::nil()));
        assert_eq!(
            AuditEvent::LoginSucceeded { via: "x".into() }.statements_of(),
            None
        );
    }

    #[test]
    fn statement_batches_are_written_exactly_as_the_generic_canonical_form() {
        let generic = |ev: &AuditEvent| canonical_json(&serde_json::to_value(ev).unwrap());
        let run = |at_ms, statement: &str, tag: Option<&str>| StatementRun {
            at_ms,
            statement: statement.into(),
            tag: tag.map(Into::into),
        };
        let cases = [
            AuditEvent::Statements {
                session_id: Uuid::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0),
                connection: "prod \"eu\" é\t".into(),
                review_id: Some(Uuid::from_u128(7)),
                statements: vec![
                    run(-1, "SELECT '\u{0}\u{1f}\\ \u{2028} 💥'", None),
                    run(i64::MAX, "", Some("ERROR 42601")),
                    run(0, "UPDATE t SET a = 1", Some("UPDATE 3, SELECT 1")),
                ],
            },
            AuditEvent::Statements {
                session_id: Uuid::nil(),
                connection: String::new(),
                review_id: None,
                statements: Vec::new(),
            },
        ];
        for ev in &cases {
            assert_eq!(event_canonical(ev), generic(ev));
        }
        // Every other event takes the generic path.
        let other = AuditEvent::LoginSucceeded { via: "pg".into() };
        assert_eq!(event_canonical(&other), generic(&other));
        // And a store's sealed text hashes to what a verifier recomputes from the parsed event.
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let sealed = seal_text(None, at, "a@x", &cases[0]);
        let parsed: Value = serde_json::from_str(&sealed.event).unwrap();
        assert_eq!(sealed.hash, entry_hash(GENESIS_HASH, 1, at, "a@x", &parsed));
        assert_eq!(sealed.prev_hash, GENESIS_HASH);
        // The hash is SHA-256 over prev_hash and the entry's canonical bytes, fed in pieces.
        let login = AuditEvent::LoginSucceeded { via: "pg".into() };
        let sealed = seal_text(Some((41, "ab")), at, "a\"@x", &login);
        let bytes = canonical_bytes(42, at, "a\"@x", &serde_json::to_value(&login).unwrap());
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"actor":"a\"@x","at_ms":1700000000000,"event":{"kind":"login_succeeded","via":"pg"},"seq":42}"#
        );
        let mut h = Sha256::new();
        h.update(b"ab");
        h.update(&bytes);
        assert_eq!(sealed.hash, hex::encode(h.finalize()));
    }

    #[test]
    fn canonical_json_escapes_like_serde_json() {
        let v = serde_json::json!({"s": "a\"é\n\u{1}", "n": -1.5, "t": true, "z": null});
        assert_eq!(
            canonical_json(&v),
            r#"{"n":-1.5,"s":"a\"é\n\u0001","t":true,"z":null}"#
        );
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let v = serde_json::json!({"b": 1, "a": {"d": [1, {"z": 1, "y": 2}], "c": "x"}});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":"x","d":[1,{"y":2,"z":1}]},"b":1}"#
        );
    }
}

/// What the chain says about the rows the store keeps beside it (sessions, reviews), gathered
/// while the chain is walked, so that an edit to a row is named even though rows are not
/// hashed themselves: a row must be recorded by the chain, and its command, exit code and
/// output must hash to what the chain recorded.
#[derive(Debug, Default)]
pub struct RowFacts {
    sessions: std::collections::HashMap<Uuid, SessionFacts>,
    reviews: std::collections::HashMap<Uuid, (i64, Option<String>)>,
    decisions: std::collections::HashMap<Uuid, ReviewDecisions>,
}

/// The decision events of one review, as the chain recorded them.
#[derive(Debug, Default)]
struct ReviewDecisions {
    /// Approvers, one per approval event, in order.
    approvers: Vec<String>,
    /// Entry and who, of the rejection (a withdrawal is a rejection by the requester).
    rejected: Option<(i64, String)>,
    revoked: Option<i64>,
    executed: Option<i64>,
}

#[derive(Debug, Default)]
struct SessionFacts {
    started: i64,
    command_sha256: Option<String>,
    /// Entry, exit code, output SHA-256.
    ended: Option<(i64, Option<i32>, Option<String>)>,
}

fn uuid_at(event: &Value, key: &str) -> Option<Uuid> {
    event.get(key)?.as_str()?.parse().ok()
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

impl RowFacts {
    /// Notes what one (verified) entry records.
    pub fn observe(&mut self, e: &AuditEntry) {
        let ev = &e.event;
        let str_at = |k: &str| ev.get(k).and_then(Value::as_str).map(str::to_string);
        match ev.get("kind").and_then(Value::as_str) {
            Some("session_started") => {
                if let Some(id) = uuid_at(ev, "session_id") {
                    let f = self.sessions.entry(id).or_default();
                    f.started = e.seq;
                    f.command_sha256 = str_at("command_sha256");
                }
            }
            Some("session_ended") => {
                if let Some(id) = uuid_at(ev, "session_id") {
                    let exit = ev
                        .get("exit_code")
                        .and_then(Value::as_i64)
                        .and_then(|c| i32::try_from(c).ok());
                    self.sessions.entry(id).or_default().ended =
                        Some((e.seq, exit, str_at("output_sha256")));
                }
            }
            Some("review_requested") => {
                if let Some(id) = uuid_at(ev, "review_id") {
                    self.reviews.insert(id, (e.seq, str_at("command_sha256")));
                }
            }
            Some(
                kind @ ("review_approved" | "review_rejected" | "review_revoked"
                | "review_executed"),
            ) => {
                if let Some(id) = uuid_at(ev, "review_id") {
                    let d = self.decisions.entry(id).or_default();
                    match kind {
                        "review_approved" => {
                            d.approvers.push(str_at("approver").unwrap_or_default())
                        }
                        "review_rejected" => {
                            d.rejected = Some((e.seq, str_at("by").unwrap_or_default()))
                        }
                        "review_revoked" => d.revoked = Some(e.seq),
                        _ => d.executed = Some(e.seq),
                    }
                }
            }
            _ => {}
        }
    }

    /// Why a stored session row disagrees with the chain (`None`: it agrees). Output pruned by
    /// retention (`None`) is not compared.
    pub fn check_session(&self, s: &crate::Session) -> Option<String> {
        let id = s.id;
        let Some(f) = self.sessions.get(&id).filter(|f| f.started > 0) else {
            return Some(format!(
                "session {id} is in the store but no entry of the chain records it"
            ));
        };
        if let (Some(want), Some(cmd)) = (&f.command_sha256, &s.command)
            && sha256_hex(cmd) != *want
        {
            return Some(format!(
                "session {id}: its stored command is not the one entry {} recorded",
                f.started
            ));
        }
        if let Some((seq, exit, out_sha)) = &f.ended {
            if s.exit_code != *exit {
                return Some(format!(
                    "session {id}: its stored exit code {:?} is not the {exit:?} entry {seq} recorded",
                    s.exit_code
                ));
            }
            if let (Some(want), Some(out)) = (out_sha, &s.output)
                && sha256_hex(out) != *want
            {
                return Some(format!(
                    "session {id}: its stored output is not the one entry {seq} recorded"
                ));
            }
            if s.output_sha256.is_some() && s.output_sha256 != *out_sha {
                return Some(format!(
                    "session {id}: its stored output digest is not the one entry {seq} recorded"
                ));
            }
        }
        None
    }

    /// Why a stored review row disagrees with the chain (`None`: it agrees).
    pub fn check_review(&self, r: &crate::Review) -> Option<String> {
        let id = r.id;
        let Some((seq, want)) = self.reviews.get(&id) else {
            return Some(format!(
                "review {id} is in the store but no entry of the chain requested it"
            ));
        };
        let have = r.command.as_deref().map(sha256_hex);
        if want.is_some() && (have != *want || r.command_sha256 != *want) {
            return Some(format!(
                "review {id}: its stored command is not the one entry {seq} recorded"
            ));
        }
        self.check_decisions(r)
    }

    /// The row's status and approvals say what its decision events say: every stored approval
    /// was recorded (and none recorded is gone), REJECTED, REVOKED and EXECUTED rows have their
    /// event (and no other row does), a rejection names who the chain says rejected.
    fn check_decisions(&self, r: &crate::Review) -> Option<String> {
        use crate::ReviewStatus as S;
        let id = r.id;
        let none = ReviewDecisions::default();
        let d = self.decisions.get(&id).unwrap_or(&none);
        let mut stored: Vec<&str> = r.approvals.iter().map(|a| a.approver.as_str()).collect();
        let mut recorded: Vec<&str> = d.approvers.iter().map(String::as_str).collect();
        stored.sort_unstable();
        recorded.sort_unstable();
        if stored != recorded {
            return Some(format!(
                "review {id}: its stored approvals ({}) are not the ones the chain recorded ({})",
                stored.join(", "),
                recorded.join(", ")
            ));
        }
        let status = |what: &str, entry: Option<i64>| match entry {
            Some(seq) => format!(
                "review {id}: stored as {} but entry {seq} recorded it {what}",
                r.status.as_str()
            ),
            None => format!(
                "review {id}: stored as {} but the chain never recorded it {what}",
                r.status.as_str()
            ),
        };
        let rejected = d.rejected.as_ref().map(|(seq, _)| *seq);
        if (r.status == S::Rejected) != rejected.is_some() {
            return Some(status("rejected", rejected));
        }
        if let (Some((seq, by)), Some(stored_by)) = (&d.rejected, &r.decided_by)
            && by != stored_by
        {
            return Some(format!(
                "review {id}: stored as rejected by {stored_by} but entry {seq} recorded {by}"
            ));
        }
        if (r.status == S::Revoked) != d.revoked.is_some() {
            return Some(status("revoked", d.revoked));
        }
        if r.status == S::Executed && d.executed.is_none() {
            return Some(status("executed", None));
        }
        None
    }

    /// Sessions and reviews the chain records whose rows are gone, given the ids present.
    pub fn missing(
        &self,
        sessions: &std::collections::HashSet<Uuid>,
        reviews: &std::collections::HashSet<Uuid>,
    ) -> Option<String> {
        if let Some((id, f)) = self
            .sessions
            .iter()
            .filter(|(id, f)| f.started > 0 && !sessions.contains(id))
            .min_by_key(|(_, f)| f.started)
        {
            return Some(format!(
                "session {id}, recorded at entry {}, is missing from the store",
                f.started
            ));
        }
        if let Some((id, (seq, _))) = self
            .reviews
            .iter()
            .filter(|(id, _)| !reviews.contains(id))
            .min_by_key(|(_, (seq, _))| *seq)
        {
            return Some(format!(
                "review {id}, requested at entry {seq}, is missing from the store"
            ));
        }
        None
    }
}
