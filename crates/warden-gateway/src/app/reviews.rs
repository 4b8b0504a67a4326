//! Reviews: JIT requests, decisions (approve / reject / withdraw / revoke), waiting for an
//! outcome, and visibility. Every decision is a core transition persisted with a version check,
//! retried on conflict, so concurrent approvers never lose an update.

use std::time::Duration as StdDuration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;
use warden_core::audit::{AuditEntry, AuditEvent};
use warden_core::decision::{AccessContext, AllowReason, Decision, evaluate_jit};
use warden_core::review::{Actions, Actor, ApproveInput, NewReview, Outcome, TransitionError};
use warden_core::{ConnectionType, Review, ReviewStatus, Rule, RuleType, Session, User};
use warden_store::{AuditCtx, ReviewFilter};

use super::{App, AppError, AppResult};

/// A review as shown to one caller: the review, its link, quorum progress, how it was decided,
/// what this caller may do to it now ([`Review::permitted`]), and its result. The CLI reads
/// this same type back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReviewView {
    #[serde(flatten)]
    pub review: Review,
    pub url: String,
    pub progress: String,
    /// The kind of target the review is for (postgres, mysql, sqlite, command); `None` once
    /// the connection is deleted.
    #[serde(default)]
    pub connection_type: Option<ConnectionType>,
    pub outcome: Outcome,
    /// The decisions the caller may take now (the transitions still decide).
    pub actions: Actions,
    /// The execution (command reviews) once it ran.
    pub result: Option<Session>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum JitResult {
    /// No approval needed (exempt, not required): use the connection directly.
    NotNeeded {
        reason: AllowReason,
    },
    Review {
        review: Box<ReviewView>,
    },
}

/// What a new review asks for ([`App::open_review`]).
pub(crate) struct Ask {
    pub connection: String,
    /// The command (command rules).
    pub command: Option<String>,
    /// The window (JIT rules).
    pub duration_sec: Option<i64>,
    pub reason: Option<String>,
}

/// Who runs a command review once it is approved.
pub(crate) enum Runner {
    /// An executor, claiming the review when it is approved (exec, web terminal; JIT windows).
    Executor,
    /// The proxied session that holds the statement: the claim is taken at once so no
    /// executor ever runs it.
    HoldingSession,
}

const MAX_DECISION_RETRIES: usize = 8;

pub(crate) fn actor(u: &User) -> Actor<'_> {
    Actor {
        email: &u.email,
        groups: &u.groups,
        admin: u.admin,
        auditor: u.auditor,
    }
}

pub fn can_view(user: &User, r: &Review) -> bool {
    user.reads_all()
        || r.requester == user.email
        || user.in_any(&r.policy.approval_groups)
        || user.in_any(&r.policy.force_approval_groups)
}

impl App {
    /// `review` as `user` sees it, with its result read from the store once it ran.
    pub(crate) async fn view(&self, user: &User, review: Review) -> AppResult<ReviewView> {
        let result = if review.kind == RuleType::Command && review.status == ReviewStatus::Executed
        {
            self.store.session_for_review(review.id).await?
        } else {
            None
        };
        let kind = self
            .store
            .get_connection(&review.connection)
            .await?
            .map(|c| c.connection.kind);
        Ok(self.view_with(user, review, kind, result))
    }

    fn view_with(
        &self,
        user: &User,
        review: Review,
        connection_type: Option<ConnectionType>,
        result: Option<Session>,
    ) -> ReviewView {
        ReviewView {
            url: self.review_url(review.id),
            progress: review.progress(),
            connection_type,
            outcome: review.outcome(),
            actions: review.permitted(actor(user), self.now()),
            review,
            result,
        }
    }

    async fn load_visible(&self, user: &User, id: Uuid) -> AppResult<Review> {
        match self.store.get_review(id).await? {
            Some(r) if can_view(user, &r) => Ok(r),
            _ => Err(AppError::NotFound(format!("no review {id}"))),
        }
    }

    pub async fn get_review(&self, user: &User, id: Uuid) -> AppResult<ReviewView> {
        let r = self.load_visible(user, id).await?;
        self.view(user, r).await
    }

    /// The review's audit entries, oldest first (its timeline).
    pub async fn review_timeline(&self, user: &User, id: Uuid) -> AppResult<Vec<AuditEntry>> {
        self.load_visible(user, id).await?;
        Ok(self.store.audit_for_review(id).await?)
    }

