//! The review state machine (SPEC §2 "Decision semantics").
//!
//! Every transition consumes the review and returns the next one or a [`TransitionError`];
//! the store persists the result with a version check so concurrent decisions never lose an
//! update. Time is always passed in.
//!
//! ```text
//! PENDING ─approve(quorum)/force/auto─▶ APPROVED ─executed/window over─▶ EXECUTED
//!    │                                     └─revoke (jit)─▶ REVOKED
//!    ├─reject / withdraw─▶ REJECTED
//!    └─timeout─▶ EXPIRED
//! ```

use serde::{Deserialize, Serialize};
use thiserror::Error;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::model::{Approval, Policy, Review, ReviewStatus, Rule, RuleType};

/// Who is acting on a review.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    pub email: &'a str,
    pub groups: &'a [String],
    pub admin: bool,
    /// Auditors decide nothing, whatever groups they are in.
    pub auditor: bool,
}

impl Actor<'_> {
    fn in_any(&self, groups: &[String]) -> bool {
        groups.iter().any(|g| self.groups.contains(g))
    }
}

/// Why a transition was refused. The review is unchanged.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum TransitionError {
    #[error("review is already {0}: no further decision is possible")]
    Terminal(&'static str),
    #[error("review is {0}, not PENDING")]
    NotPending(&'static str),
    #[error("review expired before this decision; the requester must resubmit")]
    Expired,
    #[error("you cannot approve your own request")]
    SelfApproval,
    #[error("you cannot reject your own request: withdraw it instead")]
    SelfRejection,
    #[error("you are not in any approval group of this review ({0})")]
    NotEligible(String),
    #[error("you are not in any force-approval group of this review")]
    NotForceMember,
    #[error("you already approved this review")]
    AlreadyApproved,
    #[error("a reason is required")]
    ReasonRequired,
    #[error("only the requester can withdraw a request")]
    NotRequester,
    #[error("only jit windows can be revoked")]
    NotJit,
    #[error("only approvers or admins can revoke a window")]
    NotRevoker,
    #[error("a window can only be shortened: {0}")]
    BadDuration(String),
    #[error("the window has not ended yet")]
    WindowOpen,
    #[error("auditor accounts are read-only: they cannot decide reviews")]
    ReadOnly,
}

impl TransitionError {
    /// Terminal-state conflicts map to HTTP 409; everything else is a refusal (403/400).
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            Self::Terminal(_) | Self::NotPending(_) | Self::Expired | Self::WindowOpen
        )
    }
    pub fn is_bad_request(&self) -> bool {
        matches!(self, Self::ReasonRequired | Self::BadDuration(_))
    }
}

/// What an approver submits.
#[derive(Debug, Clone, Default)]
pub struct ApproveInput {
    pub force: bool,
    pub reason: Option<String>,
    /// JIT: shorten the window to this many seconds.
    pub duration_sec: Option<i64>,
}

/// The parts of a new review that come from the request.
#[derive(Debug, Clone)]
pub struct NewReview {
    /// The review's id, drawn by the caller (the core reads no clock or RNG); a time-ordered
    /// UUID (v7) keeps ids in creation order.
    pub id: Uuid,
    pub connection: String,
    pub requester: String,
    pub requester_groups: Vec<String>,
    /// The command (command rules).
    pub command: Option<String>,
    /// The requested window (jit rules).
    pub duration_sec: Option<i64>,
    pub request_reason: Option<String>,
}

/// A reason worth recording: `None` when there is nothing a reader could see in it (only
/// whitespace and invisible code points, see [`crate::text::is_blank`]), so a required reason
/// made of invisible characters is refused like a missing one.
fn nonempty(reason: Option<&str>) -> Option<String> {
    reason
        .map(str::trim)
        .filter(|r| !crate::text::is_blank(r))
        .map(str::to_string)
}

/// The reason recorded when a requester withdraws their own request.
pub const WITHDRAWN: &str = "withdrawn by requester";

/// The decisions one actor may take on one review now ([`Review::permitted`]). Adapters show
/// these and nothing else; the transitions still decide.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actions {
    pub approve: bool,
    pub reject: bool,
    pub force: bool,
    pub withdraw: bool,
    pub revoke: bool,
}

