//! Users, their groups and their API tokens: the identities every other aggregate names.
//!
//! It must never store or return a password or a token in clear: passwords arrive as argon2id
//! PHC strings and tokens as their SHA-256, and only that is written.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;
use warden_core::User;

use crate::backend::q;
use crate::rows::{self, TokenRow, TokenUserRow, UserRow, to_json};
use crate::{AuditCtx, Result, Store, StoreError, dup};

/// An API token's metadata (never the token itself: only its SHA-256 is stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: Uuid,
    pub user_id: Uuid,
    pub user_email: String,
    pub name: String,
    #[serde(with = "warden_core::timefmt::rfc3339_ms")]
    pub created_at: OffsetDateTime,
    #[serde(with = "warden_core::timefmt::rfc3339_ms::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "warden_core::timefmt::rfc3339_ms::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

/// A group and its members (groups exist while a user or a rule names them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfo {
    pub name: String,
    pub members: Vec<String>,
}

/// Column lists, one per table, shared by every SELECT of that table.
macro_rules! user_cols {
    () => {
        "id, email, groups_json, admin, auditor, created_at_ms"
    };
}
macro_rules! token_cols {
    () => {
        "id, user_id, user_email, name, created_at_ms, expires_at_ms, revoked_at_ms"
    };
}

impl Store {
    // ---- users & groups ----------------------------------------------------------------

