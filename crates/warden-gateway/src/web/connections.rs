//! Connections (resource roles): the list, and the admin form to create or edit one — type, URL
//! or command argv, env secrets, access groups, reviewers (the connection-named command rule),
//! Slack channel and Teams webhook.
//!
//! # What it must never do
//! Show a secret: URLs are shown redacted and never put back into the form, env values are never
//! shown at all (only their names). Leaving the URL or env empty on edit keeps the stored ones
//! (`App::create_connection` with `overwrite` does that). The edit form shows every other field
//! filled in, so it sends them all: what the admin sees is what is saved (an emptied access
//! groups field clears them, on purpose); an empty reviewers field leaves the rules alone.
//! Non-admins get the 403 page.

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;
use warden_core::secret::Secret;
use warden_core::{Connection, RuleType};

use super::form::split_list;
use super::{Form, Nav, Posted, Viewer, WebResult, fail, render, render_status, see_other};
use crate::app::{AppError, CreateConnection};
use crate::http::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/connections", get(list).post(create))
        .route("/connections/new", get(new_form))
        .route("/connections/{name}/edit", get(edit_form).post(update))
        .route("/connections/{name}/delete", post(delete))
}

pub struct ConnRow {
    pub name: String,
    pub kind: &'static str,
    pub target: String,
    pub env_keys: String,
    pub access_groups: String,
    pub rules: String,
    pub slack_channel: String,
}

