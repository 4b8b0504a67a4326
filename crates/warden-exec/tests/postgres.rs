//! PostgreSQL executor against the real server at 127.0.0.1:5432 (database `test`, trust auth).
//! A down server fails these tests (never skipped).

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use warden_exec::ExecOptions;

#[tokio::test]
async fn select_renders_like_psql_and_fills_rows_json() {
    let t = unique("wx_pg_sel");
    let script = format!(
        "create table {t}(id int, name text, score numeric, note text);
         insert into {t} values (1,'alice',12.5,NULL),(2,'Ünïcødé 日本',NULL,E'multi\\nline'),(3,'bob',7,'x');
         select * from {t} order by id;
         drop table {t};"
    );
    let out = pg(&script).await;
    assert_eq!(out.exit_code, 0, "{}", out.output);
    // Byte for byte what psql 15 prints for the same statements.
    let expected = concat!(
        "CREATE TABLE\n",
        "INSERT 0 3\n",
        " id |     name     | score | note  \n",
        "----+--------------+-------+-------\n",
        "  1 | alice        |  12.5 | \n",
        "  2 | Ünïcødé 日本 |       | multi+\n",
        "    |              |       | line\n",
        "  3 | bob          |     7 | x\n",
        "(3 rows)\n",
        "\n",
        "DROP TABLE\n",
    );
    assert_eq!(out.output, expected);
    assert!(!out.truncated);
    assert_eq!(
        out.rows_json,
        Some(json!([
            {"id": "1", "name": "alice", "score": "12.5", "note": null},
            {"id": "2", "name": "Ünïcødé 日本", "score": null, "note": "multi\nline"},
            {"id": "3", "name": "bob", "score": "7", "note": "x"},
        ]))
    );
}

#[tokio::test]
async fn multi_statement_script_shows_command_tags() {
    let t = unique("wx_pg_tags");
    let script = format!(
        "CREATE TABLE {t}(a int primary key, b text);
         INSERT INTO {t} VALUES (1, 'x');
         INSERT INTO {t} VALUES (2, 'y'), (3, 'z');
         UPDATE {t} SET b = 'w' WHERE a >= 2;
         DELETE FROM {t} WHERE a = 1;
         ALTER TABLE {t} ADD COLUMN c int;
         BEGIN; TRUNCATE {t}; COMMIT;
         DROP TABLE {t};"
    );
    let out = pg(&script).await;
    assert_eq!(out.exit_code, 0, "{}", out.output);
    assert_eq!(
        out.output,
        "CREATE TABLE\nINSERT 0 1\nINSERT 0 2\nUPDATE 2\nDELETE 1\nALTER TABLE\nBEGIN\nTRUNCATE TABLE\nCOMMIT\nDROP TABLE\n"
    );
    assert_eq!(out.rows_json, None, "no result set, no rows_json");
}

#[tokio::test]
async fn returning_shows_table_then_tag_and_last_result_set_is_json() {
    let t = unique("wx_pg_ret");
    let out = pg(&format!(
        "create temp table {t}(a serial, b text);
         insert into {t}(b) values ('p') returning a, b;
         select 'first' as which; select 'last' as which;"
    ))
    .await;
    assert_eq!(out.exit_code, 0, "{}", out.output);
    assert!(
        out.output
            .contains(" a | b \n---+---\n 1 | p\n(1 row)\n\nINSERT 0 1\n"),
        "{}",
        out.output
    );
    assert_eq!(out.rows_json, Some(json!([{"which": "last"}])));
}

#[tokio::test]
async fn syntax_error_shows_sqlstate_and_position() {
    let out = pg("SELEC 1;").await;
    assert_eq!(out.exit_code, 1);
    assert_eq!(
        out.output,
        "ERROR:  syntax error at or near \"SELEC\" (SQLSTATE 42601)\nLINE 1: SELEC 1;\n        ^\n"
    );
    let out = pg("select 1 as a,\n  nope_col from pg_class;").await;
    assert_eq!(out.exit_code, 1);
    assert!(
        out.output.contains("ERROR:  column \"nope_col\" does not exist (SQLSTATE 42703)\nLINE 2:   nope_col from pg_class;\n          ^\n"),
        "{}",
        out.output
    );
}

#[tokio::test]
async fn error_midway_keeps_earlier_output_and_stops() {
    let out = pg("select 1 as a; select * from nope_xyz_missing; select 2 as b;").await;
    assert_eq!(out.exit_code, 1);
    assert!(
        out.output.starts_with(" a \n---\n 1\n(1 row)\n\n"),
        "{}",
        out.output
    );
    assert!(
        out.output
            .contains("ERROR:  relation \"nope_xyz_missing\" does not exist (SQLSTATE 42P01)"),
        "{}",
        out.output
    );
    assert!(
        !out.output.contains(" b "),
        "statements after the error do not run: {}",
        out.output
    );
    assert_eq!(out.rows_json, Some(json!([{"a": "1"}])));
}

