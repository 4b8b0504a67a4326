//! Which audit events notify whom. One audit entry becomes zero or more deliveries:
//!
//! | audit event | webhook type | Slack | Teams |
//! |---|---|---|---|
//! | `review_requested` | `review.created` | post to the channel | card |
//! | `review_approved` | `review.approved` (quorum met) | update; DM when approved | follow-up when approved |
//! | `review_rejected` | `review.rejected` | update; DM (not for withdrawals) | follow-up |
//! | `review_expired` | `review.expired` | update; DM | follow-up |
//! | `review_revoked` | `review.revoked` | update; DM | follow-up |
//! | `review_executed`, `window_ended` | `review.executed` | update | follow-up |
//! | `session_started` / `session_ended` | `session.started` / `session.ended` | — | — |
//!
//! Reviews auto-approved at creation (an admin's own request) need nobody: they go to webhooks
//! only. Webhook payloads follow the Standard Webhooks shape `{"type", "timestamp", "data"}`
//! (documented in the README).
//!
//! # What it must never do
//! Put a secret, or a session's output, into a payload.

use serde_json::{Value, json};
use warden_core::audit::{AuditEntry, AuditEvent};
use warden_core::{Review, ReviewStatus, Session};
use warden_store::notify::NewDelivery;
use warden_store::{Store, StoreError};

use crate::NotifyConfig;
use crate::blocks::decision_dm;
use crate::teams;

pub const REVIEW_CREATED: &str = "review.created";
pub const REVIEW_APPROVED: &str = "review.approved";
pub const REVIEW_REJECTED: &str = "review.rejected";
pub const REVIEW_EXPIRED: &str = "review.expired";
pub const REVIEW_REVOKED: &str = "review.revoked";
pub const REVIEW_EXECUTED: &str = "review.executed";
pub const SESSION_STARTED: &str = "session.started";
pub const SESSION_ENDED: &str = "session.ended";

/// Every event type a webhook can subscribe to.
pub const EVENT_TYPES: [&str; 8] = [
    REVIEW_CREATED,
    REVIEW_APPROVED,
    REVIEW_REJECTED,
    REVIEW_EXPIRED,
    REVIEW_REVOKED,
    REVIEW_EXECUTED,
    SESSION_STARTED,
    SESSION_ENDED,
];

/// Delivery kinds.
pub const SLACK_POST: &str = "slack_post";
pub const SLACK_UPDATE: &str = "slack_update";
pub const SLACK_DM: &str = "slack_dm";
pub const TEAMS: &str = "teams";
pub const WEBHOOK: &str = "webhook";

/// The webhook event type of an audit event (`None`: not published; partial approvals are
/// visible in Slack but are not a webhook event).
pub fn webhook_type(ev: &AuditEvent) -> Option<&'static str> {
    Some(match ev {
        AuditEvent::ReviewRequested { .. } => REVIEW_CREATED,
        AuditEvent::ReviewApproved { approved: true, .. } => REVIEW_APPROVED,
        AuditEvent::ReviewRejected { .. } => REVIEW_REJECTED,
        AuditEvent::ReviewExpired { .. } => REVIEW_EXPIRED,
        AuditEvent::ReviewRevoked { .. } => REVIEW_REVOKED,
        AuditEvent::ReviewExecuted { .. } | AuditEvent::WindowEnded { .. } => REVIEW_EXECUTED,
        AuditEvent::SessionStarted { .. } => SESSION_STARTED,
        AuditEvent::SessionEnded { .. } => SESSION_ENDED,
        _ => return None,
    })
}

/// Does this event close (or decide) the review, so the requester hears about it?
fn is_decision(ev: &AuditEvent) -> bool {
    matches!(
        ev,
        AuditEvent::ReviewApproved {
            approved: true,
            auto: false,
            ..
        } | AuditEvent::ReviewRejected {
            withdrawn: false,
            ..
        } | AuditEvent::ReviewExpired { .. }
            | AuditEvent::ReviewRevoked { .. }
    )
}

/// The status an event leaves the review in (`None`: unchanged, e.g. a partial approval).
fn status_after(ev: &AuditEvent) -> Option<ReviewStatus> {
    Some(match ev {
        AuditEvent::ReviewRequested { .. } => ReviewStatus::Pending,
        AuditEvent::ReviewApproved { approved: true, .. } => ReviewStatus::Approved,
        AuditEvent::ReviewRejected { .. } => ReviewStatus::Rejected,
        AuditEvent::ReviewExpired { .. } => ReviewStatus::Expired,
        AuditEvent::ReviewRevoked { .. } => ReviewStatus::Revoked,
        AuditEvent::ReviewExecuted { .. } | AuditEvent::WindowEnded { .. } => {
            ReviewStatus::Executed
        }
        _ => return None,
    })
}

/// A session for a payload: no output, no result rows.
fn session_json(s: &Session) -> Value {
    let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.remove("output");
        m.remove("rows_json");
    }
    v
}

/// The webhook body of an event.
pub fn webhook_payload(
    kind: &str,
    entry: &AuditEntry,
    review: Option<&Review>,
    connection_type: Option<&str>,
    session: Option<&Session>,
    review_url: Option<&str>,
) -> Value {
    let mut data = json!({
        "seq": entry.seq,
        "actor": entry.actor,
        "event": entry.event,
    });
    if let Some(r) = review {
        let mut rv = serde_json::to_value(r).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut rv {
            m.remove("version");
            m.insert("progress".into(), json!(r.progress()));
            m.insert("url".into(), json!(review_url));
            // What kind of target the approver is asked about (postgres, command…); null once
            // the connection is gone.
            m.insert("connection_type".into(), json!(connection_type));
        }
        data["review"] = rv;
    }
    if let Some(s) = session {
        data["session"] = session_json(s);
    }
    json!({
        "type": kind,
        "timestamp": warden_core::timefmt::format(entry.at),
        "data": data,
    })
}

