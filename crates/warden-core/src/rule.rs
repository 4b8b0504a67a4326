//! Rule specs as users write them, validated into [`Rule`]s.
//!
//! Validation needs the set of known connections and the existing rules (to refuse a second rule
//! of one type on one connection); callers pass them in, so this stays pure.

use serde::{Deserialize, Serialize};
use thiserror::Error;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::model::{Rule, RuleType};

pub const MAX_NAME_LEN: usize = 128;
pub const MAX_DESCRIPTION_LEN: usize = 2000;

/// A rule as submitted by the CLI, API or web form, before validation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(rename = "type")]
    pub kind: Option<RuleType>,
    #[serde(default)]
    pub connections: Vec<String>,
    #[serde(default)]
    pub required_groups: Vec<String>,
    #[serde(default)]
    pub approval_groups: Vec<String>,
    #[serde(default)]
    pub require_all_groups: bool,
    #[serde(default)]
    pub approval_amount: Option<i64>,
    #[serde(default)]
    pub force_approval_groups: Vec<String>,
    #[serde(default)]
    pub exempt_groups: Vec<String>,
    #[serde(default)]
    pub timeout_sec: Option<i64>,
    #[serde(default)]
    pub max_duration_sec: Option<i64>,
    #[serde(default)]
    pub require_reason: bool,
}

/// Why a rule spec was refused; `field()` names the form field to highlight.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum RuleError {
    #[error("name: {0}")]
    Name(String),
    #[error("description: longer than {MAX_DESCRIPTION_LEN} characters")]
    Description,
    #[error("type: choose command or jit")]
    MissingType,
    #[error("connections: bind the rule to at least one connection")]
    NoConnections,
    #[error(
        "connections: unknown connection {0:?} (create it first: warden admin create connection)"
    )]
    UnknownConnection(String),
    #[error(
        "connections: connection {connection:?} already has a {kind} rule ({existing:?}); a connection has at most one rule of each type"
    )]
    AlreadyBound {
        connection: String,
        kind: &'static str,
        existing: String,
    },
    #[error("approval_groups: at least one approval group is required")]
    NoApprovalGroups,
    #[error("approval_amount: must be at least 1 (got {0})")]
    Amount(i64),
    #[error("approval_amount: {amount} is too large (at most 100)")]
    AmountTooLarge { amount: i64 },
    #[error("timeout: must be between 1 second and 30 days")]
    Timeout,
    #[error("max_duration: must be between 1 second and 30 days")]
    MaxDuration,
    #[error("max_duration: only jit rules have a max duration")]
    MaxDurationOnCommand,
    #[error("{field}: invalid group name {name:?} (letters, digits, - _ . @ only)")]
    GroupName { field: &'static str, name: String },
}

impl RuleError {
    /// The form field this error belongs to.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Name(_) => "name",
            Self::Description => "description",
            Self::MissingType => "type",
            Self::NoConnections | Self::UnknownConnection(_) | Self::AlreadyBound { .. } => {
                "connections"
            }
            Self::NoApprovalGroups => "approval_groups",
            Self::Amount(_) | Self::AmountTooLarge { .. } => "approval_amount",
            Self::Timeout => "timeout",
            Self::MaxDuration | Self::MaxDurationOnCommand => "max_duration",
            Self::GroupName { field, .. } => field,
        }
    }
}

const MAX_SECS: i64 = 30 * 86400;

/// Names of users' groups, connections and rules: short, printable, no whitespace or quotes.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
}

fn clean_groups(field: &'static str, groups: &[String]) -> Result<Vec<String>, RuleError> {
    let mut out: Vec<String> = Vec::new();
    for g in groups {
        let g = g.trim();
        if !valid_name(g) {
            return Err(RuleError::GroupName {
                field,
                name: g.to_string(),
            });
        }
        if !out.iter().any(|x| x == g) {
            out.push(g.to_string());
        }
    }
    Ok(out)
}

