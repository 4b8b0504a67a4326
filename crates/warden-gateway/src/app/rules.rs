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
            .validate(&known, &rules, replacing.map(|r| r.id), self.now())
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
        let empty = |g: &String| !users.iter().any(|u| u.groups.contains(g));
        let name = &rule.name;
        let mut warnings = Vec::new();
        let fix = |g: &str| format!("warden admin create user EMAIL --groups {g} --overwrite");
        for g in rule.approval_groups.iter().filter(|g| empty(g)) {
            warnings.push(format!(
                "approval group {g} of rule {name} has no members: no one can approve its requests until someone is added ({})",
                fix(g)
            ));
        }
        for g in rule.force_approval_groups.iter().filter(|g| empty(g)) {
            warnings.push(format!(
                "force-approval group {g} of rule {name} has no members ({})",
                fix(g)
            ));
        }
        for g in rule.required_groups.iter().filter(|g| empty(g)) {
            warnings.push(format!(
                "required group {g} of rule {name} has no members: only admins can make requests under it until someone is added ({})",
                fix(g)
            ));
        }
        Ok(warnings)
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
