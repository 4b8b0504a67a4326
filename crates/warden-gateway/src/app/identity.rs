//! Users, groups, passwords, API tokens, and authentication of API callers.

use serde::Deserialize;
use serde_json::json;
use time::Duration;
use uuid::Uuid;
use warden_core::User;
use warden_core::audit::AuditEvent;
use warden_core::rule::valid_name;
use warden_core::secret::Secret;
use warden_store::{AuditCtx, GroupInfo, TokenInfo};

use super::{App, AppError, AppResult};
use crate::auth;

/// Lifetime of tokens issued by `POST /api/login` and the web login.
pub const LOGIN_TOKEN_TTL_SEC: i64 = 12 * 3600;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub email: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub admin: bool,
    /// A read-only account (see [`User::auditor`]); never together with `admin`.
    #[serde(default)]
    pub auditor: bool,
    #[serde(default)]
    pub password: Option<Secret<String>>,
    #[serde(default)]
    pub overwrite: bool,
}

pub fn validate_email(email: &str) -> AppResult<String> {
    let e = email.trim().to_ascii_lowercase();
    let ok = e.len() <= 254
        && e.split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty())
        && !e
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"' | '\''));
    if ok {
        Ok(e)
    } else {
        Err(AppError::bad(
            "invalid_email",
            format!("{email:?} is not a valid email address"),
        ))
    }
}

pub fn validate_groups(field: &str, groups: &[String]) -> AppResult<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for g in groups {
        let g = g.trim();
        if !valid_name(g) {
            return Err(AppError::bad(
                "invalid_group",
                format!("{field}: invalid group name {g:?} (letters, digits, - _ . @ only)"),
            ));
        }
        if !out.iter().any(|x| x == g) {
            out.push(g.to_string());
        }
    }
    Ok(out)
}

fn user_json(u: &User) -> serde_json::Value {
    json!({"email": u.email, "groups": u.groups, "admin": u.admin, "auditor": u.auditor})
}

impl App {
    /// On first start with an empty store: create the admin. Returns the generated password
    /// when none was configured (printed once by the caller).
    pub async fn bootstrap_admin(&self) -> anyhow::Result<Option<(String, Option<String>)>> {
        if self.store.count_users().await? > 0 {
            return Ok(None);
        }
        let email = validate_email(&self.config.admin_email)
            .map_err(|e| anyhow::anyhow!("WARDEN_ADMIN_EMAIL: {e}"))?;
        let (password, generated) = match &self.config.admin_password {
            Some(p) => (p.expose().clone(), false),
            None => (auth::generate_password(), true),
        };
        let now = self.now();
        let user = User {
            id: Uuid::new_v4(),
            email: email.clone(),
            groups: vec!["admins".into()],
            admin: true,
            auditor: false,
            created_at: now,
        };
        let hash = auth::hash_password(&password)?;
        let ev = AuditEvent::AdminChange {
            entity: "user".into(),
            action: "bootstrap".into(),
            name: email.clone(),
            before: None,
            after: Some(user_json(&user)),
        };
        self.store
            .upsert_user(
                &user,
                Some(&hash),
                false,
                AuditCtx::new("system", now, vec![ev]),
            )
            .await?;
        Ok(Some((email, generated.then_some(password))))
    }

