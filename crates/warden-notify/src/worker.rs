//! The notifier: fans audit entries out into deliveries, then sends due deliveries with
//! retries and exponential backoff.
//!
//! - **Fan-out** reads the cursor, plans the next entries ([`crate::events::plan`]) and commits
//!   the deliveries together with the cursor move (compare-and-set): on a conflict another
//!   replica did it, and this one simply reads the cursor again.
//! - **Delivery** leases due rows, sends them concurrently (the deliveries of one review's Slack
//!   message in order), and records each outcome. A failed attempt is retried after
//!   `backoff_base · 2^(attempts-1)` (capped); after `failing_after` attempts the delivery shows
//!   as failing and keeps being retried until `give_up_after`.
//!
//! Slack messages are rendered when sent, from the review as it is then, so a message that
//! was slow to post still shows the latest state, and `chat.update` always writes the current
//! outcome ("Approved by 2 of 2 — …").
//!
//! # What it must never do
//! Let one destination block the others (every attempt has a timeout and runs beside the rest),
//! send a delivery it has not leased, or log a token, secret or webhook URL.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use warden_store::notify::{Delivery, DeliveryResult, DeliveryStatus};
use warden_store::{Store, StoreError};

use crate::blocks::{MessageContext, review_message};
use crate::events::{self, SLACK_DM, SLACK_POST, SLACK_UPDATE, TEAMS, WEBHOOK};
use crate::slack::{SlackClient, SlackError};
use crate::{NotifyConfig, SecretOpener, webhook};

/// Audit entries planned per fan-out transaction.
const FAN_OUT_BATCH: i64 = 200;
/// Deliveries leased per pass.
const CLAIM_BATCH: i64 = 64;
/// How long a lease lasts: far longer than one attempt, so a live worker never loses it.
const LEASE: time::Duration = time::Duration::minutes(5);
/// How soon an update waiting for its original Slack message looks again.
const DEFER: Duration = Duration::from_millis(500);

/// What one pass did (for tests and logs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    pub planned: usize,
    pub sent: usize,
    pub retried: usize,
    pub dropped: usize,
}

enum Outcome {
    Sent,
    Retry(String, Option<Duration>),
    Defer,
    Drop(String),
}

impl From<SlackError> for Outcome {
    fn from(e: SlackError) -> Self {
        let after = e.retry_after();
        Outcome::Retry(e.to_string(), after)
    }
}

/// The clock a notifier reads: the gateway passes its own, so deliveries are dated and retried
/// on the same time as every other record (the system clock when none is given).
pub type Now = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

