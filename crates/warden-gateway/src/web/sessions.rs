//! The audit trail as pages: every exec / proxied / web session with user, connection, start and
//! end, command or statements, exit code and output, its review linked; and the CSV exports of
//! sessions and reviews for auditors (admins only).
//!
//! # What it must never do
//! Show a session the `App` would not show this user (`list_sessions` / `get_session` decide),
//! render output unescaped, or write a CSV cell a spreadsheet would run as a formula: cells
//! starting with `= + - @` (or a tab / carriage return) get a leading `'`.

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use uuid::Uuid;
use warden_core::{Review, Session, SessionKind};
use warden_store::SessionFilter;

use super::view::{ResultView, ms, truncate, ts, ts_opt};
use super::{Nav, Viewer, WebResult, fail, render};
use crate::app::AppError;
use crate::http::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/sessions", get(list))
        .route("/sessions/{id}", get(detail))
        .route("/sessions.csv", get(sessions_csv))
        .route("/reviews.csv", get(reviews_csv))
}

const PER_PAGE: u32 = 25;
/// Rows read per store page by the exports.
const EXPORT_PAGE: u32 = 500;
/// Upper bound on exported rows (one request must stay bounded).
const EXPORT_MAX: usize = 100_000;

pub struct SessionRow {
    pub id: String,
    pub kind: &'static str,
    pub user: String,
    pub connection: String,
    pub started: String,
    pub ended: String,
    pub duration: String,
    pub command: String,
    pub command_full: String,
    pub exit_code: String,
    pub ok: bool,
    pub review_id: String,
}

fn row(s: &Session) -> SessionRow {
    let cmd = s.command.clone().unwrap_or_default();
    SessionRow {
        id: s.id.to_string(),
        kind: s.kind.as_str(),
        user: s.user.clone(),
        connection: s.connection.clone(),
        started: ts(s.started_at),
        ended: if s.ended_at.is_some() {
            ts_opt(s.ended_at)
        } else {
            "open".into()
        },
        duration: s.duration_ms.map(ms).unwrap_or_default(),
        command: if cmd.is_empty() && s.kind == SessionKind::Proxy {
            "native client session".into()
        } else {
            truncate(&cmd, 80)
        },
        command_full: cmd,
        exit_code: s.exit_code.map(|c| c.to_string()).unwrap_or_default(),
        ok: s.exit_code == Some(0),
        review_id: s.review_id.map(|r| r.to_string()).unwrap_or_default(),
    }
}

#[derive(Template)]
#[template(path = "sessions.html")]
struct ListPage {
    nav: Option<Nav>,
    rows: Vec<SessionRow>,
    total: i64,
    admin: bool,
    user: String,
    connection: String,
    kind: String,
    connections: Vec<String>,
    page: u32,
    pages: u32,
    prev_href: String,
    next_href: String,
}

#[derive(Deserialize, Default)]
struct ListQuery {
    user: Option<String>,
    connection: Option<String>,
    kind: Option<String>,
    page: Option<u32>,
}

fn filter_of(q: &ListQuery) -> Result<SessionFilter, AppError> {
    let clean = |s: &Option<String>| {
        s.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
    };
    let kind = match clean(&q.kind) {
        Some(k) => Some(
            SessionKind::parse(&k)
                .ok_or_else(|| AppError::bad("invalid_kind", "kind: use exec, proxy or web"))?,
        ),
        None => None,
    };
    Ok(SessionFilter {
        user: clean(&q.user).map(|u| u.to_ascii_lowercase()),
        connection: clean(&q.connection),
        kind,
        ..SessionFilter::default()
    })
}

async fn list(
    State(app): State<AppState>,
    viewer: Viewer,
    Query(q): Query<ListQuery>,
) -> WebResult {
    let fail = fail(&viewer, "sessions");
    let mut filter = filter_of(&q).map_err(&fail)?;
    let page = q.page.unwrap_or(1).max(1);
    filter.page = page;
    filter.per_page = PER_PAGE;
    let (sessions, total) = app
        .list_sessions(&viewer.user, filter.clone())
        .await
        .map_err(&fail)?;
    let connections = app
        .list_connections(&viewer.user)
        .await
        .map_err(&fail)?
        .into_iter()
        .map(|c| c.name)
        .collect();
    let pages = (total.max(0) as u32).div_ceil(PER_PAGE).max(1);
    let user = filter.user.clone().unwrap_or_default();
    let connection = filter.connection.clone().unwrap_or_default();
    let kind = filter.kind.map(|k| k.as_str()).unwrap_or("").to_string();
    let href = |p: u32| {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("user", user.as_str()),
            ("connection", connection.as_str()),
            ("kind", kind.as_str()),
        ] {
            if !v.is_empty() {
                s.append_pair(k, v);
            }
        }
        s.append_pair("page", &p.to_string());
        format!("/sessions?{}", s.finish())
    };
    Ok(render(&ListPage {
        nav: viewer.nav("sessions"),
        rows: sessions.iter().map(row).collect(),
        total,
        admin: viewer.user.reads_all(),
        prev_href: if page > 1 {
            href(page - 1)
        } else {
            String::new()
        },
        next_href: if page < pages {
            href(page + 1)
        } else {
            String::new()
        },
        user,
        connection,
        kind,
        connections,
        page,
        pages,
    }))
}