    /// Email + password → a fresh API token (12 h). Rate-limited per email; every attempt audited.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        via: &str,
        peer: std::net::IpAddr,
    ) -> AppResult<(String, User)> {
        let email = email.trim().to_ascii_lowercase();
        let now = self.now();
        if self.login_limited(peer, &email) {
            self.audit_login_failure(&email, via, "rate limited").await;
            return Err(AppError::RateLimited(
                "wait a minute before trying again".into(),
            ));
        }
        let user = self.store.get_user(&email).await?;
        let hash = self.store.password_hash(&email).await?;
        let ok = match (&user, hash) {
            (Some(_), Some(h)) => auth::verify_password(password, &h),
            _ => {
                auth::burn_password_time(password);
                false
            }
        };
        let Some(user) = user.filter(|_| ok) else {
            self.note_login_failure(peer, &email);
            self.audit_login_failure(&email, via, "bad credentials")
                .await;
            return Err(AppError::Unauthorized("wrong email or password".into()));
        };
        self.note_login_success(peer, &email);
        let token = self
            .issue_token(&user, "login", Some(LOGIN_TOKEN_TTL_SEC), &user.email)
            .await?;
        self.store
            .append_audit(AuditCtx::new(
                &user.email,
                now,
                vec![AuditEvent::LoginSucceeded { via: via.into() }],
            ))
            .await?;
        Ok((token, user))
    }

    async fn audit_login_failure(&self, email: &str, via: &str, reason: &str) {
        let ev = AuditEvent::LoginFailed {
            email: email.into(),
            via: via.into(),
            reason: reason.into(),
        };
        if let Err(e) = self
            .store
            .append_audit(AuditCtx::new("anonymous", self.now(), vec![ev]))
            .await
        {
            tracing::error!(error = %e, "could not audit a failed login");
        }
    }

    /// The user behind a bearer token. Unknown, revoked, expired → Unauthorized; store errors →
    /// Internal (the caller denies: fail closed).
    pub async fn authenticate(&self, token: &str) -> AppResult<User> {
        if !token.starts_with(auth::TOKEN_PREFIX) || token.len() > 200 {
            return Err(AppError::Unauthorized(
                "invalid token: log in again (warden login)".into(),
            ));
        }
        match self
            .store
            .user_by_token(&auth::token_hash(token), self.now())
            .await?
        {
            Some((_, user)) => Ok(user),
            None => Err(AppError::Unauthorized(
                "unknown, revoked or expired token: log in again (warden login)".into(),
            )),
        }
    }

    async fn issue_token(
        &self,
        user: &User,
        name: &str,
        ttl: Option<i64>,
        actor: &str,
    ) -> AppResult<String> {
        let now = self.now();
        let (token, hash) = auth::new_token();
        let info = TokenInfo {
            id: Uuid::new_v4(),
            user_id: user.id,
            user_email: user.email.clone(),
            name: name.into(),
            created_at: now,
            expires_at: ttl.map(|s| now + Duration::seconds(s)),
            revoked_at: None,
        };
        let ev = AuditEvent::TokenCreated {
            token_id: info.id,
            user: user.email.clone(),
            expires_at: info.expires_at.map(|t| t.to_string()),
        };
        self.store
            .insert_token(&info, &hash, AuditCtx::new(actor, now, vec![ev]))
            .await?;
        Ok(token)
    }

    pub async fn create_user(&self, actor: &User, req: CreateUser) -> AppResult<User> {
        self.require_admin(actor)?;
        let email = validate_email(&req.email)?;
        let groups = validate_groups("groups", &req.groups)?;
        if req.admin && req.auditor {
            return Err(AppError::bad(
                "admin_and_auditor",
                "a user is an admin or an auditor, not both: auditors are read-only",
            ));
        }
        let hash = match &req.password {
            Some(p) if p.expose().len() < 8 => {
                return Err(AppError::bad(
                    "weak_password",
                    "password must be at least 8 characters",
                ));
            }
            Some(p) => Some(auth::hash_password(p.expose())?),
            None => None,
        };
        let before = self.store.get_user(&email).await?;
        if before.is_some() && !req.overwrite {
            return Err(AppError::conflict(
                "duplicate",
                format!("user {email} already exists (use --overwrite to update)"),
            ));
        }
        let now = self.now();
        let user = User {
            id: before.as_ref().map(|u| u.id).unwrap_or_else(Uuid::new_v4),
            email: email.clone(),
            groups,
            admin: req.admin,
            auditor: req.auditor,
            created_at: before.as_ref().map(|u| u.created_at).unwrap_or(now),
        };
        let ev = AuditEvent::AdminChange {
            entity: "user".into(),
            action: if before.is_some() { "update" } else { "create" }.into(),
            name: email,
            before: before.as_ref().map(user_json),
            after: Some(user_json(&user)),
        };
        Ok(self
            .store
            .upsert_user(
                &user,
                hash.as_deref(),
                req.overwrite,
                AuditCtx::new(&actor.email, now, vec![ev]),
            )
            .await?)
    }

    pub async fn list_users(&self, actor: &User) -> AppResult<Vec<User>> {
        self.require_admin(actor)?;
        Ok(self.store.list_users().await?)
    }

    pub async fn delete_user(&self, actor: &User, email: &str) -> AppResult<()> {
        self.require_admin(actor)?;
        let email = email.trim().to_ascii_lowercase();
        if email == actor.email {
            return Err(AppError::bad("self_delete", "you cannot delete yourself"));
        }
        let before = self
            .store
            .get_user(&email)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("no user {email}")))?;
        let ev = AuditEvent::AdminChange {
            entity: "user".into(),
            action: "delete".into(),
            name: email.clone(),
            before: Some(user_json(&before)),
            after: None,
        };
        Ok(self
            .store
            .delete_user(&email, AuditCtx::new(&actor.email, self.now(), vec![ev]))
            .await?)
    }

    pub async fn list_groups(&self, actor: &User) -> AppResult<Vec<GroupInfo>> {
        self.require_admin(actor)?;
        Ok(self.store.list_groups().await?)
    }

    /// Admins create tokens for anyone; users for themselves. `ttl_sec` None = no expiry.
    pub async fn create_token(
        &self,
        actor: &User,
        email: &str,
        name: &str,
        ttl_sec: Option<i64>,
    ) -> AppResult<String> {
        let email = email.trim().to_ascii_lowercase();
        if !actor.admin && actor.email != email {
            return Err(AppError::Forbidden(
                "only admins can create tokens for other users".into(),
            ));
        }
        if ttl_sec.is_some_and(|t| t < 1) {
            return Err(AppError::bad(
                "invalid_expiry",
                "token expiry must be positive",
            ));
        }
        if name.len() > 128 {
            return Err(AppError::bad(
                "invalid_name",
                "token name is longer than 128 characters",
            ));
        }
        let user = self
            .store
            .get_user(&email)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("no user {email}")))?;
        self.issue_token(
            &user,
            if name.is_empty() { "api" } else { name },
            ttl_sec,
            &actor.email,
        )
        .await
    }

    pub async fn list_tokens(
        &self,
        actor: &User,
        email: Option<&str>,
    ) -> AppResult<Vec<TokenInfo>> {
        let target = if actor.admin {
            email.map(str::to_string)
        } else {
            Some(actor.email.clone())
        };
        Ok(self.store.list_tokens(target.as_deref()).await?)
    }

    pub async fn revoke_token(&self, actor: &User, id: Uuid) -> AppResult<()> {
        let tokens = self.store.list_tokens(None).await?;
        let t = tokens
            .into_iter()
            .find(|t| t.id == id)
            .ok_or_else(|| AppError::NotFound(format!("no token {id}")))?;
        if !actor.admin && t.user_email != actor.email {
            return Err(AppError::Forbidden(
                "you can only revoke your own tokens".into(),
            ));
        }
        let ev = AuditEvent::TokenRevoked {
            token_id: id,
            user: t.user_email,
        };
        Ok(self
            .store
            .revoke_token(id, AuditCtx::new(&actor.email, self.now(), vec![ev]))
            .await?)
    }
}