#[tokio::test]
async fn error_midway_rolls_back_the_implicit_transaction_and_says_so() {
    let t = unique("wx_pg_rb");
    let out = pg(&format!(
        "create table {t}(a int); insert into {t} values (1); select 1/0;"
    ))
    .await;
    assert_eq!(out.exit_code, 1);
    assert!(
        out.output
            .starts_with("CREATE TABLE\nINSERT 0 1\nERROR:  division by zero (SQLSTATE 22012)\n"),
        "{}",
        out.output
    );
    assert!(out.output.contains("rolled back"), "{}", out.output);
    let check = pg(&format!("select to_regclass('{t}') is null as gone")).await;
    assert!(
        check.output.contains(" t\n"),
        "the table must not exist: {}",
        check.output
    );

    // After an explicit COMMIT the earlier work is kept, and no rollback note is printed.
    let out = pg(&format!("create table {t}(a int); commit; select 1/0;")).await;
    assert_eq!(out.exit_code, 1);
    assert!(!out.output.contains("rolled back"), "{}", out.output);
    let out = pg(&format!("drop table {t}")).await;
    assert_eq!(out.output, "DROP TABLE\n");
}

#[tokio::test]
async fn nulls_unicode_and_control_characters() {
    let out = pg("select null::text as n, 'naïve ☃ 🎉' as u, E'bell\\x07' as c, 42 as i;").await;
    assert_eq!(out.exit_code, 0, "{}", out.output);
    assert_eq!(
        out.output,
        " n |     u      |    c     | i  \n---+------------+----------+----\n   | naïve ☃ 🎉 | bell\\x07 | 42\n(1 row)\n\n"
    );
    assert_eq!(
        out.rows_json,
        Some(json!([{"n": null, "u": "naïve ☃ 🎉", "c": "bell\u{7}", "i": "42"}]))
    );
}

#[tokio::test]
async fn notices_empty_queries_and_copy_out() {
    let out = pg("do $$ begin raise notice 'hello %', 42; end $$; ;").await;
    assert_eq!(out.exit_code, 0, "{}", out.output);
    assert_eq!(out.output, "NOTICE:  hello 42\nDO\n");

    let out = pg("").await;
    assert_eq!((out.exit_code, out.output.as_str()), (0, ""));

    let out =
        pg("copy (select g, 'v' || g from generate_series(1,3) g) to stdout with (format csv)")
            .await;
    assert_eq!(out.exit_code, 0, "{}", out.output);
    assert_eq!(out.output, "1,v1\n2,v2\n3,v3\nCOPY 3\n");

    let out = pg("copy pg_class from stdin").await;
    assert_eq!(out.exit_code, 1);
    assert!(out.output.contains("not supported"), "{}", out.output);
}

#[tokio::test]
async fn output_cap_truncates_big_results() {
    let o = ExecOptions {
        output_cap: 1000,
        timeout: Duration::from_secs(60),
        ..ExecOptions::default()
    };
    let out = pg_with(
        PG_URL,
        "select g, repeat('x', 50) from generate_series(1, 100000) g",
        &o,
    )
    .await;
    assert_eq!(out.exit_code, 0);
    assert!(out.truncated);
    assert!(
        out.output.ends_with("\n… output truncated at 1000 bytes\n"),
        "{}",
        out.output
    );
    let kept = out
        .output
        .trim_end_matches("… output truncated at 1000 bytes\n");
    assert!(kept.len() <= 1001, "kept {} bytes", kept.len());
    assert!(out.output.starts_with(" g "), "{}", out.output);
}

#[tokio::test]
async fn timeout_cancels_the_query_server_side() {
    let app = unique("wx_pg_to");
    let url = format!("{PG_URL}?application_name={app}");
    let o = ExecOptions {
        output_cap: 1 << 20,
        timeout: Duration::from_secs(1),
        ..ExecOptions::default()
    };
    let started = Instant::now();
    let out = pg_with(&url, "select 1 as before; select pg_sleep(30);", &o).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(out.exit_code, 124, "{}", out.output);
    assert!(
        out.output.ends_with("… query cancelled after 1s timeout\n"),
        "{}",
        out.output
    );

    // The backend must not still be sleeping.
    no_active_query(&app, "query still running after the timeout").await;
}

