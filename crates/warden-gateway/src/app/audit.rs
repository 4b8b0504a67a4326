//! Reading the trail: sessions, audit entries and chain verification.

use serde::Serialize;
use std::collections::HashSet;
use uuid::Uuid;

use warden_core::audit::{AuditEntry, RowFacts, verify_chain};
use warden_core::{Review, Session, User};
use warden_store::{ReviewFilter, SessionFilter, StatementRecord};

use super::{App, AppError, AppResult};

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub entries: i64,
    pub head_seq: Option<i64>,
    pub head_hash: Option<String>,
    /// The first entry at fault and why.
    pub error: Option<String>,
    pub first_bad_seq: Option<i64>,
}

/// One recorded statement of a proxied session with the review that let it run (a statement
/// held for review, or the JIT window the session ran in): who approved, in which group, when —
/// or who refused it and why. What the session page, `sessions.csv` and the API show.
#[derive(Debug, Clone, Serialize)]
pub struct StatementView {
    #[serde(flatten)]
    pub record: StatementRecord,
    pub review: Option<StatementReview>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatementReview {
    pub id: Uuid,
    pub status: String,
    pub approvals: Vec<StatementApproval>,
    pub decided_by: Option<String>,
    pub reason: Option<String>,
    pub forced: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatementApproval {
    pub approver: String,
    pub group: String,
    #[serde(with = "warden_core::timefmt::rfc3339_ms")]
    pub at: time::OffsetDateTime,
}

impl StatementReview {
    fn of(r: &Review) -> Self {
        Self {
            id: r.id,
            status: r.status.as_str().into(),
            approvals: r
                .approvals
                .iter()
                .map(|a| StatementApproval {
                    approver: a.approver.clone(),
                    group: a.group.clone(),
                    at: a.at,
                })
                .collect(),
            decided_by: r.decided_by.clone(),
            reason: r.reason.clone(),
            forced: r.forced,
        }
    }

    /// `APPROVED by dba@x (dba) at 2026-…Z` / `REJECTED by dba@x: too broad`.
    pub fn summary(&self) -> String {
        let mut out = self.status.clone();
        if !self.approvals.is_empty() {
            let who: Vec<String> = self
                .approvals
                .iter()
                .map(|a| {
                    format!(
                        "{} ({}) at {}",
                        a.approver,
                        a.group,
                        warden_core::timefmt::format(a.at)
                    )
                })
                .collect();
            out.push_str(&format!(" by {}", who.join(", ")));
        } else if let Some(by) = &self.decided_by {
            out.push_str(&format!(" by {by}"));
        }
        if self.forced {
            out.push_str(" (forced)");
        }
        if let Some(r) = self.reason.as_deref().filter(|r| !r.is_empty()) {
            out.push_str(&format!(": {r}"));
        }
        out
    }
}

const VERIFY_PAGE: i64 = 5000;
/// Rows read per page when they are checked against the chain (the store's largest page).
const ROW_PAGE: u32 = 1000;

impl App {
    /// Admins and auditors see every session; others their own.
    pub async fn list_sessions(
        &self,
        user: &User,
        mut filter: SessionFilter,
    ) -> AppResult<(Vec<Session>, i64)> {
        if !user.reads_all() {
            filter.user = Some(user.email.clone());
        }
        Ok(self.store.list_sessions(&filter).await?)
    }

    pub async fn get_session(&self, user: &User, id: Uuid) -> AppResult<Session> {
        match self.store.get_session(id).await? {
            Some(s) if user.reads_all() || s.user == user.email => Ok(s),
            _ => Err(AppError::NotFound(format!("no session {id}"))),
        }
    }

    /// A session and its recorded statements (proxied sessions), each with its review, if the
    /// user may see the session. One store read per distinct review.
    pub async fn session_with_statements(
        &self,
        user: &User,
        id: Uuid,
    ) -> AppResult<(Session, Vec<StatementView>)> {
        let session = self.get_session(user, id).await?;
        let records = self.store.statements_for_session(id).await?;
        let mut reviews: std::collections::HashMap<Uuid, Option<StatementReview>> =
            std::collections::HashMap::new();
        let mut out = Vec::with_capacity(records.len());
        for record in records {
            let review = match record.review_id {
                Some(rid) => match reviews.get(&rid) {
                    Some(known) => known.clone(),
                    None => {
                        let found = self.store.get_review(rid).await?;
                        let view = found.as_ref().map(StatementReview::of);
                        reviews.insert(rid, view.clone());
                        view
                    }
                },
                None => None,
            };
            out.push(StatementView { record, review });
        }
        Ok((session, out))
    }

    pub async fn audit_entries(
        &self,
        user: &User,
        after: i64,
        limit: i64,
    ) -> AppResult<Vec<AuditEntry>> {
        self.require_reader(user)?;
        Ok(self.store.audit_entries(after, limit).await?)
    }

    /// Walks the whole chain page by page, up to the head recorded when the walk started, and
    /// checks that the last entry *is* that head (entries deleted from the end are caught too).
    pub async fn verify_audit(&self, user: &User) -> AppResult<VerifyReport> {
        self.require_reader(user)?;
        // Rows written after this instant may belong to entries after the head read next.
        let walk_start = self.now();
        let recorded = self.store.audit_head().await?;
        let mut facts = RowFacts::default();
        let limit = recorded.as_ref().map(|h| h.0).unwrap_or(0);
        let mut head: Option<(i64, String)> = None;
        let mut count = 0i64;
        let mut after = 0i64;
        let broken =
            |count: i64, head: Option<(i64, String)>, seq: i64, error: String| VerifyReport {
                ok: false,
                entries: count,
                head_seq: head.as_ref().map(|h| h.0),
                head_hash: head.map(|h| h.1),
                first_bad_seq: Some(seq),
                error: Some(error),
            };
        while after < limit {
            let mut page = self.store.audit_entries(after, VERIFY_PAGE).await?;
            page.retain(|e| e.seq <= limit);
            if page.is_empty() {
                break;
            }
            count += page.len() as i64;
            let start = head.as_ref().map(|(s, h)| (*s, h.as_str()));
            match verify_chain(&page, start) {
                Ok(h) => head = h,
                Err(e) => return Ok(broken(count, head, e.seq(), e.to_string())),
            }
            for e in &page {
                facts.observe(e);
            }
            after = page.last().map(|e| e.seq).unwrap_or(after);
        }
        if let Some((seq, hash)) = &recorded {
            let tip_ok = head.as_ref().is_some_and(|(s, h)| s == seq && h == hash);
            if !tip_ok {
                let last = head.as_ref().map(|h| h.0).unwrap_or(0);
                let msg = format!(
                    "the chain ends at entry {last} but the recorded head is entry {seq}: entries were deleted from the end or the head was altered"
                );
                return Ok(broken(count, head, last + 1, msg));
            }
        }
        if let Some(error) = self.check_rows(&mut facts, walk_start, limit).await? {
            return Ok(VerifyReport {
                ok: false,
                entries: count,
                head_seq: head.as_ref().map(|h| h.0),
                head_hash: head.map(|h| h.1),
                first_bad_seq: None,
                error: Some(error),
            });
        }
        Ok(VerifyReport {
            ok: true,
            entries: count,
            head_seq: head.as_ref().map(|h| h.0),
            head_hash: head.map(|h| h.1),
            error: None,
            first_bad_seq: None,
        })
    }

    /// Every session and review row against what the chain recorded of it (rows created after
    /// `walk_start` are left to the next verification): the first disagreement, said.
    async fn check_rows(
        &self,
        facts: &mut RowFacts,
        walk_start: time::OffsetDateTime,
        walked_to: i64,
    ) -> AppResult<Option<String>> {
        let mut caught_up = false;
        let mut session_ids = HashSet::new();
        for page in 1.. {
            let filter = SessionFilter {
                page,
                per_page: ROW_PAGE,
                ..SessionFilter::default()
            };
            let (rows, _) = self.store.list_sessions(&filter).await?;
            if rows.is_empty() {
                break;
            }
            for s in rows.iter().filter(|s| s.started_at < walk_start) {
                if let Some(e) = facts.check_session(s) {
                    return Ok(Some(e));
                }
                session_ids.insert(s.id);
            }
        }
        let mut review_ids = HashSet::new();
        for page in 1.. {
            let filter = ReviewFilter {
                page,
                per_page: ROW_PAGE,
                ..ReviewFilter::default()
            };
            let (rows, _) = self.store.list_reviews(&filter).await?;
            if rows.is_empty() {
                break;
            }
            for r in rows.iter().filter(|r| r.created_at < walk_start) {
                if facts.check_review(r).is_some() && !caught_up {
                    // It may have been decided after the walk: read what the chain recorded
                    // since (verified by the next walk) before calling it an edit.
                    caught_up = true;
                    let mut after = walked_to;
                    loop {
                        let page = self.store.audit_entries(after, VERIFY_PAGE).await?;
                        let Some(last) = page.last().map(|e| e.seq) else {
                            break;
                        };
                        page.iter().for_each(|e| facts.observe(e));
                        after = last;
                    }
                }
                if let Some(e) = facts.check_review(r) {
                    return Ok(Some(e));
                }
                review_ids.insert(r.id);
            }
        }
        Ok(facts.missing(&session_ids, &review_ids))
    }
}
