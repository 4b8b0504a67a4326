//! Held commands against the machine's real PostgreSQL and MariaDB and a SQLite file, through
//! the gateway: approved, executed with the connection's stored credentials, results as
//! psql-like tables and JSON rows, server errors with their SQLSTATE.

use serde_json::{Value, json};
use warden_gateway::testing::{Backend, TestGateway};

async fn held_then_approved(
    gw: &TestGateway,
    dev: &str,
    dba: &str,
    conn: &str,
    sql: &str,
) -> Value {
    let (s, r) = gw
        .call(
            "POST",
            "/api/exec",
            Some(dev),
            Some(json!({"connection": conn, "command": sql})),
        )
        .await;
    assert_eq!(s, 202, "{r}");
    let id = r["review"]["id"].as_str().unwrap().to_string();
    let (s, body) = gw.decide(dba, &id, "approve", None).await;
    assert_eq!(s, 200, "{body}");
    let (_, done) = gw
        .call(
            "GET",
            &format!("/api/reviews/{id}/wait?timeout=20"),
            Some(dev),
            None,
        )
        .await;
    assert_eq!(done["status"], "EXECUTED", "{done}");
    done["result"].clone()
}

fn table_name(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_target() {
    let gw = TestGateway::spawn(Backend::Sqlite).await;
    let dev = gw.user("dev@example.com", &["dev"]).await;
    let dba = gw.user("dba@example.com", &["dba"]).await;
    let (s, b) = gw.admin("POST", "/api/connections", Some(json!({"name": "pg", "type": "postgres", "url": "postgres://postgres@127.0.0.1:5432/test", "reviewers": ["dba"]}))).await;
    assert_eq!(s, 201, "{b}");
    let t = table_name("wg_pg");
    let script = format!(
        "CREATE TABLE {t} (id int, name text); INSERT INTO {t} VALUES (1, 'ada'), (2, NULL); SELECT * FROM {t} ORDER BY id;"
    );
    let res = held_then_approved(&gw, &dev, &dba, "pg", &script).await;
    assert_eq!(res["exit_code"], 0, "{res}");
    let out = res["output"].as_str().unwrap();
    assert!(
        out.contains("CREATE TABLE")
            && out.contains("INSERT 0 2")
            && out.contains("(2 rows)")
            && out.contains(" ada"),
        "{out}"
    );
    assert_eq!(
        res["rows_json"],
        json!([{"id": "1", "name": "ada"}, {"id": "2", "name": null}])
    );
    let res = held_then_approved(&gw, &dev, &dba, "pg", "SELECT * FROM no_such_table_here").await;
    assert_eq!(res["exit_code"], 1);
    assert!(res["output"].as_str().unwrap().contains("42P01"), "{res}");
    held_then_approved(&gw, &dev, &dba, "pg", &format!("DROP TABLE {t}")).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_target() {
    let gw = TestGateway::spawn(Backend::Sqlite).await;
    let dev = gw.user("dev@example.com", &["dev"]).await;
    let dba = gw.user("dba@example.com", &["dba"]).await;
    let (s, b) = gw.admin("POST", "/api/connections", Some(json!({"name": "my", "type": "mysql", "url": "mysql://root@127.0.0.1:3306/test", "reviewers": ["dba"]}))).await;
    assert_eq!(s, 201, "{b}");
    let t = table_name("wg_my");
    let script = format!(
        "CREATE TABLE {t} (id int, name varchar(20)); INSERT INTO {t} VALUES (1, 'ada'), (2, 'bob'); SELECT * FROM {t} ORDER BY id;"
    );
    let res = held_then_approved(&gw, &dev, &dba, "my", &script).await;
    assert_eq!(res["exit_code"], 0, "{res}");
    let out = res["output"].as_str().unwrap();
    assert!(
        out.contains("2 rows affected") && out.contains("bob") && out.contains("(2 rows)"),
        "{out}"
    );
    assert_eq!(res["rows_json"].as_array().map(Vec::len), Some(2));
    let res = held_then_approved(&gw, &dev, &dba, "my", "SELECT * FROM no_such_table_here").await;
    assert_eq!(res["exit_code"], 1);
    assert!(res["output"].as_str().unwrap().contains("42S02"), "{res}");
    held_then_approved(&gw, &dev, &dba, "my", &format!("DROP TABLE {t}")).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_target_on_the_postgres_store() {
    let gw = TestGateway::spawn(Backend::Postgres).await;
    let dev = gw.user("dev@example.com", &["dev"]).await;
    let dba = gw.user("dba@example.com", &["dba"]).await;
    // Target files live outside the data dir: the gateway refuses any file inside it.
    let targets = tempfile::tempdir().unwrap();
    let db = targets.path().join("target.db");
    std::fs::File::create(&db).unwrap();
    let url = format!("sqlite://{}", db.display());
    let (s, b) = gw
        .admin(
            "POST",
            "/api/connections",
            Some(json!({"name": "lite", "type": "sqlite", "url": url, "reviewers": ["dba"]})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let res = held_then_approved(
        &gw,
        &dev,
        &dba,
        "lite",
        "CREATE TABLE t (x int); INSERT INTO t VALUES (40), (2); SELECT sum(x) AS total FROM t;",
    )
    .await;
    assert_eq!(res["exit_code"], 0, "{res}");
    assert_eq!(res["rows_json"], json!([{"total": "42"}]));
    gw.stop().await;
}

// ---- The gateway's own store is out of reach of a sqlite connection (issue 15) ----

fn sqlite_conn(name: &str, path: &std::path::Path) -> Value {
    json!({"name": name, "type": "sqlite", "url": format!("sqlite://{}", path.display())})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_to_the_gateway_store_is_refused() {
    let gw = TestGateway::spawn(Backend::Sqlite).await;
    let store = gw.dir.path().join("warden.db");
    assert!(store.is_file(), "the store is in the data dir");
    let outside = tempfile::tempdir().unwrap();
    let link = outside.path().join("link.db");
    std::os::unix::fs::symlink(&store, &link).unwrap();
    let hard = gw.dir.path().join("hard.db");
    let hard_outside = outside.path().join("hard.db");
    let hard_made = std::fs::hard_link(&store, &hard_outside).is_ok();
    let mut candidates = vec![
        store.clone(),
        gw.dir.path().join("secret.key"),
        gw.dir.path().join("new.db"),
        gw.dir.path().join("sub/../warden.db"),
        link.clone(),
        hard,
    ];
    if hard_made {
        candidates.push(hard_outside);
    }
    for path in candidates {
        let (s, b) = gw
            .admin("POST", "/api/connections", Some(sqlite_conn("own", &path)))
            .await;
        assert_eq!(s, 400, "{}: {b}", path.display());
        assert_eq!(b["code"], "invalid_url", "{b}");
        let msg = b["error"].as_str().unwrap();
        assert!(
            msg.contains("can never be a connection target"),
            "{}: {msg}",
            path.display()
        );
    }
    let (_, list) = gw.admin("GET", "/api/connections", None).await;
    assert_eq!(list, json!([]), "nothing was created");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_cannot_reach_the_store_and_a_swapped_symlink_is_refused_at_exec() {
    let gw = TestGateway::spawn(Backend::Sqlite).await;
    let dev = gw.user("dev@example.com", &["dev"]).await;
    let store = gw.dir.path().join("warden.db");
    let outside = tempfile::tempdir().unwrap();
    let real = outside.path().join("real.db");
    std::fs::File::create(&real).unwrap();
    let link = outside.path().join("app.db");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    // No rule: the engineer runs scripts at once, the attack of issue 15.
    let (s, b) = gw
        .admin("POST", "/api/connections", Some(sqlite_conn("lite", &link)))
        .await;
    assert_eq!(s, 201, "{b}");
    let exec = |cmd: String| {
        let gw = &gw;
        let dev = dev.clone();
        async move {
            let (s, r) = gw
                .call(
                    "POST",
                    "/api/exec",
                    Some(&dev),
                    Some(json!({"connection": "lite", "command": cmd})),
                )
                .await;
            assert_eq!(s, 200, "{r}");
            r["session"].clone()
        }
    };
    let session = exec(format!(
        "ATTACH '{}' AS s; UPDATE s.users SET admin = 1 WHERE email = 'dev@example.com';",
        store.display()
    ))
    .await;
    assert_eq!(session["exit_code"], 1, "{session}");
    assert!(
        session["output"]
            .as_str()
            .unwrap()
            .contains("ATTACH is not allowed"),
        "{session}"
    );
    // The link now points at the store: refused before the executor opens anything.
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&store, &link).unwrap();
    let session = exec("UPDATE users SET admin = 1 WHERE email = 'dev@example.com';".into()).await;
    assert_eq!(session["exit_code"], 2, "{session}");
    assert!(
        session["output"]
            .as_str()
            .unwrap()
            .contains("warden: refused:"),
        "{session}"
    );
    let (_, me) = gw.call("GET", "/api/me", Some(&dev), None).await;
    assert_eq!(me["admin"], false, "dev is still no admin: {me}");
    gw.stop().await;
}