impl RuleSpec {
    /// Validates the spec against the known connections and the other existing rules.
    /// `replacing` is the id of the rule being updated (it does not conflict with itself); a new
    /// rule gets `new_id` (drawn by the caller: the core reads no RNG).
    pub fn validate(
        &self,
        known_connections: &[String],
        existing: &[Rule],
        replacing: Option<Uuid>,
        new_id: Uuid,
        now: OffsetDateTime,
    ) -> Result<Rule, RuleError> {
        let name = self.name.trim();
        if name.is_empty() {
            return Err(RuleError::Name("required".into()));
        }
        if !valid_name(name) {
            return Err(RuleError::Name(format!(
                "{name:?} is invalid: up to {MAX_NAME_LEN} letters, digits, - _ . @"
            )));
        }
        if existing
            .iter()
            .any(|r| r.name == name && Some(r.id) != replacing)
        {
            return Err(RuleError::Name(format!(
                "a rule named {name:?} already exists"
            )));
        }
        if self.description.chars().count() > MAX_DESCRIPTION_LEN {
            return Err(RuleError::Description);
        }
        let kind = self.kind.ok_or(RuleError::MissingType)?;
        let connections = clean_groups("connections", &self.connections)?;
        if connections.is_empty() {
            return Err(RuleError::NoConnections);
        }
        for c in &connections {
            if !known_connections.iter().any(|k| k == c) {
                return Err(RuleError::UnknownConnection(c.clone()));
            }
            if let Some(other) = existing
                .iter()
                .find(|r| r.kind == kind && Some(r.id) != replacing && r.binds(c))
            {
                return Err(RuleError::AlreadyBound {
                    connection: c.clone(),
                    kind: kind.as_str(),
                    existing: other.name.clone(),
                });
            }
        }
        let approval_groups = clean_groups("approval_groups", &self.approval_groups)?;
        if approval_groups.is_empty() {
            return Err(RuleError::NoApprovalGroups);
        }
        let amount = self.approval_amount.unwrap_or(1);
        if amount < 1 {
            return Err(RuleError::Amount(amount));
        }
        if amount > 100 {
            return Err(RuleError::AmountTooLarge { amount });
        }
        if let Some(t) = self.timeout_sec
            && !(1..=MAX_SECS).contains(&t)
        {
            return Err(RuleError::Timeout);
        }
        if let Some(d) = self.max_duration_sec {
            if kind == RuleType::Command {
                return Err(RuleError::MaxDurationOnCommand);
            }
            if !(1..=MAX_SECS).contains(&d) {
                return Err(RuleError::MaxDuration);
            }
        }
        let created_at = existing
            .iter()
            .find(|r| Some(r.id) == replacing)
            .map(|r| r.created_at)
            .unwrap_or(now);
        Ok(Rule {
            id: replacing.unwrap_or(new_id),
            name: name.to_string(),
            description: self.description.trim().to_string(),
            kind,
            connections,
            required_groups: clean_groups("required_groups", &self.required_groups)?,
            approval_groups,
            require_all_groups: self.require_all_groups,
            approval_amount: amount as u32,
            force_approval_groups: clean_groups(
                "force_approval_groups",
                &self.force_approval_groups,
            )?,
            exempt_groups: clean_groups("exempt_groups", &self.exempt_groups)?,
            timeout_sec: self.timeout_sec,
            max_duration_sec: self.max_duration_sec,
            require_reason: self.require_reason && kind == RuleType::Jit,
            created_at,
            updated_at: now,
        })
    }

    /// The spec of an existing rule (for partial updates: load, modify, validate again).
    pub fn from_rule(rule: &Rule) -> Self {
        Self {
            name: rule.name.clone(),
            description: rule.description.clone(),
            kind: Some(rule.kind),
            connections: rule.connections.clone(),
            required_groups: rule.required_groups.clone(),
            approval_groups: rule.approval_groups.clone(),
            require_all_groups: rule.require_all_groups,
            approval_amount: Some(rule.approval_amount as i64),
            force_approval_groups: rule.force_approval_groups.clone(),
            exempt_groups: rule.exempt_groups.clone(),
            timeout_sec: rule.timeout_sec,
            max_duration_sec: rule.max_duration_sec,
            require_reason: rule.require_reason,
        }
    }

