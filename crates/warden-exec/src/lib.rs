//! Executors: run one command (SQL script or CLI input) against a connection's target with the
//! connection's credentials, and capture the outcome. This is the seam a future `warden agent`
//! (running inside a private network) takes over: it receives a [`Target`] and an input and
//! returns an [`ExecOutcome`], nothing else.
//!
//! Executors never decide access: by the time `execute` is called, the gateway has approved.
//!
//! Modules: `postgres`, `mysql`, `sqlite` and `command` run one kind of
//! target each; `table` renders result sets (psql's aligned format) and JSON rows; `output`
//! caps the output and adds the trailing marker lines. Exit codes: the program's own for
//! commands; for SQL 0 = success, 1 = a statement failed; for all kinds 2 = could not connect /
//! could not start / misconfigured target, 124 = timeout (killed or cancelled), 126/127 = command
//! not runnable / not found.

use std::time::{Duration, Instant};

use futures::FutureExt;
use warden_core::secret::Secret;
use warden_core::{ConnectionType, ExecOutcome};

mod command;
mod mysql;
mod output;
mod postgres;
pub mod sandbox;
mod sqlite;
mod table;

use output::CappedText;

/// Where and how to run: built by the gateway from a connection and its decrypted secrets.
#[derive(Debug, Clone)]
pub struct Target {
    pub kind: ConnectionType,
    /// `postgres://user:pass@host:port/db`, `mysql://…`, `sqlite:///abs/path.db` (secret: may hold a password).
    pub url: Option<Secret<String>>,
    /// argv for `command` targets.
    pub command: Vec<String>,
    /// Env vars injected into `command` targets (values are secret).
    pub env: Vec<(String, Secret<String>)>,
}

impl Target {
    /// The exact secret values this target holds, to be masked in whatever it prints: every
    /// env value of a command, the URL's password (as written and decoded) and any
    /// `password`-like query parameter.
    pub fn secret_values(&self) -> Vec<String> {
        let mut out: Vec<String> = self.env.iter().map(|(_, v)| v.expose().clone()).collect();
        if let Some(url) = &self.url
            && let Ok(u) = url::Url::parse(url.expose())
        {
            if let Some(p) = u.password() {
                out.push(p.to_string());
                if let Ok(d) = percent_encoding::percent_decode_str(p).decode_utf8() {
                    out.push(d.into_owned());
                }
            }
            for (k, v) in u.query_pairs() {
                if k.to_ascii_lowercase().contains("password") {
                    out.push(v.into_owned());
                }
            }
        }
        out.retain(|s| s.len() >= output::MIN_SECRET_LEN);
        out
    }
}

#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// Output is cut at this many bytes (on a char boundary) and marked truncated.
    pub output_cap: usize,
    /// The command is killed / the query cancelled after this long.
    pub timeout: Duration,
    /// Who `command` targets run as, and where ([`sandbox`]).
    pub isolation: std::sync::Arc<sandbox::Isolation>,
}

impl Default for ExecOptions {
    fn default() -> Self {
        Self {
            output_cap: 1024 * 1024,
            timeout: Duration::from_secs(300),
            isolation: std::sync::Arc::new(sandbox::Isolation::SameUser {
                why: "no isolation was prepared".into(),
                scratch_root: std::env::temp_dir(),
            }),
        }
    }
}

/// What an executor hands back; `execute` turns it into an [`ExecOutcome`].
pub(crate) struct RunResult {
    pub(crate) out: CappedText,
    pub(crate) exit_code: i32,
    pub(crate) rows_json: Option<serde_json::Value>,
    /// A last line added after the (possibly truncated) output, e.g. the timeout message.
    pub(crate) trailer: Option<String>,
}

impl RunResult {
    /// A run that failed before doing anything: `message` is the whole output.
    pub(crate) fn failed(exit_code: i32, message: &str, cap: usize) -> Self {
        let mut out = CappedText::new(cap);
        out.push_str(message);
        if !message.ends_with('\n') {
            out.push_str("\n");
        }
        Self {
            out,
            exit_code,
            rows_json: None,
            trailer: None,
        }
    }
}

/// Runs `input` against `target`. Never panics; every failure becomes a non-zero exit code with
/// the reason in `output`.
pub async fn execute(target: &Target, input: &str, opts: &ExecOptions) -> ExecOutcome {
    let started = Instant::now();
    let run = std::panic::AssertUnwindSafe(dispatch(target, input, opts))
        .catch_unwind()
        .await;
    let run = run.unwrap_or_else(|_| {
        RunResult::failed(
            2,
            "warden: internal error in the executor (see the gateway log)",
            opts.output_cap,
        )
    });
    let (output, truncated) = run.out.finish(run.trailer.as_deref());
    // The second wall: whatever an executor printed, no secret value of the target survives
    // (the command executor already masks its stream before the cap can cut a secret).
    let mut masker = output::Masker::new(&target.secret_values());
    let output = if masker.is_empty() {
        output
    } else {
        masker.mask(&output)
    };
    ExecOutcome {
        exit_code: run.exit_code,
        output,
        truncated,
        duration_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
        rows_json: run.rows_json,
    }
}

/// The database file a `sqlite:` connection URL names, exactly as the SQLite executor reads it
/// (`None` for `sqlite::memory:`), so the gateway checks the very path that will be opened.
pub fn sqlite_file(url: &str) -> Result<Option<std::path::PathBuf>, String> {
    sqlite::parse_url(url).map(|l| (!l.memory).then_some(l.path))
}

async fn dispatch(target: &Target, input: &str, opts: &ExecOptions) -> RunResult {
    let url = target.url.as_ref().map(|u| u.expose().as_str());
    match (target.kind, url) {
        (ConnectionType::Command, _) => {
            let secrets = target.secret_values();
            command::run(&target.command, &target.env, &secrets, input, opts).await
        }
        (_, None) => RunResult::failed(2, "warden: the connection has no URL", opts.output_cap),
        (ConnectionType::Postgres, Some(url)) => postgres::run(url, input, opts).await,
        (ConnectionType::Mysql, Some(url)) => mysql::run(url, input, opts).await,
        (ConnectionType::Sqlite, Some(url)) => sqlite::run(url, input, opts).await,
    }
}
