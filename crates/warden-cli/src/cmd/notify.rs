//! `warden admin create webhook URL [--events …] [--secret S]`, `warden admin get webhooks`,
//! `warden admin get deliveries [--status failing]`, `warden admin delete webhook ID`.
//!
//! The CLI never sees a webhook secret again after creation: it is printed once, here.

use anyhow::Result;
use reqwest::Method;
use serde_json::{Value, json};

use super::review::urlencode;
use crate::OutputArgs;
use crate::client::Client;
use crate::output::{self, Format, field, print_list};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Events: review.created, review.approved, review.rejected, review.expired,
review.revoked, review.executed, session.started, session.ended (default: all).
Requests are signed per the Standard Webhooks spec (webhook-id, webhook-timestamp,
webhook-signature: v1,<base64 HMAC-SHA256>).

Examples:
  warden admin create webhook https://hooks.example.com/warden --events review.created,review.approved
  warden admin create webhook https://siem.example.com/in --secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
)]
pub struct WebhookArgs {
    /// The endpoint (http:// or https://).
    url: String,
    /// Event types to send (comma-separated); default: all.
    #[arg(long, value_delimiter = ',')]
    events: Vec<String>,
    /// Signing secret `whsec_<base64>`; default: generated and printed once.
    #[arg(long)]
    secret: Option<String>,
    #[command(flatten)]
    out: OutputArgs,
}

pub async fn create_webhook(client: &Client, a: WebhookArgs) -> Result<()> {
    let body = json!({"url": a.url, "events": a.events, "secret": a.secret});
    let v: Value = client
        .call(Method::POST, "/api/webhooks", Some(&body))
        .await?;
    if a.out.format == Format::Json {
        output::print_json(&v);
    } else {
        println!(
            "created webhook {} → {} ({})",
            output::cell(v.get("id")),
            output::cell(v.get("url")),
            output::cell(v.get("events"))
        );
        println!("signing secret: {}", output::cell(v.get("secret")));
        eprintln!("(shown once: store it in the receiver now)");
    }
    Ok(())
}

pub async fn get_webhooks(client: &Client, format: Format) -> Result<()> {
    let v: Value = client.call(Method::GET, "/api/webhooks", None).await?;
    print_list(
        format,
        &v,
        &[
            ("ID", &field("id")),
            ("URL", &field("url")),
            ("EVENTS", &field("events")),
            ("FAILING", &field("failing")),
            ("CREATED BY", &field("created_by")),
            ("CREATED", &field("created_at")),
        ],
    );
    Ok(())
}

pub async fn get_deliveries(client: &Client, status: Option<String>, format: Format) -> Result<()> {
    let mut path = "/api/deliveries?per_page=200".to_string();
    if let Some(s) = status {
        path.push_str(&format!("&status={}", urlencode(&s)));
    }
    let v: Value = client.call(Method::GET, &path, None).await?;
    print_list(
        format,
        &v,
        &[
            ("ID", &field("id")),
            ("EVENT", &field("event_type")),
            ("KIND", &field("kind")),
            ("TARGET", &field("target")),
            ("REVIEW", &field("review_id")),
            ("STATUS", &field("status")),
            ("ATTEMPTS", &field("attempts")),
            ("NEXT ATTEMPT", &|v: &Value| {
                if matches!(
                    v.get("status").and_then(Value::as_str),
                    Some("pending" | "failing")
                ) {
                    output::cell(v.get("next_attempt_at"))
                } else {
                    String::new()
                }
            }),
            ("LAST ERROR", &|v: &Value| {
                output::truncate(&output::cell(v.get("last_error")), 60)
            }),
        ],
    );
    Ok(())
}
