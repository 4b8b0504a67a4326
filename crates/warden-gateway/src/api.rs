//! The JSON HTTP API (`/api/...`): routing, bearer-token authentication, JSON in/out and the
//! mapping of application errors to status codes with `{"error": "...", "code": "..."}` bodies.
//!
//! This is the only module (with `web`) that knows HTTP. Handlers are thin: parse, call one
//! `App` use case, serialise. Authorization lives in the use cases.

use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;
use warden_core::review::ApproveInput;
use warden_core::rule::RuleSpec;
use warden_core::secret::Secret;
use warden_core::{SessionKind, User};
use warden_store::{ReviewFilter, SessionFilter};

use crate::app::{AppError, CreateConnection, CreateUser};
use crate::http::ApiResult;
pub use crate::http::{ApiError, AppState, Caller, Json, bearer, paged, status_of};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/health", get(health))
        .route("/api/openapi.json", get(openapi))
        .route("/api/login", post(login))
        .route("/api/me", get(me))
        .route("/api/users", get(list_users).post(create_user))
        .route("/api/users/{email}", delete(delete_user))
        .route("/api/groups", get(list_groups))
        .route("/api/tokens", get(list_tokens).post(create_token))
        .route("/api/tokens/{id}", delete(revoke_token))
        .route(
            "/api/connections",
            get(list_connections).post(create_connection),
        )
        .route(
            "/api/connections/{name}",
            get(get_connection).delete(delete_connection),
        )
        .route("/api/connections/{name}/test", post(test_connection))
        .route("/api/rules", get(list_rules).post(create_rule))
        .route(
            "/api/rules/{name}",
            get(get_rule).put(update_rule).delete(delete_rule),
        )
        .route("/api/exec", post(exec))
        .route("/api/access-requests", post(request_jit))
        .route("/api/access", get(my_access))
        .route("/api/reviews", get(list_reviews))
        .route("/api/reviews/{id}", get(get_review))
        .route("/api/reviews/{id}/wait", get(wait_review))
        .route("/api/reviews/{id}/timeline", get(review_timeline))
        .route("/api/reviews/{id}/approve", put(approve))
        .route("/api/reviews/{id}/reject", put(reject))
        .route("/api/reviews/{id}/withdraw", put(withdraw))
        .route("/api/reviews/{id}/revoke", put(revoke))
        .route("/api/sessions", get(list_sessions))
        .route("/api/sessions/{id}", get(get_session))
        .route("/api/sessions/{id}/statements", get(session_statements))
        .route("/api/audit", get(audit_entries))
        .route("/api/audit/verify", get(audit_verify))
        .route("/api/audit/stream", get(audit_stream))
        .route("/api/audit/export", get(audit_export))
        .route("/api/analytics", get(analytics))
        .route(
            "/api/audit/checkpoints",
            get(list_checkpoints).post(create_checkpoint),
        )
        .route("/metrics", get(metrics))
}

async fn openapi() -> Response {
    axum::Json(crate::openapi::document()).into_response()
}

