//! Row shapes as stored, and their conversion to and from `warden-core` values.
//!
//! Each `*Row` struct decodes from both drivers (`#[derive(FromRow)]` with plain `String`,
//! `i64`, `bool` and `Vec<u8>` fields). Converting a row into a domain value checks everything
//! the database cannot (UUIDs, enums, JSON lists, timestamps) and reports what is wrong as
//! [`StoreError::Corrupt`] naming the table, row and column.

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::FromRow;
use time::OffsetDateTime;
use uuid::Uuid;
use warden_core::audit::AuditEntry;
use warden_core::{
    Connection, ConnectionType, Review, ReviewStatus, Rule, RuleType, Session, SessionKind, User,
};

use crate::{Result, StoreError, TokenInfo};

pub(crate) fn corrupt(
    table: &str,
    key: &str,
    column: &str,
    what: impl std::fmt::Display,
) -> StoreError {
    StoreError::Corrupt(format!("{table} {key}: column {column}: {what}"))
}

fn uuid(table: &str, key: &str, column: &str, s: &str) -> Result<Uuid> {
    Uuid::parse_str(s).map_err(|e| corrupt(table, key, column, format_args!("bad UUID {s:?}: {e}")))
}

fn opt_uuid(table: &str, key: &str, column: &str, s: Option<&str>) -> Result<Option<Uuid>> {
    s.map(|s| uuid(table, key, column, s)).transpose()
}

pub(crate) fn time(table: &str, key: &str, column: &str, ms: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).map_err(|e| {
        corrupt(
            table,
            key,
            column,
            format_args!("timestamp {ms} out of range: {e}"),
        )
    })
}

fn opt_time(
    table: &str,
    key: &str,
    column: &str,
    ms: Option<i64>,
) -> Result<Option<OffsetDateTime>> {
    ms.map(|ms| time(table, key, column, ms)).transpose()
}

fn json<T: DeserializeOwned>(table: &str, key: &str, column: &str, s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| corrupt(table, key, column, format_args!("bad JSON: {e}")))
}

/// Encodes a value for a JSON text column.
pub(crate) fn to_json<T: Serialize + ?Sized>(what: &str, v: &T) -> Result<String> {
    serde_json::to_string(v)
        .map_err(|e| StoreError::Invalid(format!("cannot encode {what} as JSON: {e}")))
}

fn int<T: TryFrom<i64>>(table: &str, key: &str, column: &str, v: i64) -> Result<T> {
    T::try_from(v).map_err(|_| corrupt(table, key, column, format_args!("value {v} out of range")))
}

#[derive(FromRow)]
pub(crate) struct UserRow {
    pub id: String,
    pub email: String,
    pub groups_json: String,
    pub admin: bool,
    pub auditor: bool,
    pub created_at_ms: i64,
}

impl UserRow {
    pub(crate) fn into_user(self) -> Result<User> {
        let k = self.email.as_str();
        Ok(User {
            id: uuid("users", k, "id", &self.id)?,
            groups: json("users", k, "groups_json", &self.groups_json)?,
            admin: self.admin,
            auditor: self.auditor,
            created_at: time("users", k, "created_at_ms", self.created_at_ms)?,
            email: self.email,
        })
    }
}

#[derive(FromRow)]
pub(crate) struct TokenRow {
    pub id: String,
    pub user_id: String,
    pub user_email: String,
    pub name: String,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
}

impl TokenRow {
    pub(crate) fn into_info(self) -> Result<TokenInfo> {
        let k = self.id.as_str();
        Ok(TokenInfo {
            id: uuid("tokens", k, "id", &self.id)?,
            user_id: uuid("tokens", k, "user_id", &self.user_id)?,
            created_at: time("tokens", k, "created_at_ms", self.created_at_ms)?,
            expires_at: opt_time("tokens", k, "expires_at_ms", self.expires_at_ms)?,
            revoked_at: opt_time("tokens", k, "revoked_at_ms", self.revoked_at_ms)?,
            user_email: self.user_email,
            name: self.name,
        })
    }
}

/// A token joined with its (current) owner.
#[derive(FromRow)]
pub(crate) struct TokenUserRow {
    #[sqlx(flatten)]
    pub token: TokenRow,
    pub u_id: String,
    pub u_email: String,
    pub u_groups_json: String,
    pub u_admin: bool,
    pub u_auditor: bool,
    pub u_created_at_ms: i64,
}

