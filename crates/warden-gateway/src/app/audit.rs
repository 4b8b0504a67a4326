//! Reading the trail: sessions, audit entries and chain verification.

use serde::Serialize;
use std::collections::HashSet;
use uuid::Uuid;

use warden_core::audit::{AuditEntry, RowFacts, verify_chain};
use warden_core::{Session, User};
use warden_store::{ReviewFilter, SessionFilter};

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

const VERIFY_PAGE: i64 = 5000;
/// Rows read per page when they are checked against the chain (the store's largest page).
const ROW_PAGE: u32 = 1000;

impl App {
    /// Admins see every session; others their own.
    pub async fn list_sessions(
        &self,
        user: &User,
        mut filter: SessionFilter,
    ) -> AppResult<(Vec<Session>, i64)> {
        if !user.admin {
            filter.user = Some(user.email.clone());
        }
        Ok(self.store.list_sessions(&filter).await?)
    }

    pub async fn get_session(&self, user: &User, id: Uuid) -> AppResult<Session> {
        match self.store.get_session(id).await? {
            Some(s) if user.admin || s.user == user.email => Ok(s),
            _ => Err(AppError::NotFound(format!("no session {id}"))),
        }
    }

    pub async fn audit_entries(
        &self,
        user: &User,
        after: i64,
        limit: i64,
    ) -> AppResult<Vec<AuditEntry>> {
        self.require_admin(user)?;
        Ok(self.store.audit_entries(after, limit).await?)
    }

    /// Walks the whole chain page by page, up to the head recorded when the walk started, and
    /// checks that the last entry *is* that head (entries deleted from the end are caught too).
    pub async fn verify_audit(&self, user: &User) -> AppResult<VerifyReport> {
        self.require_admin(user)?;
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
        if let Some(error) = self.check_rows(&facts, walk_start).await? {
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
        facts: &RowFacts,
        walk_start: time::OffsetDateTime,
    ) -> AppResult<Option<String>> {
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
                if let Some(e) = facts.check_review(r) {
                    return Ok(Some(e));
                }
                review_ids.insert(r.id);
            }
        }
        Ok(facts.missing(&session_ids, &review_ids))
    }
}
