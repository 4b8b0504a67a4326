//! Shared pieces of the notification tests: local HTTP servers standing in for Slack, Teams and
//! webhook receivers (on 127.0.0.1, started by the tests), Slack request signing done
//! independently of the gateway's code, and polling helpers.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::IntoResponse;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::net::TcpListener;
use warden_gateway::config::Config;

pub const BOT_TOKEN: &str = "xoxb-test-token";
pub const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Req {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn form(&self) -> HashMap<String, String> {
        url::form_urlencoded::parse(&self.body)
            .into_owned()
            .collect()
    }
    pub fn header(&self, k: &str) -> Option<String> {
        self.headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

/// What a fake answers: status and JSON body.
pub type Handler = Arc<dyn Fn(&Req) -> (u16, Value) + Send + Sync>;

#[derive(Clone)]
struct FakeState {
    handler: Handler,
    log: Arc<Mutex<Vec<Req>>>,
}

pub struct Fake {
    pub url: String,
    pub log: Arc<Mutex<Vec<Req>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    State(s): State<FakeState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let req = Req {
        method: method.to_string(),
        path: uri.path().to_string(),
        headers,
        body,
    };
    let (status, v) = (s.handler)(&req);
    s.log.lock().unwrap().push(req);
    (
        axum::http::StatusCode::from_u16(status).unwrap(),
        axum::Json(v),
    )
}

impl Fake {
    pub async fn start(handler: Handler) -> Fake {
        Self::on(TcpListener::bind("127.0.0.1:0").await.unwrap(), handler).await
    }
    pub async fn on(listener: TcpListener, handler: Handler) -> Fake {
        let url = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new().fallback(handle).with_state(FakeState {
            handler,
            log: log.clone(),
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Fake { url, log, task }
    }
    pub fn requests(&self) -> Vec<Req> {
        self.log.lock().unwrap().clone()
    }
    pub fn to(&self, path: &str) -> Vec<Req> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }
    /// Waits until `pred` holds for the requests received (10 s at most).
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&[Req]) -> bool) -> Vec<Req> {
        for _ in 0..200 {
            let reqs = self.requests();
            if pred(&reqs) {
                return reqs;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "timed out waiting for {what}; got {:#?}",
            self.requests().iter().map(|r| &r.path).collect::<Vec<_>>()
        );
    }
}

/// A Slack Web API stand-in that checks what the real one checks: POST, bearer token, the
/// content type each method accepts, and the required arguments. `users` maps Slack user ids to
/// profile emails. Paths under `/response/` play `response_url`s.
pub fn slack_handler(users: &[(&str, &str)]) -> Handler {
    let users: Vec<(String, String)> = users
        .iter()
        .map(|(u, e)| (u.to_string(), e.to_string()))
        .collect();
    let ts = Arc::new(AtomicU64::new(1));
    Arc::new(move |r: &Req| {
        if r.path.starts_with("/response/") {
            return (200, json!({"ok": true}));
        }
        if r.method != "POST" {
            return (405, json!({"ok": false, "error": "method_not_allowed"}));
        }
        if r.header("authorization").as_deref() != Some(&format!("Bearer {BOT_TOKEN}")) {
            return (200, json!({"ok": false, "error": "not_authed"}));
        }
        let ct = r.header("content-type").unwrap_or_default();
        let method = r.path.trim_start_matches('/');
        let json_method = matches!(method, "chat.postMessage" | "chat.update" | "views.open");
        if json_method && !ct.starts_with("application/json") {
            return (200, json!({"ok": false, "error": "invalid_form_data"}));
        }
        if !json_method && !ct.starts_with("application/x-www-form-urlencoded") {
            return (200, json!({"ok": false, "error": "invalid_arguments"}));
        }
        let b = r.json();
        let f = r.form();
        match method {
            "chat.postMessage" => {
                if b["channel"].as_str().is_none() || !b["blocks"].is_array() {
                    return (200, json!({"ok": false, "error": "invalid_arguments"}));
                }
                let n = ts.fetch_add(1, Ordering::SeqCst);
                (
                    200,
                    json!({"ok": true, "channel": b["channel"], "ts": format!("1700000000.{n:06}")}),
                )
            }
            "chat.update" => {
                if b["channel"].as_str().is_none() || b["ts"].as_str().is_none() {
                    return (200, json!({"ok": false, "error": "invalid_arguments"}));
                }
                (
                    200,
                    json!({"ok": true, "channel": b["channel"], "ts": b["ts"]}),
                )
            }
            "views.open" => {
                if b["trigger_id"].as_str().is_none() || b["view"]["type"] != "modal" {
                    return (200, json!({"ok": false, "error": "invalid_arguments"}));
                }
                (200, json!({"ok": true}))
            }
            "users.info" => match users.iter().find(|(u, _)| Some(u) == f.get("user")) {
                Some((u, e)) => (
                    200,
                    json!({"ok": true, "user": {"id": u, "profile": {"email": e}}}),
                ),
                None => (200, json!({"ok": false, "error": "user_not_found"})),
            },
            "users.lookupByEmail" => match users.iter().find(|(_, e)| Some(e) == f.get("email")) {
                Some((u, _)) => (200, json!({"ok": true, "user": {"id": u}})),
                None => (200, json!({"ok": false, "error": "users_not_found"})),
            },
            _ => (200, json!({"ok": false, "error": "unknown_method"})),
        }
    })
}

/// Slack's signature, computed here independently of the gateway: `v0=` hex HMAC-SHA256 of
/// `v0:{ts}:{body}`.
pub fn slack_sign(secret: &str, ts: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("v0:{ts}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// POSTs a form body to the gateway as Slack would, signed with `secret` at `ts`.
pub async fn slack_post(
    base: &str,
    path: &str,
    body: &str,
    ts: i64,
    secret: &str,
) -> (u16, String) {
    let resp = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", ts.to_string())
        .header("x-slack-signature", slack_sign(secret, ts, body))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (
        resp.status().as_u16(),
        resp.text().await.unwrap_or_default(),
    )
}

pub fn form(payload: &Value) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &payload.to_string())
        .finish()
}

/// A button click (`block_actions`) by a Slack user.
pub fn click(user: &str, action_id: &str, response_url: &str) -> String {
    form(&json!({
        "type": "block_actions",
        "user": {"id": user, "team_id": "T1"},
        "team": {"id": "T1"},
        "trigger_id": format!("trigger-{user}"),
        "response_url": response_url,
        "actions": [{"action_id": action_id, "type": "button", "value": "x"}],
    }))
}

/// The reject modal submitted with `reason`.
pub fn submit_reject(user: &str, review_id: &str, reason: &str) -> String {
    form(&json!({
        "type": "view_submission",
        "user": {"id": user, "team_id": "T1"},
        "team": {"id": "T1"},
        "view": {
            "callback_id": "warden_reject_modal",
            "private_metadata": review_id,
            "state": {"values": {"reason": {"reason": {"type": "plain_text_input", "value": reason}}}},
        },
    }))
}

/// Slack on, background notifier off (tests drive `try_run_once`), fast retries.
pub fn slack_config(c: &mut Config, slack_url: &str) {
    c.slack_bot_token = Some(warden_core::secret::Secret::new(BOT_TOKEN.into()));
    c.slack_signing_secret = Some(warden_core::secret::Secret::new(SIGNING_SECRET.into()));
    c.slack_api_url = slack_url.to_string();
    c.notify_poll_ms = 0;
    c.notify_backoff_ms = 20;
}

/// Every text in a Block Kit structure, joined (for content checks).
pub fn all_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(all_text).collect::<Vec<_>>().join("\n"),
        Value::Object(m) => m.values().map(all_text).collect::<Vec<_>>().join("\n"),
        _ => String::new(),
    }
}