impl TokenUserRow {
    pub(crate) fn into_pair(self) -> Result<(TokenInfo, User)> {
        let user = UserRow {
            id: self.u_id,
            email: self.u_email,
            groups_json: self.u_groups_json,
            admin: self.u_admin,
            auditor: self.u_auditor,
            created_at_ms: self.u_created_at_ms,
        }
        .into_user()?;
        Ok((self.token.into_info()?, user))
    }
}

#[derive(FromRow)]
pub(crate) struct ConnectionRow {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub url_redacted: Option<String>,
    pub command_json: String,
    pub env_keys_json: String,
    pub access_groups_json: String,
    pub slack_channel: Option<String>,
    pub teams_webhook: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl ConnectionRow {
    pub(crate) fn into_connection(self) -> Result<Connection> {
        let k = self.name.as_str();
        let t = "connections";
        Ok(Connection {
            id: uuid(t, k, "id", &self.id)?,
            kind: ConnectionType::parse(&self.kind).ok_or_else(|| {
                corrupt(t, k, "kind", format_args!("unknown type {:?}", self.kind))
            })?,
            command: json(t, k, "command_json", &self.command_json)?,
            env_keys: json(t, k, "env_keys_json", &self.env_keys_json)?,
            access_groups: json(t, k, "access_groups_json", &self.access_groups_json)?,
            created_at: time(t, k, "created_at_ms", self.created_at_ms)?,
            updated_at: time(t, k, "updated_at_ms", self.updated_at_ms)?,
            url_redacted: self.url_redacted,
            slack_channel: self.slack_channel,
            teams_webhook: self.teams_webhook,
            name: self.name,
        })
    }
}

#[derive(FromRow)]
pub(crate) struct ConnectionSecretRow {
    #[sqlx(flatten)]
    pub conn: ConnectionRow,
    pub secret: Vec<u8>,
}

#[derive(FromRow)]
pub(crate) struct RuleRow {
    pub id: String,
    pub name: String,
    pub description: String,
    pub kind: String,
    pub connections_json: String,
    pub required_groups_json: String,
    pub approval_groups_json: String,
    pub require_all_groups: bool,
    pub approval_amount: i64,
    pub force_approval_groups_json: String,
    pub exempt_groups_json: String,
    pub timeout_sec: Option<i64>,
    pub max_duration_sec: Option<i64>,
    pub require_reason: bool,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl RuleRow {
    pub(crate) fn into_rule(self) -> Result<Rule> {
        let k = self.name.as_str();
        let t = "rules";
        Ok(Rule {
            id: uuid(t, k, "id", &self.id)?,
            kind: RuleType::parse(&self.kind).ok_or_else(|| {
                corrupt(
                    t,
                    k,
                    "kind",
                    format_args!("unknown rule type {:?}", self.kind),
                )
            })?,
            connections: json(t, k, "connections_json", &self.connections_json)?,
            required_groups: json(t, k, "required_groups_json", &self.required_groups_json)?,
            approval_groups: json(t, k, "approval_groups_json", &self.approval_groups_json)?,
            require_all_groups: self.require_all_groups,
            approval_amount: int(t, k, "approval_amount", self.approval_amount)?,
            force_approval_groups: json(
                t,
                k,
                "force_approval_groups_json",
                &self.force_approval_groups_json,
            )?,
            exempt_groups: json(t, k, "exempt_groups_json", &self.exempt_groups_json)?,
            timeout_sec: self.timeout_sec,
            max_duration_sec: self.max_duration_sec,
            require_reason: self.require_reason,
            created_at: time(t, k, "created_at_ms", self.created_at_ms)?,
            updated_at: time(t, k, "updated_at_ms", self.updated_at_ms)?,
            description: self.description,
            name: self.name,
        })
    }
}

#[derive(FromRow)]
pub(crate) struct ReviewRow {
    pub id: String,
    pub kind: String,
    pub status: String,
    pub connection: String,
    pub requester: String,
    pub requester_groups_json: String,
    pub rule_name: String,
    pub policy_json: String,
    pub command: Option<String>,
    pub command_sha256: Option<String>,
    pub duration_sec: Option<i64>,
    pub request_reason: Option<String>,
    pub approvals_json: String,
    pub decided_by: Option<String>,
    pub reason: Option<String>,
    pub forced: bool,
    pub created_at_ms: i64,
    pub decided_at_ms: Option<i64>,
    pub expires_at_ms: i64,
    pub window_end_ms: Option<i64>,
    pub version: i64,
}

impl ReviewRow {
    pub(crate) fn into_review(self) -> Result<Review> {
        let k = self.id.as_str();
        let t = "reviews";
        Ok(Review {
            id: uuid(t, k, "id", &self.id)?,
            kind: RuleType::parse(&self.kind).ok_or_else(|| {
                corrupt(
                    t,
                    k,
                    "kind",
                    format_args!("unknown review type {:?}", self.kind),
                )
            })?,
            status: ReviewStatus::parse(&self.status).ok_or_else(|| {
                corrupt(
                    t,
                    k,
                    "status",
                    format_args!("unknown status {:?}", self.status),
                )
            })?,
            requester_groups: json(t, k, "requester_groups_json", &self.requester_groups_json)?,
            policy: json(t, k, "policy_json", &self.policy_json)?,
            approvals: json(t, k, "approvals_json", &self.approvals_json)?,
            created_at: time(t, k, "created_at_ms", self.created_at_ms)?,
            decided_at: opt_time(t, k, "decided_at_ms", self.decided_at_ms)?,
            expires_at: time(t, k, "expires_at_ms", self.expires_at_ms)?,
            window_end: opt_time(t, k, "window_end_ms", self.window_end_ms)?,
            connection: self.connection,
            requester: self.requester,
            rule: self.rule_name,
            command: self.command,
            command_sha256: self.command_sha256,
            duration_sec: self.duration_sec,
            request_reason: self.request_reason,
            decided_by: self.decided_by,
            reason: self.reason,
            forced: self.forced,
            version: self.version,
        })
    }
}

#[derive(FromRow)]
pub(crate) struct SessionRow {
    pub id: String,
    pub kind: String,
    pub user_email: String,
    pub connection: String,
    pub review_id: Option<String>,
    pub command: Option<String>,
    pub started_at_ms: i64,
    pub ended_at_ms: Option<i64>,
    pub exit_code: Option<i64>,
    pub output: Option<Vec<u8>>,
    pub output_truncated: bool,
    pub output_sha256: Option<String>,
    pub duration_ms: Option<i64>,
    pub rows_json: Option<String>,
}

impl SessionRow {
    pub(crate) fn into_session(self) -> Result<Session> {
        let k = self.id.as_str();
        let t = "sessions";
        Ok(Session {
            id: uuid(t, k, "id", &self.id)?,
            kind: SessionKind::parse(&self.kind).ok_or_else(|| {
                corrupt(
                    t,
                    k,
                    "kind",
                    format_args!("unknown session kind {:?}", self.kind),
                )
            })?,
            review_id: opt_uuid(t, k, "review_id", self.review_id.as_deref())?,
            started_at: time(t, k, "started_at_ms", self.started_at_ms)?,
            ended_at: opt_time(t, k, "ended_at_ms", self.ended_at_ms)?,
            exit_code: self
                .exit_code
                .map(|c| int(t, k, "exit_code", c))
                .transpose()?,
            output: self
                .output
                .map(|b| {
                    String::from_utf8(b)
                        .map_err(|e| corrupt(t, k, "output", format_args!("not UTF-8: {e}")))
                })
                .transpose()?,
            rows_json: self
                .rows_json
                .as_deref()
                .map(|s| json(t, k, "rows_json", s))
                .transpose()?,
            user: self.user_email,
            connection: self.connection,
            command: self.command,
            output_truncated: self.output_truncated,
            output_sha256: self.output_sha256,
            duration_ms: self.duration_ms,
        })
    }
}

#[derive(FromRow)]
pub(crate) struct AuditRow {
    pub seq: i64,
    pub at_ms: i64,
    pub actor: String,
    pub event: String,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditRow {
    pub(crate) fn into_entry(self) -> Result<AuditEntry> {
        let k = self.seq.to_string();
        let t = "audit_log";
        Ok(AuditEntry {
            seq: self.seq,
            at: time(t, &k, "at_ms", self.at_ms)?,
            event: json(t, &k, "event", &self.event)?,
            actor: self.actor,
            prev_hash: self.prev_hash,
            hash: self.hash,
        })
    }
}
