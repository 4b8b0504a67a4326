//! Running commands: `exec` evaluates the rules and either runs at once, or stores a PENDING
//! review; `execute_review` runs an approved review's stored command exactly once.
//!
//! # What it must never do
//! Run anything but the stored, approved bytes, run a review twice, or hand the executor a
//! target that is the gateway's own file (checked again right before every run).

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;
use warden_core::audit::AuditEvent;
use warden_core::decision::{AccessContext, AllowReason, Decision, evaluate_command};
use warden_core::{ExecOutcome, Review, ReviewStatus, Session, SessionKind, User};
use warden_exec::ExecOptions;
use warden_store::{AuditCtx, ConnectionRecord};

use super::reviews::{Ask, ReviewView, Runner};
use super::{App, AppError, AppResult};

/// Longest command accepted (the stored, approved bytes).
pub const MAX_COMMAND_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ExecResult {
    /// Ran now (no review needed, exempt, inside a JIT window, or auto-approved).
    Executed {
        session: Box<Session>,
        review: Option<Box<ReviewView>>,
    },
    /// Held: a PENDING review waits for approvers.
    Pending { review: Box<ReviewView> },
}

impl App {
    pub async fn exec(
        self: &Arc<Self>,
        user: &User,
        connection: &str,
        command: &str,
        kind: SessionKind,
    ) -> AppResult<ExecResult> {
        if command.trim().is_empty() {
            return Err(AppError::bad(
                "empty_command",
                "command is empty: pass -i \"…\", -f FILE or stdin",
            ));
        }
        if command.len() > MAX_COMMAND_BYTES {
            return Err(AppError::bad(
                "command_too_large",
                format!("command is larger than {MAX_COMMAND_BYTES} bytes"),
            ));
        }
        let Some(rec) = self.store.get_connection(connection).await? else {
            return Err(AppError::NotFound(
                self.unknown_connection(user, connection).await,
            ));
        };
        let rules = self.store.rules_for_connection(connection).await?;
        let windows = self.store.approved_windows(&user.email, connection).await?;
        let now = self.now();
        let ctx = AccessContext {
            user,
            connection: &rec.connection,
            rules: &rules,
            windows: &windows,
            admin_auto_approve: self.config.admin_auto_approve,
        };
        match evaluate_command(&ctx, now) {
            Decision::Deny(d) => {
                self.audit_denied(user, connection, &d.message()).await;
                Err(AppError::Forbidden(d.message()))
            }
            Decision::Allow(reason) => {
                let review_id = match reason {
                    AllowReason::Window { review_id, .. } => Some(review_id),
                    _ => None,
                };
                let session = self
                    .run_session(&rec, &user.email, command, review_id, kind)
                    .await?;
                Ok(ExecResult::Executed {
                    session: Box::new(session),
                    review: None,
                })
            }
            Decision::AutoApprove { rule } | Decision::NeedsReview { rule } => {
                let auto = self.config.admin_auto_approve && user.admin;
                let rule = rules
                    .iter()
                    .find(|r| r.name == rule)
                    .ok_or_else(|| AppError::Internal(anyhow::anyhow!("rule {rule} vanished")))?;
                let ask = Ask {
                    connection: connection.into(),
                    command: Some(command.to_string()),
                    duration_sec: None,
                    reason: None,
                };
                let stored = self
                    .open_review(user, rule, ask, auto, Runner::Executor)
                    .await?;
                if auto {
                    let session = self.execute_review(stored.id).await?.ok_or_else(|| {
                        AppError::conflict("already_executed", "review already executed")
                    })?;
                    let review = self
                        .store
                        .get_review(stored.id)
                        .await?
                        .ok_or_else(|| AppError::NotFound("review".into()))?;
                    let view = self.view(user, review).await?;
                    return Ok(ExecResult::Executed {
                        session: Box::new(session),
                        review: Some(Box::new(view)),
                    });
                }
                Ok(ExecResult::Pending {
                    review: Box::new(self.view(user, stored).await?),
                })
            }
        }
    }

