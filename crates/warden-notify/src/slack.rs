//! Slack: the Web API client (`chat.postMessage`, `chat.update`, `views.open`, `users.info`,
//! `users.lookupByEmail`, `response_url` replies), verification of Slack's request signatures,
//! and parsing of interaction payloads and slash commands.
//!
//! # What it must never do
//! Log or echo the bot token or the signing secret; accept a request whose signature or
//! timestamp does not check out; decide anything about a review (it only says what was clicked).

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use thiserror::Error;
use uuid::Uuid;
use warden_core::secret::Secret;

/// Requests older (or further in the future) than this are refused (Slack's recommendation).
pub const MAX_SIGNATURE_AGE_SECS: i64 = 300;

/// Action ids of the review message's buttons: `warden_approve:{review}:{group}`,
/// `warden_reject:{review}`; the modal's callback id: `warden_reject_modal`.
pub const APPROVE_ACTION: &str = "warden_approve";
pub const REJECT_ACTION: &str = "warden_reject";
pub const OPEN_ACTION: &str = "warden_open";
pub const REJECT_MODAL: &str = "warden_reject_modal";
/// Block and action id of the reason input in the reject modal.
pub const REASON_BLOCK: &str = "reason";
pub const REASON_ACTION: &str = "reason";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("missing X-Slack-Request-Timestamp or X-Slack-Signature")]
    Missing,
    #[error("the request timestamp is not a number")]
    BadTimestamp,
    #[error("the request timestamp is more than 5 minutes away from now (replay?)")]
    Stale,
    #[error("the request signature does not match")]
    Mismatch,
}

/// Checks `X-Slack-Signature` (`v0=` + hex HMAC-SHA256 of `v0:{timestamp}:{body}` under the
/// signing secret) in constant time, and that the timestamp is within 5 minutes of `now_unix`.
pub fn verify_signature(
    signing_secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_unix: i64,
) -> Result<(), SignatureError> {
    let (Some(ts), Some(sig)) = (timestamp, signature) else {
        return Err(SignatureError::Missing);
    };
    let ts_num: i64 = ts
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    if (now_unix - ts_num).abs() > MAX_SIGNATURE_AGE_SECS {
        return Err(SignatureError::Stale);
    }
    let given = sig
        .trim()
        .strip_prefix("v0=")
        .and_then(|h| hex::decode(h).ok())
        .ok_or(SignatureError::Mismatch)?;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(signing_secret).map_err(|_| SignatureError::Mismatch)?;
    mac.update(b"v0:");
    mac.update(ts.trim().as_bytes());
    mac.update(b":");
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&given)
        .map_err(|_| SignatureError::Mismatch)
}

/// Signs like Slack does (for tests and fakes): `v0=<hex>`.
pub fn sign(signing_secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(signing_secret) else {
        return String::new();
    };
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

#[derive(Debug, Error)]
pub enum SlackError {
    #[error("Slack API {method}: {error}")]
    Api { method: String, error: String },
    #[error("Slack API {method}: rate limited")]
    RateLimited {
        method: String,
        retry_after: Option<Duration>,
    },
    #[error("Slack API {method}: HTTP {status}")]
    Http { method: String, status: u16 },
    #[error("Slack API {method}: {source}")]
    Transport {
        method: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("Slack API {method}: unexpected answer: {detail}")]
    Unexpected { method: String, detail: String },
}

impl SlackError {
    /// The Slack error code (`channel_not_found`, `users_not_found`, …), if Slack answered one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { error, .. } => Some(error),
            _ => None,
        }
    }
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// A Slack Web API client: `Authorization: Bearer xoxb-…` on every call.
#[derive(Clone)]
pub struct SlackClient {
    http: reqwest::Client,
    base: String,
    token: Secret<String>,
}

impl std::fmt::Debug for SlackClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackClient")
            .field("base", &self.base)
            .field("token", &self.token)
            .finish()
    }
}