/// Waits (5 s at most) until no backend of `application_name = app` runs a query.
async fn no_active_query(app: &str, failure: &str) {
    let probe = format!(
        "select count(*) as n from pg_stat_activity where application_name = '{app}' and state = 'active'"
    );
    let mut last = String::new();
    for _ in 0..20 {
        last = pg(&probe).await.output;
        if last.contains("\n 0\n") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{failure}:\n{last}");
}

#[tokio::test]
async fn tls_modes() {
    let probe = "select ssl from pg_stat_ssl where pid = pg_backend_pid()";
    // This server has ssl=on: require (and the default, prefer) encrypt; disable does not.
    let out = pg_with(&format!("{PG_URL}?sslmode=require"), probe, &opts()).await;
    assert_eq!(out.exit_code, 0, "{}", out.output);
    assert_eq!(out.rows_json, Some(json!([{"ssl": "t"}])));
    let out = pg(probe).await;
    assert_eq!(
        out.rows_json,
        Some(json!([{"ssl": "t"}])),
        "prefer uses TLS when offered"
    );
    let out = pg_with(&format!("{PG_URL}?sslmode=disable"), probe, &opts()).await;
    assert_eq!(out.rows_json, Some(json!([{"ssl": "f"}])));
}

#[tokio::test]
async fn tls_certificate_verification() {
    // The server presents Debian's self-signed "snakeoil" certificate (CN/SAN = localhost).
    let cert = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
    assert!(
        std::path::Path::new(cert).exists(),
        "{cert} is missing: the PostgreSQL TLS setup of this machine changed"
    );
    let probe = "select ssl from pg_stat_ssl where pid = pg_backend_pid()";
    let url =
        format!("postgres://postgres@localhost:5432/test?sslmode=verify-full&sslrootcert={cert}");
    let out = pg_with(&url, probe, &opts()).await;
    assert_eq!(out.rows_json, Some(json!([{"ssl": "t"}])), "{}", out.output);
    // verify-ca checks the chain only, so the IP address is fine…
    let url = format!("{PG_URL}?sslmode=verify-ca&sslrootcert={cert}");
    let out = pg_with(&url, probe, &opts()).await;
    assert_eq!(out.rows_json, Some(json!([{"ssl": "t"}])), "{}", out.output);
    // …but verify-full refuses a certificate that does not name the host,
    let url = format!("{PG_URL}?sslmode=verify-full&sslrootcert={cert}");
    let out = warden_exec::execute(
        &sql_target(warden_core::ConnectionType::Postgres, &url),
        probe,
        &opts(),
    )
    .await;
    assert_eq!(out.exit_code, 2, "{}", out.output);
    assert!(out.output.contains("not valid for name"), "{}", out.output);
    // and an unrelated root refuses the chain.
    let url = format!("{PG_URL}?sslmode=verify-ca&sslrootcert=/etc/ssl/certs/ca-certificates.crt");
    let out = warden_exec::execute(
        &sql_target(warden_core::ConnectionType::Postgres, &url),
        probe,
        &opts(),
    )
    .await;
    assert_eq!(out.exit_code, 2, "{}", out.output);
    assert!(
        out.output.contains("TLS handshake failed"),
        "{}",
        out.output
    );
}

#[tokio::test]
async fn nul_in_script_is_refused() {
    let out = pg("select 1;\0").await;
    assert_eq!(out.exit_code, 1);
    assert!(out.output.contains("NUL"), "{}", out.output);
}

#[tokio::test]
async fn connection_failures_exit_2_and_never_show_the_password() {
    let secret = "Sup3rS3cretPw";
    let cases = [
        // Closed port.
        format!("postgres://postgres:{secret}@127.0.0.1:1/test"),
        // Server reachable, database missing (FATAL from the server).
        format!("postgres://postgres:{secret}@127.0.0.1:5432/no_such_db_wx"),
        // Bad URL parameter.
        format!("postgres://postgres:{secret}@127.0.0.1:5432/test?bogus={secret}"),
    ];
    for url in cases {
        let out = warden_exec::execute(
            &sql_target(warden_core::ConnectionType::Postgres, &url),
            "select 1",
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
            !out.output.contains("postgres://"),
            "URL leaked: {}",
            out.output
        );
        assert!(!out.output.is_empty());
    }
    let out = warden_exec::execute(
        &sql_target(
            warden_core::ConnectionType::Postgres,
            &format!("postgres://postgres:{secret}@127.0.0.1:5432/no_such_db_wx"),
        ),
        "select 1",
        &opts(),
    )
    .await;
    assert!(out.output.contains("(SQLSTATE 3D000)"), "{}", out.output);
    assert!(
        out.output
            .contains("could not connect to PostgreSQL at 127.0.0.1:5432"),
        "{}",
        out.output
    );
}

/// The executor logs in with the proxy's own client (`warden_pgwire::upstream`): over the
/// server's Unix socket too, where a timeout's cancel request goes back through the same socket.
#[tokio::test]
async fn unix_socket_logins_run_and_cancel() {
    let app = unique("wx_pg_unix");
    let url =
        format!("postgres:///test?host=/var/run/postgresql&user=postgres&application_name={app}");
    let out = pg_with(
        &url,
        "select current_user as who, inet_server_addr() is null as local;",
        &opts(),
    )
    .await;
    assert_eq!(out.exit_code, 0, "{}", out.output);
    assert!(
        out.output.contains("postgres") && out.output.contains(" t"),
        "{}",
        out.output
    );
    let o = ExecOptions {
        output_cap: 1 << 20,
        timeout: Duration::from_secs(1),
        ..ExecOptions::default()
    };
    let started = Instant::now();
    let out = pg_with(&url, "select pg_sleep(30);", &o).await;
    assert_eq!(out.exit_code, 124, "{}", out.output);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    no_active_query(
        &app,
        "the cancel over the Unix socket did not reach the server",
    )
    .await;
}
