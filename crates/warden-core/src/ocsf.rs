//! The SIEM line of one audit entry: the entry mapped onto an OCSF 1.1 event (API Activity,
//! Authentication, User Access Management), with the original entry carried verbatim under
//! `unmapped.warden` so the line alone re-verifies against the hash chain. `docs/siem.md`
//! documents the schema; [`entry_line`] is the only producer.
//!
//! Pure: an entry in, a JSON value out. It must never drop or rewrite a field of the original
//! entry (a verifier recomputes the hash from them), never read a clock (`time` is the entry's),
//! and never invent a value the event does not carry.

use serde_json::{Map, Value, json};

use crate::audit::{AuditEntry, AuditEvent};

/// The stream's own schema name (bumped if a field changes meaning).
pub const SCHEMA: &str = "warden-audit-ocsf/1";
/// The OCSF version the classes and enums below follow.
pub const OCSF_VERSION: &str = "1.1.0";

/// One OCSF class/activity choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Class {
    pub class_uid: u32,
    pub class_name: &'static str,
    pub activity_id: u32,
    pub activity_name: &'static str,
}

impl Class {
    pub fn category_uid(&self) -> u32 {
        self.class_uid / 1000
    }
    pub fn type_uid(&self) -> u32 {
        self.class_uid * 100 + self.activity_id
    }
}

const fn api(activity_id: u32, activity_name: &'static str) -> Class {
    Class {
        class_uid: 6003,
        class_name: "API Activity",
        activity_id,
        activity_name,
    }
}
const AUTHENTICATION_LOGON: Class = Class {
    class_uid: 3002,
    class_name: "Authentication",
    activity_id: 1,
    activity_name: "Logon",
};
const ASSIGN_PRIVILEGES: Class = Class {
    class_uid: 3005,
    class_name: "User Access Management",
    activity_id: 1,
    activity_name: "Assign Privileges",
};
const REVOKE_PRIVILEGES: Class = Class {
    class_uid: 3005,
    class_name: "User Access Management",
    activity_id: 2,
    activity_name: "Revoke Privileges",
};

/// What an event says in OCSF terms.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    pub class: Class,
    /// `true` = Success (status_id 1), `false` = Failure (2).
    pub success: bool,
    /// OCSF severity_id: 1 Informational, 2 Low, 3 Medium.
    pub severity_id: u32,
    pub message: String,
    /// `api.operation`: the Warden event kind.
    pub operation: String,
    /// `resources`: what the event is about (type, uid or name), from the event only.
    pub resources: Vec<Value>,
    /// The user an event acts on (tokens, user changes), as `user.email_addr`.
    pub user: Option<String>,
    /// `session.uid`.
    pub session: Option<String>,
}

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

