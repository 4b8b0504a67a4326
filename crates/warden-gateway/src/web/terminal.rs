//! The web terminal: pick a connection, type a command, run it through `App::exec` as a `web`
//! session; and request a just-in-time window (`App::request_jit`) for connections that need one,
//! with the user's open windows listed. Held commands show "Waiting for approval…" with the review link, and the page follows
//! the review live (server-sent events, with polling as a fallback) until the result arrives:
//! a table for SQL result sets, raw output for `command` connections, errors said plainly.
//!
//! # What it must never do
//! Run anything itself (only `App::exec` runs commands, under the rules), or render the
//! command or its output unescaped.

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use serde::Deserialize;
use uuid::Uuid;
use warden_core::{ReviewStatus, SessionKind};

use super::view::ResultView;
use super::{Nav, Posted, Viewer, WebError, WebResult, fail, render, render_status};
use crate::app::{AppError, ExecResult, JitResult, ReviewView};
use crate::http::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/terminal", get(page).post(run))
        .route("/terminal/access", post(request_access))
        .route("/terminal/reviews/{id}", get(outcome_fragment))
}

/// Where a run stands.
#[derive(Default)]
pub struct Outcome {
    /// The review holding the command, if any.
    pub review_id: String,
    pub review_status: String,
    /// Still waiting for a decision or for the execution: the page keeps following it.
    pub waiting: bool,
    pub approved_running: bool,
    pub message: String,
    pub error: String,
    pub result: Option<ResultView>,
}

impl Outcome {
    fn of_review(v: &ReviewView) -> Outcome {
        let r = &v.review;
        let mut o = Outcome {
            review_id: r.id.to_string(),
            review_status: r.status.as_str().into(),
            ..Outcome::default()
        };
        match r.status {
            ReviewStatus::Pending => o.waiting = true,
            ReviewStatus::Approved => {
                o.waiting = true;
                o.approved_running = true;
            }
            ReviewStatus::Executed => match &v.result {
                Some(s) => o.result = Some(ResultView::of(s)),
                None => o.message = "Executed; the result is not available.".into(),
            },
            ReviewStatus::Rejected => {
                o.error = format!(
                    "Rejected by {}: {}",
                    r.decided_by.clone().unwrap_or_default(),
                    r.reason.clone().unwrap_or_default()
                )
            }
            ReviewStatus::Expired => {
                o.error = "The request expired before anyone approved it; the command did not run. \
                     Submit it again."
                    .into()
            }
            ReviewStatus::Revoked => o.error = "The request was revoked.".into(),
        }
        o
    }
}

/// One of the user's open just-in-time windows.
pub struct WindowRow {
    pub review_id: String,
    pub connection: String,
    pub ends: String,
}

/// The JIT request form's state.
#[derive(Default)]
pub struct AccessForm {
    pub connection: String,
    pub duration: String,
    pub reason: String,
    pub error: String,
    pub notice: String,
}

#[derive(Template)]
#[template(path = "terminal.html")]
struct TerminalPage {
    nav: Option<Nav>,
    csrf: String,
    connections: Vec<(String, String)>,
    connection: String,
    command: String,
    ran: bool,
    o: Outcome,
    windows: Vec<WindowRow>,
    access: AccessForm,
}

async fn windows(app: &AppState, viewer: &Viewer) -> Result<Vec<WindowRow>, AppError> {
    Ok(app
        .my_windows(&viewer.user)
        .await?
        .iter()
        .map(|v| WindowRow {
            review_id: v.review.id.to_string(),
            connection: v.review.connection.clone(),
            ends: super::view::ts_opt(v.review.window_end),
        })
        .collect())
}

#[derive(Template)]
#[template(path = "terminal_outcome.html")]
struct OutcomeFragment {
    o: Outcome,
}

#[derive(Deserialize, Default)]
struct PageQuery {
    connection: Option<String>,
}

async fn connections(app: &AppState, viewer: &Viewer) -> Result<Vec<(String, String)>, AppError> {
    Ok(app
        .list_connections(&viewer.user)
        .await?
        .into_iter()
        .map(|c| (c.name, c.kind.as_str().to_string()))
        .collect())
}

