//! The domain model: plain data shared by every layer. Validation lives in [`crate::rule`] and
//! the state machine in [`crate::review`]; these types only carry values.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// A person or API client, identified by email.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub groups: Vec<String>,
    pub admin: bool,
    /// A read-only account (compliance review): reads every review, session, audit entry,
    /// export and analytics page; never runs commands, opens windows, decides reviews or
    /// changes anything. Never combined with `admin`.
    #[serde(default)]
    pub auditor: bool,
    #[serde(with = "crate::timefmt::rfc3339_ms")]
    pub created_at: OffsetDateTime,
}

impl User {
    /// Admins and auditors read everything; everyone else reads what concerns them.
    pub fn reads_all(&self) -> bool {
        self.admin || self.auditor
    }
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
    pub fn in_any(&self, groups: &[String]) -> bool {
        groups.iter().any(|g| self.in_group(g))
    }
}

/// What kind of target a connection reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionType {
    Postgres,
    Mysql,
    Sqlite,
    Command,
}

impl ConnectionType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Mysql => "mysql",
            Self::Sqlite => "sqlite",
            Self::Command => "command",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "postgres" | "postgresql" => Self::Postgres,
            "mysql" | "mariadb" => Self::Mysql,
            "sqlite" => Self::Sqlite,
            "command" => Self::Command,
            _ => return None,
        })
    }
}

/// A named target. Secrets (URL password, env values) are not part of this type: the store keeps
/// them encrypted and only executors/proxies receive them, as a `ConnectionSecrets` value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    pub id: Uuid,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ConnectionType,
    /// The target URL with any password replaced by `***`.
    pub url_redacted: Option<String>,
    /// argv for `command` connections (never contains secrets: those go in env).
    pub command: Vec<String>,
    /// Names of the env vars injected (their values are secret).
    pub env_keys: Vec<String>,
    /// Who may use the connection at all; empty = every user.
    pub access_groups: Vec<String>,
    pub slack_channel: Option<String>,
    pub teams_webhook: Option<String>,
    #[serde(with = "crate::timefmt::rfc3339_ms")]
    pub created_at: OffsetDateTime,
    #[serde(with = "crate::timefmt::rfc3339_ms")]
    pub updated_at: OffsetDateTime,
}

impl Connection {
    /// Whether `user` may use this connection at all. An auditor never may: the read-only
    /// role is enforced here too, behind the decision's own check.
    pub fn allows(&self, user: &User) -> bool {
        !user.auditor && (self.access_groups.is_empty() || user.in_any(&self.access_groups))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleType {
    Command,
    Jit,
}

impl RuleType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Command => "command",
            Self::Jit => "jit",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "command" => Self::Command,
            "jit" => Self::Jit,
            _ => return None,
        })
    }
}

/// The approval policy part of a rule: copied into every review at request time so a review is
/// always judged by the policy it was requested under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub approval_groups: Vec<String>,
    pub require_all_groups: bool,
    pub approval_amount: u32,
    pub force_approval_groups: Vec<String>,
}

/// An access request rule (SPEC §2). Built validated by `RuleSpec::validate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    #[serde(rename = "type")]
    pub kind: RuleType,
    pub connections: Vec<String>,
    pub required_groups: Vec<String>,
    pub approval_groups: Vec<String>,
    pub require_all_groups: bool,
    pub approval_amount: u32,
    pub force_approval_groups: Vec<String>,
    pub exempt_groups: Vec<String>,
    /// Seconds a PENDING review waits; `None` = the gateway default (`REVIEW_TIMEOUT_SEC`).
    pub timeout_sec: Option<i64>,
    /// Longest JIT window (jit only).
    pub max_duration_sec: Option<i64>,
    /// JIT: a request must carry a reason.
    pub require_reason: bool,
    #[serde(with = "crate::timefmt::rfc3339_ms")]
    pub created_at: OffsetDateTime,
    #[serde(with = "crate::timefmt::rfc3339_ms")]
    pub updated_at: OffsetDateTime,
}

pub const DEFAULT_MAX_DURATION_SEC: i64 = 8 * 3600;

