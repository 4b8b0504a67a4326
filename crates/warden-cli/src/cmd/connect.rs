//! `warden connect CONN [--duration 2h]`: optionally request a JIT window (and wait for it),
//! then open a local PostgreSQL listener that tunnels to the gateway's proxy logged in as you,
//! so `psql -h 127.0.0.1 -p 5433 CONN` works without typing a token.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use reqwest::Method;
use serde_json::Value;
use tokio::net::TcpListener;
use warden_core::secret::Secret;
use warden_pgwire::{GatewayAddr, UpstreamTls};

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
    /// TLS to the gateway's proxy, as libpq's sslmode: disable, prefer, require, verify-ca or
    /// verify-full. Default: verify-full when the gateway URL is https:// (your token is sent
    /// only to a proxy whose certificate names the gateway's host), prefer for http:// (where the
    /// API calls are not encrypted either).
    #[arg(long)]
    pub sslmode: Option<String>,
    /// Root certificate(s) (PEM) that verify-ca/verify-full check the proxy's certificate
    /// against. Default: $SSL_CERT_FILE, else the system bundle /etc/ssl/certs/ca-certificates.crt.
    #[arg(long, value_name = "FILE")]
    pub sslrootcert: Option<std::path::PathBuf>,
}

/// The TLS the tunnel uses to the gateway's proxy (see [`Args::sslmode`]).
fn tunnel_tls(a: &Args, gateway_url: &str) -> Result<UpstreamTls> {
    let https = gateway_url.starts_with("https://");
    let mode = match a.sslmode.as_deref() {
        Some(m) => m,
        None if https => "verify-full",
        None => "prefer",
    };
    let root = || {
        a.sslrootcert.clone().or_else(|| {
            std::env::var_os("SSL_CERT_FILE")
                .map(std::path::PathBuf::from)
                .or_else(|| Some("/etc/ssl/certs/ca-certificates.crt".into()))
        })
    };
    Ok(match mode {
        "disable" => UpstreamTls::Disable,
        "prefer" => UpstreamTls::Prefer,
        "require" => UpstreamTls::Require,
        "verify-ca" => UpstreamTls::VerifyCa { root: root() },
        "verify-full" => UpstreamTls::VerifyFull { root: root() },
        other => bail!("--sslmode {other}: use disable, prefer, require, verify-ca or verify-full"),
    })
}

/// The proxy's host (as named: what TLS verifies) and port.
fn proxy_addr(client: &Client, explicit: Option<String>) -> Result<GatewayAddr> {
    let text = match explicit {
        Some(a) => a,
        None => {
            let u = url::Url::parse(&client.base).context("gateway URL")?;
            let host = u.host_str().unwrap_or("127.0.0.1");
            if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]:15432")
            } else {
                format!("{host}:15432")
            }
        }
    };
    let (host, port) = text
        .rsplit_once(':')
        .with_context(|| format!("--pg-addr {text}: expected HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("--pg-addr {text}: invalid port {port}"))?;
    Ok(GatewayAddr {
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port,
    })
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
            Ok(None) => {}
            Ok(Some(r)) if r.value.review.status == warden_core::ReviewStatus::Approved => {
                if let Some(end) = r.raw.get("window_end").and_then(Value::as_str) {
                    eprintln!(
                        "Access window open until {end} ({})",
                        super::wait::decided_line(&r.value)
                    );
                }
            }
            Ok(Some(r)) => return Ok(super::wait::report(&r, Format::Table)),
            Err(code) => return Ok(code),
        }
    }
    let tls = tunnel_tls(&a, &client.base)?;
    let gateway = proxy_addr(client, a.pg_addr.clone())?;
    let listener = TcpListener::bind(("127.0.0.1", a.port))
        .await
        .with_context(|| format!("listening on 127.0.0.1:{} (try --port)", a.port))?;
    let local = listener.local_addr()?;
    eprintln!(
        "Tunnel to {} via {gateway} as {email} (TLS to the gateway: sslmode={}) — ready:",
        a.connection,
        tls.sslmode().as_str()
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec!["connect", "prod-db"];
        argv.extend_from_slice(extra);
        Cli::parse_from(argv).args
    }

    #[test]
    fn an_https_gateway_is_verified_by_default() {
        let tls = tunnel_tls(&args(&[]), "https://warden.example.com").unwrap();
        assert!(
            matches!(tls, UpstreamTls::VerifyFull { root: Some(_) }),
            "{tls:?}"
        );
        let tls = tunnel_tls(&args(&[]), "http://127.0.0.1:8009").unwrap();
        assert_eq!(tls, UpstreamTls::Prefer);
        let tls = tunnel_tls(
            &args(&["--sslmode", "verify-ca", "--sslrootcert", "/x/ca.pem"]),
            "https://w",
        )
        .unwrap();
        assert_eq!(
            tls,
            UpstreamTls::VerifyCa {
                root: Some("/x/ca.pem".into())
            }
        );
        let e = tunnel_tls(&args(&["--sslmode", "verify_full"]), "https://w").unwrap_err();
        assert!(e.to_string().contains("verify-full"), "{e}");
    }

    #[test]
    fn the_proxy_host_stays_a_name() {
        let c = Client::new("https://warden.example.com:8443", None).unwrap();
        let a = proxy_addr(&c, None).unwrap();
        assert_eq!((a.host.as_str(), a.port), ("warden.example.com", 15432));
        let a = proxy_addr(&c, Some("[::1]:5000".into())).unwrap();
        assert_eq!((a.host.as_str(), a.port), ("::1", 5000));
        assert!(proxy_addr(&c, Some("nohost".into())).is_err());
    }
}
