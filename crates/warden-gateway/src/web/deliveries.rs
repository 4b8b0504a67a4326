//! `/deliveries` (admins only): the notification delivery log (Slack, Teams, webhooks) with
//! status and kind filters and pages, under the list of webhook endpoints and whether each is
//! currently failing.
//!
//! # What it must never do
//! Show a webhook secret or a Teams URL (the `App` views already leave them out / reduce them to
//! their host), decide who is an admin itself beyond hiding the page (`list_deliveries` and
//! `list_webhooks` refuse non-admins), or render a URL or an error unescaped: both come from
//! outside (an admin-typed URL, a receiver's answer).

use std::collections::HashMap;

use askama::Template;
use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use serde::Deserialize;
use warden_notify::events::{SLACK_DM, SLACK_POST, SLACK_UPDATE, TEAMS, WEBHOOK};
use warden_store::notify::{DeliveryFilter, DeliveryStatus};

use super::view::{truncate, ts, ts_opt};
use super::{Nav, Viewer, WebResult, fail, render};
use crate::app::AppError;
use crate::app::notify::{DeliveryView, WebhookView};
use crate::http::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/deliveries", get(list))
}

const PER_PAGE: u32 = 25;
/// Characters of a delivery's last error shown in the list (the full text is in the tooltip).
const ERROR_CHARS: usize = 120;

/// The kinds offered by the filter: (value, label).
const KINDS: [(&str, &str); 5] = [
    (SLACK_POST, "Slack post"),
    (SLACK_UPDATE, "Slack update"),
    (SLACK_DM, "Slack DM"),
    (TEAMS, "Teams"),
    (WEBHOOK, "Webhook"),
];

/// The statuses offered by the filter.
const STATUSES: [&str; 4] = ["pending", "failing", "sent", "dropped"];

pub struct DeliveryRow {
    pub created: String,
    /// `next attempt …` or `sent …`.
    pub when_label: &'static str,
    pub when: String,
    pub event_type: String,
    pub kind: String,
    pub target: String,
    pub review_id: String,
    pub status: &'static str,
    pub badge: &'static str,
    pub attempts: i64,
    pub error: String,
    pub error_full: String,
}

fn badge(s: DeliveryStatus) -> &'static str {
    match s {
        DeliveryStatus::Pending => "pending",
        DeliveryStatus::Sent => "executed",
        DeliveryStatus::Failing => "rejected",
        DeliveryStatus::Dropped => "closed",
    }
}

/// A delivery as a row; a webhook delivery shows its endpoint's URL when the webhook still
/// exists (`urls`: webhook id → URL).
fn row(d: &DeliveryView, urls: &HashMap<String, String>) -> DeliveryRow {
    let (when_label, when) = match (d.status, d.sent_at) {
        (DeliveryStatus::Sent, Some(t)) => ("sent", ts(t)),
        (DeliveryStatus::Dropped, _) => ("dropped", ts_opt(d.sent_at)),
        _ => ("next attempt", ts(d.next_attempt_at)),
    };
    let target = match urls.get(&d.target) {
        Some(url) if d.kind == WEBHOOK => url.clone(),
        _ => d.target.clone(),
    };
    let error_full = d.last_error.clone().unwrap_or_default();
    DeliveryRow {
        created: ts(d.created_at),
        when_label,
        when,
        event_type: d.event_type.clone(),
        kind: d.kind.clone(),
        target: truncate(&target, 80),
        review_id: d.review_id.map(|r| r.to_string()).unwrap_or_default(),
        status: d.status.as_str(),
        badge: badge(d.status),
        attempts: d.attempts,
        error: truncate(&error_full, ERROR_CHARS),
        error_full,
    }
}

pub struct WebhookRow {
    pub url: String,
    pub events: String,
    pub failing: bool,
    pub created: String,
    pub created_by: String,
}

fn webhook_row(w: &WebhookView) -> WebhookRow {
    WebhookRow {
        url: w.webhook.url.clone(),
        events: w.webhook.events.join(", "),
        failing: w.failing,
        created: ts(w.webhook.created_at),
        created_by: w.webhook.created_by.clone(),
    }
}

