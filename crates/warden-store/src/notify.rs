//! Notification state: the outbox cursor, deliveries, webhook endpoints, Slack message
//! timestamps and Slack user links (SPEC §5).
//!
//! # The outbox is the audit log
//! Every event worth notifying is already in `audit_log`, written in the same transaction as the
//! change. [`Store::commit_fan_out`] turns a range of audit entries into `deliveries` rows and
//! moves `notify_cursor` in **one** transaction, with a compare-and-set on the cursor: two
//! replicas planning the same range cannot both commit, and a crash before the commit leaves the
//! range to be planned again. `UNIQUE (event_seq, endpoint_key)` is each delivery's idempotency
//! key. [`Store::claim_deliveries`] leases due rows inside a write transaction (serialised on
//! the audit head), so one delivery is sent by one worker at a time.
//!
//! # What it must never do
//! Decide who is notified (that is `warden-notify`), hold a webhook secret in clear (the gateway
//! seals it; this module stores opaque bytes), or log a payload.

use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::backend::{Q, q};
use crate::rows::{corrupt, to_json};
use crate::{AuditCtx, Result, Store, StoreError, dup};

/// An outgoing webhook endpoint (its secret is kept apart, sealed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    pub id: Uuid,
    pub url: String,
    /// Event types delivered (`review.created`, …).
    pub events: Vec<String>,
    pub created_by: String,
    #[serde(with = "warden_core::timefmt::rfc3339_ms")]
    pub created_at: OffsetDateTime,
}

/// A webhook with its sealed signing secret (ciphertext, never interpreted here).
#[derive(Clone)]
pub struct WebhookRecord {
    pub webhook: Webhook,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for WebhookRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookRecord")
            .field("webhook", &self.webhook)
            .field("secret", &"<sealed>")
            .finish()
    }
}

/// A delivery planned by the notifier, before it is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    /// The audit entry that caused it.
    pub event_seq: i64,
    /// The destination; with `event_seq`, the idempotency key.
    pub endpoint_key: String,
    /// `slack_post`, `slack_update`, `slack_dm`, `teams` or `webhook`.
    pub kind: String,
    /// Channel id, webhook id, email or URL, depending on `kind`.
    pub target: String,
    /// `review.created`, `review.approved`, …
    pub event_type: String,
    pub review_id: Option<Uuid>,
    pub payload: serde_json::Value,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Not sent yet (possibly after a few failed attempts).
    Pending,
    /// Failed several times in a row; still retried, with a longer backoff.
    Failing,
    Sent,
    /// Given up for good (destination removed, or retried for too long).
    Dropped,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Failing => "failing",
            Self::Sent => "sent",
            Self::Dropped => "dropped",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "failing" => Self::Failing,
            "sent" => Self::Sent,
            "dropped" => Self::Dropped,
            _ => return None,
        })
    }
}

/// A stored delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: Uuid,
    pub event_seq: i64,
    pub endpoint_key: String,
    pub kind: String,
    pub target: String,
    pub event_type: String,
    pub review_id: Option<Uuid>,
    pub payload: serde_json::Value,
    pub status: DeliveryStatus,
    pub attempts: i64,
    #[serde(with = "warden_core::timefmt::rfc3339_ms")]
    pub next_attempt_at: OffsetDateTime,
    pub last_error: Option<String>,
    #[serde(with = "warden_core::timefmt::rfc3339_ms")]
    pub created_at: OffsetDateTime,
    #[serde(with = "warden_core::timefmt::rfc3339_ms::option")]
    pub sent_at: Option<OffsetDateTime>,
    /// The lease under which the current worker holds it (`None` outside a claim).
    #[serde(skip)]
    pub claim_token: Option<String>,
}

/// What happened to one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryResult {
    Sent,
    /// Retry at `next_attempt_at`; `failing` marks the destination as failing.
    Retry {
        error: String,
        next_attempt_at: OffsetDateTime,
        failing: bool,
    },
    /// Do not count an attempt; look again at `next_attempt_at` (e.g. waiting for the original
    /// Slack message to exist before updating it).
    Defer {
        next_attempt_at: OffsetDateTime,
    },
    Dropped {
        error: String,
    },
}

