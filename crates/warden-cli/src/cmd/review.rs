//! `warden review …`: what approvers and requesters do with reviews.
//!
//! # What it must never do
//! Show a command, reason or output raw: text from the gateway is printed through
//! `warden_core::text::visible` (via `output::cell` or [`shown`]), so the approver reads the
//! bytes that will run, never what terminal escapes or bidi overrides make of them.

use std::process::ExitCode;

use anyhow::Result;
use reqwest::Method;
use serde_json::{Value, json};

use warden_core::review::Outcome;

use super::wait::{self, Fetched, Waited};
use crate::OutputArgs;
use crate::client::Client;
use crate::output::{self, Format, field, print_list, truncate};

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Reviews you can see (default: pending).
    List {
        /// pending, approved, rejected, expired, revoked, executed or all.
        #[arg(long, default_value = "pending")]
        status: String,
        #[arg(long)]
        connection: Option<String>,
        #[arg(long)]
        requester: Option<String>,
        #[arg(long, default_value_t = 1)]
        page: u32,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// One review with its command, approvals, result and timeline.
    Show {
        id: String,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Approve (with --force and a reason to break glass; --duration to shorten a JIT window).
    Approve {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        force: bool,
        /// JIT: grant a shorter window than requested (e.g. 30m).
        #[arg(long)]
        duration: Option<String>,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Reject (a reason is required and shown to the requester). Approvers of the review may;
    /// so may an admin, on any pending request (audited as an admin's rejection).
    Reject {
        id: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Withdraw your own pending request.
    Withdraw {
        id: String,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// End an approved JIT window now (approvers and admins).
    Revoke {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Wait for a review's outcome (and print the command's result).
    Wait {
        id: String,
        #[command(flatten)]
        out: OutputArgs,
    },
}

type BoxedColumn = (&'static str, Box<dyn Fn(&Value) -> String>);

pub fn review_columns() -> Vec<BoxedColumn> {
    vec![
        ("ID", Box::new(field("id"))),
        ("TYPE", Box::new(field("type"))),
        (
            "STATUS",
            Box::new(|v: &Value| {
                let s = output::cell(v.get("status"));
                if v.get("forced").and_then(Value::as_bool) == Some(true) {
                    format!("{s} (forced)")
                } else {
                    s
                }
            }),
        ),
        ("CONNECTION", Box::new(field("connection"))),
        ("REQUESTER", Box::new(field("requester"))),
        (
            "COMMAND / WINDOW",
            Box::new(|v: &Value| match v.get("command").and_then(Value::as_str) {
                Some(c) => truncate(c, 48),
                None => v
                    .get("duration_sec")
                    .and_then(Value::as_i64)
                    .map(warden_core::duration::format_duration)
                    .unwrap_or_default(),
            }),
        ),
        ("APPROVALS", Box::new(field("progress"))),
        ("CREATED", Box::new(field("created_at"))),
    ]
}

pub fn print_reviews(format: Format, items: &Value) {
    let cols = review_columns();
    let refs: Vec<output::Column<'_>> = cols.iter().map(|(h, f)| (*h, f.as_ref())).collect();
    print_list(format, items, &refs);
}

fn print_review(client_base: &str, f: &Fetched, timeline: Option<&Value>, format: Format) {
    let r = &f.raw;
    if format == Format::Json {
        let mut v = r.clone();
        if let (Some(obj), Some(t)) = (v.as_object_mut(), timeline) {
            obj.insert("timeline".into(), t.clone());
        }
        output::print_json(&v);
        return;
    }
    let g = |k: &str| output::cell(r.get(k));
    println!(
        "Review {}  [{}]{}",
        g("id"),
        g("status"),
        if r.get("forced").and_then(Value::as_bool) == Some(true) {
            "  FORCED"
        } else {
            ""
        }
    );
    println!("  outcome:     {}", wait::decided_line(&f.value));
    println!("  type:        {}", g("type"));
    println!("  connection:  {}", g("connection"));
    println!(
        "  requester:   {} (groups: {})",
        g("requester"),
        g("requester_groups")
    );
    println!("  rule:        {}", g("rule"));
    println!("  approvals:   {}", g("progress"));
    for a in r
        .get("approvals")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let tag = if a.get("forced").and_then(Value::as_bool) == Some(true) {
            " FORCED"
        } else if a.get("auto").and_then(Value::as_bool) == Some(true) {
            " auto"
        } else {
            ""
        };
        println!(
            "    ✓ {} ({}) at {}{}{}",
            output::cell(a.get("approver")),
            output::cell(a.get("group")),
            output::cell(a.get("at")),
            tag,
            a.get("reason")
                .and_then(Value::as_str)
                .map(|r| format!(" — {}", shown(r)))
                .unwrap_or_default()
        );
    }
    if let Some(d) = r.get("duration_sec").and_then(Value::as_i64) {
        println!(
            "  window:      {}{}",
            warden_core::duration::format_duration(d),
            r.get("window_end")
                .and_then(Value::as_str)
                .map(|e| format!(" (until {e})"))
                .unwrap_or_default()
        );
    }
    if let Some(reason) = r.get("request_reason").and_then(Value::as_str) {
        println!("  justification: {}", shown(reason));
    }
    if let Some(by) = r.get("decided_by").and_then(Value::as_str) {
        println!(
            "  decided by:  {} at {}{}",
            shown(by),
            g("decided_at"),
            r.get("reason")
                .and_then(Value::as_str)
                .map(|x| format!(" — {}", shown(x)))
                .unwrap_or_default()
        );
    }
    println!(
        "  created:     {}   expires: {}",
        g("created_at"),
        g("expires_at")
    );
    println!(
        "  url:         {}",
        shown(r.get("url").and_then(Value::as_str).unwrap_or(client_base))
    );
    if let Some(c) = r.get("command").and_then(Value::as_str) {
        println!("  command (sha256 {}):", g("command_sha256"));
        for line in c.strip_suffix('\n').unwrap_or(c).split('\n') {
            println!("    {}", shown(line));
        }
    }
    if let Some(s) = r.get("result").filter(|s| !s.is_null()) {
        println!(
            "  result: exit code {} in {} ms{}",
            output::cell(s.get("exit_code")),
            output::cell(s.get("duration_ms")),
            if s.get("output_truncated").and_then(Value::as_bool) == Some(true) {
                " (output truncated)"
            } else {
                ""
            }
        );
        for line in s
            .get("output")
            .and_then(Value::as_str)
            .map(|o| o.strip_suffix('\n').unwrap_or(o))
            .unwrap_or("")
            .split('\n')
        {
            println!("    {}", shown(line));
        }
    }
    let id = f.value.review.id;
    let may: Vec<String> = f
        .value
        .actions
        .names()
        .into_iter()
        .map(|a| match a {
            "force" => format!("force (warden review approve {id} --force --reason …)"),
            "reject" | "revoke" => format!("{a} (warden review {a} {id} --reason …)"),
            a => format!("{a} (warden review {a} {id})"),
        })
        .collect();
    if !may.is_empty() {
        println!("  you may:     {}", may.join(", "));
    }
    if let Some(t) = timeline.and_then(Value::as_array) {
        println!("  timeline:");
        for e in t {
            let ev = e.get("event").cloned().unwrap_or(Value::Null);
            println!(
                "    #{} {} {} {}",
                output::cell(e.get("seq")),
                output::cell(e.get("at")),
                output::cell(e.get("actor")),
                output::cell(ev.get("kind"))
            );
        }
    }
}

pub async fn run(client: &Client, c: Command) -> Result<ExitCode> {
    client.require_token()?;
    match c {
        Command::List {
            status,
            connection,
            requester,
            page,
            out,
        } => {
            let mut q = format!("/api/reviews?status={}&page={page}", urlencode(&status));
            if let Some(c) = connection {
                q.push_str(&format!("&connection={}", urlencode(&c)));
            }
            if let Some(r) = requester {
                q.push_str(&format!("&requester={}", urlencode(&r)));
            }
            let items: Value = client.call(Method::GET, &q, None).await?;
            print_reviews(out.format, &items);
        }
        Command::Show { id, out } => {
            let r: Fetched = client
                .typed(Method::GET, &format!("/api/reviews/{id}"), None)
                .await?;
            let t: Value = client
                .call(Method::GET, &format!("/api/reviews/{id}/timeline"), None)
                .await?;
            print_review(&client.base, &r, Some(&t), out.format);
        }
        Command::Approve {
            id,
            reason,
            force,
            duration,
            out,
        } => {
            let body = json!({"reason": reason, "force": force, "duration": duration});
            let r: Fetched = client
                .typed(
                    Method::PUT,
                    &format!("/api/reviews/{id}/approve"),
                    Some(&body),
                )
                .await?;
            decided(&r, "approved", out.format);
        }
        Command::Reject { id, reason, out } => {
            let r: Fetched = client
                .typed(
                    Method::PUT,
                    &format!("/api/reviews/{id}/reject"),
                    Some(&json!({"reason": reason})),
                )
                .await?;
            decided(&r, "rejected", out.format);
        }
        Command::Withdraw { id, out } => {
            let r: Fetched = client
                .typed(Method::PUT, &format!("/api/reviews/{id}/withdraw"), None)
                .await?;
            decided(&r, "withdrawn", out.format);
        }
        Command::Revoke { id, reason, out } => {
            let r: Fetched = client
                .typed(
                    Method::PUT,
                    &format!("/api/reviews/{id}/revoke"),
                    Some(&json!({"reason": reason})),
                )
                .await?;
            decided(&r, "revoked", out.format);
        }
        Command::Wait { id, out } => {
            let r: Fetched = client
                .typed(Method::GET, &format!("/api/reviews/{id}"), None)
                .await?;
            let settled = if wait::settled(&r.value) {
                r
            } else {
                let url = r.value.url.clone();
                match wait::wait(client, &id, &url).await? {
                    Waited::Settled(r) => *r,
                    Waited::Interrupted => return Ok(ExitCode::from(wait::EXIT_INTERRUPTED)),
                }
            };
            return Ok(wait::report(&settled, out.format));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn decided(r: &Fetched, verb: &str, format: Format) {
    if format == Format::Json {
        output::print_json(&r.raw);
    } else {
        let v = &r.value;
        let how = if v.outcome == Outcome::Pending {
            format!("({})", v.progress)
        } else {
            format!("— {}", wait::decided_line(v))
        };
        println!(
            "Review {} {verb}: now {} {how}",
            v.review.id,
            v.review.status.as_str()
        );
    }
}

/// Server-supplied text as it may reach a terminal (see the module doc).
pub fn shown(s: &str) -> std::borrow::Cow<'_, str> {
    warden_core::text::visible(s)
}

pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