#[derive(Template)]
#[template(path = "deliveries.html")]
struct ListPage {
    nav: Option<Nav>,
    webhooks: Vec<WebhookRow>,
    rows: Vec<DeliveryRow>,
    total: i64,
    status: String,
    kind: String,
    statuses: [&'static str; 4],
    kinds: [(&'static str, &'static str); 5],
    page: u32,
    pages: u32,
    prev_href: String,
    next_href: String,
}

#[derive(Deserialize, Default)]
struct ListQuery {
    status: Option<String>,
    kind: Option<String>,
    page: Option<u32>,
}

fn filter_of(q: &ListQuery) -> Result<DeliveryFilter, AppError> {
    let clean = |s: &Option<String>| {
        s.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty() && *s != "all")
            .map(String::from)
    };
    let status = match clean(&q.status) {
        Some(s) => Some(DeliveryStatus::parse(&s).ok_or_else(|| {
            AppError::bad(
                "invalid_status",
                "status: use pending, failing, sent, dropped or all",
            )
        })?),
        None => None,
    };
    let kind = match clean(&q.kind) {
        Some(k) if KINDS.iter().any(|(v, _)| *v == k) => Some(k),
        Some(_) => {
            return Err(AppError::bad(
                "invalid_kind",
                "kind: use slack_post, slack_update, slack_dm, teams or webhook",
            ));
        }
        None => None,
    };
    Ok(DeliveryFilter {
        status,
        kind,
        ..DeliveryFilter::default()
    })
}

async fn list(
    State(app): State<AppState>,
    viewer: Viewer,
    Query(q): Query<ListQuery>,
) -> WebResult {
    viewer.admin_only("deliveries", "only admins can see notification deliveries")?;
    let fail = fail(&viewer, "deliveries");
    let mut filter = filter_of(&q).map_err(&fail)?;
    let page = q.page.unwrap_or(1).max(1);
    filter.page = page;
    filter.per_page = PER_PAGE;
    let webhooks = app.list_webhooks(&viewer.user).await.map_err(&fail)?;
    let (deliveries, total) = app
        .list_deliveries(&viewer.user, filter.clone())
        .await
        .map_err(&fail)?;
    let urls: HashMap<String, String> = webhooks
        .iter()
        .map(|w| (w.webhook.id.to_string(), w.webhook.url.clone()))
        .collect();
    let pages = (total.max(0) as u32).div_ceil(PER_PAGE).max(1);
    let status = filter.status.map(|s| s.as_str()).unwrap_or("").to_string();
    let kind = filter.kind.clone().unwrap_or_default();
    let href = |p: u32| {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [("status", status.as_str()), ("kind", kind.as_str())] {
            if !v.is_empty() {
                s.append_pair(k, v);
            }
        }
        s.append_pair("page", &p.to_string());
        format!("/deliveries?{}", s.finish())
    };
    Ok(render(&ListPage {
        nav: viewer.nav("deliveries"),
        webhooks: webhooks.iter().map(webhook_row).collect(),
        rows: deliveries.iter().map(|d| row(d, &urls)).collect(),
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
        status,
        kind,
        statuses: STATUSES,
        kinds: KINDS,
        page,
        pages,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_refuse_unknown_values() {
        let q = |status: &str, kind: &str| ListQuery {
            status: Some(status.into()),
            kind: Some(kind.into()),
            page: None,
        };
        let f = filter_of(&q("all", "")).unwrap();
        assert!(f.status.is_none() && f.kind.is_none());
        let f = filter_of(&q("failing", "webhook")).unwrap();
        assert_eq!(f.status, Some(DeliveryStatus::Failing));
        assert_eq!(f.kind.as_deref(), Some("webhook"));
        assert!(filter_of(&q("nope", "")).is_err());
        assert!(filter_of(&q("", "<script>")).is_err());
    }
}