#[derive(Template)]
#[template(path = "connections.html")]
struct ListPage {
    nav: Option<Nav>,
    rows: Vec<ConnRow>,
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

fn target(c: &Connection) -> String {
    match &c.url_redacted {
        Some(u) => u.clone(),
        None => c.command.join(" "),
    }
}

async fn list(
    State(app): State<AppState>,
    viewer: Viewer,
    Query(q): Query<DoneQuery>,
) -> WebResult {
    let fail = fail(&viewer, "connections");
    let conns = app.list_connections(&viewer.user).await.map_err(&fail)?;
    let rules = app.list_rules().await.map_err(&fail)?;
    let rows = conns
        .iter()
        .map(|c| ConnRow {
            name: c.name.clone(),
            kind: c.kind.as_str(),
            target: target(c),
            env_keys: c.env_keys.join(", "),
            access_groups: if c.access_groups.is_empty() {
                "everyone".into()
            } else {
                c.access_groups.join(", ")
            },
            rules: rules
                .iter()
                .filter(|r| r.binds(&c.name))
                .map(|r| format!("{} ({})", r.name, r.kind.as_str()))
                .collect::<Vec<_>>()
                .join(", "),
            slack_channel: c.slack_channel.clone().unwrap_or_default(),
        })
        .collect();
    let warnings = if viewer.user.admin {
        app.setup_warnings().await.map_err(&fail)?
    } else {
        Vec::new()
    };
    Ok(render(&ListPage {
        nav: viewer.nav("connections"),
        rows,
        admin: viewer.user.admin,
        csrf: viewer.csrf.clone(),
        notice: match q.done.as_deref() {
            Some("created") => "Connection created.".into(),
            Some("updated") => "Connection saved.".into(),
            Some("deleted") => "Connection deleted.".into(),
            _ => String::new(),
        },
        warnings,
    }))
}

#[derive(Default)]
pub struct ConnFormValues {
    pub name: String,
    pub kind: String,
    /// The stored URL, redacted (a hint only; the input itself is always empty).
    pub url_hint: String,
    pub command: String,
    pub env_keys: String,
    pub access_groups: String,
    pub reviewers: String,
    pub slack_channel: String,
    pub teams_webhook: String,
}

#[derive(Default)]
pub struct ConnErrors {
    pub general: String,
    pub name: String,
    pub kind: String,
    pub url: String,
    pub command: String,
    pub env: String,
    pub access_groups: String,
    pub reviewers: String,
    pub slack_channel: String,
}

impl ConnErrors {
    /// Routes an `App` message (`"field: what is wrong"`) to its field.
    fn from_message(message: &str) -> ConnErrors {
        let mut e = ConnErrors::default();
        let (field, rest) = message
            .split_once(": ")
            .map(|(f, r)| (f.trim(), r.to_string()))
            .unwrap_or(("", message.to_string()));
        let slot = match field {
            "name" => &mut e.name,
            "type" => &mut e.kind,
            "url" => &mut e.url,
            "command" => &mut e.command,
            "env" => &mut e.env,
            "access_groups" => &mut e.access_groups,
            "reviewers" => &mut e.reviewers,
            "slack_channel" | "teams_webhook" => &mut e.slack_channel,
            _ => {
                e.general = message.to_string();
                return e;
            }
        };
        *slot = rest;
        e
    }
}

#[derive(Template)]
#[template(path = "connection_form.html")]
struct FormPage {
    nav: Option<Nav>,
    csrf: String,
    editing: bool,
    action: String,
    v: ConnFormValues,
    e: ConnErrors,
    types: Vec<&'static str>,
}

const TYPES: [&str; 4] = ["postgres", "mysql", "sqlite", "command"];

async fn new_form(viewer: Viewer) -> WebResult {
    viewer.admin_only("connections", "only admins can create connections")?;
    Ok(render(&FormPage {
        nav: viewer.nav("connections"),
        csrf: viewer.csrf.clone(),
        editing: false,
        action: "/connections".into(),
        v: ConnFormValues {
            kind: "postgres".into(),
            ..ConnFormValues::default()
        },
        e: ConnErrors::default(),
        types: TYPES.to_vec(),
    }))
}

async fn edit_form(
    State(app): State<AppState>,
    viewer: Viewer,
    Path(name): Path<String>,
) -> WebResult {
    viewer.admin_only("connections", "only admins can edit connections")?;
    let fail = fail(&viewer, "connections");
    let c = app
        .get_connection(&viewer.user, &name)
        .await
        .map_err(&fail)?;
    // The --reviewers shorthand is the command rule named after the connection.
    let reviewers = match app.get_rule(&c.name).await {
        Ok(r) if r.kind == RuleType::Command && r.binds(&c.name) => r.approval_groups.join(", "),
        _ => String::new(),
    };
    Ok(render(&FormPage {
        nav: viewer.nav("connections"),
        csrf: viewer.csrf.clone(),
        editing: true,
        action: format!("/connections/{}/edit", c.name),
        v: ConnFormValues {
            name: c.name.clone(),
            kind: c.kind.as_str().into(),
            url_hint: c.url_redacted.clone().unwrap_or_default(),
            command: c.command.join("\n"),
            env_keys: c.env_keys.join(", "),
            access_groups: c.access_groups.join(", "),
            reviewers,
            slack_channel: c.slack_channel.clone().unwrap_or_default(),
            teams_webhook: c.teams_webhook.clone().unwrap_or_default(),
        },
        e: ConnErrors::default(),
        types: TYPES.to_vec(),
    }))
}

/// The request for `App::create_connection` from the form. Secrets go straight into `Secret`.
fn request_of(form: &Form, name: &str, overwrite: bool) -> CreateConnection {
    let lines = |key: &str| -> Vec<String> {
        form.str(key)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    };
    CreateConnection {
        name: name.trim().to_string(),
        kind: form.str("type").to_string(),
        url: form.opt("url").map(Secret::new),
        command: lines("command"),
        env: lines("env").into_iter().map(Secret::new).collect(),
        access_groups: Some(split_list(form.str("access_groups"))),
        reviewers: Some(split_list(form.str("reviewers"))).filter(|r| !r.is_empty()),
        slack_channel: Some(form.str("slack_channel").trim().to_string()),
        teams_webhook: Some(form.str("teams_webhook").trim().to_string()),
        overwrite,
    }
}

async fn save(app: AppState, p: Posted, editing: Option<String>) -> WebResult {
    let viewer = &p.viewer;
    viewer.admin_only("connections", "only admins can change connections")?;
    let name = editing
        .clone()
        .unwrap_or_else(|| p.form.str("name").to_string());
    let req = request_of(&p.form, &name, editing.is_some());
    let errors = match app.create_connection(&viewer.user, req).await {
        Ok(_) => {
            let done = if editing.is_some() {
                "updated"
            } else {
                "created"
            };
            return Ok(see_other(&format!("/connections?done={done}")));
        }
        Err(AppError::BadRequest { message, .. }) => ConnErrors::from_message(&message),
        Err(AppError::Conflict {
            code: "duplicate",
            message,
        }) => ConnErrors {
            name: message,
            ..ConnErrors::default()
        },
        Err(AppError::Conflict { message, .. }) => ConnErrors {
            general: message,
            ..ConnErrors::default()
        },
        Err(other) => return Err(fail(viewer, "connections")(other)),
    };
    let hint = match &editing {
        Some(n) => app
            .get_connection(&viewer.user, n)
            .await
            .ok()
            .and_then(|c| c.url_redacted)
            .unwrap_or_default(),
        None => String::new(),
    };
    let f = &p.form;
    Ok(render_status(
        StatusCode::BAD_REQUEST,
        &FormPage {
            nav: viewer.nav("connections"),
            csrf: viewer.csrf.clone(),
            editing: editing.is_some(),
            action: match &editing {
                Some(n) => format!("/connections/{n}/edit"),
                None => "/connections".into(),
            },
            // Secrets (URL, env values) are never echoed back, even on errors.
            v: ConnFormValues {
                name,
                kind: f.str("type").to_string(),
                url_hint: hint,
                command: f.str("command").to_string(),
                env_keys: String::new(),
                access_groups: f.str("access_groups").to_string(),
                reviewers: f.str("reviewers").to_string(),
                slack_channel: f.str("slack_channel").to_string(),
                teams_webhook: f.str("teams_webhook").to_string(),
            },
            e: errors,
            types: TYPES.to_vec(),
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
    app.delete_connection(&p.viewer.user, &name)
        .await
        .map_err(fail(&p.viewer, "connections"))?;
    Ok(see_other("/connections?done=deleted"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_go_to_their_field() {
        let e = ConnErrors::from_message("url: a host is required");
        assert_eq!(e.url, "a host is required");
        let e = ConnErrors::from_message("something else entirely");
        assert_eq!(e.general, "something else entirely");
    }

    #[test]
    fn form_to_request() {
        let f = Form::parse(
            b"type=command&command=sh%0A-c%0A&env=A%3D1%0AB%3D2&access_groups=dev%2C+ops&reviewers=dba&url=",
        );
        let r = request_of(&f, " shell ", true);
        assert_eq!(r.name, "shell");
        assert_eq!(r.command, vec!["sh", "-c"]);
        assert_eq!(r.env.len(), 2);
        assert!(r.url.is_none());
        assert_eq!(
            r.access_groups,
            Some(vec!["dev".to_string(), "ops".to_string()])
        );
        assert_eq!(r.reviewers, Some(vec!["dba".to_string()]));
        assert!(r.overwrite);
    }
}
