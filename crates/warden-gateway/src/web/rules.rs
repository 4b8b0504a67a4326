//! Access request rules: the list (everyone may read rules — they explain why a command is held)
//! and the admin form with every field of the seeds' rule steps, validation errors shown next to
//! the field at fault (`RuleError::field()`).
//!
//! # What it must never do
//! Save a rule without going through `App::create_rule` / `update_rule` (validation, audit,
//! admin check), or show the form to a non-admin (they get the 403 page).

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;
use warden_core::rule::{RuleError, RuleSpec};
use warden_core::{Rule, RuleType};

use super::view::dur;
use super::{Form, Nav, Posted, Viewer, WebResult, fail, render, render_status, see_other};
use crate::app::AppError;
use crate::http::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/rules", get(list).post(create))
        .route("/rules/new", get(new_form))
        .route("/rules/{name}/edit", get(edit_form).post(update))
        .route("/rules/{name}/delete", post(delete))
}

pub struct RuleRow {
    pub name: String,
    pub description: String,
    pub kind: &'static str,
    pub connections: String,
    pub required_groups: String,
    pub approval_groups: String,
    pub quorum: String,
    pub force_groups: String,
    pub exempt_groups: String,
    pub timeout: String,
    pub max_duration: String,
}

fn row(r: &Rule) -> RuleRow {
    let or_all = |v: &[String]| {
        if v.is_empty() {
            "everyone".to_string()
        } else {
            v.join(", ")
        }
    };
    RuleRow {
        name: r.name.clone(),
        description: r.description.clone(),
        kind: match r.kind {
            RuleType::Command => "by Command",
            RuleType::Jit => "Just-in-Time",
        },
        connections: r.connections.join(", "),
        required_groups: or_all(&r.required_groups),
        approval_groups: r.approval_groups.join(", "),
        quorum: format!(
            "{}{}",
            r.approval_amount,
            if r.require_all_groups {
                ", every group"
            } else {
                ""
            }
        ),
        force_groups: r.force_approval_groups.join(", "),
        exempt_groups: r.exempt_groups.join(", "),
        timeout: r.timeout_sec.map(dur).unwrap_or_else(|| "default".into()),
        max_duration: match r.kind {
            RuleType::Jit => dur(r.max_duration()),
            RuleType::Command => String::new(),
        },
    }
}

#[derive(Template)]
#[template(path = "rules.html")]
struct ListPage {
    nav: Option<Nav>,
    rules: Vec<RuleRow>,
    admin: bool,
    csrf: String,
    notice: String,
    /// Setup mistakes of the moment (admins only): groups without members.
    warnings: Vec<String>,
}

#[derive(Deserialize, Default)]
struct DoneQuery {
    done: Option<String>,
}

async fn list(
    State(app): State<AppState>,
    viewer: Viewer,
    Query(q): Query<DoneQuery>,
) -> WebResult {
    let rules = app.list_rules().await.map_err(fail(&viewer, "rules"))?;
    let warnings = if viewer.user.admin {
        app.setup_warnings().await.map_err(fail(&viewer, "rules"))?
    } else {
        Vec::new()
    };
    Ok(render(&ListPage {
        nav: viewer.nav("rules"),
        rules: rules.iter().map(row).collect(),
        admin: viewer.user.admin,
        csrf: viewer.csrf.clone(),
        notice: match q.done.as_deref() {
            Some("created") => "Rule created.".into(),
            Some("updated") => "Rule saved.".into(),
            Some("deleted") => "Rule deleted.".into(),
            _ => String::new(),
        },
        warnings,
    }))
}

/// The form's values as typed (kept on errors so nothing is lost).
#[derive(Default, Clone)]
pub struct RuleFormValues {
    pub name: String,
    pub description: String,
    pub kind: String,
    pub connections: Vec<(String, bool)>,
    pub required_groups: String,
    pub approval_groups: String,
    pub require_all_groups: bool,
    pub approval_amount: String,
    pub force_approval_groups: String,
    pub exempt_groups: String,
    pub timeout: String,
    pub max_duration: String,
    pub require_reason: bool,
}

