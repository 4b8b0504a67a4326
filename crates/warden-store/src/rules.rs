//! Review rules and their bindings to connections (at most one rule of each type per
//! connection, enforced here and by the database's UNIQUE constraint).
//!
//! It must never decide what a rule means for a request (that is the core's policy): it only
//! persists rules the core validated and checks the bindings' integrity.

use warden_core::{Rule, RuleType};

use crate::backend::{Q, WriteTx, q};
use crate::rows::{RuleRow, to_json};
use crate::{AuditCtx, Result, Store, StoreError, dup};

/// Column lists, one per table, shared by every SELECT of that table.
macro_rules! rule_cols {
    () => {
        "id, name, description, kind, connections_json, required_groups_json, \
         approval_groups_json, require_all_groups, approval_amount, force_approval_groups_json, \
         exempt_groups_json, timeout_sec, max_duration_sec, require_reason, created_at_ms, \
         updated_at_ms"
    };
}

fn already_bound(connection: &str, kind: RuleType, other: &str) -> StoreError {
    StoreError::Duplicate(format!(
        "connection {connection} already has a {} rule ({other}); a connection has at most one \
         rule of each type: remove it from {other} first or edit that rule",
        kind.as_str()
    ))
}

fn unknown_connection(connection: &str) -> StoreError {
    StoreError::Invalid(format!(
        "unknown connection {connection} (create it first: warden admin create connection {connection} …)"
    ))
}

/// Inserts or replaces a rule and its bindings inside `tx`. With `replace_by_name`, an existing
/// rule of the same name is replaced (keeping its id); otherwise a name clash is `Duplicate`.
pub(crate) async fn upsert_rule_tx(
    tx: &mut WriteTx,
    rule: &Rule,
    replace_by_name: bool,
) -> Result<()> {
    let rule_id = rule.id.to_string();
    let by_name: Option<(String,)> = tx
        .fetch_optional(q("SELECT id FROM rules WHERE name = $1").bind(&rule.name))
        .await?;
    let target = match by_name {
        Some((id,)) if id == rule_id || replace_by_name => id,
        Some(_) => {
            return Err(StoreError::Duplicate(format!(
                "rule {} already exists: choose another name or edit that rule",
                rule.name
            )));
        }
        None => rule_id,
    };
    let exists = tx
        .fetch_optional::<(String,)>(q("SELECT id FROM rules WHERE id = $1").bind(&target))
        .await?
        .is_some();

    let mut connections: Vec<&str> = Vec::new();
    for c in &rule.connections {
        if !connections.contains(&c.as_str()) {
            connections.push(c);
        }
    }
    // Checked inside the write lock, so these reads are current; the UNIQUE and FOREIGN KEY
    // constraints below are the backstop.
    for c in &connections {
        let known: Option<(String,)> = tx
            .fetch_optional(q("SELECT name FROM connections WHERE name = $1").bind(*c))
            .await?;
        if known.is_none() {
            return Err(unknown_connection(c));
        }
        let other: Option<(String,)> = tx
            .fetch_optional(
                q(
                    "SELECT r.name FROM rule_bindings b JOIN rules r ON r.id = b.rule_id \
                   WHERE b.connection = $1 AND b.rule_type = $2 AND b.rule_id <> $3",
                )
                .bind(*c)
                .bind(rule.kind.as_str())
                .bind(&target),
            )
            .await?;
        if let Some((other,)) = other {
            return Err(already_bound(c, rule.kind, &other));
        }
    }

    let rule_q = |sql: &'static str| -> Result<Q> {
        Ok(q(sql)
            .bind(&target)
            .bind(&rule.name)
            .bind(&rule.description)
            .bind(rule.kind.as_str())
            .bind(to_json("rule connections", &rule.connections)?)
            .bind(to_json("required groups", &rule.required_groups)?)
            .bind(to_json("approval groups", &rule.approval_groups)?)
            .bind(rule.require_all_groups)
            .bind(i64::from(rule.approval_amount))
            .bind(to_json(
                "force approval groups",
                &rule.force_approval_groups,
            )?)
            .bind(to_json("exempt groups", &rule.exempt_groups)?)
            .bind(rule.timeout_sec)
            .bind(rule.max_duration_sec)
            .bind(rule.require_reason)
            .bind(rule.updated_at))
    };
    let res = if exists {
        tx.execute(rule_q(
            "UPDATE rules SET name = $2, description = $3, kind = $4, connections_json = $5, \
             required_groups_json = $6, approval_groups_json = $7, require_all_groups = $8, \
             approval_amount = $9, force_approval_groups_json = $10, exempt_groups_json = $11, \
             timeout_sec = $12, max_duration_sec = $13, require_reason = $14, updated_at_ms = $15 \
             WHERE id = $1",
        )?)
        .await
    } else {
        tx.execute(rule_q(
            "INSERT INTO rules (id, name, description, kind, connections_json, required_groups_json, \
             approval_groups_json, require_all_groups, approval_amount, force_approval_groups_json, \
             exempt_groups_json, timeout_sec, max_duration_sec, require_reason, updated_at_ms, \
             created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )?
        .bind(rule.created_at))
        .await
    };
    dup(res, || {
        format!(
            "rule {} already exists: choose another name or edit that rule",
            rule.name
        )
    })?;

    tx.execute(q("DELETE FROM rule_bindings WHERE rule_id = $1").bind(&target))
        .await?;
    for c in connections {
        let res = tx
            .execute(
                q("INSERT INTO rule_bindings (connection, rule_type, rule_id) VALUES ($1, $2, $3)")
                    .bind(c)
                    .bind(rule.kind.as_str())
                    .bind(&target),
            )
            .await;
        match res {
            Err(e) if e.is_unique_violation() => {
                return Err(already_bound(c, rule.kind, "another rule"));
            }
            Err(e) if e.is_foreign_key_violation() => return Err(unknown_connection(c)),
            other => {
                other?;
            }
        }
    }
    Ok(())
}

