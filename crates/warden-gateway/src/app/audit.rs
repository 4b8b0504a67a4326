//! Reading the trail: sessions, audit entries and chain verification.

use serde::Serialize;
use uuid::Uuid;
use warden_core::audit::{AuditEntry, verify_chain};
use warden_core::{Session, User};
use warden_store::SessionFilter;

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

    /// Walks the whole chain page by page.
    pub async fn verify_audit(&self, user: &User) -> AppResult<VerifyReport> {
        self.require_admin(user)?;
        let mut head: Option<(i64, String)> = None;
        let mut count = 0i64;
        let mut after = 0i64;
        loop {
            let page = self.store.audit_entries(after, VERIFY_PAGE).await?;
            if page.is_empty() {
                break;
            }
            count += page.len() as i64;
            let start = head.as_ref().map(|(s, h)| (*s, h.as_str()));
            match verify_chain(&page, start) {
                Ok(h) => head = h,
                Err(e) => {
                    return Ok(VerifyReport {
                        ok: false,
                        entries: count,
                        head_seq: head.as_ref().map(|h| h.0),
                        head_hash: head.map(|h| h.1),
                        first_bad_seq: Some(e.seq()),
                        error: Some(e.to_string()),
                    });
                }
            }
            after = page.last().map(|e| e.seq).unwrap_or(after);
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
}
