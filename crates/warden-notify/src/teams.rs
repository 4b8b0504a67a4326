//! Microsoft Teams: Adaptive Cards for an incoming webhook (Workflows), wrapped as
//! `{"type":"message","attachments":[{"contentType":"application/vnd.microsoft.card.adaptive",
//! "content":{…}}]}`. A new review gets a card with the same facts as the Slack message and an
//! `Action.OpenUrl` to the review in the web app (Teams webhooks cannot call back, so approvals
//! happen in Warden); each outcome is posted as a follow-up card.
//!
//! # What it must never do
//! Log the webhook URL (it is a credential), or put a secret in a card.

use serde_json::{Value, json};
use warden_core::duration::format_duration;
use warden_core::text::visible;
use warden_core::{Review, RuleType};

use crate::blocks::{clip, outcome_line};

/// Longest command shown in a card (Teams messages are limited to about 28 KB).
const COMMAND_MAX: usize = 2000;

fn wrap(card: Value) -> Value {
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": card,
        }]
    })
}

fn fact(title: &str, value: String) -> Value {
    json!({"title": title, "value": value})
}

fn facts(r: &Review, connection_type: Option<&str>) -> Vec<Value> {
    let mut f = vec![
        fact("Requester", r.requester.clone()),
        fact(
            "Groups",
            if r.requester_groups.is_empty() {
                "—".into()
            } else {
                r.requester_groups.join(", ")
            },
        ),
        fact(
            "Connection",
            format!("{} ({})", r.connection, connection_type.unwrap_or("?")),
        ),
        fact("Rule", format!("{} ({})", r.rule, r.kind.as_str())),
        fact("Approvers", r.policy.approval_groups.join(", ")),
    ];
    if let Some(d) = r.duration_sec {
        f.push(fact("Duration", format_duration(d)));
    }
    if let Some(reason) = r.request_reason.as_deref().filter(|s| !s.is_empty()) {
        f.push(fact("Reason", visible(reason).into_owned()));
    }
    f
}

/// The card for a new review.
pub fn review_card(r: &Review, connection_type: Option<&str>, review_url: &str) -> Value {
    let what = match r.kind {
        RuleType::Command => "command",
        RuleType::Jit => "access window",
    };
    let mut body = vec![
        json!({"type": "TextBlock", "size": "Medium", "weight": "Bolder", "wrap": true,
               "text": format!("Approval needed: {what} on {}", r.connection)}),
        json!({"type": "FactSet", "facts": facts(r, connection_type)}),
    ];
    if let Some(cmd) = &r.command {
        let shown = clip(&visible(cmd), COMMAND_MAX);
        body.push(
            json!({"type": "TextBlock", "text": shown, "fontType": "Monospace", "wrap": true}),
        );
        if shown.chars().count() < cmd.chars().count() {
            body.push(json!({"type": "TextBlock", "isSubtle": true, "wrap": true,
                "text": format!("Command truncated ({} bytes in full): open the review to read all of it.", cmd.len())}));
        }
    }
    body.push(json!({"type": "TextBlock", "isSubtle": true, "wrap": true, "text": format!("Review {}", r.id)}));
    wrap(json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
        "actions": [{"type": "Action.OpenUrl", "title": "Review in Warden", "url": review_url}],
    }))
}

/// The follow-up card for an outcome.
pub fn outcome_card(r: &Review, connection_type: Option<&str>, review_url: &str) -> Value {
    let line = outcome_line(r).replace('*', "");
    wrap(json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {"type": "TextBlock", "size": "Medium", "weight": "Bolder", "wrap": true,
             "text": format!("{} — request of {} on {}", r.status.as_str(), r.requester, r.connection)},
            {"type": "TextBlock", "wrap": true, "text": line},
            {"type": "FactSet", "facts": facts(r, connection_type)},
            {"type": "TextBlock", "isSubtle": true, "wrap": true, "text": format!("Review {}", r.id)},
        ],
        "actions": [{"type": "Action.OpenUrl", "title": "Open in Warden", "url": review_url}],
    }))
}
