//! Statement review that cannot be talked around, attacked through the real proxy and the real
//! PostgreSQL: the server's read-only transaction behind the classifier, pinned settings,
//! startup parameters, rejections inside transactions, and the proxy's view of prepared
//! statements after an error. Every test checks the server's state directly.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;

fn code(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_string()).unwrap_or_default()
}

async fn fresh_table(prefix: &str) -> String {
    let t = table(prefix);
    direct()
        .await
        .batch_execute(&format!("CREATE TABLE {t} (id int)"))
        .await
        .unwrap();
    t
}

async fn ids(t: &str) -> Vec<i32> {
    direct()
        .await
        .query(&format!("SELECT id FROM {t} ORDER BY id"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The classifier is switched off (the backend allows every statement as a read): writes,
/// DDL and writes inside transactions still fail on the server with 25006. Approved
/// statements — and only they — write, in and out of transaction blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_classifier_off_the_server_still_refuses_writes() {
    let t = fresh_table("wall").await;
    let backend = TestBackend::reviewing(vec![("approved_write", Script::AllowWrite)]);
    let proxy = Proxy::start(backend).await;
    let c = proxy.connect().await;

    let show: String = c
        .query_one("SHOW default_transaction_read_only", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(show, "on");
    for sql in [
        format!("INSERT INTO {t} VALUES (1)"),
        format!("UPDATE {t} SET id = 2"),
        format!("DELETE FROM {t}"),
        format!("CREATE TABLE {t}_x (a int)"),
        format!("DROP TABLE {t}"),
        format!("WITH d AS (INSERT INTO {t} VALUES (1) RETURNING id) SELECT * FROM d"),
    ] {
        let e = c.batch_execute(&sql).await.expect_err(&sql);
        assert_eq!(code(&e), "25006", "{sql}: {e}");
    }
    // Extended protocol, and inside an explicit transaction.
    let e = c
        .execute(&format!("INSERT INTO {t} VALUES ($1)"), &[&1i32])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "25006");
    c.batch_execute("BEGIN").await.unwrap();
    let e = c
        .batch_execute(&format!("INSERT INTO {t} VALUES (1)"))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "25006");
    c.batch_execute("ROLLBACK").await.unwrap();

    // Approved: simple and extended, outside a block; then read-only again.
    c.batch_execute(&format!("INSERT INTO {t} VALUES (3) /* approved_write */"))
        .await
        .unwrap();
    let e = c
        .batch_execute(&format!("INSERT INTO {t} VALUES (4)"))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "25006", "the read-write toggle was reset");
    assert_eq!(
        c.execute(
            &format!("INSERT INTO {t} VALUES ($1) /* approved_write */"),
            &[&5i32]
        )
        .await
        .unwrap(),
        1
    );
    // Approved as the first statement of a block: runs, and the block commits it.
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute(&format!("INSERT INTO {t} VALUES (6) /* approved_write */"))
        .await
        .unwrap();
    c.batch_execute("COMMIT").await.unwrap();
    // Approved after the block has read: PostgreSQL cannot make it read-write any more.
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("SELECT 1").await.unwrap();
    let e = c
        .batch_execute(&format!("INSERT INTO {t} VALUES (7) /* approved_write */"))
        .await
        .unwrap_err();
    assert!(matches!(code(&e).as_str(), "25P02" | "25006"), "{e}");
    c.batch_execute("ROLLBACK").await.unwrap();
    let show: String = c
        .query_one("SHOW default_transaction_read_only", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(show, "on");

    assert_eq!(ids(&t).await, vec![3, 5, 6]);
    proxy.stop().await;
}

/// A setting the classifier's reading (or the second wall) depends on changes anyway (the
/// classifier being off lets the SET through): the proxy sees the server's ParameterStatus
/// and ends the session before anything else runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_setting_that_changes_ends_the_session() {
    let t = fresh_table("pin").await;
    for set in [
        "SET standard_conforming_strings = off",
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
        "SET default_transaction_read_only = off",
        "SET client_encoding = 'LATIN1'",
    ] {
        let proxy = Proxy::start(TestBackend::reviewing(Vec::new())).await;
        let mut s = raw_session(&proxy).await;
        // The SET and a write pipelined behind it in one read.
        let mut bytes = ext::query(set);
        bytes.extend(ext::query(&format!("INSERT INTO {t} VALUES (1)")));
        s.write_all(&bytes).await.unwrap();
        let got = read_all(&mut s).await;
        assert!(
            contains(&got, "FATAL") && contains(&got, "Warden keeps it"),
            "{set}: {}",
            String::from_utf8_lossy(&got)
        );
        proxy.stop().await;
    }
    assert!(ids(&t).await.is_empty());
}