    /// Runs an approved command review once: claims it and records the session's start in one
    /// write (exactly one caller wins, across replicas), runs the **stored** command, then
    /// records the outcome and EXECUTED in one write. Returns `None` if someone else claimed it.
    pub async fn execute_review(self: &Arc<Self>, id: Uuid) -> AppResult<Option<Session>> {
        let review = self
            .store
            .get_review(id)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("no review {id}")))?;
        let Some(command) = review.command.clone() else {
            return Ok(None);
        };
        if review.status != ReviewStatus::Approved {
            return Ok(None);
        }
        // Decided before the claim, so the session's start is recorded with it. The approved
        // bytes are the executed bytes: re-check the digest recorded at request time.
        let digest_ok = review.command_sha256.as_deref()
            == Some(warden_core::command_sha256(&command).as_str());
        let rec = if digest_ok {
            self.store.get_connection(&review.connection).await?
        } else {
            None
        };
        let target = match (&rec, digest_ok) {
            (_, false) => Err(
                "refused: the stored command does not match its approved SHA-256".to_string(),
            ),
            (None, true) => Err("connection was deleted before execution".to_string()),
            (Some(rec), true) => self.target_for(rec).map_err(|e| {
                tracing::error!(review = %id, error = %e, "could not prepare an approved review's target");
                "the connection's credentials could not be opened (see the gateway log)".to_string()
            }),
        };
        let now = self.now();
        let mut session = Session::starting(
            Uuid::now_v7(),
            SessionKind::Exec,
            &review.requester,
            &review.connection,
            Some(id),
            Some(command.clone()),
            now,
        );
        // A run that never reaches the target is the system's doing, not the requester's.
        let actor = if target.is_err() {
            "system"
        } else {
            review.requester.as_str()
        };
        let claimed = self
            .store
            .claim_execution_and_start(
                id,
                now,
                &session,
                AuditCtx::new(actor, now, vec![started(&session)]),
            )
            .await?;
        if !claimed {
            return Ok(None);
        }
        let outcome = match (&target, &rec) {
            (Ok(target), Some(rec)) => self.run_on_target(rec, target, &command).await,
            (Err(refused), _) => ExecOutcome {
                exit_code: 2,
                output: format!("{refused}\n"),
                truncated: false,
                duration_ms: 0,
                rows_json: None,
            },
            (Ok(_), None) => ExecOutcome {
                exit_code: 2,
                output: "connection was deleted before execution\n".into(),
                truncated: false,
                duration_ms: 0,
                rows_json: None,
            },
        };
        self.end_session(&mut session, outcome);
        self.record_review_execution(&review, &session, actor)
            .await?;
        Ok(Some(session))
    }

    /// The session's end and EXECUTED, in one write; retried on a concurrent update of the
    /// review and, with backoff, while the store is briefly away (the command ran: its start
    /// and command digest are in the chain already, its outcome must not be lost).
    async fn record_review_execution(
        &self,
        review: &Review,
        session: &Session,
        actor: &str,
    ) -> AppResult<()> {
        let executed = AuditEvent::ReviewExecuted {
            review_id: review.id,
            session_id: session.id,
            exit_code: session.exit_code.unwrap_or(-1),
            output_sha256: session.output_sha256.clone().unwrap_or_default(),
            duration_ms: session.duration_ms.unwrap_or(0),
        };
        let mut current = review.clone();
        let mut backoff = Duration::from_millis(250);
        let mut conflicts = 0;
        loop {
            let next = match current.clone().mark_executed() {
                Ok(next) => next,
                // No longer APPROVED (changed behind the claim): the outcome alone is kept.
                Err(_) => {
                    self.store
                        .finish_session(
                            session,
                            AuditCtx::new(actor, self.now(), vec![ended(session)]),
                        )
                        .await?;
                    return Ok(());
                }
            };
            let now = self.now();
            match self
                .store
                .finish_review_execution(
                    session,
                    AuditCtx::new(actor, now, vec![ended(session)]),
                    &next,
                    AuditCtx::new("system", now, vec![executed.clone()]),
                )
                .await
            {
                Ok(_) => {
                    self.publish(review.id, ReviewStatus::Executed);
                    return Ok(());
                }
                Err(warden_store::StoreError::Conflict) if conflicts < 8 => {
                    conflicts += 1;
                    current =
                        self.store.get_review(review.id).await?.ok_or_else(|| {
                            AppError::NotFound(format!("no review {}", review.id))
                        })?;
                }
                Err(e @ warden_store::StoreError::Conflict) => return Err(e.into()),
                Err(e) if backoff <= Duration::from_secs(8) => {
                    tracing::error!(error = %e, session = %session.id, review = %review.id, "could not record an execution's outcome; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
                Err(e) => {
                    tracing::error!(error = %e, session = %session.id, review = %review.id, output_sha256 = ?session.output_sha256, "giving up recording an execution's outcome: the chain shows it started and never ended");
                    return Err(e.into());
                }
            }
        }
    }

    /// APPROVED → EXECUTED for a command review, with its `ReviewExecuted` event, retried on
    /// concurrent updates. Returns false when the review was not (or no longer) APPROVED.
    pub async fn mark_review_executed(&self, id: Uuid, ev: AuditEvent) -> AppResult<bool> {
        for _ in 0..8 {
            let current = self
                .store
                .get_review(id)
                .await?
                .ok_or_else(|| AppError::NotFound(format!("no review {id}")))?;
            let Ok(next) = current.mark_executed() else {
                return Ok(false);
            };
            match self
                .store
                .update_review(&next, AuditCtx::new("system", self.now(), vec![ev.clone()]))
                .await
            {
                Ok(_) => {
                    self.publish(id, ReviewStatus::Executed);
                    return Ok(true);
                }
                Err(warden_store::StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AppError::conflict("busy", "could not record the execution"))
    }

    /// A session that never reached the target (deleted connection, digest mismatch, crash).
    pub(crate) async fn failed_session(
        &self,
        review: &Review,
        message: &str,
    ) -> AppResult<Session> {
        let now = self.now();
        let s = Session {
            id: Uuid::now_v7(),
            kind: SessionKind::Exec,
            user: review.requester.clone(),
            connection: review.connection.clone(),
            review_id: Some(review.id),
            command: review.command.clone(),
            started_at: now,
            ended_at: Some(now),
            exit_code: Some(2),
            output: Some(format!("{message}\n")),
            output_truncated: false,
            output_sha256: Some(hex::encode(Sha256::digest(format!("{message}\n")))),
            duration_ms: Some(0),
            rows_json: None,
        };
        self.store
            .insert_session(&s, AuditCtx::new("system", now, vec![started(&s)]))
            .await?;
        self.store
            .finish_session(&s, AuditCtx::new("system", now, vec![ended(&s)]))
            .await?;
        Ok(s)
    }

    /// Records a session, runs the command through the executor seam, records the outcome.
    pub(crate) async fn run_session(
        &self,
        rec: &ConnectionRecord,
        user: &str,
        command: &str,
        review_id: Option<Uuid>,
        kind: SessionKind,
    ) -> AppResult<Session> {
        let target = self.target_for(rec)?;
        let started_at = self.now();
        let mut session = Session::starting(
            Uuid::now_v7(),
            kind,
            user,
            &rec.connection.name,
            review_id,
            Some(command.into()),
            started_at,
        );
        self.store
            .insert_session(
                &session,
                AuditCtx::new(user, started_at, vec![started(&session)]),
            )
            .await?;
        let outcome = self.run_on_target(rec, &target, command).await;
        self.end_session(&mut session, outcome);
        // The command ran: its start (and command digest) is in the chain already. Its outcome
        // is retried rather than lost while the store is briefly away.
        let mut backoff = Duration::from_millis(250);
        loop {
            match self
                .store
                .finish_session(
                    &session,
                    AuditCtx::new(user, self.now(), vec![ended(&session)]),
                )
                .await
            {
                Ok(()) => return Ok(session),
                Err(e) if backoff <= Duration::from_secs(8) => {
                    tracing::error!(error = %e, session = %session.id, exit_code = ?session.exit_code, "could not record a session's outcome; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
                Err(e) => {
                    tracing::error!(error = %e, session = %session.id, exit_code = ?session.exit_code, output_sha256 = ?session.output_sha256, "giving up recording a session's outcome: the chain shows it started and never ended");
                    return Err(e.into());
                }
            }
        }
    }

    /// Runs `command` through the executor seam with the connection's target (never the
    /// gateway's own files: checked again right before the run).
    async fn run_on_target(
        &self,
        rec: &ConnectionRecord,
        target: &warden_exec::Target,
        command: &str,
    ) -> ExecOutcome {
        let opts = ExecOptions {
            output_cap: self.config.output_cap,
            timeout: Duration::from_secs(self.config.exec_timeout_sec),
            isolation: self.isolation.clone(),
        };
        let outcome = match self.refuse_private_target(target) {
            Some(refused) => {
                tracing::warn!(connection = %rec.connection.name, "refused to run on the gateway's own files");
                ExecOutcome {
                    exit_code: 2,
                    output: refused,
                    truncated: false,
                    duration_ms: 0,
                    rows_json: None,
                }
            }
            None => warden_exec::execute(target, command, &opts).await,
        };
        metrics::counter!("warden_executions_total", "connection_type" => rec.connection.kind.as_str(), "ok" => if outcome.exit_code == 0 { "true" } else { "false" }).increment(1);
        outcome
    }

    /// Writes an executor's outcome into its session (end time, output and its digest).
    fn end_session(&self, session: &mut Session, outcome: ExecOutcome) {
        let ExecOutcome {
            exit_code,
            output,
            truncated,
            duration_ms,
            rows_json,
        } = outcome;
        session.ended_at = Some(self.now());
        session.exit_code = Some(exit_code);
        session.output_sha256 = Some(hex::encode(Sha256::digest(output.as_bytes())));
        session.output = Some(output);
        session.output_truncated = truncated;
        session.duration_ms = Some(duration_ms);
        session.rows_json = rows_json;
    }
}

fn started(s: &Session) -> AuditEvent {
    AuditEvent::SessionStarted {
        session_id: s.id,
        session_kind: s.kind.as_str().into(),
        connection: s.connection.clone(),
        review_id: s.review_id,
        command_sha256: s.command.as_deref().map(warden_core::command_sha256),
    }
}

fn ended(s: &Session) -> AuditEvent {
    AuditEvent::SessionEnded {
        session_id: s.id,
        exit_code: s.exit_code,
        output_sha256: s.output_sha256.clone(),
    }
}