/// The OCSF reading of a typed event (exhaustive: a new variant does not compile until mapped).
pub fn map_event(ev: &AuditEvent) -> Mapped {
    let review = |id: &uuid::Uuid| resource("review", Some(id.to_string()), None);
    let conn = |name: &str| resource("connection", None, Some(name));
    let m = |class: Class, message: String, resources: Vec<Value>| Mapped {
        class,
        success: true,
        severity_id: 1,
        message,
        operation: ev.kind(),
        resources,
        user: None,
        session: None,
    };
    match ev {
        AuditEvent::ReviewRequested {
            review_id,
            review_type,
            connection,
            ..
        } => m(
            api(1, "Create"),
            format!("{review_type} access requested on {connection}"),
            vec![review(review_id), conn(connection)],
        ),
        AuditEvent::ReviewApproved {
            review_id,
            approver,
            group,
            forced,
            auto,
            approved,
            ..
        } => Mapped {
            severity_id: if *forced { 3 } else { 1 },
            ..m(
                if *approved {
                    ASSIGN_PRIVILEGES
                } else {
                    api(3, "Update")
                },
                format!(
                    "{} by {approver} ({group}){}",
                    if *forced {
                        "force-approved"
                    } else if *auto {
                        "auto-approved"
                    } else {
                        "approved"
                    },
                    if *approved { ", access granted" } else { "" }
                ),
                vec![review(review_id)],
            )
        },
        AuditEvent::ReviewRejected {
            review_id,
            by,
            withdrawn,
            ..
        } => Mapped {
            success: *withdrawn,
            ..m(
                if *withdrawn {
                    api(3, "Update")
                } else {
                    ASSIGN_PRIVILEGES
                },
                if *withdrawn {
                    format!("request withdrawn by {by}")
                } else {
                    format!("access refused by {by}")
                },
                vec![review(review_id)],
            )
        },
        AuditEvent::ReviewExpired { review_id } => m(
            REVOKE_PRIVILEGES,
            "request expired without a decision".into(),
            vec![review(review_id)],
        ),
        AuditEvent::ReviewRevoked { review_id, by, .. } => Mapped {
            severity_id: 2,
            ..m(
                REVOKE_PRIVILEGES,
                format!("access window revoked by {by}"),
                vec![review(review_id)],
            )
        },
        AuditEvent::ReviewExecuted {
            review_id,
            session_id,
            exit_code,
            ..
        } => Mapped {
            success: *exit_code == 0,
            session: Some(session_id.to_string()),
            ..m(
                api(99, "Other"),
                format!("approved command ran, exit code {exit_code}"),
                vec![review(review_id)],
            )
        },
        AuditEvent::WindowEnded { review_id } => m(
            REVOKE_PRIVILEGES,
            "access window ended".into(),
            vec![review(review_id)],
        ),
        AuditEvent::AccessDenied { connection, reason } => Mapped {
            success: false,
            severity_id: 2,
            ..m(
                ASSIGN_PRIVILEGES,
                format!("access to {connection} denied: {reason}"),
                vec![conn(connection)],
            )
        },
        AuditEvent::SessionStarted {
            session_id,
            session_kind,
            connection,
            review_id,
            ..
        } => Mapped {
            session: Some(session_id.to_string()),
            ..m(
                api(1, "Create"),
                format!("{session_kind} session started on {connection}"),
                std::iter::once(conn(connection))
                    .chain(review_id.as_ref().map(review))
                    .collect(),
            )
        },
        AuditEvent::SessionEnded {
            session_id,
            exit_code,
            ..
        } => Mapped {
            success: exit_code.is_none_or(|c| c == 0),
            session: Some(session_id.to_string()),
            ..m(
                api(3, "Update"),
                match exit_code {
                    Some(c) => format!("session ended, exit code {c}"),
                    None => "session ended".into(),
                },
                vec![],
            )
        },
        AuditEvent::Statement {
            session_id,
            review_id,
            ..
        } => Mapped {
            session: Some(session_id.to_string()),
            ..m(
                api(99, "Other"),
                "1 statement ran".into(),
                review_id.as_ref().map(review).into_iter().collect(),
            )
        },
        AuditEvent::Statements {
            session_id,
            connection,
            review_id,
            statements,
        } => Mapped {
            session: Some(session_id.to_string()),
            ..m(
                api(99, "Other"),
                format!("{} statement(s) ran on {connection}", statements.len()),
                std::iter::once(conn(connection))
                    .chain(review_id.as_ref().map(review))
                    .collect(),
            )
        },
        AuditEvent::LoginSucceeded { via } => {
            m(AUTHENTICATION_LOGON, format!("logged in via {via}"), vec![])
        }
        AuditEvent::LoginFailed { email, via, reason } => Mapped {
            success: false,
            severity_id: 2,
            user: Some(email.clone()),
            ..m(
                AUTHENTICATION_LOGON,
                format!("login failed via {via}: {reason}"),
                vec![],
            )
        },
        AuditEvent::TokenCreated { token_id, user, .. } => Mapped {
            user: Some(user.clone()),
            ..m(
                api(1, "Create"),
                format!("API token created for {user}"),
                vec![resource("token", Some(token_id.to_string()), None)],
            )
        },
        AuditEvent::TokenRevoked { token_id, user } => Mapped {
            user: Some(user.clone()),
            ..m(
                api(4, "Delete"),
                format!("API token of {user} revoked"),
                vec![resource("token", Some(token_id.to_string()), None)],
            )
        },
        AuditEvent::AdminChange {
            entity,
            action,
            name,
            ..
        } => {
            let class = match action.as_str() {
                "create" => api(1, "Create"),
                "update" => api(3, "Update"),
                "delete" => api(4, "Delete"),
                _ => api(99, "Other"),
            };
            Mapped {
                user: (entity == "user").then(|| name.clone()),
                ..m(
                    class,
                    format!("{entity} {name}: {action}"),
                    vec![resource(entity, None, Some(name))],
                )
            }
        }
    }
}

