//! SQLite executor on real database files in a temp dir.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use warden_core::ConnectionType;
use warden_exec::{ExecOptions, execute};

/// An existing, empty database file (a zero-byte file is a valid empty SQLite database).
fn db_file(dir: &tempfile::TempDir) -> String {
    let path = dir.path().join("app.db");
    std::fs::File::create(&path).expect("create db file");
    format!("sqlite://{}", path.display())
}

async fn lite(url: &str, input: &str, o: &ExecOptions) -> warden_core::ExecOutcome {
    execute(&sql_target(ConnectionType::Sqlite, url), input, o).await
}

#[tokio::test]
async fn file_database_script_tables_tags_and_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = db_file(&dir);
    assert!(url.starts_with("sqlite:///"), "absolute path form: {url}");
    let out = lite(
        &url,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, score REAL);
         INSERT INTO t VALUES (1, 'alice', 12.5), (2, 'Ünïcødé 日本', NULL), (3, 'bob', 7);
         UPDATE t SET score = score + 1 WHERE score IS NOT NULL;
         DELETE FROM t WHERE id = 3;
         SELECT * FROM t ORDER BY id;",
        &opts(),
    )
    .await;
    assert_eq!(out.exit_code, 0, "{}", out.output);
    assert_eq!(
        out.output,
        concat!(
            "CREATE TABLE\n",
            "INSERT 3\n",
            "UPDATE 2\n",
            "DELETE 1\n",
            " id |     name     | score \n",
            "----+--------------+-------\n",
            "  1 | alice        |  13.5\n",
            "  2 | Ünïcødé 日本 |      \n",
            "(2 rows)\n",
            "\n",
        )
    );
    assert_eq!(
        out.rows_json,
        Some(json!([
            {"id": "1", "name": "alice", "score": "13.5"},
            {"id": "2", "name": "Ünïcødé 日本", "score": null},
        ]))
    );
    // The data persisted in the file.
    let again = lite(&url, "SELECT COUNT(*) AS n FROM t WHERE 0;", &opts()).await;
    assert_eq!(again.output, " n \n---\n 0\n(1 row)\n\n");
}

#[tokio::test]
async fn missing_file_is_an_error_and_is_not_created() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nope.db");
    let out = lite(&format!("sqlite://{}", path.display()), "SELECT 1", &opts()).await;
    assert_eq!(out.exit_code, 2);
    assert!(out.output.contains("does not exist"), "{}", out.output);
    assert!(!path.exists(), "the database must not be created");
}

#[tokio::test]
async fn errors_stop_the_script_and_keep_earlier_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = db_file(&dir);
    let out = lite(&url, "SELECT 1 AS a; SELEC 2; SELECT 3 AS b;", &opts()).await;
    assert_eq!(out.exit_code, 1);
    assert_eq!(
        out.output,
        " a \n---\n 1\n(1 row)\n\nERROR:  near \"SELEC\": syntax error (SQLITE_ERROR)\nLINE 1: SELECT 1 AS a; SELEC 2; SELECT 3 AS b;\n                       ^\n"
    );

    let out = lite(
        &url,
        "CREATE TABLE u (a INTEGER UNIQUE); INSERT INTO u VALUES (1); INSERT INTO u VALUES (1);",
        &opts(),
    )
    .await;
    assert_eq!(out.exit_code, 1);
    assert!(
        out.output.ends_with(
            "ERROR:  UNIQUE constraint failed: u.a (SQLITE_CONSTRAINT, extended code 2067)\n"
        ),
        "{}",
        out.output
    );
    // Autocommit: the first insert stayed.
    let out = lite(&url, "SELECT COUNT(*) AS n FROM u", &opts()).await;
    assert_eq!(out.rows_json, Some(json!([{"n": "1"}])));
}

#[tokio::test]
async fn read_only_mode_refuses_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = db_file(&dir);
    let out = lite(&format!("{url}?mode=ro"), "CREATE TABLE x (a)", &opts()).await;
    assert_eq!(out.exit_code, 1, "{}", out.output);
    assert!(out.output.contains("SQLITE_READONLY"), "{}", out.output);
}

#[tokio::test]
async fn timeout_interrupts_a_runaway_query() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = db_file(&dir);
    let o = ExecOptions {
        output_cap: 1 << 20,
        timeout: Duration::from_secs(1),
        ..ExecOptions::default()
    };
    let started = Instant::now();
    let out = lite(
        &url,
        "SELECT 'kept' AS early; WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c;",
        &o,
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(out.exit_code, 124, "{}", out.output);
    assert!(out.output.contains("kept"), "{}", out.output);
    assert!(
        out.output.ends_with("… query cancelled after 1s timeout\n"),
        "{}",
        out.output
    );
}

