//! Native clients through the gateway's PostgreSQL proxy, with real `psql` and a real driver
//! (tokio-postgres): login with an API token, statement audit, per-statement review under a
//! command rule (approve / reject), each run of a prepared statement reviewed with its
//! parameters, JIT windows that close sessions at their end and on revoke, and refusals.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::Command;
use warden_gateway::testing::{Backend, TestGateway, eventually};

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
    // (a session's end is recorded after its last statement)
    let s = &eventually("the proxied session's end", || async {
        let (_, sessions) = gw.admin("GET", "/api/sessions?kind=proxy", None).await;
        let s = sessions.as_array()?.first()?.clone();
        s["ended_at"].is_string().then_some(s)
    })
    .await;
    assert_eq!(s["user"], "dev@example.com");
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
    gw.decide(&dba, &id, "approve", None).await;
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
    eventually("the approved statement recorded as executed", || async {
        let (_, r) = gw
            .call("GET", &format!("/api/reviews/{id}"), Some(&dba), None)
            .await;
        (r["status"] == "EXECUTED").then_some(())
    })
    .await;
    // a rejected write gets 42501 with the approver's reason
    let drop = format!("DROP TABLE {table}");
    let child = psql
        .cmd("dev@example.com", &dev, "pg", &drop)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let id = pending_id(&gw, &dba).await;
    gw.decide(&dba, &id, "reject", Some(json!({"reason": "keep it"})))
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
    gw.decide(&dba, &first, "approve", None).await;
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
    gw.decide(
        &dba,
        &second,
        "reject",
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
    let stmts = eventually("the session's three runs on record", || async {
        let (_, sessions) = gw.admin("GET", "/api/sessions?kind=proxy", None).await;
        let sid = sessions.as_array()?.first()?["id"].as_str()?.to_string();
        let (_, stmts) = gw
            .admin("GET", &format!("/api/sessions/{sid}/statements"), None)
            .await;
        let runs = stmts
            .as_array()?
            .iter()
            .filter(|s| s["statement"].as_str().is_some_and(|t| t.contains(&table)))
            .count();
        (runs >= 3).then_some(stmts)
    })
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
    // Each held run links to its review: who approved it (with group and time), who refused.
    let runs: Vec<&Value> = stmts
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["statement"].as_str().unwrap().starts_with("UPDATE"))
        .collect();
    assert_eq!(runs[0]["review"]["status"], "EXECUTED", "{stmts}");
    assert_eq!(
        runs[0]["review"]["approvals"][0]["approver"],
        "dba@example.com"
    );
    assert_eq!(runs[0]["review"]["approvals"][0]["group"], "dba");
    assert!(
        runs[0]["review"]["approvals"][0]["at"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert_eq!(runs[1]["review"]["status"], "REJECTED", "{stmts}");
    assert_eq!(runs[1]["review"]["decided_by"], "dba@example.com");
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
    gw.decide(&dba, &id, "approve", None).await;
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
    gw.decide(&dba, &id, "approve", None).await;
    let child = psql
        .cmd("dev@example.com", &dev, "pg", "SELECT pg_sleep(30)")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let t = std::time::Instant::now();
    let (s, _) = gw
        .decide(
            &dba,
            &id,
            "revoke",
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

/// A driver session through the proxy; the handle resolves with how the connection ended.
async fn driver(
    port: u16,
    user: &str,
    token: &str,
) -> (
    tokio_postgres::Client,
    tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
) {
    let (client, conn) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={port} user={user} password={token} dbname=pg sslmode=disable"
        ),
        tokio_postgres::NoTls,
    )
    .await
    .expect("login through the proxy");
    (client, tokio::spawn(conn))
}

fn db_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{e}: {}", db.message()),
        None => e.to_string(),
    }
}

