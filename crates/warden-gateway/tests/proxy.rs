//! Native clients through the gateway's PostgreSQL proxy, with real `psql` and a real driver
//! (tokio-postgres): login with an API token, statement audit, per-statement review under a
//! command rule (approve / reject), each run of a prepared statement reviewed with its
//! parameters, JIT windows that close sessions at their end and on revoke, and refusals.

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
        "statements",
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
    // The table still exists: dropping it directly succeeds (it fails loudly otherwise).
    direct_psql(&format!("DROP TABLE {table}")).await;
    gw.stop().await;
}

/// Runs SQL on the test database directly (not through the gateway); panics if it fails.
async fn direct_psql(sql: &str) -> String {
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "test",
            "-XAtc",
            sql,
        ])
        .output()
        .await
        .expect("psql is installed (postgresql-client)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A driver prepares a write once and runs it twice: each run is its own review, and the
/// reviewer sees the parameters of that run. Approving the first run does not let the second
/// through; preparing alone asks nobody; a prepared read runs at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_run_of_a_prepared_write_is_reviewed_with_its_parameters() {
    let (gw, psql, dev, dba) = setup(Backend::Sqlite).await;
    gw.admin("POST", "/api/rules", Some(json!({"name": "pg-cmd", "type": "command", "connections": ["pg"], "approval_groups": ["dba"]}))).await;
    let table = format!("wg_prep_{}", uuid::Uuid::new_v4().simple());
    direct_psql(&format!(
        "CREATE TABLE {table} (id int primary key, body text); INSERT INTO {table} VALUES (1, 'x'), (2, 'y')"
    ))
    .await;
    let (client, conn) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=dev@example.com password={dev} dbname=pg sslmode=disable",
            psql.port
        ),
        tokio_postgres::NoTls,
    )
    .await
    .expect("driver logs in through the gateway with a token");
    tokio::spawn(conn);
    let client = std::sync::Arc::new(client);
    let read = client
        .prepare(&format!("SELECT body FROM {table} WHERE id = $1"))
        .await
        .unwrap();
    let body: String = client.query_one(&read, &[&1i32]).await.unwrap().get(0);
    assert_eq!(body, "x");
    let update = client
        .prepare(&format!("UPDATE {table} SET body = $1 WHERE id = $2"))
        .await
        .unwrap();
    let (_, pending) = gw
        .call("GET", "/api/reviews?status=pending", Some(&dba), None)
        .await;
    assert_eq!(pending, json!([]), "preparing runs nothing, asks nobody");

    // First run: held with its parameters, approved, runs.
    let run = {
        let (c, st) = (client.clone(), update.clone());
        tokio::spawn(async move { c.execute(&st, &[&"first", &1i32]).await })
    };
    let first = pending_id(&gw, &dba).await;
    let (_, r) = gw
        .call("GET", &format!("/api/reviews/{first}"), Some(&dba), None)
        .await;
    let command = r["command"].as_str().unwrap();
    assert!(
        command.starts_with(&format!("UPDATE {table} SET body = $1 WHERE id = $2"))
            && command.contains("as text 'first'"),
        "{command}"
    );
    gw.call(
        "PUT",
        &format!("/api/reviews/{first}/approve"),
        Some(&dba),
        None,
    )
    .await;
    let n = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(n, 1);

    // Second run of the same prepared statement: a new review, rejected, never runs.
    let run = {
        let (c, st) = (client.clone(), update.clone());
        tokio::spawn(async move { c.execute(&st, &[&"second", &2i32]).await })
    };
    let second = pending_id(&gw, &dba).await;
    assert_ne!(second, first);
    let (_, r) = gw
        .call("GET", &format!("/api/reviews/{second}"), Some(&dba), None)
        .await;
    assert!(
        r["command"].as_str().unwrap().contains("as text 'second'"),
        "{r}"
    );
    gw.call(
        "PUT",
        &format!("/api/reviews/{second}/reject"),
        Some(&dba),
        Some(json!({"reason": "not that row"})),
    )
    .await;
    let err = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "42501");
    assert!(db.message().contains("not that row"), "{}", db.message());
    assert_eq!(
        direct_psql(&format!(
            "SELECT string_agg(body, ',' ORDER BY id) FROM {table}"
        ))
        .await,
        "first,y"
    );

    // Every run is on record: the read, the approved write, the rejected one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, sessions) = gw.admin("GET", "/api/sessions?kind=proxy", None).await;
    let sid = sessions[0]["id"].as_str().unwrap().to_string();
    let (_, stmts) = gw
        .admin("GET", &format!("/api/sessions/{sid}/statements"), None)
        .await;
    let tags: Vec<(String, String)> = stmts
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["statement"].as_str().unwrap().contains(&table))
        .map(|s| {
            (
                s["statement"]
                    .as_str()
                    .unwrap()
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .to_string(),
                s["tag"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        tags,
        [
            ("SELECT".to_string(), "SELECT 1".to_string()),
            ("UPDATE".to_string(), "UPDATE 1".to_string()),
            ("UPDATE".to_string(), "REJECTED".to_string()),
        ],
        "{stmts}"
    );
    drop(client);
    direct_psql(&format!("DROP TABLE {table}")).await;
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
