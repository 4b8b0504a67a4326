//! Access requests: the filtered, paginated list; the detail page (exact command, requester and
//! groups, rule and policy, timeline, result); the decision forms (approve, reject, force
//! approve, revoke, withdraw); and live updates — `/events` streams `App::subscribe()` as
//! server-sent events, and the pages re-fetch the server-rendered row or detail fragment.
//!
//! # What it must never do
//! Render a command, reason, email or output unescaped (they are attacker-controlled), show a
//! review the `App` would not show this user (every read goes through `get_review` /
//! `list_reviews`), or send an event about a review the user may not see.

use std::convert::Infallible;
use std::time::Duration;

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use futures::Stream;
use serde::Deserialize;
use time::OffsetDateTime;
use uuid::Uuid;
use warden_core::RuleType;
use warden_core::audit::{AuditEntry, AuditEvent};
use warden_core::review::{Actions, ApproveInput, Outcome};

use super::view::{ResultView, age, dur, iso, status_class, truncate, ts, ts_opt};
use super::{Nav, Posted, Viewer, WebError, WebResult, fail, render, render_status, see_other};
use crate::app::{AppError, ReviewView};
use crate::http::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/reviews", get(list))
        .route("/reviews/{id}", get(detail))
        .route("/reviews/{id}/row", get(row_fragment))
        .route("/reviews/{id}/live", get(live_fragment))
        .route("/reviews/{id}/approve", post(approve))
        .route("/reviews/{id}/force", post(force))
        .route("/reviews/{id}/reject", post(reject))
        .route("/reviews/{id}/revoke", post(revoke))
        .route("/reviews/{id}/withdraw", post(withdraw))
        .route("/events", get(events))
}

const PER_PAGE: u32 = 25;
/// How long one event stream lives before the browser reconnects (and is authenticated again,
/// so a revoked session stops receiving events soon). Streams also end at gateway shutdown.
const STREAM_LIFETIME: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// View models
// ---------------------------------------------------------------------------------------------

/// One row of the list (also the live-update fragment).
pub struct RowView {
    pub id: String,
    pub status: &'static str,
    pub status_class: &'static str,
    pub requester: String,
    pub connection: String,
    pub kind: &'static str,
    pub command_short: String,
    pub command_full: String,
    pub age: String,
    pub created: String,
    pub created_iso: String,
    pub progress: String,
    pub forced: bool,
}

fn kind_label(k: RuleType) -> &'static str {
    match k {
        RuleType::Command => "by Command",
        RuleType::Jit => "Just-in-Time",
    }
}

pub fn row_view(v: &ReviewView, now: OffsetDateTime) -> RowView {
    let r = &v.review;
    let (short, full) = match (&r.command, r.duration_sec) {
        (Some(c), _) => (truncate(c, 80), c.clone()),
        (None, Some(d)) => {
            let s = format!("access for {}", dur(d));
            (s.clone(), s)
        }
        (None, None) => (String::new(), String::new()),
    };
    RowView {
        id: r.id.to_string(),
        status: r.status.as_str(),
        status_class: status_class(r.status),
        requester: r.requester.clone(),
        connection: r.connection.clone(),
        kind: kind_label(r.kind),
        command_short: short,
        command_full: full,
        age: age(r.created_at, now),
        created: ts(r.created_at),
        created_iso: iso(r.created_at),
        progress: v.progress.clone(),
        forced: r.forced,
    }
}

pub struct ApprovalView {
    pub approver: String,
    pub group: String,
    pub forced: bool,
    pub auto: bool,
    pub reason: String,
    pub at: String,
}

pub struct TimelineItem {
    pub at: String,
    pub actor: String,
    pub what: String,
    pub detail: String,
}

/// Everything the detail page shows about a review.
pub struct DetailView {
    pub id: String,
    pub status: &'static str,
    pub status_class: &'static str,
    pub kind: &'static str,
    pub is_jit: bool,
    pub connection: String,
    /// The connection's kind (postgres, command…), or "deleted".
    pub connection_type: String,
    pub requester: String,
    pub requester_groups: String,
    pub rule: String,
    pub command: Option<String>,
    pub command_sha256: String,
    pub duration: String,
    pub request_reason: String,
    pub progress: String,
    pub approval_groups: String,
    pub require_all: bool,
    pub amount: u32,
    pub force_groups: String,
    pub approvals: Vec<ApprovalView>,
    pub decided_by: String,
    pub reason: String,
    pub forced: bool,
    /// Withdrawn by (or on behalf of) the requester: REJECTED by status.
    pub withdrawn: bool,
    pub created: String,
    pub expires: String,
    pub decided_at: String,
    pub window_end: String,
    pub result: Option<ResultView>,
    pub timeline: Vec<TimelineItem>,
}

