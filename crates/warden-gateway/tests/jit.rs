//! Just-in-time windows through the API: request limits, approval (and shortening), free use
//! inside the window with each session linked to the grant, end of window by the sweeper (real
//! time and injected clock), revoke, and restart survival — on SQLite and PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use warden_gateway::on_both_stores;
use warden_gateway::testing::{Backend, FakeClock, TestGateway};

on_both_stores!(
    requests_are_checked,
    window_opens_runs_freely_and_closes,
    revoke_ends_the_window,
    window_survives_restart,
    injected_clock_ends_windows
);

async fn setup(gw: &TestGateway, with_command_rule: bool) -> (String, String) {
    let dev = gw.user("dev@example.com", &["dev"]).await;
    let dba = gw.user("dba@example.com", &["dba"]).await;
    gw.command_connection(
        "c",
        &["cat"],
        if with_command_rule { &["dba"] } else { &[] },
    )
    .await;
    let (s, b) = gw
        .admin("POST", "/api/rules", Some(json!({"name": "win", "type": "jit", "connections": ["c"], "approval_groups": ["dba"], "max_duration_sec": 3600, "require_reason": true})))
        .await;
    assert_eq!(s, 201, "{b}");
    (dev, dba)
}

async fn request(
    gw: &TestGateway,
    token: &str,
    duration: Value,
    reason: Option<&str>,
) -> (u16, Value) {
    gw.call(
        "POST",
        "/api/access-requests",
        Some(token),
        Some(json!({"connection": "c", "duration": duration, "reason": reason})),
    )
    .await
}

async fn requests_are_checked(b: Backend) {
    let gw = TestGateway::spawn(b).await;
    let (dev, _) = setup(&gw, false).await;
    let (s, r) = request(&gw, &dev, json!("2h"), Some("incident")).await;
    assert_eq!(s, 400, "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("max duration 1h"),
        "{r}"
    );
    let (s, r) = request(&gw, &dev, json!("30m"), None).await;
    assert_eq!(s, 400);
    assert!(
        r["error"].as_str().unwrap().contains("requires a reason"),
        "{r}"
    );
    let (s, r) = request(&gw, &dev, json!("soon"), Some("x")).await;
    assert_eq!(s, 400, "{r}");
    // outside any window, a jit-only connection refuses exec with a hint
    let (s, r) = gw.exec(&dev, "c", "x").await;
    assert_eq!(s, 403);
    assert!(
        r["error"].as_str().unwrap().contains("warden request c"),
        "{r}"
    );
    let (s, r) = request(&gw, &dev, json!(1800), Some("incident 42")).await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["review"]["type"], "jit");
    assert_eq!(r["review"]["duration_sec"], 1800);
    assert_eq!(r["review"]["request_reason"], "incident 42");
    gw.stop().await;
}

async fn window_opens_runs_freely_and_closes(b: Backend) {
    let gw = TestGateway::spawn_with(b, |c| c.sweep_ms = 100).await;
    let (dev, dba) = setup(&gw, true).await;
    let (_, r) = request(&gw, &dev, json!("30m"), Some("deploy")).await;
    let id = r["review"]["id"].as_str().unwrap().to_string();
    // the approver shortens the window to 2 seconds
    let (s, ap) = gw
        .decide(&dba, &id, "approve", Some(json!({"duration": 2})))
        .await;
    assert_eq!(s, 200, "{ap}");
    assert_eq!(ap["status"], "APPROVED");
    assert_eq!(ap["duration_sec"], 2);
    assert!(ap["window_end"].is_string());
    let (_, mine) = gw.call("GET", "/api/access", Some(&dev), None).await;
    assert_eq!(mine.as_array().unwrap().len(), 1, "{mine}");
    // inside the window: exec runs at once (the command rule is not consulted), linked to the grant
    let (s, r) = gw.exec(&dev, "c", "inside").await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["session"]["output"], "inside");
    assert_eq!(r["session"]["review_id"], id.as_str());
    // after the end: the review is EXECUTED and exec is held again by the command rule
    gw.clock().advance(3);
    let mut after = Value::Null;
    for _ in 0..100 {
        after = gw
            .call("GET", &format!("/api/reviews/{id}"), Some(&dev), None)
            .await
            .1;
        if after["status"] == "EXECUTED" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        after["status"], "EXECUTED",
        "the sweeper closes the window: {after}"
    );
    let (s, r) = gw.exec(&dev, "c", "outside").await;
    assert_eq!(s, 202, "held again: {r}");
    let (_, mine) = gw.call("GET", "/api/access", Some(&dev), None).await;
    assert_eq!(mine, json!([]));
    let (_, tl) = gw
        .call(
            "GET",
            &format!("/api/reviews/{id}/timeline"),
            Some(&dev),
            None,
        )
        .await;
    let kinds: Vec<&str> = tl
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"window_ended") && kinds.contains(&"session_started"),
        "{kinds:?}"
    );
    gw.stop().await;
}

