//! The web terminal: pick a connection, type a command, run it through `App::exec` as a `web`
//! session. Held commands show "Waiting for approval…" with the review link, and the page follows
//! the review live (server-sent events, with polling as a fallback) until the result arrives:
//! a table for SQL result sets, raw output for `command` connections, errors said plainly.
//!
//! # What it must never do
//! Run anything itself (only `App::exec` runs commands, under the rules), or render the
//! command or its output unescaped.

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use serde::Deserialize;
use uuid::Uuid;
use warden_core::{ReviewStatus, SessionKind};

use super::view::ResultView;
use super::{Nav, Posted, Viewer, WebError, WebResult, fail, render, render_status};
use crate::api::AppState;
use crate::app::{AppError, ExecResult, ReviewView};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/terminal", get(page).post(run))
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
    let conns = connections(&app, &viewer)
        .await
        .map_err(fail(&viewer, "terminal"))?;
    Ok(render(&TerminalPage {
        nav: viewer.nav("terminal"),
        csrf: viewer.csrf.clone(),
        connection: q.connection.unwrap_or_default(),
        connections: conns,
        command: String::new(),
        ran: false,
        o: Outcome::default(),
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
            crate::api::status_of(&e),
            Outcome {
                error: e.to_string(),
                ..Outcome::default()
            },
        ),
    };
    Ok(render_status(
        status,
        &TerminalPage {
            nav: viewer.nav("terminal"),
            csrf: viewer.csrf.clone(),
            connections: conns,
            connection,
            command,
            ran: true,
            o,
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