/// Startup parameters are an allowlist under review: `options` (which can set any GUC) and
/// encodings that are not ASCII-safe are refused; the server always speaks UTF8.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_parameters_cannot_change_how_sql_is_read() {
    let proxy = Proxy::start(TestBackend::reviewing(Vec::new())).await;
    for extra in [
        ("options", "-c standard_conforming_strings=off"),
        ("options", "-c default_transaction_read_only=off"),
        ("standard_conforming_strings", "off"),
        ("default_transaction_read_only", "off"),
        ("search_path", "evil"),
        ("client_encoding", "SJIS"),
        ("client_encoding", "BIG5"),
    ] {
        let (_s, got) = raw_login(&proxy, &[extra]).await;
        let err = got
            .iter()
            .find(|(tag, _)| *tag == b'E')
            .map(|(_, b)| error_text(b))
            .unwrap_or_default();
        assert!(
            err.contains("FATAL") && err.contains(extra.0),
            "{extra:?}: {got:?}"
        );
    }
    // psql's usual parameters pass; SQL_ASCII from a C-locale client becomes UTF8.
    let (_s, got) = raw_login(
        &proxy,
        &[
            ("application_name", "psql"),
            ("client_encoding", "SQL_ASCII"),
            ("DateStyle", "ISO, MDY"),
        ],
    )
    .await;
    assert_eq!(got.last().map(|m| m.0), Some(b'Z'), "{got:?}");
    let enc = got
        .iter()
        .filter(|(t, _)| *t == b'S')
        .map(|(_, b)| error_text(b))
        .find(|p| p.starts_with("client_encoding"));
    assert_eq!(enc.as_deref(), Some("client_encoding | UTF8 | "));
    // psql with PGOPTIONS set is refused with a message that says what to do.
    let mut cmd = psql(&proxy, "disable");
    cmd.env("PGOPTIONS", "-c standard_conforming_strings=off");
    let out = run(cmd, "SELECT 1;\n").await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("remove it (PGOPTIONS"), "{stderr}");
    proxy.stop().await;
}

/// A refused statement inside a transaction fails that transaction, as PostgreSQL would:
/// the client sees ReadyForQuery 'E', and COMMIT rolls the earlier work back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_inside_a_transaction_fails_it() {
    let t = fresh_table("rej").await;
    let backend = TestBackend::reviewing(vec![
        ("approved_write", Script::AllowWrite),
        ("deny_me", Script::Deny("Warden: not here".into())),
        (
            "reject_me",
            Script::Held(
                Duration::from_millis(100),
                warden_pgwire::HeldOutcome::Rejected {
                    by: "bob@example.com".into(),
                    reason: "no".into(),
                },
            ),
        ),
    ]);
    let proxy = Proxy::start(backend).await;
    for refused in ["deny_me", "reject_me"] {
        let mut s = raw_session(&proxy).await;
        s.write_all(&ext::query("BEGIN")).await.unwrap();
        let got = read_until_ready(&mut s).await;
        assert_eq!(got.last().unwrap().1, b"T");
        s.write_all(&ext::query(&format!(
            "INSERT INTO {t} VALUES (1) /* approved_write */"
        )))
        .await
        .unwrap();
        let got = read_until_ready(&mut s).await;
        assert!(got.iter().any(|(tag, _)| *tag == b'C'), "{got:?}");
        assert_eq!(got.last().unwrap().1, b"T");
        s.write_all(&ext::query(&format!("DELETE FROM {t} /* {refused} */")))
            .await
            .unwrap();
        let got = read_until_ready(&mut s).await;
        let errors: Vec<String> = got
            .iter()
            .filter(|(tag, _)| *tag == b'E')
            .map(|(_, b)| error_text(b))
            .collect();
        assert_eq!(errors.len(), 1, "one error, Warden's: {errors:?}");
        assert!(
            errors[0].contains("42501") && errors[0].contains("Warden"),
            "{errors:?}"
        );
        assert_eq!(got.last().unwrap().1, b"E", "the transaction failed");
        s.write_all(&ext::query("COMMIT")).await.unwrap();
        let got = read_until_ready(&mut s).await;
        let tag = got
            .iter()
            .find(|(t, _)| *t == b'C')
            .map(|(_, b)| error_text(b));
        assert_eq!(tag.as_deref(), Some("ROLLBACK | "));
        assert_eq!(got.last().unwrap().1, b"I");
    }
    // The same through the extended protocol.
    let c = proxy.connect().await;
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute(&format!("INSERT INTO {t} VALUES (2) /* approved_write */"))
        .await
        .unwrap();
    let e = c
        .execute(
            &format!("DELETE FROM {t} WHERE id = $1 /* deny_me */"),
            &[&1i32],
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42501");
    let e = c.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(code(&e), "25P02", "the transaction is aborted: {e}");
    c.batch_execute("COMMIT").await.unwrap();
    assert!(ids(&t).await.is_empty(), "nothing was committed");
    proxy.stop().await;
}