pub struct StatementRow {
    pub at: String,
    pub statement: String,
    pub tag: String,
    /// The review that let it run (empty when none did: a read, or an unreviewed session).
    pub review_id: String,
    /// Who decided it and how (`APPROVED by dba@x (dba) at …`).
    pub review: String,
}

#[derive(Template)]
#[template(path = "session.html")]
struct DetailPage {
    nav: Option<Nav>,
    s: SessionRow,
    res: ResultView,
    has_output: bool,
    statements: Vec<StatementRow>,
}

async fn detail(State(app): State<AppState>, viewer: Viewer, Path(id): Path<String>) -> WebResult {
    let fail = fail(&viewer, "sessions");
    let id =
        Uuid::parse_str(&id).map_err(|_| fail(AppError::NotFound(format!("no session {id:?}"))))?;
    let (session, statements) = app
        .session_with_statements(&viewer.user, id)
        .await
        .map_err(&fail)?;
    Ok(render(&DetailPage {
        nav: viewer.nav("sessions"),
        res: ResultView::of(&session),
        has_output: session.output.is_some() || session.rows_json.is_some(),
        s: row(&session),
        statements: statements
            .iter()
            .map(|st| StatementRow {
                at: ts(st.record.at),
                statement: st.record.statement.clone(),
                tag: st.record.tag.clone().unwrap_or_default(),
                review_id: st
                    .review
                    .as_ref()
                    .map(|r| r.id.to_string())
                    .unwrap_or_default(),
                review: st.review.as_ref().map(|r| r.summary()).unwrap_or_default(),
            })
            .collect(),
    }))
}

// ---------------------------------------------------------------------------------------------
// CSV
// ---------------------------------------------------------------------------------------------

/// One CSV cell as written: neutralised against formula injection, always quoted.
#[cfg(test)]
fn csv_cell(value: &str) -> String {
    let mut out = String::new();
    crate::app::csv_line(&mut out, &[value.to_string()]);
    out.trim_end_matches("\r\n").to_string()
}

pub(super) use crate::app::csv_line;

pub(super) fn csv_response(filename: &str, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        body,
    )
        .into_response()
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    super::view::iso(t)
}