fn describe(e: &AuditEntry) -> (String, String) {
    let Ok(ev) = serde_json::from_value::<AuditEvent>(e.event.clone()) else {
        let kind = e
            .event
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or("event");
        return (kind.replace('_', " "), String::new());
    };
    match ev {
        AuditEvent::ReviewRequested {
            review_type,
            rule,
            duration_sec,
            reason,
            ..
        } => {
            let mut d = format!("{review_type} request under rule {rule}");
            if let Some(s) = duration_sec {
                d.push_str(&format!(", window {}", dur(s)));
            }
            if let Some(r) = reason {
                d.push_str(&format!(", reason: {r}"));
            }
            ("requested".into(), d)
        }
        AuditEvent::ReviewApproved {
            group,
            forced,
            auto,
            reason,
            approved,
            ..
        } => {
            let what = if auto {
                "auto-approved"
            } else if forced {
                "force-approved"
            } else {
                "approved"
            };
            let mut d = String::new();
            if !group.is_empty() {
                d.push_str(&format!("as {group}"));
            }
            if let Some(r) = reason {
                if !d.is_empty() {
                    d.push_str(" — ");
                }
                d.push_str(&r);
            }
            if approved && !auto && !forced {
                d.push_str(if d.is_empty() {
                    "quorum met"
                } else {
                    " (quorum met)"
                });
            }
            (what.into(), d)
        }
        AuditEvent::ReviewRejected {
            reason,
            withdrawn,
            by_admin,
            ..
        } => {
            if withdrawn {
                ("withdrawn".into(), reason)
            } else if by_admin {
                ("rejected by an admin".into(), reason)
            } else {
                ("rejected".into(), reason)
            }
        }
        AuditEvent::ReviewExpired { .. } => (
            "expired".into(),
            "no decision before the timeout; the command never ran".into(),
        ),
        AuditEvent::ReviewRevoked { reason, .. } => ("revoked".into(), reason),
        AuditEvent::ReviewExecuted {
            exit_code,
            duration_ms,
            ..
        } => (
            "executed".into(),
            format!("exit code {exit_code} in {}", super::view::ms(duration_ms)),
        ),
        AuditEvent::WindowEnded { .. } => ("window ended".into(), String::new()),
        AuditEvent::SessionStarted {
            session_kind,
            connection,
            ..
        } => (
            "session started".into(),
            format!("{session_kind} on {connection}"),
        ),
        AuditEvent::SessionEnded { exit_code, .. } => (
            "session ended".into(),
            exit_code
                .map(|c| format!("exit code {c}"))
                .unwrap_or_default(),
        ),
        AuditEvent::Statement { statement, tag, .. } => (
            "statement".into(),
            statement_line(&statement, tag.as_deref()),
        ),
        AuditEvent::Statements { statements, .. } => (
            match statements.len() {
                1 => "statement".into(),
                n => format!("{n} statements"),
            },
            statements
                .iter()
                .take(5)
                .map(|r| statement_line(&r.statement, r.tag.as_deref()))
                .chain(
                    (statements.len() > 5).then(|| format!("… and {} more", statements.len() - 5)),
                )
                .collect::<Vec<_>>()
                .join("; "),
        ),
        other => (other.kind().replace('_', " "), String::new()),
    }
}

fn statement_line(statement: &str, tag: Option<&str>) -> String {
    match tag {
        Some(t) => format!("{} → {t}", truncate(statement, 200)),
        None => truncate(statement, 200),
    }
}