    /// The `--reviewers g1,g2` shorthand: a command rule named after the connection requiring one
    /// approver from each group. Merges into an existing shorthand rule if there is one.
    pub fn reviewers_shorthand(connection: &str, reviewers: &[String]) -> Self {
        Self {
            name: connection.to_string(),
            description: format!("Created by --reviewers on connection {connection}"),
            kind: Some(RuleType::Command),
            connections: vec![connection.to_string()],
            approval_groups: reviewers.to_vec(),
            require_all_groups: true,
            approval_amount: Some(1),
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap()
    }

    fn spec() -> RuleSpec {
        RuleSpec {
            name: "prod".into(),
            kind: Some(RuleType::Command),
            connections: vec!["pg".into()],
            approval_groups: vec!["dba".into()],
            ..RuleSpec::default()
        }
    }

    fn conns() -> Vec<String> {
        vec!["pg".into(), "my".into()]
    }

    #[test]
    fn valid_spec_builds_a_rule_with_defaults() {
        let r = spec()
            .validate(&conns(), &[], None, Uuid::new_v4(), now())
            .unwrap();
        assert_eq!(r.approval_amount, 1);
        assert_eq!(r.max_duration(), DEFAULT_MAX_DURATION_SEC_FOR_TEST);
        assert!(!r.require_all_groups);
    }
    const DEFAULT_MAX_DURATION_SEC_FOR_TEST: i64 = crate::model::DEFAULT_MAX_DURATION_SEC;

    #[test]
    fn refusals_name_the_field() {
        let cases: Vec<(RuleSpec, &str)> = vec![
            (
                RuleSpec {
                    name: "".into(),
                    ..spec()
                },
                "name",
            ),
            (
                RuleSpec {
                    name: "a b".into(),
                    ..spec()
                },
                "name",
            ),
            (
                RuleSpec {
                    kind: None,
                    ..spec()
                },
                "type",
            ),
            (
                RuleSpec {
                    connections: vec![],
                    ..spec()
                },
                "connections",
            ),
            (
                RuleSpec {
                    connections: vec!["nope".into()],
                    ..spec()
                },
                "connections",
            ),
            (
                RuleSpec {
                    approval_groups: vec![],
                    ..spec()
                },
                "approval_groups",
            ),
            (
                RuleSpec {
                    approval_amount: Some(0),
                    ..spec()
                },
                "approval_amount",
            ),
            (
                RuleSpec {
                    approval_amount: Some(-3),
                    ..spec()
                },
                "approval_amount",
            ),
            (
                RuleSpec {
                    timeout_sec: Some(0),
                    ..spec()
                },
                "timeout",
            ),
            (
                RuleSpec {
                    max_duration_sec: Some(60),
                    ..spec()
                },
                "max_duration",
            ),
            (
                RuleSpec {
                    exempt_groups: vec!["bad group".into()],
                    ..spec()
                },
                "exempt_groups",
            ),
            (
                RuleSpec {
                    description: "x".repeat(3000),
                    ..spec()
                },
                "description",
            ),
        ];
        for (s, field) in cases {
            let e = s
                .validate(&conns(), &[], None, Uuid::new_v4(), now())
                .unwrap_err();
            assert_eq!(e.field(), field, "{e}");
        }
    }

    #[test]
    fn second_rule_of_one_type_on_a_connection_is_refused() {
        let first = spec()
            .validate(&conns(), &[], None, Uuid::new_v4(), now())
            .unwrap();
        let second = RuleSpec {
            name: "other".into(),
            ..spec()
        };
        let e = second
            .validate(
                &conns(),
                std::slice::from_ref(&first),
                None,
                Uuid::new_v4(),
                now(),
            )
            .unwrap_err();
        assert!(matches!(e, RuleError::AlreadyBound { .. }), "{e}");
        // A jit rule on the same connection is fine.
        let jit = RuleSpec {
            name: "other".into(),
            kind: Some(RuleType::Jit),
            ..spec()
        };
        assert!(
            jit.validate(
                &conns(),
                std::slice::from_ref(&first),
                None,
                Uuid::new_v4(),
                now()
            )
            .is_ok()
        );
        // Updating the rule itself does not conflict with itself.
        let again = spec().validate(
            &conns(),
            std::slice::from_ref(&first),
            Some(first.id),
            Uuid::new_v4(),
            now(),
        );
        assert!(again.is_ok());
        // Duplicate names are refused.
        let dup = RuleSpec {
            connections: vec!["my".into()],
            ..spec()
        };
        assert_eq!(
            dup.validate(&conns(), &[first], None, Uuid::new_v4(), now())
                .unwrap_err()
                .field(),
            "name"
        );
    }

    #[test]
    fn groups_are_deduplicated_and_shorthand_requires_all() {
        let s = RuleSpec {
            approval_groups: vec!["dba".into(), "dba".into(), " sec ".into()],
            ..spec()
        };
        let r = s
            .validate(&conns(), &[], None, Uuid::new_v4(), now())
            .unwrap();
        assert_eq!(r.approval_groups, vec!["dba", "sec"]);
        let sh = RuleSpec::reviewers_shorthand("pg", &["dba".into(), "sec".into()]);
        let r = sh
            .validate(&conns(), &[], None, Uuid::new_v4(), now())
            .unwrap();
        assert!(r.require_all_groups);
        assert_eq!(r.name, "pg");
    }
}