async fn health(State(app): State<AppState>) -> Response {
    match app.store_ping().await {
        Ok(()) => (
            StatusCode::OK,
            axum::Json(json!({
                "status": "ok",
                "store": app.store_backend(),
                "exec_isolation": {
                    "isolated": app.isolation.sandbox().is_some(),
                    "user": app.isolation.sandbox().map(|s| s.user.clone()),
                    "detail": app.isolation.describe(),
                },
            })),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "health check: store unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({"status": "unavailable", "code": "store_down", "error": "store unreachable"}))).into_response()
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    email: String,
    password: Secret<String>,
}

async fn login(
    State(app): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    Json(b): Json<LoginBody>,
) -> ApiResult<Response> {
    let (token, user) = app
        .login(&b.email, b.password.expose(), "api", peer.ip())
        .await?;
    Ok(axum::Json(json!({"token": token, "user": user})).into_response())
}

async fn me(Caller(u): Caller) -> Json<User> {
    Json(u)
}

async fn list_users(State(app): State<AppState>, Caller(u): Caller) -> ApiResult<Json<Vec<User>>> {
    Ok(Json(app.list_users(&u).await?))
}

async fn create_user(
    State(app): State<AppState>,
    Caller(u): Caller,
    Json(b): Json<CreateUser>,
) -> ApiResult<(StatusCode, Json<User>)> {
    Ok((StatusCode::CREATED, Json(app.create_user(&u, b).await?)))
}

async fn delete_user(
    State(app): State<AppState>,
    Caller(u): Caller,
    Path(email): Path<String>,
) -> ApiResult<StatusCode> {
    app.delete_user(&u, &email).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_groups(State(app): State<AppState>, Caller(u): Caller) -> ApiResult<Response> {
    Ok(axum::Json(app.list_groups(&u).await?).into_response())
}

#[derive(Deserialize)]
struct TokenQuery {
    user: Option<String>,
}

async fn list_tokens(
    State(app): State<AppState>,
    Caller(u): Caller,
    Query(q): Query<TokenQuery>,
) -> ApiResult<Response> {
    Ok(axum::Json(app.list_tokens(&u, q.user.as_deref()).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    user: Option<String>,
    #[serde(default)]
    name: String,
    /// Seconds until expiry; absent = never.
    expires_in: Option<i64>,
}

async fn create_token(
    State(app): State<AppState>,
    Caller(u): Caller,
    Json(b): Json<TokenBody>,
) -> ApiResult<(StatusCode, Response)> {
    let email = b.user.unwrap_or_else(|| u.email.clone());
    let token = app.create_token(&u, &email, &b.name, b.expires_in).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"token": token, "user": email})).into_response(),
    ))
}

fn parse_uuid(s: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(s).map_err(|_| {
        ApiError(AppError::bad(
            "invalid_id",
            format!("{s:?} is not a valid id"),
        ))
    })
}

