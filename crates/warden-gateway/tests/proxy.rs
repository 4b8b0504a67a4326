//! Native clients through the gateway's PostgreSQL proxy, with real `psql`: login with an API
//! token, statement audit, per-statement review under a command rule (approve / reject), JIT
//! windows that close sessions at their end and on revoke, and refusals.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::Command;
use warden_gateway::testing::{Backend, TestGateway};

struct Psql {
    port: u16,
}

impl Psql {
    fn cmd(&self, user: &str, token: &str, db: &str, sql: &str) -> Command {
        let mut c = Command::new("psql");
        c.arg(format!(
            "host=127.0.0.1 port={} user={user} dbname={db} sslmode=disable connect_timeout=5",
            self.port
        ))
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .env("PGPASSWORD", token)
        .kill_on_drop(true);
        c
    }
    async fn run(&self, user: &str, token: &str, db: &str, sql: &str) -> (i32, String, String) {
        let out = self
            .cmd(user, token, db, sql)
            .output()
            .await
            .expect("psql is installed (postgresql-client)");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into(),
            String::from_utf8_lossy(&out.stderr).into(),
        )
    }
}

async fn setup(b: Backend) -> (TestGateway, Psql, String, String) {
    let gw = TestGateway::spawn(b).await;
    let dev = gw.user("dev@example.com", &["dev"]).await;
    let dba = gw.user("dba@example.com", &["dba"]).await;
    let (s, body) = gw.admin("POST", "/api/connections", Some(json!({"name": "pg", "type": "postgres", "url": "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"}))).await;
    assert_eq!(s, 201, "{body}");
    let port = gw.running.pg_addr.unwrap().port();
    (gw, Psql { port }, dev, dba)
}

