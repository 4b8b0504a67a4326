//! One client connection from accept to close: TLS negotiation, startup, login through the
//! backend, opening the upstream, the relay, and the end of the session.
//!
//! Every failure here ends this one connection with an ErrorResponse and never touches other
//! sessions. The session never decides access: it enforces the backend's [`SessionGrant`],
//! including its end (`ends_at`, `terminate`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use futures::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{Instrument, debug, info, warn};
use warden_core::secret::Secret;

use crate::audit::AuditSink;
use crate::backend::{AuthFailure, Login, ProxyBackend, SessionGrant};
use crate::cancel::{CancelRegistry, CancelTarget};
use crate::config::ProxyConfig;
use crate::frame::{self, FrameError, StartupPacket, cstr, lossy};
use crate::message::{self, Severity, sqlstate};
use crate::relay::{self, ClientEnd, Ending, RelayError, SessionInfo, Shared};
use crate::stream::Stream;
use crate::upstream::{self, ReadError, UpstreamError};
use warden_core::limiter::FailureLimiter;

/// What every session shares.
pub(crate) struct Ctx<B> {
    pub backend: Arc<B>,
    pub config: ProxyConfig,
    pub audit: AuditSink,
    pub limiter: FailureLimiter,
    pub cancels: Arc<CancelRegistry>,
    /// Warm upstream logins (see `pool`).
    pub pool: Arc<crate::pool::WarmPool>,
    /// Becomes true when the server shuts down.
    pub shutdown: watch::Receiver<bool>,
}

/// A client that passed startup and login.
struct Admitted {
    client: Stream,
    buf: BytesMut,
    grant: SessionGrant,
    params: Vec<(String, String)>,
}

/// Why a connection ended before its relay started: the client gets `reply` if set.
struct Refusal {
    reply: Option<BytesMut>,
    log: String,
}

impl Refusal {
    fn fatal(code: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            reply: Some(message::error_frame(Severity::Fatal, code, &message)),
            log: message,
        }
    }
    fn silent(log: impl Into<String>) -> Self {
        Self {
            reply: None,
            log: log.into(),
        }
    }
}

impl From<std::io::Error> for Refusal {
    fn from(e: std::io::Error) -> Self {
        Refusal::silent(format!("client i/o: {e}"))
    }
}

impl From<FrameError> for Refusal {
    fn from(e: FrameError) -> Self {
        Refusal::fatal(
            sqlstate::PROTOCOL_VIOLATION,
            format!("invalid startup: {e}"),
        )
    }
}

impl From<ReadError> for Refusal {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Io(e) => e.into(),
            ReadError::Frame(e) => e.into(),
        }
    }
}

/// Handles one accepted connection to completion.
pub(crate) async fn handle<B: ProxyBackend>(ctx: Arc<Ctx<B>>, tcp: TcpStream, peer: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    let mut stream = Stream::Plain(tcp);
    let admitted =
        tokio::time::timeout(ctx.config.startup_timeout, startup(&ctx, &mut stream, peer)).await;
    let admitted = match admitted {
        Ok(Ok(Some(a))) => a,
        Ok(Ok(None)) => return, // a CancelRequest, handled
        Ok(Err(refusal)) => {
            debug!(%peer, "connection refused: {}", refusal.log);
            if let Some(reply) = refusal.reply {
                let _ = upstream::send(&mut stream, &reply).await;
            }
            let _ = stream.shutdown().await;
            return;
        }
        Err(_) => {
            let reply = message::error_frame(
                Severity::Fatal,
                sqlstate::PROTOCOL_VIOLATION,
                "startup timed out",
            );
            let _ = upstream::send(&mut stream, &reply).await;
            return;
        }
    };
    let span = tracing::info_span!("pg_session", session = %admitted.grant.session_id, user = %admitted.grant.user, connection = %admitted.grant.connection);
    run(ctx, admitted).instrument(span).await;
}

type StartupResult = Result<Option<Admitted>, Refusal>;

