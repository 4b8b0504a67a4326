//! Notification use cases: webhook endpoints and the delivery log (admins), the notifier
//! worker's wiring, Slack user linking (`/warden subscribe`), and Slack button clicks.
//!
//! # What it must never do
//! Decide a review itself: an Approve click or a reject-modal submission goes through the same
//! [`App::approve`] / [`App::reject`] as the API, the CLI and the web app, with the Warden user
//! the Slack user is linked to, so every rule (eligibility, self-approval, quorum, conflicts)
//! applies unchanged. It never returns or logs a webhook secret after creation, nor a Teams
//! webhook URL.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;
use warden_core::audit::AuditEvent;
use warden_core::review::ApproveInput;
use warden_core::secret::Secret;
use warden_core::{ReviewStatus, User};
use warden_notify::events::EVENT_TYPES;
use warden_notify::slack::{Interaction, SlackClient, SlackUser, SlashCommand, ephemeral};
use warden_notify::{Notifier, NotifyConfig, SecretOpener, blocks, webhook};
use warden_store::AuditCtx;
use warden_store::notify::{
    Delivery, DeliveryFilter, DeliveryStatus, SlackLink, Webhook, WebhookRecord,
};

use super::{App, AppError, AppResult};
use crate::secrets::ConnectionSecrets;

/// Name of the sealed value holding a webhook's signing secret.
const SIGNING_SECRET: &str = "signing_secret";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    pub url: String,
    /// Event types; empty = all of them.
    #[serde(default)]
    pub events: Vec<String>,
    /// `whsec_…`; absent = generated (and shown once).
    #[serde(default)]
    pub secret: Option<Secret<String>>,
}

/// A webhook as admins see it (never its secret).
#[derive(Debug, Clone, Serialize)]
pub struct WebhookView {
    #[serde(flatten)]
    pub webhook: Webhook,
    /// Some delivery to it is currently failing (still retried).
    pub failing: bool,
}

/// The answer to creating a webhook: the only time its secret is shown.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub webhook: Webhook,
    pub secret: String,
}

/// A delivery as admins see it: no payload, destination URLs reduced to their host.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryView {
    pub id: Uuid,
    pub event_seq: i64,
    pub event_type: String,
    pub kind: String,
    pub target: String,
    pub review_id: Option<Uuid>,
    pub status: DeliveryStatus,
    pub attempts: i64,
    #[serde(with = "warden_core::timefmt::rfc3339_ms")]
    pub next_attempt_at: OffsetDateTime,
    pub last_error: Option<String>,
    #[serde(with = "warden_core::timefmt::rfc3339_ms")]
    pub created_at: OffsetDateTime,
    #[serde(with = "warden_core::timefmt::rfc3339_ms::option")]
    pub sent_at: Option<OffsetDateTime>,
}

fn redact_target(kind: &str, target: &str) -> String {
    if kind != warden_notify::events::TEAMS {
        return target.to_string();
    }
    match url::Url::parse(target) {
        Ok(u) => format!("{}://{}/…", u.scheme(), u.host_str().unwrap_or("?")),
        Err(_) => "<invalid url>".into(),
    }
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        DeliveryView {
            target: redact_target(&d.kind, &d.target),
            id: d.id,
            event_seq: d.event_seq,
            event_type: d.event_type,
            kind: d.kind,
            review_id: d.review_id,
            status: d.status,
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at,
            last_error: d.last_error,
            created_at: d.created_at,
            sent_at: d.sent_at,
        }
    }
}

/// What the Slack interactivity endpoint answers.
#[derive(Debug, Clone, PartialEq)]
pub enum SlackAnswer {
    /// 200 with an empty body (closes a modal; acknowledges a click).
    Ack,
    /// 200 with this JSON (e.g. modal validation errors).
    Json(Value),
}

/// Webhook secrets are sealed by the gateway's secret box, bound to the webhook id.
struct AppSecrets(Arc<App>);

