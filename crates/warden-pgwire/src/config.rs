//! [`ProxyConfig`]: the proxy's knobs, with defaults suited to a gateway on a small machine.
//!
//! Plain data only; nothing here opens sockets or reads files (the gateway loads certificates
//! and hands over a ready `rustls::ServerConfig`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How the proxy listens and what it tolerates.
#[derive(Clone)]
pub struct ProxyConfig {
    /// The address the gateway bound (for logs): [`crate::serve`] uses the listener it is given.
    pub listen: SocketAddr,
    /// Answers `SSLRequest` with TLS when set, with `N` otherwise.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Refuse clear-text startups (ErrorResponse FATAL 28000).
    pub require_tls: bool,
    /// Cap on one client message's body. A longer (or malformed) message ends that session with
    /// an ErrorResponse. Also caps an extended-protocol batch held for statement review.
    pub max_message: usize,
    /// Failed logins of one user from one client address within `auth_failure_window` before
    /// that user's logins from there are refused without asking the backend.
    pub max_auth_failures: u32,
    /// Failed logins of one user from any address (a distributed guess at one account).
    pub max_auth_failures_per_user: u32,
    /// Failed logins from one address for any users (spraying): high, so one shared address
    /// (NAT, CI, a bastion) is not locked out by one user's typos.
    pub max_auth_failures_per_address: u32,
    pub auth_failure_window: Duration,
    /// Time allowed from accept to the end of the client's startup and password messages.
    pub startup_timeout: Duration,
    /// Time allowed to open and authenticate the upstream connection.
    pub connect_timeout: Duration,
    /// Statement records held in memory before relays have to wait for the audit writer.
    pub audit_queue: usize,
    /// Most records per [`crate::ProxyBackend::record`] call.
    pub audit_batch: usize,
    /// How long the audit writer lets a batch fill before writing it.
    pub audit_linger: Duration,
    /// How long sessions wait for an audit store that refuses records before they end: no
    /// session sends the server anything while its records cannot be made durable.
    pub audit_stall_timeout: Duration,
    /// Time live sessions get to close when the server shuts down.
    pub shutdown_grace: Duration,
    /// `0`: sessions run as tasks on the runtime that calls [`crate::serve`]. `n > 0`: sessions
    /// are spread over `n` dedicated threads, each with its own single-threaded runtime, which
    /// saves the cross-thread wake-ups of a work-stealing runtime on every relayed packet
    /// (measurably faster on small machines: see `bench/README.md`). The backend's futures then
    /// run on those threads too.
    pub relay_threads: usize,
    /// Warm upstream logins kept per upstream, startup parameters and relay thread, opened
    /// after a granted session so the next one need not wait for the server to start a
    /// backend; each is used by one session only (see `pool`). `0` opens every upstream on
    /// demand.
    pub warm_upstreams: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 15432)),
            tls: None,
            require_tls: false,
            max_message: 64 << 20,
            max_auth_failures: 5,
            max_auth_failures_per_user: 20,
            max_auth_failures_per_address: 100,
            auth_failure_window: Duration::from_secs(60),
            startup_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(15),
            audit_queue: 65_536,
            audit_batch: 500,
            audit_linger: Duration::from_millis(50),
            audit_stall_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
            relay_threads: 0,
            warm_upstreams: 0,
        }
    }
}

impl std::fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("listen", &self.listen)
            .field("tls", &self.tls.is_some())
            .field("require_tls", &self.require_tls)
            .field("max_message", &self.max_message)
            .field("max_auth_failures", &self.max_auth_failures)
            .field(
                "max_auth_failures_per_user",
                &self.max_auth_failures_per_user,
            )
            .field(
                "max_auth_failures_per_address",
                &self.max_auth_failures_per_address,
            )
            .field("auth_failure_window", &self.auth_failure_window)
            .field("relay_threads", &self.relay_threads)
            .field("warm_upstreams", &self.warm_upstreams)
            .finish_non_exhaustive()
    }
}