#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub status: Option<DeliveryStatus>,
    pub review_id: Option<Uuid>,
    pub kind: Option<String>,
    pub page: u32,
    pub per_page: u32,
}

/// A Slack user linked to a Warden user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlackLink {
    pub slack_user_id: String,
    pub team_id: String,
    pub user_email: String,
    #[serde(with = "warden_core::timefmt::rfc3339_ms")]
    pub linked_at: OffsetDateTime,
}

macro_rules! delivery_cols {
    () => {
        "id, event_seq, endpoint_key, kind, target, event_type, review_id, payload, status, \
         attempts, next_attempt_at_ms, last_error, created_at_ms, sent_at_ms, claim_token"
    };
}

#[derive(FromRow)]
struct DeliveryRow {
    id: String,
    event_seq: i64,
    endpoint_key: String,
    kind: String,
    target: String,
    event_type: String,
    review_id: Option<String>,
    payload: String,
    status: String,
    attempts: i64,
    next_attempt_at_ms: i64,
    last_error: Option<String>,
    created_at_ms: i64,
    sent_at_ms: Option<i64>,
    claim_token: Option<String>,
}

fn parse_uuid(table: &str, key: &str, column: &str, s: &str) -> Result<Uuid> {
    Uuid::parse_str(s).map_err(|e| corrupt(table, key, column, format_args!("bad UUID {s:?}: {e}")))
}

fn ms_time(table: &str, key: &str, column: &str, ms: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|e| corrupt(table, key, column, format_args!("timestamp {ms}: {e}")))
}

impl DeliveryRow {
    fn into_delivery(self) -> Result<Delivery> {
        let t = "deliveries";
        let k = self.id.as_str();
        Ok(Delivery {
            id: parse_uuid(t, k, "id", k)?,
            event_seq: self.event_seq,
            review_id: self
                .review_id
                .as_deref()
                .map(|s| parse_uuid(t, k, "review_id", s))
                .transpose()?,
            payload: serde_json::from_str(&self.payload)
                .map_err(|e| corrupt(t, k, "payload", format_args!("bad JSON: {e}")))?,
            status: DeliveryStatus::parse(&self.status).ok_or_else(|| {
                corrupt(
                    t,
                    k,
                    "status",
                    format_args!("unknown status {:?}", self.status),
                )
            })?,
            attempts: self.attempts,
            next_attempt_at: ms_time(t, k, "next_attempt_at_ms", self.next_attempt_at_ms)?,
            created_at: ms_time(t, k, "created_at_ms", self.created_at_ms)?,
            sent_at: self
                .sent_at_ms
                .map(|m| ms_time(t, k, "sent_at_ms", m))
                .transpose()?,
            endpoint_key: self.endpoint_key,
            kind: self.kind,
            target: self.target,
            event_type: self.event_type,
            last_error: self.last_error,
            claim_token: self.claim_token,
        })
    }
}

#[derive(FromRow)]
struct WebhookRow {
    id: String,
    url: String,
    events_json: String,
    secret: Vec<u8>,
    created_by: String,
    created_at_ms: i64,
}

impl WebhookRow {
    fn into_record(self) -> Result<WebhookRecord> {
        let t = "webhooks";
        let k = self.id.as_str();
        Ok(WebhookRecord {
            webhook: Webhook {
                id: parse_uuid(t, k, "id", k)?,
                events: serde_json::from_str(&self.events_json)
                    .map_err(|e| corrupt(t, k, "events_json", format_args!("bad JSON: {e}")))?,
                created_at: ms_time(t, k, "created_at_ms", self.created_at_ms)?,
                url: self.url,
                created_by: self.created_by,
            },
            secret: self.secret,
        })
    }
}

