//! Executors: run one command (SQL script or CLI input) against a connection's target with the
//! connection's credentials, and capture the outcome. This is the seam a future `warden agent`
//! (running inside a private network) takes over: it receives a [`Target`] and an input and
//! returns an [`ExecOutcome`], nothing else.
//!
//! Executors never decide access: by the time `execute` is called, the gateway has approved.

use std::time::Duration;
use warden_core::secret::Secret;
use warden_core::{ConnectionType, ExecOutcome};

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

#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// Output is cut at this many bytes (on a char boundary) and marked truncated.
    pub output_cap: usize,
    /// The command is killed / the query cancelled after this long.
    pub timeout: Duration,
}

impl Default for ExecOptions {
    fn default() -> Self {
        Self { output_cap: 1024 * 1024, timeout: Duration::from_secs(300) }
    }
}

/// Runs `input` against `target`. Never panics; every failure becomes a non-zero exit code with
/// the reason in `output`.
pub async fn execute(target: &Target, input: &str, opts: &ExecOptions) -> ExecOutcome {
    let _ = (target, input, opts);
    todo!("implemented by the executor work")
}
