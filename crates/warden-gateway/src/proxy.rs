//! The PostgreSQL proxy backend: wires the `warden-pgwire` listener to the application.
//!
//! Logins are checked like API calls (email + API token), then the same access decision as
//! `exec` (`warden_core::decision::evaluate_command`) decides the session: an open JIT window
//! lets it run freely until the window's end, a command rule makes every statement that is not
//! read-only (`warden_core::classify`) a review of its own, a denial refuses the login.
//! Every statement is recorded (batched by the proxy) and chained into the audit log.
//!
//! The proxy never decides access itself; this module only translates between the proxy's
//! questions and the application's answers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use futures::FutureExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use warden_core::User;
use warden_core::audit::AuditEvent;
use warden_pgwire::{
    AuthFailure, HeldOutcome, Login, ProxyBackend, ProxyConfig, SessionGrant, Statement,
    StatementDecision, StatementLog, Unrecorded, Upstream,
    conninfo::{ConnInfo, Host},
};
use warden_store::StatementRecord;

use crate::app::native::{HeldResult, NativeAccess, StatementRuling, access_of};
use crate::app::{App, AppError};

/// The gateway's answers to the proxy.
pub struct Backend {
    app: Arc<App>,
    /// Held statements (review id → session id) not yet recorded as run. Kept in memory so
    /// recording a statement costs no store read; the session's watcher renews their claims,
    /// its end settles those that never reported back, and the sweeper's stale-claim pass
    /// settles those of a gateway that died.
    held: Held,
    /// Readings of statement texts (prepared statements repeat theirs).
    readings: warden_core::classify::Readings,
    /// The watcher of each live session (aborted when the session ends).
    watchers: std::sync::Mutex<std::collections::HashMap<Uuid, tokio::task::AbortHandle>>,
}

type Held = Arc<std::sync::Mutex<std::collections::HashMap<Uuid, Uuid>>>;

/// The held statements of one session.
fn held_by(held: &Held, session_id: Uuid) -> Vec<Uuid> {
    held.lock()
        .map(|h| {
            h.iter()
                .filter(|(_, s)| **s == session_id)
                .map(|(r, _)| *r)
                .collect()
        })
        .unwrap_or_default()
}

/// What a live session is re-checked against.
struct Live {
    token_sha256: String,
    email: String,
    connection: String,
    access: NativeAccess,
    session_id: Uuid,
}

/// How often a live session is re-decided from the store.
const RECHECK: Duration = Duration::from_secs(1);

/// Re-decides a live session every second (token, user, groups, rules, windows) and ends it
/// — with the reason, audited — when it may no longer go on; forwards a JIT window's revoke.
async fn watch_session(
    app: Arc<App>,
    live: Live,
    held: Held,
    end: tokio::sync::watch::Sender<Option<String>>,
    mut revoked: Option<tokio::sync::watch::Receiver<Option<String>>>,
) {
    let mut tick = tokio::time::interval(RECHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let reason = loop {
        let revoke = async {
            let got = match revoked.as_mut() {
                Some(r) => r.wait_for(|v| v.is_some()).await.map(|v| v.clone()).ok(),
                None => None,
            };
            match got {
                Some(reason) => reason.unwrap_or_default(),
                // No window, or no revoke can come any more.
                None => std::future::pending::<String>().await,
            }
        };
        tokio::select! {
            reason = revoke => break reason,
            _ = tick.tick() => {}
        }
        if let Err(e) = app.renew_held(&held_by(&held, live.session_id)).await {
            tracing::warn!(error = %e, "could not renew the claims of held statements");
        }
        match app
            .recheck_native(
                &live.token_sha256,
                &live.email,
                &live.connection,
                &live.access,
            )
            .await
        {
            Ok(Some(reason)) => {
                let ev = AuditEvent::AccessDenied {
                    connection: live.connection.clone(),
                    reason: format!("live session {} ended: {reason}", live.session_id),
                };
                if let Err(e) = app.audit_native(&live.email, ev).await {
                    tracing::error!(error = %e, "could not audit the end of a proxy session");
                }
                break reason;
            }
            Ok(None) => {}
            // A store that cannot answer is not a reason to cut sessions; the next tick retries.
            Err(e) => tracing::warn!(error = %e, "could not re-check a proxy session"),
        }
    };
    let _ = end.send(Some(reason));
}

/// The upstream a connection's URL names, read by the one connection spec the executor uses
/// too (`warden_pgwire::conninfo`): the same server, user, database and `sslmode`, with
/// `verify-ca`/`verify-full` verified (never downgraded to encryption alone).
fn upstream_from_url(url: &str) -> anyhow::Result<Upstream> {
    let info = ConnInfo::parse(url).map_err(anyhow::Error::msg)?;
    if let Host::Unix(_) = &info.host {
        anyhow::bail!(
            "the PostgreSQL proxy reaches servers over TCP only; this connection's URL names a Unix socket"
        );
    }
    Ok(Upstream::from_conninfo(info))
}

fn to_system(t: time::OffsetDateTime) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(t.unix_timestamp_nanos().max(0) as u64)
}