#[derive(FromRow)]
struct SlackLinkRow {
    slack_user_id: String,
    team_id: String,
    user_email: String,
    linked_at_ms: i64,
}

impl SlackLinkRow {
    fn into_link(self) -> Result<SlackLink> {
        Ok(SlackLink {
            linked_at: ms_time(
                "slack_links",
                &self.slack_user_id,
                "linked_at_ms",
                self.linked_at_ms,
            )?,
            slack_user_id: self.slack_user_id,
            team_id: self.team_id,
            user_email: self.user_email,
        })
    }
}

/// Longest error text kept per delivery.
const MAX_ERROR_CHARS: usize = 500;

fn clip(s: &str) -> String {
    s.chars().take(MAX_ERROR_CHARS).collect()
}

impl Store {
    // ---- outbox --------------------------------------------------------------------------

    /// The last audit `seq` already fanned out.
    pub async fn notify_cursor(&self) -> Result<i64> {
        let mut h = self.db.read("reading the notification cursor").await?;
        let row: Option<(i64,)> = h
            .fetch_optional(q("SELECT seq FROM notify_cursor WHERE id = 1"))
            .await?;
        row.map(|(s,)| s)
            .ok_or_else(|| StoreError::Corrupt("notify_cursor: the cursor row is missing".into()))
    }