async fn sessions_csv(
    State(app): State<AppState>,
    viewer: Viewer,
    Query(q): Query<ListQuery>,
) -> WebResult {
    viewer.reader_only("sessions", "only admins and auditors can export sessions")?;
    let fail = fail(&viewer, "sessions");
    let base = filter_of(&q).map_err(&fail)?;
    let mut out = String::new();
    csv_line(
        &mut out,
        &[
            "id",
            "kind",
            "user",
            "connection",
            "review_id",
            "command",
            "started_at",
            "ended_at",
            "exit_code",
            "duration_ms",
            "output_truncated",
            "output_sha256",
            "output",
            "statement_reviews",
        ]
        .map(String::from),
    );
    let mut page = 1;
    let mut n = 0usize;
    loop {
        let filter = SessionFilter {
            page,
            per_page: EXPORT_PAGE,
            ..base.clone()
        };
        let (batch, total) = app
            .list_sessions(&viewer.user, filter)
            .await
            .map_err(&fail)?;
        for s in &batch {
            // A proxied session: each reviewed statement with who decided it.
            let statement_reviews = if s.kind == warden_core::SessionKind::Proxy {
                let (_, statements) = app
                    .session_with_statements(&viewer.user, s.id)
                    .await
                    .map_err(&fail)?;
                statements
                    .iter()
                    .filter_map(|st| {
                        st.review
                            .as_ref()
                            .map(|r| format!("{} [{}] {}", st.record.statement, r.id, r.summary()))
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            } else {
                String::new()
            };
            csv_line(
                &mut out,
                &[
                    s.id.to_string(),
                    s.kind.as_str().into(),
                    s.user.clone(),
                    s.connection.clone(),
                    s.review_id.map(|r| r.to_string()).unwrap_or_default(),
                    s.command.clone().unwrap_or_default(),
                    rfc3339(s.started_at),
                    s.ended_at.map(rfc3339).unwrap_or_default(),
                    s.exit_code.map(|c| c.to_string()).unwrap_or_default(),
                    s.duration_ms.map(|d| d.to_string()).unwrap_or_default(),
                    s.output_truncated.to_string(),
                    s.output_sha256.clone().unwrap_or_default(),
                    s.output.clone().unwrap_or_default(),
                    statement_reviews,
                ],
            );
        }
        n += batch.len();
        if batch.len() < EXPORT_PAGE as usize || n as i64 >= total || n >= EXPORT_MAX {
            break;
        }
        page += 1;
    }
    Ok(csv_response("warden-sessions.csv", out))
}

#[derive(Deserialize, Default)]
struct ReviewCsvQuery {
    status: Option<String>,
    connection: Option<String>,
    requester: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

fn approvals_text(r: &Review) -> String {
    r.approvals
        .iter()
        .map(|a| {
            let mut s = a.approver.clone();
            if !a.group.is_empty() {
                s.push_str(&format!(" ({})", a.group));
            }
            if a.forced {
                s.push_str(" [forced]");
            }
            if a.auto {
                s.push_str(" [auto]");
            }
            s
        })
        .collect::<Vec<_>>()
        .join("; ")
}

async fn reviews_csv(
    State(app): State<AppState>,
    viewer: Viewer,
    Query(q): Query<ReviewCsvQuery>,
) -> WebResult {
    viewer.reader_only("reviews", "only admins and auditors can export reviews")?;
    let fail = fail(&viewer, "reviews");
    let (base, _) = super::reviews::parse_filter(
        q.status.as_deref(),
        q.connection.as_deref(),
        q.requester.as_deref(),
        q.kind.as_deref(),
        "all",
    )
    .map_err(&fail)?;
    let mut out = String::new();
    csv_line(
        &mut out,
        &[
            "id",
            "type",
            "status",
            "connection",
            "requester",
            "requester_groups",
            "rule",
            "command",
            "command_sha256",
            "duration_sec",
            "request_reason",
            "approvals",
            "progress",
            "decided_by",
            "reason",
            "forced",
            "created_at",
            "decided_at",
            "expires_at",
            "window_end",
        ]
        .map(String::from),
    );
    let mut page = 1;
    let mut n = 0usize;
    loop {
        let mut filter = base.clone();
        filter.page = page;
        filter.per_page = EXPORT_PAGE;
        let (batch, total) = app
            .list_reviews(&viewer.user, filter)
            .await
            .map_err(&fail)?;
        for v in &batch {
            let r = &v.review;
            csv_line(
                &mut out,
                &[
                    r.id.to_string(),
                    r.kind.as_str().into(),
                    r.status.as_str().into(),
                    r.connection.clone(),
                    r.requester.clone(),
                    r.requester_groups.join(";"),
                    r.rule.clone(),
                    r.command.clone().unwrap_or_default(),
                    r.command_sha256.clone().unwrap_or_default(),
                    r.duration_sec.map(|d| d.to_string()).unwrap_or_default(),
                    r.request_reason.clone().unwrap_or_default(),
                    approvals_text(r),
                    v.progress.clone(),
                    r.decided_by.clone().unwrap_or_default(),
                    r.reason.clone().unwrap_or_default(),
                    r.forced.to_string(),
                    rfc3339(r.created_at),
                    r.decided_at.map(rfc3339).unwrap_or_default(),
                    rfc3339(r.expires_at),
                    r.window_end.map(rfc3339).unwrap_or_default(),
                ],
            );
        }
        n += batch.len();
        if batch.len() < EXPORT_PAGE as usize || n as i64 >= total || n >= EXPORT_MAX {
            break;
        }
        page += 1;
    }
    Ok(csv_response("warden-reviews.csv", out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_quoted_and_formula_safe() {
        assert_eq!(csv_cell("plain"), "\"plain\"");
        assert_eq!(csv_cell("a \"b\", c"), "\"a \"\"b\"\", c\"");
        assert_eq!(csv_cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_cell("+1"), "\"'+1\"");
        assert_eq!(csv_cell("-2"), "\"'-2\"");
        assert_eq!(csv_cell("@SUM(A1)"), "\"'@SUM(A1)\"");
        assert_eq!(csv_cell("\tx"), "\"'\tx\"");
        assert_eq!(csv_cell("line1\nline2"), "\"line1\nline2\"");
    }
}