#[tokio::test]
async fn output_cap_truncates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = db_file(&dir);
    let o = ExecOptions {
        output_cap: 300,
        timeout: Duration::from_secs(30),
        ..ExecOptions::default()
    };
    let out = lite(
        &url,
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 50000) SELECT x, 'é' AS e FROM c;",
        &o,
    )
    .await;
    assert_eq!(out.exit_code, 0, "{}", out.output);
    assert!(out.truncated);
    assert!(
        out.output.ends_with("\n… output truncated at 300 bytes\n"),
        "{}",
        out.output
    );
}

// ---- The executor reaches its own file and nothing else (issue 15) ----

/// A second database next to the connection's, holding a `users` table like the gateway's store.
async fn other_db(dir: &tempfile::TempDir) -> (std::path::PathBuf, String) {
    let path = dir.path().join("other.db");
    std::fs::File::create(&path).expect("create other db");
    let url = format!("sqlite://{}", path.display());
    let out = lite(
        &url,
        "CREATE TABLE users (email TEXT, admin INTEGER); INSERT INTO users VALUES ('dev@x', 0);",
        &opts(),
    )
    .await;
    assert_eq!(out.exit_code, 0, "{}", out.output);
    (path, url)
}

async fn admins(url: &str) -> serde_json::Value {
    let out = lite(url, "SELECT email, admin FROM users", &opts()).await;
    assert_eq!(out.exit_code, 0, "{}", out.output);
    out.rows_json.expect("rows")
}

#[tokio::test]
async fn attach_of_another_file_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = db_file(&dir);
    let (other, other_url) = other_db(&dir).await;
    for script in [
        format!(
            "ATTACH '{}' AS x; UPDATE x.users SET admin = 1;",
            other.display()
        ),
        // Not a literal: the authorizer sees no file name at all.
        format!(
            "ATTACH '{}' || '' AS x; UPDATE x.users SET admin = 1;",
            other.display()
        ),
        format!(
            "ATTACH 'file:{}?mode=rw' AS x; UPDATE x.users SET admin = 1;",
            other.display()
        ),
    ] {
        let out = lite(&url, &script, &opts()).await;
        assert_eq!(out.exit_code, 1, "{script}: {}", out.output);
        assert!(
            out.output.contains("ATTACH is not allowed"),
            "a clear reason: {}",
            out.output
        );
    }
    // The same from an in-memory database.
    let out = lite(
        "sqlite::memory:",
        &format!("ATTACH '{}' AS x; SELECT * FROM x.users;", other.display()),
        &opts(),
    )
    .await;
    assert_eq!(out.exit_code, 1, "{}", out.output);
    assert_eq!(
        admins(&other_url).await,
        json!([{"email": "dev@x", "admin": "0"}]),
        "the other file is untouched"
    );
}

#[tokio::test]
async fn vacuum_into_another_file_is_refused_plain_vacuum_works() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = db_file(&dir);
    let copy = dir.path().join("copy.db");
    let out = lite(
        &url,
        &format!("CREATE TABLE t (a); VACUUM INTO '{}';", copy.display()),
        &opts(),
    )
    .await;
    assert_eq!(out.exit_code, 1, "{}", out.output);
    assert!(
        out.output.contains("VACUUM INTO is not allowed"),
        "{}",
        out.output
    );
    assert!(!copy.exists(), "no copy was written");
    let out = lite(&url, "VACUUM", &opts()).await;
    assert_eq!(out.exit_code, 0, "plain VACUUM still works: {}", out.output);
}

#[tokio::test]
async fn load_extension_and_file_pragmas_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = db_file(&dir);
    let out = lite(&url, "SELECT load_extension('/usr/lib/x.so')", &opts()).await;
    assert_eq!(out.exit_code, 1, "{}", out.output);
    assert!(
        out.output.contains("load_extension is not allowed"),
        "{}",
        out.output
    );
    let out = lite(&url, "PRAGMA temp_store_directory = '/tmp'", &opts()).await;
    assert_eq!(out.exit_code, 1, "{}", out.output);
    // Defensive mode: the schema cannot be rewritten by hand.
    let out = lite(
        &url,
        "CREATE TABLE t (a); PRAGMA writable_schema = ON; UPDATE sqlite_schema SET sql = 'x';",
        &opts(),
    )
    .await;
    assert_eq!(out.exit_code, 1, "{}", out.output);
    let out = lite(&url, "SELECT * FROM t", &opts()).await;
    assert_eq!(out.exit_code, 0, "the schema is intact: {}", out.output);
}
