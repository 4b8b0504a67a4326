//! Waiting for a review's outcome: long-polls `GET /api/reviews/{id}/wait` (no hammering), shows
//! a spinner on a terminal (plain lines otherwise), survives gateway restarts by retrying, and
//! leaves the review pending on Ctrl-C with instructions to resume.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use serde_json::Value;

use crate::client::{Client, is_unreachable};
use crate::output::Format;

pub const EXIT_REJECTED: u8 = 3;
pub const EXIT_EXPIRED: u8 = 4;
pub const EXIT_INTERRUPTED: u8 = 130;

/// What a wait ended with.
pub enum Waited {
    Settled(Value),
    Interrupted,
}

struct Indicator {
    bar: Option<ProgressBar>,
}

impl Indicator {
    fn new(message: &str) -> Self {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner())
                    .tick_chars("⣾⣽⣻⢿⡿⣟⣯⣷ "),
            );
            bar.set_message(message.to_string());
            bar.enable_steady_tick(Duration::from_millis(100));
            Indicator { bar: Some(bar) }
        } else {
            eprintln!("{message}");
            Indicator { bar: None }
        }
    }
    fn note(&self, line: &str) {
        match &self.bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }
    fn set(&self, msg: &str) {
        if let Some(b) = &self.bar {
            b.set_message(msg.to_string());
        }
    }
    fn done(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

fn settled(r: &Value) -> bool {
    let status = r.get("status").and_then(Value::as_str).unwrap_or("");
    let jit = r.get("type").and_then(Value::as_str) == Some("jit");
    matches!(status, "REJECTED" | "EXPIRED" | "REVOKED" | "EXECUTED")
        || (jit && status == "APPROVED")
}

pub async fn wait(client: &Client, id: &str, url: &str) -> Result<Waited> {
    let ind = Indicator::new(&format!("Waiting for approval at {url}"));
    let mut last_progress = String::new();
    let mut backoff = Duration::from_millis(500);
    loop {
        let path = format!("/api/reviews/{id}/wait?timeout=25");
        let poll = client.call::<Value>(Method::GET, &path, None);
        let res = tokio::select! {
            r = poll => r,
            _ = tokio::signal::ctrl_c() => {
                ind.done();
                eprintln!("Interrupted: the request stays pending. Resume with: warden review wait {id}   (or warden exec --review {id})");
                return Ok(Waited::Interrupted);
            }
        };
        match res {
            Ok(r) => {
                backoff = Duration::from_millis(500);
                if settled(&r) {
                    ind.done();
                    return Ok(Waited::Settled(r));
                }
                let progress = r
                    .get("progress")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                if progress != last_progress {
                    ind.set(&format!("Waiting for approval at {url} — {progress}"));
                    last_progress = progress;
                }
            }
            Err(e) if is_unreachable(&e) => {
                ind.note(&format!(
                    "gateway unreachable, retrying in {}s…",
                    backoff.as_secs().max(1)
                ));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            Err(e) => {
                ind.done();
                return Err(e);
            }
        }
    }
}

/// Prints a settled review the way `exec` users expect and returns the exit code.
pub fn report(review: &Value, format: Format) -> ExitCode {
    let status = review.get("status").and_then(Value::as_str).unwrap_or("");
    let by = review
        .get("decided_by")
        .and_then(Value::as_str)
        .unwrap_or("someone");
    let reason = review.get("reason").and_then(Value::as_str).unwrap_or("");
    match status {
        "EXECUTED" => match review.get("result") {
            Some(s) if !s.is_null() => print_session(s, format),
            _ => {
                eprintln!("executed (no result recorded)");
                ExitCode::SUCCESS
            }
        },
        "REJECTED" => {
            eprintln!("Rejected by {by}: {reason}");
            ExitCode::from(EXIT_REJECTED)
        }
        "EXPIRED" => {
            eprintln!("Request expired — resubmit (nobody approved it before the timeout)");
            ExitCode::from(EXIT_EXPIRED)
        }
        "REVOKED" => {
            eprintln!("Revoked by {by}: {reason}");
            ExitCode::from(EXIT_REJECTED)
        }
        "APPROVED" => {
            eprintln!(
                "Approved. {}",
                review.get("progress").and_then(Value::as_str).unwrap_or("")
            );
            ExitCode::SUCCESS
        }
        other => {
            eprintln!("review is {other}");
            ExitCode::FAILURE
        }
    }
}

/// Prints an execution's output (or its JSON rows) and returns its exit code.
pub fn print_session(s: &Value, format: Format) -> ExitCode {
    let code = s.get("exit_code").and_then(Value::as_i64).unwrap_or(1);
    if format == Format::Json {
        crate::output::print_json(s.get("rows_json").filter(|v| !v.is_null()).unwrap_or(s));
    } else {
        let out = s.get("output").and_then(Value::as_str).unwrap_or("");
        print!("{out}");
        if !out.is_empty() && !out.ends_with('\n') {
            println!();
        }
        if s.get("output_truncated").and_then(Value::as_bool) == Some(true) {
            eprintln!("(output truncated)");
        }
    }
    ExitCode::from(code.clamp(0, 255) as u8)
}