    /// Admins and auditors see every review; others see their own and those they may decide
    /// ([`can_view`]), filtered by the store's query (never in memory, never capped).
    pub async fn list_reviews(
        &self,
        user: &User,
        mut filter: ReviewFilter,
    ) -> AppResult<(Vec<ReviewView>, i64)> {
        if !user.reads_all() {
            filter.visible_to = Some(warden_store::Visibility {
                email: user.email.clone(),
                groups: user.groups.clone(),
            });
        }
        let (reviews, total) = self.store.list_reviews(&filter).await?;
        // One query for the page's results, not one per executed review.
        let executed: Vec<Uuid> = reviews
            .iter()
            .filter(|r| r.kind == RuleType::Command && r.status == ReviewStatus::Executed)
            .map(|r| r.id)
            .collect();
        let mut results = self.store.sessions_for_reviews(&executed).await?;
        // One query for every connection's type (connections are few), not one per review.
        let kinds: std::collections::HashMap<String, ConnectionType> = self
            .store
            .list_connections()
            .await?
            .into_iter()
            .map(|c| (c.name, c.kind))
            .collect();
        let out = reviews
            .into_iter()
            .map(|review| {
                let result = results.remove(&review.id);
                let kind = kinds.get(&review.connection).copied();
                self.view_with(user, review, kind, result)
            })
            .collect();
        Ok((out, total))
    }