/// TLS, startup packet, password, login. The client stream is moved into [`Admitted`] (or
/// handed back with the refusal once TLS replaced it).
async fn startup<B: ProxyBackend>(
    ctx: &Ctx<B>,
    stream: &mut Stream,
    peer: SocketAddr,
) -> StartupResult {
    let mut buf = BytesMut::with_capacity(1024);
    let mut tls_tried = false;
    let (version, params) = loop {
        let packet = read_startup(stream, &mut buf).await?;
        match packet {
            StartupPacket::Ssl if !tls_tried => {
                tls_tried = true;
                if !buf.is_empty() {
                    // Bytes sent before the TLS handshake could be spliced in by an attacker.
                    return Err(Refusal::fatal(
                        sqlstate::PROTOCOL_VIOLATION,
                        "data received before TLS",
                    ));
                }
                match &ctx.config.tls {
                    Some(tls) => {
                        stream.write_all(b"S").await.map_err(Refusal::from)?;
                        let Stream::Plain(tcp) = stream.take() else {
                            return Err(Refusal::silent("TLS over TLS"));
                        };
                        let tls = tokio_rustls::TlsAcceptor::from(tls.clone())
                            .accept(tcp)
                            .await
                            .map_err(|e| Refusal::silent(format!("TLS handshake: {e}")))?;
                        *stream = Stream::ServerTls(Box::new(tls));
                    }
                    None => stream.write_all(b"N").await.map_err(Refusal::from)?,
                }
            }
            StartupPacket::GssEnc => stream.write_all(b"N").await.map_err(Refusal::from)?,
            StartupPacket::Ssl => {
                return Err(Refusal::fatal(
                    sqlstate::PROTOCOL_VIOLATION,
                    "repeated SSLRequest",
                ));
            }
            StartupPacket::Cancel { pid, secret } => {
                if let Some(t) = ctx.cancels.lookup(pid, secret)
                    && let Err(e) = upstream::cancel(&t.host, t.port, &t.tls, t.pid, t.secret).await
                {
                    warn!("cancel request upstream failed: {e}");
                }
                return Ok(None);
            }
            StartupPacket::Startup { version, params } => break (version, params),
        }
    };
    let refuse = |r: Refusal| Err(r);

    let unsupported: Vec<String> = params
        .iter()
        .filter(|(k, _)| k.starts_with("_pq_."))
        .map(|(k, _)| k.clone())
        .collect();
    if version != frame::PROTOCOL_3_0 || !unsupported.is_empty() {
        let mut b = BytesMut::new();
        message::negotiate_protocol_version(&mut b, 0, &unsupported);
        stream.write_all(&b).await.map_err(Refusal::from)?;
    }
    if ctx.config.require_tls && !stream.is_tls() {
        return refuse(Refusal::fatal(
            sqlstate::INVALID_AUTHORIZATION,
            "Warden requires TLS: connect with sslmode=require",
        ));
    }
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let Some(user) = get("user").filter(|u| !u.is_empty()) else {
        return refuse(Refusal::fatal(
            sqlstate::INVALID_AUTHORIZATION,
            "no user name given (use your Warden email)",
        ));
    };
    let database = get("database")
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| user.clone());
    if get("replication").is_some_and(|r| !matches!(r.as_str(), "false" | "off" | "no" | "0")) {
        return refuse(Refusal::fatal(
            sqlstate::FEATURE_NOT_SUPPORTED,
            "replication connections are not supported through Warden",
        ));
    }
    if ctx.limiter.blocked(peer.ip(), &user, monotonic_ms()) {
        return refuse(Refusal::fatal(
            sqlstate::INVALID_PASSWORD,
            "too many failed attempts: try again later",
        ));
    }

    // Ask for the API token.
    let mut b = BytesMut::new();
    message::authentication(&mut b, 3);
    upstream::send(stream, &b).await.map_err(Refusal::from)?;
    let (tag, msg) = upstream::read_message(stream, &mut buf, 64 * 1024)
        .await
        .map_err(Refusal::from)?;
    if tag != b'p' {
        return refuse(Refusal::fatal(
            sqlstate::PROTOCOL_VIOLATION,
            "expected a password message",
        ));
    }
    let password = cstr(&msg[5..]).map(|(p, _)| lossy(p)).unwrap_or_default();
    if password.is_empty() {
        ctx.limiter.failed(peer.ip(), &user, monotonic_ms());
        return refuse(bad_password(&user));
    }
    let login = Login {
        user: user.clone(),
        password: Secret::new(password),
        database,
        peer,
    };
    let grant = match ctx.backend.authenticate(login).await {
        Ok(g) => g,
        Err(AuthFailure::BadCredentials) => {
            ctx.limiter.failed(peer.ip(), &user, monotonic_ms());
            info!(%peer, user, "proxy login failed: bad credentials");
            return refuse(bad_password(&user));
        }
        Err(AuthFailure::RateLimited) => {
            return refuse(Refusal::fatal(
                sqlstate::INVALID_PASSWORD,
                "too many failed attempts: try again later",
            ));
        }
        Err(AuthFailure::Denied(m)) => {
            return refuse(Refusal::fatal(sqlstate::INVALID_AUTHORIZATION, m));
        }
        Err(AuthFailure::Internal(m)) => {
            warn!(%peer, user, "proxy login failed: {m}");
            return refuse(Refusal::fatal(
                sqlstate::INTERNAL_ERROR,
                "Warden could not check this login",
            ));
        }
    };
    ctx.limiter.succeeded(peer.ip(), &user);
    // Only names that the upstream may see pass through.
    let params = params
        .into_iter()
        .filter(|(k, _)| !matches!(k.as_str(), "user" | "database" | "replication"))
        .collect();
    let client = stream.take();
    Ok(Some(Admitted {
        client,
        buf,
        grant,
        params,
    }))
}

