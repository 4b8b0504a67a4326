//! Gateway configuration, read once from the environment at start (SPEC §4 "Environment").
//! Secrets in here are wrapped in `Secret` so a logged config never leaks them.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use warden_core::secret::Secret;

#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP API + web app listener (`WARDEN_LISTEN`, default 127.0.0.1:8009).
    pub listen: SocketAddr,
    /// PostgreSQL proxy listener (`WARDEN_PG_LISTEN`, default 127.0.0.1:15432; `off` disables).
    pub pg_listen: Option<SocketAddr>,
    /// Data dir for the embedded SQLite store and the secret key file (`WARDEN_DATA_DIR`, `./.warden`).
    pub data_dir: PathBuf,
    /// `sqlite://…` (default: inside the data dir) or `postgres://…` (`WARDEN_DATABASE_URL`).
    pub database_url: Secret<String>,
    /// Default PENDING timeout (`REVIEW_TIMEOUT_SEC`, 3600).
    pub review_timeout_sec: i64,
    /// Base URL for links (`WARDEN_PUBLIC_URL`, default `http://<listen>`).
    pub public_url: String,
    pub admin_email: String,
    pub admin_password: Option<Secret<String>>,
    /// 32-byte key, base64 or hex (`WARDEN_SECRET_KEY`); else a key file in the data dir.
    pub secret_key: Option<Secret<String>>,
    /// Admins' own requests are approved at once (`WARDEN_ADMIN_AUTO_APPROVE`, true).
    pub admin_auto_approve: bool,
    /// Max bytes of command output kept (`WARDEN_OUTPUT_CAP`, 1 MiB).
    pub output_cap: usize,
    /// Executions are killed after this many seconds (`WARDEN_EXEC_TIMEOUT_SEC`, 300).
    pub exec_timeout_sec: u64,
    /// The unprivileged OS user `command` connections run as (`WARDEN_EXEC_USER`; default
    /// `warden-exec`, created when the gateway runs as root).
    pub exec_user: Option<String>,
    /// How often the sweeper runs, in milliseconds (`WARDEN_SWEEP_MS`, 1000).
    pub sweep_ms: u64,
    /// TLS for the proxy listener (`WARDEN_TLS_CERT` / `WARDEN_TLS_KEY`, PEM paths).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Refuse clear-text proxy clients (`WARDEN_REQUIRE_TLS`).
    pub require_tls: bool,
    /// Seconds proxied sessions wait for a store that refuses their statement records before
    /// they end (`WARDEN_PG_AUDIT_STALL_SEC`, 30): nothing is sent to a target meanwhile.
    pub pg_audit_stall_sec: u64,
    /// Ed25519 key file (base64, 32 bytes) signing audit checkpoints (`WARDEN_CHECKPOINT_KEY`);
    /// keep it outside the store. Unset: no checkpoints.
    pub checkpoint_key: Option<PathBuf>,
    /// Failed proxy logins per minute before refusing: one user from one address, one user
    /// from anywhere, one address for any users (`WARDEN_PG_LOGIN_FAILURES`, `5,20,100`).
    pub pg_login_failures: (u32, u32, u32),
    /// Web and API password logins: failures per minute allowed for one user from one address,
    /// one user from anywhere, and one address (`WARDEN_LOGIN_FAILURES`, default 5,20,100).
    pub login_failures: (u32, u32, u32),
    /// Warm upstream logins kept per connection, startup parameters and relay thread
    /// (`WARDEN_PG_WARM_UPSTREAMS`, 2; 0: open each upstream on demand). Each is a fresh login
    /// used by one session only, closed after 30 s if no session takes it.
    pub pg_warm_upstreams: usize,
    /// Where signed checkpoints are appended as JSON lines (`WARDEN_CHECKPOINT_FILE`, default
    /// beside the data dir, never inside it: `<data dir>.checkpoints.jsonl`); publish it
    /// somewhere the store's admins can't edit, and send it to a witness.
    pub checkpoint_file: PathBuf,
    /// An external witness every checkpoint is POSTed to as JSON
    /// (`WARDEN_CHECKPOINT_WITNESS_URL`): a copy the store's and the host's admins cannot
    /// rewrite together with the chain.
    pub checkpoint_witness_url: Option<Secret<String>>,
    /// Seconds between automatic checkpoints (`WARDEN_CHECKPOINT_INTERVAL`, 1h).
    pub checkpoint_interval_sec: i64,
    /// Session outputs older than this are pruned (`WARDEN_AUDIT_RETENTION`, e.g. `90d`; unset:
    /// kept forever). The audit chain is never pruned.
    pub audit_retention_sec: Option<i64>,
    /// Slack bot token `xoxb-…` (`WARDEN_SLACK_BOT_TOKEN`); unset = no Slack messages.
    pub slack_bot_token: Option<Secret<String>>,
    /// Verifies requests from Slack (`WARDEN_SLACK_SIGNING_SECRET`); unset = Slack endpoints off.
    pub slack_signing_secret: Option<Secret<String>>,
    /// Slack Web API base (`WARDEN_SLACK_API_URL`, default `https://slack.com/api`).
    pub slack_api_url: String,
    /// How often the notifier runs, in ms (`WARDEN_NOTIFY_POLL_MS`, 1000; 0 = not in background).
    pub notify_poll_ms: u64,
    /// First retry delay of a failed notification, in ms (`WARDEN_NOTIFY_BACKOFF_MS`, 2000).
    pub notify_backoff_ms: u64,
}

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
}