/// Under a command rule, with the real classifier (PostgreSQL's own parser): spellings the
/// old text search missed, user-defined functions and EXPLAIN ANALYZE are held; what no parse
/// tree can show (a view over a writing function) still cannot write, because the server runs
/// it in a read-only transaction; startup options are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_that_write_are_held_or_refused_by_the_server() {
    let (gw, psql, dev, dba) = setup(Backend::Sqlite).await;
    gw.admin("POST", "/api/rules", Some(json!({"name": "pg-cmd", "type": "command", "connections": ["pg"], "approval_groups": ["dba"]}))).await;
    let n = uuid::Uuid::new_v4().simple().to_string();
    let (t, f, v) = (
        format!("wg_t_{n}"),
        format!("wg_w_{n}"),
        format!("wg_v_{n}"),
    );
    direct_psql(&format!(
        "CREATE TABLE {t} (id int); \
         CREATE FUNCTION {f}() RETURNS int LANGUAGE sql AS $$ INSERT INTO {t} VALUES (1) RETURNING 1 $$; \
         CREATE VIEW {v} AS SELECT {f}() AS x"
    ))
    .await;
    let (c, _conn) = driver(psql.port, "dev@example.com", &dev).await;
    for held in [
        "SELECT U&\"\\0070g_read_file\"('/etc/hostname')".to_string(),
        format!("SELECT {f}()"),
        format!("SELECT \"{f}\"()"),
        format!("EXPLAIN ANALYZE SELECT {f}()"),
        "SELECT set_config('default_transaction_read_only', 'off', false)".to_string(),
        "BEGIN READ WRITE".to_string(),
    ] {
        let run = {
            let c = &c;
            let held = held.clone();
            async move { c.batch_execute(&held).await }
        };
        let reject = async {
            let id = pending_id(&gw, &dba).await;
            let (_, r) = gw
                .call("GET", &format!("/api/reviews/{id}"), Some(&dba), None)
                .await;
            assert_eq!(r["command"], held.as_str(), "{r}");
            gw.decide(&dba, &id, "reject", Some(json!({"reason": "no"})))
                .await;
        };
        let (ran, ()) = tokio::join!(run, reject);
        let e = db_text(&ran.expect_err(&held));
        assert!(e.contains("rejected by dba"), "{held}: {e}");
    }
    // The classifier sees a read; the server refuses the write the view hides.
    let e = c
        .batch_execute(&format!("SELECT * FROM {v}"))
        .await
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("25006"), "{e}");
    assert_eq!(
        direct_psql(&format!("SELECT count(*) FROM {t}"))
            .await
            .trim(),
        "0"
    );
    // Startup options could change how the server reads SQL: refused.
    let mut cmd = psql.cmd("dev@example.com", &dev, "pg", "SELECT 1");
    cmd.env("PGOPTIONS", "-c standard_conforming_strings=off");
    let out = cmd.output().await.unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("\"options\" is not allowed"), "{stderr}");
    direct_psql(&format!(
        "DROP VIEW {v}; DROP FUNCTION {f}(); DROP TABLE {t}"
    ))
    .await;
    gw.stop().await;
}

