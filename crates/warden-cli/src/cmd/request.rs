//! `warden request CONN --duration 2h` (JIT windows) and `warden access` (your open windows).

use std::process::ExitCode;

use anyhow::Result;
use reqwest::Method;
use serde_json::{Value, json};

use warden_core::ReviewStatus;
use warden_gateway::app::JitResult;

use super::wait::{self, Fetched, Waited};
use crate::OutputArgs;
use crate::client::{Client, Typed};
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
    /// Don't wait for the decision: print the review id (the review as JSON with -o json).
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

/// Requests a window and waits for the decision: the settled review, `None` when no approval
/// is needed, or the exit code to leave with.
pub async fn request_window(
    client: &Client,
    a: &Args,
) -> Result<Result<Option<Fetched>, ExitCode>> {
    client.require_token()?;
    let body = json!({"connection": a.connection, "duration": a.duration, "reason": a.reason});
    let resp: Typed<JitResult> = client
        .typed(Method::POST, "/api/access-requests", Some(&body))
        .await?;
    let review = match resp.value {
        JitResult::NotNeeded { .. } => {
            eprintln!(
                "No approval needed for you on {} ({}).",
                a.connection,
                output::cell(resp.raw.pointer("/reason/kind"))
            );
            return Ok(Ok(None));
        }
        JitResult::Review { review } => Typed {
            raw: resp.raw.get("review").cloned().unwrap_or_default(),
            value: *review,
        },
    };
    if review.value.review.status != ReviewStatus::Pending {
        return Ok(Ok(Some(review)));
    }
    let (id, url) = (review.value.review.id.to_string(), review.value.url.clone());
    if a.no_wait {
        eprintln!("Requested: {url}");
        if a.out.format == output::Format::Json {
            output::print_json(&review.raw);
        } else {
            println!("{id}");
        }
        return Ok(Err(ExitCode::SUCCESS));
    }
    match wait::wait(client, &id, &url).await? {
        Waited::Settled(r) => Ok(Ok(Some(*r))),
        Waited::Interrupted => Ok(Err(ExitCode::from(wait::EXIT_INTERRUPTED))),
    }
}

pub async fn run(client: &Client, a: Args) -> Result<ExitCode> {
    let r = match request_window(client, &a).await? {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(ExitCode::SUCCESS),
        Err(code) => return Ok(code),
    };
    if a.out.format == output::Format::Json {
        output::print_json(&r.raw);
    }
    if r.value.review.status == ReviewStatus::Approved {
        eprintln!(
            "Access window open on {} until {} ({})",
            a.connection,
            output::cell(r.raw.get("window_end")),
            wait::decided_line(&r.value)
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
