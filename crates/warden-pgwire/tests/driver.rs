//! tokio-postgres (a Rust driver on the extended protocol) through the proxy: prepared
//! statements, pipelining, LISTEN/NOTIFY, a multi-megabyte row, cancel, COPY, and the
//! `warden connect` tunnel in front of the proxy.

mod common;

use std::time::Duration;

use common::*;
use futures::{StreamExt, TryStreamExt, future::try_join_all};
use tokio_postgres::AsyncMessage;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_pipelined_large_rows_and_copy() {
    let proxy = Proxy::start(TestBackend::allow_all()).await;
    let c = proxy.connect().await;
    let t = table("drv");
    c.batch_execute(&format!("CREATE TABLE {t} (id int primary key, body text)"))
        .await
        .unwrap();

    // Named prepared statement reused many times.
    let insert = c
        .prepare(&format!("INSERT INTO {t} VALUES ($1, $2)"))
        .await
        .unwrap();
    for i in 0..20 {
        c.execute(&insert, &[&i, &format!("row {i}")])
            .await
            .unwrap();
    }
    // Pipelining: many queries in flight on one connection.
    let select = c
        .prepare(&format!("SELECT body FROM {t} WHERE id = $1"))
        .await
        .unwrap();
    let futs = (0..20).map(|i| {
        let c = &c;
        let select = &select;
        async move {
            c.query_one(select, &[&i])
                .await
                .map(|r| (i, r.get::<_, String>(0)))
        }
    });
    for (i, body) in try_join_all(futs).await.unwrap() {
        assert_eq!(body, format!("row {i}"));
    }
    // Unnamed statements via query with parameters, and a transaction.
    let mut c = c;
    let tx = c.transaction().await.unwrap();
    tx.execute(
        &format!("UPDATE {t} SET body = $1 WHERE id = 1"),
        &[&"changed"],
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    let row = c
        .query_one(&format!("SELECT body FROM {t} WHERE id = 1"), &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "row 1");

    // A row of several megabytes each way (Bind and DataRow much larger than the relay buffers).
    let big: String = "x".repeat(6 << 20);
    c.execute(&format!("INSERT INTO {t} VALUES (1000, $1)"), &[&big])
        .await
        .unwrap();
    let row = c
        .query_one(
            &format!("SELECT body, length(body) FROM {t} WHERE id = 1000"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(1), 6 << 20);
    assert!(row.get::<_, String>(0) == big);

    // COPY FROM STDIN on the extended protocol (the Sync sent during COPY is ignored by the server).
    let sink = c
        .copy_in::<_, bytes::Bytes>(&format!("COPY {t} FROM STDIN"))
        .await
        .unwrap();
    let data = (2000..2100)
        .map(|i| format!("{i}\tcopied {i}\n"))
        .collect::<String>();
    futures::pin_mut!(sink);
    futures::SinkExt::send(&mut sink, bytes::Bytes::from(data))
        .await
        .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 100);
    let out = c
        .copy_out(&format!(
            "COPY (SELECT id FROM {t} WHERE id >= 2000 ORDER BY id) TO STDOUT"
        ))
        .await
        .unwrap();
    let chunks: Vec<bytes::Bytes> = out.try_collect().await.unwrap();
    assert_eq!(
        chunks
            .concat()
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count(),
        100
    );
    // After COPY, statement answers still line up with their audit records.
    c.execute(&format!("UPDATE {t} SET body = 'z' WHERE id = 2000"), &[])
        .await
        .unwrap();
    c.batch_execute(&format!("DROP TABLE {t}")).await.unwrap();

    let l = proxy
        .backend
        .wait_log(&format!("UPDATE {t} SET body = 'z'"))
        .await;
    assert_eq!(l.tag.as_deref(), Some("UPDATE 1"));
    let l = proxy
        .backend
        .wait_log(&format!("INSERT INTO {t} VALUES ($1, $2)"))
        .await;
    assert_eq!(l.tag.as_deref(), Some("INSERT 0 1"));
    let l = proxy
        .backend
        .wait_log(&format!("COPY {t} FROM STDIN"))
        .await;
    assert_eq!(l.tag.as_deref(), Some("COPY 100"));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_notify_and_cancel() {
    let proxy = Proxy::start(TestBackend::allow_all()).await;
    let (client, mut conn) =
        tokio_postgres::connect(&proxy.conninfo("disable"), tokio_postgres::NoTls)
            .await
            .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stream = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(Ok(m)) = stream.next().await {
            if let AsyncMessage::Notification(n) = m {
                let _ = tx.send((n.channel().to_string(), n.payload().to_string()));
            }
        }
    });
    client.batch_execute("LISTEN warden_test").await.unwrap();
    let other = proxy.connect().await;
    other
        .batch_execute("NOTIFY warden_test, 'hello through the proxy'")
        .await
        .unwrap();
    let (channel, payload) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (channel.as_str(), payload.as_str()),
        ("warden_test", "hello through the proxy")
    );

    // Cancel: the proxy's key is mapped to the upstream's.
    let token = client.cancel_token();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        token.cancel_query(tokio_postgres::NoTls).await
    });
    let started = std::time::Instant::now();
    let err = client
        .batch_execute("SELECT pg_sleep(30)")
        .await
        .unwrap_err();
    canceller.await.unwrap().unwrap();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // The session is still usable after the cancel.
    assert_eq!(
        client
            .query_one("SELECT 7", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        7
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_logs_in_for_the_user() {
    let proxy = Proxy::start(TestBackend::allow_all()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let tunnel = tokio::spawn(warden_pgwire::run_tunnel(
        listener,
        proxy.addr.into(),
        USER.into(),
        warden_core::secret::Secret::new(TOKEN.into()),
        CONNECTION.into(),
        warden_pgwire::UpstreamTls::Prefer,
        async move {
            let _ = stopped.await;
        },
    ));
    // Any user, no password: the tunnel carries the identity.
    let mut cmd = std::process::Command::new("psql");
    cmd.arg(format!(
        "host=127.0.0.1 port={port} user=anything dbname={CONNECTION} application_name=tunnel_app"
    ))
    .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]);
    let out = run(
        cmd,
        "SELECT current_setting('application_name'), current_database();\n",
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.trim(), "tunnel_app|test");

    // Cancel through the tunnel.
    let (client, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=x dbname={CONNECTION}"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let token = client.cancel_token();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        token.cancel_query(tokio_postgres::NoTls).await
    });
    let err = client
        .batch_execute("SELECT pg_sleep(30)")
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED),
        "{err}"
    );

    // A tunnel with a wrong token shows the gateway's own refusal.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bad_port = listener.local_addr().unwrap().port();
    tokio::spawn(warden_pgwire::run_tunnel(
        listener,
        proxy.addr.into(),
        USER.into(),
        warden_core::secret::Secret::new("wrong".into()),
        CONNECTION.into(),
        warden_pgwire::UpstreamTls::Disable,
        std::future::pending::<()>(),
    ));
    let mut cmd = std::process::Command::new("psql");
    cmd.arg(format!(
        "host=127.0.0.1 port={bad_port} user=x dbname={CONNECTION}"
    ))
    .args(["-X", "-c", "SELECT 1"]);
    let out = run(cmd, "").await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("password authentication failed"),
        "{stderr}"
    );

    let _ = stop.send(());
    tunnel.await.unwrap().unwrap();
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_review_and_other_sessions_not_blocked() {
    use warden_pgwire::HeldOutcome;
    let backend = TestBackend::reviewing(vec![
        (
            "slow_approve",
            Script::Held(
                Duration::from_secs(2),
                HeldOutcome::Approved {
                    review_id: uuid::Uuid::nil(),
                },
            ),
        ),
        (
            "reject_me",
            Script::Held(
                Duration::from_millis(200),
                HeldOutcome::Rejected {
                    by: "bob@example.com".into(),
                    reason: "no".into(),
                },
            ),
        ),
        ("deny_me", Script::Deny("Warden: denied by rule".into())),
    ]);
    let proxy = Proxy::start(backend).await;
    let held = proxy.connect().await;
    let other = proxy.connect().await;

    // Session A waits on a held statement (extended protocol, parameters)…
    let waiting = tokio::spawn(async move {
        let row = held
            .query_one("SELECT $1::text AS slow_approve", &[&"approved!"])
            .await
            .unwrap();
        (held, row.get::<_, String>(0))
    });
    // …while session B runs freely.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    for i in 0..20 {
        assert_eq!(
            other
                .query_one("SELECT $1::int", &[&i])
                .await
                .unwrap()
                .get::<_, i32>(0),
            i
        );
    }
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "other session was blocked"
    );
    assert!(!waiting.is_finished());
    let (held, value) = waiting.await.unwrap();
    assert_eq!(value, "approved!");

    // Rejected and denied statements fail with 42501; the session goes on, pipelined work too.
    let err = held.query("SELECT 1 AS reject_me", &[]).await.unwrap_err();
    let db = err.as_db_error().unwrap();
    assert_eq!(db.code().code(), "42501");
    assert_eq!(
        db.message(),
        "Warden: statement rejected by bob@example.com: no"
    );
    // Preparing runs nothing: the statement is decided when it is executed.
    let err = held.query("SELECT 1 AS deny_me", &[]).await.unwrap_err();
    assert_eq!(
        err.as_db_error().unwrap().message(),
        "Warden: denied by rule"
    );
    let (a, b, c) = tokio::join!(
        held.query_one("SELECT 1::int", &[]),
        held.query_one("SELECT 2 AS reject_me", &[]),
        held.query_one("SELECT 3::int", &[])
    );
    assert_eq!(a.unwrap().get::<_, i32>(0), 1);
    assert_eq!(b.unwrap_err().as_db_error().unwrap().code().code(), "42501");
    assert_eq!(c.unwrap().get::<_, i32>(0), 3);
    let l = proxy.backend.wait_log("slow_approve").await;
    assert_eq!(l.review_id, Some(uuid::Uuid::nil()));
    assert_eq!(l.tag.as_deref(), Some("SELECT 1"));
    proxy.stop().await;
}

