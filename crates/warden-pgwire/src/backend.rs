//! The seam between the proxy and the gateway: [`ProxyBackend`] and the values that cross it.
//!
//! The proxy never decides access itself. Who may log in, which upstream a login opens, whether a
//! statement runs, and where audit records go are all answered by the backend (the gateway). This
//! module only defines the questions and the shapes of the answers.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use futures::future::BoxFuture;
use uuid::Uuid;
use warden_core::secret::Secret;

use crate::conninfo::SslMode;

/// The gateway side of the proxy. One instance serves every session, so every method takes `&self`
/// and must be cheap to call concurrently.
pub trait ProxyBackend: Send + Sync + 'static {
    /// Checks a login. `user` is the Warden email, `password` the API token, `database` the
    /// connection name. Called at most once per client connection and never when the peer or
    /// user is rate-limited after repeated failures.
    fn authenticate(
        &self,
        login: Login,
    ) -> impl Future<Output = Result<SessionGrant, AuthFailure>> + Send;

    /// Makes the start of a granted session durable (the gateway's session row and audit
    /// entries). Called once per grant, as its own task, while the upstream connection opens
    /// and the client is greeted: it is off the connect's critical path, but nothing the
    /// client sends is forwarded before it succeeded. An `Err` (its text is logged, never
    /// shown) ends the session before its first message reaches the server.
    /// [`ProxyBackend::session_ended`] is called only after it finished.
    fn start_session(
        &self,
        grant: &SessionGrant,
    ) -> impl Future<Output = Result<(), String>> + Send;

    /// Decides one statement. Called only when `grant.review_statements` is true: once per
    /// simple-protocol `Query` (its whole text, which may hold several statements) and once per
    /// `Execute` of an extended-protocol batch (the prepared text and its parameters). The
    /// gateway classifies the text; the proxy only enforces the answer, and runs everything
    /// not allowed read-write in a read-only transaction on the server. Other sessions are
    /// never blocked while this future is pending.
    fn authorize(
        &self,
        grant: &SessionGrant,
        statement: &Statement<'_>,
    ) -> impl Future<Output = StatementDecision> + Send;

    /// Makes batched statement audit records durable. Called from one background task, never
    /// on a relay's hot path; batches arrive in the order the statements completed per session.
    /// On failure the batch comes back: the proxy retries it and, until it succeeds, lets no
    /// session send the server anything more (see `audit`), so nothing runs unrecorded.
    fn record(
        &self,
        batch: Vec<StatementLog>,
    ) -> impl Future<Output = Result<(), Unrecorded>> + Send;

    /// Called once when a session that was granted ends, whatever the reason (a refusal after
    /// the grant included, whether or not [`ProxyBackend::start_session`] succeeded) — after
    /// every record of a relayed session has been handed to [`ProxyBackend::record`].
    fn session_ended(&self, grant: &SessionGrant) -> impl Future<Output = ()> + Send;
}

/// What a client presented at startup.
#[derive(Debug, Clone)]
pub struct Login {
    /// The Warden user's email (the PostgreSQL `user` startup parameter).
    pub user: String,
    /// The user's API token (the cleartext password the client sent).
    pub password: Secret<String>,
    /// The Warden connection name (the PostgreSQL `database` startup parameter).
    pub database: String,
    /// The client's address, for the audit trail and rate limits.
    pub peer: SocketAddr,
}

/// How the proxy secures its connection to the upstream server: libpq's `sslmode`, as
/// [`crate::conninfo`] reads it from the connection's URL (exactly as the executor does).
/// `Require` encrypts without checking the certificate (as libpq's `require` does not);
/// `VerifyCa` checks the chain against `root`, `VerifyFull` the chain and the host name. `root`
/// `None` means libpq's default, `~/.postgresql/root.crt`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum UpstreamTls {
    /// Plain TCP.
    Disable,
    /// TLS if the server offers it, plain TCP otherwise.
    #[default]
    Prefer,
    /// TLS or fail.
    Require,
    /// TLS or fail, with a certificate chain that leads to `root`.
    VerifyCa { root: Option<PathBuf> },
    /// TLS or fail, with a certificate chain that leads to `root` and names the host.
    VerifyFull { root: Option<PathBuf> },
}

impl UpstreamTls {
    /// The mode for a parsed `sslmode` and `sslrootcert`.
    pub fn new(mode: SslMode, root: Option<PathBuf>) -> Self {
        match mode {
            SslMode::Disable => UpstreamTls::Disable,
            SslMode::Prefer => UpstreamTls::Prefer,
            SslMode::Require => UpstreamTls::Require,
            SslMode::VerifyCa => UpstreamTls::VerifyCa { root },
            SslMode::VerifyFull => UpstreamTls::VerifyFull { root },
        }
    }
    pub fn sslmode(&self) -> SslMode {
        match self {
            UpstreamTls::Disable => SslMode::Disable,
            UpstreamTls::Prefer => SslMode::Prefer,
            UpstreamTls::Require => SslMode::Require,
            UpstreamTls::VerifyCa { .. } => SslMode::VerifyCa,
            UpstreamTls::VerifyFull { .. } => SslMode::VerifyFull,
        }
    }
    /// The root certificate file of a `verify-*` mode.
    pub fn root(&self) -> Option<&Path> {
        match self {
            UpstreamTls::VerifyCa { root } | UpstreamTls::VerifyFull { root } => root.as_deref(),
            _ => None,
        }
    }
}