fn detail_view(v: &ReviewView, timeline: &[AuditEntry]) -> DetailView {
    let r = &v.review;
    DetailView {
        id: r.id.to_string(),
        status: r.status.as_str(),
        status_class: status_class(r.status),
        withdrawn: v.outcome == Outcome::Withdrawn,
        kind: kind_label(r.kind),
        is_jit: r.kind == RuleType::Jit,
        connection: r.connection.clone(),
        connection_type: v
            .connection_type
            .map(|k| k.as_str().to_string())
            .unwrap_or_else(|| "deleted".into()),
        requester: r.requester.clone(),
        requester_groups: r.requester_groups.join(", "),
        rule: r.rule.clone(),
        command: r.command.clone(),
        command_sha256: r.command_sha256.clone().unwrap_or_default(),
        duration: r.duration_sec.map(dur).unwrap_or_default(),
        request_reason: r.request_reason.clone().unwrap_or_default(),
        progress: v.progress.clone(),
        approval_groups: r.policy.approval_groups.join(", "),
        require_all: r.policy.require_all_groups,
        amount: r.policy.approval_amount,
        force_groups: r.policy.force_approval_groups.join(", "),
        approvals: r
            .approvals
            .iter()
            .map(|a| ApprovalView {
                approver: a.approver.clone(),
                group: a.group.clone(),
                forced: a.forced,
                auto: a.auto,
                reason: a.reason.clone().unwrap_or_default(),
                at: ts(a.at),
            })
            .collect(),
        decided_by: r.decided_by.clone().unwrap_or_default(),
        reason: r.reason.clone().unwrap_or_default(),
        forced: r.forced,
        created: ts(r.created_at),
        expires: ts(r.expires_at),
        decided_at: ts_opt(r.decided_at),
        window_end: ts_opt(r.window_end),
        result: v.result.as_ref().map(ResultView::of),
        timeline: timeline
            .iter()
            .map(|e| {
                let (what, detail) = describe(e);
                TimelineItem {
                    at: ts(e.at),
                    actor: e.actor.clone(),
                    what,
                    detail,
                }
            })
            .collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// List
// ---------------------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "reviews.html")]
struct ListPage {
    nav: Option<Nav>,
    rows: Vec<RowView>,
    total: i64,
    status: String,
    connection: String,
    requester: String,
    kind: String,
    connections: Vec<String>,
    statuses: Vec<(&'static str, &'static str)>,
    page: u32,
    pages: u32,
    prev_href: String,
    next_href: String,
    csv_href: String,
}

#[derive(Deserialize, Default)]
struct ListQuery {
    status: Option<String>,
    connection: Option<String>,
    requester: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    page: Option<u32>,
}

pub use crate::app::reviews::parse_filter;

fn query_string(pairs: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if !v.is_empty() {
            s.append_pair(k, v);
        }
    }
    s.finish()
}

async fn list(
    State(app): State<AppState>,
    viewer: Viewer,
    Query(q): Query<ListQuery>,
) -> WebResult {
    let fail = fail(&viewer, "reviews");
    let (mut filter, status) = parse_filter(
        q.status.as_deref(),
        q.connection.as_deref(),
        q.requester.as_deref(),
        q.kind.as_deref(),
        "pending",
    )
    .map_err(&fail)?;
    let page = q.page.unwrap_or(1).max(1);
    filter.page = page;
    filter.per_page = PER_PAGE;
    let (items, total) = app
        .list_reviews(&viewer.user, filter.clone())
        .await
        .map_err(&fail)?;
    let connections = app
        .list_connections(&viewer.user)
        .await
        .map_err(&fail)?
        .into_iter()
        .map(|c| c.name)
        .collect();
    let now = app.now();
    let pages = ((total.max(0) as u32).div_ceil(PER_PAGE)).max(1);
    let connection = filter.connection.clone().unwrap_or_default();
    let requester = filter.requester.clone().unwrap_or_default();
    let kind = filter.kind.map(|k| k.as_str()).unwrap_or("").to_string();
    let href = |p: u32| {
        let p = p.to_string();
        format!(
            "/reviews?{}",
            query_string(&[
                ("status", &status),
                ("connection", &connection),
                ("requester", &requester),
                ("type", &kind),
                ("page", &p),
            ])
        )
    };
    let page_tpl = ListPage {
        nav: viewer.nav("reviews"),
        rows: items.iter().map(|v| row_view(v, now)).collect(),
        total,
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
        csv_href: format!(
            "/reviews.csv?{}",
            query_string(&[
                ("status", &status),
                ("connection", &connection),
                ("requester", &requester),
                ("type", &kind),
            ])
        ),
        status,
        connection,
        requester,
        kind,
        connections,
        statuses: vec![
            ("pending", "Pending"),
            ("approved", "Approved"),
            ("executed", "Executed"),
            ("rejected", "Rejected"),
            ("expired", "Expired"),
            ("revoked", "Revoked"),
            ("all", "All"),
        ],
        page,
        pages,
    };
    Ok(render(&page_tpl))
}

#[derive(Template)]
#[template(path = "review_row.html")]
struct RowFragment {
    r: RowView,
}

fn parse_id(id: &str) -> Result<Uuid, AppError> {
    Uuid::parse_str(id).map_err(|_| AppError::NotFound(format!("no review {id:?}")))
}

async fn row_fragment(
    State(app): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> WebResult {
    let id = parse_id(&id).map_err(fail(&viewer, "reviews"))?;
    let v = app
        .get_review(&viewer.user, id)
        .await
        .map_err(fail(&viewer, "reviews"))?;
    Ok(render(&RowFragment {
        r: row_view(&v, app.now()),
    }))
}

// ---------------------------------------------------------------------------------------------
// Detail and decisions
// ---------------------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "review.html")]
struct DetailPage {
    nav: Option<Nav>,
    d: DetailView,
    a: Actions,
    has_actions: bool,
    csrf: String,
    notice: String,
    error: String,
}

#[derive(Template)]
#[template(path = "review_fragment.html")]
struct LiveFragment {
    d: DetailView,
    a: Actions,
    has_actions: bool,
    csrf: String,
    notice: String,
    error: String,
}

#[derive(Deserialize, Default)]
struct DetailQuery {
    done: Option<String>,
}

async fn load_detail(
    app: &AppState,
    viewer: &Viewer,
    id: Uuid,
) -> Result<(DetailView, Actions), AppError> {
    let v = app.get_review(&viewer.user, id).await?;
    let timeline = app.review_timeline(&viewer.user, id).await?;
    let a = v.actions;
    Ok((detail_view(&v, &timeline), a))
}

fn notice_for(done: Option<&str>) -> String {
    match done {
        Some("approved") => "Your approval was recorded.".into(),
        Some("forced") => "Force-approved.".into(),
        Some("rejected") => "Rejected.".into(),
        Some("revoked") => "Access window revoked.".into(),
        Some("withdrawn") => "Request withdrawn.".into(),
        _ => String::new(),
    }
}

async fn detail_page(
    app: &AppState,
    viewer: &Viewer,
    id: Uuid,
    status: StatusCode,
    notice: String,
    error: String,
) -> WebResult {
    let (d, a) = load_detail(app, viewer, id)
        .await
        .map_err(fail(viewer, "reviews"))?;
    Ok(render_status(
        status,
        &DetailPage {
            nav: viewer.nav("reviews"),
            has_actions: a.any(),
            d,
            a,
            csrf: viewer.csrf.clone(),
            notice,
            error,
        },
    ))
}

async fn detail(
    State(app): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(q): Query<DetailQuery>,
) -> WebResult {
    let id = parse_id(&id).map_err(fail(&viewer, "reviews"))?;
    detail_page(
        &app,
        &viewer,
        id,
        StatusCode::OK,
        notice_for(q.done.as_deref()),
        String::new(),
    )
    .await
}

async fn live_fragment(
    State(app): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> WebResult {
    let id = parse_id(&id).map_err(fail(&viewer, "reviews"))?;
    let (d, a) = load_detail(&app, &viewer, id)
        .await
        .map_err(fail(&viewer, "reviews"))?;
    Ok(render(&LiveFragment {
        has_actions: a.any(),
        d,
        a,
        csrf: viewer.csrf.clone(),
        notice: String::new(),
        error: String::new(),
    }))
}

/// After a decision: back to the detail page with a notice, or the page with the error shown
/// next to the forms (nothing changed).
async fn decided(
    app: &AppState,
    viewer: &Viewer,
    id: Uuid,
    result: Result<ReviewView, AppError>,
    done: &str,
) -> WebResult {
    match result {
        Ok(_) => Ok(see_other(&format!("/reviews/{id}?done={done}"))),
        Err(AppError::Internal(e)) => {
            Err(WebError::App(AppError::Internal(e)).page(viewer.nav("reviews")))
        }
        Err(e) => {
            let status = crate::http::status_of(&e);
            detail_page(app, viewer, id, status, String::new(), e.to_string()).await
        }
    }
}

fn reason(p: &Posted) -> Option<String> {
    p.form.opt("reason")
}

async fn approve(State(app): State<AppState>, Path(id): Path<String>, p: Posted) -> WebResult {
    let id = parse_id(&id).map_err(fail(&p.viewer, "reviews"))?;
    let duration_sec = match p.form.opt("duration") {
        None => None,
        Some(d) => match warden_core::duration::parse_duration(&d) {
            Ok(s) => Some(s),
            Err(e) => {
                return decided(
                    &app,
                    &p.viewer,
                    id,
                    Err(AppError::bad("invalid_duration", e.to_string())),
                    "",
                )
                .await;
            }
        },
    };
    let input = ApproveInput {
        force: false,
        reason: reason(&p),
        duration_sec,
    };
    let r = app.approve(&p.viewer.user, id, input).await;
    decided(&app, &p.viewer, id, r, "approved").await
}

async fn force(State(app): State<AppState>, Path(id): Path<String>, p: Posted) -> WebResult {
    let id = parse_id(&id).map_err(fail(&p.viewer, "reviews"))?;
    let input = ApproveInput {
        force: true,
        reason: reason(&p),
        duration_sec: None,
    };
    let r = app.approve(&p.viewer.user, id, input).await;
    decided(&app, &p.viewer, id, r, "forced").await
}

async fn reject(State(app): State<AppState>, Path(id): Path<String>, p: Posted) -> WebResult {
    let id = parse_id(&id).map_err(fail(&p.viewer, "reviews"))?;
    let r = app.reject(&p.viewer.user, id, reason(&p)).await;
    decided(&app, &p.viewer, id, r, "rejected").await
}

async fn revoke(State(app): State<AppState>, Path(id): Path<String>, p: Posted) -> WebResult {
    let id = parse_id(&id).map_err(fail(&p.viewer, "reviews"))?;
    let r = app.revoke(&p.viewer.user, id, reason(&p)).await;
    decided(&app, &p.viewer, id, r, "revoked").await
}

async fn withdraw(State(app): State<AppState>, Path(id): Path<String>, p: Posted) -> WebResult {
    let id = parse_id(&id).map_err(fail(&p.viewer, "reviews"))?;
    let r = app.withdraw(&p.viewer.user, id).await;
    decided(&app, &p.viewer, id, r, "withdrawn").await
}

// ---------------------------------------------------------------------------------------------
// Live updates
// ---------------------------------------------------------------------------------------------

/// `text/event-stream` of `review` events (`{"id", "status"}`) for reviews this user may see.
/// Ends after [`STREAM_LIFETIME`] or at shutdown; the browser's `EventSource` reconnects on its own.
async fn events(
    State(app): State<AppState>,
    viewer: Viewer,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = app.subscribe();
    let deadline = tokio::time::Instant::now() + STREAM_LIFETIME;
    let hello = futures::stream::once(async {
        Ok::<_, Infallible>(
            Event::default()
                .retry(Duration::from_millis(500))
                .comment("hello"),
        )
    });
    let updates = futures::stream::unfold(
        (rx, app, viewer.user),
        move |(mut rx, app, user)| async move {
            loop {
                let next = tokio::select! {
                    // Gateway shutting down: end the stream so graceful shutdown is prompt.
                    _ = app.shutdown.cancelled() => return None,
                    r = tokio::time::timeout_at(deadline, rx.recv()) => r,
                };
                match next {
                    Err(_) => return None,
                    Ok(Ok(ev)) => {
                        // Only reviews this user may see (the App decides).
                        if app.get_review(&user, ev.id).await.is_err() {
                            continue;
                        }
                        let data = serde_json::json!({"id": ev.id, "status": ev.status.as_str()});
                        let event = Event::default().event("review").data(data.to_string());
                        return Some((Ok(event), (rx, app, user)));
                    }
                    Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {
                        let event = Event::default().event("resync").data("{}");
                        return Some((Ok(event), (rx, app, user)));
                    }
                    Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => return None,
                }
            }
        },
    );
    use futures::StreamExt;
    Sse::new(hello.chain(updates)).keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
}
