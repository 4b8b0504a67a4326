//! The application layer: use cases that wire the pure core, the store, the executors and the
//! notifiers. Every entry point takes the acting [`User`] and checks authorization itself, so
//! the HTTP API, the web pages, the proxy backend and Slack all get the same answers.
//!
//! # What it must never do
//! Speak HTTP (that is `api`/`web`), write SQL (that is `warden-store`), or decide a quorum by
//! itself (that is `warden_core::review`). On any store error during authorization it denies.

pub mod analytics;
mod audit;
mod connections;
mod evidence;
mod exec;
mod identity;
pub mod native;
pub mod notify;
pub mod reviews;
mod rules;
pub mod sweeper;
mod web_support;

pub use audit::VerifyReport;
pub use connections::{ConnectionTest, CreateConnection, SavedConnection};
pub use evidence::{ExportFilter, csv_line, export_csv};
pub use exec::ExecResult;
pub use identity::CreateUser;
pub use reviews::{JitResult, ReviewView};

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use thiserror::Error;
use time::OffsetDateTime;
use tokio::sync::broadcast;
use uuid::Uuid;
use warden_core::review::TransitionError;
use warden_core::{ReviewStatus, User};
use warden_store::{Store, StoreError};

use crate::config::Config;
use crate::secrets::SecretBox;

/// The source of time. Tests inject a fake; the core never reads a clock.
pub trait Clock: Send + Sync {
    fn now(&self) -> OffsetDateTime;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A review changed state (broadcast in-process to waiters and live pages; other replicas notice
/// by re-reading the store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReviewChanged {
    pub id: Uuid,
    pub status: ReviewStatus,
}

/// Why a use case refused or failed. The web layer maps kinds to status codes.
#[derive(Debug, Error)]
pub enum AppError {
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("too many attempts: {0}")]
    RateLimited(String),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl AppError {
    pub fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::Conflict {
            code,
            message: message.into(),
        }
    }
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. } | Self::Conflict { code, .. } => code,
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::RateLimited(_) => "rate_limited",
            Self::Internal(_) => "internal",
        }
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Duplicate(m) => Self::conflict("duplicate", m),
            StoreError::NotFound(m) => Self::NotFound(m),
            StoreError::Conflict => Self::conflict("concurrent_update", e.to_string()),
            StoreError::Invalid(m) => Self::bad("invalid", m),
            other => Self::Internal(anyhow::Error::new(other).context("store")),
        }
    }
}

impl From<TransitionError> for AppError {
    fn from(e: TransitionError) -> Self {
        if e.is_conflict() {
            Self::conflict("review_closed", e.to_string())
        } else if e.is_bad_request() {
            Self::bad("invalid_decision", e.to_string())
        } else {
            Self::Forbidden(e.to_string())
        }
    }
}

pub type AppResult<T> = Result<T, AppError>;

impl App {
    /// `"sqlite"` or `"postgres"`: which store this gateway runs on.
    pub fn store_backend(&self) -> &'static str {
        self.store.backend_name()
    }

    /// Writes the store committed and the commits that carried them since it was opened (group
    /// commit: under load, fewer commits than writes).
    pub fn store_write_stats(&self) -> (u64, u64) {
        self.store.write_stats()
    }

    /// Reviews waiting for a decision, all connections (one indexed count).
    pub async fn pending_review_count(&self) -> AppResult<i64> {
        let filter = warden_store::ReviewFilter {
            status: Some(ReviewStatus::Pending),
            per_page: 1,
            ..warden_store::ReviewFilter::default()
        };
        Ok(self.store.list_reviews(&filter).await?.1)
    }

    /// A cheap round trip to the store, for the health check.
    pub async fn store_ping(&self) -> AppResult<()> {
        Ok(self.store.ping().await?)
    }

    /// The user with this email, as the store has them now.
    pub async fn find_user(&self, email: &str) -> AppResult<Option<User>> {
        Ok(self.store.get_user(email).await?)
    }
}

