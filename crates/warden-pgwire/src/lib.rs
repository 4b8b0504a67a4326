//! Warden's PostgreSQL wire-protocol proxy: the "works the same in your own client" promise
//! (SPEC §3 "Native clients").
//!
//! A user points psql, pgbench, psycopg, JDBC… at the gateway and logs in with their Warden
//! email as user, an API token as password and the connection name as database. The proxy asks
//! the gateway ([`ProxyBackend::authenticate`]) and, if granted, opens the upstream server with
//! the connection's stored credentials (never shown to the client), then relays the session.
//! Under statement review every query waits for [`ProxyBackend::authorize`]; every statement is
//! audited through [`ProxyBackend::record`] in batches; a session closes when its grant ends
//! ([`SessionGrant::ends_at`]) or is revoked ([`SessionGrant::terminate`]).
//!
//! # Entry points
//! - [`serve`] — the gateway's listener (`WARDEN_PG_LISTEN`).
//! - [`run_tunnel`] — `warden connect`'s local listener that logs in for the user.
//! - [`ProxyBackend`] — what the gateway implements.
//!
//! # Layout
//! - `backend.rs` — the trait and the values crossing it (grant, decisions, audit records).
//! - `config.rs` — [`ProxyConfig`].
//! - [`conninfo`] — the one PostgreSQL connection spec (URL and `sslmode`), shared with the executor.
//! - [`frame`] — pure framing (startup packets, typed messages, the pass-through [`frame::Scanner`]);
//!   fuzzed by `fuzz/`.
//! - [`message`] — the few messages the proxy reads or writes itself.
//! - `stream.rs` — plain/TLS streams on both sides.
//! - `session.rs` — one connection: TLS, startup, login, upstream, relay, end.
//! - `relay/` — the two relay halves and the answer-ordering queue: `mod.rs` (shared state,
//!   the client half without review), `matcher.rs` (the upstream half), `reviewer.rs` (the
//!   client half under statement review).
//! - `upstream.rs` — connecting and authenticating to a PostgreSQL server (cleartext, md5,
//!   SCRAM-SHA-256, TLS), also used by the tunnel to log in to the gateway.
//! - `audit.rs` — the bounded audit channel and its batching writer.
//! - `cancel.rs` — cancel-key mapping (login failure limits: `warden_core::limiter`).
//! - `server.rs`, `tunnel.rs` — the accept loops.
//!
//! # Protocol behaviour
//! - `SSLRequest` → TLS when [`ProxyConfig::tls`] is set, `N` otherwise; `GSSENCRequest` → `N`;
//!   [`ProxyConfig::require_tls`] refuses clear-text startups (FATAL 28000).
//! - Login: `AuthenticationCleartextPassword` (protect it with TLS). Bad credentials → FATAL
//!   28P01; denied → FATAL 28000. After [`ProxyConfig::max_auth_failures`] failures of one user
//!   from one address (or the higher per-user and per-address limits) within the window, logins
//!   are refused (28P01 "too many failed attempts") without asking the backend; one shared
//!   address is not locked out by one user's failures.
//! - The client receives the upstream's `ParameterStatus` messages and a `BackendKeyData` with
//!   the upstream's real pid and a secret of the proxy's own; a `CancelRequest` with that key is
//!   sent on to the upstream with its real secret, which never reaches the client.
//! - Relay: `type + i32 length` frames, each length checked against
//!   [`ProxyConfig::max_message`]; broken input ends that session with FATAL (08P01 / 54000).
//!   Bytes pass through in 64 KiB reads and one write per read; only `Q`, `P`, `E`, `C`, `S`,
//!   `F`, `c`, `f`, `X` and the head of `B` (client) and `C`, `E`, `I`, `s`, `G`, `Z` (server)
//!   are looked at.
//! - Review: a held statement sends a NoticeResponse "Warden: statement held for approval at
//!   URL", then runs (approved) or gets ErrorResponse 42501 "Warden: statement rejected by X:
//!   reason" / "Warden: review expired — resubmit the statement" + ReadyForQuery. An extended
//!   batch is decided at its `Sync` (or `Flush`), one decision per `Execute` in it, on the text
//!   the portal runs plus its parameters (so approving one run of a prepared statement never
//!   approves the next); preparing alone runs nothing and is not asked about. Named statements
//!   are renamed to fresh server-side names so the proxy's idea of what a name runs cannot
//!   drift from the server's. A refused batch is dropped up to its `Sync`.
//!   `FunctionCall` is refused under review (it could run anything unreviewed).
//! - Audit: one [`StatementLog`] per `Query` and per `Execute` (every run of a prepared
//!   statement, with its text), sent when the server answers (with its command tags) or when
//!   the session ends.
//! - End: FATAL 57P01 when the window ends, the grant is revoked, or the server shuts down;
//!   a running statement is cancelled upstream; [`ProxyBackend::session_ended`] is called.
//!
//! # Performance
//! The relay costs about as much CPU per transaction as pgbouncer (measured: `bench/README.md`):
//! one read and one write per direction, no per-message flush, no decoding of rows, audit
//! records batched off the hot path. Most of the remaining cost is the kernel's (an extra
//! loopback hop and wake-up per message). Running sessions on dedicated single-threaded
//! runtimes ([`ProxyConfig::relay_threads`] ≥ 1) avoids a work-stealing runtime's cross-thread
//! wake-ups; the gateway uses one per two cores (fewer threads, each serving more sessions,
//! sleep and wake less often).
//!
//! # Integrating (for the gateway)
//! Implement [`ProxyBackend`]; bind `WARDEN_PG_LISTEN`; call [`serve`] with a [`ProxyConfig`]
//! (TLS from `WARDEN_TLS_CERT`/`WARDEN_TLS_KEY` as a `rustls::ServerConfig` built on the ring
//! provider) and a shutdown future. To end sessions on revoke or window end, keep the
//! `watch::Sender` whose receiver went into [`SessionGrant::terminate`] and send
//! `Some(reason)`; `ends_at` needs nothing more. Audit records arrive in
//! [`ProxyBackend::record`]; failed logins are visible in `authenticate`'s own result.
//!
//! # Architecture invariants
//! - The proxy never decides access: every yes/no comes from the backend.
//! - Upstream credentials never reach the client; the upstream's cancel key never leaves the proxy.
//! - Only the upstream half writes to the client, and only at frame boundaries.
//! - The relay never waits on the audit store (only on a full in-memory queue).
//! - One session's failure never affects another: no shared lock is held across I/O.

mod audit;
mod backend;
mod cancel;
mod config;
pub mod conninfo;
pub mod frame;
pub mod message;
mod pool;
mod prepared;
mod relay;
mod server;
mod session;
mod stream;
mod tunnel;
pub mod upstream;

pub use backend::{
    AuthFailure, HeldOutcome, Login, ProxyBackend, SessionGrant, Statement, StatementDecision,
    StatementLog, Unrecorded, Upstream, UpstreamTls,
};
pub use config::ProxyConfig;
pub use relay::SKIPPED;
pub use server::serve;
pub use stream::Stream;
pub use tunnel::{GatewayAddr, run_tunnel};