/// One message per field (empty = fine) plus one for the whole form.
#[derive(Default)]
pub struct FieldErrors {
    pub general: String,
    pub name: String,
    pub description: String,
    pub kind: String,
    pub connections: String,
    pub required_groups: String,
    pub approval_groups: String,
    pub approval_amount: String,
    pub force_approval_groups: String,
    pub exempt_groups: String,
    pub timeout: String,
    pub max_duration: String,
}

impl FieldErrors {
    fn set(&mut self, field: &str, message: String) {
        let slot = match field {
            "name" => &mut self.name,
            "description" => &mut self.description,
            "type" => &mut self.kind,
            "connections" => &mut self.connections,
            "required_groups" => &mut self.required_groups,
            "approval_groups" => &mut self.approval_groups,
            "approval_amount" => &mut self.approval_amount,
            "force_approval_groups" => &mut self.force_approval_groups,
            "exempt_groups" => &mut self.exempt_groups,
            "timeout" => &mut self.timeout,
            "max_duration" => &mut self.max_duration,
            _ => &mut self.general,
        };
        *slot = message;
    }
    fn any(&self) -> bool {
        [
            &self.general,
            &self.name,
            &self.description,
            &self.kind,
            &self.connections,
            &self.required_groups,
            &self.approval_groups,
            &self.approval_amount,
            &self.force_approval_groups,
            &self.exempt_groups,
            &self.timeout,
            &self.max_duration,
        ]
        .iter()
        .any(|s| !s.is_empty())
    }
}

/// The message of a `RuleError` without its `field: ` prefix (the form shows it at the field).
fn field_message(e: &RuleError) -> String {
    let s = e.to_string();
    let prefix = format!("{}: ", e.field());
    s.strip_prefix(&prefix).map(str::to_string).unwrap_or(s)
}

#[derive(Template)]
#[template(path = "rule_form.html")]
struct FormPage {
    nav: Option<Nav>,
    csrf: String,
    /// `None` when creating; the rule's current name when editing.
    editing: Option<String>,
    action: String,
    v: RuleFormValues,
    e: FieldErrors,
    groups: Vec<String>,
}

async fn known_connections(app: &AppState, viewer: &Viewer) -> Result<Vec<String>, AppError> {
    Ok(app
        .list_connections(&viewer.user)
        .await?
        .into_iter()
        .map(|c| c.name)
        .collect())
}

async fn known_groups(app: &AppState, viewer: &Viewer) -> Vec<String> {
    app.list_groups(&viewer.user)
        .await
        .map(|gs| gs.into_iter().map(|g| g.name).collect())
        .unwrap_or_default()
}

fn values_of(rule: Option<&Rule>, known: &[String]) -> RuleFormValues {
    let Some(r) = rule else {
        return RuleFormValues {
            kind: "command".into(),
            approval_amount: "1".into(),
            connections: known.iter().map(|c| (c.clone(), false)).collect(),
            ..RuleFormValues::default()
        };
    };
    let mut connections: Vec<(String, bool)> = known
        .iter()
        .map(|c| (c.clone(), r.connections.contains(c)))
        .collect();
    for c in &r.connections {
        if !known.contains(c) {
            connections.push((c.clone(), true));
        }
    }
    RuleFormValues {
        name: r.name.clone(),
        description: r.description.clone(),
        kind: r.kind.as_str().into(),
        connections,
        required_groups: r.required_groups.join(", "),
        approval_groups: r.approval_groups.join(", "),
        require_all_groups: r.require_all_groups,
        approval_amount: r.approval_amount.to_string(),
        force_approval_groups: r.force_approval_groups.join(", "),
        exempt_groups: r.exempt_groups.join(", "),
        timeout: r.timeout_sec.map(dur).unwrap_or_default(),
        max_duration: r.max_duration_sec.map(dur).unwrap_or_default(),
        require_reason: r.require_reason,
    }
}

