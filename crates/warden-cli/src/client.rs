//! The HTTP client of the CLI: gateway URL + token resolution (flags → env → config file), JSON
//! requests, and API errors turned into messages that say what to do next.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Saved {
    pub gateway: Option<String>,
    pub token: Option<String>,
    pub email: Option<String>,
}

pub fn config_path() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("WARDEN_CONFIG") {
        return Ok(PathBuf::from(p));
    }
    let dir = dirs::config_dir()
        .ok_or_else(|| anyhow!("no config dir for this user; set WARDEN_CONFIG=path"))?;
    Ok(dir.join("warden").join("config.json"))
}

pub fn load_saved() -> Saved {
    config_path()
        .ok()
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

pub fn save(saved: &Saved) -> Result<PathBuf> {
    let path = config_path()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let body = serde_json::to_vec_pretty(saved)?;
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        f.write_all(&body)?;
    }
    #[cfg(not(unix))]
    std::fs::write(&path, body)?;
    Ok(path)
}

/// An API error with its status and machine-readable code.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hint = match self.status {
            StatusCode::UNAUTHORIZED => {
                " (log in again: warden login --gateway URL --email you@example.com --password-stdin)"
            }
            StatusCode::FORBIDDEN => " (ask an admin for access)",
            _ => "",
        };
        write!(f, "{}{hint}", self.message)
    }
}

impl std::error::Error for ApiError {}

#[derive(Clone)]
pub struct Client {
    pub base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// Resolves the gateway and token: explicit values, then `WARDEN_GATEWAY`/`WARDEN_TOKEN`, then
    /// the saved config.
    pub fn resolve(gateway: Option<String>, token: Option<String>) -> Result<Client> {
        let saved = load_saved();
        let base = gateway
            .or_else(|| {
                std::env::var("WARDEN_GATEWAY")
                    .ok()
                    .filter(|s| !s.is_empty())
            })
            .or(saved.gateway)
            .unwrap_or_else(|| "http://127.0.0.1:8009".into());
        let token = token
            .or_else(|| std::env::var("WARDEN_TOKEN").ok().filter(|s| !s.is_empty()))
            .or(saved.token);
        Client::new(&base, token)
    }

    pub fn new(base: &str, token: Option<String>) -> Result<Client> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("warden-cli/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Like [`Client::call`], keeping the JSON it read too (what `-o json` prints, unchanged).
    pub async fn typed<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Typed<T>> {
        let (_, raw) = self.call_raw(method, path, body).await?;
        Typed::read(raw)
    }

    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T> {
        let (_, v) = self.call_raw(method, path, body).await?;
        serde_json::from_value(v).context("unexpected response from the gateway")
    }

    /// Returns the status and JSON body (Null for 204); API errors become [`ApiError`].
    pub async fn call_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value)> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        // No answer at all (refused, reset mid-request by a restarting gateway, timed out):
        // "unreachable", which waiting loops retry.
        let unreachable = |e: reqwest::Error| {
            anyhow!(
                "cannot reach the gateway at {}: {e}. Is it running (warden gateway)? Set --gateway or WARDEN_GATEWAY.",
                self.base
            )
        };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(unreachable)?;
        let value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        if status.is_success() {
            return Ok((status, value));
        }
        let message = value
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("gateway answered {status}"));
        Err(ApiError { status, message }.into())
    }

    /// Reads a streaming GET (NDJSON) line by line, calling `line` for each non-empty one, until
    /// the gateway ends the body. No overall timeout (a followed stream stays open); API errors
    /// as in [`Client::call_raw`], a dropped connection as "unreachable".
    pub async fn stream_lines(&self, path: &str, mut line: impl FnMut(&str)) -> Result<()> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("warden-cli/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let mut req = http.get(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let unreachable = |e: reqwest::Error| {
            anyhow!(
                "cannot reach the gateway at {}: {e}. Is it running (warden gateway)?",
                self.base
            )
        };
        let mut resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        if !status.is_success() {
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            let message = v
                .get("error")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("gateway answered {status}"));
            return Err(ApiError { status, message }.into());
        }
        let mut pending: Vec<u8> = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
            pending.extend_from_slice(&chunk);
            while let Some(i) = pending.iter().position(|b| *b == b'\n') {
                let rest = pending.split_off(i + 1);
                let text = String::from_utf8_lossy(&pending[..i]).to_string();
                pending = rest;
                if !text.trim().is_empty() {
                    line(&text);
                }
            }
        }
        Ok(())
    }

    /// A GET returning the raw body (CSV exports); API errors as in [`Client::call_raw`].
    pub async fn get_text(&self, path: &str) -> Result<String> {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| anyhow!("cannot reach the gateway at {}: {e}", self.base))?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let message = v
                .get("error")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("gateway answered {status}"));
            return Err(ApiError { status, message }.into());
        }
        Ok(text)
    }

    pub fn require_token(&self) -> Result<()> {
        if self.token.is_none() {
            bail!(
                "not logged in: run `warden login --gateway URL --email you@example.com --password-stdin` or set WARDEN_TOKEN"
            );
        }
        Ok(())
    }
}

/// Is this error a connection failure (worth retrying while waiting)?
pub fn is_unreachable(e: &anyhow::Error) -> bool {
    e.to_string().starts_with("cannot reach the gateway")
}

/// A gateway answer read as the gateway's own type, with the JSON it came as.
#[derive(Debug, Clone)]
pub struct Typed<T> {
    pub raw: Value,
    pub value: T,
}

impl<T: DeserializeOwned> Typed<T> {
    pub fn read(raw: Value) -> Result<Typed<T>> {
        let value = serde_json::from_value(raw.clone())
            .context("unexpected response from the gateway (is it a different version?)")?;
        Ok(Typed { raw, value })
    }
}
