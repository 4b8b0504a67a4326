//! `warden`: one binary for the gateway and its CLI.
//!
//! Layout: `client` (HTTP + saved login), `output` (tables / JSON), `cmd/*` one file per
//! subcommand. The CLI never decides anything: it sends requests and shows answers.

mod client;
mod cmd;
mod output;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use output::Format;

/// Warden: approvals for production access. Engineers run commands through the gateway;
/// rules decide whether humans approve first; everything is audited.
#[derive(Parser, Debug)]
#[command(name = "warden", version, about, long_about = None, after_help = "\
Quick start:
  warden gateway                                   # start the gateway (SQLite in ./.warden)
  warden login --gateway http://127.0.0.1:8009 --email admin@warden.local --password-stdin
  warden admin create connection pg --type postgres --url postgres://app:secret@db:5432/app --reviewers dba
  warden exec pg -i 'UPDATE accounts SET plan = 1 WHERE id = 7'   # waits for a dba to approve
  warden review list                                # as an approver: see what waits for you")]
struct Cli {
    /// Gateway URL (default: WARDEN_GATEWAY, then the saved login, then http://127.0.0.1:8009).
    #[arg(long, global = true, env = "WARDEN_GATEWAY")]
    gateway: Option<String>,
    /// API token (default: WARDEN_TOKEN, then the saved login).
    #[arg(long, global = true, env = "WARDEN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gateway: HTTP API and web app, PostgreSQL proxy, sweeper.
    Gateway,
    /// Log in and save the gateway URL and a token in your config dir.
    Login(cmd::login::Args),
    /// Run a command on a connection; waits for approval when a rule holds it.
    Exec(cmd::exec::Args),
    /// Request a just-in-time access window on a connection.
    Request(cmd::request::Args),
    /// Open a local PostgreSQL port tunnelled through the gateway with your identity.
    Connect(cmd::connect::Args),
    /// Your open access windows.
    Access(cmd::request::AccessArgs),
    /// List, show, approve, reject, withdraw, revoke or wait for reviews.
    #[command(subcommand)]
    Review(cmd::review::Command),
    /// Administration: users, tokens, connections, rules.
    #[command(subcommand)]
    Admin(cmd::admin::Command),
    /// The audit trail: verify the hash chain, list entries.
    #[command(subcommand)]
    Audit(cmd::audit::Command),
}

/// Exit status of a command whose reader went away, as a shell reports a SIGPIPE death.
const EXIT_CLOSED_PIPE: i32 = 128 + 13;

/// `warden … | head` must end quietly when `head` stops reading, as every Unix tool does.
/// Rust ignores SIGPIPE, so `println!` panics on the broken pipe instead; restoring the signal
/// would take an `unsafe` libc call, so this hook turns exactly that panic into a silent exit
/// and leaves every other panic to the default hook.
fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(EXIT_CLOSED_PIPE);
        }
        default(info);
    }));
}

#[tokio::main]
async fn main() -> ExitCode {
    quiet_on_closed_pipe();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Gateway => cmd::gateway::run().await,
        Command::Login(a) => cmd::login::run(cli.gateway, a).await,
        other => {
            let client = match client::Client::resolve(cli.gateway, cli.token) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            match other {
                Command::Exec(a) => cmd::exec::run(&client, a).await,
                Command::Request(a) => cmd::request::run(&client, a).await,
                Command::Connect(a) => cmd::connect::run(&client, a).await,
                Command::Access(a) => cmd::request::access(&client, a).await,
                Command::Review(c) => cmd::review::run(&client, c).await,
                Command::Admin(c) => cmd::admin::run(&client, c).await,
                Command::Audit(c) => cmd::audit::run(&client, c).await,
                Command::Gateway | Command::Login(_) => Ok(ExitCode::SUCCESS),
            }
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!("error: {e:#}");
    ExitCode::FAILURE
}

/// Shared `-o` flag.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct OutputArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    pub format: Format,
}