fn webhook_aad(id: Uuid) -> String {
    format!("webhook:{id}")
}

impl SecretOpener for AppSecrets {
    fn webhook_secret(&self, id: Uuid, sealed: &[u8]) -> Result<Secret<String>, String> {
        let opened = self
            .0
            .secrets
            .open(&webhook_aad(id), sealed)
            .map_err(|e| e.to_string())?;
        opened
            .env
            .into_iter()
            .find(|(k, _)| k == SIGNING_SECRET)
            .map(|(_, v)| Secret::new(v))
            .ok_or_else(|| "no signing secret stored".to_string())
    }
}

pub(super) fn http() -> reqwest::Client {
    static HTTP: OnceLock<reqwest::Client> = OnceLock::new();
    HTTP.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default()
    })
    .clone()
}

fn validate_webhook_url(raw: &str) -> AppResult<String> {
    let url = raw.trim();
    let parsed = url::Url::parse(url).map_err(|_| {
        AppError::bad(
            "invalid_url",
            format!("url: {url:?} is not a valid URL (e.g. https://hooks.example.com/warden)"),
        )
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
        return Err(AppError::bad(
            "invalid_url",
            "url: a webhook needs an http:// or https:// URL with a host",
        ));
    }
    if url.len() > 2000 {
        return Err(AppError::bad(
            "invalid_url",
            "url: longer than 2000 characters",
        ));
    }
    Ok(url.to_string())
}

fn validate_events(events: &[String]) -> AppResult<Vec<String>> {
    if events.is_empty() {
        return Ok(EVENT_TYPES.iter().map(|s| s.to_string()).collect());
    }
    let mut out: Vec<String> = Vec::new();
    for e in events {
        let e = e.trim();
        if !EVENT_TYPES.contains(&e) {
            return Err(AppError::bad(
                "invalid_event",
                format!(
                    "events: unknown event {e:?} (use {})",
                    EVENT_TYPES.join(", ")
                ),
            ));
        }
        if !out.iter().any(|x| x == e) {
            out.push(e.to_string());
        }
    }
    Ok(out)
}

impl App {
    /// The notifier's settings, from the gateway config.
    pub fn notify_config(&self) -> NotifyConfig {
        let mut cfg = NotifyConfig::new(
            &self.config.public_url,
            &self.config.slack_api_url,
            self.config.slack_bot_token.clone(),
        );
        if self.config.notify_poll_ms > 0 {
            cfg.poll = Duration::from_millis(self.config.notify_poll_ms);
        }
        cfg.backoff_base = Duration::from_millis(self.config.notify_backoff_ms.max(1));
        cfg
    }

    /// A notifier over this gateway's store (tests call `try_run_once` on it).
    pub fn notifier(self: &Arc<Self>) -> Notifier {
        let clock = self.clock.clone();
        Notifier::new(
            self.store.clone(),
            self.notify_config(),
            Arc::new(AppSecrets(self.clone())),
        )
        .with_clock(Arc::new(move || clock.now()))
    }

    /// Runs the notifier in the background until `shutdown` (`WARDEN_NOTIFY_POLL_MS=0`: only
    /// on demand, through [`App::notifier`]).
    pub fn spawn_notifier(
        self: &Arc<Self>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let enabled = self.config.notify_poll_ms > 0;
        let notifier = self.notifier();
        tokio::spawn(async move {
            if enabled {
                notifier.run(shutdown).await;
            } else {
                shutdown.cancelled().await;
            }
        })
    }

    fn slack_client(&self) -> Option<SlackClient> {
        self.config
            .slack_bot_token
            .as_ref()
            .map(|t| SlackClient::new(http(), &self.config.slack_api_url, t.clone()))
    }

    // ---- webhooks (admin) ----------------------------------------------------------------

    pub async fn create_webhook(
        &self,
        actor: &User,
        req: CreateWebhook,
    ) -> AppResult<CreatedWebhook> {
        self.require_admin(actor)?;
        let url = validate_webhook_url(&req.url)?;
        let events = validate_events(&req.events)?;
        let secret = match &req.secret {
            Some(s) => {
                webhook::parse_secret(s.expose())
                    .map_err(|e| AppError::bad("invalid_secret", format!("secret: {e}")))?;
                s.expose().trim().to_string()
            }
            None => webhook::generate_secret(),
        };
        let now = self.now();
        let hook = Webhook {
            id: Uuid::now_v7(),
            url,
            events,
            created_by: actor.email.clone(),
            created_at: now,
        };
        let sealed = self
            .secrets
            .seal(
                &webhook_aad(hook.id),
                &ConnectionSecrets {
                    url: None,
                    env: vec![(SIGNING_SECRET.into(), secret.clone())],
                },
            )
            .map_err(AppError::Internal)?;
        let ev = AuditEvent::AdminChange {
            entity: "webhook".into(),
            action: "create".into(),
            name: hook.id.to_string(),
            before: None,
            after: Some(json!({"url": hook.url, "events": hook.events})),
        };
        self.store
            .insert_webhook(
                &WebhookRecord {
                    webhook: hook.clone(),
                    secret: sealed,
                },
                AuditCtx::new(&actor.email, now, vec![ev]),
            )
            .await?;
        Ok(CreatedWebhook {
            webhook: hook,
            secret,
        })
    }

    pub async fn list_webhooks(&self, actor: &User) -> AppResult<Vec<WebhookView>> {
        self.require_admin(actor)?;
        let failing = self.store.failing_webhooks().await?;
        Ok(self
            .store
            .list_webhooks()
            .await?
            .into_iter()
            .map(|r| WebhookView {
                failing: failing.contains(&r.webhook.id),
                webhook: r.webhook,
            })
            .collect())
    }

    pub async fn delete_webhook(&self, actor: &User, id: Uuid) -> AppResult<()> {
        self.require_admin(actor)?;
        let before = self
            .store
            .get_webhook(id)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("no webhook {id}")))?;
        let ev = AuditEvent::AdminChange {
            entity: "webhook".into(),
            action: "delete".into(),
            name: id.to_string(),
            before: Some(json!({"url": before.webhook.url, "events": before.webhook.events})),
            after: None,
        };
        Ok(self
            .store
            .delete_webhook(id, AuditCtx::new(&actor.email, self.now(), vec![ev]))
            .await?)
    }

    /// The delivery log, newest first, with the total count.
    pub async fn list_deliveries(
        &self,
        actor: &User,
        filter: DeliveryFilter,
    ) -> AppResult<(Vec<DeliveryView>, i64)> {
        self.require_admin(actor)?;
        let (items, total) = self.store.list_deliveries(&filter).await?;
        Ok((items.into_iter().map(DeliveryView::from).collect(), total))
    }

    // ---- Slack ---------------------------------------------------------------------------

    /// The Warden user behind a Slack user: the stored link, else the Warden user whose email
    /// is the Slack profile's (the link is then remembered). `None`: nobody.
    async fn slack_user(&self, slack: &SlackClient, u: &SlackUser) -> AppResult<Option<User>> {
        if let Some(link) = self.store.slack_link(&u.id).await? {
            return Ok(self.store.get_user(&link.user_email).await?);
        }
        let email = match slack.user_email(&u.id).await {
            Ok(Some(e)) => e,
            Ok(None) => return Ok(None),
            Err(e) => {
                tracing::warn!(error = %e, "Slack users.info failed");
                return Ok(None);
            }
        };
        let Some(user) = self.store.get_user(&email).await? else {
            return Ok(None);
        };
        self.link_slack(u, &user, "link_by_email").await?;
        Ok(Some(user))
    }

    async fn link_slack(&self, u: &SlackUser, user: &User, action: &str) -> AppResult<()> {
        let now = self.now();
        let ev = AuditEvent::AdminChange {
            entity: "slack_link".into(),
            action: action.into(),
            name: user.email.clone(),
            before: None,
            after: Some(json!({"slack_user_id": u.id, "team_id": u.team_id})),
        };
        self.store
            .link_slack_user(
                &SlackLink {
                    slack_user_id: u.id.clone(),
                    team_id: u.team_id.clone(),
                    user_email: user.email.clone(),
                    linked_at: now,
                },
                AuditCtx::new(&user.email, now, vec![ev]),
            )
            .await?;
        Ok(())
    }

    /// An ephemeral refusal to the clicking user, in the background (Slack wants its answer
    /// within 3 seconds).
    fn refuse(slack: &SlackClient, response_url: Option<String>, text: String) {
        let Some(url) = response_url else {
            return;
        };
        let slack = slack.clone();
        tokio::spawn(async move {
            if let Err(e) = slack.respond(&url, &ephemeral(&text)).await {
                tracing::warn!(error = %e, "replying to a Slack interaction failed");
            }
        });
    }

    fn refusal_text(e: &AppError) -> String {
        match e {
            AppError::Internal(_) => {
                "Warden hit an internal error; try again or use the web app".into()
            }
            other => other.to_string(),
        }
    }

    /// Handles a verified Slack interaction. Decisions go through [`App::approve`] and
    /// [`App::reject`] as the linked Warden user.
    pub async fn slack_interaction(self: &Arc<Self>, i: Interaction) -> AppResult<SlackAnswer> {
        let Some(slack) = self.slack_client() else {
            tracing::warn!("Slack interaction received but WARDEN_SLACK_BOT_TOKEN is not set");
            return Ok(SlackAnswer::Ack);
        };
        let not_linked = "Your Slack account is not linked to a Warden user: run `/warden subscribe` (your Slack email must be your Warden email).";
        match i {
            Interaction::Ignored => Ok(SlackAnswer::Ack),
            Interaction::Approve {
                review_id,
                group,
                user,
                response_url,
            } => {
                let Some(u) = self.slack_user(&slack, &user).await? else {
                    Self::refuse(&slack, response_url, not_linked.into());
                    return Ok(SlackAnswer::Ack);
                };
                if !group.is_empty() && !u.in_group(&group) {
                    Self::refuse(
                        &slack,
                        response_url,
                        format!(
                            "You are not a member of {group}, so you cannot approve as {group}."
                        ),
                    );
                    return Ok(SlackAnswer::Ack);
                }
                let input = ApproveInput {
                    force: false,
                    reason: None,
                    duration_sec: None,
                };
                match self.approve(&u, review_id, input).await {
                    Ok(_) => Ok(SlackAnswer::Ack),
                    Err(e) => {
                        Self::refuse(&slack, response_url, Self::refusal_text(&e));
                        Ok(SlackAnswer::Ack)
                    }
                }
            }
            Interaction::RejectClicked {
                review_id,
                user,
                trigger_id,
                response_url,
            } => {
                let Some(u) = self.slack_user(&slack, &user).await? else {
                    Self::refuse(&slack, response_url, not_linked.into());
                    return Ok(SlackAnswer::Ack);
                };
                let review = match self.store.get_review(review_id).await? {
                    Some(r) if super::reviews::can_view(&u, &r) => r,
                    _ => {
                        Self::refuse(
                            &slack,
                            response_url,
                            format!("No review {review_id} that you can see."),
                        );
                        return Ok(SlackAnswer::Ack);
                    }
                };
                if review.status != ReviewStatus::Pending {
                    Self::refuse(
                        &slack,
                        response_url,
                        format!(
                            "This request is already {}.",
                            review.status.as_str().to_lowercase()
                        ),
                    );
                    return Ok(SlackAnswer::Ack);
                }
                let approver = u.in_any(&review.policy.approval_groups)
                    || u.in_any(&review.policy.force_approval_groups);
                if !approver {
                    Self::refuse(
                        &slack,
                        response_url,
                        format!(
                            "Only members of {} can reject this request.",
                            review.policy.approval_groups.join(", ")
                        ),
                    );
                    return Ok(SlackAnswer::Ack);
                }
                if let Err(e) = slack
                    .open_view(&trigger_id, &blocks::reject_modal(&review))
                    .await
                {
                    tracing::warn!(error = %e, "opening the Slack reject dialog failed");
                    Self::refuse(
                        &slack,
                        response_url,
                        "Could not open the rejection dialog; reject from the web app.".into(),
                    );
                }
                Ok(SlackAnswer::Ack)
            }
            Interaction::RejectSubmitted {
                review_id,
                user,
                reason,
            } => {
                let error = |msg: String| {
                    SlackAnswer::Json(json!({
                        "response_action": "errors",
                        "errors": {warden_notify::slack::REASON_BLOCK: msg},
                    }))
                };
                if reason.is_empty() {
                    return Ok(error("A reason is required.".into()));
                }
                let Some(u) = self.slack_user(&slack, &user).await? else {
                    return Ok(error(not_linked.into()));
                };
                match self.reject(&u, review_id, Some(reason)).await {
                    Ok(_) => Ok(SlackAnswer::Ack),
                    Err(e) => Ok(error(Self::refusal_text(&e))),
                }
            }
        }
    }

    /// `/warden subscribe | unsubscribe | whoami | help`: answers with an ephemeral message.
    pub async fn slack_command(&self, c: SlashCommand) -> AppResult<Value> {
        let help = "`/warden subscribe` links your Slack account to your Warden user (same email), so you can approve from Slack and get a DM when your requests are decided. `/warden unsubscribe` removes the link. `/warden whoami` shows it.";
        let Some(slack) = self.slack_client() else {
            return Ok(ephemeral(
                "Slack is not fully configured on this Warden gateway (no bot token).",
            ));
        };
        let word = c
            .text
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        match word.as_str() {
            "subscribe" | "link" => {
                let email = match slack.user_email(&c.user.id).await {
                    Ok(Some(e)) => e,
                    Ok(None) => {
                        return Ok(ephemeral(
                            "Warden cannot read your Slack email (the app needs the users:read.email scope).",
                        ));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "Slack users.info failed");
                        return Ok(ephemeral(
                            "Warden could not reach Slack to read your profile; try again.",
                        ));
                    }
                };
                let Some(user) = self.store.get_user(&email).await? else {
                    return Ok(ephemeral(&format!(
                        "No Warden user has the email {email}: ask a Warden admin to create one (warden admin create user {email})."
                    )));
                };
                self.link_slack(&c.user, &user, "link").await?;
                Ok(ephemeral(&format!(
                    "Linked: you are {} in Warden. You can approve from Slack and will get a DM when your requests are decided.",
                    user.email
                )))
            }
            "unsubscribe" | "unlink" => {
                let email = self
                    .store
                    .slack_link(&c.user.id)
                    .await?
                    .map(|l| l.user_email)
                    .unwrap_or_default();
                let ev = AuditEvent::AdminChange {
                    entity: "slack_link".into(),
                    action: "unlink".into(),
                    name: email.clone(),
                    before: Some(json!({"slack_user_id": c.user.id})),
                    after: None,
                };
                let actor = if email.is_empty() {
                    "slack"
                } else {
                    email.as_str()
                };
                let removed = self
                    .store
                    .unlink_slack_user(&c.user.id, AuditCtx::new(actor, self.now(), vec![ev]))
                    .await?;
                Ok(ephemeral(if removed {
                    "Unlinked: Warden will no longer act on your Slack clicks."
                } else {
                    "Your Slack account was not linked."
                }))
            }
            "whoami" => Ok(ephemeral(&match self.store.slack_link(&c.user.id).await? {
                Some(l) => format!("You are linked to the Warden user {}.", l.user_email),
                None => "You are not linked to a Warden user: run `/warden subscribe`.".into(),
            })),
            _ => Ok(ephemeral(help)),
        }
    }
}