/// The stream line of one chain entry. Entries whose event this version does not know (newer
/// kinds) still make a line: API Activity / Other, the original event kept under `unmapped`.
pub fn entry_line(e: &AuditEntry) -> Value {
    let mapped = serde_json::from_value::<AuditEvent>(e.event.clone())
        .ok()
        .map(|ev| map_event(&ev));
    let kind = e
        .event
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string();
    let mapped = mapped.unwrap_or_else(|| Mapped {
        class: api(99, "Other"),
        success: true,
        severity_id: 1,
        message: format!("{kind} (an event kind this version does not map)"),
        operation: kind,
        resources: vec![],
        user: None,
        session: None,
    });
    let c = mapped.class;
    let mut line = json!({
        "class_uid": c.class_uid,
        "class_name": c.class_name,
        "category_uid": c.category_uid(),
        "category_name": if c.category_uid() == 3 { "Identity & Access Management" } else { "Application Activity" },
        "activity_id": c.activity_id,
        "activity_name": c.activity_name,
        "type_uid": c.type_uid(),
        "type_name": format!("{}: {}", c.class_name, c.activity_name),
        "time": e.at.unix_timestamp_nanos() / 1_000_000,
        "severity_id": mapped.severity_id,
        "status_id": if mapped.success { 1 } else { 2 },
        "status": if mapped.success { "Success" } else { "Failure" },
        "message": mapped.message,
        "actor": {"user": {"name": e.actor, "email_addr": e.actor.contains('@').then_some(&e.actor)}},
        "api": {"operation": mapped.operation, "service": {"name": "warden"}},
        "metadata": {
            "version": OCSF_VERSION,
            "product": {"name": "Warden", "vendor_name": "Warden"},
            "log_name": "audit",
            "uid": e.seq.to_string(),
            "sequence": e.seq,
            "profiles": [],
            "extension": {"name": "warden", "version": SCHEMA},
        },
        "unmapped": {"warden": {
            "seq": e.seq,
            "at": crate::timefmt::format(e.at),
            "actor": e.actor,
            "event": e.event,
            "prev_hash": e.prev_hash,
            "hash": e.hash,
        }},
    });
    if let Value::Object(m) = &mut line {
        if !mapped.resources.is_empty() {
            m.insert("resources".into(), Value::Array(mapped.resources));
        }
        if let Some(u) = mapped.user {
            m.insert("user".into(), json!({"name": u, "email_addr": u}));
        }
        if let Some(s) = mapped.session {
            m.insert("session".into(), json!({"uid": s}));
        }
    }
    line
}