impl Actions {
    pub fn any(&self) -> bool {
        self.approve || self.reject || self.force || self.withdraw || self.revoke
    }
    /// The permitted decisions' names, in the order a menu lists them.
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.approve, "approve"),
            (self.force, "force"),
            (self.reject, "reject"),
            (self.withdraw, "withdraw"),
            (self.revoke, "revoke"),
        ]
        .into_iter()
        .filter_map(|(on, n)| on.then_some(n))
        .collect()
    }
}

/// How a review was decided ([`Review::outcome`]); a withdrawal is REJECTED by status (the
/// API's statuses stay those of the spec) and `withdrawn` here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pending,
    Approved,
    AutoApproved,
    ForceApproved,
    Rejected,
    Withdrawn,
    Expired,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::AutoApproved => "auto_approved",
            Self::ForceApproved => "force_approved",
            Self::Rejected => "rejected",
            Self::Withdrawn => "withdrawn",
            Self::Expired => "expired",
        }
    }
}

impl Review {
    /// A new PENDING review under `rule`, expiring after the rule's timeout (or `default_timeout_sec`).
    pub fn new(
        rule: &Rule,
        req: NewReview,
        default_timeout_sec: i64,
        now: OffsetDateTime,
    ) -> Review {
        let timeout = rule.timeout_sec.unwrap_or(default_timeout_sec).max(1);
        let command_sha256 = req.command.as_deref().map(crate::command_sha256);
        Review {
            id: req.id,
            kind: rule.kind,
            status: ReviewStatus::Pending,
            connection: req.connection,
            requester: req.requester,
            requester_groups: req.requester_groups,
            rule: rule.name.clone(),
            policy: rule.policy(),
            command: req.command,
            command_sha256,
            duration_sec: req.duration_sec,
            request_reason: nonempty(req.request_reason.as_deref()),
            approvals: Vec::new(),
            decided_by: None,
            reason: None,
            forced: false,
            created_at: now,
            decided_at: None,
            expires_at: now + Duration::seconds(timeout),
            window_end: None,
            version: 0,
        }
    }

    fn ensure_pending(&self, now: OffsetDateTime) -> Result<(), TransitionError> {
        if self.status.is_terminal() {
            return Err(TransitionError::Terminal(self.status.as_str()));
        }
        if self.status != ReviewStatus::Pending {
            return Err(TransitionError::NotPending(self.status.as_str()));
        }
        if now >= self.expires_at {
            return Err(TransitionError::Expired);
        }
        Ok(())
    }

    fn set_approved(&mut self, now: OffsetDateTime) {
        self.status = ReviewStatus::Approved;
        self.decided_at = Some(now);
        if self.kind == RuleType::Jit {
            self.window_end = Some(now + Duration::seconds(self.duration_sec.unwrap_or(0).max(0)));
        }
    }

    /// Whether [`Review::approve`] with `input` would succeed, and if not, why. The transition
    /// runs exactly this check first, so [`Review::permitted`] can never disagree with it.
    fn check_approve(
        &self,
        actor: Actor<'_>,
        input: &ApproveInput,
        now: OffsetDateTime,
    ) -> Result<(), TransitionError> {
        if actor.auditor {
            return Err(TransitionError::ReadOnly);
        }
        self.ensure_pending(now)?;
        if input.force {
            if !actor.in_any(&self.policy.force_approval_groups) {
                return Err(TransitionError::NotForceMember);
            }
            if nonempty(input.reason.as_deref()).is_none() {
                return Err(TransitionError::ReasonRequired);
            }
        } else {
            if actor.email == self.requester {
                return Err(TransitionError::SelfApproval);
            }
            if !actor.in_any(&self.policy.approval_groups) {
                return Err(TransitionError::NotEligible(
                    self.policy.approval_groups.join(", "),
                ));
            }
        }
        if self.approvals.iter().any(|a| a.approver == actor.email) {
            return Err(TransitionError::AlreadyApproved);
        }
        if let Some(d) = input.duration_sec {
            let current = self.duration_sec.unwrap_or(0);
            if self.kind != RuleType::Jit {
                return Err(TransitionError::BadDuration(
                    "command reviews have no window".into(),
                ));
            }
            if d < 1 || d > current {
                return Err(TransitionError::BadDuration(format!(
                    "requested {current}s, got {d}s"
                )));
            }
        }
        Ok(())
    }

