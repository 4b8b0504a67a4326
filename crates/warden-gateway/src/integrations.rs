//! HTTP routes of the integrations: Slack's interactivity and slash-command endpoints, and the
//! admin API for webhooks and the delivery log.
//!
//! - `POST /api/slack/interactions`, `POST /api/slack/commands`: authenticated by Slack's
//!   request signature (`X-Slack-Signature`, `X-Slack-Request-Timestamp`), checked over the raw
//!   body before anything is parsed; a forged or stale request gets 401 and changes nothing.
//! - `GET/POST /api/webhooks`, `DELETE /api/webhooks/{id}`, `GET /api/deliveries`: bearer
//!   token, admins only (enforced by the use cases).
//!
//! # What it must never do
//! Act on an unverified Slack request, log a signing secret, or decide anything itself: the
//! handlers parse and hand over to `app::notify`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde_json::json;
use warden_notify::slack::{parse_command, parse_interaction, verify_signature};
use warden_store::notify::{DeliveryFilter, DeliveryStatus};

use crate::app::AppError;
use crate::app::notify::{CreateWebhook, SlackAnswer};
use crate::http::{ApiError, AppState, Caller, Json};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/slack/interactions", post(slack_interactions))
        .route("/api/slack/commands", post(slack_commands))
        .route("/api/webhooks", get(list_webhooks).post(create_webhook))
        .route("/api/webhooks/{id}", delete(delete_webhook))
        .route("/api/deliveries", get(list_deliveries))
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, axum::Json(json!({"error": message, "code": code}))).into_response()
}

/// Checks Slack's signature over the raw body; `Some` is the refusal to send.
fn unverified(app: &AppState, headers: &HeaderMap, body: &[u8]) -> Option<Response> {
    let Some(secret) = &app.config.slack_signing_secret else {
        return Some(error(
            StatusCode::NOT_FOUND,
            "slack_disabled",
            "Slack is not configured on this gateway (WARDEN_SLACK_SIGNING_SECRET)",
        ));
    };
    let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
    verify_signature(
        secret.expose().as_bytes(),
        header("x-slack-request-timestamp"),
        header("x-slack-signature"),
        body,
        app.now().unix_timestamp(),
    )
    .err()
    .map(|e| {
        tracing::warn!(reason = %e, "refused a Slack request");
        error(StatusCode::UNAUTHORIZED, "bad_signature", &e.to_string())
    })
}

async fn slack_interactions(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if let Some(resp) = unverified(&app, &headers, &body) {
        return Ok(resp);
    }
    let interaction = parse_interaction(&body)
        .map_err(|e| ApiError(AppError::bad("bad_payload", e.to_string())))?;
    Ok(match app.slack_interaction(interaction).await? {
        SlackAnswer::Ack => StatusCode::OK.into_response(),
        SlackAnswer::Json(v) => axum::Json(v).into_response(),
    })
}

async fn slack_commands(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if let Some(resp) = unverified(&app, &headers, &body) {
        return Ok(resp);
    }
    let cmd =
        parse_command(&body).map_err(|e| ApiError(AppError::bad("bad_payload", e.to_string())))?;
    Ok(axum::Json(app.slack_command(cmd).await?).into_response())
}

async fn list_webhooks(
    State(app): State<AppState>,
    Caller(u): Caller,
) -> Result<Response, ApiError> {
    Ok(axum::Json(app.list_webhooks(&u).await?).into_response())
}

async fn create_webhook(
    State(app): State<AppState>,
    Caller(u): Caller,
    Json(b): Json<CreateWebhook>,
) -> Result<Response, ApiError> {
    Ok((
        StatusCode::CREATED,
        axum::Json(app.create_webhook(&u, b).await?),
    )
        .into_response())
}

async fn delete_webhook(
    State(app): State<AppState>,
    Caller(u): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = uuid::Uuid::parse_str(&id).map_err(|_| {
        ApiError(AppError::bad(
            "invalid_id",
            format!("{id:?} is not a valid id"),
        ))
    })?;
    app.delete_webhook(&u, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DeliveryQuery {
    status: Option<String>,
    review: Option<String>,
    kind: Option<String>,
    page: Option<u32>,
    per_page: Option<u32>,
}

async fn list_deliveries(
    State(app): State<AppState>,
    Caller(u): Caller,
    Query(q): Query<DeliveryQuery>,
) -> Result<Response, ApiError> {
    let status = match q.status.as_deref().filter(|s| !s.is_empty() && *s != "all") {
        Some(s) => Some(DeliveryStatus::parse(s).ok_or_else(|| {
            ApiError(AppError::bad(
                "invalid_status",
                format!("status {s:?}: use pending, failing, sent, dropped or all"),
            ))
        })?),
        None => None,
    };
    let review_id = match q.review.as_deref() {
        Some(r) => Some(uuid::Uuid::parse_str(r).map_err(|_| {
            ApiError(AppError::bad(
                "invalid_id",
                format!("{r:?} is not a valid id"),
            ))
        })?),
        None => None,
    };
    let filter = DeliveryFilter {
        status,
        review_id,
        kind: q.kind.filter(|k| !k.is_empty()),
        page: q.page.unwrap_or(1).max(1),
        per_page: q.per_page.unwrap_or(100).clamp(1, 1000),
    };
    let (items, total) = app.list_deliveries(&u, filter).await?;
    Ok(crate::http::paged(items, total))
}
