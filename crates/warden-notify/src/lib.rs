//! Warden's notifications (SPEC §5): Slack, Microsoft Teams and signed webhooks, delivered
//! through a durable outbox.
//!
//! # Layout
//! - [`events`]: which audit events notify whom (`review.created`, …, `session.ended`) and the
//!   webhook payloads.
//! - [`slack`]: the Slack Web API client (bearer token, configurable base URL), request
//!   signature verification (`v0=` HMAC-SHA256), and parsing of interactions / slash commands.
//! - [`blocks`]: Block Kit builders (the review message, its in-place updates, the reject modal).
//! - [`teams`]: Adaptive Cards for Teams incoming webhooks.
//! - [`webhook`]: Standard Webhooks signing (`webhook-id`, `webhook-timestamp`,
//!   `webhook-signature: v1,<base64 HMAC-SHA256>`).
//! - [`worker`]: the [`Notifier`]: fans audit entries out into deliveries and sends them with
//!   retries and exponential backoff. [`Notifier::try_run_once`] is one step, for tests.
//!
//! # The outbox
//! The audit log is the outbox: every event is appended in the same transaction as the change
//! it records. The notifier tails it by `seq` from a durable cursor, writes one delivery per
//! destination (idempotency key: event seq + endpoint) in the same transaction that moves the
//! cursor, then sends deliveries until they succeed. A restart, or a second replica, neither
//! loses nor repeats a notification.
//!
//! # What this crate must never do
//! Decide an approval (Slack clicks are handed to the gateway, which calls the same
//! `App::approve` / `App::reject` as every other path), log a token, a signing secret, a webhook
//! secret or a Teams webhook URL, or let one slow or failing destination hold up the others.

pub mod blocks;
pub mod events;
pub mod slack;
pub mod teams;
pub mod webhook;
pub mod worker;

use std::time::Duration;

use warden_core::secret::Secret;

pub use worker::{Notifier, Now, RunReport};

/// Unseals webhook signing secrets (the gateway's secret box; this crate never sees the key).
pub trait SecretOpener: Send + Sync {
    /// The `whsec_…` secret of webhook `id`, from its sealed bytes.
    fn webhook_secret(&self, id: uuid::Uuid, sealed: &[u8]) -> Result<Secret<String>, String>;
}

/// What the notifier needs to know. Secrets are `Secret`s: a logged config never leaks them.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// Base URL of the web app, for links (`{public_url}/reviews/{id}`).
    pub public_url: String,
    /// Slack Web API base, e.g. `https://slack.com/api` (a local fake in tests).
    pub slack_api_url: String,
    /// `xoxb-…`; `None` = Slack notifications off.
    pub slack_bot_token: Option<Secret<String>>,
    /// How often the background worker looks for new events and due deliveries.
    pub poll: Duration,
    /// First retry delay; doubles per failed attempt up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Consecutive failed attempts after which a delivery is shown as failing.
    pub failing_after: i64,
    /// A delivery still failing this long after it was planned is dropped.
    pub give_up_after: Duration,
    /// Timeout of one HTTP attempt.
    pub http_timeout: Duration,
    /// Deliveries sent concurrently by the background worker.
    pub concurrency: usize,
}

impl NotifyConfig {
    /// Production defaults around the given URLs and token.
    pub fn new(
        public_url: &str,
        slack_api_url: &str,
        slack_bot_token: Option<Secret<String>>,
    ) -> NotifyConfig {
        NotifyConfig {
            public_url: public_url.trim_end_matches('/').to_string(),
            slack_api_url: slack_api_url.trim_end_matches('/').to_string(),
            slack_bot_token,
            poll: Duration::from_secs(1),
            backoff_base: Duration::from_secs(2),
            backoff_max: Duration::from_secs(3600),
            failing_after: 3,
            give_up_after: Duration::from_secs(3 * 24 * 3600),
            http_timeout: Duration::from_secs(10),
            concurrency: 16,
        }
    }

    pub fn review_url(&self, id: uuid::Uuid) -> String {
        format!("{}/reviews/{id}", self.public_url)
    }
}
