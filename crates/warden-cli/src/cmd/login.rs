//! `warden login`: exchange email + password (or a token) for a saved login.

use std::io::Read;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{self, Client, Saved};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Your email.
    #[arg(long)]
    email: Option<String>,
    /// Read the password from stdin (one line).
    #[arg(long)]
    password_stdin: bool,
    /// Save this API token instead of logging in with a password.
    #[arg(long = "with-token", alias = "api-token")]
    with_token: Option<String>,
}

pub async fn run(gateway: Option<String>, a: Args) -> Result<ExitCode> {
    let saved = client::load_saved();
    let base = gateway
        .or(saved.gateway)
        .unwrap_or_else(|| "http://127.0.0.1:8009".into());
    let token_flag = a.with_token.or_else(|| {
        std::env::var("WARDEN_TOKEN")
            .ok()
            .filter(|t| !t.is_empty() && a.email.is_none())
    });
    let (token, email) = if let Some(t) = token_flag {
        let c = Client::new(&base, Some(t.clone()))?;
        let me: Value = c
            .call(Method::GET, "/api/me", None)
            .await
            .context("checking the token")?;
        (
            t,
            me.get("email")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        )
    } else {
        let Some(email) = a.email else {
            bail!("give --email you@example.com --password-stdin, or --with-token TOKEN");
        };
        if !a.password_stdin {
            bail!(
                "pass the password on stdin with --password-stdin (e.g. echo \"$PW\" | warden login --email {email} --password-stdin)"
            );
        }
        let mut pw = String::new();
        std::io::stdin().read_to_string(&mut pw)?;
        let pw = pw.trim_end_matches(['\n', '\r']);
        let c = Client::new(&base, None)?;
        let resp: Value = c
            .call(
                Method::POST,
                "/api/login",
                Some(&json!({"email": email, "password": pw})),
            )
            .await?;
        let t = resp
            .get("token")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        (t, email)
    };
    let path = client::save(&Saved {
        gateway: Some(base.clone()),
        token: Some(token),
        email: Some(email.clone()),
    })?;
    eprintln!(
        "Logged in to {base} as {email} (saved in {})",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}
