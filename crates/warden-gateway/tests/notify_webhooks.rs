//! Signed webhooks and the outbox's durability: a receiver verifies every request with the
//! Standard Webhooks reference library; a receiver that is down (closed port, then HTTP 500)
//! still gets every event exactly once when it is back; a gateway restart between the event and
//! its delivery loses nothing; two workers (replicas) never deliver twice. On SQLite and
//! PostgreSQL.

mod notify_support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use warden_gateway::testing::{Backend, TestGateway};

use notify_support::*;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A webhook receiver: verifies the signature with the reference library, answers 500 while
/// `down`, and records each accepted message (id → type).
#[derive(Clone, Default)]
struct Receiver {
    down: Arc<AtomicBool>,
    accepted: Arc<Mutex<Vec<(String, String, Value)>>>,
    bad_signatures: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
}

impl Receiver {
    fn handler(&self) -> Handler {
        let me = self.clone();
        let wh = standardwebhooks::Webhook::new(SECRET).unwrap();
        Arc::new(move |r: &Req| {
            if wh.verify(&r.body, &r.headers).is_err() {
                me.bad_signatures.fetch_add(1, Ordering::SeqCst);
                return (401, json!({"error": "bad signature"}));
            }
            let sig = r.header("webhook-signature").unwrap();
            assert!(sig.starts_with("v1,"), "{sig}");
            if me.down.load(Ordering::SeqCst) {
                me.refused.fetch_add(1, Ordering::SeqCst);
                return (500, json!({"error": "down"}));
            }
            let body = r.json();
            me.accepted.lock().unwrap().push((
                r.header("webhook-id").unwrap(),
                body["type"].as_str().unwrap_or_default().to_string(),
                body,
            ));
            (200, json!({"ok": true}))
        })
    }
    fn accepted(&self) -> Vec<(String, String, Value)> {
        self.accepted.lock().unwrap().clone()
    }
    fn types(&self) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for (_, t, _) in self.accepted() {
            *m.entry(t).or_insert(0) += 1;
        }
        m
    }
    /// Each message id accepted once (no duplicates).
    fn assert_exactly_once(&self) {
        let ids: Vec<String> = self.accepted().into_iter().map(|(i, _, _)| i).collect();
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(ids.len(), unique.len(), "duplicate deliveries: {ids:?}");
        assert_eq!(self.bad_signatures.load(Ordering::SeqCst), 0);
    }
}

fn quick(c: &mut warden_gateway::config::Config) {
    c.notify_poll_ms = 0;
    c.notify_backoff_ms = 20;
}

async fn create_webhook(gw: &TestGateway, url: &str, events: Option<&[&str]>) -> Value {
    let mut body = json!({"url": url, "secret": SECRET});
    if let Some(e) = events {
        body["events"] = json!(e);
    }
    let (s, b) = gw.admin("POST", "/api/webhooks", Some(body)).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["secret"], SECRET, "shown once, at creation");
    b
}

/// A held command approved and executed: review.created, review.approved, session.started,
/// session.ended, review.executed.
async fn approved_command(gw: &TestGateway, dev: &str, dba: &str, cmd: &str) -> String {
    let (s, r) = gw
        .call(
            "POST",
            "/api/exec",
            Some(dev),
            Some(json!({"connection": "shell", "command": cmd})),
        )
        .await;
    assert_eq!(s, 202, "{r}");
    let id = r["review"]["id"].as_str().unwrap().to_string();
    let (s, r) = gw.decide(dba, &id, "approve", None).await;
    assert_eq!(s, 200, "{r}");
    let (_, r) = gw
        .call(
            "GET",
            &format!("/api/reviews/{id}/wait?timeout=10"),
            Some(dev),
            None,
        )
        .await;
    assert_eq!(r["status"], "EXECUTED", "{r}");
    id
}

async fn people(gw: &TestGateway) -> (String, String) {
    let dev = gw.user("dev@example.com", &["dev"]).await;
    let dba = gw.user("dba@example.com", &["dba"]).await;
    gw.command_connection("shell", &["sh"], &["dba"]).await;
    (dev, dba)
}

