//! `warden admin create webhook`, `get webhooks`, `get deliveries` and `delete webhook` with the
//! real binary against a real gateway.

use std::process::Stdio;

use serde_json::Value;
use tokio::process::Command;
use warden_gateway::testing::{Backend, TestGateway};

async fn warden(gw: &TestGateway, args: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .env("WARDEN_GATEWAY", &gw.base)
        .env("WARDEN_CONFIG", dir.path().join("config.json"))
        .env("WARDEN_TOKEN", &gw.admin_token)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_and_delivery_commands() {
    let gw = TestGateway::spawn_with(Backend::Sqlite, |c| c.notify_poll_ms = 0).await;
    let (code, out, err) = warden(
        &gw,
        &[
            "admin",
            "create",
            "webhook",
            "http://127.0.0.1:9/hook",
            "--events",
            "review.created,review.approved",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
    let id = created["id"].as_str().unwrap().to_string();

    let (code, out, _) = warden(
        &gw,
        &[
            "admin",
            "create",
            "webhook",
            "http://127.0.0.1:9/x",
            "--secret",
            "nope",
        ],
    )
    .await;
    assert_ne!(code, 0, "a bad secret is refused: {out}");

    let (code, out, err) = warden(&gw, &["admin", "get", "webhooks", "-o", "json"]).await;
    assert_eq!(code, 0, "{err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(
        list[0]["events"],
        serde_json::json!(["review.created", "review.approved"])
    );
    assert!(!out.contains("whsec_"), "secrets are never listed");
    let (code, out, _) = warden(&gw, &["admin", "get", "webhooks"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("FAILING") && out.contains("127.0.0.1:9"),
        "{out}"
    );

    // A held command, planned for the (unreachable) webhook: the delivery log shows it.
    let dev = gw.user("dev@example.com", &["dev"]).await;
    gw.command_connection("shell", &["sh"], &["dba"]).await;
    let (s, _) = gw
        .call(
            "POST",
            "/api/exec",
            Some(&dev),
            Some(serde_json::json!({"connection": "shell", "command": "echo hi"})),
        )
        .await;
    assert_eq!(s, 202);
    gw.running.app.notifier().try_run_once().await.unwrap();
    let (code, out, err) = warden(&gw, &["admin", "get", "deliveries", "-o", "json"]).await;
    assert_eq!(code, 0, "{err}");
    let log: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(log.as_array().unwrap().len(), 1, "{log}");
    assert_eq!(log[0]["event_type"], "review.created");
    assert_eq!(log[0]["attempts"], 1);
    let (code, out, _) = warden(&gw, &["admin", "get", "deliveries", "--status", "pending"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("review.created") && out.contains("connection failed"),
        "{out}"
    );

    let (code, _, err) = warden(&gw, &["admin", "delete", "webhook", &id]).await;
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = warden(
        &gw,
        &[
            "admin",
            "get",
            "deliveries",
            "--status",
            "dropped",
            "-o",
            "json",
        ],
    )
    .await;
    let log: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        log.as_array().unwrap().len(),
        1,
        "pending deliveries of a deleted webhook are dropped"
    );
    gw.stop().await;
}
