//! `warden request CONN --duration 2h` (JIT windows) and `warden access` (your open windows).

use std::process::ExitCode;

use anyhow::Result;
use reqwest::Method;
use serde_json::{Value, json};

use super::wait::{self, Waited};
use crate::OutputArgs;
use crate::client::Client;
use crate::output::{self, field, print_list};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Connection name.
    pub connection: String,
    /// Window length, e.g. 30m, 2h (at most the rule's max duration).
    #[arg(long)]
    pub duration: String,
    /// Why you need access (required by some rules).
    #[arg(long)]
    pub reason: Option<String>,
    /// Don't wait for the decision.
    #[arg(long)]
    pub no_wait: bool,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(clap::Args, Debug)]
pub struct AccessArgs {
    #[command(flatten)]
    pub out: OutputArgs,
}

/// Requests a window and waits for the decision; returns the settled review (or an exit code).
pub async fn request_window(client: &Client, a: &Args) -> Result<Result<Value, ExitCode>> {
    client.require_token()?;
    let body = json!({"connection": a.connection, "duration": a.duration, "reason": a.reason});
    let resp: Value = client
        .call(Method::POST, "/api/access-requests", Some(&body))
        .await?;
    if resp.get("status").and_then(Value::as_str) == Some("not_needed") {
        eprintln!(
            "No approval needed for you on {} ({}).",
            a.connection,
            output::cell(resp.pointer("/reason/kind"))
        );
        return Ok(Ok(Value::Null));
    }
    let review = resp.get("review").cloned().unwrap_or(Value::Null);
    let id = review
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let url = review
        .get("url")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if review.get("status").and_then(Value::as_str) != Some("PENDING") {
        return Ok(Ok(review));
    }
    if a.no_wait {
        eprintln!("Requested: {url}");
        println!("{id}");
        return Ok(Err(ExitCode::SUCCESS));
    }
    match wait::wait(client, &id, &url).await? {
        Waited::Settled(r) => Ok(Ok(r)),
        Waited::Interrupted => Ok(Err(ExitCode::from(wait::EXIT_INTERRUPTED))),
    }
}

pub async fn run(client: &Client, a: Args) -> Result<ExitCode> {
    let r = match request_window(client, &a).await? {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    if r.is_null() {
        return Ok(ExitCode::SUCCESS);
    }
    if a.out.format == output::Format::Json {
        output::print_json(&r);
    }
    if r.get("status").and_then(Value::as_str) == Some("APPROVED") {
        eprintln!(
            "Access window open on {} until {}",
            a.connection,
            output::cell(r.get("window_end"))
        );
        return Ok(ExitCode::SUCCESS);
    }
    Ok(wait::report(&r, a.out.format))
}

pub async fn access(client: &Client, a: AccessArgs) -> Result<ExitCode> {
    client.require_token()?;
    let items: Value = client.call(Method::GET, "/api/access", None).await?;
    print_list(
        a.out.format,
        &items,
        &[
            ("REVIEW", &field("id")),
            ("CONNECTION", &field("connection")),
            ("UNTIL", &field("window_end")),
            ("TIME LEFT", &|v: &Value| {
                let end = v.get("window_end").and_then(Value::as_str).and_then(|s| {
                    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                        .ok()
                });
                end.map(|e| {
                    warden_core::duration::format_duration(
                        (e - time::OffsetDateTime::now_utc()).whole_seconds(),
                    )
                })
                .unwrap_or_default()
            }),
        ],
    );
    Ok(ExitCode::SUCCESS)
}
