//! The SIEM line of one audit entry: the entry mapped onto an OCSF 1.1.0 event, with the
//! original entry carried verbatim under `unmapped.warden` so the line alone re-verifies against
//! the hash chain. [`entry_line`] is the only producer, [`entry_of_line`] rebuilds the entry;
//! `docs/siem.md` documents every field and why each event kind maps to its class.
//!
//! Classes used (all documented in OCSF 1.1.0): Account Change (3001), Authentication (3002),
//! Entity Management (3004), User Access Management (3005), API Activity (6003) and Datastore
//! Activity (6005).
//!
//! # What this module must never do
//! - I/O or a clock: an entry in, a JSON value out. `time` is the entry's own.
//! - Drop, rename or rewrite a field of the original entry: a verifier recomputes the hash from
//!   `unmapped.warden` (`seq`, `at`, `actor`, `event`, `prev_hash`, `hash`).
//! - Invent a value: an OCSF attribute is written only when the event (or the entry) carries it,
//!   never as a placeholder or a `null`. Attributes OCSF requires that the chain does not record
//!   (a source IP, the requester of an approval) are left out, not guessed.
//! - Refuse an entry: the mapping is total. An event this version cannot read (a newer kind, an
//!   old row) still makes a line, API Activity / Other (or Unknown), its event kept verbatim.

use serde::Deserialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::audit::{AuditEntry, AuditEvent};

/// The stream's own schema name, in `unmapped.warden.schema` (bumped if a field changes meaning).
pub const SCHEMA: &str = "warden-audit-ocsf/1";
/// The OCSF version the classes and enums below follow (`metadata.version`).
pub const OCSF_VERSION: &str = "1.1.0";

/// One OCSF class/activity choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Class {
    pub class_uid: u32,
    pub class_name: &'static str,
    pub activity_id: u32,
    /// The activity's OCSF caption (`Other` for 99, `Unknown` for 0).
    pub activity_name: &'static str,
}

impl Class {
    pub fn category_uid(&self) -> u32 {
        self.class_uid / 1000
    }
    pub fn category_name(&self) -> &'static str {
        match self.category_uid() {
            3 => "Identity & Access Management",
            6 => "Application Activity",
            _ => "Uncategorized",
        }
    }
    pub fn type_uid(&self) -> u32 {
        self.class_uid * 100 + self.activity_id
    }
}

const fn class(
    class_uid: u32,
    class_name: &'static str,
    activity_id: u32,
    activity_name: &'static str,
) -> Class {
    Class {
        class_uid,
        class_name,
        activity_id,
        activity_name,
    }
}

const ACCOUNT_CREATE: Class = class(3001, "Account Change", 1, "Create");
const ACCOUNT_DELETE: Class = class(3001, "Account Change", 6, "Delete");
const ACCOUNT_OTHER: Class = class(3001, "Account Change", 99, "Other");
const LOGON: Class = class(3002, "Authentication", 1, "Logon");
const ENTITY_CREATE: Class = class(3004, "Entity Management", 1, "Create");
const ENTITY_UPDATE: Class = class(3004, "Entity Management", 3, "Update");
const ENTITY_DELETE: Class = class(3004, "Entity Management", 4, "Delete");
const ENTITY_OTHER: Class = class(3004, "Entity Management", 99, "Other");
const ASSIGN_PRIVILEGES: Class = class(3005, "User Access Management", 1, "Assign Privileges");
const REVOKE_PRIVILEGES: Class = class(3005, "User Access Management", 2, "Revoke Privileges");
const API_CREATE: Class = class(6003, "API Activity", 1, "Create");
const API_UPDATE: Class = class(6003, "API Activity", 3, "Update");
const API_OTHER: Class = class(6003, "API Activity", 99, "Other");
const API_UNKNOWN: Class = class(6003, "API Activity", 0, "Unknown");
const DATASTORE_QUERY: Class = class(6005, "Datastore Activity", 4, "Query");

/// OCSF `status_id`.
pub const STATUS_UNKNOWN: u32 = 0;
pub const STATUS_SUCCESS: u32 = 1;
pub const STATUS_FAILURE: u32 = 2;

/// OCSF `severity_id` values used here.
pub const SEVERITY_UNKNOWN: u32 = 0;
pub const SEVERITY_INFORMATIONAL: u32 = 1;
pub const SEVERITY_LOW: u32 = 2;
pub const SEVERITY_MEDIUM: u32 = 3;

fn status_name(id: u32) -> &'static str {
    match id {
        STATUS_SUCCESS => "Success",
        STATUS_FAILURE => "Failure",
        99 => "Other",
        _ => "Unknown",
    }
}

fn severity_name(id: u32) -> &'static str {
    match id {
        1 => "Informational",
        2 => "Low",
        3 => "Medium",
        4 => "High",
        5 => "Critical",
        6 => "Fatal",
        99 => "Other",
        _ => "Unknown",
    }
}