/// The original entry carried by a line (what a SIEM re-verifies the chain with).
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
    use crate::audit::{StatementRun, next_entry, verify_chain};
    use time::OffsetDateTime;
    use uuid::Uuid;

    fn every_event() -> Vec<AuditEvent> {
        let id = Uuid::new_v4();
        let sid = Uuid::new_v4();
        vec![
            AuditEvent::ReviewRequested {
                review_id: id,
                review_type: "command".into(),
                connection: "pg".into(),
                rule: "r".into(),
                command_sha256: Some("ab".into()),
                duration_sec: None,
                reason: None,
            },
            AuditEvent::ReviewApproved {
                review_id: id,
                approver: "dba@x".into(),
                group: "dba".into(),
                forced: true,
                auto: false,
                reason: Some("incident".into()),
                approved: true,
            },
            AuditEvent::ReviewRejected {
                review_id: id,
                by: "dba@x".into(),
                reason: "no".into(),
                withdrawn: false,
            },
            AuditEvent::ReviewExpired { review_id: id },
            AuditEvent::ReviewRevoked {
                review_id: id,
                by: "dba@x".into(),
                reason: "done".into(),
            },
            AuditEvent::ReviewExecuted {
                review_id: id,
                session_id: sid,
                exit_code: 0,
                output_sha256: "o".into(),
                duration_ms: 3,
            },
            AuditEvent::WindowEnded { review_id: id },
            AuditEvent::AccessDenied {
                connection: "pg".into(),
                reason: "no group".into(),
            },
            AuditEvent::SessionStarted {
                session_id: sid,
                session_kind: "exec".into(),
                connection: "pg".into(),
                review_id: Some(id),
                command_sha256: None,
            },
            AuditEvent::SessionEnded {
                session_id: sid,
                exit_code: Some(1),
                output_sha256: None,
            },
            AuditEvent::Statement {
                session_id: sid,
                statement: "SELECT 1".into(),
                review_id: None,
                tag: None,
            },
            AuditEvent::Statements {
                session_id: sid,
                connection: "pg".into(),
                review_id: None,
                statements: vec![StatementRun {
                    at_ms: 1,
                    statement: "SELECT 1".into(),
                    tag: Some("SELECT 1".into()),
                }],
            },
            AuditEvent::LoginSucceeded { via: "web".into() },
            AuditEvent::LoginFailed {
                email: "eve@x".into(),
                via: "api".into(),
                reason: "bad password".into(),
            },
            AuditEvent::TokenCreated {
                token_id: Uuid::new_v4(),
                user: "dev@x".into(),
                expires_at: None,
            },
            AuditEvent::TokenRevoked {
                token_id: Uuid::new_v4(),
                user: "dev@x".into(),
            },
            AuditEvent::AdminChange {
                entity: "rule".into(),
                action: "delete".into(),
                name: "r".into(),
                before: None,
                after: None,
            },
        ]
    }

    /// The documented table (docs/siem.md): class, activity, status per kind. The `match` makes
    /// this test stop compiling when a variant is added without a row here.
    fn expected(ev: &AuditEvent) -> (u32, u32, u32) {
        match ev {
            AuditEvent::ReviewRequested { .. } => (6003, 1, 1),
            AuditEvent::ReviewApproved { .. } => (3005, 1, 1),
            AuditEvent::ReviewRejected { .. } => (3005, 1, 2),
            AuditEvent::ReviewExpired { .. } => (3005, 2, 1),
            AuditEvent::ReviewRevoked { .. } => (3005, 2, 1),
            AuditEvent::ReviewExecuted { .. } => (6003, 99, 1),
            AuditEvent::WindowEnded { .. } => (3005, 2, 1),
            AuditEvent::AccessDenied { .. } => (3005, 1, 2),
            AuditEvent::SessionStarted { .. } => (6003, 1, 1),
            AuditEvent::SessionEnded { .. } => (6003, 3, 2),
            AuditEvent::Statement { .. } => (6003, 99, 1),
            AuditEvent::Statements { .. } => (6003, 99, 1),
            AuditEvent::LoginSucceeded { .. } => (3002, 1, 1),
            AuditEvent::LoginFailed { .. } => (3002, 1, 2),
            AuditEvent::TokenCreated { .. } => (6003, 1, 1),
            AuditEvent::TokenRevoked { .. } => (6003, 4, 1),
            AuditEvent::AdminChange { .. } => (6003, 4, 1),
        }
    }

    fn t() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap()
    }

    #[test]
    fn every_kind_maps_to_its_documented_class() {
        let mut prev: Option<AuditEntry> = None;
        for ev in every_event() {
            let e = next_entry(
                prev.as_ref().map(|p| (p.seq, p.hash.as_str())),
                t(),
                "dba@x",
                &ev,
            );
            let line = entry_line(&e);
            let (class, activity, status) = expected(&ev);
            assert_eq!(line["class_uid"], class, "{}", ev.kind());
            assert_eq!(line["activity_id"], activity, "{}", ev.kind());
            assert_eq!(line["status_id"], status, "{}", ev.kind());
            assert_eq!(line["category_uid"], class / 1000);
            assert_eq!(line["type_uid"], class * 100 + activity);
            assert_eq!(line["time"], 1_700_000_000_000i64);
            assert_eq!(line["metadata"]["uid"], e.seq.to_string());
            assert_eq!(line["api"]["operation"], ev.kind());
            assert!(line["message"].as_str().is_some_and(|m| !m.is_empty()));
            prev = Some(e);
        }
    }

    #[test]
    fn a_line_carries_its_entry_and_the_chain_reverifies_from_lines() {
        let mut chain: Vec<AuditEntry> = Vec::new();
        for ev in every_event() {
            let prev = chain.last().map(|p| (p.seq, p.hash.clone()));
            chain.push(next_entry(
                prev.as_ref().map(|(s, h)| (*s, h.as_str())),
                t(),
                "dev@x",
                &ev,
            ));
        }
        let lines: Vec<String> = chain
            .iter()
            .map(|e| serde_json::to_string(&entry_line(e)).unwrap())
            .collect();
        let back: Vec<AuditEntry> = lines
            .iter()
            .map(|l| entry_of_line(&serde_json::from_str(l).unwrap()).unwrap())
            .collect();
        assert_eq!(back, chain);
        verify_chain(&back, None).unwrap();
        // An edited line no longer verifies.
        let mut edited = back;
        edited[3].actor = "someone@x".into();
        assert!(verify_chain(&edited, None).is_err());
    }

    #[test]
    fn unknown_kinds_still_make_a_line() {
        let e = AuditEntry {
            seq: 7,
            at: t(),
            actor: "system".into(),
            event: json!({"kind": "from_the_future", "x": 1}),
            prev_hash: "p".into(),
            hash: "h".into(),
        };
        let line = entry_line(&e);
        assert_eq!(line["class_uid"], 6003);
        assert_eq!(line["activity_id"], 99);
        assert_eq!(line["api"]["operation"], "from_the_future");
        assert_eq!(line["unmapped"]["warden"]["event"]["x"], 1);
        assert!(
            line["actor"]["user"]["email_addr"].is_null(),
            "system is no email"
        );
        assert_eq!(entry_of_line(&line).unwrap(), e);
    }
}