/// The notification worker. Cheap to clone; every replica runs one.
#[derive(Clone)]
pub struct Notifier {
    store: Store,
    cfg: Arc<NotifyConfig>,
    secrets: Arc<dyn SecretOpener>,
    http: reqwest::Client,
    now: Now,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

fn since(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

impl Notifier {
    pub fn new(store: Store, cfg: NotifyConfig, secrets: Arc<dyn SecretOpener>) -> Notifier {
        // No redirects: a webhook endpoint must not bounce our signed request elsewhere.
        let http = reqwest::Client::builder()
            .timeout(cfg.http_timeout)
            .connect_timeout(cfg.http_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("warden-notify/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Notifier {
            store,
            cfg: Arc::new(cfg),
            secrets,
            http,
            now: Arc::new(OffsetDateTime::now_utc),
        }
    }

    /// The same notifier reading `now` instead of the system clock.
    pub fn with_clock(mut self, now: Now) -> Notifier {
        self.now = now;
        self
    }

    fn now(&self) -> OffsetDateTime {
        (self.now)()
    }

    pub fn config(&self) -> &NotifyConfig {
        &self.cfg
    }

    /// The Slack client, when a bot token is configured.
    pub fn slack(&self) -> Option<SlackClient> {
        self.cfg
            .slack_bot_token
            .as_ref()
            .map(|t| SlackClient::new(self.http.clone(), &self.cfg.slack_api_url, t.clone()))
    }

    /// One step: plan every new audit entry, then send every due delivery and wait for them.
    pub async fn try_run_once(&self) -> Result<RunReport, StoreError> {
        let planned = self.fan_out().await?;
        let mut report = self.deliver_due().await?;
        report.planned = planned;
        Ok(report)
    }

    /// Plans deliveries for every audit entry after the cursor. Returns how many were planned.
    pub async fn fan_out(&self) -> Result<usize, StoreError> {
        let mut planned = 0;
        loop {
            let from = self.store.notify_cursor().await?;
            // Statement entries are never notified: left out unread. The cursor then moves to
            // the last entry planned, and the skipped ones are simply never seen again.
            let entries = self
                .store
                .audit_entries_except_statements(from, FAN_OUT_BATCH)
                .await?;
            let Some(last) = entries.last() else {
                return Ok(planned);
            };
            let to = last.seq;
            let mut batch = Vec::new();
            for e in &entries {
                batch.extend(events::plan(&self.store, &self.cfg, e).await?);
            }
            if self
                .store
                .commit_fan_out(from, to, &batch, self.now())
                .await?
            {
                planned += batch.len();
            }
            if (entries.len() as i64) < FAN_OUT_BATCH {
                return Ok(planned);
            }
        }
    }

    /// Leases the due deliveries and sends them, waiting for all of them.
    pub async fn deliver_due(&self) -> Result<RunReport, StoreError> {
        let claimed = self
            .store
            .claim_deliveries(self.now(), LEASE, CLAIM_BATCH)
            .await?;
        let results = futures::future::join_all(
            group(claimed)
                .into_iter()
                .map(|g| async move { self.send_group(g).await }),
        )
        .await;
        let mut report = RunReport::default();
        for r in results.into_iter().flatten() {
            match r {
                DeliveryResult::Sent => report.sent += 1,
                DeliveryResult::Retry { .. } => report.retried += 1,
                DeliveryResult::Dropped { .. } => report.dropped += 1,
                DeliveryResult::Defer { .. } => {}
            }
        }
        Ok(report)
    }

    async fn send_group(&self, group: Vec<Delivery>) -> Vec<DeliveryResult> {
        let mut out = Vec::with_capacity(group.len());
        for d in group {
            let outcome = self.attempt(&d).await;
            let result = self.result_of(&d, outcome);
            match self.store.finish_delivery(&d, &result, self.now()).await {
                Ok(true) => {}
                Ok(false) => tracing::warn!(delivery = %d.id, "delivery lease lost"),
                Err(e) => {
                    tracing::error!(delivery = %d.id, error = %e, "recording a delivery failed")
                }
            }
            if let DeliveryResult::Retry { error, .. } | DeliveryResult::Dropped { error } = &result
            {
                tracing::warn!(delivery = %d.id, kind = %d.kind, event = %d.event_type,
                    attempts = d.attempts + 1, error = %error, "notification not delivered");
            }
            out.push(result);
        }
        out
    }

    fn result_of(&self, d: &Delivery, outcome: Outcome) -> DeliveryResult {
        let t = self.now();
        match outcome {
            Outcome::Sent => DeliveryResult::Sent,
            Outcome::Drop(error) => DeliveryResult::Dropped { error },
            Outcome::Defer => DeliveryResult::Defer {
                next_attempt_at: t + since(DEFER),
            },
            Outcome::Retry(error, after) => {
                let attempts = d.attempts + 1;
                if t - d.created_at > since(self.cfg.give_up_after) {
                    return DeliveryResult::Dropped {
                        error: format!("gave up after {attempts} attempts: {error}"),
                    };
                }
                let exp = u32::try_from(attempts - 1).unwrap_or(u32::MAX).min(30);
                let backoff = self
                    .cfg
                    .backoff_base
                    .saturating_mul(2u32.saturating_pow(exp))
                    .min(self.cfg.backoff_max);
                let delay = after
                    .map_or(backoff, |a| a.max(backoff))
                    .min(self.cfg.backoff_max.max(backoff));
                DeliveryResult::Retry {
                    error,
                    next_attempt_at: t + since(delay),
                    failing: attempts >= self.cfg.failing_after,
                }
            }
        }
    }

    async fn attempt(&self, d: &Delivery) -> Outcome {
        let res = match d.kind.as_str() {
            WEBHOOK => self.send_webhook(d).await,
            TEAMS => self.send_teams(d).await,
            SLACK_POST | SLACK_UPDATE => self.send_slack_message(d).await,
            SLACK_DM => self.send_slack_dm(d).await,
            other => Ok(Outcome::Drop(format!("unknown delivery kind {other}"))),
        };
        res.unwrap_or_else(|e| Outcome::Retry(format!("store: {e}"), None))
    }

    async fn send_webhook(&self, d: &Delivery) -> Result<Outcome, StoreError> {
        let Ok(id) = uuid::Uuid::parse_str(&d.target) else {
            return Ok(Outcome::Drop("bad webhook id".into()));
        };
        let Some(rec) = self.store.get_webhook(id).await? else {
            return Ok(Outcome::Drop("webhook deleted".into()));
        };
        let key = match self
            .secrets
            .webhook_secret(id, &rec.secret)
            .map_err(|e| e.to_string())
            .and_then(|s| webhook::parse_secret(s.expose()).map_err(|e| e.to_string()))
        {
            Ok(k) => k,
            Err(e) => {
                return Ok(Outcome::Retry(
                    format!("webhook secret unusable: {e}"),
                    None,
                ));
            }
        };
        let body = d.payload.to_string().into_bytes();
        let msg_id = format!("msg_{}", d.id.simple());
        let ts = self.now().unix_timestamp();
        let sig = webhook::sign(&key, &msg_id, ts, &body);
        let resp = self
            .http
            .post(&rec.webhook.url)
            .header("content-type", "application/json")
            .header("webhook-id", &msg_id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(body)
            .send()
            .await;
        Ok(http_outcome(resp, "webhook endpoint"))
    }

    async fn send_teams(&self, d: &Delivery) -> Result<Outcome, StoreError> {
        let resp = self
            .http
            .post(&d.target)
            .header("content-type", "application/json")
            .body(d.payload.to_string())
            .send()
            .await;
        Ok(http_outcome(resp, "Teams webhook"))
    }

    async fn send_slack_message(&self, d: &Delivery) -> Result<Outcome, StoreError> {
        let Some(slack) = self.slack() else {
            return Ok(Outcome::Drop(
                "Slack is not configured (WARDEN_SLACK_BOT_TOKEN)".into(),
            ));
        };
        let Some(review_id) = d.review_id else {
            return Ok(Outcome::Drop("no review".into()));
        };
        let Some(review) = self.store.get_review(review_id).await? else {
            return Ok(Outcome::Drop("review not found".into()));
        };
        let existing = self.store.slack_message(review_id).await?;
        if existing.is_none() && d.kind == SLACK_UPDATE {
            // The original message is not posted yet: wait for it rather than post twice.
            if matches!(
                self.store.slack_post_status(review_id).await?,
                Some(DeliveryStatus::Pending | DeliveryStatus::Failing)
            ) {
                return Ok(Outcome::Defer);
            }
        }
        let ctx = MessageContext {
            review_url: self.cfg.review_url(review_id),
            requester_slack: self
                .store
                .slack_link_for_email(&review.requester)
                .await?
                .map(|l| l.slack_user_id),
            connection_type: self
                .store
                .get_connection(&review.connection)
                .await?
                .map(|c| c.connection.kind.as_str().to_string()),
        };
        let (text, blocks) = review_message(&review, &ctx);
        match existing {
            Some((channel, ts)) if d.kind == SLACK_UPDATE => {
                match slack.update_message(&channel, &ts, &text, &blocks).await {
                    Ok(()) => Ok(Outcome::Sent),
                    Err(e) => Ok(e.into()),
                }
            }
            // Posted already (a retry after a crash between post and bookkeeping).
            Some(_) => Ok(Outcome::Sent),
            None => match slack.post_message(&d.target, &text, &blocks).await {
                Ok(ts) => {
                    self.store
                        .set_slack_message(review_id, &d.target, &ts, self.now())
                        .await?;
                    Ok(Outcome::Sent)
                }
                Err(e) => Ok(e.into()),
            },
        }
    }

    async fn send_slack_dm(&self, d: &Delivery) -> Result<Outcome, StoreError> {
        let Some(slack) = self.slack() else {
            return Ok(Outcome::Drop(
                "Slack is not configured (WARDEN_SLACK_BOT_TOKEN)".into(),
            ));
        };
        let user = match self.store.slack_link_for_email(&d.target).await? {
            Some(link) => link.slack_user_id,
            None => match slack.lookup_by_email(&d.target).await {
                Ok(Some(id)) => id,
                Ok(None) => {
                    return Ok(Outcome::Drop(
                        "the requester has no Slack account with this email (link one with /warden subscribe)".into(),
                    ));
                }
                Err(e) => return Ok(e.into()),
            },
        };
        let text = d.payload.get("text").and_then(Value::as_str).unwrap_or("");
        let blocks = d.payload.get("blocks").cloned().unwrap_or(Value::Null);
        match slack.post_message(&user, text, &blocks).await {
            Ok(_) => Ok(Outcome::Sent),
            Err(e) => Ok(e.into()),
        }
    }

    /// Runs fan-out and delivery every `poll` until `shutdown`. Sends run in the background
    /// (bounded by `concurrency`), so a slow endpoint never delays the next pass.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.cfg.poll.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let permits = Arc::new(tokio::sync::Semaphore::new(self.cfg.concurrency.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            while tasks.try_join_next().is_some() {}
            if let Err(e) = self.fan_out().await {
                tracing::error!(error = %e, "planning notifications failed");
                continue;
            }
            let free = permits.available_permits();
            if free == 0 {
                continue;
            }
            let claimed = match self
                .store
                .claim_deliveries(self.now(), LEASE, (free as i64).min(CLAIM_BATCH))
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "claiming deliveries failed");
                    continue;
                }
            };
            for g in group(claimed) {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let me = self.clone();
                tasks.spawn(async move {
                    me.send_group(g).await;
                    drop(permit);
                });
            }
        }
        // Let in-flight attempts finish (each is bounded by the HTTP timeout), so their
        // outcomes are recorded; leases of anything left expire and are retried.
        let _ = tokio::time::timeout(self.cfg.http_timeout * 2, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
    }
}

/// Groups deliveries that must go in order (one review's Slack message); the rest alone.
fn group(claimed: Vec<Delivery>) -> Vec<Vec<Delivery>> {
    let mut ordered: BTreeMap<String, Vec<Delivery>> = BTreeMap::new();
    let mut out = Vec::new();
    for d in claimed {
        match (d.kind.as_str(), d.review_id) {
            (SLACK_POST | SLACK_UPDATE, Some(r)) => {
                ordered.entry(r.to_string()).or_default().push(d)
            }
            _ => out.push(vec![d]),
        }
    }
    out.extend(ordered.into_values());
    out
}

fn http_outcome(resp: Result<reqwest::Response, reqwest::Error>, what: &str) -> Outcome {
    match resp {
        Ok(r) if r.status().is_success() => Outcome::Sent,
        Ok(r) => {
            let after = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            Outcome::Retry(
                format!("{what} answered HTTP {}", r.status().as_u16()),
                after,
            )
        }
        // Without the URL: it may carry a credential (Teams webhooks do).
        Err(e) => {
            let kind = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "connection failed"
            } else {
                "request failed"
            };
            Outcome::Retry(format!("{what}: {kind}"), None)
        }
    }
}
