//! Hostile and broken clients: malformed bytes, oversized lengths, wrong passwords, brute
//! force, and sessions that end (window over, revoked). Each affects only its own connection.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_input_end_only_that_session() {
    let config = warden_pgwire::ProxyConfig {
        max_message: 1 << 20,
        ..Default::default()
    };
    let proxy = Proxy::start_with(TestBackend::allow_all(), config).await;
    let healthy = proxy.connect().await;

    // Negative length after login.
    let mut s = raw_session(&proxy).await;
    s.write_all(&[b'Q', 0xff, 0xff, 0xff, 0xf0]).await.unwrap();
    let got = read_all(&mut s).await;
    assert!(
        contains(&got, "FATAL") && contains(&got, "08P01") && contains(&got, "invalid length"),
        "{got:?}"
    );

    // A length above the cap.
    let mut s = raw_session(&proxy).await;
    s.write_all(&[b'Q', 0x10, 0, 0, 0]).await.unwrap();
    let got = read_all(&mut s).await;
    assert!(
        contains(&got, "54000") && contains(&got, "above the"),
        "{got:?}"
    );

    // A Query without its terminating NUL.
    let mut s = raw_session(&proxy).await;
    s.write_all(&message(b'Q', b"select 1")).await.unwrap();
    let got = read_all(&mut s).await;
    assert!(contains(&got, "malformed Query"), "{got:?}");

    // Garbage instead of a startup packet, or Terminate sent first: the connection is closed
    // without a reply, exactly as PostgreSQL itself does (asked the same bytes here).
    for bytes in [&b"GET / HTTP/1.1\r\n\r\n"[..], &[b'X', 0, 0, 0, 4][..]] {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(bytes).await.unwrap();
        let got = read_all(&mut s).await;
        let mut direct = TcpStream::connect("127.0.0.1:5432")
            .await
            .expect("PostgreSQL is required for this test (127.0.0.1:5432)");
        direct.write_all(bytes).await.unwrap();
        let real = read_all(&mut direct).await;
        assert_eq!(got, real, "{bytes:?}: the proxy answers as PostgreSQL does");
        assert!(got.is_empty(), "{got:?}");
    }

    // Bytes smuggled after SSLRequest are refused.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let mut req = vec![0, 0, 0, 8, 4, 210, 22, 47];
    req.extend(startup(USER, CONNECTION));
    s.write_all(&req).await.unwrap();
    let got = read_all(&mut s).await;
    assert!(
        contains(&got, "data received before TLS") || got == b"N",
        "{got:?}"
    );

    // The healthy session never noticed.
    assert_eq!(
        healthy
            .query_one("SELECT 1 + 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        2
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_then_rate_limit() {
    let proxy = Proxy::start(TestBackend::allow_all()).await;
    let bad = |user: &str| {
        format!(
            "host=127.0.0.1 port={} user={user} password=wrong dbname={CONNECTION} sslmode=disable",
            proxy.addr.port()
        )
    };
    let err = tokio_postgres::connect(&bad(USER), tokio_postgres::NoTls)
        .await
        .err()
        .unwrap();
    let db = err.as_db_error().expect("server error");
    assert_eq!(db.code().code(), "28P01");
    assert_eq!(db.severity(), "FATAL");

    // Denied (known user, no access to that connection) is 28000.
    let other = format!(
        "host=127.0.0.1 port={} user={USER} password={TOKEN} dbname=other sslmode=disable",
        proxy.addr.port()
    );
    let err = tokio_postgres::connect(&other, tokio_postgres::NoTls)
        .await
        .err()
        .unwrap();
    assert_eq!(err.as_db_error().unwrap().code().code(), "28000");
    assert!(err.as_db_error().unwrap().message().contains("no access"));

    for _ in 0..4 {
        let _ = tokio_postgres::connect(&bad(USER), tokio_postgres::NoTls).await;
    }
    let calls = *proxy.backend.auth_calls.lock().unwrap();
    // Blocked now: even the right token is refused, and the backend is not asked.
    let err = tokio_postgres::connect(&proxy.conninfo("disable"), tokio_postgres::NoTls)
        .await
        .err()
        .unwrap();
    let db = err.as_db_error().unwrap();
    assert_eq!(db.code().code(), "28P01");
    assert!(
        db.message().contains("too many failed attempts"),
        "{}",
        db.message()
    );
    assert_eq!(*proxy.backend.auth_calls.lock().unwrap(), calls);
    // Another user behind the same address is not locked out: the backend is asked.
    let err = tokio_postgres::connect(&bad("colleague@example.com"), tokio_postgres::NoTls)
        .await
        .err()
        .unwrap();
    let db = err.as_db_error().unwrap();
    assert_eq!(db.code().code(), "28P01");
    assert!(
        !db.message().contains("too many failed attempts"),
        "{}",
        db.message()
    );
    assert_eq!(*proxy.backend.auth_calls.lock().unwrap(), calls + 1);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_end_and_revoke_close_sessions_with_fatal() {
    let backend = TestBackend {
        ends_in: Some(Duration::from_secs(2)),
        ..TestBackend::allow_all()
    };
    let proxy = Proxy::start(backend).await;
    // psql runs a statement, then another after the window has closed.
    let out = run(
        psql(&proxy, "disable"),
        "SELECT 'inside';\n\\! sleep 3\nSELECT 'after';\n",
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(
        stdout.contains("inside") && !stdout.contains("after"),
        "{stdout}"
    );
    assert!(
        stderr.contains("access window for \"prod-db\" has ended"),
        "{stderr}"
    );
    assert_eq!(proxy.backend.ended.lock().unwrap().len(), 1);
    proxy.stop().await;

    // Revoke during a long statement: FATAL 57P01 within a second, the statement is cancelled.
    let proxy = Proxy::start(TestBackend::allow_all()).await;
    let c = proxy.connect().await;
    let revoker = {
        let backend = proxy.backend.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let tx = backend.terminators.lock().unwrap().pop_back().unwrap();
            tx.send(Some("revoked by carol@example.com: incident over".into()))
                .unwrap();
        })
    };
    let started = std::time::Instant::now();
    let err = c.batch_execute("SELECT pg_sleep(20)").await.unwrap_err();
    revoker.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    let db = err.as_db_error().expect("a FATAL from the proxy");
    assert_eq!(db.code().code(), "57P01");
    assert!(
        db.message()
            .contains("was revoked: revoked by carol@example.com: incident over"),
        "{}",
        db.message()
    );
    // The upstream statement was cancelled, not left running.
    let d = direct().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let running: i64 = d
        .query_one("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(20)' AND state = 'active'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(running, 0);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_ends_a_session_whose_client_stopped_reading() {
    let proxy = Proxy::start(TestBackend::allow_all()).await;
    let mut s = raw_session(&proxy).await;
    // A result far larger than the socket buffers; the client never reads it.
    s.write_all(&message(
        b'Q',
        b"SELECT repeat('x', 1000000) FROM generate_series(1, 500)\0",
    ))
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tx = proxy
        .backend
        .terminators
        .lock()
        .unwrap()
        .pop_back()
        .unwrap();
    tx.send(Some("revoked".into())).unwrap();
    let started = std::time::Instant::now();
    while proxy.backend.ended.lock().unwrap().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "stuck session was not ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(s);
    proxy.stop().await;
}

/// Fail closed on audit: while the audit store refuses records, no session sends the server
/// anything more; after the stall timeout the session ends with an error that says why, and
/// what ran before the store failed is recorded once it is back. Plain and reviewed sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_runs_while_statement_records_cannot_be_made_durable() {
    for review in [false, true] {
        let config = warden_pgwire::ProxyConfig {
            audit_linger: Duration::ZERO,
            audit_stall_timeout: Duration::from_secs(2),
            ..Default::default()
        };
        let backend = if review {
            TestBackend::reviewing(vec![("INSERT", Script::AllowWrite)])
        } else {
            TestBackend::allow_all()
        };
        let proxy = Proxy::start_with(backend, config).await;
        let table = format!("audit_stall_{}", uuid::Uuid::new_v4().simple());
        let d = direct().await;
        d.batch_execute(&format!("CREATE TABLE {table} (v int)"))
            .await
            .unwrap();
        let c = proxy.connect().await;
        let insert = |v: i32| format!("INSERT INTO {table} VALUES ({v})");
        let recorded = |needle: String| {
            let backend = proxy.backend.clone();
            async move {
                for _ in 0..100 {
                    if backend
                        .logs
                        .lock()
                        .unwrap()
                        .iter()
                        .any(|l| l.statement == needle)
                    {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                false
            }
        };
        c.simple_query(&insert(1)).await.unwrap();
        assert!(recorded(insert(1)).await);

        // The store goes away: the statement already on its way runs, its record waits.
        proxy
            .backend
            .refuse_records
            .store(true, std::sync::atomic::Ordering::SeqCst);
        c.simple_query(&insert(2)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The next one is never sent: the session waits, then ends saying why.
        let err = c.simple_query(&insert(3)).await.unwrap_err();
        let text = format!("{err:?}");
        assert!(
            text.contains("audit store") && text.contains("nothing runs unrecorded"),
            "review={review}: {text}"
        );
        let rows: Vec<i32> = d
            .query(&format!("SELECT v FROM {table} ORDER BY v"), &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(
            rows,
            vec![1, 2],
            "review={review}: statement 3 must not have run"
        );

        // The store is back: the buffered record lands; everything that ran is recorded.
        proxy
            .backend
            .refuse_records
            .store(false, std::sync::atomic::Ordering::SeqCst);
        assert!(recorded(insert(2)).await, "review={review}");
        assert!(
            !proxy
                .backend
                .logs
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.statement == insert(3))
        );
        // New sessions run again.
        let c2 = proxy.connect().await;
        c2.simple_query("SELECT 1").await.unwrap();
        d.batch_execute(&format!("DROP TABLE {table}"))
            .await
            .unwrap();
        proxy.stop().await;
    }
}

/// The start of a session is recorded while the upstream opens and the client is greeted; when
/// it cannot be recorded, nothing the client sends reaches the server and the session ends
/// saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_start_cannot_be_recorded_runs_nothing() {
    let proxy = Proxy::start(TestBackend::allow_all()).await;
    proxy
        .backend
        .refuse_starts
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let table = format!("start_refused_{}", uuid::Uuid::new_v4().simple());
    let failed =
        match tokio_postgres::connect(&proxy.conninfo("disable"), tokio_postgres::NoTls).await {
            Err(e) => format!("{e:?}"),
            Ok((c, conn)) => {
                let conn = tokio::spawn(conn);
                let err = c
                    .simple_query(&format!("CREATE TABLE {table} (v int)"))
                    .await
                    .expect_err("nothing runs before the start is recorded");
                // The FATAL may reach the connection task before the query does.
                let ended = conn.await.unwrap();
                format!("{err:?} / {ended:?}")
            }
        };
    assert!(
        failed.contains("could not record the start of this session"),
        "{failed}"
    );
    let d = direct().await;
    let exists: Option<String> = d
        .query_one(&format!("SELECT to_regclass('{table}')::text"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(exists, None, "the statement reached the server");
    assert!(proxy.backend.started.lock().unwrap().is_empty());
    for _ in 0..50 {
        if !proxy.backend.ended.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(proxy.backend.ended.lock().unwrap().len(), 1);
    assert!(proxy.backend.logs().is_empty());

    proxy
        .backend
        .refuse_starts
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let c = proxy.connect().await;
    c.simple_query("SELECT 1").await.unwrap();
    assert_eq!(proxy.backend.started.lock().unwrap().len(), 1);
    proxy.stop().await;
}

/// Warm upstream logins: the next session finds one already open (its server backend started
/// before the client connected), each is used by one session only and closed with it, and a
/// reviewed session through one is pinned exactly as one opened on demand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_upstream_logins_serve_one_session_each() {
    for review in [false, true] {
        let config = warden_pgwire::ProxyConfig {
            warm_upstreams: 2,
            relay_threads: 1,
            ..Default::default()
        };
        let backend = if review {
            TestBackend::reviewing(vec![])
        } else {
            TestBackend::allow_all()
        };
        let proxy = Proxy::start_with(backend, config).await;
        let d = direct().await;
        let mut pids = Vec::new();
        for round in 0..3 {
            // Give the refill time to log in before the next client arrives.
            tokio::time::sleep(Duration::from_millis(400)).await;
            let c = proxy.connect().await;
            let rows = c
                .simple_query(
                    "SELECT pg_backend_pid()::text, (extract(epoch FROM now() - backend_start) * 1000)::int::text, \
                     current_setting('default_transaction_read_only') \
                     FROM pg_stat_activity WHERE pid = pg_backend_pid()",
                )
                .await
                .unwrap();
            let Some(row) = rows.iter().find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
                _ => None,
            }) else {
                panic!("expected a row")
            };
            let pid: i32 = row.get(0).unwrap().parse().unwrap();
            let age_ms: i32 = row.get(1).unwrap().parse().unwrap();
            assert_eq!(
                row.get(2),
                Some(if review { "on" } else { "off" }),
                "review={review}: pinned as on demand"
            );
            if round > 0 {
                assert!(
                    age_ms >= 200,
                    "review={review}: round {round} should run on a warm login, its backend is {age_ms} ms old"
                );
            }
            assert!(!pids.contains(&pid), "a login is never handed out twice");
            pids.push(pid);
            drop(c);
            // The session's backend ends with it.
            let mut gone = false;
            for _ in 0..50 {
                let n: i64 = d
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                        &[&pid],
                    )
                    .await
                    .unwrap()
                    .get(0);
                if n == 0 {
                    gone = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(gone, "review={review}: backend {pid} outlived its session");
        }
        proxy.stop().await;
    }
}

/// A server that refuses the proxy's login is asked once per session, never again on the warm
/// pool's account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_upstream_gets_no_warm_logins() {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let accepted = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut startup = [0u8; 512];
                    let _ = s.read(&mut startup).await;
                    let refusal = warden_pgwire::message::error_frame(
                        warden_pgwire::message::Severity::Fatal,
                        "28P01",
                        "password authentication failed",
                    );
                    let _ = s.write_all(&refusal).await;
                });
            }
        });
    }
    let backend = TestBackend {
        upstream: Some(warden_pgwire::Upstream {
            host: "127.0.0.1".into(),
            port,
            user: "app".into(),
            password: None,
            database: "appdb".into(),
            tls: warden_pgwire::UpstreamTls::Disable,
        }),
        ..TestBackend::allow_all()
    };
    let config = warden_pgwire::ProxyConfig {
        warm_upstreams: 2,
        ..Default::default()
    };
    let proxy = Proxy::start_with(backend, config).await;
    for _ in 0..2 {
        let err = tokio_postgres::connect(&proxy.conninfo("disable"), tokio_postgres::NoTls)
            .await
            .err()
            .expect("the upstream refuses");
        assert!(format!("{err:?}").contains("28P01"), "{err:?}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    proxy.stop().await;
}

/// Warm logins opened for sessions that run freely (a JIT window) are never handed to a session
/// under review on the same upstream, nor the other way round: the pins are part of the login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_logins_never_cross_between_free_and_reviewed_sessions() {
    let config = warden_pgwire::ProxyConfig {
        warm_upstreams: 2,
        relay_threads: 1,
        ..Default::default()
    };
    let proxy = Proxy::start_with(TestBackend::allow_all(), config).await;
    let read_only = |c: tokio_postgres::Client| async move {
        let rows = c
            .simple_query("SELECT current_setting('default_transaction_read_only')")
            .await
            .unwrap();
        rows.iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            })
            .unwrap()
    };
    for (review, want) in [(false, "off"), (true, "on"), (false, "off"), (true, "on")] {
        proxy
            .backend
            .review_from_now
            .store(review, std::sync::atomic::Ordering::SeqCst);
        // Let the previous session's refill fill the pool with logins of the other kind.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let got = read_only(proxy.connect().await).await;
        assert_eq!(
            got, want,
            "review={review}: the session ran on the wrong kind of login"
        );
    }
    proxy.stop().await;
}