/// What an event says in OCSF terms, before the entry's own fields are added.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    pub class: Class,
    /// `activity_name` when the activity is Other (99): the source's own word for it (the
    /// event kind, or an admin change's action), as OCSF asks.
    pub other: Option<String>,
    pub status_id: u32,
    pub severity_id: u32,
    pub message: String,
    pub status_detail: Option<String>,
    /// `status_code`: an exit code, as the event recorded it.
    pub status_code: Option<String>,
    /// `actor.session.uid`: the session the actor ran the activity in.
    pub actor_session: Option<Uuid>,
    /// The class's own attributes (`user`, `entity`, `resources`, `database`…).
    pub attrs: Map<String, Value>,
}

impl Mapped {
    fn new(class: Class, message: String) -> Self {
        Mapped {
            class,
            other: None,
            status_id: STATUS_SUCCESS,
            severity_id: SEVERITY_INFORMATIONAL,
            message,
            status_detail: None,
            status_code: None,
            actor_session: None,
            attrs: Map::new(),
        }
    }
    fn other(mut self, name: &str) -> Self {
        self.other = Some(name.to_string());
        self
    }
    fn failed(mut self, detail: &str) -> Self {
        self.status_id = STATUS_FAILURE;
        self.status_detail = Some(detail.to_string());
        self
    }
    fn severity(mut self, severity_id: u32) -> Self {
        self.severity_id = severity_id;
        self
    }
    fn detail(mut self, detail: &str) -> Self {
        self.status_detail = Some(detail.to_string());
        self
    }
    fn attr(mut self, key: &str, value: Value) -> Self {
        self.attrs.insert(key.to_string(), value);
        self
    }
}

/// An OCSF User object for a Warden principal: `name` always, `email_addr` only when it is one
/// (`system` and `anonymous` are Warden's own actors, not addresses).
fn user(who: &str) -> Value {
    let mut u = Map::new();
    u.insert("name".into(), who.into());
    if who.contains('@') {
        u.insert("email_addr".into(), who.into());
    }
    Value::Object(u)
}

/// An OCSF Resource Details object (API Activity's `resources[]`).
fn resource(kind: &str, uid: Option<String>, name: Option<&str>) -> Value {
    let mut m = Map::new();
    m.insert("type".into(), kind.into());
    if let Some(u) = uid {
        m.insert("uid".into(), u.into());
    }
    if let Some(n) = name {
        m.insert("name".into(), n.into());
    }
    Value::Object(m)
}

fn review_res(id: &Uuid) -> Value {
    resource("review", Some(id.to_string()), None)
}
fn session_res(id: &Uuid) -> Value {
    resource("session", Some(id.to_string()), None)
}
fn connection_res(name: &str) -> Value {
    resource("connection", None, Some(name))
}

/// The privileges a user object of an admin change grants (`admin`, `auditor`, `group:<name>`),
/// in the object's order.
fn privileges_of(user: Option<&Value>) -> Vec<String> {
    let Some(u) = user else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for role in ["admin", "auditor"] {
        if u.get(role).and_then(Value::as_bool) == Some(true) {
            out.push(role.to_string());
        }
    }
    if let Some(groups) = u.get("groups").and_then(Value::as_array) {
        out.extend(
            groups
                .iter()
                .filter_map(Value::as_str)
                .map(|g| format!("group:{g}")),
        );
    }
    out
}

/// An admin change: users are accounts (Account Change), a change of their roles or groups is a
/// change of privileges (User Access Management), everything else is a managed entity.
fn admin_change(
    entity: &str,
    action: &str,
    name: &str,
    before: Option<&Value>,
    after: Option<&Value>,
) -> Mapped {
    let message = format!("{entity} {name}: {action}");
    if entity != "user" {
        let m = match action {
            "create" => Mapped::new(ENTITY_CREATE, message),
            "update" => Mapped::new(ENTITY_UPDATE, message),
            "delete" => Mapped::new(ENTITY_DELETE, message),
            other => Mapped::new(ENTITY_OTHER, message).other(other),
        };
        return m.attr("entity", json!({"name": name, "type": entity}));
    }
    let m = match action {
        "create" | "bootstrap" => Mapped::new(ACCOUNT_CREATE, message),
        "delete" => Mapped::new(ACCOUNT_DELETE, message),
        "update" => {
            let (was, now) = (privileges_of(before), privileges_of(after));
            let granted: Vec<&String> = now.iter().filter(|p| !was.contains(p)).collect();
            let revoked: Vec<&String> = was.iter().filter(|p| !now.contains(p)).collect();
            if !granted.is_empty() {
                Mapped::new(ASSIGN_PRIVILEGES, message).attr("privileges", json!(granted))
            } else if !revoked.is_empty() {
                Mapped::new(REVOKE_PRIVILEGES, message).attr("privileges", json!(revoked))
            } else {
                Mapped::new(ACCOUNT_OTHER, message).other(action)
            }
        }
        other => Mapped::new(ACCOUNT_OTHER, message).other(other),
    };
    m.attr("user", user(name))
}