impl SlackClient {
    pub fn new(http: reqwest::Client, base: &str, token: Secret<String>) -> SlackClient {
        SlackClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
        }
    }

    async fn finish(&self, method: &str, resp: reqwest::Response) -> Result<Value, SlackError> {
        let status = resp.status();
        if status.as_u16() == 429 {
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Err(SlackError::RateLimited {
                method: method.into(),
                retry_after,
            });
        }
        if !status.is_success() {
            return Err(SlackError::Http {
                method: method.into(),
                status: status.as_u16(),
            });
        }
        let v: Value = resp.json().await.map_err(|e| SlackError::Unexpected {
            method: method.into(),
            detail: format!("not JSON: {e}"),
        })?;
        if v.get("ok").and_then(Value::as_bool) == Some(true) {
            Ok(v)
        } else {
            Err(SlackError::Api {
                method: method.into(),
                error: v
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown_error")
                    .to_string(),
            })
        }
    }

    /// A JSON-bodied method (`chat.*`, `views.*`).
    pub async fn call(&self, method: &str, body: &Value) -> Result<Value, SlackError> {
        let resp = self
            .http
            .post(format!("{}/{method}", self.base))
            .bearer_auth(self.token.expose())
            .header("content-type", "application/json; charset=utf-8")
            .body(body.to_string())
            .send()
            .await
            .map_err(|source| SlackError::Transport {
                method: method.into(),
                source,
            })?;
        self.finish(method, resp).await
    }

    /// A form-bodied method (`users.info`, `users.lookupByEmail` take no JSON).
    pub async fn call_form(
        &self,
        method: &str,
        fields: &[(&str, &str)],
    ) -> Result<Value, SlackError> {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let resp = self
            .http
            .post(format!("{}/{method}", self.base))
            .bearer_auth(self.token.expose())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|source| SlackError::Transport {
                method: method.into(),
                source,
            })?;
        self.finish(method, resp).await
    }

    /// Posts a message; returns its `ts`.
    pub async fn post_message(
        &self,
        channel: &str,
        text: &str,
        blocks: &Value,
    ) -> Result<String, SlackError> {
        let v = self
            .call(
                "chat.postMessage",
                &json!({"channel": channel, "text": text, "blocks": blocks, "unfurl_links": false}),
            )
            .await?;
        v.get("ts")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| SlackError::Unexpected {
                method: "chat.postMessage".into(),
                detail: "no ts in the answer".into(),
            })
    }

    /// Replaces a message in place.
    pub async fn update_message(
        &self,
        channel: &str,
        ts: &str,
        text: &str,
        blocks: &Value,
    ) -> Result<(), SlackError> {
        self.call(
            "chat.update",
            &json!({"channel": channel, "ts": ts, "text": text, "blocks": blocks}),
        )
        .await
        .map(|_| ())
    }

    pub async fn open_view(&self, trigger_id: &str, view: &Value) -> Result<(), SlackError> {
        self.call(
            "views.open",
            &json!({"trigger_id": trigger_id, "view": view}),
        )
        .await
        .map(|_| ())
    }

    /// The Slack user's profile email (needs the `users:read.email` scope).
    pub async fn user_email(&self, user_id: &str) -> Result<Option<String>, SlackError> {
        let v = self.call_form("users.info", &[("user", user_id)]).await?;
        Ok(v.pointer("/user/profile/email")
            .and_then(Value::as_str)
            .map(|e| e.trim().to_ascii_lowercase())
            .filter(|e| !e.is_empty()))
    }

    /// The Slack user id with this email, `None` when Slack knows no such user.
    pub async fn lookup_by_email(&self, email: &str) -> Result<Option<String>, SlackError> {
        match self
            .call_form("users.lookupByEmail", &[("email", email)])
            .await
        {
            Ok(v) => Ok(v
                .pointer("/user/id")
                .and_then(Value::as_str)
                .map(str::to_string)),
            Err(e) if e.code() == Some("users_not_found") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Posts to an interaction's `response_url` (an ephemeral reply to the clicking user). The
    /// URL comes from a verified payload; it must be on Slack's hooks host or the configured API
    /// host (a local fake in tests).
    pub async fn respond(&self, response_url: &str, body: &Value) -> Result<(), SlackError> {
        let method = "response_url";
        if !self.response_url_allowed(response_url) {
            return Err(SlackError::Unexpected {
                method: method.into(),
                detail: "response_url is not a Slack URL".into(),
            });
        }
        let resp = self
            .http
            .post(response_url)
            .json(body)
            .send()
            .await
            .map_err(|source| SlackError::Transport {
                method: method.into(),
                // A response_url is a capability: keep it out of errors and logs.
                source: source.without_url(),
            })?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(SlackError::Http {
                method: method.into(),
                status: resp.status().as_u16(),
            })
        }
    }

    fn response_url_allowed(&self, response_url: &str) -> bool {
        let Ok(u) = url::Url::parse(response_url) else {
            return false;
        };
        if u.scheme() == "https" && u.host_str() == Some("hooks.slack.com") {
            return true;
        }
        let Ok(base) = url::Url::parse(&self.base) else {
            return false;
        };
        u.scheme() == base.scheme()
            && u.host_str() == base.host_str()
            && u.port_or_known_default() == base.port_or_known_default()
    }
}

