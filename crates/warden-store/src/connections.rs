//! Connections (the databases and commands the gateway reaches) with their encrypted secrets.
//!
//! It must never interpret, decrypt or log a connection's secret: it is an opaque blob sealed
//! by the gateway, stored and returned as is (listings do not even read it).

use warden_core::{Connection, Rule};

use crate::backend::{Q, q};
use crate::rows::{ConnectionRow, ConnectionSecretRow, to_json};
use crate::rules::upsert_rule_tx;
use crate::{AuditCtx, Result, Store, StoreError, dup};

/// The stored form of a connection: public fields plus the encrypted secret blob.
#[derive(Debug, Clone)]
pub struct ConnectionRecord {
    pub connection: Connection,
    /// Opaque ciphertext produced by the gateway's secret box (never interpreted here).
    pub secret: Vec<u8>,
}

/// Column lists, one per table, shared by every SELECT of that table.
macro_rules! connection_cols {
    () => {
        "id, name, kind, url_redacted, command_json, env_keys_json, access_groups_json, \
         slack_channel, teams_webhook, created_at_ms, updated_at_ms"
    };
}

impl Store {
    // ---- connections ---------------------------------------------------------------------

    /// Creates (or with `overwrite` replaces) a connection; `Duplicate` if it exists and
    /// `!overwrite`. `rule`, when given (the `--reviewers` shorthand), is upserted in the same
    /// transaction with its bindings.
    ///
    /// A replaced connection takes every field of `rec` (its id too: the secret's AAD may be
    /// bound to it) except `created_at`, which stays. The shorthand rule replaces a rule of the
    /// same name when `overwrite` (keeping that rule's id), else a name clash is `Duplicate`.
    pub async fn upsert_connection(
        &self,
        rec: &ConnectionRecord,
        overwrite: bool,
        rule: Option<&Rule>,
        audit: AuditCtx,
    ) -> Result<()> {
        let c = &rec.connection;
        let mut tx = self
            .db
            .write(format!("saving connection {}", c.name))
            .await?;
        let exists = tx
            .fetch_optional::<(String,)>(
                q("SELECT id FROM connections WHERE name = $1").bind(&c.name),
            )
            .await?
            .is_some();
        if exists && !overwrite {
            return Err(StoreError::Duplicate(format!(
                "connection {} already exists (use --overwrite to replace it)",
                c.name
            )));
        }
        let query = |sql: &'static str| -> Result<Q> {
            Ok(q(sql)
                .bind(c.id)
                .bind(&c.name)
                .bind(c.kind.as_str())
                .bind(&c.url_redacted)
                .bind(to_json("command", &c.command)?)
                .bind(to_json("env keys", &c.env_keys)?)
                .bind(to_json("access groups", &c.access_groups)?)
                .bind(&c.slack_channel)
                .bind(&c.teams_webhook)
                .bind(rec.secret.as_slice())
                .bind(c.updated_at))
        };
        let res = if exists {
            tx.execute(query(
                "UPDATE connections SET id = $1, kind = $3, url_redacted = $4, command_json = $5, \
                 env_keys_json = $6, access_groups_json = $7, slack_channel = $8, teams_webhook = $9, \
                 secret = $10, updated_at_ms = $11 WHERE name = $2",
            )?)
            .await
        } else {
            tx.execute(
                query(
                    "INSERT INTO connections (id, name, kind, url_redacted, command_json, env_keys_json, \
                     access_groups_json, slack_channel, teams_webhook, secret, updated_at_ms, created_at_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                )?
                .bind(c.created_at),
            )
            .await
        };
        dup(res, || {
            format!(
                "connection id {} is already used by another connection",
                c.id
            )
        })?;
        if let Some(rule) = rule {
            upsert_rule_tx(&mut tx, rule, overwrite).await?;
        }
        tx.audit(audit.now, &audit.actor, &audit.events)?;
        tx.commit().await
    }
    pub async fn get_connection(&self, name: &str) -> Result<Option<ConnectionRecord>> {
        let mut h = self.db.read(format!("reading connection {name}")).await?;
        let row: Option<ConnectionSecretRow> = h
            .fetch_optional(
                q(concat!(
                    "SELECT ",
                    connection_cols!(),
                    ", secret FROM connections WHERE name = $1"
                ))
                .bind(name),
            )
            .await?;
        row.map(|r| {
            Ok(ConnectionRecord {
                connection: r.conn.into_connection()?,
                secret: r.secret,
            })
        })
        .transpose()
    }
    /// Ordered by name (secrets are not read).
    pub async fn list_connections(&self) -> Result<Vec<Connection>> {
        let mut h = self.db.read("listing connections").await?;
        let rows: Vec<ConnectionRow> = h
            .fetch_all(q(concat!(
                "SELECT ",
                connection_cols!(),
                " FROM connections ORDER BY name"
            )))
            .await?;
        rows.into_iter()
            .map(ConnectionRow::into_connection)
            .collect()
    }
    /// `Invalid` if a rule still binds it (the message names the rules); `NotFound` if unknown.
    pub async fn delete_connection(&self, name: &str, audit: AuditCtx) -> Result<()> {
        let mut tx = self.db.write(format!("deleting connection {name}")).await?;
        let exists = tx
            .fetch_optional::<(String,)>(q("SELECT id FROM connections WHERE name = $1").bind(name))
            .await?
            .is_some();
        if !exists {
            return Err(StoreError::NotFound(format!("connection {name} not found")));
        }
        let rules: Vec<(String,)> = tx
            .fetch_all(
                q(
                    "SELECT r.name FROM rule_bindings b JOIN rules r ON r.id = b.rule_id \
                   WHERE b.connection = $1 ORDER BY r.name",
                )
                .bind(name),
            )
            .await?;
        if !rules.is_empty() {
            let names: Vec<String> = rules.into_iter().map(|(n,)| n).collect();
            return Err(StoreError::Invalid(format!(
                "connection {name} is still bound to rule(s) {}: remove it from those rules (or delete them) first",
                names.join(", ")
            )));
        }
        tx.execute(q("DELETE FROM connections WHERE name = $1").bind(name))
            .await?;
        tx.audit(audit.now, &audit.actor, &audit.events)?;
        tx.commit().await
    }
}