impl Rule {
    pub fn policy(&self) -> Policy {
        Policy {
            approval_groups: self.approval_groups.clone(),
            require_all_groups: self.require_all_groups,
            approval_amount: self.approval_amount,
            force_approval_groups: self.force_approval_groups.clone(),
        }
    }
    pub fn max_duration(&self) -> i64 {
        self.max_duration_sec.unwrap_or(DEFAULT_MAX_DURATION_SEC)
    }
    pub fn binds(&self, connection: &str) -> bool {
        self.connections.iter().any(|c| c == connection)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ReviewStatus {
    Pending,
    Approved,
    Rejected,
    Expired,
    Revoked,
    Executed,
}

impl ReviewStatus {
    pub const ALL: [ReviewStatus; 6] = [
        Self::Pending,
        Self::Approved,
        Self::Rejected,
        Self::Expired,
        Self::Revoked,
        Self::Executed,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Approved => "APPROVED",
            Self::Rejected => "REJECTED",
            Self::Expired => "EXPIRED",
            Self::Revoked => "REVOKED",
            Self::Executed => "EXECUTED",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
    }
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Rejected | Self::Expired | Self::Revoked | Self::Executed
        )
    }
}

/// One approval (or the auto-approval of an admin's own request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub approver: String,
    /// The approval group this approval is shown under (the quorum itself is computed by matching).
    pub group: String,
    /// The approver's memberships among the policy's approval groups at approval time.
    #[serde(default)]
    pub eligible_groups: Vec<String>,
    pub forced: bool,
    #[serde(default)]
    pub auto: bool,
    pub reason: Option<String>,
    #[serde(with = "crate::timefmt::rfc3339_ms")]
    pub at: OffsetDateTime,
}

/// An access request: one command, or one time window, under one rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub kind: RuleType,
    pub status: ReviewStatus,
    pub connection: String,
    pub requester: String,
    pub requester_groups: Vec<String>,
    pub rule: String,
    pub policy: Policy,
    /// The exact command (command reviews): the approved bytes are the executed bytes.
    pub command: Option<String>,
    pub command_sha256: Option<String>,
    /// Requested (or, once shortened by an approver, granted) window length (jit).
    pub duration_sec: Option<i64>,
    /// The requester's justification.
    pub request_reason: Option<String>,
    pub approvals: Vec<Approval>,
    /// Who rejected / revoked / withdrew, or `system` for expiry.
    pub decided_by: Option<String>,
    /// The decision's reason (rejection, force approval, revoke, expiry).
    pub reason: Option<String>,
    pub forced: bool,
    #[serde(with = "crate::timefmt::rfc3339_ms")]
    pub created_at: OffsetDateTime,
    #[serde(with = "crate::timefmt::rfc3339_ms::option")]
    pub decided_at: Option<OffsetDateTime>,
    #[serde(with = "crate::timefmt::rfc3339_ms")]
    pub expires_at: OffsetDateTime,
    /// End of the JIT window (`decided_at + duration`), set on approval.
    #[serde(with = "crate::timefmt::rfc3339_ms::option")]
    pub window_end: Option<OffsetDateTime>,
    /// Optimistic-concurrency version, bumped by every persisted transition.
    pub version: i64,
}

/// The result of running a command through an executor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOutcome {
    pub exit_code: i32,
    pub output: String,
    pub truncated: bool,
    pub duration_ms: i64,
    /// JSON rows for SQL targets (`-o json`), when the executor produced a result set.
    #[serde(default)]
    pub rows_json: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionKind {
    Exec,
    Proxy,
    Web,
}

impl SessionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Proxy => "proxy",
            Self::Web => "web",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "exec" => Self::Exec,
            "proxy" => Self::Proxy,
            "web" => Self::Web,
            _ => return None,
        })
    }
}

/// One use of a connection. Exec/web sessions carry one command and its outcome; proxy sessions
/// carry statements (recorded separately) and end when the client disconnects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub id: Uuid,
    pub kind: SessionKind,
    pub user: String,
    pub connection: String,
    pub review_id: Option<Uuid>,
    pub command: Option<String>,
    #[serde(with = "crate::timefmt::rfc3339_ms")]
    pub started_at: OffsetDateTime,
    #[serde(with = "crate::timefmt::rfc3339_ms::option")]
    pub ended_at: Option<OffsetDateTime>,
    pub exit_code: Option<i32>,
    pub output: Option<String>,
    pub output_truncated: bool,
    pub output_sha256: Option<String>,
    pub duration_ms: Option<i64>,
    #[serde(default)]
    pub rows_json: Option<serde_json::Value>,
}

impl Session {
    /// A session that starts at `at` and has not ended: no outcome yet.
    pub fn starting(
        id: Uuid,
        kind: SessionKind,
        user: &str,
        connection: &str,
        review_id: Option<Uuid>,
        command: Option<String>,
        at: OffsetDateTime,
    ) -> Session {
        Session {
            id,
            kind,
            user: user.into(),
            connection: connection.into(),
            review_id,
            command,
            started_at: at,
            ended_at: None,
            exit_code: None,
            output: None,
            output_truncated: false,
            output_sha256: None,
            duration_ms: None,
            rows_json: None,
        }
    }
}