    /// Records an approval; the review becomes APPROVED when the quorum is met or on a force approval.
    pub fn approve(
        mut self,
        actor: Actor<'_>,
        input: ApproveInput,
        now: OffsetDateTime,
    ) -> Result<Review, TransitionError> {
        self.check_approve(actor, &input, now)?;
        let reason = nonempty(input.reason.as_deref());
        if let Some(d) = input.duration_sec {
            self.duration_sec = Some(d);
        }
        let eligible_groups: Vec<String> = self
            .policy
            .approval_groups
            .iter()
            .filter(|g| actor.groups.contains(g))
            .cloned()
            .collect();
        let group = if input.force {
            self.policy
                .force_approval_groups
                .iter()
                .find(|g| actor.groups.contains(g))
                .cloned()
                .unwrap_or_default()
        } else {
            // Show the approval under a group nobody covers yet, if the approver has one.
            let covered: Vec<&str> = self.approvals.iter().map(|a| a.group.as_str()).collect();
            eligible_groups
                .iter()
                .find(|g| !covered.contains(&g.as_str()))
                .or(eligible_groups.first())
                .cloned()
                .unwrap_or_default()
        };
        self.approvals.push(Approval {
            approver: actor.email.to_string(),
            group,
            eligible_groups,
            forced: input.force,
            auto: false,
            reason: reason.clone(),
            at: now,
        });
        if input.force {
            self.forced = true;
            self.decided_by = Some(actor.email.to_string());
            self.reason = reason;
            self.set_approved(now);
        } else if quorum_met(&self.policy, &self.approvals) {
            self.set_approved(now);
        }
        Ok(self)
    }

    /// An admin's own request, approved at creation (SPEC §2, `WARDEN_ADMIN_AUTO_APPROVE`).
    pub fn auto_approve(mut self, now: OffsetDateTime) -> Review {
        self.approvals.push(Approval {
            approver: self.requester.clone(),
            group: String::new(),
            eligible_groups: vec![],
            forced: false,
            auto: true,
            reason: Some("admin auto-approval".into()),
            at: now,
        });
        self.decided_by = Some(self.requester.clone());
        self.set_approved(now);
        self
    }