impl Store {
    // ---- rules ---------------------------------------------------------------------------

    /// Inserts or replaces (by id) a rule validated by the core; bindings (connection, type) are
    /// unique in the database too, so a race between two admins cannot bind twice (`Duplicate`).
    ///
    /// Also `Duplicate` if another rule has the name, `Invalid` for an unknown connection. A
    /// replaced rule keeps its `created_at`.
    pub async fn upsert_rule(&self, rule: &Rule, audit: AuditCtx) -> Result<()> {
        let mut tx = self.db.write(format!("saving rule {}", rule.name)).await?;
        upsert_rule_tx(&mut tx, rule, false).await?;
        tx.audit(audit.now, &audit.actor, &audit.events)?;
        tx.commit().await
    }
    pub async fn get_rule(&self, name: &str) -> Result<Option<Rule>> {
        let mut h = self.db.read(format!("reading rule {name}")).await?;
        let row: Option<RuleRow> = h
            .fetch_optional(
                q(concat!(
                    "SELECT ",
                    rule_cols!(),
                    " FROM rules WHERE name = $1"
                ))
                .bind(name),
            )
            .await?;
        row.map(RuleRow::into_rule).transpose()
    }
    /// Ordered by name.
    pub async fn list_rules(&self) -> Result<Vec<Rule>> {
        let mut h = self.db.read("listing rules").await?;
        let rows: Vec<RuleRow> = h
            .fetch_all(q(concat!(
                "SELECT ",
                rule_cols!(),
                " FROM rules ORDER BY name"
            )))
            .await?;
        rows.into_iter().map(RuleRow::into_rule).collect()
    }
    /// Rules bound to a connection (at most one per type).
    pub async fn rules_for_connection(&self, connection: &str) -> Result<Vec<Rule>> {
        let mut h = self
            .db
            .read(format!("reading the rules of connection {connection}"))
            .await?;
        let rows: Vec<RuleRow> = h
            .fetch_all(
                q(concat!(
                    "SELECT ",
                    rule_cols!(),
                    " FROM rules WHERE id IN (SELECT rule_id FROM rule_bindings WHERE connection = $1) \
                     ORDER BY kind, name"
                ))
                .bind(connection),
            )
            .await?;
        rows.into_iter().map(RuleRow::into_rule).collect()
    }
    /// Deletes the rule and its bindings. `NotFound` if unknown.
    pub async fn delete_rule(&self, name: &str, audit: AuditCtx) -> Result<()> {
        let mut tx = self.db.write(format!("deleting rule {name}")).await?;
        let Some((id,)): Option<(String,)> = tx
            .fetch_optional(q("SELECT id FROM rules WHERE name = $1").bind(name))
            .await?
        else {
            return Err(StoreError::NotFound(format!("rule {name} not found")));
        };
        tx.execute(q("DELETE FROM rule_bindings WHERE rule_id = $1").bind(&id))
            .await?;
        tx.execute(q("DELETE FROM rules WHERE id = $1").bind(&id))
            .await?;
        tx.audit(audit.now, &audit.actor, &audit.events)?;
        tx.commit().await
    }
}