async fn page(
    State(app): State<AppState>,
    viewer: Viewer,
    Query(q): Query<PageQuery>,
) -> WebResult {
    let fail = fail(&viewer, "terminal");
    let conns = connections(&app, &viewer).await.map_err(&fail)?;
    let connection = q.connection.unwrap_or_default();
    Ok(render(&TerminalPage {
        nav: viewer.nav("terminal"),
        csrf: viewer.csrf.clone(),
        access: AccessForm {
            connection: connection.clone(),
            duration: "1h".into(),
            ..AccessForm::default()
        },
        connection,
        connections: conns,
        command: String::new(),
        ran: false,
        o: Outcome::default(),
        windows: windows(&app, &viewer).await.map_err(&fail)?,
    }))
}

async fn run(State(app): State<AppState>, p: Posted) -> WebResult {
    let viewer = &p.viewer;
    let conns = connections(&app, viewer)
        .await
        .map_err(fail(viewer, "terminal"))?;
    let connection = p.form.str("connection").to_string();
    let command = p.form.str("command").to_string();
    let (status, o) = match app
        .exec(&viewer.user, &connection, &command, SessionKind::Web)
        .await
    {
        Ok(ExecResult::Executed { session, review }) => (
            axum::http::StatusCode::OK,
            Outcome {
                review_id: review
                    .as_ref()
                    .map(|r| r.review.id.to_string())
                    .unwrap_or_default(),
                result: Some(ResultView::of(&session)),
                ..Outcome::default()
            },
        ),
        Ok(ExecResult::Pending { review }) => (
            axum::http::StatusCode::ACCEPTED,
            Outcome::of_review(&review),
        ),
        Err(AppError::Internal(e)) => {
            return Err(WebError::App(AppError::Internal(e)).page(viewer.nav("terminal")));
        }
        Err(e) => (
            crate::http::status_of(&e),
            Outcome {
                error: e.to_string(),
                ..Outcome::default()
            },
        ),
    };
    let windows = windows(&app, viewer)
        .await
        .map_err(fail(viewer, "terminal"))?;
    Ok(render_status(
        status,
        &TerminalPage {
            nav: viewer.nav("terminal"),
            csrf: viewer.csrf.clone(),
            access: AccessForm {
                connection: connection.clone(),
                duration: "1h".into(),
                ..AccessForm::default()
            },
            connections: conns,
            connection,
            command,
            ran: true,
            o,
            windows,
        },
    ))
}

/// Requests a just-in-time window; a held request goes to its review page, which follows it live.
async fn request_access(State(app): State<AppState>, p: Posted) -> WebResult {
    let viewer = &p.viewer;
    let fail = fail(viewer, "terminal");
    let mut access = AccessForm {
        connection: p.form.str("connection").to_string(),
        duration: p.form.str("duration").trim().to_string(),
        reason: p.form.str("reason").to_string(),
        ..AccessForm::default()
    };
    let mut status = axum::http::StatusCode::OK;
    match warden_core::duration::parse_duration(&access.duration) {
        Err(e) => {
            status = axum::http::StatusCode::BAD_REQUEST;
            access.error = e.to_string();
        }
        Ok(secs) => {
            match app
                .request_jit(&viewer.user, &access.connection, secs, p.form.opt("reason"))
                .await
            {
                Ok(JitResult::Review { review }) => {
                    return Ok(super::see_other(&format!("/reviews/{}", review.review.id)));
                }
                Ok(JitResult::NotNeeded { .. }) => {
                    access.notice = format!(
                        "No approval is needed for you on {}: run commands directly.",
                        access.connection
                    );
                }
                Err(AppError::Internal(e)) => return Err(fail(AppError::Internal(e))),
                Err(e) => {
                    status = crate::http::status_of(&e);
                    access.error = e.to_string();
                }
            }
        }
    }
    let conns = connections(&app, viewer).await.map_err(&fail)?;
    Ok(render_status(
        status,
        &TerminalPage {
            nav: viewer.nav("terminal"),
            csrf: viewer.csrf.clone(),
            connection: access.connection.clone(),
            connections: conns,
            command: String::new(),
            ran: false,
            o: Outcome::default(),
            windows: windows(&app, viewer).await.map_err(&fail)?,
            access,
        },
    ))
}

async fn outcome_fragment(
    State(app): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> WebResult {
    let fail = fail(&viewer, "terminal");
    let id =
        Uuid::parse_str(&id).map_err(|_| fail(AppError::NotFound(format!("no review {id:?}"))))?;
    let v = app.get_review(&viewer.user, id).await.map_err(&fail)?;
    Ok(render(&OutcomeFragment {
        o: Outcome::of_review(&v),
    }))
}