/// Every run of a prepared statement is recorded with its text and outcome, not only its Parse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_run_of_a_prepared_statement_is_recorded() {
    let proxy = Proxy::start(TestBackend::allow_all()).await;
    let c = proxy.connect().await;
    let st = c.prepare("SELECT $1::int + 0 AS exec_audit").await.unwrap();
    for i in 0..3 {
        c.query_one(&st, &[&i]).await.unwrap();
    }
    // A portal run in pieces (row limit): one record per Execute, the partial ones SUSPENDED.
    let mut c = c;
    let tx = c.transaction().await.unwrap();
    let portal = tx
        .bind("SELECT generate_series(1, 5) AS portal_audit", &[])
        .await
        .unwrap();
    assert_eq!(tx.query_portal(&portal, 3).await.unwrap().len(), 3);
    assert_eq!(tx.query_portal(&portal, 3).await.unwrap().len(), 2);
    tx.commit().await.unwrap();
    let mut runs = Vec::new();
    let mut pieces = Vec::new();
    for _ in 0..100 {
        let logs = proxy.backend.logs();
        runs = logs
            .iter()
            .filter(|l| l.statement.contains("exec_audit"))
            .map(|l| l.tag.clone())
            .collect();
        pieces = logs
            .iter()
            .filter(|l| l.statement.contains("portal_audit"))
            .map(|l| l.tag.clone())
            .collect();
        if runs.len() >= 3 && pieces.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(runs, vec![Some("SELECT 1".to_string()); 3]);
    assert_eq!(
        pieces,
        vec![Some("SUSPENDED".to_string()), Some("SELECT 2".to_string())]
    );
    proxy.stop().await;
}