/// After an error the server skips every message until Sync, so a Parse in the skipped part
/// never happened. The proxy must decide (and record) what the server runs, not what the
/// client claimed: here the unnamed statement still holds the INSERT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_follows_the_server_after_an_error_not_the_client() {
    let t = fresh_table("drift").await;
    let backend = TestBackend::reviewing(vec![(
        "INSERT",
        Script::Deny("Warden: writes need approval".into()),
    )]);
    let proxy = Proxy::start(backend).await;
    let mut s = raw_session(&proxy).await;
    // 1. Prepare the write as the unnamed statement (nothing runs, nothing is asked).
    let mut b = ext::parse("", &format!("INSERT INTO {t} VALUES (1)"));
    b.extend(ext::sync());
    s.write_all(&b).await.unwrap();
    let got = read_until_ready(&mut s).await;
    assert!(got.iter().any(|(t, _)| *t == b'1'), "{got:?}");
    // 2. An error first, then a decoy Parse the server skips.
    let mut b = ext::bind("", "no_such_statement");
    b.extend(ext::parse("", "SELECT 1 /* decoy */"));
    b.extend(ext::sync());
    s.write_all(&b).await.unwrap();
    let got = read_until_ready(&mut s).await;
    assert!(got.iter().any(|(t, _)| *t == b'E'), "{got:?}");
    // 3. Run the unnamed statement.
    let mut b = ext::bind("", "");
    b.extend(ext::execute(""));
    b.extend(ext::sync());
    s.write_all(&b).await.unwrap();
    let got = read_until_ready(&mut s).await;
    let err = got
        .iter()
        .find(|(t, _)| *t == b'E')
        .map(|(_, b)| error_text(b))
        .unwrap_or_default();
    assert!(err.contains("writes need approval"), "{got:?}");
    let asked = proxy.backend.asked.lock().unwrap().clone();
    assert!(
        asked.iter().any(|a| a.contains("INSERT INTO"))
            && !asked.iter().any(|a| a.contains("decoy")),
        "decided on the server's statement: {asked:?}"
    );
    let l = proxy.backend.wait_log("INSERT INTO").await;
    assert_eq!(l.tag.as_deref(), Some("DENIED"));
    assert!(ids(&t).await.is_empty());
    proxy.stop().await;
}

/// A simple query inside an unfinished extended batch: the server runs it or skips it
/// depending on whether an earlier message of the batch failed, so the proxy could only guess
/// what to record. It ends the session instead, reviewed or not, and nothing of the batch runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simple_query_inside_an_extended_batch_ends_the_session() {
    let t = fresh_table("qinbatch").await;
    for backend in [TestBackend::allow_all(), TestBackend::reviewing(vec![])] {
        let reviewed = backend.review;
        let proxy = Proxy::start(backend).await;
        let mut s = raw_session(&proxy).await;
        let mut bytes = ext::parse("", "SELECT 1/0");
        bytes.extend(ext::bind("", ""));
        bytes.extend(ext::execute(""));
        // Skipped by PostgreSQL (the batch failed); a proxy that guessed otherwise would
        // record or review it as run.
        bytes.extend(ext::query(&format!("INSERT INTO {t} VALUES (1)")));
        bytes.extend(ext::sync());
        s.write_all(&bytes).await.unwrap();
        let got = read_all(&mut s).await;
        assert!(
            contains(
                &got,
                "simple Query arrived inside an unfinished extended-protocol batch"
            ),
            "reviewed={reviewed}: {}",
            String::from_utf8_lossy(&got)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !proxy
                .backend
                .logs()
                .iter()
                .any(|l| l.statement.contains("INSERT")),
            "reviewed={reviewed}: {:?}",
            proxy.backend.logs()
        );
        proxy.stop().await;
    }
    assert_eq!(ids(&t).await, Vec::<i32>::new());
}
