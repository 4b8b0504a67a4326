//! `warden exec CONN -i CMD | -f FILE | < stdin`: run a command; when held, wait for approval
//! and print the result of the approved execution.

use std::io::{IsTerminal, Read};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use reqwest::Method;
use serde_json::json;
use warden_core::ReviewStatus;
use warden_gateway::app::ExecResult;

use super::wait::{self, Fetched, Waited};
use crate::OutputArgs;
use crate::client::{Client, Typed};

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  warden exec pg -i 'SELECT count(*) FROM users'
  warden exec pg -f migration.sql
  echo 'kubectl get pods' | warden exec k8s
  warden exec --review 0193…   # resume waiting for a held command

Exit codes: the command's own exit code; 3 rejected; 4 expired; 130 interrupted (request stays pending).")]
pub struct Args {
    /// Connection name.
    #[arg(required_unless_present = "review")]
    connection: Option<String>,
    /// The command (SQL or input for the connection's program).
    #[arg(short = 'i', long = "input", conflicts_with = "file")]
    input: Option<String>,
    /// Read the command from a file.
    #[arg(short = 'f', long = "file")]
    file: Option<std::path::PathBuf>,
    /// Resume waiting for an earlier held command.
    #[arg(long, conflicts_with_all = ["input", "file"])]
    review: Option<String>,
    /// Don't wait: print the review id (the review as JSON with -o json) and exit (0) when
    /// held.
    #[arg(long)]
    no_wait: bool,
    #[command(flatten)]
    out: OutputArgs,
}

pub async fn run(client: &Client, a: Args) -> Result<ExitCode> {
    client.require_token()?;
    if let Some(id) = a.review {
        let r: Fetched = client
            .typed(Method::GET, &format!("/api/reviews/{id}"), None)
            .await?;
        return finish(client, r, a.out.format).await;
    }
    let command = match (a.input, a.file) {
        (Some(i), _) => i,
        (None, Some(f)) => {
            std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?
        }
        (None, None) => {
            if std::io::stdin().is_terminal() {
                bail!("no command: pass -i \"…\", -f FILE, or pipe it on stdin");
            }
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s
        }
    };
    let conn = a.connection.unwrap_or_default();
    let resp: Typed<ExecResult> = client
        .typed(
            Method::POST,
            "/api/exec",
            Some(&json!({"connection": conn, "command": command})),
        )
        .await?;
    match resp.value {
        ExecResult::Executed { session, .. } => Ok(wait::print_session(&session, a.out.format)),
        ExecResult::Pending { review } => {
            let raw = resp.raw.get("review").cloned().unwrap_or_default();
            if a.no_wait {
                eprintln!("Held for approval at {}", review.url);
                if a.out.format == crate::output::Format::Json {
                    crate::output::print_json(&raw);
                } else {
                    println!("{}", review.review.id);
                }
                return Ok(ExitCode::SUCCESS);
            }
            finish(
                client,
                Typed {
                    raw,
                    value: *review,
                },
                a.out.format,
            )
            .await
        }
    }
}

async fn finish(
    client: &Client,
    review: Fetched,
    format: crate::output::Format,
) -> Result<ExitCode> {
    let status = review.value.review.status;
    let settled = if status == ReviewStatus::Pending || status == ReviewStatus::Approved {
        let (id, url) = (review.value.review.id.to_string(), review.value.url.clone());
        match wait::wait(client, &id, &url).await? {
            Waited::Settled(r) => *r,
            Waited::Interrupted => return Ok(ExitCode::from(wait::EXIT_INTERRUPTED)),
        }
    } else {
        review
    };
    Ok(wait::report(&settled, format))
}
