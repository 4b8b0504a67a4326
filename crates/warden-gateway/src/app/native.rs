//! The access decision for native (PostgreSQL wire) sessions: made at login, made again for
//! every statement that is not a read, and re-made every second for every live session, always
//! from the store's current state (user, groups, token, rules, windows) through the same
//! `warden_core::decision::evaluate_command` as `exec`.
//!
//! Nothing here speaks the wire protocol or touches a socket: the proxy adapter (`proxy.rs`)
//! asks, this module answers.

use time::OffsetDateTime;
use uuid::Uuid;
use warden_core::audit::AuditEvent;
use warden_core::decision::{AccessContext, AllowReason, Decision, evaluate_command};
use warden_core::{
    ConnectionType, Review, ReviewStatus, Rule, RuleType, Session, SessionKind, User,
};
use warden_store::{AuditCtx, ConnectionRecord, StatementRecord};

use super::reviews::{Ask, Runner};
use super::{App, AppError, AppResult};

/// How a native session may use its connection, now.
#[derive(Debug, Clone)]
pub enum NativeAccess {
    /// Statements run freely (audited): no command rule holds, or a JIT window is open.
    Free {
        window: Option<(Uuid, OffsetDateTime)>,
    },
    /// A command rule holds statements that are not reads.
    Reviewed,
    /// No access; the message says why.
    Denied(String),
}

/// What a decision was made with.
pub struct NativeDecision {
    pub user: User,
    pub connection: ConnectionRecord,
    pub rules: Vec<Rule>,
    pub decision: Decision,
}

impl App {
    /// The current decision for `user` on the PostgreSQL connection `connection`;
    /// `Ok(Err(message))` when there is no such connection.
    pub async fn native_decision(
        &self,
        user: &User,
        connection: &str,
    ) -> AppResult<Result<NativeDecision, String>> {
        let Some(rec) = self
            .store
            .get_connection(connection)
            .await?
            .filter(|r| r.connection.kind == ConnectionType::Postgres)
        else {
            return Ok(Err(format!(
                "no PostgreSQL connection named {connection:?} (the database name is the \
                 Warden connection name)"
            )));
        };
        let rules = self.store.rules_for_connection(connection).await?;
        let windows = self.store.approved_windows(&user.email, connection).await?;
        let now = self.now();
        let decision = evaluate_command(
            &AccessContext {
                user,
                connection: &rec.connection,
                rules: &rules,
                windows: &windows,
                admin_auto_approve: self.config.admin_auto_approve,
            },
            now,
        );
        Ok(Ok(NativeDecision {
            user: user.clone(),
            connection: rec,
            rules,
            decision,
        }))
    }

    /// Re-decides a live session from scratch: the token it logged in with must still be
    /// valid and the user's, and the rules must still give it the access it started with.
    /// `Some(reason)` means the session must end now.
    pub async fn recheck_native(
        &self,
        token_sha256: &str,
        email: &str,
        connection: &str,
        started: &NativeAccess,
    ) -> AppResult<Option<String>> {
        let user = match self.store.user_by_token(token_sha256, self.now()).await? {
            Some((_, u)) if u.email.eq_ignore_ascii_case(email) => u,
            _ => {
                return Ok(Some(
                    "the API token this session logged in with was revoked or expired, or its \
                     user was removed"
                        .into(),
                ));
            }
        };
        let now = match self.native_decision(&user, connection).await? {
            Ok(d) => access_of(&d.decision),
            Err(msg) => return Ok(Some(msg)),
        };
        Ok(match (started, now) {
            (_, NativeAccess::Denied(m)) => Some(m),
            // Reviewed sessions are re-decided per statement; they never become freer.
            (NativeAccess::Reviewed, _) => None,
            (NativeAccess::Free { window: Some(_) }, NativeAccess::Free { window: Some(_) }) => {
                None
            }
            (NativeAccess::Free { window: None }, NativeAccess::Free { .. }) => None,
            (NativeAccess::Free { window: Some(_) }, NativeAccess::Free { window: None }) => None,
            (NativeAccess::Free { .. }, NativeAccess::Reviewed) => Some(
                "a command rule now applies to this connection: reconnect to work under \
                 statement review"
                    .into(),
            ),
            (NativeAccess::Denied(_), _) => Some("access was denied".into()),
        })
    }
}