fn from_system(t: SystemTime) -> time::OffsetDateTime {
    let nanos = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

impl Backend {
    async fn login(&self, login: Login) -> Result<SessionGrant, AuthFailure> {
        let app = &self.app;
        let user: User = match app.authenticate(login.password.expose()).await {
            Ok(u) if u.email.eq_ignore_ascii_case(login.user.trim()) => u,
            Ok(_) | Err(AppError::Unauthorized(_)) => {
                self.audit(
                    AuditEvent::LoginFailed {
                        email: login.user.clone(),
                        via: "pg".into(),
                        reason: "bad credentials".into(),
                    },
                    "anonymous",
                )
                .await;
                return Err(AuthFailure::BadCredentials);
            }
            Err(e) => return Err(AuthFailure::Internal(e.to_string())),
        };
        let conn = login.database.trim();
        let internal = |e: AppError| AuthFailure::Internal(e.to_string());
        let decided = match app.native_decision(&user, conn).await.map_err(internal)? {
            Ok(d) => d,
            Err(msg) => {
                return Err(self.denied(conn, &user.email, msg).await);
            }
        };
        let rec = decided.connection;
        let access = access_of(&decided.decision);
        let (review_statements, window) = match &access {
            NativeAccess::Denied(msg) => {
                return Err(self.denied(conn, &user.email, msg.clone()).await);
            }
            NativeAccess::Free { window } => (false, *window),
            NativeAccess::Reviewed => (true, None),
        };
        let target = app
            .target_for(&rec)
            .map_err(|e| AuthFailure::Internal(e.to_string()))?;
        let url = target
            .url
            .as_ref()
            .map(|u| u.expose().clone())
            .unwrap_or_default();
        let upstream = upstream_from_url(&url).map_err(|e| AuthFailure::Internal(e.to_string()))?;
        // The session's row and entries are written by `start_session`, while the proxy opens
        // the upstream (the login costs the slower of the two, not their sum).
        let session_id = Uuid::now_v7();
        let revoked = window.map(|(id, _)| app.register_grant(id));
        let (end_tx, terminate) = tokio::sync::watch::channel(None);
        let watcher = tokio::spawn(watch_session(
            app.clone(),
            Live {
                token_sha256: crate::auth::token_hash(login.password.expose()),
                email: user.email.clone(),
                connection: conn.to_string(),
                access,
                session_id,
            },
            self.held.clone(),
            end_tx,
            revoked,
        ));
        if let Ok(mut w) = self.watchers.lock() {
            w.insert(session_id, watcher.abort_handle());
            metrics::gauge!("warden_proxy_sessions_live").set(w.len() as f64);
        }
        Ok(SessionGrant {
            session_id,
            user: user.email,
            connection: conn.into(),
            upstream,
            review_statements,
            review_id: window.map(|w| w.0),
            ends_at: window.map(|w| to_system(w.1)),
            terminate,
        })
    }

    /// A refused login, audited.
    async fn denied(&self, connection: &str, user: &str, reason: String) -> AuthFailure {
        self.audit(
            AuditEvent::AccessDenied {
                connection: connection.into(),
                reason: reason.clone(),
            },
            user,
        )
        .await;
        AuthFailure::Denied(reason)
    }

    async fn audit(&self, ev: AuditEvent, actor: &str) {
        if let Err(e) = self.app.audit_native(actor, ev).await {
            tracing::error!(error = %e, "could not audit a proxy event");
        }
    }

    async fn decide(
        &self,
        grant: &SessionGrant,
        statement: &Statement<'_>,
    ) -> Result<StatementDecision, AppError> {
        // The classifier reads the statement's own text (parameters are values, never SQL).
        let reading = self.readings.read(statement.text);
        if reading.is_read() {
            // Runs read-only on the server whatever the classifier missed.
            return Ok(StatementDecision::Allow {
                review_id: grant.review_id,
                read_write: false,
            });
        }
        if let warden_core::classify::Reading::Write { reason } = &reading {
            tracing::debug!(%reason, "not a read");
        }
        // Not a read: the application rules on it (current user, groups, rules and windows).
        let (review, user) = match self
            .app
            .rule_on_native_statement(&grant.user, &grant.connection, statement.to_string())
            .await?
        {
            StatementRuling::Allow { review_id } => {
                return Ok(StatementDecision::Allow {
                    review_id,
                    read_write: true,
                });
            }
            StatementRuling::Deny(message) => return Ok(StatementDecision::Deny { message }),
            StatementRuling::Held { review, user } => (review, *user),
        };
        let id = review.id;
        if let Ok(mut h) = self.held.lock() {
            h.insert(id, grant.session_id);
        }
        let app = self.app.clone();
        let outcome = async move {
            match app.await_held(&user, id).await {
                HeldResult::Approved => HeldOutcome::Approved { review_id: id },
                HeldResult::Rejected { by, reason } => HeldOutcome::Rejected { by, reason },
                HeldResult::Expired => HeldOutcome::Expired,
            }
        }
        .boxed();
        Ok(StatementDecision::Held {
            review_id: Some(id),
            review_url: self.app.review_url(id),
            outcome,
        })
    }

    /// A held statement that ran: its review becomes EXECUTED with the server's outcome.
    async fn finish_held(&self, log: &StatementLog) {
        let Some(id) = log.review_id else { return };
        let tag = log.tag.clone().unwrap_or_default();
        let ev = AuditEvent::ReviewExecuted {
            review_id: id,
            session_id: log.session_id,
            // Failed, or skipped by the server after an earlier message of its batch failed.
            exit_code: i32::from(tag.starts_with("ERROR") || tag == warden_pgwire::SKIPPED),
            output_sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(tag.as_bytes())),
            duration_ms: 0,
        };
        // A rejected or expired statement is not APPROVED: nothing to record.
        if let Err(e) = self.app.mark_review_executed(id, ev).await {
            tracing::error!(error = %e, review = %id, "could not record a held statement's execution");
        }
    }
}