/// The application: shared by every adapter through an `Arc`.
pub struct App {
    /// Private to `app`: every adapter reaches the store through a use case here.
    store: Store,
    pub config: Config,
    secrets: SecretBox,
    clock: Arc<dyn Clock>,
    events: broadcast::Sender<ReviewChanged>,
    /// Failed password logins per user at an address, per user and per address: brute-force
    /// protection that one shared address cannot turn into locking everyone out.
    login_limiter: warden_core::limiter::FailureLimiter,
    /// Live proxy sessions per JIT review: told to close when the window ends or is revoked.
    grants: Mutex<HashMap<Uuid, Vec<tokio::sync::watch::Sender<Option<String>>>>>,
    /// Cancelled when the gateway shuts down: long-polls return early so shutdown is prompt.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// How `command` connections are kept from the gateway (decided at start).
    pub isolation: Arc<warden_exec::sandbox::Isolation>,
    /// The Merkle tree over the chain, grown to the head whenever a checkpoint or a proof is
    /// made (under this lock, so the tree is never larger than a head read under it).
    pub(crate) merkle: tokio::sync::Mutex<warden_core::merkle::ChainTree>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl App {
    pub fn new(
        store: Store,
        config: Config,
        secrets: SecretBox,
        clock: Arc<dyn Clock>,
    ) -> Arc<App> {
        let (events, _) = broadcast::channel(1024);
        if let Err(e) = warden_exec::sandbox::harden_gateway() {
            tracing::warn!("{e}");
        }
        let isolation = Arc::new(warden_exec::sandbox::prepare(config.exec_user.as_deref()));
        match isolation.sandbox() {
            Some(_) => tracing::info!("{}", isolation.describe()),
            None => tracing::warn!("{}", isolation.describe()),
        }
        let login_limiter =
            warden_core::limiter::FailureLimiter::new(warden_core::limiter::Limits {
                per_user_and_address: config.login_failures.0,
                per_user: config.login_failures.1,
                per_address: config.login_failures.2,
                window: std::time::Duration::from_secs(60),
            });
        Arc::new(App {
            isolation,
            store,
            config,
            secrets,
            clock,
            events,
            login_limiter,
            grants: Mutex::new(HashMap::new()),
            shutdown: tokio_util::sync::CancellationToken::new(),
            merkle: tokio::sync::Mutex::new(warden_core::merkle::ChainTree::new()),
        })
    }

    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<ReviewChanged> {
        self.events.subscribe()
    }

    pub(crate) fn publish(&self, id: Uuid, status: ReviewStatus) {
        let _ = self.events.send(ReviewChanged { id, status });
        metrics::counter!("warden_review_transitions_total", "status" => status.as_str())
            .increment(1);
    }

    /// Announces a review change to waiters and live pages (for adapters outside `app`).
    pub fn publish_change(&self, id: Uuid, status: ReviewStatus) {
        self.publish(id, status);
    }

    pub fn review_url(&self, id: Uuid) -> String {
        format!("{}/reviews/{id}", self.config.public_url)
    }

    /// The login limiter's clock: milliseconds on the app's clock (the fake one in tests).
    fn limiter_ms(&self) -> i64 {
        i64::try_from(self.now().unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
    }

    /// Records a failed password login of `email` from `peer`.
    pub fn note_login_failure(&self, peer: IpAddr, email: &str) {
        self.login_limiter.failed(peer, email, self.limiter_ms());
    }

    /// Records a successful login (clears the user's counts, not the address's).
    pub fn note_login_success(&self, peer: IpAddr, email: &str) {
        self.login_limiter.succeeded(peer, email);
    }

    /// True while `email` from `peer` may not try again (fail closed on a poisoned lock).
    pub fn login_limited(&self, peer: IpAddr, email: &str) -> bool {
        self.login_limiter.blocked(peer, email, self.limiter_ms())
    }

    /// Registers a live session on a JIT grant; the receiver gets `Some(reason)` when it must close.
    pub fn register_grant(&self, review_id: Uuid) -> tokio::sync::watch::Receiver<Option<String>> {
        let (tx, rx) = tokio::sync::watch::channel(None);
        if let Ok(mut g) = self.grants.lock() {
            let list = g.entry(review_id).or_default();
            list.retain(|s| !s.is_closed());
            list.push(tx);
        }
        rx
    }

    pub(crate) fn close_grant(&self, review_id: Uuid, reason: &str) {
        let senders = self
            .grants
            .lock()
            .map(|mut g| g.remove(&review_id).unwrap_or_default())
            .unwrap_or_default();
        for s in senders {
            let _ = s.send(Some(reason.to_string()));
        }
    }

    fn require_admin(&self, actor: &User) -> AppResult<()> {
        if actor.admin {
            Ok(())
        } else {
            Err(AppError::Forbidden("this action requires an admin".into()))
        }
    }

    /// Reading every review, session and audit entry: admins and auditors.
    fn require_reader(&self, actor: &User) -> AppResult<()> {
        if actor.reads_all() {
            Ok(())
        } else {
            Err(AppError::Forbidden(
                "this page requires an admin or auditor account".into(),
            ))
        }
    }
}
