//! Small use cases the web app needs beyond the API's: ending a login session, a session's
//! statements, and rule validation that keeps the field at fault (for errors shown next to it).
//!
//! # What it must never do
//! Skip an authorization check the equivalent API path makes, or speak HTTP.

use warden_core::User;
use warden_core::rule::{RuleError, RuleSpec};

use super::{App, AppError, AppResult};
use crate::auth;

impl App {
    /// Logs a web session out: revokes the login token behind it. An unknown or already revoked
    /// token is fine (the session is over either way).
    pub async fn logout_token(&self, token: &str) -> AppResult<()> {
        if !token.starts_with(auth::TOKEN_PREFIX) || token.len() > 200 {
            return Ok(());
        }
        let found = self
            .store
            .user_by_token(&auth::token_hash(token), self.now())
            .await?;
        if let Some((info, user)) = found {
            self.revoke_token(&user, info.id).await?;
        }
        Ok(())
    }

    /// Validates a rule spec as `create_rule`/`update_rule` would, returning the typed error so
    /// a form can show it next to its field. `replacing` names the rule being edited.
    pub async fn check_rule_spec(
        &self,
        actor: &User,
        spec: &RuleSpec,
        replacing: Option<&str>,
    ) -> AppResult<Result<(), RuleError>> {
        self.require_admin(actor)?;
        let rules = self.store.list_rules().await?;
        let replacing_id = match replacing {
            Some(name) => Some(
                rules
                    .iter()
                    .find(|r| r.name == name)
                    .map(|r| r.id)
                    .ok_or_else(|| AppError::NotFound(format!("no rule {name:?}")))?,
            ),
            None => None,
        };
        let known: Vec<String> = self
            .store
            .list_connections()
            .await?
            .into_iter()
            .map(|c| c.name)
            .collect();
        Ok(spec
            .validate(
                &known,
                &rules,
                replacing_id,
                uuid::Uuid::now_v7(),
                self.now(),
            )
            .map(|_| ()))
    }
}