    /// Stores the deliveries planned for audit entries `(from, to]` and moves the cursor from
    /// `from` to `to`, in one transaction. Returns false (and writes nothing) when the cursor is
    /// no longer at `from`: another worker planned that range first. A delivery whose
    /// `(event_seq, endpoint_key)` already exists is skipped (idempotency).
    pub async fn commit_fan_out(
        &self,
        from: i64,
        to: i64,
        planned: &[NewDelivery],
        now: OffsetDateTime,
    ) -> Result<bool> {
        let mut tx = self
            .db
            .write(format!(
                "planning notifications for audit entries {from}..{to}"
            ))
            .await?;
        let moved = tx
            .execute(
                q("UPDATE notify_cursor SET seq = $2 WHERE id = 1 AND seq = $1")
                    .bind(from)
                    .bind(to),
            )
            .await?;
        if moved != 1 {
            return Ok(false);
        }
        for d in planned {
            tx.execute(
                q("INSERT INTO deliveries (id, event_seq, endpoint_key, kind, target, event_type, \
                   review_id, payload, status, attempts, next_attempt_at_ms, created_at_ms) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', 0, $9, $9) \
                   ON CONFLICT (event_seq, endpoint_key) DO NOTHING")
                .bind(Uuid::now_v7())
                .bind(d.event_seq)
                .bind(&d.endpoint_key)
                .bind(&d.kind)
                .bind(&d.target)
                .bind(&d.event_type)
                .bind(d.review_id)
                .bind(to_json("delivery payload", &d.payload)?)
                .bind(now),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Leases up to `limit` due deliveries (pending or failing, `next_attempt_at <= now`, not
    /// leased by a live worker) until `now + lease`, oldest event first. Runs in a write
    /// transaction, so two workers never lease the same row.
    pub async fn claim_deliveries(
        &self,
        now: OffsetDateTime,
        lease: time::Duration,
        limit: i64,
    ) -> Result<Vec<Delivery>> {
        // A cheap read first: most passes find nothing, and need not take the write lock.
        {
            let mut h = self.db.read("looking for due deliveries").await?;
            let due: Option<(i64,)> = h
                .fetch_optional(
                    q(
                        "SELECT event_seq FROM deliveries WHERE status IN ('pending', 'failing') \
                       AND next_attempt_at_ms <= $1 \
                       AND (claimed_until_ms IS NULL OR claimed_until_ms <= $1) LIMIT 1",
                    )
                    .bind(now),
                )
                .await?;
            if due.is_none() {
                return Ok(Vec::new());
            }
        }
        let mut tx = self.db.write("claiming due deliveries").await?;
        let rows: Vec<DeliveryRow> = tx
            .fetch_all(
                q(concat!(
                    "SELECT ",
                    delivery_cols!(),
                    " FROM deliveries WHERE status IN ('pending', 'failing') \
                     AND next_attempt_at_ms <= $1 \
                     AND (claimed_until_ms IS NULL OR claimed_until_ms <= $1) \
                     ORDER BY event_seq, id LIMIT $2"
                ))
                .bind(now)
                .bind(limit.max(0)),
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let token = Uuid::new_v4().to_string();
            tx.execute(
                q("UPDATE deliveries SET claimed_until_ms = $2, claim_token = $3 WHERE id = $1")
                    .bind(row.id.as_str())
                    .bind(now + lease)
                    .bind(token.as_str()),
            )
            .await?;
            let mut d = row.into_delivery()?;
            d.claim_token = Some(token);
            out.push(d);
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Records the outcome of an attempt on a claimed delivery and releases the lease. A lease
    /// that expired and was taken by another worker is left alone (returns false).
    pub async fn finish_delivery(
        &self,
        d: &Delivery,
        result: &DeliveryResult,
        now: OffsetDateTime,
    ) -> Result<bool> {
        let mut h = self.db.read(format!("recording delivery {}", d.id)).await?;
        let token = d.claim_token.clone();
        let query = match result {
            DeliveryResult::Sent => q("UPDATE deliveries SET status = 'sent', \
                   attempts = attempts + 1, sent_at_ms = $3, last_error = NULL, \
                   claimed_until_ms = NULL, claim_token = NULL \
                   WHERE id = $1 AND claim_token = $2")
            .bind(d.id)
            .bind(token)
            .bind(now),
            DeliveryResult::Retry {
                error,
                next_attempt_at,
                failing,
            } => q(
                "UPDATE deliveries SET status = $3, attempts = attempts + 1, \
                   next_attempt_at_ms = $4, last_error = $5, claimed_until_ms = NULL, \
                   claim_token = NULL WHERE id = $1 AND claim_token = $2",
            )
            .bind(d.id)
            .bind(token)
            .bind(if *failing { "failing" } else { "pending" })
            .bind(*next_attempt_at)
            .bind(clip(error)),
            DeliveryResult::Defer { next_attempt_at } => q("UPDATE deliveries SET \
                   next_attempt_at_ms = $3, claimed_until_ms = NULL, claim_token = NULL \
                   WHERE id = $1 AND claim_token = $2")
            .bind(d.id)
            .bind(token)
            .bind(*next_attempt_at),
            DeliveryResult::Dropped { error } => q("UPDATE deliveries SET status = 'dropped', \
                   attempts = attempts + 1, last_error = $3, claimed_until_ms = NULL, \
                   claim_token = NULL WHERE id = $1 AND claim_token = $2")
            .bind(d.id)
            .bind(token)
            .bind(clip(error)),
        };
        Ok(h.execute(query).await? == 1)
    }

    /// Newest first, with the total count.
    pub async fn list_deliveries(&self, filter: &DeliveryFilter) -> Result<(Vec<Delivery>, i64)> {
        fn where_(f: &DeliveryFilter, query: &mut Q) -> String {
            let mut w = Vec::new();
            if let Some(s) = f.status {
                w.push(format!("status = {}", query.next_param()));
                query.push(s.as_str());
            }
            if let Some(r) = f.review_id {
                w.push(format!("review_id = {}", query.next_param()));
                query.push(r);
            }
            if let Some(k) = &f.kind {
                w.push(format!("kind = {}", query.next_param()));
                query.push(k.as_str());
            }
            crate::query::where_sql(&w)
        }
        let mut h = self.db.read("listing deliveries").await?;
        let (rows, total): (Vec<DeliveryRow>, i64) = crate::query::fetch_page(
            &mut h,
            "deliveries",
            delivery_cols!(),
            "event_seq DESC, id DESC",
            |q| where_(filter, q),
            filter.page,
            filter.per_page,
        )
        .await?;
        Ok((
            rows.into_iter()
                .map(DeliveryRow::into_delivery)
                .collect::<Result<_>>()?,
            total,
        ))
    }

    /// The Slack post delivery of a review, if one was planned (its status tells whether the
    /// original message exists yet).
    pub async fn slack_post_status(&self, review_id: Uuid) -> Result<Option<DeliveryStatus>> {
        let mut h = self
            .db
            .read(format!("reading the Slack post of review {review_id}"))
            .await?;
        let row: Option<(String,)> = h
            .fetch_optional(
                q(
                    "SELECT status FROM deliveries WHERE review_id = $1 AND kind = 'slack_post' \
                   ORDER BY event_seq LIMIT 1",
                )
                .bind(review_id),
            )
            .await?;
        Ok(row.and_then(|(s,)| DeliveryStatus::parse(&s)))
    }

    // ---- webhooks ------------------------------------------------------------------------

    /// Creates a webhook endpoint (secret already sealed by the caller).
    pub async fn insert_webhook(&self, rec: &WebhookRecord, audit: AuditCtx) -> Result<()> {
        let w = &rec.webhook;
        let mut tx = self.db.write(format!("creating webhook {}", w.id)).await?;
        let res = tx
            .execute(
                q("INSERT INTO webhooks (id, url, events_json, secret, created_by, created_at_ms) \
                   VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(w.id)
                .bind(&w.url)
                .bind(to_json("webhook events", &w.events)?)
                .bind(rec.secret.as_slice())
                .bind(&w.created_by)
                .bind(w.created_at),
            )
            .await;
        dup(res, || format!("webhook {} already exists", w.id))?;
        tx.audit(audit.now, &audit.actor, &audit.events)?;
        tx.commit().await
    }

    /// Oldest first, with their sealed secrets.
    pub async fn list_webhooks(&self) -> Result<Vec<WebhookRecord>> {
        let mut h = self.db.read("listing webhooks").await?;
        let rows: Vec<WebhookRow> = h
            .fetch_all(q(
                "SELECT id, url, events_json, secret, created_by, created_at_ms FROM webhooks \
                 ORDER BY created_at_ms, id",
            ))
            .await?;
        rows.into_iter().map(WebhookRow::into_record).collect()
    }

    pub async fn get_webhook(&self, id: Uuid) -> Result<Option<WebhookRecord>> {
        let mut h = self.db.read(format!("reading webhook {id}")).await?;
        let row: Option<WebhookRow> = h
            .fetch_optional(
                q(
                    "SELECT id, url, events_json, secret, created_by, created_at_ms FROM webhooks \
                   WHERE id = $1",
                )
                .bind(id),
            )
            .await?;
        row.map(WebhookRow::into_record).transpose()
    }

    /// Deletes the endpoint; its undelivered deliveries are dropped. `NotFound` if unknown.
    pub async fn delete_webhook(&self, id: Uuid, audit: AuditCtx) -> Result<()> {
        let mut tx = self.db.write(format!("deleting webhook {id}")).await?;
        let n = tx
            .execute(q("DELETE FROM webhooks WHERE id = $1").bind(id))
            .await?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("webhook {id} not found")));
        }
        tx.execute(
            q(
                "UPDATE deliveries SET status = 'dropped', last_error = 'webhook deleted' \
               WHERE kind = 'webhook' AND target = $1 AND status IN ('pending', 'failing')",
            )
            .bind(id),
        )
        .await?;
        tx.audit(audit.now, &audit.actor, &audit.events)?;
        tx.commit().await
    }

    /// Webhook ids with at least one delivery currently marked failing.
    pub async fn failing_webhooks(&self) -> Result<Vec<Uuid>> {
        let mut h = self.db.read("reading failing webhooks").await?;
        let rows: Vec<(String,)> = h
            .fetch_all(q(
                "SELECT DISTINCT target FROM deliveries WHERE kind = 'webhook' AND status = 'failing'",
            ))
            .await?;
        rows.into_iter()
            .map(|(s,)| parse_uuid("deliveries", &s, "target", &s))
            .collect()
    }

    // ---- Slack ---------------------------------------------------------------------------

    /// `(channel, ts)` of the message posted for a review.
    pub async fn slack_message(&self, review_id: Uuid) -> Result<Option<(String, String)>> {
        let mut h = self
            .db
            .read(format!("reading the Slack message of review {review_id}"))
            .await?;
        h.fetch_optional(
            q("SELECT channel, ts FROM slack_messages WHERE review_id = $1").bind(review_id),
        )
        .await
    }

    /// Remembers the message posted for a review (the first one wins).
    pub async fn set_slack_message(
        &self,
        review_id: Uuid,
        channel: &str,
        ts: &str,
        now: OffsetDateTime,
    ) -> Result<()> {
        let mut h = self
            .db
            .read(format!("recording the Slack message of review {review_id}"))
            .await?;
        h.execute(
            q(
                "INSERT INTO slack_messages (review_id, channel, ts, updated_at_ms) \
               VALUES ($1, $2, $3, $4) ON CONFLICT (review_id) DO NOTHING",
            )
            .bind(review_id)
            .bind(channel)
            .bind(ts)
            .bind(now),
        )
        .await?;
        Ok(())
    }

    /// The Warden user linked to a Slack user.
    pub async fn slack_link(&self, slack_user_id: &str) -> Result<Option<SlackLink>> {
        let mut h = self.db.read("reading a Slack link").await?;
        let row: Option<SlackLinkRow> = h
            .fetch_optional(
                q(
                    "SELECT slack_user_id, team_id, user_email, linked_at_ms FROM slack_links \
                   WHERE slack_user_id = $1",
                )
                .bind(slack_user_id),
            )
            .await?;
        row.map(SlackLinkRow::into_link).transpose()
    }

    /// The Slack user linked to a Warden user (the most recent link).
    pub async fn slack_link_for_email(&self, email: &str) -> Result<Option<SlackLink>> {
        let mut h = self
            .db
            .read(format!("reading the Slack link of {email}"))
            .await?;
        let row: Option<SlackLinkRow> = h
            .fetch_optional(
                q(
                    "SELECT slack_user_id, team_id, user_email, linked_at_ms FROM slack_links \
                   WHERE user_email = $1 ORDER BY linked_at_ms DESC LIMIT 1",
                )
                .bind(email),
            )
            .await?;
        row.map(SlackLinkRow::into_link).transpose()
    }

    /// Links (or re-links) a Slack user to a Warden user, audited.
    pub async fn link_slack_user(&self, link: &SlackLink, audit: AuditCtx) -> Result<()> {
        let mut tx = self
            .db
            .write(format!("linking a Slack user to {}", link.user_email))
            .await?;
        tx.execute(
            q(
                "INSERT INTO slack_links (slack_user_id, team_id, user_email, linked_at_ms) \
               VALUES ($1, $2, $3, $4) ON CONFLICT (slack_user_id) DO UPDATE SET \
               team_id = excluded.team_id, user_email = excluded.user_email, \
               linked_at_ms = excluded.linked_at_ms",
            )
            .bind(link.slack_user_id.as_str())
            .bind(link.team_id.as_str())
            .bind(link.user_email.as_str())
            .bind(link.linked_at),
        )
        .await?;
        tx.audit(audit.now, &audit.actor, &audit.events)?;
        tx.commit().await
    }

    /// Removes a Slack link, audited. Returns whether one existed.
    pub async fn unlink_slack_user(&self, slack_user_id: &str, audit: AuditCtx) -> Result<bool> {
        let mut tx = self.db.write("unlinking a Slack user").await?;
        let n = tx
            .execute(q("DELETE FROM slack_links WHERE slack_user_id = $1").bind(slack_user_id))
            .await?;
        if n == 0 {
            return Ok(false);
        }
        tx.audit(audit.now, &audit.actor, &audit.events)?;
        tx.commit().await?;
        Ok(true)
    }
}
