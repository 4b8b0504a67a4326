//! The read-only auditor role through the API, on SQLite and PostgreSQL stores: an auditor reads
//! every review, session, audit entry, export, verification and analytics, and is refused every
//! decision, every command, every window and every admin change, even when it belongs to the
//! groups that would allow them. Each refusal is checked to have changed nothing.

use serde_json::{Value, json};
use warden_gateway::on_both_stores;
use warden_gateway::testing::{Backend, TestGateway};

on_both_stores!(
    auditors_read_everything,
    auditors_change_nothing,
    the_role_is_explicit,
);

/// An auditor in the approver group `dba` and the access group of every connection, so any
/// refusal below comes from the role, not from missing groups.
async fn auditor(gw: &TestGateway) -> String {
    let (s, b) = gw
        .admin(
            "POST",
            "/api/users",
            Some(json!({"email": "audit@example.com", "groups": ["dba", "dev"], "auditor": true})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["auditor"], true);
    assert_eq!(b["admin"], false);
    let (s, b) = gw
        .admin(
            "POST",
            "/api/tokens",
            Some(json!({"user": "audit@example.com"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    b["token"].as_str().unwrap().to_string()
}

/// A dev's command approved and run (one session), and a second one left pending.
async fn some_history(gw: &TestGateway) -> (String, String, String) {
    let dev = gw.user("dev@example.com", &["dev"]).await;
    let dba = gw.user("dba@example.com", &["dba"]).await;
    gw.command_connection("shell", &["sh"], &["dba"]).await;
    let (s, r) = gw.exec(&dev, "shell", "echo ran-once").await;
    assert_eq!(s, 202, "{r}");
    let ran = r["review"]["id"].as_str().unwrap().to_string();
    let (s, b) = gw.decide(&dba, &ran, "approve", None).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = gw
        .call(
            "GET",
            &format!("/api/reviews/{ran}/wait?timeout=10"),
            Some(&dev),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], "EXECUTED", "{b}");
    let (s, r) = gw.exec(&dev, "shell", "echo still-pending").await;
    assert_eq!(s, 202, "{r}");
    let pending = r["review"]["id"].as_str().unwrap().to_string();
    (dev, ran, pending)
}

async fn auditors_read_everything(b: Backend) {
    let gw = TestGateway::spawn(b).await;
    let (dev, ran, pending) = some_history(&gw).await;
    let audit = auditor(&gw).await;

    let get = |path: String| {
        let gw = &gw;
        let audit = audit.clone();
        async move {
            let (s, body) = gw.call("GET", &path, Some(&audit), None).await;
            assert_eq!(s, 200, "auditor GET {path}: {body}");
            body
        }
    };
    // Every review, not only those in its groups or its own.
    let reviews = get("/api/reviews?status=all".into()).await;
    let ids: Vec<&str> = reviews
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&ran.as_str()) && ids.contains(&pending.as_str()));
    assert_eq!(
        get(format!("/api/reviews/{ran}")).await["status"],
        "EXECUTED"
    );
    assert!(
        !get(format!("/api/reviews/{ran}/timeline"))
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );
    // Every session, and its detail.
    let sessions = get("/api/sessions".into()).await;
    let session = sessions
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["user"] == "dev@example.com")
        .unwrap_or_else(|| panic!("the dev's session is listed: {sessions}"))
        .clone();
    let sid = session["id"].as_str().unwrap();
    assert_eq!(
        get(format!("/api/sessions/{sid}")).await["user"],
        "dev@example.com"
    );
    get(format!("/api/sessions/{sid}/statements")).await;
    // The audit log, its verification, an export, analytics, checkpoints, connections, rules.
    let log = get("/api/audit?after=0&limit=500".into()).await;
    assert!(log.as_array().unwrap().len() > 5, "{log}");
    assert_eq!(get("/api/audit/verify".into()).await["ok"], true);
    let export = get("/api/audit/export".into()).await;
    assert!(
        export["rows"].as_array().unwrap().len() >= 2,
        "the export has both reviews: {export}"
    );
    let a = get("/api/analytics".into()).await;
    assert!(a.to_string().contains("\"total\":2"), "{a}");
    get("/api/audit/checkpoints".into()).await;
    let conns = get("/api/connections".into()).await;
    assert_eq!(conns.as_array().unwrap().len(), 1, "{conns}");
    get("/api/rules".into()).await;
    let me = get("/api/me".into()).await;
    assert_eq!(me["auditor"], true, "{me}");

    // An engineer reads none of the auditor's views.
    for path in [
        "/api/audit",
        "/api/audit/verify",
        "/api/audit/export",
        "/api/analytics",
        "/api/audit/checkpoints",
    ] {
        let (s, body) = gw.call("GET", path, Some(&dev), None).await;
        assert_eq!(s, 403, "engineer GET {path}: {body}");
    }
}

async fn auditors_change_nothing(b: Backend) {
    let gw = TestGateway::spawn(b).await;
    let (_dev, _ran, pending) = some_history(&gw).await;
    let audit = auditor(&gw).await;
    let (_, head_before) = gw.admin("GET", "/api/audit?after=0&limit=1000", None).await;
    let entries_before = head_before.as_array().unwrap().len();

    let refused = |method: &'static str, path: String, body: Option<Value>| {
        let gw = &gw;
        let audit = audit.clone();
        async move {
            let (s, b) = gw.call(method, &path, Some(&audit), body).await;
            assert_eq!(s, 403, "auditor {method} {path}: {b}");
            b
        }
    };
    // Decisions, although it is in the approval group.
    let b = refused(
        "PUT",
        format!("/api/reviews/{pending}/approve"),
        Some(json!({})),
    )
    .await;
    assert!(b.to_string().contains("read-only"), "{b}");
    refused(
        "PUT",
        format!("/api/reviews/{pending}/approve"),
        Some(json!({"force": true, "reason": "audit"})),
    )
    .await;
    refused(
        "PUT",
        format!("/api/reviews/{pending}/reject"),
        Some(json!({"reason": "no"})),
    )
    .await;
    refused(
        "PUT",
        format!("/api/reviews/{pending}/revoke"),
        Some(json!({"reason": "no"})),
    )
    .await;
    // Commands and windows, although it is in the connection's groups.
    let b = refused(
        "POST",
        "/api/exec".into(),
        Some(json!({"connection": "shell", "command": "id"})),
    )
    .await;
    assert!(b.to_string().contains("read-only"), "{b}");
    refused(
        "POST",
        "/api/access-requests".into(),
        Some(json!({"connection": "shell", "duration": "1h", "reason": "look"})),
    )
    .await;
    // Admin changes and admin reads.
    refused(
        "POST",
        "/api/users".into(),
        Some(json!({"email": "x@example.com", "groups": []})),
    )
    .await;
    refused("DELETE", "/api/users/dev@example.com".into(), None).await;
    refused("GET", "/api/users".into(), None).await;
    refused("GET", "/api/groups".into(), None).await;
    refused(
        "POST",
        "/api/tokens".into(),
        Some(json!({"user": "dev@example.com"})),
    )
    .await;
    refused(
        "POST",
        "/api/connections".into(),
        Some(json!({"name": "c2", "type": "command", "command": ["sh"]})),
    )
    .await;
    refused("DELETE", "/api/connections/shell".into(), None).await;
    refused(
        "POST",
        "/api/rules".into(),
        Some(json!({"name": "r2", "type": "command", "connections": ["shell"], "approval_groups": ["dba"]})),
    )
    .await;
    refused(
        "PUT",
        "/api/rules/shell".into(),
        Some(json!({"name": "shell", "type": "command", "connections": ["shell"], "approval_groups": ["dev"]})),
    )
    .await;
    refused("DELETE", "/api/rules/shell".into(), None).await;
    refused("POST", "/api/audit/checkpoints".into(), None).await;
    // Integrations and metrics stay with admins.
    refused("GET", "/api/webhooks".into(), None).await;
    refused(
        "POST",
        "/api/webhooks".into(),
        Some(json!({"url": "https://example.com/hook"})),
    )
    .await;
    refused("GET", "/api/deliveries".into(), None).await;
    refused("GET", "/metrics".into(), None).await;

    // Nothing changed: the review is still pending with no approval, the connection and rule
    // are as they were, no user was added; the only new entries are the refused attempts.
    let (_, r) = gw
        .admin("GET", &format!("/api/reviews/{pending}"), None)
        .await;
    assert_eq!(r["status"], "PENDING");
    assert_eq!(r["approvals"], json!([]));
    let (s, _) = gw.admin("GET", "/api/users", None).await;
    assert_eq!(s, 200);
    let (_, users) = gw.admin("GET", "/api/users", None).await;
    assert!(
        !users.to_string().contains("x@example.com"),
        "no user was created: {users}"
    );
    let (_, rule) = gw.admin("GET", "/api/rules/shell", None).await;
    assert_eq!(rule["approval_groups"], json!(["dba"]));
    let (_, conns) = gw.admin("GET", "/api/connections", None).await;
    assert_eq!(conns.as_array().unwrap().len(), 1);
    let (_, after) = gw.admin("GET", "/api/audit?after=0&limit=1000", None).await;
    for e in &after.as_array().unwrap()[entries_before..] {
        assert_eq!(
            e["event"]["kind"], "access_denied",
            "only refusals were recorded after the attempts: {e}"
        );
    }
    let (_, v) = gw.admin("GET", "/api/audit/verify", None).await;
    assert_eq!(v["ok"], true, "{v}");
}

async fn the_role_is_explicit(b: Backend) {
    let gw = TestGateway::spawn(b).await;
    // Admin and auditor at once is refused, and nothing is created.
    let (s, body) = gw
        .admin(
            "POST",
            "/api/users",
            Some(json!({"email": "both@example.com", "admin": true, "auditor": true})),
        )
        .await;
    assert_eq!(s, 400, "{body}");
    let (_, users) = gw.admin("GET", "/api/users", None).await;
    assert!(!users.to_string().contains("both@example.com"));
    // The flag survives a restart (it is stored), and an overwrite can take it away.
    let token = auditor(&gw).await;
    let (config, dir) = gw.stop().await;
    let gw = TestGateway::start(config, dir, None).await;
    let (s, me) = gw.call("GET", "/api/me", Some(&token), None).await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["auditor"], true);
    let (s, b) = gw
        .admin(
            "POST",
            "/api/users",
            Some(json!({"email": "audit@example.com", "groups": ["dba"], "overwrite": true})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, _) = gw.call("GET", "/api/audit", Some(&token), None).await;
    assert_eq!(s, 403, "no longer an auditor");
}
