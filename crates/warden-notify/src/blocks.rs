//! Block Kit builders: the review message posted to a connection's channel (and re-rendered
//! in place on every decision), the reject-reason modal, and the requester's DM.
//!
//! Everything user-supplied is made visible first (`warden_core::text::visible`: control,
//! bidi and invisible code points escaped, so the approver reads what runs), then escaped for
//! Slack's mrkdwn (`&`, `<`, `>`), so a command or a
//! reason can never ping `@channel` or forge a link. Texts are cut on character boundaries to
//! stay inside Slack's limits (3000 characters per section).
//!
//! # What it must never do
//! Put a secret in a message, or drop the link to the full request when it had to cut the text.

use serde_json::{Value, json};
use warden_core::duration::format_duration;
use warden_core::text::visible;
use warden_core::{Review, ReviewStatus, RuleType};

use crate::slack::REJECT_MODAL;
use crate::slack::{APPROVE_ACTION, OPEN_ACTION, REASON_ACTION, REASON_BLOCK, REJECT_ACTION};

/// Slack's limit on a section's text.
pub const SECTION_TEXT_MAX: usize = 3000;
/// Slack's limit on one field of a section.
const FIELD_MAX: usize = 2000;
/// Button labels (Slack allows 75).
const BUTTON_MAX: usize = 75;
/// Header text (Slack allows 150).
const HEADER_MAX: usize = 150;

/// Escapes text for mrkdwn: hidden code points made visible, `&`, `<` and `>` become entities.
pub fn escape(s: &str) -> String {
    visible(s)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// At most `max` characters, with `…` when cut.
pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// The command as a mrkdwn code block of at most `max` characters (fences included), escaped,
/// never cut inside an entity. Returns the block and whether the command was cut.
pub fn code_block(command: &str, max: usize) -> (String, bool) {
    // Triple backticks inside the command would close the block early: break them with a
    // zero-width space (display only; the approved bytes are stored, not this text).
    let command = visible(command).replace("```", "`\u{200b}`\u{200b}`");
    let budget = max.saturating_sub(8); // "```\n" + "\n```"
    let mut body = String::new();
    let mut used = 0usize;
    let mut cut = false;
    for c in command.chars() {
        let piece = match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            c => c.to_string(),
        };
        let n = piece.chars().count();
        if used + n > budget.saturating_sub(1) {
            cut = true;
            break;
        }
        used += n;
        body.push_str(&piece);
    }
    if cut {
        body.push('…');
    }
    (format!("```\n{body}\n```"), cut)
}

/// Facts about the review's context that the review itself does not carry.
#[derive(Debug, Clone, Default)]
pub struct MessageContext {
    /// `{public_url}/reviews/{id}`.
    pub review_url: String,
    /// The requester's Slack user id, when linked (shown as a mention: their name).
    pub requester_slack: Option<String>,
    /// `postgres`, `command`, …
    pub connection_type: Option<String>,
}

fn mrkdwn(text: String) -> Value {
    json!({"type": "mrkdwn", "text": clip(&text, FIELD_MAX)})
}