impl ProxyBackend for Backend {
    async fn authenticate(&self, login: Login) -> Result<SessionGrant, AuthFailure> {
        self.login(login).await
    }

    async fn start_session(&self, grant: &SessionGrant) -> Result<(), String> {
        self.app
            .start_native_session(
                grant.session_id,
                &grant.user,
                &grant.connection,
                grant.review_id,
            )
            .await
            .map_err(|e| format!("{e:#}"))?;
        metrics::counter!("warden_proxy_sessions_total").increment(1);
        Ok(())
    }

    async fn authorize(
        &self,
        grant: &SessionGrant,
        statement: &Statement<'_>,
    ) -> StatementDecision {
        match self.decide(grant, statement).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "statement decision failed: denying");
                StatementDecision::Deny {
                    message: format!(
                        "Warden could not decide this statement ({}); it was not run",
                        e.code()
                    ),
                }
            }
        }
    }

    async fn record(&self, batch: Vec<StatementLog>) -> Result<(), Unrecorded> {
        let records: Vec<StatementRecord> = batch
            .iter()
            .map(|l| StatementRecord {
                session_id: l.session_id,
                user: l.user.to_string(),
                connection: l.connection.to_string(),
                review_id: l.review_id,
                statement: l.statement.clone(),
                at: from_system(l.at),
                tag: l.tag.clone(),
            })
            .collect();
        let n = records.len();
        if let Err(e) = self.app.record_native_statements(records).await {
            // Handed back: the proxy retries it and holds every session meanwhile.
            metrics::counter!("warden_proxy_audit_failures_total").increment(1);
            return Err(Unrecorded {
                batch,
                reason: format!("{e:#}"),
            });
        }
        metrics::counter!("warden_proxy_statements_total").increment(n as u64);
        // Held statements that ran: settled once their records are durable.
        for l in &batch {
            // A refusal's record names its review too; what ended it was the decision (or the
            // lack of one, settled when the session ends), not a run.
            if matches!(l.tag.as_deref(), Some("REJECTED" | "EXPIRED")) {
                continue;
            }
            let held = l.review_id.is_some_and(|id| {
                self.held
                    .lock()
                    .map(|mut h| h.remove(&id).is_some())
                    .unwrap_or(false)
            });
            if held {
                self.finish_held(l).await;
            }
        }
        Ok(())
    }

    async fn session_ended(&self, grant: &SessionGrant) {
        if let Some(w) = self.watchers.lock().ok().and_then(|mut w| {
            let removed = w.remove(&grant.session_id);
            metrics::gauge!("warden_proxy_sessions_live").set(w.len() as f64);
            removed
        }) {
            w.abort();
        }
        let app = &self.app;
        // Every record of the session has arrived: a held statement still listed never
        // reported back (its client left while it waited or ran).
        for id in held_by(&self.held, grant.session_id) {
            if let Ok(mut h) = self.held.lock() {
                h.remove(&id);
            }
            if let Err(e) = app.settle_abandoned(id).await {
                tracing::error!(error = %e, review = %id, "could not settle an abandoned held statement");
            }
        }
        if let Err(e) = app.end_native_session(grant.session_id, &grant.user).await {
            tracing::error!(error = %e, "could not close a proxy session record");
        }
    }
}

fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading WARDEN_TLS_CERT {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing WARDEN_TLS_CERT {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading WARDEN_TLS_KEY {}", key.display()))?;
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS versions")?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("TLS certificate and key do not match")?;
    Ok(Arc::new(cfg))
}

/// Starts the PostgreSQL listener on `listener`.
pub fn spawn(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let tls = match (&app.config.tls_cert, &app.config.tls_key) {
        (Some(c), Some(k)) => Some(tls_config(c, k)?),
        (None, None) => None,
        _ => anyhow::bail!("set both WARDEN_TLS_CERT and WARDEN_TLS_KEY (or neither)"),
    };
    if app.config.require_tls && tls.is_none() {
        anyhow::bail!("WARDEN_REQUIRE_TLS needs WARDEN_TLS_CERT and WARDEN_TLS_KEY");
    }
    let listen: SocketAddr = listener.local_addr()?;
    // Sessions run on dedicated single-threaded relay runtimes, one per two cores unless
    // WARDEN_PG_RELAY_THREADS says otherwise. Fewer relay threads each serving more sessions
    // sleep and wake less often (bench/cpu.sh on 2 cores: 0.7 context switches per transaction
    // with one relay thread, 2.4 with two), and the other cores are left to the audit writer
    // and the web app.
    let relay_threads = std::env::var("WARDEN_PG_RELAY_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| (usize::from(n) / 2).max(1))
                .unwrap_or(1)
        });
    let config = ProxyConfig {
        listen,
        tls,
        require_tls: app.config.require_tls,
        relay_threads,
        audit_stall_timeout: std::time::Duration::from_secs(app.config.pg_audit_stall_sec),
        max_auth_failures: app.config.pg_login_failures.0,
        max_auth_failures_per_user: app.config.pg_login_failures.1,
        max_auth_failures_per_address: app.config.pg_login_failures.2,
        warm_upstreams: app.config.pg_warm_upstreams,
        ..ProxyConfig::default()
    };
    let backend = Arc::new(Backend {
        app,
        held: Arc::default(),
        readings: warden_core::classify::Readings::new(16_384),
        watchers: std::sync::Mutex::new(Default::default()),
    });
    Ok(tokio::spawn(async move {
        if let Err(e) =
            warden_pgwire::serve(listener, backend, config, shutdown.cancelled_owned()).await
        {
            tracing::error!(error = %e, "postgres proxy stopped");
        }
    }))
}
