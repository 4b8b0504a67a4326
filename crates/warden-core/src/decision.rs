//! Access decisions: given a user, a connection and the rules bound to it, what happens to a
//! command (or a JIT request)? Decisions are values, never errors: the caller acts on them.
//!
//! Evaluation order (SPEC §2/§3): access groups → active JIT window → rule binding → exempt
//! groups → required groups → admin auto-approve.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::model::{Connection, Review, ReviewStatus, Rule, RuleType, User};

/// Why a request is allowed without a (new) review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AllowReason {
    /// No rule of the relevant type is bound to the connection.
    NoRule,
    /// The user is in one of the rule's exempt groups.
    Exempt { rule: String },
    /// The rule has required groups and the user is in none of them.
    NotRequired { rule: String },
    /// An approved JIT window covers `now`.
    Window {
        review_id: Uuid,
        #[serde(with = "crate::timefmt::rfc3339_ms")]
        until: OffsetDateTime,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DenyReason {
    /// The connection's access groups do not include the user.
    NoAccess { connection: String },
    /// Only a JIT rule is bound and no window is open.
    NeedsWindow { connection: String, rule: String },
    /// A JIT request was refused (duration, reason, no rule…).
    InvalidRequest { message: String },
    /// The user is an auditor: read-only accounts run nothing.
    ReadOnly,
}

impl DenyReason {
    pub fn message(&self) -> String {
        match self {
            Self::NoAccess { connection } => format!(
                "you are not in any access group of connection {connection:?}; ask an admin for access"
            ),
            Self::NeedsWindow { connection, rule } => format!(
                "connection {connection:?} requires a just-in-time window (rule {rule:?}); request one: warden request {connection} --duration 1h --reason \"…\""
            ),
            Self::InvalidRequest { message } => message.clone(),
            Self::ReadOnly => "auditor accounts are read-only: they cannot run commands or open windows (use an engineer's account)".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    Allow(AllowReason),
    Deny(DenyReason),
    /// A review is created and approved at once (an admin's own request).
    AutoApprove {
        rule: String,
    },
    /// A review is created PENDING under this rule.
    NeedsReview {
        rule: String,
    },
}

/// Everything `evaluate` needs, gathered by the caller.
pub struct AccessContext<'a> {
    pub user: &'a User,
    pub connection: &'a Connection,
    /// Rules bound to the connection (at most one per type).
    pub rules: &'a [Rule],
    /// The user's reviews on this connection that may be open JIT windows.
    pub windows: &'a [Review],
    pub admin_auto_approve: bool,
}

impl AccessContext<'_> {
    fn rule(&self, kind: RuleType) -> Option<&Rule> {
        self.rules
            .iter()
            .find(|r| r.kind == kind && r.binds(&self.connection.name))
    }

    /// The open JIT window of this user on this connection at `now`, if any.
    pub fn active_window(&self, now: OffsetDateTime) -> Option<&Review> {
        self.windows.iter().find(|r| {
            r.kind == RuleType::Jit
                && r.connection == self.connection.name
                && r.requester == self.user.email
                && r.window_active(now)
        })
    }
}

/// Outcome of the per-rule checks shared by commands and JIT requests.
enum RuleCheck {
    Allow(AllowReason),
    Review,
}

fn check_rule(user: &User, rule: &Rule) -> RuleCheck {
    if user.in_any(&rule.exempt_groups) {
        return RuleCheck::Allow(AllowReason::Exempt {
            rule: rule.name.clone(),
        });
    }
    if !rule.required_groups.is_empty() && !user.in_any(&rule.required_groups) {
        return RuleCheck::Allow(AllowReason::NotRequired {
            rule: rule.name.clone(),
        });
    }
    RuleCheck::Review
}

/// Decides what happens to one command (exec, web terminal, or a proxied statement that needs
/// review) by `ctx.user` on `ctx.connection` at `now`.
pub fn evaluate_command(ctx: &AccessContext<'_>, now: OffsetDateTime) -> Decision {
    if ctx.user.auditor {
        return Decision::Deny(DenyReason::ReadOnly);
    }
    if !ctx.connection.allows(ctx.user) {
        return Decision::Deny(DenyReason::NoAccess {
            connection: ctx.connection.name.clone(),
        });
    }
    if let Some(w) = ctx.active_window(now) {
        return Decision::Allow(AllowReason::Window {
            review_id: w.id,
            until: w.window_end.unwrap_or(now),
        });
    }
    if let Some(rule) = ctx.rule(RuleType::Command) {
        return match check_rule(ctx.user, rule) {
            RuleCheck::Allow(a) => Decision::Allow(a),
            RuleCheck::Review if ctx.user.admin && ctx.admin_auto_approve => {
                Decision::AutoApprove {
                    rule: rule.name.clone(),
                }
            }
            RuleCheck::Review => Decision::NeedsReview {
                rule: rule.name.clone(),
            },
        };
    }
    if let Some(rule) = ctx.rule(RuleType::Jit) {
        return match check_rule(ctx.user, rule) {
            RuleCheck::Allow(a) => Decision::Allow(a),
            RuleCheck::Review => Decision::Deny(DenyReason::NeedsWindow {
                connection: ctx.connection.name.clone(),
                rule: rule.name.clone(),
            }),
        };
    }
    Decision::Allow(AllowReason::NoRule)
}

/// Decides a JIT request for a window of `duration_sec`.
pub fn evaluate_jit(ctx: &AccessContext<'_>, duration_sec: i64, reason: Option<&str>) -> Decision {
    let invalid = |message: String| Decision::Deny(DenyReason::InvalidRequest { message });
    if ctx.user.auditor {
        return Decision::Deny(DenyReason::ReadOnly);
    }
    if !ctx.connection.allows(ctx.user) {
        return Decision::Deny(DenyReason::NoAccess {
            connection: ctx.connection.name.clone(),
        });
    }
    let Some(rule) = ctx.rule(RuleType::Jit) else {
        return invalid(format!(
            "connection {:?} has no just-in-time rule: no window is needed (or ask an admin to create one with warden admin create rule NAME --type jit)",
            ctx.connection.name
        ));
    };
    if duration_sec < 1 {
        return invalid("duration must be at least 1 second".into());
    }
    if duration_sec > rule.max_duration() {
        return invalid(format!(
            "requested duration {} exceeds the rule's max duration {} (rule {:?})",
            crate::duration::format_duration(duration_sec),
            crate::duration::format_duration(rule.max_duration()),
            rule.name
        ));
    }
    if rule.require_reason && reason.is_none_or(crate::text::is_blank) {
        return invalid(format!(
            "rule {:?} requires a reason: add --reason \"why you need access\"",
            rule.name
        ));
    }
    match check_rule(ctx.user, rule) {
        RuleCheck::Allow(a) => Decision::Allow(a),
        RuleCheck::Review if ctx.user.admin && ctx.admin_auto_approve => Decision::AutoApprove {
            rule: rule.name.clone(),
        },
        RuleCheck::Review => Decision::NeedsReview {
            rule: rule.name.clone(),
        },
    }
}

impl Review {
    /// True while an approved JIT window covers `now`.
    pub fn window_active(&self, now: OffsetDateTime) -> bool {
        self.kind == RuleType::Jit
            && self.status == ReviewStatus::Approved
            && self.window_end.is_some_and(|end| now < end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ConnectionType, Policy};
    use time::Duration;

    fn t0() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap()
    }
    fn user(email: &str, groups: &[&str], admin: bool) -> User {
        User {
            id: Uuid::new_v4(),
            email: email.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            admin,
            auditor: false,
            created_at: t0(),
        }
    }
    fn conn(access: &[&str]) -> Connection {
        Connection {
            id: Uuid::new_v4(),
            name: "pg".into(),
            kind: ConnectionType::Postgres,
            url_redacted: None,
            command: vec![],
            env_keys: vec![],
            access_groups: access.iter().map(|g| g.to_string()).collect(),
            slack_channel: None,
            teams_webhook: None,
            created_at: t0(),
            updated_at: t0(),
        }
    }
    fn rule(kind: RuleType) -> Rule {
        Rule {
            id: Uuid::new_v4(),
            name: format!("r-{}", kind.as_str()),
            description: String::new(),
            kind,
            connections: vec!["pg".into()],
            required_groups: vec![],
            approval_groups: vec!["dba".into()],
            require_all_groups: false,
            approval_amount: 1,
            force_approval_groups: vec![],
            exempt_groups: vec!["sre".into()],
            timeout_sec: None,
            max_duration_sec: Some(7200),
            require_reason: true,
            created_at: t0(),
            updated_at: t0(),
        }
    }
    fn window(u: &User, end: OffsetDateTime) -> Review {
        Review {
            id: Uuid::new_v4(),
            kind: RuleType::Jit,
            status: ReviewStatus::Approved,
            connection: "pg".into(),
            requester: u.email.clone(),
            requester_groups: vec![],
            rule: "r-jit".into(),
            policy: Policy {
                approval_groups: vec!["dba".into()],
                require_all_groups: false,
                approval_amount: 1,
                force_approval_groups: vec![],
            },
            command: None,
            command_sha256: None,
            duration_sec: Some(3600),
            request_reason: None,
            approvals: vec![],
            decided_by: None,
            reason: None,
            forced: false,
            created_at: t0(),
            decided_at: Some(t0()),
            expires_at: t0(),
            window_end: Some(end),
            version: 1,
        }
    }
    fn ctx<'a>(
        u: &'a User,
        c: &'a Connection,
        rules: &'a [Rule],
        w: &'a [Review],
    ) -> AccessContext<'a> {
        AccessContext {
            user: u,
            connection: c,
            rules,
            windows: w,
            admin_auto_approve: true,
        }
    }

    #[test]
    fn access_groups_come_first() {
        let u = user("a@x", &["sre"], true);
        let c = conn(&["dev"]);
        let d = evaluate_command(&ctx(&u, &c, &[], &[]), t0());
        assert!(matches!(d, Decision::Deny(DenyReason::NoAccess { .. })));
        assert!(matches!(
            evaluate_jit(&ctx(&u, &c, &[], &[]), 60, Some("x")),
            Decision::Deny(DenyReason::NoAccess { .. })
        ));
    }

    #[test]
    fn auditors_run_nothing_whatever_their_groups() {
        let mut a = user("audit@x", &["dev"], false);
        a.auditor = true;
        let c = conn(&["dev"]);
        assert!(
            !c.allows(&a),
            "the connection refuses auditors on its own too"
        );
        let w = [window(&a, t0() + Duration::minutes(10))];
        for rules in [
            vec![],
            vec![rule(RuleType::Command)],
            vec![rule(RuleType::Jit)],
        ] {
            assert_eq!(
                evaluate_command(&ctx(&a, &c, &rules, &w), t0()),
                Decision::Deny(DenyReason::ReadOnly)
            );
            assert_eq!(
                evaluate_jit(&ctx(&a, &c, &rules, &[]), 60, Some("look")),
                Decision::Deny(DenyReason::ReadOnly)
            );
        }
    }

    #[test]
    fn order_of_command_evaluation() {
        let c = conn(&[]);
        let rules = [rule(RuleType::Command)];
        let dev = user("d@x", &["dev"], false);
        assert_eq!(
            evaluate_command(&ctx(&dev, &c, &[], &[]), t0()),
            Decision::Allow(AllowReason::NoRule)
        );
        assert!(matches!(
            evaluate_command(&ctx(&dev, &c, &rules, &[]), t0()),
            Decision::NeedsReview { .. }
        ));
        let sre = user("s@x", &["sre"], true);
        assert!(matches!(
            evaluate_command(&ctx(&sre, &c, &rules, &[]), t0()),
            Decision::Allow(AllowReason::Exempt { .. })
        ));
        let admin = user("a@x", &["dev"], true);
        assert!(matches!(
            evaluate_command(&ctx(&admin, &c, &rules, &[]), t0()),
            Decision::AutoApprove { .. }
        ));
        let mut no_auto = ctx(&admin, &c, &rules, &[]);
        no_auto.admin_auto_approve = false;
        assert!(matches!(
            evaluate_command(&no_auto, t0()),
            Decision::NeedsReview { .. }
        ));
        let mut req = rule(RuleType::Command);
        req.required_groups = vec!["contractors".into()];
        let req = [req];
        assert!(matches!(
            evaluate_command(&ctx(&dev, &c, &req, &[]), t0()),
            Decision::Allow(AllowReason::NotRequired { .. })
        ));
    }

    #[test]
    fn jit_window_allows_until_its_end_only() {
        let c = conn(&[]);
        let rules = [rule(RuleType::Command), rule(RuleType::Jit)];
        let dev = user("d@x", &["dev"], false);
        let w = [window(&dev, t0() + Duration::minutes(10))];
        assert!(matches!(
            evaluate_command(&ctx(&dev, &c, &rules, &w), t0()),
            Decision::Allow(AllowReason::Window { .. })
        ));
        let after = t0() + Duration::minutes(10);
        assert!(matches!(
            evaluate_command(&ctx(&dev, &c, &rules, &w), after),
            Decision::NeedsReview { .. }
        ));
        // Another user's window does not count.
        let other = user("o@x", &["dev"], false);
        assert!(matches!(
            evaluate_command(&ctx(&other, &c, &rules, &w), t0()),
            Decision::NeedsReview { .. }
        ));
        // Only a jit rule: no window → denied with a hint.
        let jit_only = [rule(RuleType::Jit)];
        let d = evaluate_command(&ctx(&dev, &c, &jit_only, &[]), t0());
        assert!(matches!(&d, Decision::Deny(DenyReason::NeedsWindow { .. })));
    }

    #[test]
    fn jit_requests_check_duration_and_reason() {
        let c = conn(&[]);
        let rules = [rule(RuleType::Jit)];
        let dev = user("d@x", &["dev"], false);
        let x = ctx(&dev, &c, &rules, &[]);
        assert!(matches!(
            evaluate_jit(&x, 3600, Some("incident")),
            Decision::NeedsReview { .. }
        ));
        let Decision::Deny(d) = evaluate_jit(&x, 3 * 3600, Some("incident")) else {
            panic!()
        };
        assert!(d.message().contains("max duration 2h"), "{}", d.message());
        let Decision::Deny(d) = evaluate_jit(&x, 60, None) else {
            panic!()
        };
        assert!(d.message().contains("requires a reason"));
        assert!(matches!(evaluate_jit(&x, 0, Some("r")), Decision::Deny(_)));
        assert!(matches!(
            evaluate_jit(&ctx(&dev, &c, &[], &[]), 60, None),
            Decision::Deny(_)
        ));
    }
}