/// Why a held statement that never ran is settled the way it is.
const GONE_PENDING: &str = "the client disconnected before the statement was decided";
const GONE_APPROVED: &str = "the client disconnected before the approved statement's result was \
     recorded; it may not have run — check the target before resubmitting";

impl App {
    /// Holds one statement of a native session for review under `rule`: the review (with its
    /// `ReviewRequested` event) is stored with its execution slot already claimed, because the
    /// session that holds it runs it, never an executor.
    pub async fn hold_native_statement(
        &self,
        user: &User,
        connection: &str,
        rule: &Rule,
        statement: String,
    ) -> AppResult<Review> {
        let ask = Ask {
            connection: connection.to_string(),
            command: Some(statement),
            duration_sec: None,
            reason: None,
        };
        self.open_review(user, rule, ask, false, Runner::HoldingSession)
            .await
    }

    /// Keeps the execution claims of statements a live session holds from going stale.
    pub async fn renew_held(&self, review_ids: &[Uuid]) -> AppResult<()> {
        Ok(self.store.renew_claims(review_ids, self.now()).await?)
    }

    /// Settles a held statement whose session ended before its run was recorded, so that no
    /// review is left PENDING or APPROVED with nothing that will ever run it: a pending one is
    /// withdrawn, an approved one is closed as executed with an unknown outcome.
    pub async fn settle_abandoned(&self, review_id: Uuid) -> AppResult<()> {
        // A decision may race the withdrawal; settle whatever it became (a few rounds at most).
        for _ in 0..4 {
            let Some(review) = self.store.get_review(review_id).await? else {
                return Ok(());
            };
            match review.status {
                ReviewStatus::Pending => {
                    if self.abandon(review_id, GONE_PENDING).await? {
                        return Ok(());
                    }
                }
                ReviewStatus::Approved => {
                    let s = self.failed_session(&review, GONE_APPROVED).await?;
                    let ev = AuditEvent::ReviewExecuted {
                        review_id,
                        session_id: s.id,
                        exit_code: 2,
                        output_sha256: s.output_sha256.clone().unwrap_or_default(),
                        duration_ms: 0,
                    };
                    return self.mark_review_executed(review_id, ev).await.map(|_| ());
                }
                _ => return Ok(()),
            }
        }
        Err(AppError::conflict(
            "busy",
            format!("review {review_id} kept changing while its abandoned statement was settled"),
        ))
    }
}

/// The session mode a decision gives.
pub fn access_of(d: &Decision) -> NativeAccess {
    match d {
        Decision::Deny(d) => NativeAccess::Denied(d.message()),
        Decision::Allow(AllowReason::Window { review_id, until }) => NativeAccess::Free {
            window: Some((*review_id, *until)),
        },
        Decision::Allow(_) | Decision::AutoApprove { .. } => NativeAccess::Free { window: None },
        Decision::NeedsReview { .. } => NativeAccess::Reviewed,
    }
}

/// The records of a native session (its start, its statements, its end): what the proxy
/// adapter hands over, written here so only `app` talks to the store.
impl App {
    /// Records the start of a granted session: its row, `LoginSucceeded` and `SessionStarted`,
    /// in one write. Nothing of the session may reach the server before this is durable.
    pub async fn start_native_session(
        &self,
        session_id: Uuid,
        user: &str,
        connection: &str,
        review_id: Option<Uuid>,
    ) -> AppResult<()> {
        let now = self.now();
        let session = Session::starting(
            session_id,
            SessionKind::Proxy,
            user,
            connection,
            review_id,
            None,
            now,
        );
        let events = vec![
            AuditEvent::LoginSucceeded { via: "pg".into() },
            AuditEvent::SessionStarted {
                session_id: session.id,
                session_kind: SessionKind::Proxy.as_str().into(),
                connection: session.connection.clone(),
                review_id: session.review_id,
                command_sha256: None,
            },
        ];
        self.store
            .insert_session(&session, AuditCtx::new(user, now, events))
            .await?;
        Ok(())
    }

    /// Chains a batch of statement records (one audit entry per session per batch).
    pub async fn record_native_statements(&self, records: Vec<StatementRecord>) -> AppResult<()> {
        Ok(self.store.record_statements(records).await?)
    }