fn parse_bool(key: &str, default: bool) -> Result<bool> {
    match env(key).as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => Ok(default),
        Some("1" | "true" | "yes" | "on") => Ok(true),
        Some("0" | "false" | "no" | "off") => Ok(false),
        Some(other) => bail!("{key}={other:?} is not a boolean (use true or false)"),
    }
}

fn parse_num<T: std::str::FromStr>(key: &str, default: T) -> Result<T> {
    match env(key) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| anyhow::anyhow!("{key}={v:?} is not a valid number")),
    }
}

impl Config {
    pub fn from_env() -> Result<Config> {
        let listen: SocketAddr = env("WARDEN_LISTEN")
            .unwrap_or_else(|| "127.0.0.1:8009".into())
            .parse()
            .context("WARDEN_LISTEN must be HOST:PORT, e.g. 127.0.0.1:8009")?;
        let pg_listen = match env("WARDEN_PG_LISTEN").as_deref() {
            Some("off" | "none") => None,
            Some(v) => Some(
                v.parse()
                    .context("WARDEN_PG_LISTEN must be HOST:PORT or off")?,
            ),
            None => Some(SocketAddr::from(([127, 0, 0, 1], 15432))),
        };
        let data_dir = PathBuf::from(env("WARDEN_DATA_DIR").unwrap_or_else(|| "./.warden".into()));
        let database_url = env("WARDEN_DATABASE_URL")
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("warden.db").display()));
        if !(database_url.starts_with("sqlite:") || database_url.starts_with("postgres")) {
            bail!("WARDEN_DATABASE_URL must start with sqlite:// or postgres://");
        }
        let public_url = env("WARDEN_PUBLIC_URL")
            .unwrap_or_else(|| format!("http://{listen}"))
            .trim_end_matches('/')
            .to_string();
        Ok(Config {
            listen,
            pg_listen,
            data_dir: data_dir.clone(),
            database_url: Secret::new(database_url),
            review_timeout_sec: parse_num("REVIEW_TIMEOUT_SEC", 3600)?,
            public_url,
            admin_email: env("WARDEN_ADMIN_EMAIL").unwrap_or_else(|| "admin@warden.local".into()),
            admin_password: env("WARDEN_ADMIN_PASSWORD").map(Secret::new),
            secret_key: env("WARDEN_SECRET_KEY").map(Secret::new),
            admin_auto_approve: parse_bool("WARDEN_ADMIN_AUTO_APPROVE", true)?,
            output_cap: parse_num("WARDEN_OUTPUT_CAP", 1024 * 1024)?,
            exec_timeout_sec: parse_num("WARDEN_EXEC_TIMEOUT_SEC", 300)?,
            exec_user: env("WARDEN_EXEC_USER"),
            sweep_ms: parse_num("WARDEN_SWEEP_MS", 1000)?,
            tls_cert: env("WARDEN_TLS_CERT").map(PathBuf::from),
            tls_key: env("WARDEN_TLS_KEY").map(PathBuf::from),
            require_tls: parse_bool("WARDEN_REQUIRE_TLS", false)?,
            pg_audit_stall_sec: parse_num("WARDEN_PG_AUDIT_STALL_SEC", 30)?,
            checkpoint_key: env("WARDEN_CHECKPOINT_KEY").map(PathBuf::from),
            pg_login_failures: match env("WARDEN_PG_LOGIN_FAILURES") {
                Some(v) => parse_login_failures("WARDEN_PG_LOGIN_FAILURES", &v)?,
                None => (5, 20, 100),
            },
            login_failures: match env("WARDEN_LOGIN_FAILURES") {
                Some(v) => parse_login_failures("WARDEN_LOGIN_FAILURES", &v)?,
                None => (5, 20, 100),
            },
            pg_warm_upstreams: parse_num("WARDEN_PG_WARM_UPSTREAMS", 2)?,
            checkpoint_file: env("WARDEN_CHECKPOINT_FILE")
                .map(PathBuf::from)
                .unwrap_or_else(|| default_checkpoint_file(&data_dir)),
            checkpoint_witness_url: env("WARDEN_CHECKPOINT_WITNESS_URL").map(Secret::new),
            checkpoint_interval_sec: match env("WARDEN_CHECKPOINT_INTERVAL") {
                Some(v) => warden_core::duration::parse_duration(&v)
                    .map_err(|e| anyhow::anyhow!("WARDEN_CHECKPOINT_INTERVAL: {e}"))?,
                None => 3600,
            },
            audit_retention_sec: env("WARDEN_AUDIT_RETENTION")
                .map(|v| {
                    warden_core::duration::parse_duration(&v)
                        .map_err(|e| anyhow::anyhow!("WARDEN_AUDIT_RETENTION: {e}"))
                })
                .transpose()?,
            slack_bot_token: env("WARDEN_SLACK_BOT_TOKEN").map(Secret::new),
            slack_signing_secret: env("WARDEN_SLACK_SIGNING_SECRET").map(Secret::new),
            slack_api_url: env("WARDEN_SLACK_API_URL")
                .unwrap_or_else(|| "https://slack.com/api".into())
                .trim_end_matches('/')
                .to_string(),
            notify_poll_ms: parse_num("WARDEN_NOTIFY_POLL_MS", 1000)?,
            notify_backoff_ms: parse_num("WARDEN_NOTIFY_BACKOFF_MS", 2000)?,
        })
    }

    /// A config for tests and embedding: everything local under `data_dir`, ports chosen by the OS.
    pub fn for_data_dir(data_dir: PathBuf) -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            pg_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            database_url: Secret::new(format!("sqlite://{}", data_dir.join("warden.db").display())),
            data_dir: data_dir.clone(),
            review_timeout_sec: 3600,
            public_url: String::new(),
            admin_email: "admin@warden.local".into(),
            admin_password: None,
            secret_key: None,
            admin_auto_approve: true,
            output_cap: 1024 * 1024,
            exec_timeout_sec: 300,
            exec_user: None,
            sweep_ms: 200,
            tls_cert: None,
            tls_key: None,
            require_tls: false,
            pg_audit_stall_sec: 30,
            slack_bot_token: None,
            slack_signing_secret: None,
            slack_api_url: "https://slack.com/api".into(),
            notify_poll_ms: 200,
            notify_backoff_ms: 200,
            checkpoint_key: None,
            pg_login_failures: (5, 20, 100),
            login_failures: (5, 20, 100),
            pg_warm_upstreams: 2,
            checkpoint_file: default_checkpoint_file(&data_dir),
            checkpoint_witness_url: None,
            checkpoint_interval_sec: 3600,
            audit_retention_sec: None,
        }
    }
}