/// What a user did in Slack, as far as Warden cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interaction {
    /// An Approve button (`group` is the approval group named on the button).
    Approve {
        review_id: Uuid,
        group: String,
        user: SlackUser,
        response_url: Option<String>,
    },
    /// The Reject button: open the reason modal.
    RejectClicked {
        review_id: Uuid,
        user: SlackUser,
        trigger_id: String,
        response_url: Option<String>,
    },
    /// The reason modal was submitted.
    RejectSubmitted {
        review_id: Uuid,
        user: SlackUser,
        reason: String,
    },
    /// Anything else (link buttons, modal closed, unknown actions): acknowledged, ignored.
    Ignored,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackUser {
    pub id: String,
    pub team_id: String,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("the body has no payload field")]
    NoPayload,
    #[error("the payload is not valid JSON")]
    BadJson,
    #[error("the payload lacks {0}")]
    Missing(&'static str),
    #[error("the payload names an invalid review id")]
    BadReviewId,
}

fn form_field(body: &[u8], name: &str) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn user_of(p: &Value) -> Result<SlackUser, PayloadError> {
    let id = p
        .pointer("/user/id")
        .and_then(Value::as_str)
        .ok_or(PayloadError::Missing("user.id"))?;
    let team_id = p
        .pointer("/team/id")
        .or_else(|| p.pointer("/user/team_id"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    Ok(SlackUser {
        id: id.to_string(),
        team_id: team_id.to_string(),
    })
}

/// Parses an interactivity request body (`payload=<json>`, form-encoded). Call only after
/// [`verify_signature`] accepted the same bytes.
pub fn parse_interaction(body: &[u8]) -> Result<Interaction, PayloadError> {
    let raw = form_field(body, "payload").ok_or(PayloadError::NoPayload)?;
    let p: Value = serde_json::from_str(&raw).map_err(|_| PayloadError::BadJson)?;
    let response_url = p
        .get("response_url")
        .and_then(Value::as_str)
        .map(str::to_string);
    match p.get("type").and_then(Value::as_str) {
        Some("block_actions") => {
            let Some(action) = p.pointer("/actions/0") else {
                return Ok(Interaction::Ignored);
            };
            let action_id = action
                .get("action_id")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let mut parts = action_id.splitn(3, ':');
            let (kind, id, group) = (parts.next(), parts.next(), parts.next());
            let review_id = || {
                id.and_then(|s| Uuid::parse_str(s).ok())
                    .ok_or(PayloadError::BadReviewId)
            };
            match kind {
                Some(APPROVE_ACTION) => Ok(Interaction::Approve {
                    review_id: review_id()?,
                    group: group.unwrap_or_default().to_string(),
                    user: user_of(&p)?,
                    response_url,
                }),
                Some(REJECT_ACTION) => Ok(Interaction::RejectClicked {
                    review_id: review_id()?,
                    user: user_of(&p)?,
                    trigger_id: p
                        .get("trigger_id")
                        .and_then(Value::as_str)
                        .ok_or(PayloadError::Missing("trigger_id"))?
                        .to_string(),
                    response_url,
                }),
                _ => Ok(Interaction::Ignored),
            }
        }
        Some("view_submission")
            if p.pointer("/view/callback_id").and_then(Value::as_str) == Some(REJECT_MODAL) =>
        {
            let review_id = p
                .pointer("/view/private_metadata")
                .and_then(Value::as_str)
                .and_then(|s| Uuid::parse_str(s).ok())
                .ok_or(PayloadError::BadReviewId)?;
            let reason = p
                .pointer(&format!(
                    "/view/state/values/{REASON_BLOCK}/{REASON_ACTION}/value"
                ))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .trim()
                .to_string();
            Ok(Interaction::RejectSubmitted {
                review_id,
                user: user_of(&p)?,
                reason,
            })
        }
        _ => Ok(Interaction::Ignored),
    }
}

/// A slash command (`/warden subscribe`), form-encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlashCommand {
    pub command: String,
    pub text: String,
    pub user: SlackUser,
}

pub fn parse_command(body: &[u8]) -> Result<SlashCommand, PayloadError> {
    let get = |k: &str| form_field(body, k);
    Ok(SlashCommand {
        command: get("command").unwrap_or_default(),
        text: get("text").unwrap_or_default().trim().to_string(),
        user: SlackUser {
            id: get("user_id").ok_or(PayloadError::Missing("user_id"))?,
            team_id: get("team_id").unwrap_or_default(),
        },
    })
}

/// An ephemeral reply (only the clicking user sees it).
pub fn ephemeral(text: &str) -> Value {
    json!({"response_type": "ephemeral", "replace_original": false, "text": text})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures() {
        let secret = b"8f742231b10e8888abcd99yyyzzz85a5";
        let body = b"token=x&team_id=T1&command=%2Fwarden&text=subscribe";
        let sig = sign(secret, "1531420618", body);
        assert!(verify_signature(secret, Some("1531420618"), Some(&sig), body, 1531420618).is_ok());
        // a known vector from Slack's documentation
        let doc_body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        assert_eq!(
            sign(secret, "1531420618", doc_body),
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
        );
        let now = 1531420618;
        assert_eq!(
            verify_signature(secret, Some("1531420618"), Some(&sig), b"tampered", now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(b"other", Some("1531420618"), Some(&sig), body, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(secret, Some("1531420618"), Some(&sig), body, now + 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify_signature(secret, None, Some(&sig), body, now),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify_signature(secret, Some("x"), Some(&sig), body, now),
            Err(SignatureError::BadTimestamp)
        );
        assert_eq!(
            verify_signature(secret, Some("1531420618"), Some("v0=zz"), body, now),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn interactions_parse() {
        let id = Uuid::new_v4();
        let payload = json!({
            "type": "block_actions", "user": {"id": "U1"}, "team": {"id": "T1"},
            "trigger_id": "trig", "response_url": "https://hooks.slack.com/x",
            "actions": [{"action_id": format!("{APPROVE_ACTION}:{id}:dba"), "value": id.to_string()}]
        });
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", &payload.to_string())
            .finish();
        match parse_interaction(body.as_bytes()).unwrap() {
            Interaction::Approve {
                review_id, group, ..
            } => {
                assert_eq!(review_id, id);
                assert_eq!(group, "dba");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parse_interaction(b"x=1"), Err(PayloadError::NoPayload));
        assert_eq!(
            parse_interaction(b"payload=%7Bnot"),
            Err(PayloadError::BadJson)
        );
    }
}