    /// Applies `transition` to the latest stored review until it persists without a conflict.
    /// `events` builds the audit events from (before, after).
    async fn decide<F, E>(
        &self,
        id: Uuid,
        actor_email: &str,
        transition: F,
        events: E,
    ) -> AppResult<Review>
    where
        F: Fn(Review) -> Result<Review, TransitionError>,
        E: Fn(&Review, &Review) -> Vec<AuditEvent>,
    {
        for _ in 0..MAX_DECISION_RETRIES {
            let current = self
                .store
                .get_review(id)
                .await?
                .ok_or_else(|| AppError::NotFound(format!("no review {id}")))?;
            let next = match transition(current.clone()) {
                Ok(n) => n,
                Err(TransitionError::Expired) => {
                    // The sweeper has not caught it yet: persist the expiry, then refuse.
                    self.expire_review(current).await?;
                    return Err(TransitionError::Expired.into());
                }
                Err(e) => return Err(e.into()),
            };
            let evs = events(&current, &next);
            match self
                .store
                .update_review(&next, AuditCtx::new(actor_email, self.now(), evs))
                .await
            {
                Ok(stored) => {
                    if stored.status != current.status {
                        self.publish(stored.id, stored.status);
                    }
                    if current.status == ReviewStatus::Pending {
                        record_decision_time(&stored);
                    }
                    return Ok(stored);
                }
                Err(warden_store::StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AppError::conflict(
            "busy",
            "the review is changing too fast; retry",
        ))
    }

    pub async fn approve(
        self: &std::sync::Arc<Self>,
        user: &User,
        id: Uuid,
        input: ApproveInput,
    ) -> AppResult<ReviewView> {
        self.load_visible(user, id)
            .await
            .map_err(|_| AppError::NotFound(format!("no review {id}")))?;
        let stored = self
            .decide(
                id,
                &user.email,
                |r| r.approve(actor(user), input.clone(), self.now()),
                |_, after| {
                    let Some(a) = after.approvals.last() else {
                        return vec![];
                    };
                    vec![AuditEvent::ReviewApproved {
                        review_id: after.id,
                        approver: a.approver.clone(),
                        group: a.group.clone(),
                        forced: a.forced,
                        auto: false,
                        reason: a.reason.clone(),
                        approved: after.status == ReviewStatus::Approved,
                    }]
                },
            )
            .await?;
        self.after_approval(&stored);
        self.view(user, stored).await
    }

    /// Approved command reviews run now, in the background: the approver's request returns at
    /// once and the requester's waiter wakes when the result is stored.
    pub(crate) fn after_approval(self: &std::sync::Arc<Self>, review: &Review) {
        if review.status == ReviewStatus::Approved && review.kind == RuleType::Command {
            let app = self.clone();
            let id = review.id;
            tokio::spawn(async move {
                if let Err(e) = app.execute_review(id).await {
                    tracing::error!(review = %id, error = %e, "execution of an approved review failed");
                }
            });
        }
    }

    pub async fn reject(
        &self,
        user: &User,
        id: Uuid,
        reason: Option<String>,
    ) -> AppResult<ReviewView> {
        self.load_visible(user, id).await?;
        let stored = self
            .decide(
                id,
                &user.email,
                |r| r.reject(actor(user), reason.as_deref(), self.now()),
                |before, after| {
                    vec![AuditEvent::ReviewRejected {
                        review_id: after.id,
                        by: user.email.clone(),
                        reason: after.reason.clone().unwrap_or_default(),
                        withdrawn: false,
                        by_admin: !before.decides(actor(user)),
                    }]
                },
            )
            .await?;
        self.view(user, stored).await
    }

    pub async fn withdraw(&self, user: &User, id: Uuid) -> AppResult<ReviewView> {
        self.load_visible(user, id).await?;
        let stored = self
            .decide(
                id,
                &user.email,
                |r| r.withdraw(actor(user), self.now()),
                |_, after| {
                    vec![AuditEvent::ReviewRejected {
                        review_id: after.id,
                        by: user.email.clone(),
                        reason: warden_core::review::WITHDRAWN.into(),
                        withdrawn: true,
                        by_admin: false,
                    }]
                },
            )
            .await?;
        self.view(user, stored).await
    }

    /// Withdraws a pending request on its requester's behalf because what would have run it is
    /// gone (`why` is shown wherever the outcome is). `Ok(false)` if it was no longer pending.
    pub(crate) async fn abandon(&self, id: Uuid, why: &str) -> AppResult<bool> {
        let res = self
            .decide(
                id,
                "system",
                |r| r.abandon(why, self.now()),
                |_, after| {
                    vec![AuditEvent::ReviewRejected {
                        review_id: after.id,
                        by: after.requester.clone(),
                        reason: after.reason.clone().unwrap_or_default(),
                        withdrawn: true,
                        by_admin: false,
                    }]
                },
            )
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(AppError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn revoke(
        &self,
        user: &User,
        id: Uuid,
        reason: Option<String>,
    ) -> AppResult<ReviewView> {
        self.load_visible(user, id).await?;
        let stored = self
            .decide(
                id,
                &user.email,
                |r| r.revoke(actor(user), reason.as_deref(), self.now()),
                |_, after| {
                    vec![AuditEvent::ReviewRevoked {
                        review_id: after.id,
                        by: user.email.clone(),
                        reason: after.reason.clone().unwrap_or_default(),
                    }]
                },
            )
            .await?;
        self.close_grant(
            id,
            &format!(
                "access window revoked by {}: {}",
                user.email,
                stored.reason.clone().unwrap_or_default()
            ),
        );
        self.view(user, stored).await
    }

    pub(crate) async fn expire_review(&self, review: Review) -> AppResult<()> {
        let id = review.id;
        let Ok(next) = review.expire(self.now()) else {
            return Ok(());
        };
        match self
            .store
            .update_review(
                &next,
                AuditCtx::new(
                    "system",
                    self.now(),
                    vec![AuditEvent::ReviewExpired { review_id: id }],
                ),
            )
            .await
        {
            Ok(stored) => {
                self.publish(id, ReviewStatus::Expired);
                record_decision_time(&stored);
                Ok(())
            }
            Err(warden_store::StoreError::Conflict) => Ok(()), // a decision won the race
            Err(e) => Err(e.into()),
        }
    }

    /// Long-poll: returns when the review reaches a state the requester acts on (command:
    /// terminal; jit: approved or terminal) or after `timeout`, whichever comes first.
    pub async fn wait_review(
        &self,
        user: &User,
        id: Uuid,
        timeout: StdDuration,
    ) -> AppResult<ReviewView> {
        self.wait_until(user, id, timeout, |r| {
            r.status.is_terminal()
                || (r.kind == RuleType::Jit && r.status == ReviewStatus::Approved)
        })
        .await
    }

    /// Long-poll until a decision (any status but PENDING): what a held proxied statement awaits.
    pub async fn wait_decision(
        &self,
        user: &User,
        id: Uuid,
        timeout: StdDuration,
    ) -> AppResult<ReviewView> {
        self.wait_until(user, id, timeout, |r| r.status != ReviewStatus::Pending)
            .await
    }

    async fn wait_until(
        &self,
        user: &User,
        id: Uuid,
        timeout: StdDuration,
        settled: impl Fn(&Review) -> bool,
    ) -> AppResult<ReviewView> {
        let mut rx = self.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let r = self.load_visible(user, id).await?;
            let settled = settled(&r);
            if settled || tokio::time::Instant::now() >= deadline || self.shutdown.is_cancelled() {
                return self.view(user, r).await;
            }
            // Wake on a local event for this review, or re-read every second (another replica
            // may have decided it).
            let tick = tokio::time::Instant::now() + StdDuration::from_secs(1);
            let until = tick.min(deadline);
            loop {
                let next = tokio::select! {
                    r = tokio::time::timeout_at(until, rx.recv()) => r,
                    _ = self.shutdown.cancelled() => break,
                };
                match next {
                    Ok(Ok(ev)) if ev.id == id => break,
                    Ok(Ok(_)) => continue,
                    Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => break,
                    Ok(Err(_)) | Err(_) => break,
                }
            }
        }
    }

    /// The one place a review is opened, whatever asked (exec, web terminal, JIT request, a
    /// held proxied statement): the review built under `rule`, its `ReviewRequested` event and,
    /// with `auto`, the admin's auto-approval, stored in one write — with its execution slot
    /// already claimed when the session that holds the statement runs it — then announced.
    pub(crate) async fn open_review(
        &self,
        user: &User,
        rule: &Rule,
        ask: Ask,
        auto: bool,
        runner: Runner,
    ) -> AppResult<Review> {
        let now = self.now();
        let mut review = Review::new(
            rule,
            NewReview {
                id: uuid::Uuid::now_v7(),
                connection: ask.connection,
                requester: user.email.clone(),
                requester_groups: user.groups.clone(),
                command: ask.command,
                duration_sec: ask.duration_sec,
                request_reason: ask.reason,
            },
            self.config.review_timeout_sec,
            now,
        );
        let mut events = vec![requested_event(&review)];
        if auto {
            review = review.auto_approve(now);
            events.push(auto_event(&review));
        }
        let audit = AuditCtx::new(&user.email, now, events);
        let stored = match runner {
            Runner::Executor => self.store.insert_review(&review, audit).await?,
            Runner::HoldingSession => self.store.insert_review_claimed(&review, audit).await?,
        };
        self.publish(stored.id, stored.status);
        metrics::counter!("warden_reviews_created_total", "type" => stored.kind.as_str())
            .increment(1);
        Ok(stored)
    }

    /// `warden request CONN --duration D`: a JIT window request.
    pub async fn request_jit(
        self: &std::sync::Arc<Self>,
        user: &User,
        connection: &str,
        duration_sec: i64,
        reason: Option<String>,
    ) -> AppResult<JitResult> {
        let Some(rec) = self.store.get_connection(connection).await? else {
            return Err(AppError::NotFound(
                self.unknown_connection(user, connection).await,
            ));
        };
        let rules = self.store.rules_for_connection(connection).await?;
        let ctx = AccessContext {
            user,
            connection: &rec.connection,
            rules: &rules,
            windows: &[],
            admin_auto_approve: self.config.admin_auto_approve,
        };
        if reason.as_ref().is_some_and(|r| r.len() > 2000) {
            return Err(AppError::bad(
                "too_long",
                "reason: longer than 2000 characters",
            ));
        }
        let decision = evaluate_jit(&ctx, duration_sec, reason.as_deref());
        let rule_name = match &decision {
            Decision::Deny(d) => {
                self.audit_denied(user, connection, &d.message()).await;
                return Err(match d {
                    warden_core::decision::DenyReason::NoAccess { .. }
                    | warden_core::decision::DenyReason::ReadOnly => {
                        AppError::Forbidden(d.message())
                    }
                    _ => AppError::bad("invalid_request", d.message()),
                });
            }
            Decision::Allow(reason) => {
                return Ok(JitResult::NotNeeded {
                    reason: reason.clone(),
                });
            }
            Decision::AutoApprove { rule } | Decision::NeedsReview { rule } => rule.clone(),
        };
        let rule = rules
            .iter()
            .find(|r| r.name == rule_name)
            .ok_or_else(|| AppError::Internal(anyhow::anyhow!("rule vanished")))?;
        let ask = Ask {
            connection: connection.into(),
            command: None,
            duration_sec: Some(duration_sec),
            reason,
        };
        let auto = matches!(decision, Decision::AutoApprove { .. });
        let stored = self
            .open_review(user, rule, ask, auto, Runner::Executor)
            .await?;
        Ok(JitResult::Review {
            review: Box::new(self.view(user, stored).await?),
        })
    }

    /// The caller's open JIT windows.
    pub async fn my_windows(&self, user: &User) -> AppResult<Vec<ReviewView>> {
        let filter = ReviewFilter {
            status: Some(ReviewStatus::Approved),
            kind: Some(RuleType::Jit),
            requester: Some(user.email.clone()),
            page: 1,
            per_page: 500,
            ..ReviewFilter::default()
        };
        let (rs, _) = self.store.list_reviews(&filter).await?;
        let now = self.now();
        let mut out = Vec::new();
        for r in rs.into_iter().filter(|r| r.window_active(now)) {
            out.push(self.view(user, r).await?);
        }
        Ok(out)
    }

    pub(crate) async fn audit_denied(&self, user: &User, connection: &str, reason: &str) {
        let ev = AuditEvent::AccessDenied {
            connection: connection.into(),
            reason: reason.into(),
        };
        if let Err(e) = self
            .store
            .append_audit(AuditCtx::new(&user.email, self.now(), vec![ev]))
            .await
        {
            tracing::error!(error = %e, "could not audit a denial");
        }
    }
}

/// How long a decided review waited, by how it was decided (`warden_review_decision_seconds`).
/// A review still pending (an approval short of the quorum) is not decided yet.
fn record_decision_time(r: &Review) {
    let Some(at) = r.decided_at.filter(|_| r.status != ReviewStatus::Pending) else {
        return;
    };
    let secs = (at - r.created_at).as_seconds_f64().max(0.0);
    metrics::histogram!(crate::telemetry::DECISION_SECONDS, "outcome" => r.outcome().as_str())
        .record(secs);
}

pub(crate) fn requested_event(r: &Review) -> AuditEvent {
    AuditEvent::ReviewRequested {
        review_id: r.id,
        review_type: r.kind.as_str().into(),
        connection: r.connection.clone(),
        rule: r.rule.clone(),
        command_sha256: r.command_sha256.clone(),
        duration_sec: r.duration_sec,
        reason: r.request_reason.clone(),
    }
}

pub(crate) fn auto_event(r: &Review) -> AuditEvent {
    AuditEvent::ReviewApproved {
        review_id: r.id,
        approver: r.requester.clone(),
        group: String::new(),
        forced: false,
        auto: true,
        reason: Some("admin auto-approval".into()),
        approved: true,
    }
}

/// The one reading of a review filter, for every listing (API, web list, CSV export, CLI through
/// the API): values trimmed, status and type case-insensitive, the requester's email
/// lowercased (as emails are stored). `default_status` applies when the query names none (the
/// web list shows Pending by default; the API and the export everything). Returns the filter and
/// the status as understood (`all` for none).
pub fn parse_filter(
    status: Option<&str>,
    connection: Option<&str>,
    requester: Option<&str>,
    kind: Option<&str>,
    default_status: &str,
) -> Result<(ReviewFilter, String), AppError> {
    let status_s = status.unwrap_or(default_status).trim().to_ascii_lowercase();
    let status_v = match status_s.as_str() {
        "" | "all" => None,
        s => Some(ReviewStatus::parse(s).ok_or_else(|| {
            AppError::bad(
                "invalid_status",
                format!("status {s:?}: use pending, approved, rejected, expired, revoked, executed or all"),
            )
        })?),
    };
    let kind = match kind.map(str::trim).filter(|k| !k.is_empty()) {
        Some(k) => Some(
            RuleType::parse(&k.to_ascii_lowercase())
                .ok_or_else(|| AppError::bad("invalid_type", "type: command or jit"))?,
        ),
        None => None,
    };
    let clean = |s: Option<&str>| s.map(str::trim).filter(|s| !s.is_empty()).map(String::from);
    Ok((
        ReviewFilter {
            status: status_v,
            connection: clean(connection),
            requester: clean(requester).map(|r| r.to_ascii_lowercase()),
            kind,
            ..ReviewFilter::default()
        },
        if status_s.is_empty() {
            "all".into()
        } else {
            status_s
        },
    ))
}