/// Reads the submitted form: the values to show again, and the spec (or per-field errors for
/// values that do not even parse, like a duration of "soon").
fn parse_form(form: &Form, known: &[String]) -> (RuleFormValues, Result<RuleSpec, FieldErrors>) {
    let chosen = form.all("connections");
    let mut connections: Vec<(String, bool)> = known
        .iter()
        .map(|c| (c.clone(), chosen.contains(c)))
        .collect();
    for c in &chosen {
        if !known.contains(c) {
            connections.push((c.clone(), true));
        }
    }
    let v = RuleFormValues {
        name: form.str("name").trim().to_string(),
        description: form.str("description").to_string(),
        kind: form.str("type").to_string(),
        connections,
        required_groups: form.str("required_groups").to_string(),
        approval_groups: form.str("approval_groups").to_string(),
        require_all_groups: form.checked("require_all_groups"),
        approval_amount: form.str("approval_amount").trim().to_string(),
        force_approval_groups: form.str("force_approval_groups").to_string(),
        exempt_groups: form.str("exempt_groups").to_string(),
        timeout: form.str("timeout").trim().to_string(),
        max_duration: form.str("max_duration").trim().to_string(),
        require_reason: form.checked("require_reason"),
    };
    let mut e = FieldErrors::default();
    let kind = RuleType::parse(&v.kind);
    let amount = if v.approval_amount.is_empty() {
        None
    } else {
        match v.approval_amount.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => {
                e.set("approval_amount", "must be a whole number".into());
                None
            }
        }
    };
    let duration = |field: &str, s: &str, e: &mut FieldErrors| -> Option<i64> {
        if s.is_empty() {
            return None;
        }
        match warden_core::duration::parse_duration(s) {
            Ok(n) => Some(n),
            Err(err) => {
                e.set(field, err.to_string());
                None
            }
        }
    };
    let timeout_sec = duration("timeout", &v.timeout, &mut e);
    // Max duration only means something for Just-in-Time rules; ignored for by-Command ones.
    let max_duration_sec = if kind == Some(RuleType::Jit) {
        duration("max_duration", &v.max_duration, &mut e)
    } else {
        None
    };
    if e.any() {
        return (v, Err(e));
    }
    let spec = RuleSpec {
        name: v.name.clone(),
        description: v.description.clone(),
        kind,
        connections: chosen,
        required_groups: super::form::split_list(&v.required_groups),
        approval_groups: super::form::split_list(&v.approval_groups),
        require_all_groups: v.require_all_groups,
        approval_amount: amount,
        force_approval_groups: super::form::split_list(&v.force_approval_groups),
        exempt_groups: super::form::split_list(&v.exempt_groups),
        timeout_sec,
        max_duration_sec,
        require_reason: v.require_reason && kind == Some(RuleType::Jit),
    };
    (v, Ok(spec))
}

async fn new_form(State(app): State<AppState>, viewer: Viewer) -> WebResult {
    viewer.admin_only("rules", "only admins can create rules")?;
    let known = known_connections(&app, &viewer)
        .await
        .map_err(fail(&viewer, "rules"))?;
    Ok(render(&FormPage {
        nav: viewer.nav("rules"),
        csrf: viewer.csrf.clone(),
        editing: None,
        action: "/rules".into(),
        v: values_of(None, &known),
        e: FieldErrors::default(),
        groups: known_groups(&app, &viewer).await,
    }))
}

async fn edit_form(
    State(app): State<AppState>,
    viewer: Viewer,
    Path(name): Path<String>,
) -> WebResult {
    viewer.admin_only("rules", "only admins can edit rules")?;
    let fail = fail(&viewer, "rules");
    let rule = app.get_rule(&name).await.map_err(&fail)?;
    let known = known_connections(&app, &viewer).await.map_err(&fail)?;
    Ok(render(&FormPage {
        nav: viewer.nav("rules"),
        csrf: viewer.csrf.clone(),
        action: format!("/rules/{}/edit", rule.name),
        editing: Some(rule.name.clone()),
        v: values_of(Some(&rule), &known),
        e: FieldErrors::default(),
        groups: known_groups(&app, &viewer).await,
    }))
}