/// Decisions are not frozen at login: a rule bound to the connection closes a free session,
/// a revoked token or a deleted user closes a reviewed one, within a second or two, audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_sessions_follow_the_current_rules_users_and_tokens() {
    let (gw, psql, dev, _dba) = setup(Backend::Sqlite).await;
    // Free session (no rule), then a command rule is bound.
    let (c, conn) = driver(psql.port, "dev@example.com", &dev).await;
    c.batch_execute("SELECT 1").await.unwrap();
    gw.admin("POST", "/api/rules", Some(json!({"name": "pg-cmd", "type": "command", "connections": ["pg"], "approval_groups": ["dba"]}))).await;
    let e = closed(conn).await;
    assert!(e.contains("a command rule now applies"), "{e}");
    // Reviewed session, then its token is revoked.
    let (c, conn) = driver(psql.port, "dev@example.com", &dev).await;
    c.batch_execute("SELECT 1").await.unwrap();
    let (_, tokens) = gw.admin("GET", "/api/tokens", None).await;
    let id = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["user"] == "dev@example.com" || t["user_email"] == "dev@example.com")
        .and_then(|t| t["id"].as_str())
        .expect("dev's token")
        .to_string();
    let (s, b) = gw.admin("DELETE", &format!("/api/tokens/{id}"), None).await;
    assert!(s < 300, "{b}");
    let e = closed(conn).await;
    assert!(e.contains("revoked or expired"), "{e}");
    // Deleting the user ends its sessions too.
    let ops = gw.user("ops@example.com", &["dev"]).await;
    let (c, conn) = driver(psql.port, "ops@example.com", &ops).await;
    c.batch_execute("SELECT 1").await.unwrap();
    let (s, b) = gw.admin("DELETE", "/api/users/ops@example.com", None).await;
    assert!(s < 300, "{b}");
    let e = closed(conn).await;
    assert!(
        e.contains("revoked or expired") || e.contains("removed"),
        "{e}"
    );
    eventually("each of the three ends audited", || async {
        let (_, audit) = gw.admin("GET", "/api/audit?limit=1000", None).await;
        let ended = audit
            .as_array()?
            .iter()
            .filter(|e| {
                e["event"]["kind"] == "access_denied"
                    && e["event"]["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains("live session"))
            })
            .count();
        (ended == 3).then_some(())
    })
    .await;
    gw.stop().await;
}

/// Waits (up to 5 s) until the proxy closes the session; returns its FATAL's text.
async fn closed(conn: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>) -> String {
    match tokio::time::timeout(Duration::from_secs(5), conn).await {
        Ok(Ok(Err(e))) => db_text(&e),
        Ok(Ok(Ok(()))) => "closed without an error".into(),
        Ok(Err(e)) => panic!("connection task: {e}"),
        Err(_) => panic!("the session was not closed within 5 s"),
    }
}

