//! `warden connect CONN [--duration 2h]`: optionally request a JIT window, then open a local
//! PostgreSQL listener that tunnels to the gateway's proxy with your identity.

use std::process::ExitCode;

use anyhow::Result;

use crate::client::Client;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Connection name.
    pub connection: String,
    /// Request a JIT window of this length first (e.g. 2h).
    #[arg(long)]
    pub duration: Option<String>,
    #[arg(long)]
    pub reason: Option<String>,
    /// Local port to listen on.
    #[arg(long, default_value_t = 5433)]
    pub port: u16,
    /// The gateway's PostgreSQL proxy address (default: the gateway host, port 15432).
    #[arg(long, env = "WARDEN_PG_ADDR")]
    pub pg_addr: Option<String>,
}

pub async fn run(client: &Client, a: Args) -> Result<ExitCode> {
    client.require_token()?;
    anyhow::bail!(
        "warden connect {}: the tunnel lands with the PostgreSQL proxy",
        a.connection
    )
}