/// The OCSF reading of a typed event written by `actor` (exhaustive: a new variant does not
/// compile until it is mapped here and documented in `docs/siem.md`).
pub fn map_event(ev: &AuditEvent, actor: &str) -> Mapped {
    match ev {
        AuditEvent::ReviewRequested {
            review_id,
            review_type,
            connection,
            rule,
            ..
        } => Mapped::new(
            API_CREATE,
            format!("{review_type} access requested on {connection} (rule {rule})"),
        )
        .attr(
            "resources",
            json!([review_res(review_id), connection_res(connection)]),
        ),
        AuditEvent::ReviewApproved {
            review_id,
            approver,
            group,
            forced,
            auto,
            approved,
            ..
        } => {
            let how = if *forced {
                "force-approved"
            } else if *auto {
                "auto-approved"
            } else {
                "approved"
            };
            let granted = if *approved { ", access granted" } else { "" };
            let message = format!("{how} by {approver} ({group}){granted}");
            let m = if *approved {
                Mapped::new(ASSIGN_PRIVILEGES, message)
            } else {
                Mapped::new(API_UPDATE, message).attr("resources", json!([review_res(review_id)]))
            };
            m.severity(if *forced {
                SEVERITY_MEDIUM
            } else {
                SEVERITY_INFORMATIONAL
            })
        }
        AuditEvent::ReviewRejected {
            review_id,
            by,
            reason,
            withdrawn,
            by_admin,
        } => {
            if *withdrawn {
                Mapped::new(API_UPDATE, format!("request withdrawn by {by}"))
                    .attr("resources", json!([review_res(review_id)]))
                    .detail(reason)
            } else {
                let by = if *by_admin {
                    format!("{by} (admin override)")
                } else {
                    by.clone()
                };
                Mapped::new(ASSIGN_PRIVILEGES, format!("access refused by {by}"))
                    .failed(reason)
                    .severity(SEVERITY_LOW)
            }
        }
        AuditEvent::ReviewExpired { .. } => Mapped::new(
            ASSIGN_PRIVILEGES,
            "request expired without a decision".into(),
        )
        .failed("no decision before the timeout"),
        AuditEvent::ReviewRevoked { by, reason, .. } => {
            Mapped::new(REVOKE_PRIVILEGES, format!("access window revoked by {by}"))
                .detail(reason)
                .severity(SEVERITY_LOW)
        }
        AuditEvent::ReviewExecuted {
            review_id,
            session_id,
            exit_code,
            duration_ms,
            ..
        } => {
            let m = Mapped::new(
                API_OTHER,
                format!("approved command ran, exit code {exit_code}"),
            )
            .other("review_executed")
            .attr(
                "resources",
                json!([review_res(review_id), session_res(session_id)]),
            )
            .attr("duration", json!(duration_ms));
            let m = Mapped {
                status_code: Some(exit_code.to_string()),
                ..m
            };
            if *exit_code == 0 {
                m
            } else {
                m.failed(&format!("exit code {exit_code}"))
            }
        }
        AuditEvent::WindowEnded { .. } => {
            Mapped::new(REVOKE_PRIVILEGES, "access window ended".into())
        }
        AuditEvent::AccessDenied { connection, reason } => {
            Mapped::new(ASSIGN_PRIVILEGES, format!("access to {connection} denied"))
                .failed(reason)
                .severity(SEVERITY_LOW)
                .attr("user", user(actor))
                .attr("resource", connection_res(connection))
        }
        AuditEvent::SessionStarted {
            session_id,
            session_kind,
            connection,
            review_id,
            ..
        } => Mapped::new(
            API_CREATE,
            format!("{session_kind} session started on {connection}"),
        )
        .attr(
            "resources",
            Value::Array(
                [session_res(session_id), connection_res(connection)]
                    .into_iter()
                    .chain(review_id.as_ref().map(review_res))
                    .collect(),
            ),
        ),
        AuditEvent::SessionEnded {
            session_id,
            exit_code,
            ..
        } => {
            let m = Mapped::new(
                API_UPDATE,
                match exit_code {
                    Some(c) => format!("session ended, exit code {c}"),
                    None => "session ended".into(),
                },
            )
            .attr("resources", json!([session_res(session_id)]));
            match exit_code {
                Some(c) => {
                    let m = Mapped {
                        status_code: Some(c.to_string()),
                        ..m
                    };
                    if *c == 0 {
                        m
                    } else {
                        m.failed(&format!("exit code {c}"))
                    }
                }
                None => m,
            }
        }
        AuditEvent::Statement { session_id, .. } => Mapped {
            actor_session: Some(*session_id),
            ..Mapped::new(DATASTORE_QUERY, "1 statement ran".into()).attr("count", json!(1))
        },
        AuditEvent::Statements {
            session_id,
            connection,
            statements,
            ..
        } => {
            let mut m = Mapped::new(
                DATASTORE_QUERY,
                format!("{} statement(s) ran on {connection}", statements.len()),
            )
            .attr("database", json!({"name": connection}))
            .attr("type_id", json!(1))
            .attr("type", json!("Database"))
            .attr("count", json!(statements.len()));
            if let (Some(first), Some(last)) = (
                statements.iter().map(|s| s.at_ms).min(),
                statements.iter().map(|s| s.at_ms).max(),
            ) {
                m = m
                    .attr("start_time", json!(first))
                    .attr("end_time", json!(last));
            }
            Mapped {
                actor_session: Some(*session_id),
                ..m
            }
        }
        AuditEvent::LoginSucceeded { via } => Mapped::new(LOGON, format!("logged in via {via}"))
            .attr("user", user(actor))
            .attr("service", json!({"name": "Warden"})),
        AuditEvent::LoginFailed { email, via, reason } => {
            Mapped::new(LOGON, format!("login failed for {email} via {via}"))
                .failed(reason)
                .severity(SEVERITY_LOW)
                .attr("user", user(email))
                .attr("service", json!({"name": "Warden"}))
        }
        AuditEvent::TokenCreated { user: owner, .. } => {
            Mapped::new(ACCOUNT_OTHER, format!("API token created for {owner}"))
                .other("token_created")
                .attr("user", user(owner))
        }
        AuditEvent::TokenRevoked { user: owner, .. } => {
            Mapped::new(ACCOUNT_OTHER, format!("API token of {owner} revoked"))
                .other("token_revoked")
                .attr("user", user(owner))
        }
        AuditEvent::AdminChange {
            entity,
            action,
            name,
            before,
            after,
        } => admin_change(entity, action, name, before.as_ref(), after.as_ref()),
    }
}