/// `<data dir>.checkpoints.jsonl`, beside the data dir: whoever copies, restores or rewrites
/// the data dir does not carry the checkpoints along with it.
pub fn default_checkpoint_file(data_dir: &std::path::Path) -> PathBuf {
    match data_dir.file_name() {
        Some(n) => {
            let mut name = n.to_os_string();
            name.push(".checkpoints.jsonl");
            data_dir.with_file_name(name)
        }
        // `.`, `..` or `/`: the parent, still outside.
        None => data_dir.join("..").join("warden.checkpoints.jsonl"),
    }
}

/// `PER_USER_AND_ADDRESS,PER_USER,PER_ADDRESS`, each at least 1.
fn parse_login_failures(var: &str, v: &str) -> anyhow::Result<(u32, u32, u32)> {
    let bad = || {
        anyhow::anyhow!(
            "{var}={v:?}: give three limits per minute, e.g. 5,20,100 (one user from one address, one user from anywhere, one address)"
        )
    };
    let n: Vec<u32> = v
        .split(',')
        .map(|p| p.trim().parse::<u32>().ok().filter(|n| *n >= 1))
        .collect::<Option<_>>()
        .ok_or_else(bad)?;
    match n.as_slice() {
        [a, b, c] => Ok((*a, *b, *c)),
        _ => Err(bad()),
    }
}