async fn revoke_token(
    State(app): State<AppState>,
    Caller(u): Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    app.revoke_token(&u, parse_uuid(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_connections(State(app): State<AppState>, Caller(u): Caller) -> ApiResult<Response> {
    Ok(axum::Json(app.list_connections(&u).await?).into_response())
}

async fn create_connection(
    State(app): State<AppState>,
    Caller(u): Caller,
    Json(b): Json<CreateConnection>,
) -> ApiResult<(StatusCode, Response)> {
    Ok((
        StatusCode::CREATED,
        axum::Json(app.create_connection(&u, b).await?).into_response(),
    ))
}

async fn get_connection(
    State(app): State<AppState>,
    Caller(u): Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    Ok(axum::Json(app.get_connection(&u, &name).await?).into_response())
}

async fn test_connection(
    State(app): State<AppState>,
    Caller(u): Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    Ok(axum::Json(app.test_connection(&u, &name).await?).into_response())
}

async fn delete_connection(
    State(app): State<AppState>,
    Caller(u): Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    app.delete_connection(&u, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_rules(State(app): State<AppState>, Caller(_u): Caller) -> ApiResult<Response> {
    Ok(axum::Json(app.list_rules().await?).into_response())
}

async fn get_rule(
    State(app): State<AppState>,
    Caller(_u): Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    Ok(axum::Json(app.get_rule(&name).await?).into_response())
}

async fn create_rule(
    State(app): State<AppState>,
    Caller(u): Caller,
    Json(spec): Json<RuleSpec>,
) -> ApiResult<(StatusCode, Response)> {
    let rule = app.create_rule(&u, spec).await?;
    Ok((StatusCode::CREATED, rule_with_warnings(&app, &rule).await?))
}

/// A saved rule as JSON, with `warnings` (groups without members) when there are any.
async fn rule_with_warnings(app: &AppState, rule: &warden_core::Rule) -> ApiResult<Response> {
    let warnings = app.rule_warnings(rule).await?;
    let mut v = serde_json::to_value(rule).map_err(|e| AppError::Internal(e.into()))?;
    if !warnings.is_empty()
        && let Some(m) = v.as_object_mut()
    {
        m.insert("warnings".into(), json!(warnings));
    }
    Ok(axum::Json(v).into_response())
}

async fn update_rule(
    State(app): State<AppState>,
    Caller(u): Caller,
    Path(name): Path<String>,
    Json(spec): Json<RuleSpec>,
) -> ApiResult<Response> {
    let rule = app.update_rule(&u, &name, spec).await?;
    rule_with_warnings(&app, &rule).await
}

async fn delete_rule(
    State(app): State<AppState>,
    Caller(u): Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    app.delete_rule(&u, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecBody {
    connection: String,
    command: String,
}

async fn exec(
    State(app): State<AppState>,
    Caller(u): Caller,
    Json(b): Json<ExecBody>,
) -> ApiResult<Response> {
    let res = app
        .exec(&u, &b.connection, &b.command, SessionKind::Exec)
        .await?;
    let status = match res {
        crate::app::ExecResult::Pending { .. } => StatusCode::ACCEPTED,
        crate::app::ExecResult::Executed { .. } => StatusCode::OK,
    };
    Ok((status, axum::Json(res)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JitBody {
    connection: String,
    /// Seconds, or a duration string like "2h".
    duration: serde_json::Value,
    reason: Option<String>,
}

async fn request_jit(
    State(app): State<AppState>,
    Caller(u): Caller,
    Json(b): Json<JitBody>,
) -> ApiResult<(StatusCode, Response)> {
    let secs = match &b.duration {
        serde_json::Value::Number(n) => n.as_i64().ok_or_else(|| {
            ApiError(AppError::bad(
                "invalid_duration",
                "duration must be an integer number of seconds",
            ))
        })?,
        serde_json::Value::String(s) => warden_core::duration::parse_duration(s)
            .map_err(|e| ApiError(AppError::bad("invalid_duration", e.to_string())))?,
        _ => {
            return Err(ApiError(AppError::bad(
                "invalid_duration",
                "duration must be seconds or a string like \"2h\"",
            )));
        }
    };
    let res = app.request_jit(&u, &b.connection, secs, b.reason).await?;
    Ok((StatusCode::CREATED, axum::Json(res).into_response()))
}

async fn my_access(State(app): State<AppState>, Caller(u): Caller) -> ApiResult<Response> {
    Ok(axum::Json(app.my_windows(&u).await?).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ReviewQuery {
    pub status: Option<String>,
    pub connection: Option<String>,
    pub requester: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub page: Option<u32>,
    pub per_page: Option<u32>,
}

impl ReviewQuery {
    pub fn filter(&self) -> Result<ReviewFilter, AppError> {
        let (filter, _) = crate::app::reviews::parse_filter(
            self.status.as_deref(),
            self.connection.as_deref(),
            self.requester.as_deref(),
            self.kind.as_deref(),
            "all",
        )?;
        Ok(ReviewFilter {
            page: self.page.unwrap_or(1).max(1),
            per_page: self.per_page.unwrap_or(50).clamp(1, 500),
            ..filter
        })
    }
}

async fn list_reviews(
    State(app): State<AppState>,
    Caller(u): Caller,
    Query(q): Query<ReviewQuery>,
) -> ApiResult<Response> {
    let filter = q.filter()?;
    let (items, total) = app.list_reviews(&u, filter.clone()).await?;
    Ok(paged(items, total))
}

async fn get_review(
    State(app): State<AppState>,
    Caller(u): Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(axum::Json(app.get_review(&u, parse_uuid(&id)?).await?).into_response())
}

#[derive(Deserialize)]
struct WaitQuery {
    timeout: Option<u64>,
}

async fn wait_review(
    State(app): State<AppState>,
    Caller(u): Caller,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
) -> ApiResult<Response> {
    let timeout = Duration::from_secs(q.timeout.unwrap_or(25).min(60));
    Ok(axum::Json(app.wait_review(&u, parse_uuid(&id)?, timeout).await?).into_response())
}

async fn review_timeline(
    State(app): State<AppState>,
    Caller(u): Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(axum::Json(app.review_timeline(&u, parse_uuid(&id)?).await?).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    reason: Option<String>,
    #[serde(default)]
    force: bool,
    /// JIT: shorten the window (seconds or "30m").
    duration: Option<serde_json::Value>,
}

/// Decision bodies are optional (`PUT …/approve` with no body approves).
async fn optional_body(req: Request) -> Result<DecisionBody, ApiError> {
    let bytes = axum::body::to_bytes(req.into_body(), 64 * 1024)
        .await
        .map_err(|_| ApiError(AppError::bad("bad_body", "body too large")))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(DecisionBody::default());
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError(AppError::bad("bad_json", format!("invalid JSON body: {e}"))))
}

async fn approve(
    State(app): State<AppState>,
    Caller(u): Caller,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let b = optional_body(req).await?;
    let duration_sec = match b.duration {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) => n.as_i64(),
        Some(serde_json::Value::String(s)) => Some(
            warden_core::duration::parse_duration(&s)
                .map_err(|e| ApiError(AppError::bad("invalid_duration", e.to_string())))?,
        ),
        Some(_) => {
            return Err(ApiError(AppError::bad(
                "invalid_duration",
                "duration must be seconds or a string like \"30m\"",
            )));
        }
    };
    let input = ApproveInput {
        force: b.force,
        reason: b.reason,
        duration_sec,
    };
    Ok(axum::Json(app.approve(&u, parse_uuid(&id)?, input).await?).into_response())
}

async fn reject(
    State(app): State<AppState>,
    Caller(u): Caller,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let b = optional_body(req).await?;
    Ok(axum::Json(app.reject(&u, parse_uuid(&id)?, b.reason).await?).into_response())
}

async fn withdraw(
    State(app): State<AppState>,
    Caller(u): Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(axum::Json(app.withdraw(&u, parse_uuid(&id)?).await?).into_response())
}

async fn revoke(
    State(app): State<AppState>,
    Caller(u): Caller,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let b = optional_body(req).await?;
    Ok(axum::Json(app.revoke(&u, parse_uuid(&id)?, b.reason).await?).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SessionQuery {
    user: Option<String>,
    connection: Option<String>,
    kind: Option<String>,
    review: Option<String>,
    page: Option<u32>,
    per_page: Option<u32>,
}

async fn list_sessions(
    State(app): State<AppState>,
    Caller(u): Caller,
    Query(q): Query<SessionQuery>,
) -> ApiResult<Response> {
    let kind =
        match q.kind.as_deref() {
            Some(k) => Some(SessionKind::parse(k).ok_or_else(|| {
                ApiError(AppError::bad("invalid_kind", "kind: exec, proxy or web"))
            })?),
            None => None,
        };
    let filter = SessionFilter {
        user: q.user,
        connection: q.connection,
        kind,
        review_id: q.review.as_deref().map(parse_uuid).transpose()?,
        since: None,
        page: q.page.unwrap_or(1).max(1),
        per_page: q.per_page.unwrap_or(50).clamp(1, 500),
    };
    let (items, total) = app.list_sessions(&u, filter).await?;
    Ok(paged(items, total))
}

async fn get_session(
    State(app): State<AppState>,
    Caller(u): Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(axum::Json(app.get_session(&u, parse_uuid(&id)?).await?).into_response())
}

async fn session_statements(
    State(app): State<AppState>,
    Caller(u): Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (_, statements) = app.session_with_statements(&u, parse_uuid(&id)?).await?;
    Ok(axum::Json(statements).into_response())
}

#[derive(Deserialize)]
struct AuditQuery {
    after: Option<i64>,
    limit: Option<i64>,
}

async fn audit_entries(
    State(app): State<AppState>,
    Caller(u): Caller,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Response> {
    let entries = app
        .audit_entries(
            &u,
            q.after.unwrap_or(0),
            q.limit.unwrap_or(1000).clamp(1, 10_000),
        )
        .await?;
    Ok(axum::Json(entries).into_response())
}

#[derive(Deserialize)]
struct StreamQuery {
    after: Option<i64>,
    follow: Option<bool>,
}

/// How often a following stream looks for new entries, and sends a blank heartbeat line when
/// there were none for [`STREAM_HEARTBEAT`].
const STREAM_POLL: Duration = Duration::from_millis(500);
const STREAM_HEARTBEAT: Duration = Duration::from_secs(15);

/// `application/x-ndjson`: one OCSF line per chain entry after `after` (`docs/siem.md`); with
/// `follow=true` it stays open and sends new entries as they are appended. The caller's token is
/// checked again before every page, so a revoked token or a lost role ends the stream; a client
/// resumes with `after=` the last line's `metadata.sequence`.
async fn audit_stream(
    State(app): State<AppState>,
    headers: HeaderMap,
    Caller(u): Caller,
    Query(q): Query<StreamQuery>,
) -> ApiResult<Response> {
    if !u.reads_all() {
        return Err(ApiError(AppError::Forbidden(
            "the audit stream requires an admin or auditor token".into(),
        )));
    }
    let token = bearer(&headers).unwrap_or_default().to_string();
    let follow = q.follow.unwrap_or(false);
    let start = (
        app,
        token,
        q.after.unwrap_or(0).max(0),
        tokio::time::Instant::now(),
    );
    let lines = futures::stream::unfold(start, move |(app, token, after, mut idle)| async move {
        loop {
            let user = app.authenticate(&token).await.ok()?;
            let page = app.audit_entries(&user, after, 500).await.ok()?;
            if let Some(last) = page.last().map(|e| e.seq) {
                let mut buf = String::new();
                for e in &page {
                    buf.push_str(&warden_core::ocsf::entry_line(e).to_string());
                    buf.push('\n');
                }
                let chunk = Ok::<_, std::convert::Infallible>(bytes::Bytes::from(buf));
                return Some((chunk, (app, token, last, tokio::time::Instant::now())));
            }
            if !follow {
                return None;
            }
            if idle.elapsed() >= STREAM_HEARTBEAT {
                idle = tokio::time::Instant::now();
                let beat = Ok(bytes::Bytes::from_static(b"\n"));
                return Some((beat, (app, token, after, idle)));
            }
            tokio::select! {
                _ = app.shutdown.cancelled() => return None,
                _ = tokio::time::sleep(STREAM_POLL) => {}
            }
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        axum::body::Body::from_stream(lines),
    )
        .into_response())
}

async fn audit_verify(State(app): State<AppState>, Caller(u): Caller) -> ApiResult<Response> {
    let report = app.verify_audit(&u).await?;
    let status = if report.ok {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    Ok((status, axum::Json(report)).into_response())
}

async fn metrics(State(app): State<AppState>, Caller(u): Caller) -> ApiResult<Response> {
    if !u.admin {
        return Err(ApiError(AppError::Forbidden(
            "metrics require an admin token".into(),
        )));
    }
    // The store's group commit, as of now: writes and the commits that carried them.
    let (writes, commits) = app.store_write_stats();
    metrics::gauge!("warden_store_writes").set(writes as f64);
    metrics::gauge!("warden_store_commits").set(commits as f64);
    match app.pending_review_count().await {
        Ok(n) => metrics::gauge!("warden_reviews_pending").set(n as f64),
        Err(e) => tracing::warn!(error = %e, "could not count pending reviews for /metrics"),
    }
    let body = crate::telemetry::metrics_handle()
        .map(|h| h.render())
        .unwrap_or_default();
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response())
}

/// `since`/`until`: RFC 3339 timestamps, or durations back from now (`30d`, `12h`).
pub fn parse_time(
    now: time::OffsetDateTime,
    field: &str,
    v: &str,
) -> Result<time::OffsetDateTime, AppError> {
    if let Ok(t) = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339) {
        return Ok(t);
    }
    warden_core::duration::parse_duration(v)
        .map(|secs| now - time::Duration::seconds(secs))
        .map_err(|_| AppError::bad("invalid_time", format!("{field}: use an RFC 3339 time (2026-01-31T00:00:00Z) or a duration back from now (30d)")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportQuery {
    since: Option<String>,
    until: Option<String>,
    connection: Option<String>,
    format: Option<String>,
    /// One review on its own, with Merkle inclusion proofs (JSON only).
    review: Option<String>,
}

async fn audit_export(
    State(app): State<AppState>,
    Caller(u): Caller,
    Query(q): Query<ExportQuery>,
) -> ApiResult<Response> {
    let now = app.now();
    if let Some(id) = q.review.as_deref().filter(|r| !r.is_empty()) {
        if q.since.is_some() || q.until.is_some() || q.connection.is_some() {
            return Err(ApiError(AppError::bad(
                "invalid_request",
                "review= exports one review: leave out since, until and connection",
            )));
        }
        if q.format.as_deref().is_some_and(|f| f != "json") {
            return Err(ApiError(AppError::bad(
                "invalid_format",
                "a single-review export is JSON (it carries proofs)",
            )));
        }
        return Ok(axum::Json(app.export_review(&u, parse_uuid(id)?).await?).into_response());
    }
    let filter = crate::app::ExportFilter {
        since: q
            .since
            .as_deref()
            .map(|v| parse_time(now, "since", v))
            .transpose()?,
        until: q
            .until
            .as_deref()
            .map(|v| parse_time(now, "until", v))
            .transpose()?,
        connection: q.connection.filter(|c| !c.is_empty()),
    };
    let export = app.export_audit(&u, filter).await?;
    match q.format.as_deref().unwrap_or("json") {
        "json" => Ok(axum::Json(export).into_response()),
        "csv" => Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"warden-audit.csv\"",
                ),
            ],
            crate::app::export_csv(&export),
        )
            .into_response()),
        other => Err(ApiError(AppError::bad(
            "invalid_format",
            format!("format {other:?}: use json or csv"),
        ))),
    }
}

async fn list_checkpoints(State(app): State<AppState>, Caller(u): Caller) -> ApiResult<Response> {
    Ok(axum::Json(app.list_checkpoints(&u).await?).into_response())
}

async fn create_checkpoint(
    State(app): State<AppState>,
    Caller(u): Caller,
) -> ApiResult<(StatusCode, Response)> {
    match app.create_checkpoint(&u).await? {
        Some(cp) => Ok((StatusCode::CREATED, axum::Json(cp).into_response())),
        None => Err(ApiError(AppError::bad(
            "empty_log",
            "the audit log is empty: nothing to sign",
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnalyticsParams {
    since: Option<String>,
    connection: Option<String>,
}

async fn analytics(
    State(app): State<AppState>,
    Caller(u): Caller,
    Query(q): Query<AnalyticsParams>,
) -> ApiResult<Response> {
    let since = q
        .since
        .as_deref()
        .filter(|s| !s.is_empty() && *s != "all")
        .map(|v| parse_time(app.now(), "since", v))
        .transpose()?;
    let query = crate::app::analytics::AnalyticsQuery {
        connection: q.connection.filter(|c| !c.is_empty()),
        since,
    };
    let a = app.analytics(&u, query).await?;
    Ok(axum::Json(a.to_json()).into_response())
}