/// One line saying where the review stands ("Approved by …", "Rejected by X: reason", …).
pub fn outcome_line(r: &Review) -> String {
    let who = |approvals: &[warden_core::Approval]| {
        approvals
            .iter()
            .filter(|a| !a.auto)
            .map(|a| {
                if a.group.is_empty() {
                    a.approver.clone()
                } else {
                    format!("{} ({})", a.approver, a.group)
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let reason = visible(r.reason.as_deref().unwrap_or("")).into_owned();
    let by = r.decided_by.as_deref().unwrap_or("?");
    let progress = r.progress();
    let count = progress.split(':').next().unwrap_or_default().to_string();
    match r.status {
        ReviewStatus::Pending if r.approvals.is_empty() => {
            format!("⏳ Waiting for approval ({progress})")
        }
        ReviewStatus::Pending => format!(
            "⏳ Approved by {count} so far — {} ({progress})",
            who(&r.approvals)
        ),
        ReviewStatus::Approved if r.forced => {
            format!("⚠️ *Force-approved* by {}: {}", who(&r.approvals), reason)
        }
        ReviewStatus::Approved => format!("✅ *Approved* by {count} — {}", who(&r.approvals)),
        ReviewStatus::Rejected if r.is_withdrawn() => match reason.strip_prefix("withdrawn: ") {
            Some(why) => format!("↩️ *Withdrawn*: {why}"),
            None => format!("↩️ *Withdrawn* by {by}"),
        },
        ReviewStatus::Rejected => format!("❌ *Rejected* by {by}: {reason}"),
        ReviewStatus::Expired => {
            "⌛ *Expired*: nobody decided in time; the requester must resubmit".into()
        }
        ReviewStatus::Revoked => format!("⛔ *Revoked* by {by}: {reason}"),
        ReviewStatus::Executed if r.kind == RuleType::Jit => format!(
            "🏁 *Window ended* (approved by {count} — {})",
            who(&r.approvals)
        ),
        ReviewStatus::Executed => format!(
            "▶️ *Executed* (approved by {count} — {})",
            who(&r.approvals)
        ),
    }
}

/// The review message: `(fallback text, blocks)`. Buttons are shown while the review is
/// pending: one Approve per approval group (action id `warden_approve:{id}:{group}`) and one
/// Reject (`warden_reject:{id}`); afterwards the outcome replaces them.
pub fn review_message(r: &Review, ctx: &MessageContext) -> (String, Value) {
    let requester = match &ctx.requester_slack {
        Some(uid) => format!("<@{}> ({})", escape(uid), escape(&r.requester)),
        None => escape(&r.requester),
    };
    let what = match r.kind {
        RuleType::Command => "command",
        RuleType::Jit => "access window",
    };
    let header = clip(
        &format!("Approval needed: {what} on {}", r.connection),
        HEADER_MAX,
    );
    let mut fields = vec![
        mrkdwn(format!("*Requester*\n{requester}")),
        mrkdwn(format!(
            "*Groups*\n{}",
            if r.requester_groups.is_empty() {
                "—".to_string()
            } else {
                escape(&r.requester_groups.join(", "))
            }
        )),
        mrkdwn(format!(
            "*Connection*\n{} ({})",
            escape(&r.connection),
            escape(ctx.connection_type.as_deref().unwrap_or("?"))
        )),
        mrkdwn(format!("*Rule*\n{} ({})", escape(&r.rule), r.kind.as_str())),
        mrkdwn(format!(
            "*Approvers*\n{}",
            escape(&r.policy.approval_groups.join(", "))
        )),
    ];
    if let Some(d) = r.duration_sec {
        fields.push(mrkdwn(format!("*Duration*\n{}", format_duration(d))));
    }
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": header, "emoji": true}}),
        json!({"type": "section", "fields": fields}),
    ];
    if let Some(reason) = r.request_reason.as_deref().filter(|s| !s.is_empty()) {
        blocks.push(
            json!({"type": "section", "text": mrkdwn(format!("*Reason*\n{}", escape(reason)))}),
        );
    }
    let mut truncated = false;
    if let Some(cmd) = &r.command {
        let (code, cut) = code_block(cmd, SECTION_TEXT_MAX);
        truncated = cut;
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": code}}));
    }
    let link = format!("<{}|Open in Warden>", ctx.review_url);
    let note = if truncated {
        let total = r.command.as_deref().map(str::len).unwrap_or(0);
        format!(
            "Command truncated ({total} bytes in full): read all of it before approving — {link}"
        )
    } else {
        link
    };
    blocks.push(json!({"type": "context", "elements": [
        {"type": "mrkdwn", "text": format!("{note} · review `{}`", r.id)}
    ]}));
    blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": clip(&outcome_line(r), SECTION_TEXT_MAX)}}));
    if r.status == ReviewStatus::Pending {
        let mut elements = Vec::new();
        let groups = &r.policy.approval_groups;
        for g in groups {
            let label = if groups.len() == 1 {
                "Approve".to_string()
            } else {
                clip(&format!("Approve as {g}"), BUTTON_MAX)
            };
            elements.push(json!({
                "type": "button", "style": "primary",
                "text": {"type": "plain_text", "text": label},
                "action_id": format!("{APPROVE_ACTION}:{}:{g}", r.id),
                "value": r.id.to_string(),
            }));
        }
        elements.push(json!({
            "type": "button", "style": "danger",
            "text": {"type": "plain_text", "text": "Reject"},
            "action_id": format!("{REJECT_ACTION}:{}", r.id),
            "value": r.id.to_string(),
        }));
        elements.push(json!({
            "type": "button",
            "text": {"type": "plain_text", "text": "Open in Warden"},
            "action_id": format!("{OPEN_ACTION}:{}", r.id),
            "url": ctx.review_url,
        }));
        blocks.push(json!({"type": "actions", "block_id": format!("warden_review:{}", r.id), "elements": elements}));
    }
    let text = format!(
        "{} requests {what} on {}: {}",
        r.requester,
        r.connection,
        clip(&outcome_line(r).replace('*', ""), 200)
    );
    (text, Value::Array(blocks))
}

/// The modal asking for a rejection reason (`private_metadata` carries the review id).
pub fn reject_modal(r: &Review) -> Value {
    let summary = match &r.command {
        Some(c) => code_block(c, 1500).0,
        None => format!(
            "{} on {} for {}",
            escape(&r.requester),
            escape(&r.connection),
            r.duration_sec.map(format_duration).unwrap_or_default()
        ),
    };
    json!({
        "type": "modal",
        "callback_id": REJECT_MODAL,
        "private_metadata": r.id.to_string(),
        "title": {"type": "plain_text", "text": "Reject request"},
        "submit": {"type": "plain_text", "text": "Reject"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": format!("Reject the request of {} on {}?\n{summary}", escape(&r.requester), escape(&r.connection))}},
            {"type": "input", "block_id": REASON_BLOCK,
             "label": {"type": "plain_text", "text": "Reason (shown to the requester)"},
             "element": {"type": "plain_text_input", "action_id": REASON_ACTION, "multiline": true, "max_length": 2000}}
        ]
    })
}

/// The requester's DM after a decision: `(text, blocks)`.
pub fn decision_dm(r: &Review, review_url: &str) -> (String, Value) {
    let what = match &r.command {
        Some(c) => {
            format!("your command on {}", r.connection)
                + &format!(" `{}`", clip(&c.replace('`', "'").replace('\n', " "), 80))
        }
        None => format!(
            "your access window on {} ({})",
            r.connection,
            r.duration_sec.map(format_duration).unwrap_or_default()
        ),
    };
    let line = outcome_line(r);
    let text = format!("{}: {}", escape(&what), line);
    let blocks = json!([
        {"type": "section", "text": {"type": "mrkdwn", "text": clip(&format!("{text}\n<{review_url}|Open in Warden>"), SECTION_TEXT_MAX)}}
    ]);
    (text.replace('*', ""), blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_block_escapes_and_truncates() {
        let (b, cut) = code_block("SELECT 1 <> 2 && ```x```", 3000);
        assert!(!cut);
        assert!(b.starts_with("```\n") && b.ends_with("\n```"));
        assert!(b.contains("&lt;&gt;") && b.contains("&amp;&amp;"));
        assert_eq!(b.matches("```").count(), 2, "inner fences are broken: {b}");
        let long = "<".repeat(5000);
        let (b, cut) = code_block(&long, 3000);
        assert!(cut);
        assert!(b.chars().count() <= 3000, "{}", b.chars().count());
        assert!(
            !b.contains("&l\n") && !b.contains("&lt\n"),
            "never cut inside an entity"
        );
        let (b, cut) = code_block(&"é".repeat(4000), 3000);
        assert!(cut && b.chars().count() <= 3000);
    }

    /// Issue 15: an approver in Slack/Teams reads what runs.
    #[test]
    fn hidden_code_points_are_shown_escaped() {
        let cmd = "SELECT 1; -- \u{202e}\u{2066}\x1b[2K\rDROP TABLE users;\u{200b}";
        let (b, _) = code_block(cmd, 3000);
        assert!(
            b.contains("\\u{202e}\\u{2066}\\x1b[2K\\x0dDROP TABLE users;\\u{200b}"),
            "{b}"
        );
        // Only Warden's own fence breakers remain invisible.
        let (b, _) = code_block("\u{200b}", 3000);
        assert!(!b.contains('\u{200b}'), "{b}");
        assert_eq!(escape("ok\u{202e} <x>"), "ok\\u{202e} &lt;x&gt;");
    }
}