fn bad_password(user: &str) -> Refusal {
    Refusal::fatal(
        sqlstate::INVALID_PASSWORD,
        format!("password authentication failed for user \"{user}\""),
    )
}

async fn read_startup(stream: &mut Stream, buf: &mut BytesMut) -> Result<StartupPacket, Refusal> {
    loop {
        // As PostgreSQL: a startup length out of range is logged, and the connection closed
        // without a reply (a client that sent Terminate first, or HTTP, gets no FATAL).
        let parsed = match frame::startup(buf) {
            Err(e @ (frame::FrameError::BadLength { .. } | frame::FrameError::TooLarge { .. })) => {
                return Err(Refusal::silent(format!(
                    "invalid length of startup packet ({e})"
                )));
            }
            other => other?,
        };
        if let Some((packet, len)) = parsed {
            let _ = buf.split_to(len);
            return Ok(packet);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(Refusal::silent("client closed during startup"));
        }
    }
}

/// Opens the upstream, greets the client, relays, and ends the session.
async fn run<B: ProxyBackend>(ctx: Arc<Ctx<B>>, admitted: Admitted) {
    let Admitted {
        mut client,
        buf,
        grant,
        params,
    } = admitted;
    let grant = Arc::new(grant);
    let params = if grant.review_statements {
        match reviewed_params(params) {
            Ok(p) => p,
            Err(refusal) => return refuse_session(&ctx, client, &grant, refusal).await,
        }
    } else {
        params
    };
    // The session's start is recorded while the upstream opens and the client is greeted:
    // it is off the connect's critical path, but nothing the client sends reaches the server
    // before it is durable (the client half waits for it), and one that could not be recorded
    // ends the session before its first message. The session's end is reported after it.
    let started = {
        let (backend, grant) = (ctx.backend.clone(), grant.clone());
        tokio::spawn(async move { backend.start_session(&grant).await })
            .map(|r| r.unwrap_or_else(|e| Err(format!("recording task failed: {e}"))))
            .shared()
    };
    let opened = open_upstream(&ctx, &grant, &params).await;
    let (up, key_guard) = match opened {
        Ok(v) => v,
        Err(refusal) => {
            let _ = started.await;
            return refuse_session(&ctx, client, &grant, refusal).await;
        }
    };
    let pinned = if grant.review_statements {
        match check_pins(&up.parameters) {
            Ok(p) => Some(p),
            Err(refusal) => return refuse_session(&ctx, client, &grant, refusal).await,
        }
    } else {
        None
    };
    let (proxy_pid, proxy_secret, cancel_target, _guard) = key_guard;
    let mut hello = BytesMut::new();
    message::authentication(&mut hello, 0);
    hello.extend_from_slice(&up.parameters);
    message::backend_key_data(&mut hello, proxy_pid, proxy_secret);
    message::ready_for_query(&mut hello, up.status);
    if upstream::send(&mut client, &hello).await.is_err() {
        let _ = started.await;
        ctx.backend.session_ended(&grant).await;
        return;
    }
    info!("session started");

    let (client_r, client_w) = client.split();
    let (up_r, up_w) = up.stream.split();
    let shared = Arc::new(Shared::new(!grant.review_statements));
    let info = SessionInfo::from_grant(&grant);
    let max = ctx.config.max_message;
    let (done_tx, done_rx) = tokio::sync::mpsc::unbounded_channel();
    let review = pinned.map(|pinned| relay::UpstreamReview {
        done: done_tx,
        pinned,
    });
    let status = up.status;
    // The client half runs as its own task so that a packet from one side only wakes the
    // half that handles it.
    let c2u = {
        let (shared, audit, backend, grant, started) = (
            shared.clone(),
            ctx.audit.clone(),
            ctx.backend.clone(),
            grant.clone(),
            started.clone(),
        );
        async move {
            // The upstream writer outlives the client half's loop: dropping it closes the
            // server's side, and the FATAL that says why must be queued before that.
            let mut up_w = up_w;
            if let Err(e) = started.await {
                warn!("the start of the session could not be recorded: {e}");
                shared.end(Ending::Fatal(message::error_frame(
                    Severity::Fatal,
                    sqlstate::INTERNAL_ERROR,
                    "Warden could not record the start of this session; nothing was sent to the server",
                )));
                drop(up_w);
                return;
            }
            let r = if grant.review_statements {
                relay::client_to_upstream_reviewed(
                    client_r,
                    &mut up_w,
                    buf,
                    shared.clone(),
                    info,
                    audit,
                    max,
                    backend,
                    grant,
                    done_rx,
                    status,
                )
                .await
            } else {
                relay::client_to_upstream(
                    client_r,
                    &mut up_w,
                    buf,
                    shared.clone(),
                    info,
                    audit,
                    max,
                )
                .await
            };
            let ending = match r {
                Ok(ClientEnd::Terminated) | Ok(ClientEnd::Closed) | Err(RelayError::Io(_)) => {
                    Ending::ClientDone
                }
                Err(e) => {
                    debug!("client half ended: {e}");
                    let code = match e {
                        RelayError::Frame(FrameError::TooLarge { .. }) | RelayError::Limit(_) => {
                            sqlstate::PROGRAM_LIMIT_EXCEEDED
                        }
                        RelayError::Audit(_) => sqlstate::SYSTEM_ERROR,
                        _ => sqlstate::PROTOCOL_VIOLATION,
                    };
                    Ending::Fatal(message::error_frame(
                        Severity::Fatal,
                        code,
                        &format!("Warden: {e}"),
                    ))
                }
            };
            shared.end(ending);
            drop(up_w);
        }
    };
    let client_half = AbortOnDrop(tokio::spawn(c2u).abort_handle());
    let u2c = relay::upstream_to_client(
        up_r,
        client_w,
        up.leftover,
        shared.clone(),
        ctx.audit.clone(),
        SessionInfo::from_grant(&grant),
        up.status,
        review,
    );
    let mut upstream_half = tokio::spawn(u2c);
    let _upstream_guard = AbortOnDrop(upstream_half.abort_handle());
    // This task watches the grant: when the session must end it tells the upstream half (which
    // writes the FATAL at a frame boundary), and steps in if that half is stuck (e.g. writing
    // to a client that stopped reading).
    let watch = {
        let end = session_end(&ctx, &grant);
        let shared = shared.clone();
        async move {
            shared.end(Ending::Fatal(end.await));
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    };
    let r = tokio::select! {
        r = &mut upstream_half => r.unwrap_or(Ok(relay::UpstreamEnd::Ended { notified: false })),
        _ = watch => {
            upstream_half.abort();
            Ok(relay::UpstreamEnd::Ended { notified: false })
        }
    };
    drop(client_half);
    let cancel_upstream = match r {
        Ok(relay::UpstreamEnd::Ended { notified }) => {
            debug!(notified, "session ended by the proxy");
            true
        }
        other => {
            debug!("upstream half ended: {other:?}");
            false
        }
    };
    if cancel_upstream {
        let t = cancel_target;
        tokio::spawn(async move {
            let _ = upstream::cancel(&t.host, t.port, &t.tls, t.pid, t.secret).await;
        });
    }
    let leftover = shared.drain_logs(&SessionInfo::from_grant(&grant));
    if !leftover.is_empty() {
        ctx.audit.push(leftover).await;
    }
    // The backend hears of the end only after every record of the session (and its start):
    // what it finds unrecorded then did not report back.
    ctx.audit.flush().await;
    let _ = started.await;
    info!("session ended");
    ctx.backend.session_ended(&grant).await;
}

/// Startup parameters a client may set on a connection under statement review: none of them
/// changes how the server reads SQL, who the session is, where names resolve, or whether it
/// may write. Everything else (`options` above all) is refused.
const REVIEWED_STARTUP_PARAMS: &[&str] = &[
    "application_name",
    "client_encoding",
    "datestyle",
    "timezone",
    "intervalstyle",
    "extra_float_digits",
];

/// Settings the proxy pins on the server for a reviewed session, and checks in every
/// `ParameterStatus` after: the lexer's (the classifier parses as PostgreSQL does with these)
/// and the second wall (everything not approved runs read-only).
const PINNED: &[(&str, &str)] = &[
    ("client_encoding", "UTF8"),
    ("standard_conforming_strings", "on"),
    ("default_transaction_read_only", "on"),
];

/// Client encodings that keep every ASCII byte an ASCII character (so quotes and backslashes
/// are what they look like); the server is asked for UTF8 whatever the client said.
fn ascii_safe_encoding(v: &str) -> bool {
    let v: String = v
        .chars()
        .filter(|c| *c != '-' && *c != '_')
        .collect::<String>()
        .to_ascii_lowercase();
    matches!(v.as_str(), "utf8" | "unicode" | "sqlascii")
}

/// The startup parameters of a reviewed session as they go upstream, or the refusal.
fn reviewed_params(params: Vec<(String, String)>) -> Result<Vec<(String, String)>, Refusal> {
    let mut out = Vec::with_capacity(params.len() + PINNED.len());
    for (k, v) in params {
        let key = k.to_ascii_lowercase();
        if !REVIEWED_STARTUP_PARAMS.contains(&key.as_str()) {
            return Err(Refusal::fatal(
                sqlstate::INSUFFICIENT_PRIVILEGE,
                format!(
                    "Warden: the startup parameter {k:?} is not allowed on a connection under \
                     statement review (it could change how the server reads SQL or what the \
                     session may do); remove it (PGOPTIONS, options=…) and reconnect"
                ),
            ));
        }
        if key == "client_encoding" {
            if !ascii_safe_encoding(&v) {
                return Err(Refusal::fatal(
                    sqlstate::INSUFFICIENT_PRIVILEGE,
                    format!(
                        "Warden: client_encoding {v:?} is not allowed on a connection under \
                         statement review; use UTF8 (PGCLIENTENCODING=UTF8)"
                    ),
                ));
            }
            continue;
        }
        out.push((k, v));
    }
    out.extend(PINNED.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Ok(out)
}

/// Checks the server's startup `ParameterStatus` messages against the pins, and returns what
/// the session must keep: the pins, plus who the session is.
fn check_pins(parameters: &[u8]) -> Result<Vec<(String, String)>, Refusal> {
    let mut reported = Vec::new();
    let mut rest = parameters;
    while let Ok(Some((tag, body, len))) = frame::whole(rest, usize::MAX >> 1) {
        if tag == b'S'
            && let Some(kv) = message::parameter_status(body)
        {
            reported.push(kv);
        }
        rest = &rest[len..];
    }
    let mut pinned = Vec::new();
    for (name, want) in PINNED {
        match reported.iter().find(|(k, _)| k == name) {
            Some((_, v)) if v == want => pinned.push((name.to_string(), v.clone())),
            other => {
                return Err(Refusal::fatal(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    format!(
                        "Warden: the server reports {name} = {:?} (Warden needs {want:?} for a \
                         connection under statement review; PostgreSQL 14 or later reports it)",
                        other.map(|(_, v)| v.as_str()).unwrap_or("nothing")
                    ),
                ));
            }
        }
    }
    for name in ["session_authorization", "is_superuser"] {
        if let Some((k, v)) = reported.iter().find(|(k, _)| k == name) {
            pinned.push((k.clone(), v.clone()));
        }
    }
    Ok(pinned)
}

/// Ends a granted session before its relay started: the refusal to the client, the end to
/// the backend.
async fn refuse_session<B: ProxyBackend>(
    ctx: &Ctx<B>,
    mut client: Stream,
    grant: &SessionGrant,
    refusal: Refusal,
) {
    if let Some(reply) = refusal.reply {
        let _ = upstream::send(&mut client, &reply).await;
    }
    let _ = client.shutdown().await;
    info!("session refused: {}", refusal.log);
    ctx.backend.session_ended(grant).await;
}

type KeyParts = (i32, i32, CancelTarget, crate::cancel::CancelGuard);

async fn open_upstream<B: ProxyBackend>(
    ctx: &Ctx<B>,
    grant: &SessionGrant,
    params: &[(String, String)],
) -> Result<(upstream::Connected, KeyParts), Refusal> {
    if grant.ends_at.is_some_and(|t| t <= SystemTime::now()) {
        return Err(Refusal::fatal(
            sqlstate::INVALID_AUTHORIZATION,
            "Warden: the access window has ended",
        ));
    }
    let key = crate::pool::Key::new(&grant.upstream, params);
    let connected = match ctx.pool.take(&key) {
        Some(warm) => Ok(Ok(warm)),
        None => {
            tokio::time::timeout(
                ctx.config.connect_timeout,
                upstream::connect(&grant.upstream, params),
            )
            .await
        }
    };
    let up = match connected {
        Ok(Ok(up)) => {
            // The next session of this key finds a login waiting (never after a failed login:
            // a server that refuses is not asked again on the proxy's own account).
            ctx.pool.refill(key, grant.upstream.clone());
            up
        }
        Ok(Err(e)) => {
            warn!("upstream connection failed: {e}");
            let detail = match &e {
                UpstreamError::Server { code, .. } => format!(" (server said SQLSTATE {code})"),
                // Which check failed, never a credential: the admin's fix is in the URL.
                UpstreamError::Tls(why) => format!(
                    " ({why}, sslmode={})",
                    grant.upstream.tls.sslmode().as_str()
                ),
                UpstreamError::TlsRefused => format!(
                    " (the server does not accept TLS, sslmode={})",
                    grant.upstream.tls.sslmode().as_str()
                ),
                _ => String::new(),
            };
            return Err(Refusal::fatal(
                sqlstate::CONNECTION_FAILURE,
                format!(
                    "Warden could not open the connection \"{}\"{detail}",
                    grant.connection
                ),
            ));
        }
        Err(_) => {
            return Err(Refusal::fatal(
                sqlstate::CONNECTION_FAILURE,
                format!(
                    "Warden timed out opening the connection \"{}\"",
                    grant.connection
                ),
            ));
        }
    };
    let (pid, secret) = up.key.unwrap_or((0, 0));
    let target = CancelTarget {
        host: grant.upstream.host.clone(),
        port: grant.upstream.port,
        tls: grant.upstream.tls.clone(),
        pid,
        secret,
    };
    let (ppid, psecret, guard) = ctx.cancels.register(target.clone());
    Ok((up, (ppid, psecret, target, guard)))
}

/// Aborts a task when dropped (the client half must not outlive its session).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Resolves to the FATAL frame that ends the session: window end, revoke, server shutdown.
fn session_end<B: ProxyBackend>(
    ctx: &Ctx<B>,
    grant: &SessionGrant,
) -> impl std::future::Future<Output = BytesMut> + Send + 'static {
    let ends_at = grant.ends_at;
    let mut terminate = grant.terminate.clone();
    let mut shutdown = ctx.shutdown.clone();
    let connection = grant.connection.clone();
    async move {
        let fatal_frame =
            |m: String| message::error_frame(Severity::Fatal, sqlstate::ADMIN_SHUTDOWN, &m);
        let window = async {
            match ends_at {
                Some(t) => {
                    let left = t
                        .duration_since(SystemTime::now())
                        .unwrap_or(Duration::ZERO);
                    tokio::time::sleep(left).await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let revoked = async move {
            let reason = terminate
                .wait_for(|v| v.is_some())
                .await
                .map(|v| v.clone().unwrap_or_default());
            match reason {
                Ok(reason) => reason,
                // Sender dropped: no revoke can come any more.
                Err(_) => std::future::pending::<String>().await,
            }
        };
        let stopping = async move {
            if shutdown.wait_for(|s| *s).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = window => fatal_frame(format!("Warden: the access window for \"{connection}\" has ended")),
            reason = revoked => fatal_frame(format!("Warden: access to \"{connection}\" was revoked: {reason}")),
            _ = stopping => fatal_frame("Warden: the gateway is shutting down".to_string()),
        }
    }
}

/// Milliseconds on a monotonic clock (since the first call): the login limiter's time.
fn monotonic_ms() -> i64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    i64::try_from(start.elapsed().as_millis()).unwrap_or(i64::MAX)
}
