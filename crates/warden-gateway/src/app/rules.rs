//! Access request rules: create, update, delete, list — validated by the core before the store
//! sees them; every change audited with before/after.

use warden_core::audit::AuditEvent;
use warden_core::rule::RuleSpec;
use warden_core::{Rule, User};
use warden_store::AuditCtx;

use super::{App, AppError, AppResult};

impl App {
    async fn validate_rule(
        &self,
        spec: &RuleSpec,
        replacing: Option<&Rule>,
    ) -> AppResult<(Rule, Vec<Rule>)> {
        let rules = self.store.list_rules().await?;
        let known: Vec<String> = self
            .store
            .list_connections()
            .await?
            .into_iter()
            .map(|c| c.name)
            .collect();
        let rule = spec
            .validate(
                &known,
                &rules,
                replacing.map(|r| r.id),
                uuid::Uuid::now_v7(),
                self.now(),
            )
            .map_err(|e| AppError::BadRequest {
                code: "invalid_rule",
                message: e.to_string(),
            })?;
        Ok((rule, rules))
    }

    /// What an admin should know about a rule just saved: groups it names that have no
    /// members (accepted — the members may come later — but said).
    pub async fn rule_warnings(&self, rule: &Rule) -> AppResult<Vec<String>> {
        let users = self.store.list_users().await?;
        Ok(rule_warnings_for(rule, &users))
    }

    /// Every setup warning of the moment, for the admin pages: rules naming groups without
    /// members, connections whose access groups have none.
    pub async fn setup_warnings(&self) -> AppResult<Vec<String>> {
        let users = self.store.list_users().await?;
        let mut out: Vec<String> = self
            .store
            .list_rules()
            .await?
            .iter()
            .flat_map(|r| rule_warnings_for(r, &users))
            .collect();
        for c in self.store.list_connections().await? {
            for g in c.access_groups.iter().filter(|g| !has_members(g, &users)) {
                out.push(format!(
                    "access group {g} of connection {} has no members: only admins can use it through that group ({})",
                    c.name,
                    join_fix(g)
                ));
            }
        }
        Ok(out)
    }

    pub async fn create_rule(&self, actor: &User, spec: RuleSpec) -> AppResult<Rule> {
        self.require_admin(actor)?;
        let (rule, _) = self.validate_rule(&spec, None).await?;
        let ev = AuditEvent::AdminChange {
            entity: "rule".into(),
            action: "create".into(),
            name: rule.name.clone(),
            before: None,
            after: serde_json::to_value(&rule).ok(),
        };
        self.store
            .upsert_rule(&rule, AuditCtx::new(&actor.email, self.now(), vec![ev]))
            .await?;
        Ok(rule)
    }

    /// Replaces every field of rule `name` with `spec` (the CLI loads, edits and resubmits).
    pub async fn update_rule(&self, actor: &User, name: &str, spec: RuleSpec) -> AppResult<Rule> {
        self.require_admin(actor)?;
        let before = self
            .store
            .get_rule(name)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("no rule {name:?}")))?;
        let (rule, _) = self.validate_rule(&spec, Some(&before)).await?;
        let ev = AuditEvent::AdminChange {
            entity: "rule".into(),
            action: "update".into(),
            name: rule.name.clone(),
            before: serde_json::to_value(&before).ok(),
            after: serde_json::to_value(&rule).ok(),
        };
        self.store
            .upsert_rule(&rule, AuditCtx::new(&actor.email, self.now(), vec![ev]))
            .await?;
        Ok(rule)
    }

    pub async fn delete_rule(&self, actor: &User, name: &str) -> AppResult<()> {
        self.require_admin(actor)?;
        let before = self
            .store
            .get_rule(name)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("no rule {name:?}")))?;
        let ev = AuditEvent::AdminChange {
            entity: "rule".into(),
            action: "delete".into(),
            name: name.into(),
            before: serde_json::to_value(&before).ok(),
            after: None,
        };
        Ok(self
            .store
            .delete_rule(name, AuditCtx::new(&actor.email, self.now(), vec![ev]))
            .await?)
    }

    /// Everyone may read rules (they explain why a command is held); admins edit them.
    pub async fn list_rules(&self) -> AppResult<Vec<Rule>> {
        Ok(self.store.list_rules().await?)
    }

    pub async fn get_rule(&self, name: &str) -> AppResult<Rule> {
        self.store
            .get_rule(name)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("no rule {name:?}")))
    }
}

fn has_members(group: &str, users: &[User]) -> bool {
    users.iter().any(|u| u.groups.iter().any(|g| g == group))
}

fn join_fix(group: &str) -> String {
    format!("warden admin create user EMAIL --groups {group} --overwrite")
}

/// Groups a rule names that have no members.
fn rule_warnings_for(rule: &Rule, users: &[User]) -> Vec<String> {
    let name = &rule.name;
    let empty = |g: &&String| !has_members(g, users);
    let mut warnings = Vec::new();
    for g in rule.approval_groups.iter().filter(empty) {
        warnings.push(format!(
            "approval group {g} of rule {name} has no members: no one can approve its requests until someone is added ({})",
            join_fix(g)
        ));
    }
    for g in rule.force_approval_groups.iter().filter(empty) {
        warnings.push(format!(
            "force-approval group {g} of rule {name} has no members ({})",
            join_fix(g)
        ));
    }
    for g in rule.required_groups.iter().filter(empty) {
        warnings.push(format!(
            "required group {g} of rule {name} has no members: only admins can make requests under it until someone is added ({})",
            join_fix(g)
        ));
    }
    warnings
}