    /// Whether [`Review::reject`] would succeed (see [`Review::check_approve`]).
    fn check_reject(
        &self,
        actor: Actor<'_>,
        reason: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<(), TransitionError> {
        if actor.auditor {
            return Err(TransitionError::ReadOnly);
        }
        self.ensure_pending(now)?;
        if actor.email == self.requester {
            return Err(TransitionError::SelfRejection);
        }
        if !actor.admin && !self.decides(actor) {
            return Err(TransitionError::NotEligible(
                self.policy.approval_groups.join(", "),
            ));
        }
        nonempty(reason).ok_or(TransitionError::ReasonRequired)?;
        Ok(())
    }

    /// Whether `actor` is one of this review's deciders (an approval or force-approval group).
    pub fn decides(&self, actor: Actor<'_>) -> bool {
        actor.in_any(&self.policy.approval_groups)
            || actor.in_any(&self.policy.force_approval_groups)
    }

    /// Any eligible approver (approval or force-approval group) rejects, with a reason; so may
    /// an admin, on any pending request, so that nothing stays stuck (audited as an admin
    /// action: `ReviewRejected::by_admin`).
    pub fn reject(
        mut self,
        actor: Actor<'_>,
        reason: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Review, TransitionError> {
        self.check_reject(actor, reason, now)?;
        let reason = nonempty(reason).ok_or(TransitionError::ReasonRequired)?;
        self.status = ReviewStatus::Rejected;
        self.decided_by = Some(actor.email.to_string());
        self.reason = Some(reason);
        self.decided_at = Some(now);
        Ok(self)
    }

    /// The requester withdraws a pending request (status REJECTED, reason [`WITHDRAWN`]).
    pub fn withdraw(
        self,
        actor: Actor<'_>,
        now: OffsetDateTime,
    ) -> Result<Review, TransitionError> {
        self.check_withdraw(actor, now)?;
        self.withdrawn(WITHDRAWN.into(), now)
    }

    /// Whether [`Review::withdraw`] would succeed (see [`Review::check_approve`]).
    fn check_withdraw(&self, actor: Actor<'_>, now: OffsetDateTime) -> Result<(), TransitionError> {
        if actor.auditor {
            return Err(TransitionError::ReadOnly);
        }
        self.ensure_pending(now)?;
        if actor.email != self.requester {
            return Err(TransitionError::NotRequester);
        }
        Ok(())
    }

    /// The request is withdrawn on the requester's behalf because what would have run it is
    /// gone (e.g. the client of a held statement disconnected): REJECTED, decided by the
    /// requester, reason "withdrawn: {why}".
    pub fn abandon(self, why: &str, now: OffsetDateTime) -> Result<Review, TransitionError> {
        self.withdrawn(format!("withdrawn: {why}"), now)
    }

    fn withdrawn(mut self, reason: String, now: OffsetDateTime) -> Result<Review, TransitionError> {
        self.ensure_pending(now)?;
        self.status = ReviewStatus::Rejected;
        self.decided_by = Some(self.requester.clone());
        self.reason = Some(reason);
        self.decided_at = Some(now);
        Ok(self)
    }

    /// True for a request withdrawn by (or on behalf of) its requester, as opposed to rejected
    /// by an approver.
    /// Only a withdrawal is decided by the requester (they cannot reject their own request),
    /// whether or not some approvals were already recorded.
    pub fn is_withdrawn(&self) -> bool {
        self.status == ReviewStatus::Rejected
            && self.decided_by.as_deref() == Some(self.requester.as_str())
            && self
                .reason
                .as_deref()
                .is_some_and(|r| r.starts_with("withdrawn"))
    }

    /// PENDING past its timeout → EXPIRED. The command never runs.
    pub fn expire(mut self, now: OffsetDateTime) -> Result<Review, TransitionError> {
        if self.status != ReviewStatus::Pending {
            return Err(if self.status.is_terminal() {
                TransitionError::Terminal(self.status.as_str())
            } else {
                TransitionError::NotPending(self.status.as_str())
            });
        }
        if now < self.expires_at {
            return Err(TransitionError::WindowOpen);
        }
        self.status = ReviewStatus::Expired;
        self.decided_by = Some("system".into());
        self.reason = Some("no decision before the timeout; resubmit".into());
        self.decided_at = Some(now);
        Ok(self)
    }

    /// Whether [`Review::revoke`] would succeed (see [`Review::check_approve`]).
    fn check_revoke(&self, actor: Actor<'_>) -> Result<(), TransitionError> {
        if actor.auditor {
            return Err(TransitionError::ReadOnly);
        }
        if self.status.is_terminal() {
            return Err(TransitionError::Terminal(self.status.as_str()));
        }
        if self.kind != RuleType::Jit {
            return Err(TransitionError::NotJit);
        }
        if self.status != ReviewStatus::Approved {
            return Err(TransitionError::NotPending(self.status.as_str()));
        }
        if !actor.admin
            && !actor.in_any(&self.policy.approval_groups)
            && !actor.in_any(&self.policy.force_approval_groups)
        {
            return Err(TransitionError::NotRevoker);
        }
        Ok(())
    }

    /// An approver (approval or force group) or an admin ends an approved JIT window early.
    pub fn revoke(
        mut self,
        actor: Actor<'_>,
        reason: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Review, TransitionError> {
        self.check_revoke(actor)?;
        self.status = ReviewStatus::Revoked;
        self.decided_by = Some(actor.email.to_string());
        self.reason = Some(nonempty(reason).unwrap_or_else(|| "revoked".into()));
        if let Some(end) = self.window_end {
            self.window_end = Some(end.min(now));
        }
        Ok(self)
    }

    /// A command review ran (once): APPROVED → EXECUTED.
    pub fn mark_executed(mut self) -> Result<Review, TransitionError> {
        if self.status != ReviewStatus::Approved {
            return Err(if self.status.is_terminal() {
                TransitionError::Terminal(self.status.as_str())
            } else {
                TransitionError::NotPending(self.status.as_str())
            });
        }
        if self.kind == RuleType::Jit {
            return Err(TransitionError::NotJit);
        }
        self.status = ReviewStatus::Executed;
        Ok(self)
    }

    /// A JIT window reached its end: APPROVED → EXECUTED.
    pub fn finish_window(mut self, now: OffsetDateTime) -> Result<Review, TransitionError> {
        if self.status != ReviewStatus::Approved || self.kind != RuleType::Jit {
            return Err(TransitionError::NotPending(self.status.as_str()));
        }
        if self.window_end.is_none_or(|end| now < end) {
            return Err(TransitionError::WindowOpen);
        }
        self.status = ReviewStatus::Executed;
        Ok(self)
    }

    /// What `actor` may do to this review at `now`: exactly the decisions that would succeed
    /// (each answer is the transition's own check), so every adapter shows the same buttons the
    /// decision will honour. Force and reject are asked with a reason, as their forms require one.
    pub fn permitted(&self, actor: Actor<'_>, now: OffsetDateTime) -> Actions {
        const SOME_REASON: Option<&str> = Some("reason");
        let approve = ApproveInput::default();
        let force = ApproveInput {
            force: true,
            reason: SOME_REASON.map(str::to_string),
            duration_sec: None,
        };
        Actions {
            approve: self.check_approve(actor, &approve, now).is_ok(),
            force: self.check_approve(actor, &force, now).is_ok(),
            reject: self.check_reject(actor, SOME_REASON, now).is_ok(),
            withdraw: self.check_withdraw(actor, now).is_ok(),
            revoke: self.check_revoke(actor).is_ok(),
        }
    }

    /// How the review was decided, read from its recorded decision (its status says where it
    /// is now: an approved command that ran is EXECUTED, its outcome stays `approved`).
    pub fn outcome(&self) -> Outcome {
        match self.status {
            ReviewStatus::Pending => Outcome::Pending,
            ReviewStatus::Expired => Outcome::Expired,
            ReviewStatus::Rejected if self.is_withdrawn() => Outcome::Withdrawn,
            ReviewStatus::Rejected => Outcome::Rejected,
            ReviewStatus::Approved | ReviewStatus::Executed | ReviewStatus::Revoked => {
                if self.forced {
                    Outcome::ForceApproved
                } else if self.approvals.iter().any(|a| a.auto) {
                    Outcome::AutoApproved
                } else {
                    Outcome::Approved
                }
            }
        }
    }

    /// "1 of 2: dba ✓ security …" — progress toward the quorum, for lists and notifications.
    pub fn progress(&self) -> String {
        let distinct = self.approvals.iter().filter(|a| !a.auto).count();
        let needed = if self.policy.require_all_groups {
            (self.policy.approval_amount as usize).max(self.policy.approval_groups.len())
        } else {
            self.policy.approval_amount as usize
        };
        let groups: Vec<String> = self
            .policy
            .approval_groups
            .iter()
            .map(|g| {
                if self.approvals.iter().any(|a| &a.group == g) {
                    format!("{g} ✓")
                } else {
                    format!("{g} …")
                }
            })
            .collect();
        format!("{distinct} of {needed}: {}", groups.join(" "))
    }
}

/// The quorum rule: distinct approvers ≥ amount, and with `require_all_groups` every approval
/// group covered by a *different* person (a maximum bipartite matching people → groups, so the
/// order in which people approve never matters).
pub fn quorum_met(policy: &Policy, approvals: &[Approval]) -> bool {
    let voters: Vec<&Approval> = approvals
        .iter()
        .filter(|a| !a.forced && !a.auto && !a.eligible_groups.is_empty())
        .collect();
    if voters.len() < policy.approval_amount as usize {
        return false;
    }
    if !policy.require_all_groups {
        return true;
    }
    // Kuhn's augmenting-path matching; groups and approvers are few (tens at most).
    let groups = &policy.approval_groups;
    let mut owner: Vec<Option<usize>> = vec![None; groups.len()];
    fn augment(
        person: usize,
        voters: &[&Approval],
        groups: &[String],
        owner: &mut [Option<usize>],
        seen: &mut [bool],
    ) -> bool {
        for (gi, g) in groups.iter().enumerate() {
            if seen[gi] || !voters[person].eligible_groups.contains(g) {
                continue;
            }
            seen[gi] = true;
            if owner[gi].is_none_or(|other| augment(other, voters, groups, owner, seen)) {
                owner[gi] = Some(person);
                return true;
            }
        }
        false
    }
    let mut matched = 0;
    for p in 0..voters.len() {
        let mut seen = vec![false; groups.len()];
        if augment(p, &voters, groups, &mut owner, &mut seen) {
            matched += 1;
        }
    }
    matched == groups.len()
}

#[cfg(test)]
mod tests;