async fn pending_id(gw: &TestGateway, dba: &str) -> String {
    for _ in 0..100 {
        let (_, list) = gw
            .call("GET", "/api/reviews?status=pending", Some(dba), None)
            .await;
        if let Some(id) = list[0]["id"].as_str() {
            return id.to_string();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no pending review appeared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_logs_in_with_a_token_and_every_statement_is_audited() {
    let (gw, psql, dev, _) = setup(Backend::Sqlite).await;
    let (code, out, err) = psql
        .run("dev@example.com", &dev, "pg", "SELECT 40 + 2 AS answer")
        .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("42"), "{out}");
    // wrong token, wrong user for the token, unknown connection
    let (code, _, err) = psql
        .run("dev@example.com", "wdn_wrong", "pg", "SELECT 1")
        .await;
    assert_ne!(code, 0);
    assert!(
        err.contains("28P01") || err.contains("authentication failed") || err.contains("password"),
        "{err}"
    );
    let (code, _, _) = psql.run("dba@example.com", &dev, "pg", "SELECT 1").await;
    assert_ne!(code, 0, "a token only logs in its own user");
    let (code, _, err) = psql.run("dev@example.com", &dev, "nope", "SELECT 1").await;
    assert_ne!(code, 0);
    assert!(err.contains("no PostgreSQL connection named"), "{err}");
    // the session and its statement are on record
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, sessions) = gw.admin("GET", "/api/sessions?kind=proxy", None).await;
    let s = &sessions.as_array().unwrap()[0];
    assert_eq!(s["user"], "dev@example.com");
    assert!(s["ended_at"].is_string(), "{s}");
    let (_, stmts) = gw
        .admin(
            "GET",
            &format!("/api/sessions/{}/statements", s["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(stmts[0]["statement"], "SELECT 40 + 2 AS answer", "{stmts}");
    assert_eq!(stmts[0]["tag"], "SELECT 1");
    let (_, audit) = gw.admin("GET", "/api/audit?limit=1000", None).await;
    let kinds: Vec<String> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["kind"].as_str().unwrap().to_string())
        .collect();
    for k in [
        "session_started",
        "statement",
        "session_ended",
        "login_failed",
    ] {
        assert!(kinds.iter().any(|x| x == k), "{k} missing: {kinds:?}");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_held_per_statement_reads_run() {
    let (gw, psql, dev, dba) = setup(Backend::Postgres).await;
    gw.admin("POST", "/api/rules", Some(json!({"name": "pg-cmd", "type": "command", "connections": ["pg"], "approval_groups": ["dba"]}))).await;
    let table = format!("wg_proxy_{}", uuid::Uuid::new_v4().simple());
    // a read runs at once
    let (code, out, err) = psql
        .run("dev@example.com", &dev, "pg", "SELECT 'read' AS r")
        .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("read"));
    // a write is held, approved, then runs in the same session
    let create = format!("CREATE TABLE {table} (id int)");
    let child = psql
        .cmd("dev@example.com", &dev, "pg", &create)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let id = pending_id(&gw, &dba).await;
    let (_, r) = gw
        .call("GET", &format!("/api/reviews/{id}"), Some(&dba), None)
        .await;
    assert_eq!(r["command"], create.as_str());
    gw.call(
        "PUT",
        &format!("/api/reviews/{id}/approve"),
        Some(&dba),
        None,
    )
    .await;
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("held for approval") && stderr.contains(&format!("/reviews/{id}")),
        "notice with the URL: {stderr}"
    );
    assert!(stdout.contains("CREATE TABLE"), "{stdout}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, r) = gw
        .call("GET", &format!("/api/reviews/{id}"), Some(&dba), None)
        .await;
    assert_eq!(r["status"], "EXECUTED", "{r}");
    // a rejected write gets 42501 with the approver's reason
    let drop = format!("DROP TABLE {table}");
    let child = psql
        .cmd("dev@example.com", &dev, "pg", &drop)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let id = pending_id(&gw, &dba).await;
    gw.call(
        "PUT",
        &format!("/api/reviews/{id}/reject"),
        Some(&dba),
        Some(json!({"reason": "keep it"})),
    )
    .await;
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("rejected by dba@example.com") && stderr.contains("keep it"),
        "{stderr}"
    );
    // the table still exists (clean up as an admin, auto-approved: no rule for admins? use direct)
    let direct = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "test",
            "-c",
            &format!("DROP TABLE {table}"),
        ])
        .output()
        .await
        .unwrap();
    assert!(direct.status.success(), "the rejected DROP never ran");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jit_windows_gate_sessions_and_close_them() {
    let (gw, psql, dev, dba) = setup(Backend::Sqlite).await;
    gw.admin("POST", "/api/rules", Some(json!({"name": "pg-jit", "type": "jit", "connections": ["pg"], "approval_groups": ["dba"]}))).await;
    // no window: refused at login with a hint
    let (code, _, err) = psql.run("dev@example.com", &dev, "pg", "SELECT 1").await;
    assert_ne!(code, 0);
    assert!(err.contains("warden request pg"), "{err}");
    // a 3-second window: a long statement is cut at the window's end
    let (_, r) = gw
        .call(
            "POST",
            "/api/access-requests",
            Some(&dev),
            Some(json!({"connection": "pg", "duration": 3})),
        )
        .await;
    let id = r["review"]["id"].as_str().unwrap().to_string();
    gw.call(
        "PUT",
        &format!("/api/reviews/{id}/approve"),
        Some(&dba),
        None,
    )
    .await;
    let started = std::time::Instant::now();
    let (code, _, err) = psql
        .run("dev@example.com", &dev, "pg", "SELECT pg_sleep(20)")
        .await;
    assert_ne!(code, 0);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "closed at the window's end, not after the statement"
    );
    assert!(
        err.contains("window") || err.contains("57P01") || err.contains("terminat"),
        "{err}"
    );
    let (code, _, _) = psql.run("dev@example.com", &dev, "pg", "SELECT 1").await;
    assert_ne!(code, 0, "new sessions refused after the end");
    // revoke closes a live session within a second
    let (_, r) = gw
        .call(
            "POST",
            "/api/access-requests",
            Some(&dev),
            Some(json!({"connection": "pg", "duration": "1h"})),
        )
        .await;
    let id = r["review"]["id"].as_str().unwrap().to_string();
    gw.call(
        "PUT",
        &format!("/api/reviews/{id}/approve"),
        Some(&dba),
        None,
    )
    .await;
    let child = psql
        .cmd("dev@example.com", &dev, "pg", "SELECT pg_sleep(30)")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let t = std::time::Instant::now();
    let (s, _) = gw
        .call(
            "PUT",
            &format!("/api/reviews/{id}/revoke"),
            Some(&dba),
            Some(json!({"reason": "incident over"})),
        )
        .await;
    assert_eq!(s, 200);
    let out = tokio::time::timeout(Duration::from_secs(5), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "terminated within a second or so: {:?}",
        t.elapsed()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("revoked"), "{stderr}");
    // statements in the window carried the grant's review id
    let (_, sessions) = gw.admin("GET", "/api/sessions?kind=proxy", None).await;
    let in_window: Vec<&Value> = sessions
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["review_id"] == id.as_str())
        .collect();
    assert_eq!(in_window.len(), 1);
    gw.stop().await;
}
