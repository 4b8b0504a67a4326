//! MySQL executor against the real MariaDB at 127.0.0.1:3306 (root, no password, database
//! `test`). A down server fails these tests (never skipped).

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use warden_exec::ExecOptions;

#[tokio::test]
async fn select_renders_table_and_rows_json() {
    let t = unique("wx_my_sel");
    let out = my(&format!(
        "CREATE TABLE {t} (id INT PRIMARY KEY, name VARCHAR(50), score DECIMAL(5,1), note TEXT) CHARACTER SET utf8mb4;
         INSERT INTO {t} VALUES (1,'alice',12.5,NULL),(2,'Ünïcødé 日本',NULL,'multi\\nline'),(3,'bob',7,'x');
         SELECT * FROM {t} ORDER BY id;
         DROP TABLE {t};"
    ))
    .await;
    assert_eq!(out.exit_code, 0, "{}", out.output);
    let expected = concat!(
        "Query OK, 0 rows affected\n",
        "Query OK, 3 rows affected\n",
        "Records: 3  Duplicates: 0  Warnings: 0\n",
        " id |     name     | score | note  \n",
        "----+--------------+-------+-------\n",
        "  1 | alice        |  12.5 | \n",
        "  2 | Ünïcødé 日本 |       | multi+\n",
        "    |              |       | line\n",
        "  3 | bob          |   7.0 | x\n",
        "(3 rows)\n",
        "\n",
        "Query OK, 0 rows affected\n",
    );
    assert_eq!(out.output, expected);
    assert_eq!(
        out.rows_json,
        Some(json!([
            {"id": "1", "name": "alice", "score": "12.5", "note": null},
            {"id": "2", "name": "Ünïcødé 日本", "score": null, "note": "multi\nline"},
            {"id": "3", "name": "bob", "score": "7.0", "note": "x"},
        ]))
    );
}

#[tokio::test]
async fn multi_statement_script_reports_affected_rows() {
    let t = unique("wx_my_dml");
    let out = my(&format!(
        "CREATE TABLE {t} (a INT PRIMARY KEY, b VARCHAR(10));
         INSERT INTO {t} VALUES (1,'x'),(2,'y');
         UPDATE {t} SET b = 'z';
         DELETE FROM {t} WHERE a = 1;
         SELECT COUNT(*) AS n FROM {t};
         DROP TABLE {t};"
    ))
    .await;
    assert_eq!(out.exit_code, 0, "{}", out.output);
    assert_eq!(
        out.output,
        concat!(
            "Query OK, 0 rows affected\n",
            "Query OK, 2 rows affected\n",
            "Records: 2  Duplicates: 0  Warnings: 0\n",
            "Query OK, 2 rows affected\n",
            "Rows matched: 2  Changed: 2  Warnings: 0\n",
            "Query OK, 1 row affected\n",
            " n \n---\n 1\n(1 row)\n\n",
            "Query OK, 0 rows affected\n",
        )
    );
    assert_eq!(out.rows_json, Some(json!([{"n": "1"}])));
}

#[tokio::test]
async fn empty_result_set_and_binary_values() {
    let out = my(
        "SELECT 1 AS a FROM DUAL WHERE 1 = 0; SELECT X'00FF' AS b, CAST('héllo' AS BINARY) AS c;",
    )
    .await;
    assert_eq!(out.exit_code, 0, "{}", out.output);
    assert!(
        out.output.starts_with(" a \n---\n(0 rows)\n\n"),
        "{}",
        out.output
    );
    assert!(
        out.output.contains(" 0x00FF | 0x68C3A96C6C6F\n"),
        "{}",
        out.output
    );
}

#[tokio::test]
async fn syntax_error_shows_code_and_sqlstate() {
    let out = my("SELEC 1").await;
    assert_eq!(out.exit_code, 1);
    assert!(
        out.output
            .starts_with("ERROR 1064 (42000): You have an error in your SQL syntax"),
        "{}",
        out.output
    );
}

#[tokio::test]
async fn error_midway_keeps_earlier_output_and_effects() {
    let t = unique("wx_my_mid");
    let out = my(&format!(
        "CREATE TABLE {t} (a INT); INSERT INTO {t} VALUES (1); SELECT * FROM nope_missing_wx; INSERT INTO {t} VALUES (2);"
    ))
    .await;
    assert_eq!(out.exit_code, 1);
    assert!(
        out.output.starts_with("Query OK, 0 rows affected\nQuery OK, 1 row affected\nERROR 1146 (42S02): Table 'test.nope_missing_wx' doesn't exist\n"),
        "{}",
        out.output
    );
    // Autocommit: the statements before the error stay; the one after never ran.
    let check = my(&format!("SELECT COUNT(*) AS n FROM {t}; DROP TABLE {t};")).await;
    assert_eq!(
        check.rows_json,
        Some(json!([{"n": "1"}])),
        "{}",
        check.output
    );
}

#[tokio::test]
async fn timeout_kills_the_query() {
    let o = ExecOptions {
        output_cap: 1 << 20,
        timeout: Duration::from_secs(1),
        ..ExecOptions::default()
    };
    let marker = unique("wx_my_to");
    let started = Instant::now();
    let out = my_with(
        MYSQL_URL,
        &format!("SELECT '{marker}' AS m; SELECT SLEEP(30);"),
        &o,
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(out.exit_code, 124, "{}", out.output);
    assert!(
        out.output.contains(&marker),
        "output before the timeout is kept: {}",
        out.output
    );
    assert!(
        out.output.ends_with("… query cancelled after 1s timeout\n"),
        "{}",
        out.output
    );

    let probe = "SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP(30)%'";
    let mut last = String::new();
    for _ in 0..20 {
        let p = my(probe).await;
        if p.rows_json == Some(json!([{"n": "0"}])) {
            return;
        }
        last = p.output;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("SLEEP(30) still running after the timeout:\n{last}");
}

#[tokio::test]
async fn output_cap_truncates() {
    let o = ExecOptions {
        output_cap: 500,
        timeout: Duration::from_secs(60),
        ..ExecOptions::default()
    };
    let out = my_with(
        MYSQL_URL,
        "SELECT seq, REPEAT('y', 40) AS r FROM seq_1_to_20000",
        &o,
    )
    .await;
    assert_eq!(out.exit_code, 0, "{}", out.output);
    assert!(out.truncated);
    assert!(
        out.output.ends_with("\n… output truncated at 500 bytes\n"),
        "{}",
        out.output
    );
}

#[tokio::test]
async fn connection_failures_exit_2_and_never_show_the_password() {
    let secret = "Sup3rS3cretPw";
    for url in [
        format!("mysql://root:{secret}@127.0.0.1:1/test"),
        format!("mysql://root:{secret}@127.0.0.1:3306/test?bogus_param={secret}"),
        format!("mysql://nosuchuser_wx:{secret}@127.0.0.1:3306/test"),
    ] {
        let out = warden_exec::execute(
            &sql_target(warden_core::ConnectionType::Mysql, &url),
            "SELECT 1",
            &opts(),
        )
        .await;
        assert_eq!(out.exit_code, 2, "{}", out.output);
        assert!(
            !out.output.contains(secret),
            "password leaked: {}",
            out.output
        );
        assert!(
            !out.output.contains("mysql://"),
            "URL leaked: {}",
            out.output
        );
    }
}