    pub async fn count_users(&self) -> Result<i64> {
        let mut h = self.db.read("counting users").await?;
        let (n,): (i64,) = h.fetch_one(q("SELECT COUNT(*) FROM users")).await?;
        Ok(n)
    }
    /// Creates a user; `StoreError::Duplicate` if the email exists (or replaces groups/admin
    /// when `overwrite`). `password_hash` is an argon2id PHC string or `None` (token-only users).
    ///
    /// On overwrite the user keeps its id and creation time, and `None` keeps the current
    /// password. Returns the stored user.
    pub async fn upsert_user(
        &self,
        user: &User,
        password_hash: Option<&str>,
        overwrite: bool,
        audit: AuditCtx,
    ) -> Result<User> {
        let email = user.email.as_str();
        let mut tx = self.db.write(format!("saving user {email}")).await?;
        let existing: Option<(String,)> = tx
            .fetch_optional(q("SELECT id FROM users WHERE email = $1").bind(email))
            .await?;
        let groups = to_json("groups", &user.groups)?;
        match existing {
            Some(_) if !overwrite => {
                return Err(StoreError::Duplicate(format!(
                    "user {email} already exists (use --overwrite to replace its groups and admin flag)"
                )));
            }
            Some(_) => {
                tx.execute(
                    q(
                        "UPDATE users SET groups_json = $2, admin = $3, auditor = $6, \
                       password_hash = COALESCE($4, password_hash), updated_at_ms = $5 \
                       WHERE email = $1",
                    )
                    .bind(email)
                    .bind(groups)
                    .bind(user.admin)
                    .bind(password_hash)
                    .bind(audit.now)
                    .bind(user.auditor),
                )
                .await?;
            }
            None => {
                let res = tx
                    .execute(
                        q(
                            "INSERT INTO users (id, email, groups_json, admin, password_hash, \
                           created_at_ms, updated_at_ms, auditor) \
                           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                        )
                        .bind(user.id)
                        .bind(email)
                        .bind(groups)
                        .bind(user.admin)
                        .bind(password_hash)
                        .bind(user.created_at)
                        .bind(audit.now)
                        .bind(user.auditor),
                    )
                    .await;
                dup(res, || {
                    format!("user id {} already exists (with another email)", user.id)
                })?;
            }
        }
        tx.audit(audit.now, &audit.actor, &audit.events)?;
        let stored: UserRow = tx
            .fetch_one(
                q(concat!(
                    "SELECT ",
                    user_cols!(),
                    " FROM users WHERE email = $1"
                ))
                .bind(email),
            )
            .await?;
        tx.commit().await?;
        stored.into_user()
    }
    pub async fn get_user(&self, email: &str) -> Result<Option<User>> {
        let mut h = self.db.read(format!("reading user {email}")).await?;
        let row: Option<UserRow> = h
            .fetch_optional(
                q(concat!(
                    "SELECT ",
                    user_cols!(),
                    " FROM users WHERE email = $1"
                ))
                .bind(email),
            )
            .await?;
        row.map(UserRow::into_user).transpose()
    }
    pub async fn get_user_by_id(&self, id: Uuid) -> Result<Option<User>> {
        let mut h = self.db.read(format!("reading user {id}")).await?;
        let row: Option<UserRow> = h
            .fetch_optional(
                q(concat!(
                    "SELECT ",
                    user_cols!(),
                    " FROM users WHERE id = $1"
                ))
                .bind(id),
            )
            .await?;
        row.map(UserRow::into_user).transpose()
    }
    pub async fn password_hash(&self, email: &str) -> Result<Option<String>> {
        let mut h = self
            .db
            .read(format!("reading the password of {email}"))
            .await?;
        let row: Option<(Option<String>,)> = h
            .fetch_optional(q("SELECT password_hash FROM users WHERE email = $1").bind(email))
            .await?;
        Ok(row.and_then(|(hash,)| hash))
    }
    /// `NotFound` if the user is unknown.
    pub async fn set_password_hash(&self, email: &str, hash: &str, audit: AuditCtx) -> Result<()> {
        let mut tx = self
            .db
            .write(format!("setting the password of {email}"))
            .await?;
        let n = tx
            .execute(
                q("UPDATE users SET password_hash = $2, updated_at_ms = $3 WHERE email = $1")
                    .bind(email)
                    .bind(hash)
                    .bind(audit.now),
            )
            .await?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("user {email} not found")));
        }
        tx.audit(audit.now, &audit.actor, &audit.events)?;
        tx.commit().await
    }
    /// Ordered by email.
    pub async fn list_users(&self) -> Result<Vec<User>> {
        let mut h = self.db.read("listing users").await?;
        let rows: Vec<UserRow> = h
            .fetch_all(q(concat!(
                "SELECT ",
                user_cols!(),
                " FROM users ORDER BY email"
            )))
            .await?;
        rows.into_iter().map(UserRow::into_user).collect()
    }
    /// Deletes the user and revokes their tokens. `NotFound` if unknown.
    pub async fn delete_user(&self, email: &str, audit: AuditCtx) -> Result<()> {
        let mut tx = self.db.write(format!("deleting user {email}")).await?;
        let Some((id,)): Option<(String,)> = tx
            .fetch_optional(q("SELECT id FROM users WHERE email = $1").bind(email))
            .await?
        else {
            return Err(StoreError::NotFound(format!("user {email} not found")));
        };
        tx.execute(
            q("UPDATE tokens SET revoked_at_ms = $2 WHERE user_id = $1 AND revoked_at_ms IS NULL")
                .bind(&id)
                .bind(audit.now),
        )
        .await?;
        tx.execute(q("DELETE FROM users WHERE id = $1").bind(&id))
            .await?;
        tx.audit(audit.now, &audit.actor, &audit.events)?;
        tx.commit().await
    }
    /// Every group named by a user, a rule or a connection, with its members.
    ///
    /// Sorted by name; members (emails) sorted too. Groups only named by rules or connection
    /// access lists have no members.
    pub async fn list_groups(&self) -> Result<Vec<GroupInfo>> {
        let mut h = self.db.read("listing groups").await?;
        let users: Vec<(String, String)> = h
            .fetch_all(q("SELECT email, groups_json FROM users"))
            .await?;
        let rules: Vec<(String, String, String, String, String)> = h
            .fetch_all(q(
                "SELECT name, required_groups_json, approval_groups_json, \
                          force_approval_groups_json, exempt_groups_json FROM rules",
            ))
            .await?;
        let conns: Vec<(String, String)> = h
            .fetch_all(q("SELECT name, access_groups_json FROM connections"))
            .await?;

        let parse = |table: &str, key: &str, column: &str, s: &str| -> Result<Vec<String>> {
            serde_json::from_str(s)
                .map_err(|e| rows::corrupt(table, key, column, format_args!("bad JSON: {e}")))
        };
        let mut groups: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (email, g) in users {
            for g in parse("users", &email, "groups_json", &g)? {
                groups.entry(g).or_default().insert(email.clone());
            }
        }
        for (name, a, b, c, d) in rules {
            for (col, s) in [
                ("required_groups_json", a),
                ("approval_groups_json", b),
                ("force_approval_groups_json", c),
                ("exempt_groups_json", d),
            ] {
                for g in parse("rules", &name, col, &s)? {
                    groups.entry(g).or_default();
                }
            }
        }
        for (name, g) in conns {
            for g in parse("connections", &name, "access_groups_json", &g)? {
                groups.entry(g).or_default();
            }
        }
        Ok(groups
            .into_iter()
            .map(|(name, members)| GroupInfo {
                name,
                members: members.into_iter().collect(),
            })
            .collect())
    }

    // ---- tokens --------------------------------------------------------------------------

    /// Stores a token's hash for `info.user_id` (`NotFound` if that user does not exist). The
    /// stored owner email is the user's current one.
    pub async fn insert_token(
        &self,
        info: &TokenInfo,
        token_sha256: &str,
        audit: AuditCtx,
    ) -> Result<()> {
        let mut tx = self
            .db
            .write(format!(
                "creating token {} for {}",
                info.name, info.user_email
            ))
            .await?;
        let Some((email,)): Option<(String,)> = tx
            .fetch_optional(q("SELECT email FROM users WHERE id = $1").bind(info.user_id))
            .await?
        else {
            return Err(StoreError::NotFound(format!(
                "user {} ({}) not found: create the user before its token",
                info.user_email, info.user_id
            )));
        };
        let res = tx
            .execute(
                q("INSERT INTO tokens (id, user_id, user_email, name, token_sha256, created_at_ms, \
                   expires_at_ms, revoked_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
                .bind(info.id)
                .bind(info.user_id)
                .bind(email)
                .bind(&info.name)
                .bind(token_sha256)
                .bind(info.created_at)
                .bind(info.expires_at)
                .bind(info.revoked_at),
            )
            .await;
        dup(res, || {
            format!(
                "token {} already exists (or the same token was issued twice)",
                info.id
            )
        })?;
        tx.audit(audit.now, &audit.actor, &audit.events)?;
        tx.commit().await
    }
    /// The token's owner if the hash is known, not revoked and not expired at `now`.
    pub async fn user_by_token(
        &self,
        token_sha256: &str,
        now: OffsetDateTime,
    ) -> Result<Option<(TokenInfo, User)>> {
        let mut h = self.db.read("looking up an API token").await?;
        let row: Option<TokenUserRow> = h
            .fetch_optional(
                q("SELECT t.id, t.user_id, t.user_email, t.name, t.created_at_ms, t.expires_at_ms, \
                   t.revoked_at_ms, u.id AS u_id, u.email AS u_email, u.groups_json AS u_groups_json, \
                   u.admin AS u_admin, u.auditor AS u_auditor, u.created_at_ms AS u_created_at_ms \
                   FROM tokens t JOIN users u ON u.id = t.user_id \
                   WHERE t.token_sha256 = $1 AND t.revoked_at_ms IS NULL \
                   AND (t.expires_at_ms IS NULL OR t.expires_at_ms > $2)")
                .bind(token_sha256)
                .bind(now),
            )
            .await?;
        row.map(TokenUserRow::into_pair).transpose()
    }
    /// Oldest first; revoked and expired tokens included.
    pub async fn list_tokens(&self, user_email: Option<&str>) -> Result<Vec<TokenInfo>> {
        let mut h = self.db.read("listing tokens").await?;
        let rows: Vec<TokenRow> = match user_email {
            Some(email) => {
                h.fetch_all(
                    q(concat!(
                        "SELECT ",
                        token_cols!(),
                        " FROM tokens WHERE user_email = $1 ORDER BY created_at_ms, id"
                    ))
                    .bind(email),
                )
                .await?
            }
            None => {
                h.fetch_all(q(concat!(
                    "SELECT ",
                    token_cols!(),
                    " FROM tokens ORDER BY created_at_ms, id"
                )))
                .await?
            }
        };
        rows.into_iter().map(TokenRow::into_info).collect()
    }
    /// `NotFound` if unknown; revoking twice keeps the first revocation time.
    pub async fn revoke_token(&self, id: Uuid, audit: AuditCtx) -> Result<()> {
        let mut tx = self.db.write(format!("revoking token {id}")).await?;
        let n = tx
            .execute(
                q("UPDATE tokens SET revoked_at_ms = COALESCE(revoked_at_ms, $2) WHERE id = $1")
                    .bind(id)
                    .bind(audit.now),
            )
            .await?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("token {id} not found")));
        }
        tx.audit(audit.now, &audit.actor, &audit.events)?;
        tx.commit().await
    }
}