/// An event this version cannot read: API Activity, Other (99) named by its kind when it has
/// one, Unknown (0) when it has none; status and severity Unknown, the event kept verbatim.
fn map_unknown(kind: Option<&str>) -> Mapped {
    let m = match kind {
        Some(k) => Mapped::new(
            API_OTHER,
            format!("{k} (an event kind this version does not map)"),
        )
        .other(k),
        None => Mapped::new(
            API_UNKNOWN,
            "an audit event this version cannot read".into(),
        ),
    };
    Mapped {
        status_id: STATUS_UNKNOWN,
        severity_id: SEVERITY_UNKNOWN,
        ..m
    }
}

/// The stream line of one chain entry (total: every entry makes exactly one line).
pub fn entry_line(e: &AuditEntry) -> Value {
    let kind = e.event.get("kind").and_then(Value::as_str);
    // Parsed from the stored JSON by reference: a statement batch is not copied to be read.
    let typed = AuditEvent::deserialize(&e.event).ok();
    let mapped = match &typed {
        Some(ev) => map_event(ev, &e.actor),
        None => map_unknown(kind),
    };
    let c = mapped.class;
    let mut line = Map::new();
    let mut put = |k: &str, v: Value| {
        line.insert(k.to_string(), v);
    };
    put("class_uid", json!(c.class_uid));
    put("class_name", json!(c.class_name));
    put("category_uid", json!(c.category_uid()));
    put("category_name", json!(c.category_name()));
    put("activity_id", json!(c.activity_id));
    put(
        "activity_name",
        json!(mapped.other.as_deref().unwrap_or(c.activity_name)),
    );
    put("type_uid", json!(c.type_uid()));
    put(
        "type_name",
        json!(format!("{}: {}", c.class_name, c.activity_name)),
    );
    // Unix milliseconds, exactly the `at_ms` the chain hashed.
    put(
        "time",
        json!((e.at.unix_timestamp_nanos() / 1_000_000) as i64),
    );
    put("severity_id", json!(mapped.severity_id));
    put("severity", json!(severity_name(mapped.severity_id)));
    put("status_id", json!(mapped.status_id));
    put("status", json!(status_name(mapped.status_id)));
    if let Some(d) = &mapped.status_detail {
        put("status_detail", json!(d));
    }
    if let Some(code) = &mapped.status_code {
        put("status_code", json!(code));
    }
    put("message", json!(mapped.message));
    let mut actor = Map::new();
    actor.insert("user".into(), user(&e.actor));
    if let Some(s) = mapped.actor_session {
        actor.insert("session".into(), json!({"uid": s.to_string()}));
    }
    put("actor", Value::Object(actor));
    if let Some(k) = kind {
        put(
            "api",
            json!({"operation": k, "service": {"name": "Warden"}}),
        );
    }
    let mut metadata = Map::new();
    metadata.insert("version".into(), json!(OCSF_VERSION));
    metadata.insert(
        "product".into(),
        json!({"name": "Warden", "vendor_name": "Warden"}),
    );
    metadata.insert("log_name".into(), json!("audit"));
    metadata.insert("uid".into(), json!(e.seq.to_string()));
    metadata.insert("sequence".into(), json!(e.seq));
    if let Some(k) = kind {
        metadata.insert("event_code".into(), json!(k));
    }
    if let Some(r) = typed.as_ref().and_then(AuditEvent::review_id) {
        metadata.insert("correlation_uid".into(), json!(r.to_string()));
    }
    put("metadata", Value::Object(metadata));
    for (k, v) in mapped.attrs {
        put(&k, v);
    }
    put(
        "unmapped",
        json!({"warden": {
            "schema": SCHEMA,
            "seq": e.seq,
            "at": crate::timefmt::format(e.at),
            "actor": e.actor,
            "event": e.event,
            "prev_hash": e.prev_hash,
            "hash": e.hash,
        }}),
    );
    Value::Object(line)
}