const ALL: [&str; 5] = [
    "review.created",
    "review.approved",
    "session.started",
    "session.ended",
    "review.executed",
];

/// Runs notifier passes until `done` or 30 s.
async fn drive(gw: &TestGateway, done: impl Fn() -> bool) {
    let n = gw.running.app.notifier();
    for _ in 0..600 {
        n.try_run_once().await.unwrap();
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("notifications not delivered in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn down_receiver_gets_every_event_once_when_back() {
    let gw = TestGateway::spawn_with(Backend::Sqlite, quick).await;
    let (dev, dba) = people(&gw).await;
    // A closed port: reserve one, then let it go.
    let port = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let hook = create_webhook(&gw, &format!("http://127.0.0.1:{port}/hooks/warden"), None).await;
    // An endpoint subscribed to one event type, up all along.
    let only = Receiver::default();
    let only_fake = Fake::start(only.handler()).await;
    create_webhook(
        &gw,
        &format!("{}/only", only_fake.url),
        Some(&["review.created"]),
    )
    .await;
    // Bad input is refused with a clear error.
    let (s, b) = gw
        .admin(
            "POST",
            "/api/webhooks",
            Some(json!({"url": "ftp://x", "secret": SECRET})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = gw
        .admin(
            "POST",
            "/api/webhooks",
            Some(json!({"url": "https://x.example", "events": ["review.nope"]})),
        )
        .await;
    assert_eq!((s, b["code"].as_str()), (400, Some("invalid_event")), "{b}");

    approved_command(&gw, &dev, &dba, "echo one").await;

    // Down: attempts pile up with backoff, then the deliveries show as failing.
    let n = gw.running.app.notifier();
    for _ in 0..40 {
        n.try_run_once().await.unwrap();
        let (_, list) = gw.admin("GET", "/api/webhooks", None).await;
        if list
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["id"] == hook["id"] && w["failing"] == true)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, list) = gw.admin("GET", "/api/webhooks", None).await;
    assert!(
        !list.to_string().contains(SECRET),
        "secrets are never listed"
    );
    let (s, log) = gw
        .admin("GET", "/api/deliveries?kind=webhook&status=failing", None)
        .await;
    assert_eq!(s, 200);
    let failing = log.as_array().unwrap();
    assert!(
        !failing.is_empty(),
        "deliveries to the closed port are failing"
    );
    assert!(
        failing.iter().all(|d| d["attempts"].as_i64().unwrap() >= 3
            && d["last_error"]
                .as_str()
                .unwrap()
                .contains("connection failed")),
        "{log}"
    );
    // The other endpoint was not held up.
    assert_eq!(
        only.types(),
        HashMap::from([("review.created".to_string(), 1)])
    );

    // Back, but answering 500 for a while; then healthy.
    let rx = Receiver::default();
    rx.down.store(true, Ordering::SeqCst);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let _fake = Fake::on(listener, rx.handler()).await;
    drive(&gw, || rx.refused.load(Ordering::SeqCst) >= 5).await;
    assert!(rx.accepted().is_empty());
    // More events while it is down.
    approved_command(&gw, &dev, &dba, "echo two").await;
    rx.down.store(false, Ordering::SeqCst);
    drive(&gw, || rx.accepted().len() >= 2 * ALL.len()).await;
    // A few more passes: nothing arrives twice.
    for _ in 0..5 {
        n.try_run_once().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    n.try_run_once().await.unwrap();
    rx.assert_exactly_once();
    let types = rx.types();
    for t in ALL {
        assert_eq!(types.get(t), Some(&2), "{t}: {types:?}");
    }
    assert_eq!(rx.accepted().len(), 2 * ALL.len(), "{types:?}");
    // Payloads carry the review and the event (delivery order is not guaranteed).
    let (_, _, created) = rx
        .accepted()
        .into_iter()
        .find(|(_, t, b)| t == "review.created" && b["data"]["review"]["command"] == "echo one")
        .expect("review.created of the first command");
    assert_eq!(created["data"]["review"]["requester"], "dev@example.com");
    assert_eq!(
        created["data"]["review"]["connection_type"], "command",
        "{created}"
    );
    assert_eq!(created["data"]["event"]["kind"], "review_requested");
    assert!(created["timestamp"].as_str().unwrap().contains('T'));
    let (_, log) = gw.admin("GET", "/api/deliveries?kind=webhook", None).await;
    assert!(
        log.as_array()
            .unwrap()
            .iter()
            .all(|d| d["status"] == "sent"),
        "{log}"
    );

    // Deleting an endpoint stops its deliveries.
    let (s, _) = gw
        .admin(
            "DELETE",
            &format!("/api/webhooks/{}", hook["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(s, 204);
    // Non-admins see nothing of this.
    let (s, _) = gw.call("GET", "/api/deliveries", Some(&dev), None).await;
    assert_eq!(s, 403);
    let (s, _) = gw
        .call(
            "POST",
            "/api/webhooks",
            Some(&dev),
            Some(json!({"url": "https://x.example"})),
        )
        .await;
    assert_eq!(s, 403);
    gw.stop().await;
}

async fn restart_loses_nothing(b: Backend) {
    let rx = Receiver::default();
    let fake = Fake::start(rx.handler()).await;
    let gw = TestGateway::spawn_with(b, quick).await;
    let (dev, dba) = people(&gw).await;
    create_webhook(&gw, &format!("{}/hook", fake.url), None).await;

    // Events committed, nothing planned yet: the gateway stops.
    approved_command(&gw, &dev, &dba, "echo before-restart").await;
    let (config, dir) = gw.stop().await;
    assert!(rx.accepted().is_empty());

    // Restarted: everything is planned and delivered.
    let gw = TestGateway::start(config, dir, None).await;
    drive(&gw, || rx.accepted().len() >= ALL.len()).await;
    rx.assert_exactly_once();

    // Planned but not sent when the gateway stops: sent after the restart, once.
    // (tokens live in the store: they survive the restart)
    approved_command(&gw, &dev, &dba, "echo planned-only").await;
    let planned = gw.running.app.notifier().fan_out().await.unwrap();
    assert!(planned >= ALL.len(), "{planned}");
    let (config, dir) = gw.stop().await;
    let gw = TestGateway::start(config, dir, None).await;

    // Two workers at once (two replicas): still exactly once.
    let (n1, n2) = (gw.running.app.notifier(), gw.running.app.notifier());
    for _ in 0..200 {
        let (a, b) = tokio::join!(n1.try_run_once(), n2.try_run_once());
        a.unwrap();
        b.unwrap();
        if rx.accepted().len() >= 2 * ALL.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..3 {
        let (a, b) = tokio::join!(n1.try_run_once(), n2.try_run_once());
        a.unwrap();
        b.unwrap();
    }
    rx.assert_exactly_once();
    for t in ALL {
        assert_eq!(rx.types().get(t), Some(&2), "{t}: {:?}", rx.types());
    }
    assert_eq!(rx.accepted().len(), 2 * ALL.len());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_loses_nothing_sqlite() {
    restart_loses_nothing(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_loses_nothing_postgres() {
    restart_loses_nothing(Backend::Postgres).await;
}

/// The background worker (as run by `warden gateway`) delivers on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn background_worker_delivers() {
    let rx = Receiver::default();
    let fake = Fake::start(rx.handler()).await;
    let gw = TestGateway::spawn_with(Backend::Postgres, |c| {
        c.notify_poll_ms = 50;
        c.notify_backoff_ms = 20;
    })
    .await;
    let (dev, dba) = people(&gw).await;
    create_webhook(&gw, &format!("{}/hook", fake.url), None).await;
    approved_command(&gw, &dev, &dba, "echo bg").await;
    for _ in 0..200 {
        if rx.accepted().len() >= ALL.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rx.assert_exactly_once();
    assert_eq!(rx.accepted().len(), ALL.len(), "{:?}", rx.types());
    gw.stop().await;
}
