//! `warden connect CONN [--duration 2h]`: optionally request a JIT window (and wait for it),
//! then open a local PostgreSQL listener that tunnels to the gateway's proxy logged in as you,
//! so `psql -h 127.0.0.1 -p 5433 CONN` works without typing a token.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use reqwest::Method;
use serde_json::Value;
use tokio::net::TcpListener;
use warden_core::secret::Secret;
use warden_pgwire::UpstreamTls;

use super::request;
use crate::OutputArgs;
use crate::client::Client;
use crate::output::Format;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  warden connect prod-db                       # then: psql -h 127.0.0.1 -p 5433 prod-db
  warden connect prod-db --duration 2h --reason 'INC-42'   # JIT window first, then the tunnel")]
pub struct Args {
    /// Connection name (a postgres connection).
    pub connection: String,
    /// Request a JIT window of this length first (e.g. 2h) and wait for its approval.
    #[arg(long)]
    pub duration: Option<String>,
    #[arg(long)]
    pub reason: Option<String>,
    /// Local port to listen on (127.0.0.1).
    #[arg(long, default_value_t = 5433)]
    pub port: u16,
    /// The gateway's PostgreSQL proxy address (default: the gateway's host, port 15432).
    #[arg(long, env = "WARDEN_PG_ADDR")]
    pub pg_addr: Option<String>,
    /// Use TLS to the gateway's proxy: disable, prefer or require.
    #[arg(long, default_value = "prefer")]
    pub sslmode: String,
}

async fn proxy_addr(client: &Client, explicit: Option<String>) -> Result<SocketAddr> {
    let text = match explicit {
        Some(a) => a,
        None => {
            let u = url::Url::parse(&client.base).context("gateway URL")?;
            format!("{}:15432", u.host_str().unwrap_or("127.0.0.1"))
        }
    };
    tokio::net::lookup_host(&text)
        .await
        .with_context(|| format!("resolving {text}"))?
        .next()
        .with_context(|| format!("no address for {text}"))
}

pub async fn run(client: &Client, a: Args) -> Result<ExitCode> {
    client.require_token()?;
    let me: Value = client.call(Method::GET, "/api/me", None).await?;
    let email = me
        .get("email")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if let Some(d) = &a.duration {
        let req = request::Args {
            connection: a.connection.clone(),
            duration: d.clone(),
            reason: a.reason.clone(),
            no_wait: false,
            out: OutputArgs {
                format: Format::Table,
            },
        };
        match request::request_window(client, &req).await? {
            Ok(r) if r.is_null() || r.get("status").and_then(Value::as_str) == Some("APPROVED") => {
                if let Some(end) = r.get("window_end").and_then(Value::as_str) {
                    eprintln!("Access window open until {end}");
                }
            }
            Ok(r) => return Ok(super::wait::report(&r, Format::Table)),
            Err(code) => return Ok(code),
        }
    }
    let tls = match a.sslmode.as_str() {
        "disable" => UpstreamTls::Disable,
        "prefer" => UpstreamTls::Prefer,
        "require" => UpstreamTls::Require,
        other => bail!("--sslmode {other}: use disable, prefer or require"),
    };
    let gateway = proxy_addr(client, a.pg_addr).await?;
    let listener = TcpListener::bind(("127.0.0.1", a.port))
        .await
        .with_context(|| format!("listening on 127.0.0.1:{} (try --port)", a.port))?;
    let local = listener.local_addr()?;
    eprintln!(
        "Tunnel to {} via {gateway} as {email} — ready:",
        a.connection
    );
    println!("psql -h 127.0.0.1 -p {} {}", local.port(), a.connection);
    eprintln!("(Ctrl-C closes the tunnel)");
    let token = Secret::new(client.token().unwrap_or_default().to_string());
    warden_pgwire::run_tunnel(listener, gateway, email, token, a.connection, tls, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
    .context("tunnel")?;
    Ok(ExitCode::SUCCESS)
}