async fn revoke_ends_the_window(b: Backend) {
    let gw = TestGateway::spawn(b).await;
    let (dev, dba) = setup(&gw, false).await;
    let (_, r) = request(&gw, &dev, json!("30m"), Some("debug")).await;
    let id = r["review"]["id"].as_str().unwrap().to_string();
    gw.decide(&dba, &id, "approve", None).await;
    assert_eq!(gw.exec(&dev, "c", "ok").await.0, 200);
    let outsider = gw.user("eve@example.com", &["sales"]).await;
    assert_eq!(gw.decide(&outsider, &id, "revoke", None).await.0, 404);
    assert_eq!(
        gw.decide(&dev, &id, "revoke", None).await.0,
        403,
        "the requester cannot revoke"
    );
    let r = gw.revoke(&dba, &id, "done").await;
    assert_eq!(r["status"], "REVOKED");
    assert_eq!(
        gw.exec(&dev, "c", "after").await.0,
        403,
        "window closed at once"
    );
    assert_eq!(gw.decide(&dba, &id, "revoke", None).await.0, 409);
    gw.stop().await;
}

async fn window_survives_restart(b: Backend) {
    let gw = TestGateway::spawn(b).await;
    let (dev, dba) = setup(&gw, false).await;
    let (_, r) = request(&gw, &dev, json!("30m"), Some("restart")).await;
    let id = r["review"]["id"].as_str().unwrap().to_string();
    gw.decide(&dba, &id, "approve", None).await;
    let (config, dir) = gw.stop().await;
    let gw = TestGateway::start(config, dir, None).await;
    let (s, r) = gw.exec(&dev, "c", "still open").await;
    assert_eq!(s, 200, "{r}");
    gw.stop().await;
}

async fn injected_clock_ends_windows(b: Backend) {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let url = match b {
        Backend::Sqlite => None,
        Backend::Postgres => Some(warden_gateway::testing::fresh_pg_database("warden_gw").await),
    };
    let mut config = TestGateway::config(dir.path().to_path_buf(), url);
    config.sweep_ms = 3_600_000; // the test drives the sweeper itself
    let clock = FakeClock::new();
    let gw = TestGateway::start(config, dir, Some(clock.clone())).await;
    let (dev, dba) = setup(&gw, false).await;
    let (_, r) = request(&gw, &dev, json!("1h"), Some("long job")).await;
    let id = r["review"]["id"].as_str().unwrap().to_string();
    gw.decide(&dba, &id, "approve", None).await;
    clock.advance(59 * 60);
    gw.sweep().await;
    assert_eq!(gw.exec(&dev, "c", "minute 59").await.0, 200, "still inside");
    clock.advance(60);
    // exactly at the end: no longer inside, even before the sweeper runs
    assert_eq!(gw.exec(&dev, "c", "minute 60").await.0, 403);
    gw.sweep().await;
    let (_, r) = gw
        .call("GET", &format!("/api/reviews/{id}"), Some(&dev), None)
        .await;
    assert_eq!(r["status"], "EXECUTED");
    // a pending request expires after the (default) timeout with the fake clock too
    let (_, r) = request(&gw, &dev, json!("10m"), Some("late")).await;
    let id = r["review"]["id"].as_str().unwrap().to_string();
    clock.advance(3600);
    gw.sweep().await;
    let (_, r) = gw
        .call("GET", &format!("/api/reviews/{id}"), Some(&dev), None)
        .await;
    assert_eq!(r["status"], "EXPIRED");
    gw.stop().await;
}
