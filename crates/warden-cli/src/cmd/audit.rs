//! `warden audit verify|log`: prove the hash chain unbroken; read entries.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use reqwest::Method;
use serde_json::Value;

use crate::OutputArgs;
use crate::client::Client;
use crate::output::{self, Format, field, print_list};

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Walk the whole chain; exits non-zero naming the first altered, deleted or reordered entry.
    /// With --file, verify an export offline (no gateway needed). With --checkpoints, also check
    /// signed checkpoints against the live chain.
    Verify {
        /// An export made with `warden audit export --format json`.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        /// A checkpoints file (JSON lines) to check against the chain.
        #[arg(long, requires = "public_key")]
        checkpoints: Option<std::path::PathBuf>,
        /// The checkpoint signing public key (base64), as printed by `warden audit keygen`.
        #[arg(long)]
        public_key: Option<String>,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Export one row per review (with the chain segment proving it) for auditors, or with
    /// --review one review alone, with Merkle inclusion proofs against a signed checkpoint
    /// (verify it with `warden audit verify --file F --public-key KEY`).
    Export {
        /// One review (its id), verifiable without the rest of the chain.
        #[arg(long, conflicts_with_all = ["since", "until", "connection"])]
        review: Option<String>,
        /// Start: RFC 3339 time or a duration back from now (30d).
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        #[arg(long)]
        connection: Option<String>,
        #[arg(long, value_enum, default_value_t = ExportFormat::Json)]
        format: ExportFormat,
        /// Write to this file instead of stdout.
        #[arg(long = "out", short = 'O')]
        out: Option<std::path::PathBuf>,
    },
    /// Sign the current chain head now (needs WARDEN_CHECKPOINT_KEY on the gateway).
    Checkpoint {
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Create an Ed25519 key for signing checkpoints; prints the public key to publish.
    Keygen {
        /// Where to write the private key (mode 0600); keep it outside the store.
        #[arg(long = "out")]
        out: std::path::PathBuf,
    },
    /// Print audit entries after a sequence number. With --follow, keep printing new entries as
    /// they are written (reconnecting and resuming where it stopped); with -o json each entry is
    /// one OCSF line for a SIEM (docs/siem.md): `warden audit log --follow -o json >> siem.ndjson`.
    Log {
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// Keep the stream open and print entries as they are appended.
        #[arg(long)]
        follow: bool,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[command(flatten)]
        out: OutputArgs,
    },
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum ExportFormat {
    Json,
    Csv,
}

fn verify_file(
    path: &std::path::Path,
    format: Format,
    public_key: Option<&str>,
) -> Result<ExitCode> {
    use warden_core::evidence::{REVIEW_EXPORT_FORMAT, verify_export, verify_export_signature};
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let export: warden_core::evidence::AuditExport = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a JSON audit export", path.display()))?;
    let key = public_key
        .map(warden_core::evidence::parse_key32)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--public-key: {e}"))?;
    let single = export.format == REVIEW_EXPORT_FORMAT;
    let result = verify_export(&export).and_then(|()| match (&key, single) {
        (Some(k), true) => verify_export_signature(k, &export),
        _ => Ok(()),
    });
    if single && key.is_none() && result.is_ok() {
        eprintln!(
            "warning: the proofs check, but not who signed the tree: pass --public-key KEY (from warden audit keygen) to check the checkpoint's signature"
        );
    }
    if format == Format::Json {
        output::print_json(
            &serde_json::json!({"ok": result.is_ok(), "rows": export.rows.len(), "entries": export.entries.len(), "head_seq": export.head_seq, "error": result.as_ref().err().map(ToString::to_string)}),
        );
    } else {
        match &result {
            Ok(()) => println!(
                "export OK: {} reviews, {} chain entries up to #{} {}",
                export.rows.len(),
                export.entries.len(),
                export.head_seq,
                export.head_hash
            ),
            Err(e) => println!("export BROKEN: {e}"),
        }
    }
    Ok(if result.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Follows the audit stream from `after`, printing each entry (an OCSF line with `-o json`, a
/// short line otherwise); reconnects with backoff when the connection drops, resuming after the
/// last entry printed, so nothing is skipped or printed twice. Ends only on an API error (a bad
/// token, a missing role) or Ctrl-C.
async fn follow_log(client: &Client, after: i64, format: Format) -> Result<ExitCode> {
    use std::io::Write;
    let mut last = after;
    let mut backoff = Duration::from_millis(500);
    loop {
        let path = format!("/api/audit/stream?after={last}&follow=true");
        let result = client
            .stream_lines(&path, |text| {
                let Ok(v) = serde_json::from_str::<Value>(text) else {
                    return;
                };
                let Some(seq) = v.pointer("/metadata/sequence").and_then(Value::as_i64) else {
                    return;
                };
                if seq <= last {
                    return;
                }
                last = seq;
                let mut out = std::io::stdout().lock();
                let _ = if format == Format::Json {
                    writeln!(out, "{text}")
                } else {
                    writeln!(
                        out,
                        "#{seq}  {}  {}  {}",
                        output::cell(v.pointer("/unmapped/warden/at")),
                        output::cell(v.pointer("/unmapped/warden/actor")),
                        output::cell(v.get("message"))
                    )
                };
                let _ = out.flush();
            })
            .await;
        match result {
            Err(e) if e.downcast_ref::<crate::client::ApiError>().is_some() => return Err(e),
            Err(e) => {
                eprintln!("audit stream interrupted ({e}); resuming after #{last}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            Ok(()) => {
                backoff = Duration::from_millis(500);
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

async fn verify_checkpoints(
    client: &Client,
    path: &std::path::Path,
    public_key: &str,
) -> Result<bool> {
    let key = warden_core::evidence::parse_key32(public_key)
        .map_err(|e| anyhow::anyhow!("--public-key: {e}"))?;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let log: Vec<warden_core::evidence::Checkpoint> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).context("malformed checkpoint line"))
        .collect::<Result<_>>()?;
    // Offline first: every checkpoint extends the one before (consistency proofs).
    let mut ok = match warden_core::evidence::verify_checkpoint_log(&key, &log) {
        Ok(()) => {
            println!(
                "checkpoint log OK: {} checkpoints, each extends the one before",
                log.len()
            );
            true
        }
        Err(e) => {
            println!("checkpoint log FAILED: {e}");
            false
        }
    };
    for cp in log {
        let entries: Value = client
            .call(
                Method::GET,
                &format!("/api/audit?after={}&limit=1", cp.seq - 1),
                None,
            )
            .await?;
        let at_seq = entries
            .get(0)
            .filter(|e| e.get("seq").and_then(Value::as_i64) == Some(cp.seq))
            .and_then(|e| e.get("hash"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let result = match &at_seq {
            None => Err(anyhow::anyhow!(
                "checkpoint #{}: the chain no longer has this entry",
                cp.seq
            )),
            Some(h) => warden_core::evidence::verify_checkpoint(&key, &cp, Some(h))
                .map_err(anyhow::Error::from),
        };
        match result {
            Ok(()) => println!("checkpoint #{} ({}) OK", cp.seq, cp.at),
            Err(e) => {
                ok = false;
                println!("checkpoint FAILED: {e}");
            }
        }
    }
    Ok(ok)
}

pub async fn run(client: &Client, c: Command) -> Result<ExitCode> {
    match c {
        Command::Verify {
            file: Some(path),
            public_key,
            out,
            ..
        } => verify_file(&path, out.format, public_key.as_deref()),
        Command::Keygen { out } => {
            use rand::RngCore;
            let mut key = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut key);
            let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key);
            #[cfg(unix)]
            {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&out)
                    .with_context(|| {
                        format!("creating {} (it must not exist yet)", out.display())
                    })?;
                f.write_all(encoded.as_bytes())?;
            }
            #[cfg(not(unix))]
            std::fs::write(&out, &encoded)?;
            eprintln!(
                "private key written to {} — keep it outside the store; start the gateway with WARDEN_CHECKPOINT_KEY={}",
                out.display(),
                out.display()
            );
            println!("{}", warden_core::evidence::public_key_b64(&key));
            Ok(ExitCode::SUCCESS)
        }
        other => run_online(client, other).await,
    }
}

async fn run_online(client: &Client, c: Command) -> Result<ExitCode> {
    client.require_token()?;
    match c {
        Command::Verify {
            file: Some(path),
            out,
            public_key,
            ..
        } => return verify_file(&path, out.format, public_key.as_deref()),
        Command::Keygen { .. } => return Ok(ExitCode::SUCCESS),
        Command::Export {
            review,
            since,
            until,
            connection,
            format,
            out,
        } => {
            let mut q = format!(
                "/api/audit/export?format={}",
                match format {
                    ExportFormat::Json => "json",
                    ExportFormat::Csv => "csv",
                }
            );
            for (k, v) in [
                ("review", review),
                ("since", since),
                ("until", until),
                ("connection", connection),
            ] {
                if let Some(v) = v {
                    q.push_str(&format!("&{k}={}", super::review::urlencode(&v)));
                }
            }
            let body = client.get_text(&q).await?;
            match out {
                Some(path) => {
                    std::fs::write(&path, &body)
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("wrote {}", path.display());
                }
                None => print!("{body}"),
            }
        }
        Command::Checkpoint { out } => {
            let v: Value = client
                .call(Method::POST, "/api/audit/checkpoints", None)
                .await?;
            if out.format == Format::Json {
                output::print_json(&v);
            } else {
                println!("{}", serde_json::to_string(&v).unwrap_or_default());
            }
        }
        Command::Verify {
            file: None,
            checkpoints,
            public_key,
            out,
        } => {
            let (_, v) = match client
                .call_raw(Method::GET, "/api/audit/verify", None)
                .await
            {
                Ok(x) => x,
                Err(e) => match e.downcast_ref::<crate::client::ApiError>() {
                    Some(api) if api.status == reqwest::StatusCode::CONFLICT => {
                        // the report comes back with 409
                        let (_, v) = reqwest_report(client).await?;
                        (api.status, v)
                    }
                    _ => return Err(e),
                },
            };
            let mut ok = v.get("ok").and_then(Value::as_bool) == Some(true);
            if out.format == Format::Json {
                output::print_json(&v);
            } else if ok {
                println!(
                    "audit chain OK: {} entries, head #{} {}",
                    output::cell(v.get("entries")),
                    output::cell(v.get("head_seq")),
                    output::cell(v.get("head_hash"))
                );
            } else {
                println!(
                    "audit chain BROKEN at entry #{}: {}",
                    output::cell(v.get("first_bad_seq")),
                    output::cell(v.get("error"))
                );
            }
            if let (Some(path), Some(key)) = (checkpoints, public_key) {
                ok &= verify_checkpoints(client, &path, &key).await?;
            }
            return Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        Command::Log {
            after,
            follow: true,
            out,
            ..
        } => return follow_log(client, after, out.format).await,
        Command::Log {
            after, limit, out, ..
        } => {
            let v: Value = client
                .call(
                    Method::GET,
                    &format!("/api/audit?after={after}&limit={limit}"),
                    None,
                )
                .await?;
            print_list(
                out.format,
                &v,
                &[
                    ("SEQ", &field("seq")),
                    ("AT", &field("at")),
                    ("ACTOR", &field("actor")),
                    ("EVENT", &|e: &Value| output::cell(e.pointer("/event/kind"))),
                    ("DETAIL", &|e: &Value| {
                        output::truncate(
                            &e.get("event").map(|x| x.to_string()).unwrap_or_default(),
                            80,
                        )
                    }),
                ],
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Fetches the verify report even when the gateway answers 409 (a broken chain).
async fn reqwest_report(client: &Client) -> Result<(reqwest::StatusCode, Value)> {
    let http = reqwest::Client::new();
    let mut req = http.get(format!("{}/api/audit/verify", client.base));
    if let Some(t) = client.token() {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await?;
    let status = resp.status();
    Ok((status, resp.json().await.unwrap_or(Value::Null)))
}