/// Held statements end in what happened: one approved after a wait longer than the stale-claim
/// limit runs and is recorded as run (the sweeper does not call it "interrupted"); one whose
/// client hangs up while it waits is withdrawn, with the reason, and never runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_statements_end_in_what_happened() {
    let clock = warden_gateway::testing::FakeClock::new();
    let dir = std::sync::Arc::new(warden_gateway::testing::private_tempdir());
    let mut config = TestGateway::config(dir.path().to_path_buf(), None);
    config.review_timeout_sec = 7200;
    config.exec_timeout_sec = 10; // a claim is stale 70 s after it was last renewed
    let gw = TestGateway::start(config, dir, Some(clock.clone())).await;
    let dev = gw.user("dev@example.com", &["dev"]).await;
    let dba = gw.user("dba@example.com", &["dba"]).await;
    gw.admin("POST", "/api/connections", Some(json!({"name": "pg", "type": "postgres", "url": "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"}))).await;
    gw.admin("POST", "/api/rules", Some(json!({"name": "pg-cmd", "type": "command", "connections": ["pg"], "approval_groups": ["dba"]}))).await;
    let port = gw.running.pg_addr.unwrap().port();
    let t = format!("wg_h_{}", uuid::Uuid::new_v4().simple());
    direct_psql(&format!("CREATE TABLE {t} (id int)")).await;

    // Approved ten minutes (of the gateway's clock) after it was held; runs for two seconds
    // while the sweeper passes every 200 ms.
    let (c, _conn) = driver(port, "dev@example.com", &dev).await;
    let write = format!("WITH s AS (SELECT pg_sleep(2)) INSERT INTO {t} SELECT 1 FROM s");
    let approved_late = async {
        let id = pending_id(&gw, &dba).await;
        clock.advance(600);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (s, b) = gw.decide(&dba, &id, "approve", None).await;
        assert_eq!(s, 200, "{b}");
        id
    };
    let (ran, id) = tokio::join!(c.batch_execute(&write), approved_late);
    ran.expect("the approved statement runs");
    // The exit codes of the review's `review_executed` events, and its whole timeline.
    let (gw_, id_, dba_) = (&gw, &id, &dba);
    let executed = move || async move {
        let (_, timeline) = gw_
            .call(
                "GET",
                &format!("/api/reviews/{id_}/timeline"),
                Some(dba_),
                None,
            )
            .await;
        let codes: Vec<Value> = timeline
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["event"]["kind"] == "review_executed")
            .map(|e| e["event"]["exit_code"].clone())
            .collect();
        (codes, timeline)
    };
    let mut codes = Vec::new();
    for _ in 0..50 {
        (codes, _) = executed().await;
        if !codes.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // More sweeps: nothing may re-settle it.
    for _ in 0..3 {
        gw.sweep().await;
    }
    let (codes_after, timeline) = executed().await;
    assert_eq!(codes, [json!(0)], "recorded once, as run: {timeline}");
    assert_eq!(codes_after, codes, "{timeline}");
    assert_eq!(
        direct_psql(&format!("SELECT count(*) FROM {t}"))
            .await
            .trim(),
        "1"
    );

    // The client hangs up while its statement waits: the review is withdrawn, saying why.
    let (c2, conn2) = driver(port, "dev@example.com", &dev).await;
    let insert = format!("INSERT INTO {t} VALUES (2)");
    let waiting = tokio::spawn(async move { c2.batch_execute(&insert).await });
    let id = pending_id(&gw, &dba).await;
    waiting.abort();
    conn2.abort();
    let mut r = Value::Null;
    for _ in 0..50 {
        (_, r) = gw
            .call("GET", &format!("/api/reviews/{id}"), Some(&dba), None)
            .await;
        if r["status"] != "PENDING" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(r["status"], "REJECTED", "{r}");
    assert_eq!(
        r["reason"], "withdrawn: the client disconnected before the statement was decided",
        "{r}"
    );
    // Approving it now is refused: nothing would run it.
    let (s, _) = gw.decide(&dba, &id, "approve", None).await;
    assert_eq!(s, 409);
    assert_eq!(
        direct_psql(&format!("SELECT count(*) FROM {t}"))
            .await
            .trim(),
        "1"
    );
    direct_psql(&format!("DROP TABLE {t}")).await;
    gw.stop().await;
}

/// Fail closed on audit, with the real PostgreSQL store taken away mid-session: the statement
/// already on its way runs and its record waits; nothing more reaches the target; the session
/// ends saying why; once the store is back, everything that ran is in the chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_record_stops_the_session_before_anything_unrecorded_runs() {
    let gw = TestGateway::spawn_with(Backend::Postgres, |c| c.pg_audit_stall_sec = 2).await;
    let dev = gw.user("dev@example.com", &["dev"]).await;
    let (s, body) = gw.admin("POST", "/api/connections", Some(json!({"name": "pg", "type": "postgres", "url": "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"}))).await;
    assert_eq!(s, 201, "{body}");
    let port = gw.running.pg_addr.unwrap().port();
    let table = format!("stall_{}", uuid::Uuid::new_v4().simple());
    direct_psql(&format!("CREATE TABLE {table} (v int)")).await;
    let (store, store_conn) =
        tokio_postgres::connect(gw.config.database_url.expose(), tokio_postgres::NoTls)
            .await
            .expect("the store database");
    tokio::spawn(store_conn);

    let (c, _conn) = driver(port, "dev@example.com", &dev).await;
    let insert = |v: i32| format!("INSERT INTO {table} VALUES ({v})");
    c.simple_query(&insert(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    store
        .batch_execute("ALTER TABLE audit_log RENAME TO audit_log_away")
        .await
        .unwrap();
    c.simple_query(&insert(2)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let err = c.simple_query(&insert(3)).await.unwrap_err();
    assert!(db_text(&err).contains("audit store"), "{}", db_text(&err));
    let rows = direct_psql(&format!(
        "SELECT string_agg(v::text, ',' ORDER BY v) FROM {table}"
    ))
    .await;
    assert_eq!(
        rows.trim(),
        "1,2",
        "statement 3 must not have reached the target"
    );

    store
        .batch_execute("ALTER TABLE audit_log_away RENAME TO audit_log")
        .await
        .unwrap();
    let mut texts = Vec::new();
    for _ in 0..100 {
        let (_, audit) = gw.admin("GET", "/api/audit?limit=1000", None).await;
        texts = audit
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["event"]["kind"] == "statements")
            .flat_map(|e| e["event"]["statements"].as_array().unwrap().clone())
            .map(|st| st["statement"].as_str().unwrap().to_string())
            .collect();
        if texts.contains(&insert(2)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        texts.contains(&insert(1)) && texts.contains(&insert(2)),
        "{texts:?}"
    );
    assert!(!texts.contains(&insert(3)), "{texts:?}");
    let (_, report) = gw.admin("GET", "/api/audit/verify", None).await;
    assert_eq!(report["ok"], true, "{report}");
    direct_psql(&format!("DROP TABLE {table}")).await;
    gw.stop().await;
}

/// An auditor is read-only on the wire too: psql with its token is refused at login (and the
/// refusal is audited), even though it is in the connection's groups; an engineer made an
/// auditor loses its live session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditors_cannot_open_native_sessions() {
    let (gw, psql, _dev, _dba) = setup(Backend::Sqlite).await;
    let token = gw.auditor("audit@example.com", &["dev"]).await;
    let (code, out, err) = psql
        .run("audit@example.com", &token, "pg", "SELECT 1")
        .await;
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("read-only"), "{err}");
    // A live engineer session ends when the user becomes an auditor.
    let ops = gw.user("ops@example.com", &["dev"]).await;
    let (c, conn) = driver(psql.port, "ops@example.com", &ops).await;
    c.batch_execute("SELECT 1").await.unwrap();
    let (s, b) = gw
        .admin(
            "POST",
            "/api/users",
            Some(json!({"email": "ops@example.com", "groups": ["dev"], "auditor": true, "overwrite": true})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let e = closed(conn).await;
    assert!(e.contains("read-only"), "{e}");
    gw.stop().await;
}

/// A connection's `sslmode` means the same to the proxy as to the executor: `verify-full`
/// refuses a server certificate that does not name the host in the URL (the proxy once
/// downgraded every `verify-*` to "encrypt, verify nothing"), and the same URL works where the
/// certificate does name the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_verifies_upstream_certificates_as_the_url_asks() {
    let cert = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
    assert!(
        std::path::Path::new(cert).exists(),
        "{cert} is missing: the PostgreSQL TLS setup of this machine changed"
    );
    let (gw, psql, dev, _) = setup(Backend::Sqlite).await;
    for (name, host) in [("pg-ip", "127.0.0.1"), ("pg-name", "localhost")] {
        let url =
            format!("postgres://postgres@{host}:5432/test?sslmode=verify-full&sslrootcert={cert}");
        let (s, body) = gw
            .admin(
                "POST",
                "/api/connections",
                Some(json!({"name": name, "type": "postgres", "url": url})),
            )
            .await;
        assert_eq!(s, 201, "{body}");
    }
    let probe = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    // The executor and the proxy agree: the certificate names localhost, not 127.0.0.1.
    let (code, out, err) = psql.run("dev@example.com", &dev, "pg-ip", probe).await;
    assert_ne!(
        code, 0,
        "verify-full accepted a certificate for another name: {out}"
    );
    assert!(err.contains("not valid for name"), "{err}");
    assert!(err.contains("sslmode=verify-full"), "{err}");
    let (s, body) = gw
        .call(
            "POST",
            "/api/exec",
            Some(&dev),
            Some(json!({"connection": "pg-ip", "command": probe})),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["session"]["exit_code"], 2, "{body}");
    let (code, out, err) = psql.run("dev@example.com", &dev, "pg-name", probe).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(" t"), "the upstream hop is TLS: {out}");
    gw.stop().await;
}
