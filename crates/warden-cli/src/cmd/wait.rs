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
use warden_core::review::Outcome;
use warden_core::{ReviewStatus, RuleType, Session};
use warden_gateway::app::ReviewView;

use crate::client::{Client, Typed, is_unreachable};
use crate::output::Format;

/// A review as the gateway sent it.
pub type Fetched = Typed<ReviewView>;

pub const EXIT_REJECTED: u8 = 3;
pub const EXIT_EXPIRED: u8 = 4;
pub const EXIT_INTERRUPTED: u8 = 130;

/// What a wait ended with.
pub enum Waited {
    Settled(Box<Fetched>),
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

/// Nothing more will happen that the requester waits for: a command ran or never will, a
/// window opened or never will.
pub fn settled(r: &ReviewView) -> bool {
    let r = &r.review;
    r.status.is_terminal() || (r.kind == RuleType::Jit && r.status == ReviewStatus::Approved)
}

pub async fn wait(client: &Client, id: &str, url: &str) -> Result<Waited> {
    let ind = Indicator::new(&format!("Waiting for approval at {url}"));
    let mut last_progress = String::new();
    let mut backoff = Duration::from_millis(500);
    loop {
        let path = format!("/api/reviews/{id}/wait?timeout=25");
        let poll = client.typed::<ReviewView>(Method::GET, &path, None);
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
                if settled(&r.value) {
                    ind.done();
                    return Ok(Waited::Settled(Box::new(r)));
                }
                let progress = r.value.progress.clone();
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

/// Who decided a review, as one line: "approved by a, b", "force-approved by sre: outage".
pub fn decided_line(v: &ReviewView) -> String {
    let r = &v.review;
    let by = r.decided_by.as_deref().unwrap_or("someone");
    let reason = r.reason.as_deref().map(warden_core::text::visible);
    let approvers = || {
        r.approvals
            .iter()
            .map(|a| a.approver.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match v.outcome {
        Outcome::Pending => format!("pending ({})", v.progress),
        Outcome::Approved => format!("approved by {}", approvers()),
        Outcome::AutoApproved => "auto-approved (an admin's own request)".into(),
        Outcome::ForceApproved => format!("force-approved by {by}: {}", reason.unwrap_or_default()),
        Outcome::Rejected => format!("rejected by {by}: {}", reason.unwrap_or_default()),
        Outcome::Withdrawn => format!("withdrawn ({})", reason.unwrap_or_default()),
        Outcome::Expired => "expired: nobody approved it before the timeout — resubmit".into(),
    }
}

/// Prints a settled review the way `exec` users expect and returns the exit code.
pub fn report(f: &Fetched, format: Format) -> ExitCode {
    let v = &f.value;
    let r = &v.review;
    let by = r.decided_by.as_deref().unwrap_or("someone");
    let reason = r
        .reason
        .as_deref()
        .map(warden_core::text::visible)
        .unwrap_or_default();
    match r.status {
        ReviewStatus::Executed => match &v.result {
            Some(s) => {
                eprintln!("Ran: {}", decided_line(v));
                print_session(s, format)
            }
            None => {
                eprintln!("{} (no result recorded)", decided_line(v));
                ExitCode::SUCCESS
            }
        },
        ReviewStatus::Rejected => {
            eprintln!("{}", capitalised(&decided_line(v)));
            ExitCode::from(EXIT_REJECTED)
        }
        ReviewStatus::Expired => {
            eprintln!("Request expired — resubmit (nobody approved it before the timeout)");
            ExitCode::from(EXIT_EXPIRED)
        }
        ReviewStatus::Revoked => {
            eprintln!("Revoked by {by}: {reason}");
            ExitCode::from(EXIT_REJECTED)
        }
        ReviewStatus::Approved => {
            eprintln!("{}. {}", capitalised(&decided_line(v)), v.progress);
            ExitCode::SUCCESS
        }
        ReviewStatus::Pending => {
            eprintln!("review is PENDING ({})", v.progress);
            ExitCode::FAILURE
        }
    }
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// Prints an execution's output (or its JSON rows) and returns its exit code.
pub fn print_session(s: &Session, format: Format) -> ExitCode {
    let code = s.exit_code.unwrap_or(1);
    if format == Format::Json {
        match &s.rows_json {
            Some(rows) if !rows.is_null() => crate::output::print_json(rows),
            _ => crate::output::print_json(&serde_json::to_value(s).unwrap_or(Value::Null)),
        }
    } else {
        let out = s.output.as_deref().unwrap_or("");
        print!("{out}");
        if !out.is_empty() && !out.ends_with('\n') {
            println!();
        }
        if s.output_truncated {
            eprintln!("(output truncated)");
        }
    }
    ExitCode::from(code.clamp(0, 255) as u8)
}
