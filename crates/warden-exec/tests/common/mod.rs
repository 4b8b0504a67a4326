//! Helpers shared by the executor integration tests. The SQL tests run against the real
//! services of the machine; when one is down they FAIL with a message naming it (never skip).
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use warden_core::ConnectionType;
use warden_core::ExecOutcome;
use warden_core::secret::Secret;
use warden_exec::{ExecOptions, Target, execute};

pub const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
pub const MYSQL_URL: &str = "mysql://root@127.0.0.1:3306/test";

/// A name no other test (or concurrent run) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos % 100_000
    )
}

pub fn sql_target(kind: ConnectionType, url: &str) -> Target {
    Target {
        kind,
        url: Some(Secret::new(url.to_string())),
        command: vec![],
        env: vec![],
    }
}

pub fn cmd_target(argv: &[&str], env: &[(&str, &str)]) -> Target {
    Target {
        kind: ConnectionType::Command,
        url: None,
        command: argv.iter().map(|s| s.to_string()).collect(),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), Secret::new(v.to_string())))
            .collect(),
    }
}

/// Options as the gateway builds them, commands isolated as at the gateway's start.
pub fn opts() -> ExecOptions {
    static ISOLATION: std::sync::OnceLock<std::sync::Arc<warden_exec::sandbox::Isolation>> =
        std::sync::OnceLock::new();
    ExecOptions {
        output_cap: 1024 * 1024,
        timeout: Duration::from_secs(60),
        isolation: ISOLATION
            .get_or_init(|| std::sync::Arc::new(warden_exec::sandbox::prepare(None)))
            .clone(),
    }
}

fn require_port(service: &str, port: u16) {
    if let Err(e) =
        std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(3))
    {
        panic!(
            "{service} at 127.0.0.1:{port} is DOWN ({e}): these tests need the real service running"
        );
    }
}

/// Runs against PostgreSQL; panics loudly if the server is unreachable.
pub async fn pg(input: &str) -> ExecOutcome {
    pg_with(PG_URL, input, &opts()).await
}

pub async fn pg_with(url: &str, input: &str, o: &ExecOptions) -> ExecOutcome {
    require_port("PostgreSQL", 5432);
    let out = execute(&sql_target(ConnectionType::Postgres, url), input, o).await;
    assert_ne!(
        out.exit_code, 2,
        "PostgreSQL connection failed (is the service down?):\n{}",
        out.output
    );
    out
}

/// Runs against MariaDB/MySQL; panics loudly if the server is unreachable.
pub async fn my(input: &str) -> ExecOutcome {
    my_with(MYSQL_URL, input, &opts()).await
}

pub async fn my_with(url: &str, input: &str, o: &ExecOptions) -> ExecOutcome {
    require_port("MariaDB/MySQL", 3306);
    let out = execute(&sql_target(ConnectionType::Mysql, url), input, o).await;
    assert_ne!(
        out.exit_code, 2,
        "MySQL connection failed (is the service down?):\n{}",
        out.output
    );
    out
}

pub async fn cmd(argv: &[&str], env: &[(&str, &str)], input: &str, o: &ExecOptions) -> ExecOutcome {
    execute(&cmd_target(argv, env), input, o).await
}
