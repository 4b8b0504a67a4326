//! A stand-alone Warden proxy for `bench/run.sh`: every login is granted on one upstream, no
//! statement review, but every statement is still audited through the batching channel into
//! a cheap counting sink — the relay does all the work it does in production.
//!
//! Never use this outside benchmarks: it lets anyone in.
//!
//! Usage: `bench_proxy [LISTEN] [UPSTREAM_HOST:PORT] [UPSTREAM_USER] [UPSTREAM_DB] [WORKER_THREADS]`
//! (defaults `127.0.0.1:6433 127.0.0.1:5432 postgres test 2`; 0 threads = current-thread runtime).
//! `RELAY_THREADS=n` sets [`ProxyConfig::relay_threads`]. `TLS_CERT`/`TLS_KEY` (PEM files) make
//! it answer SSLRequest with TLS; `UPSTREAM_TLS=require` opens the upstream over TLS. Stops on
//! SIGINT/SIGTERM and prints how many statements were audited. `REVIEW=1` puts every session
//! under statement review: each statement is read by `warden_core::classify`, reads run (read-only
//! on the server), anything else is refused — the cost of a command rule on reads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;
use uuid::Uuid;
use warden_pgwire::{
    AuthFailure, Login, ProxyBackend, ProxyConfig, SessionGrant, Statement, StatementDecision,
    StatementLog, Unrecorded, Upstream, UpstreamTls,
};

struct BenchBackend {
    host: String,
    port: u16,
    user: String,
    database: String,
    upstream_tls: UpstreamTls,
    statements: AtomicU64,
    batches: AtomicU64,
    /// As the gateway reads statements (remembered per text).
    readings: warden_core::classify::Readings,
    /// Keeps every session's revoke switch alive (dropping it would not end sessions anyway).
    _never_revoked: watch::Sender<Option<String>>,
}

impl ProxyBackend for BenchBackend {
    async fn authenticate(&self, login: Login) -> Result<SessionGrant, AuthFailure> {
        Ok(SessionGrant {
            session_id: Uuid::new_v4(),
            user: login.user,
            connection: login.database,
            upstream: Upstream {
                host: self.host.clone(),
                port: self.port,
                user: self.user.clone(),
                password: None,
                database: self.database.clone(),
                tls: self.upstream_tls.clone(),
            },
            review_statements: std::env::var("REVIEW").is_ok_and(|v| v == "1"),
            review_id: None,
            ends_at: None,
            terminate: self._never_revoked.subscribe(),
        })
    }

    async fn start_session(&self, _grant: &SessionGrant) -> Result<(), String> {
        Ok(())
    }

    async fn authorize(
        &self,
        _grant: &SessionGrant,
        statement: &Statement<'_>,
    ) -> StatementDecision {
        // REVIEW=1: every statement is read by the classifier, as under a command rule; reads
        // run (read-only on the server), anything else is refused.
        if self.readings.read(statement.text).is_read() {
            StatementDecision::Allow {
                review_id: None,
                read_write: false,
            }
        } else {
            StatementDecision::Deny {
                message: "bench: not a read".into(),
            }
        }
    }

    async fn record(&self, batch: Vec<StatementLog>) -> Result<(), Unrecorded> {
        self.statements
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn session_ended(&self, _grant: &SessionGrant) {}
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_string());
    let listen: SocketAddr = arg(1, "127.0.0.1:6433").parse()?;
    let upstream = arg(2, "127.0.0.1:5432");
    let (host, port) = upstream
        .rsplit_once(':')
        .ok_or("UPSTREAM must be HOST:PORT")?;
    let threads: usize = arg(5, "2").parse()?;
    let backend = Arc::new(BenchBackend {
        host: host.to_string(),
        port: port.parse()?,
        user: arg(3, "postgres"),
        database: arg(4, "test"),
        upstream_tls: match std::env::var("UPSTREAM_TLS").as_deref() {
            Ok("require") => UpstreamTls::Require,
            _ => UpstreamTls::Disable,
        },
        statements: AtomicU64::new(0),
        readings: warden_core::classify::Readings::new(16_384),
        batches: AtomicU64::new(0),
        _never_revoked: watch::channel(None).0,
    });
    // The gateway's shape: a multi-threaded runtime calls `serve`; sessions either share it
    // (RELAY_THREADS=0) or run on dedicated single-threaded relay runtimes. 0 worker threads =
    // tokio's current-thread runtime for everything.
    let relay_threads: usize = std::env::var("RELAY_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let runtime = if threads == 0 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let config = ProxyConfig {
            listen,
            relay_threads,
            tls: server_tls()?,
            ..ProxyConfig::default()
        };
        eprintln!(
            "bench_proxy listening on {listen}, upstream {upstream}, {threads} worker threads, \
             {relay_threads} relay threads"
        );
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            Ok::<_, std::io::Error>(())
        };
        warden_pgwire::serve(listener, backend.clone(), config, shutdown).await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    eprintln!(
        "bench_proxy: audited {} statements in {} batches",
        backend.statements.load(Ordering::Relaxed),
        backend.batches.load(Ordering::Relaxed)
    );
    Ok(())
}

/// A TLS server configuration from `TLS_CERT`/`TLS_KEY` (PEM), if both are set.
fn server_tls() -> Result<Option<Arc<rustls::ServerConfig>>, Box<dyn std::error::Error>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (Ok(cert), Ok(key)) = (std::env::var("TLS_CERT"), std::env::var("TLS_KEY")) else {
        return Ok(None);
    };
    let certs = CertificateDer::pem_file_iter(&cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(&key)?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    Ok(Some(Arc::new(config)))
}
