//! `warden exec CONN -i CMD | -f FILE | < stdin`: run a command; when held, wait for approval
//! and print the result of the approved execution.

use std::io::{IsTerminal, Read};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use reqwest::Method;
use serde_json::{Value, json};

use super::wait::{self, Waited};
use crate::OutputArgs;
use crate::client::Client;

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
    /// Don't wait: print the review id and exit (0) when held.
    #[arg(long)]
    no_wait: bool,
    #[command(flatten)]
    out: OutputArgs,
}

pub async fn run(client: &Client, a: Args) -> Result<ExitCode> {
    client.require_token()?;
    if let Some(id) = a.review {
        let r: Value = client
            .call(Method::GET, &format!("/api/reviews/{id}"), None)
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
    let resp: Value = client
        .call(
            Method::POST,
            "/api/exec",
            Some(&json!({"connection": conn, "command": command})),
        )
        .await?;
    match resp.get("status").and_then(Value::as_str) {
        Some("executed") => Ok(wait::print_session(
            resp.get("session").unwrap_or(&Value::Null),
            a.out.format,
        )),
        Some("pending") => {
            let review = resp.get("review").cloned().unwrap_or(Value::Null);
            if a.no_wait {
                let id = review.get("id").and_then(Value::as_str).unwrap_or("");
                eprintln!(
                    "Held for approval at {}",
                    review.get("url").and_then(Value::as_str).unwrap_or("")
                );
                println!("{id}");
                return Ok(ExitCode::SUCCESS);
            }
            finish(client, review, a.out.format).await
        }
        other => bail!("unexpected answer from the gateway: {other:?}"),
    }
}

async fn finish(client: &Client, review: Value, format: crate::output::Format) -> Result<ExitCode> {
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
    let status = review.get("status").and_then(Value::as_str).unwrap_or("");
    let settled = if status == "PENDING" || status == "APPROVED" {
        match wait::wait(client, &id, &url).await? {
            Waited::Settled(r) => r,
            Waited::Interrupted => return Ok(ExitCode::from(wait::EXIT_INTERRUPTED)),
        }
    } else {
        review
    };
    Ok(wait::report(&settled, format))
}