async fn save(app: AppState, p: Posted, editing: Option<String>) -> WebResult {
    let viewer = &p.viewer;
    viewer.admin_only("rules", "only admins can change rules")?;
    let fail = fail(viewer, "rules");
    let known = known_connections(&app, viewer).await.map_err(&fail)?;
    let (values, parsed) = parse_form(&p.form, &known);
    let errors = match parsed {
        Err(e) => e,
        Ok(spec) => {
            let check = app
                .check_rule_spec(&viewer.user, &spec, editing.as_deref())
                .await
                .map_err(&fail)?;
            let mut e = FieldErrors::default();
            match check {
                Err(err) => e.set(err.field(), field_message(&err)),
                Ok(()) => {
                    let saved = match &editing {
                        None => app.create_rule(&viewer.user, spec).await,
                        Some(name) => app.update_rule(&viewer.user, name, spec).await,
                    };
                    match saved {
                        Ok(_) => {
                            let done = if editing.is_some() {
                                "updated"
                            } else {
                                "created"
                            };
                            return Ok(see_other(&format!("/rules?done={done}")));
                        }
                        Err(AppError::BadRequest { message, .. })
                        | Err(AppError::Conflict { message, .. }) => e.set("general", message),
                        Err(other) => return Err(fail(other)),
                    }
                }
            }
            e
        }
    };
    let action = match &editing {
        Some(n) => format!("/rules/{n}/edit"),
        None => "/rules".into(),
    };
    Ok(render_status(
        StatusCode::BAD_REQUEST,
        &FormPage {
            nav: viewer.nav("rules"),
            csrf: viewer.csrf.clone(),
            editing,
            action,
            v: values,
            e: errors,
            groups: known_groups(&app, viewer).await,
        },
    ))
}

async fn create(State(app): State<AppState>, p: Posted) -> WebResult {
    save(app, p, None).await
}

async fn update(State(app): State<AppState>, Path(name): Path<String>, p: Posted) -> WebResult {
    save(app, p, Some(name)).await
}

async fn delete(State(app): State<AppState>, Path(name): Path<String>, p: Posted) -> WebResult {
    app.delete_rule(&p.viewer.user, &name)
        .await
        .map_err(fail(&p.viewer, "rules"))?;
    Ok(see_other("/rules?done=deleted"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_parses_every_field_and_reports_bad_values_per_field() {
        let known = vec!["db".to_string(), "shell".to_string()];
        let f = Form::parse(
            b"name=r1&description=d&type=jit&connections=db&required_groups=dev&approval_groups=dba%2C+sec\
              &require_all_groups=on&approval_amount=2&force_approval_groups=sre&exempt_groups=admins\
              &timeout=30m&max_duration=2h&require_reason=on",
        );
        let (v, spec) = parse_form(&f, &known);
        let spec = spec.ok().unwrap();
        assert_eq!(spec.kind, Some(RuleType::Jit));
        assert_eq!(spec.connections, vec!["db"]);
        assert_eq!(spec.approval_groups, vec!["dba", "sec"]);
        assert!(spec.require_all_groups && spec.require_reason);
        assert_eq!(spec.approval_amount, Some(2));
        assert_eq!(spec.timeout_sec, Some(1800));
        assert_eq!(spec.max_duration_sec, Some(7200));
        assert_eq!(
            v.connections,
            vec![("db".into(), true), ("shell".into(), false)]
        );

        let f = Form::parse(b"name=r&type=command&approval_amount=two&timeout=soon");
        let (_, spec) = parse_form(&f, &known);
        let e = spec.err().unwrap();
        assert!(!e.approval_amount.is_empty() && !e.timeout.is_empty() && e.name.is_empty());
    }

    #[test]
    fn rule_errors_lose_their_field_prefix() {
        assert_eq!(
            field_message(&RuleError::NoApprovalGroups),
            "at least one approval group is required"
        );
    }
}