/// Plans the deliveries of one audit entry. Store errors abort the pass (the cursor does not
/// move, the entry is planned again); an entry that is not an event this version knows is
/// skipped.
pub async fn plan(
    store: &Store,
    cfg: &NotifyConfig,
    entry: &AuditEntry,
) -> Result<Vec<NewDelivery>, StoreError> {
    let Ok(ev) = serde_json::from_value::<AuditEvent>(entry.event.clone()) else {
        return Ok(Vec::new());
    };
    let wtype = webhook_type(&ev);
    let mut out = Vec::new();
    let review_id = match &ev {
        AuditEvent::SessionStarted { .. } | AuditEvent::SessionEnded { .. } => None,
        other => other.review_id(),
    };
    let review = match review_id {
        Some(id) => store.get_review(id).await?,
        None => None,
    };
    let session = match &ev {
        AuditEvent::SessionStarted { session_id, .. }
        | AuditEvent::SessionEnded { session_id, .. } => store.get_session(*session_id).await?,
        _ => None,
    };
    let review_url = review.as_ref().map(|r| cfg.review_url(r.id));
    let conn = match &review {
        Some(r) => store.get_connection(&r.connection).await?,
        None => None,
    };
    let connection_type = conn.as_ref().map(|c| c.connection.kind.as_str());

    // Webhooks: every endpoint subscribed to this type.
    if let Some(kind) = wtype {
        let hooks = store.list_webhooks().await?;
        let subscribed: Vec<_> = hooks
            .iter()
            .filter(|h| h.webhook.events.iter().any(|e| e == kind))
            .collect();
        if !subscribed.is_empty() {
            let payload = webhook_payload(
                kind,
                entry,
                review.as_ref(),
                connection_type,
                session.as_ref(),
                review_url.as_deref(),
            );
            for h in subscribed {
                out.push(NewDelivery {
                    event_seq: entry.seq,
                    endpoint_key: format!("webhook:{}", h.webhook.id),
                    kind: WEBHOOK.into(),
                    target: h.webhook.id.to_string(),
                    event_type: kind.into(),
                    review_id,
                    payload: payload.clone(),
                });
            }
        }
    }

    // Chat: only for reviews someone has to decide.
    let Some(mut r) = review else {
        return Ok(out);
    };
    // Cards and DMs are fixed at planning: show the status this event produced, even if the
    // review moved on since (an approval already executed, say).
    if let Some(status) = status_after(&ev) {
        r.status = status;
    }
    if r.approvals.iter().any(|a| a.auto) {
        return Ok(out);
    }
    let Some(conn) = conn else {
        return Ok(out);
    };
    let conn = conn.connection;
    let url = cfg.review_url(r.id);
    let event_type = wtype.unwrap_or("review.approval").to_string();
    let is_request = matches!(ev, AuditEvent::ReviewRequested { .. });
    let is_review_event = is_request
        || matches!(
            ev,
            AuditEvent::ReviewApproved { .. }
                | AuditEvent::ReviewRejected { .. }
                | AuditEvent::ReviewExpired { .. }
                | AuditEvent::ReviewRevoked { .. }
                | AuditEvent::ReviewExecuted { .. }
                | AuditEvent::WindowEnded { .. }
        );
    if !is_review_event {
        return Ok(out);
    }

    if cfg.slack_bot_token.is_some()
        && let Some(channel) = conn.slack_channel.as_deref().filter(|c| !c.is_empty())
    {
        out.push(NewDelivery {
            event_seq: entry.seq,
            endpoint_key: format!("slack:{channel}"),
            kind: if is_request { SLACK_POST } else { SLACK_UPDATE }.into(),
            target: channel.to_string(),
            event_type: event_type.clone(),
            review_id: Some(r.id),
            payload: json!({"review_id": r.id, "event": entry.event.get("kind")}),
        });
        if is_decision(&ev) {
            let (text, blocks) = decision_dm(&r, &url);
            out.push(NewDelivery {
                event_seq: entry.seq,
                endpoint_key: format!("slack-dm:{}", r.requester),
                kind: SLACK_DM.into(),
                target: r.requester.clone(),
                event_type: event_type.clone(),
                review_id: Some(r.id),
                payload: json!({"text": text, "blocks": blocks}),
            });
        }
    }

    if let Some(hook) = conn.teams_webhook.as_deref().filter(|u| !u.is_empty()) {
        let ctype = Some(conn.kind.as_str());
        let card = if is_request {
            Some(teams::review_card(&r, ctype, &url))
        } else if wtype.is_some() {
            Some(teams::outcome_card(&r, ctype, &url))
        } else {
            None // partial approvals: Teams cards cannot be updated in place
        };
        if let Some(card) = card {
            out.push(NewDelivery {
                event_seq: entry.seq,
                endpoint_key: format!("teams:{}", conn.name),
                kind: TEAMS.into(),
                target: hook.to_string(),
                event_type,
                review_id: Some(r.id),
                payload: card,
            });
        }
    }
    Ok(out)
}