    /// Closes a native session's record (end time, duration, `SessionEnded`). A session whose
    /// start was never recorded has nothing to close.
    pub async fn end_native_session(&self, session_id: Uuid, user: &str) -> AppResult<()> {
        let Some(mut s) = self.store.get_session(session_id).await? else {
            return Ok(());
        };
        let now = self.now();
        s.ended_at = Some(now);
        s.duration_ms = Some((now - s.started_at).whole_milliseconds() as i64);
        let ev = AuditEvent::SessionEnded {
            session_id: s.id,
            exit_code: None,
            output_sha256: None,
        };
        self.store
            .finish_session(&s, AuditCtx::new(user, now, vec![ev]))
            .await?;
        Ok(())
    }

    /// Audits one event of the native path (a failed login, a refusal, a live session cut).
    pub async fn audit_native(&self, actor: &str, ev: AuditEvent) -> AppResult<()> {
        Ok(self
            .store
            .append_audit(AuditCtx::new(actor, self.now(), vec![ev]))
            .await?)
    }
}

/// What happens to one statement of a native session that is not a read.
pub enum StatementRuling {
    /// It runs, read-write (a JIT window, or no command rule holds it any more).
    Allow { review_id: Option<Uuid> },
    /// It is refused; the message says why.
    Deny(String),
    /// It is held: `review` waits for approvers (wait with [`App::await_held`]).
    Held {
        review: Box<Review>,
        user: Box<User>,
    },
}

/// How a held statement's review settled.
pub enum HeldResult {
    Approved,
    Rejected {
        by: String,
        reason: String,
    },
    /// Expired, revoked, or never decided (the gateway is stopping, the wait failed).
    Expired,
}

impl App {
    /// Rules on a statement of `user`'s native session on `connection` that the classifier did
    /// not read as a read: decided with the current user, groups, rules and windows, as `exec`
    /// is; held under the command rule that requires review.
    pub async fn rule_on_native_statement(
        &self,
        user: &str,
        connection: &str,
        statement: String,
    ) -> AppResult<StatementRuling> {
        let user = self
            .find_user(user)
            .await?
            .ok_or_else(|| AppError::Forbidden("user no longer exists".into()))?;
        let decided = self
            .native_decision(&user, connection)
            .await?
            .map_err(AppError::Forbidden)?;
        let rule_name = match &decided.decision {
            Decision::Deny(d) => {
                return Ok(StatementRuling::Deny(format!("Warden: {}", d.message())));
            }
            Decision::Allow(AllowReason::Window { review_id, .. }) => {
                return Ok(StatementRuling::Allow {
                    review_id: Some(*review_id),
                });
            }
            // No command rule holds it any more (removed, or the user is exempt now), or an
            // admin's own statement under auto-approve.
            Decision::Allow(_) | Decision::AutoApprove { .. } => {
                return Ok(StatementRuling::Allow { review_id: None });
            }
            Decision::NeedsReview { rule } => rule.clone(),
        };
        let Some(rule) = decided
            .rules
            .iter()
            .find(|r| r.kind == RuleType::Command && r.name == rule_name)
        else {
            return Err(AppError::Internal(anyhow::anyhow!(
                "rule {rule_name} vanished while deciding"
            )));
        };
        let review = self
            .hold_native_statement(&user, connection, rule, statement)
            .await?;
        Ok(StatementRuling::Held {
            review: Box::new(review),
            user: Box::new(user),
        })
    }

    /// Waits until a held statement's review is decided (re-polling every 30 s, ending early
    /// when the gateway stops).
    pub async fn await_held(&self, user: &User, id: Uuid) -> HeldResult {
        loop {
            match self
                .wait_decision(user, id, std::time::Duration::from_secs(30))
                .await
            {
                Ok(v) => match v.review.status {
                    ReviewStatus::Approved | ReviewStatus::Executed => return HeldResult::Approved,
                    ReviewStatus::Rejected => {
                        return HeldResult::Rejected {
                            by: v.review.decided_by.unwrap_or_default(),
                            reason: v.review.reason.unwrap_or_default(),
                        };
                    }
                    ReviewStatus::Expired | ReviewStatus::Revoked => return HeldResult::Expired,
                    ReviewStatus::Pending => {
                        if self.shutdown.is_cancelled() {
                            return HeldResult::Expired;
                        }
                    }
                },
                Err(e) => {
                    tracing::error!(error = %e, review = %id, "waiting for a held statement failed");
                    return HeldResult::Expired;
                }
            }
        }
    }
}
