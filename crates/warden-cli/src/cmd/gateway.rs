//! `warden gateway`: run the gateway until SIGINT/SIGTERM.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Result;
use tracing_subscriber::EnvFilter;
use warden_gateway::config::Config;
use warden_gateway::server;

pub async fn run() -> Result<ExitCode> {
    let filter = EnvFilter::try_from_env("WARDEN_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let json = std::env::var("WARDEN_LOG_FORMAT").is_ok_and(|v| v == "json");
    if json {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .json()
            .init();
    } else {
        // Colours only for a person watching (logs go to stdout): a file or a pipe gets plain
        // text.
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .init();
    }
    let config = Config::from_env()?;
    let running = server::start(config).await?;
    let url = running.app.config.public_url.clone();
    println!("Warden gateway ready");
    println!(
        "  web app & API:   {url}   (store: {}, data dir: {})",
        running.app.store_backend(),
        running.app.config.data_dir.display()
    );
    if let Some(pg) = running.pg_addr {
        println!(
            "  postgres proxy:  {pg}   (user = your email, password = an API token, database = connection name)"
        );
    }
    match &running.bootstrap {
        Some((email, Some(password))) => {
            println!(
                "  admin login:     {email} / {password}   (generated; shown only this once — change it or set WARDEN_ADMIN_PASSWORD)"
            );
        }
        Some((email, None)) => {
            println!("  admin login:     {email} (password from WARDEN_ADMIN_PASSWORD)")
        }
        None => {}
    }
    if running.bootstrap.is_some() {
        println!("\nNext steps:");
        println!(
            "  1. warden login --gateway {url} --email {} --password-stdin",
            running
                .bootstrap
                .as_ref()
                .map(|b| b.0.as_str())
                .unwrap_or("")
        );
        println!(
            "  2. warden admin create connection demo --type command --reviewers approvers -- sh"
        );
        println!(
            "  3. someone to approve: warden admin create user approver@example.com --groups approvers --password-stdin"
        );
        println!(
            "     (they sign in at {url} and approve under Access Requests, or with warden review approve ID)"
        );
        println!(
            "  4. as an engineer (warden admin create user dev@example.com --groups dev, then warden admin create token --user dev@example.com):"
        );
        println!(
            "     WARDEN_TOKEN=<token> warden exec demo -i 'echo hello'   — held until approver@example.com approves it at {url}/reviews"
        );
        println!("     (an admin's own commands are auto-approved: WARDEN_ADMIN_AUTO_APPROVE)");
    }
    tracing::info!(http = %running.http_addr, pg = ?running.pg_addr, "gateway started");
    server::shutdown_signal().await;
    tracing::info!("shutting down");
    running.stop().await;
    Ok(ExitCode::SUCCESS)
}