/// Where a session's statements actually run. Its credentials never reach the client.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// `None` for trust authentication; any password request then fails the session.
    pub password: Option<Secret<String>>,
    pub database: String,
    pub tls: UpstreamTls,
}

/// What a successful login grants: one session on one upstream, under the gateway's conditions.
#[derive(Debug, Clone)]
pub struct SessionGrant {
    /// Identifies the session in audit records.
    pub session_id: Uuid,
    /// The Warden user (email).
    pub user: String,
    /// The Warden connection name.
    pub connection: String,
    pub upstream: Upstream,
    /// When true every `Query` and every `Execute` goes through [`ProxyBackend::authorize`]
    /// before it is forwarded, the session's startup parameters are an allowlist, and the
    /// server is pinned read-only (`default_transaction_read_only`) except for approved
    /// statements. When false statements run freely (still audited).
    pub review_statements: bool,
    /// The JIT review that opened this session, if any; copied into every [`StatementLog`].
    pub review_id: Option<Uuid>,
    /// The session is closed (FATAL 57P01) when this instant passes, e.g. a JIT window's end.
    pub ends_at: Option<SystemTime>,
    /// `Some(reason)` closes the session at once (FATAL 57P01 carrying the reason), e.g. on
    /// revoke. Dropping the sender does *not* close the session: send a reason to do that.
    pub terminate: tokio::sync::watch::Receiver<Option<String>>,
}

/// One statement the proxy asks about.
#[derive(Debug, Clone, Copy)]
pub struct Statement<'a> {
    /// The SQL text as the server will parse it (a `Query`'s text, or a prepared statement's).
    pub text: &'a str,
    /// The parameters of an `Execute`, rendered for a reviewer (`$1 = '42', …`).
    pub params: Option<&'a str>,
}

impl std::fmt::Display for Statement<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.params {
            Some(p) => write!(f, "{}\n-- parameters: {p}", self.text),
            None => f.write_str(self.text),
        }
    }
}

/// The gateway's answer for one statement.
pub enum StatementDecision {
    /// Forward the statement. `review_id` is the review that authorised it (if any), recorded
    /// in the statement's audit record. `read_write` lets it write: only an approved statement
    /// (or one the current rules no longer hold) gets it; everything else runs in a read-only
    /// transaction on the server, whatever the classifier thought of it.
    Allow {
        review_id: Option<Uuid>,
        read_write: bool,
    },
    /// The statement waits for a human. The client gets a NoticeResponse naming `review_url`,
    /// then the proxy awaits `outcome`.
    Held {
        /// The review holding it: a refusal's record names it, as an approval's does.
        review_id: Option<Uuid>,
        review_url: String,
        outcome: BoxFuture<'static, HeldOutcome>,
    },
    /// Refuse the statement (ErrorResponse 42501 with `message`); the session goes on.
    Deny { message: String },
}

impl std::fmt::Debug for StatementDecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Allow {
                review_id,
                read_write,
            } => f
                .debug_struct("Allow")
                .field("review_id", review_id)
                .field("read_write", read_write)
                .finish(),
            Self::Held { review_url, .. } => f
                .debug_struct("Held")
                .field("review_url", review_url)
                .finish(),
            Self::Deny { message } => f.debug_struct("Deny").field("message", message).finish(),
        }
    }
}

/// How a held statement's review ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeldOutcome {
    Approved { review_id: Uuid },
    Rejected { by: String, reason: String },
    Expired,
}

/// Why a login was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// Unknown user or wrong token: 28P01, counted by the brute-force limiter.
    BadCredentials,
    /// Known user, no access (no grant, window over, …): 28000 with this message.
    Denied(String),
    /// The gateway's own limiter refused: 28P01 "too many failed attempts".
    RateLimited,
    /// Something broke; the client sees a generic message, the detail is logged.
    Internal(String),
}

/// A batch [`ProxyBackend::record`] could not make durable, handed back to be retried.
#[derive(Debug)]
pub struct Unrecorded {
    pub batch: Vec<StatementLog>,
    pub reason: String,
}

/// One statement of a proxied session, for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementLog {
    pub session_id: Uuid,
    /// Shared by every record of the session (no copy per statement).
    pub user: Arc<str>,
    pub connection: Arc<str>,
    /// The review that authorised the statement: the per-statement approval, else the grant's.
    pub review_id: Option<Uuid>,
    /// The text as the client sent it (`Query` text or `Parse` query text).
    pub statement: String,
    /// When the proxy received the statement.
    pub at: SystemTime,
    /// The outcome as the server reported it: command tags (`"UPDATE 3"`, several joined with
    /// `", "` for a multi-statement query), `"ERROR <sqlstate>"`, or the proxy's own
    /// `"REJECTED"` / `"DENIED"`. `None` when the session ended before the server answered.
    pub tag: Option<String>,
}