/// Under statement review a prepared statement is decided at each run, with its parameters in
/// front of the reviewer: approving one run never approves the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_run_of_a_prepared_statement_is_reviewed_with_its_parameters() {
    let backend = TestBackend::reviewing(vec![
        ("CREATE TABLE", Script::AllowWrite),
        (
            "held_update",
            Script::Held(
                Duration::from_millis(100),
                warden_pgwire::HeldOutcome::Approved {
                    review_id: uuid::Uuid::nil(),
                },
            ),
        ),
    ]);
    let proxy = Proxy::start(backend).await;
    let c = proxy.connect().await;
    let t = table("rev");
    c.batch_execute(&format!(
        "CREATE TABLE {t} (id int primary key, body text); INSERT INTO {t} VALUES (1, 'x'), (2, 'y')"
    ))
    .await
    .unwrap();
    let st = c
        .prepare(&format!(
            "UPDATE {t} SET body = $1 WHERE id = $2 /* held_update */"
        ))
        .await
        .unwrap();
    let asked = || {
        proxy
            .backend
            .asked
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.contains("held_update"))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(
        asked().is_empty(),
        "preparing alone ran nothing: {:?}",
        asked()
    );
    assert_eq!(c.execute(&st, &[&"first", &1i32]).await.unwrap(), 1);
    assert_eq!(c.execute(&st, &[&"second", &2i32]).await.unwrap(), 1);
    let asked = asked();
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert!(asked[0].contains("as text 'first'"), "{}", asked[0]);
    assert!(asked[1].contains("as text 'second'"), "{}", asked[1]);
    let rows = c
        .query(&format!("SELECT body FROM {t} ORDER BY id"), &[])
        .await
        .unwrap();
    let bodies: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(bodies, ["first", "second"]);
    // The statement was renamed on its way to the server, and the rename holds for Close:
    // dropping it and preparing again works.
    drop(st);
    let again = c
        .prepare(&format!("SELECT body FROM {t} WHERE id = $1"))
        .await
        .unwrap();
    let body: String = c.query_one(&again, &[&1i32]).await.unwrap().get(0);
    assert_eq!(body, "first");
    let names: Vec<String> = c
        .query("SELECT name FROM pg_prepared_statements", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        names.iter().all(|n| n.starts_with("_warden_")),
        "server-side names: {names:?}"
    );
    proxy.stop().await;
}