/// The original entry carried by a line (what a SIEM re-verifies the chain with); `None` when the
/// line has no well-formed `unmapped.warden`.
pub fn entry_of_line(line: &Value) -> Option<AuditEntry> {
    let w = line.get("unmapped")?.get("warden")?;
    Some(AuditEntry {
        seq: w.get("seq")?.as_i64()?,
        at: crate::timefmt::parse(w.get("at")?.as_str()?).ok()?,
        actor: w.get("actor")?.as_str()?.to_string(),
        event: w.get("event")?.clone(),
        prev_hash: w.get("prev_hash")?.as_str()?.to_string(),
        hash: w.get("hash")?.as_str()?.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{
        ChainError, GENESIS_HASH, StatementRun, entry_hash, next_entry, verify_chain,
    };
    use time::OffsetDateTime;

    fn t() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_000_000).unwrap()
    }

    fn admin(
        entity: &str,
        action: &str,
        before: Option<Value>,
        after: Option<Value>,
    ) -> AuditEvent {
        AuditEvent::AdminChange {
            entity: entity.into(),
            action: action.into(),
            name: if entity == "user" {
                "new@x".into()
            } else {
                "prod".into()
            },
            before,
            after,
        }
    }

    /// The documented table (docs/siem.md): each row an event and its (class_uid, activity_id,
    /// status_id). Variants whose class depends on a field have a row per case.
    fn table() -> Vec<(AuditEvent, (u32, u32, u32))> {
        let id = Uuid::from_u128(1);
        let sid = Uuid::from_u128(2);
        let u = |admin: bool, groups: &[&str]| json!({"email": "new@x", "groups": groups, "admin": admin, "auditor": false});
        vec![
            (
                AuditEvent::ReviewRequested {
                    review_id: id,
                    review_type: "command".into(),
                    connection: "pg".into(),
                    rule: "r".into(),
                    command_sha256: Some("ab".into()),
                    duration_sec: None,
                    reason: None,
                },
                (6003, 1, 1),
            ),
            (
                AuditEvent::ReviewApproved {
                    review_id: id,
                    approver: "dba@x".into(),
                    group: "dba".into(),
                    forced: true,
                    auto: false,
                    reason: Some("incident".into()),
                    approved: true,
                },
                (3005, 1, 1),
            ),
            (
                AuditEvent::ReviewApproved {
                    review_id: id,
                    approver: "dba@x".into(),
                    group: "dba".into(),
                    forced: false,
                    auto: false,
                    reason: None,
                    approved: false,
                },
                (6003, 3, 1),
            ),
            (
                AuditEvent::ReviewRejected {
                    review_id: id,
                    by: "dba@x".into(),
                    reason: "no".into(),
                    withdrawn: false,
                    by_admin: false,
                },
                (3005, 1, 2),
            ),
            (
                AuditEvent::ReviewRejected {
                    review_id: id,
                    by: "dev@x".into(),
                    reason: "not needed".into(),
                    withdrawn: true,
                    by_admin: false,
                },
                (6003, 3, 1),
            ),
            (AuditEvent::ReviewExpired { review_id: id }, (3005, 1, 2)),
            (
                AuditEvent::ReviewRevoked {
                    review_id: id,
                    by: "dba@x".into(),
                    reason: "done".into(),
                },
                (3005, 2, 1),
            ),
            (
                AuditEvent::ReviewExecuted {
                    review_id: id,
                    session_id: sid,
                    exit_code: 0,
                    output_sha256: "o".into(),
                    duration_ms: 3,
                },
                (6003, 99, 1),
            ),
            (
                AuditEvent::ReviewExecuted {
                    review_id: id,
                    session_id: sid,
                    exit_code: 3,
                    output_sha256: "o".into(),
                    duration_ms: 3,
                },
                (6003, 99, 2),
            ),
            (AuditEvent::WindowEnded { review_id: id }, (3005, 2, 1)),
            (
                AuditEvent::AccessDenied {
                    connection: "pg".into(),
                    reason: "no rule".into(),
                },
                (3005, 1, 2),
            ),
            (
                AuditEvent::SessionStarted {
                    session_id: sid,
                    session_kind: "exec".into(),
                    connection: "pg".into(),
                    review_id: Some(id),
                    command_sha256: None,
                },
                (6003, 1, 1),
            ),
            (
                AuditEvent::SessionEnded {
                    session_id: sid,
                    exit_code: Some(1),
                    output_sha256: None,
                },
                (6003, 3, 2),
            ),
            (
                AuditEvent::SessionEnded {
                    session_id: sid,
                    exit_code: None,
                    output_sha256: None,
                },
                (6003, 3, 1),
            ),
            (
                AuditEvent::Statement {
                    session_id: sid,
                    statement: "SELECT 1".into(),
                    review_id: None,
                    tag: None,
                },
                (6005, 4, 1),
            ),
            (
                AuditEvent::Statements {
                    session_id: sid,
                    connection: "pg".into(),
                    review_id: Some(id),
                    statements: vec![
                        StatementRun {
                            at_ms: 1_700_000_000_200,
                            statement: "SELECT 1".into(),
                            tag: Some("SELECT 1".into()),
                        },
                        StatementRun {
                            at_ms: 1_700_000_000_100,
                            statement: "BOGUS".into(),
                            tag: Some("42601".into()),
                        },
                    ],
                },
                (6005, 4, 1),
            ),
            (
                AuditEvent::LoginSucceeded { via: "web".into() },
                (3002, 1, 1),
            ),
            (
                AuditEvent::LoginFailed {
                    email: "eve@x".into(),
                    via: "api".into(),
                    reason: "bad credentials".into(),
                },
                (3002, 1, 2),
            ),
            (
                AuditEvent::TokenCreated {
                    token_id: Uuid::from_u128(3),
                    user: "dev@x".into(),
                    expires_at: None,
                },
                (3001, 99, 1),
            ),
            (
                AuditEvent::TokenRevoked {
                    token_id: Uuid::from_u128(3),
                    user: "dev@x".into(),
                },
                (3001, 99, 1),
            ),
            (
                admin("user", "create", None, Some(u(false, &["dev"]))),
                (3001, 1, 1),
            ),
            (
                admin("user", "bootstrap", None, Some(u(true, &[]))),
                (3001, 1, 1),
            ),
            (
                admin("user", "delete", Some(u(false, &[])), None),
                (3001, 6, 1),
            ),
            (
                admin(
                    "user",
                    "update",
                    Some(u(false, &["dev"])),
                    Some(u(true, &["dev"])),
                ),
                (3005, 1, 1),
            ),
            (
                admin(
                    "user",
                    "update",
                    Some(u(false, &["dev", "dba"])),
                    Some(u(false, &["dev"])),
                ),
                (3005, 2, 1),
            ),
            (
                admin(
                    "user",
                    "update",
                    Some(u(false, &["dev"])),
                    Some(u(false, &["dev"])),
                ),
                (3001, 99, 1),
            ),
            (admin("connection", "create", None, None), (3004, 1, 1)),
            (admin("rule", "update", None, None), (3004, 3, 1)),
            (admin("webhook", "delete", None, None), (3004, 4, 1)),
            (
                admin("retention", "prune_outputs", None, None),
                (3004, 99, 1),
            ),
        ]
    }

    /// Every variant, by position. The `match` has no wildcard: adding an `AuditEvent` variant
    /// stops this test compiling until it has an index here (bump `VARIANTS`) and rows in
    /// `table()`, just as `map_event` stops compiling until the variant is mapped.
    const VARIANTS: usize = 17;
    fn variant_index(ev: &AuditEvent) -> usize {
        match ev {
            AuditEvent::ReviewRequested { .. } => 0,
            AuditEvent::ReviewApproved { .. } => 1,
            AuditEvent::ReviewRejected { .. } => 2,
            AuditEvent::ReviewExpired { .. } => 3,
            AuditEvent::ReviewRevoked { .. } => 4,
            AuditEvent::ReviewExecuted { .. } => 5,
            AuditEvent::WindowEnded { .. } => 6,
            AuditEvent::AccessDenied { .. } => 7,
            AuditEvent::SessionStarted { .. } => 8,
            AuditEvent::SessionEnded { .. } => 9,
            AuditEvent::Statement { .. } => 10,
            AuditEvent::Statements { .. } => 11,
            AuditEvent::LoginSucceeded { .. } => 12,
            AuditEvent::LoginFailed { .. } => 13,
            AuditEvent::TokenCreated { .. } => 14,
            AuditEvent::TokenRevoked { .. } => 15,
            AuditEvent::AdminChange { .. } => 16,
        }
    }

    /// The table's events chained (actor `dev@x`), then one entry of a kind from the future.
    fn chain() -> Vec<AuditEntry> {
        let mut out: Vec<AuditEntry> = Vec::new();
        for (ev, _) in table() {
            let prev = out.last().map(|p| (p.seq, p.hash.clone()));
            out.push(next_entry(
                prev.as_ref().map(|(s, h)| (*s, h.as_str())),
                t(),
                "dev@x",
                &ev,
            ));
        }
        let (seq, prev_hash) = out
            .last()
            .map(|p| (p.seq + 1, p.hash.clone()))
            .unwrap_or((1, GENESIS_HASH.to_string()));
        let event = json!({"kind": "from_the_future", "x": [1, {"b": null, "a": "é\n"}]});
        out.push(AuditEntry {
            seq,
            at: t(),
            actor: "system".into(),
            hash: entry_hash(&prev_hash, seq, t(), "system", &event),
            prev_hash,
            event,
        });
        out
    }

    #[test]
    fn every_variant_maps_to_its_documented_class() {
        let mut seen = std::collections::BTreeSet::new();
        for (ev, (class, activity, status)) in table() {
            let i = variant_index(&ev);
            assert!(i < VARIANTS, "bump VARIANTS");
            seen.insert(i);
            let e = next_entry(None, t(), "dev@x", &ev);
            let line = entry_line(&e);
            let kind = ev.kind();
            assert_eq!(line["class_uid"], class, "{kind}: {line}");
            assert_eq!(line["activity_id"], activity, "{kind}: {line}");
            assert_eq!(line["status_id"], status, "{kind}: {line}");
            assert_eq!(line["api"]["operation"], kind);
            assert_eq!(line["metadata"]["event_code"], kind);
            assert!(line["message"].as_str().is_some_and(|m| !m.is_empty()));
            assert!(line["class_name"].as_str().is_some_and(|n| !n.is_empty()));
            assert!(
                line["activity_name"]
                    .as_str()
                    .is_some_and(|n| !n.is_empty())
            );
            if activity == 99 {
                assert_ne!(
                    line["activity_name"], "Other",
                    "99 names the source's activity"
                );
            }
            assert_eq!(
                line["metadata"]["correlation_uid"].as_str(),
                ev.review_id().map(|r| r.to_string()).as_deref()
            );
        }
        assert_eq!(
            seen,
            (0..VARIANTS).collect::<std::collections::BTreeSet<_>>(),
            "a row for every variant"
        );
    }

    #[test]
    fn type_uid_and_category_follow_the_class() {
        for e in chain() {
            let line = entry_line(&e);
            let class = line["class_uid"].as_u64().unwrap();
            let activity = line["activity_id"].as_u64().unwrap();
            assert_eq!(line["type_uid"].as_u64(), Some(class * 100 + activity));
            assert_eq!(line["category_uid"].as_u64(), Some(class / 1000));
            let type_name = line["type_name"].as_str().unwrap();
            assert!(type_name.starts_with(line["class_name"].as_str().unwrap()));
            assert_eq!(line["time"], 1_700_000_000_123i64);
            assert_eq!(line["metadata"]["uid"], e.seq.to_string());
            assert_eq!(line["metadata"]["sequence"], e.seq);
            assert_eq!(line["metadata"]["version"], OCSF_VERSION);
            assert_eq!(line["metadata"]["product"]["name"], "Warden");
            assert_eq!(line["metadata"]["product"]["vendor_name"], "Warden");
            assert_eq!(line["metadata"]["log_name"], "audit");
            assert_eq!(line["unmapped"]["warden"]["schema"], SCHEMA);
            assert!(line["severity"].is_string() && line["status"].is_string());
        }
    }

    #[test]
    fn failures_are_status_2_with_their_reason() {
        let cases = [
            (
                AuditEvent::LoginFailed {
                    email: "eve@x".into(),
                    via: "pg".into(),
                    reason: "bad credentials".into(),
                },
                "bad credentials",
            ),
            (
                AuditEvent::AccessDenied {
                    connection: "prod".into(),
                    reason: "no rule grants prod".into(),
                },
                "no rule grants prod",
            ),
            (
                AuditEvent::ReviewRejected {
                    review_id: Uuid::from_u128(9),
                    by: "dba@x".into(),
                    reason: "not today".into(),
                    withdrawn: false,
                    by_admin: false,
                },
                "not today",
            ),
        ];
        for (ev, reason) in cases {
            let line = entry_line(&next_entry(None, t(), "dev@x", &ev));
            assert_eq!(line["status_id"], 2, "{line}");
            assert_eq!(line["status"], "Failure");
            assert_eq!(line["status_detail"], reason);
            assert!(line["severity_id"].as_u64() >= Some(2), "{line}");
        }
        // The refused user is named where the event (or its actor) says who it is.
        let failed = entry_line(&next_entry(None, t(), "anonymous", &table()[17].0));
        assert_eq!(failed["user"]["email_addr"], "eve@x");
        assert!(failed["actor"]["user"].get("email_addr").is_none());
        let denied = entry_line(&next_entry(None, t(), "dev@x", &table()[10].0));
        assert_eq!(denied["user"]["email_addr"], "dev@x");
        assert_eq!(denied["resource"]["name"], "pg");
    }

    #[test]
    fn unknown_events_still_make_a_line_with_the_raw_event() {
        let e = chain().pop().unwrap();
        let line = entry_line(&e);
        assert_eq!(line["class_uid"], 6003);
        assert_eq!(line["activity_id"], 99);
        assert_eq!(line["activity_name"], "from_the_future");
        assert_eq!(line["type_uid"], 600399);
        assert_eq!(line["status_id"], 0);
        assert_eq!(line["severity_id"], 0);
        assert_eq!(line["api"]["operation"], "from_the_future");
        assert_eq!(line["unmapped"]["warden"]["event"], e.event);
        assert!(
            line["actor"]["user"].get("email_addr").is_none(),
            "system is no email"
        );
        assert_eq!(entry_of_line(&line).unwrap(), e);
        // A known kind that no longer parses (an old row missing a field) is kept the same way.
        let old = AuditEntry {
            event: json!({"kind": "session_started", "session_id": "not a uuid"}),
            ..e.clone()
        };
        let line = entry_line(&old);
        assert_eq!(
            (line["class_uid"].clone(), line["activity_id"].clone()),
            (json!(6003), json!(99))
        );
        assert_eq!(line["unmapped"]["warden"]["event"], old.event);
        // No kind at all, or not even an object: Unknown (0), nothing invented for `api`.
        for event in [
            json!({"type": "statement", "statement": "SELECT 1"}),
            json!("text"),
            Value::Null,
        ] {
            let odd = AuditEntry {
                event: event.clone(),
                ..e.clone()
            };
            let line = entry_line(&odd);
            assert_eq!(line["activity_id"], 0, "{line}");
            assert_eq!(line["type_uid"], 600300);
            assert!(line.get("api").is_none() && line["metadata"].get("event_code").is_none());
            assert_eq!(line["unmapped"]["warden"]["event"], event);
            assert_eq!(entry_of_line(&line).unwrap(), odd);
        }
    }

    #[test]
    fn the_chain_reverifies_from_the_lines_alone() {
        let chain = chain();
        // Through text, as a SIEM receives them.
        let lines: Vec<String> = chain.iter().map(|e| entry_line(e).to_string()).collect();
        let parsed: Vec<Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let back: Vec<AuditEntry> = parsed.iter().map(|l| entry_of_line(l).unwrap()).collect();
        assert_eq!(back, chain);
        let mut prev = GENESIS_HASH.to_string();
        for e in &back {
            assert_eq!(e.prev_hash, prev);
            assert_eq!(
                entry_hash(&e.prev_hash, e.seq, e.at, &e.actor, &e.event),
                e.hash
            );
            prev = e.hash.clone();
        }
        assert_eq!(
            verify_chain(&back, None).unwrap().map(|(s, _)| s),
            Some(chain.len() as i64)
        );
        // The OCSF fields are not part of what is hashed; the carried entry is.
        let mut edited = parsed.clone();
        edited[16]["unmapped"]["warden"]["event"]["via"] = json!("evil");
        edited[3]["message"] = json!("rewritten");
        let back: Vec<AuditEntry> = edited.iter().map(|l| entry_of_line(l).unwrap()).collect();
        assert_eq!(
            verify_chain(&back, None).unwrap_err(),
            ChainError::Content { seq: 17 }
        );
        assert!(entry_of_line(&json!({"class_uid": 6003})).is_none());
    }

    #[test]
    fn statement_batches_are_one_datastore_query_line() {
        let (ev, _) = table().swap_remove(15);
        let e = next_entry(None, t(), "dev@x", &ev);
        let line = entry_line(&e);
        assert_eq!(line["class_name"], "Datastore Activity");
        assert_eq!(line["activity_name"], "Query");
        assert_eq!(line["database"]["name"], "pg");
        assert_eq!(line["type_id"], 1);
        assert_eq!(line["count"], 2);
        assert_eq!(line["start_time"], 1_700_000_000_100i64);
        assert_eq!(line["end_time"], 1_700_000_000_200i64);
        assert_eq!(
            line["actor"]["session"]["uid"],
            Uuid::from_u128(2).to_string()
        );
        assert_eq!(
            line["metadata"]["correlation_uid"],
            Uuid::from_u128(1).to_string()
        );
        let runs = line["unmapped"]["warden"]["event"]["statements"]
            .as_array()
            .unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[1]["tag"], "42601");
    }

    #[test]
    fn user_changes_name_the_user_and_the_privileges() {
        let rows = table();
        let line = |i: usize| entry_line(&next_entry(None, t(), "admin@x", &rows[i].0));
        let created = line(20);
        assert_eq!(created["user"]["email_addr"], "new@x");
        assert!(created["message"].as_str().unwrap().contains("new@x"));
        assert_eq!(line(23)["privileges"], json!(["admin"]));
        assert_eq!(line(24)["privileges"], json!(["group:dba"]));
        assert_eq!(line(25)["activity_name"], "update");
        let conn = line(26);
        assert_eq!(
            conn["entity"],
            json!({"name": "prod", "type": "connection"})
        );
        assert!(conn.get("user").is_none());
        let token = line(18);
        assert_eq!(token["user"]["email_addr"], "dev@x");
        assert_eq!(token["activity_name"], "token_created");
    }

    /// Nothing outside `unmapped` is a placeholder: no `null`, no empty string, no empty object.
    #[test]
    fn ocsf_fields_are_only_what_the_event_carries() {
        fn walk(path: &str, v: &Value) {
            match v {
                Value::Null => panic!("null at {path}"),
                Value::String(s) => assert!(!s.is_empty(), "empty string at {path}"),
                Value::Object(m) => {
                    assert!(!m.is_empty(), "empty object at {path}");
                    for (k, x) in m {
                        walk(&format!("{path}.{k}"), x);
                    }
                }
                Value::Array(a) => a.iter().for_each(|x| walk(path, x)),
                _ => {}
            }
        }
        for e in chain() {
            let mut line = entry_line(&e);
            line.as_object_mut().unwrap().remove("unmapped");
            walk("", &line);
        }
    }
}
