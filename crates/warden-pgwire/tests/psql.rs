//! psql through the proxy: simple queries, COPY in and out, a transaction, TLS, and statement
//! review (held → approved, held → rejected, denied) with the exact notice/error texts.

mod common;

use std::time::Duration;

use common::*;
use warden_pgwire::HeldOutcome;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_queries_copy_and_transaction() {
    let proxy = Proxy::start(TestBackend::allow_all()).await;
    let t = table("psql");
    let script = format!(
        "CREATE TABLE {t} (id int primary key, name text);\n\
         \\copy {t} FROM STDIN\n1\tone\n2\ttwo\n3\tthree\n\\.\n\
         BEGIN;\nUPDATE {t} SET name = 'TWO' WHERE id = 2;\nROLLBACK;\n\
         BEGIN;\nINSERT INTO {t} VALUES (4, 'four');\nCOMMIT;\n\
         SELECT id || ':' || name FROM {t} ORDER BY id;\n\
         COPY (SELECT id FROM {t} ORDER BY id) TO STDOUT;\n\
         SELECT current_user, current_database();\n\
         DROP TABLE {t};\n"
    );
    let out = run(psql(&proxy, "disable"), &script).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "psql failed: {stderr}");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "1:one",
            "2:two",
            "3:three",
            "4:four",
            "1",
            "2",
            "3",
            "4",
            "postgres|test"
        ],
        "stderr: {stderr}"
    );
    let l = proxy.backend.wait_log("INSERT INTO").await;
    assert_eq!(l.tag.as_deref(), Some("INSERT 0 1"));
    assert_eq!(&*l.user, USER);
    assert_eq!(&*l.connection, CONNECTION);
    let l = proxy.backend.wait_log("COPY (SELECT").await;
    assert_eq!(l.tag.as_deref(), Some("COPY 4"));
    proxy.backend.wait_log("DROP TABLE").await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_review_held_approved_rejected_and_denied() {
    let backend = TestBackend::reviewing(vec![
        (
            "approve_me",
            Script::Held(
                Duration::from_millis(300),
                HeldOutcome::Approved {
                    review_id: uuid::Uuid::nil(),
                },
            ),
        ),
        (
            "reject_me",
            Script::Held(
                Duration::from_millis(300),
                HeldOutcome::Rejected {
                    by: "bob@example.com".into(),
                    reason: "not during business hours".into(),
                },
            ),
        ),
        (
            "expire_me",
            Script::Held(Duration::from_millis(100), HeldOutcome::Expired),
        ),
        (
            "deny_me",
            Script::Deny("Warden: DROP is never allowed here".into()),
        ),
    ]);
    let proxy = Proxy::start(backend).await;

    let out = run(psql(&proxy, "disable"), "SELECT 'approve_me';\n").await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.trim(), "approve_me");
    assert!(
        stderr.contains(
            "NOTICE:  Warden: statement held for approval at http://warden.test/reviews/"
        ),
        "{stderr}"
    );

    let out = run(psql(&proxy, "disable"), "SELECT 'reject_me';\n").await;
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stdout.is_empty());
    assert!(stderr.contains("statement held for approval"), "{stderr}");
    assert!(
        stderr.contains(
            "ERROR:  Warden: statement rejected by bob@example.com: not during business hours"
        ),
        "{stderr}"
    );

    // The session survives a rejection: later statements run (psql without ON_ERROR_STOP).
    let mut cmd = std::process::Command::new("psql");
    cmd.arg(proxy.conninfo("disable"))
        .args(["-X", "-q", "-A", "-t"]);
    let out = run(
        cmd,
        "SELECT 'expire_me';\nSELECT 'deny_me';\nSELECT 40 + 2;\n",
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(
        stderr.contains("ERROR:  Warden: review expired — resubmit the statement"),
        "{stderr}"
    );
    assert!(
        stderr.contains("ERROR:  Warden: DROP is never allowed here"),
        "{stderr}"
    );
    assert_eq!(stdout.trim(), "42");

    let asked = proxy.backend.asked.lock().unwrap().clone();
    assert!(asked.iter().any(|s| s.contains("40 + 2")), "{asked:?}");
    let l = proxy.backend.wait_log("approve_me").await;
    assert_eq!(l.review_id, Some(uuid::Uuid::nil()));
    assert_eq!(
        proxy.backend.wait_log("reject_me").await.tag.as_deref(),
        Some("REJECTED")
    );
    assert_eq!(
        proxy.backend.wait_log("deny_me").await.tag.as_deref(),
        Some("DENIED")
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_over_tls_and_require_tls() {
    let (tls, _) = self_signed_localhost();
    let config = warden_pgwire::ProxyConfig {
        tls: Some(std::sync::Arc::new(tls)),
        require_tls: true,
        ..Default::default()
    };
    let backend = TestBackend {
        upstream_tls: Some(warden_pgwire::UpstreamTls::Require),
        ..TestBackend::allow_all()
    };
    let proxy = Proxy::start_with(backend, config).await;
    let out = run(
        psql(&proxy, "require"),
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid();\nSELECT 'tls ok';\n",
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    // The upstream hop is TLS too (UpstreamTls::Require), and the client's is.
    assert_eq!(stdout.lines().collect::<Vec<_>>(), ["t", "tls ok"]);

    let out = run(psql(&proxy, "disable"), "SELECT 1;\n").await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("Warden requires TLS"), "{stderr}");
    proxy.stop().await;
}

/// The snakeoil certificate this machine's PostgreSQL presents (CN/SAN = localhost).
const SNAKEOIL: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
/// A root bundle that did not sign the snakeoil certificate.
const UNRELATED_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

fn upstream_at(host: &str, tls: warden_pgwire::UpstreamTls) -> warden_pgwire::Upstream {
    warden_pgwire::Upstream {
        host: host.into(),
        port: PG_PORT,
        user: "postgres".into(),
        password: Some(warden_core::secret::Secret::new(
            "unused-under-trust".into(),
        )),
        database: "test".into(),
        tls,
    }
}

/// The upstream hop verifies what `sslmode` asks for: `verify-full` refuses a certificate
/// that does not name the host it dialled, `verify-ca` refuses a chain to an unrelated root, and
/// neither is ever downgraded to "encrypt, verify nothing" (the proxy once did exactly that).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_certificates_are_verified_as_sslmode_asks() {
    assert!(
        std::path::Path::new(SNAKEOIL).exists(),
        "{SNAKEOIL} is missing: the PostgreSQL TLS setup of this machine changed"
    );
    use warden_pgwire::UpstreamTls::{VerifyCa, VerifyFull};
    let root = |p: &str| Some(std::path::PathBuf::from(p));
    let probe = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid();\n";
    let cases = [
        (
            "localhost",
            VerifyFull {
                root: root(SNAKEOIL),
            },
            None,
        ),
        (
            "127.0.0.1",
            VerifyCa {
                root: root(SNAKEOIL),
            },
            None,
        ),
        (
            "127.0.0.1",
            VerifyFull {
                root: root(SNAKEOIL),
            },
            Some("not valid for name"),
        ),
        (
            "localhost",
            VerifyCa {
                root: root(UNRELATED_ROOTS),
            },
            Some("sslmode=verify-ca"),
        ),
        (
            "localhost",
            VerifyFull {
                root: root("/nonexistent/root.crt"),
            },
            Some("cannot read root certificate"),
        ),
    ];
    for (host, tls, refused) in cases {
        let what = format!("{host} {tls:?}");
        let backend = TestBackend {
            upstream: Some(upstream_at(host, tls)),
            ..TestBackend::allow_all()
        };
        let proxy = Proxy::start(backend).await;
        let out = run(psql(&proxy, "disable"), probe).await;
        let (stdout, stderr) = text(&out);
        match refused {
            None => {
                assert!(out.status.success(), "{what}: {stderr}");
                assert_eq!(stdout.trim(), "t", "{what}: the upstream hop is TLS");
            }
            Some(why) => {
                assert!(!out.status.success(), "{what}: connected: {stdout}");
                assert!(
                    stderr.contains("could not open the connection"),
                    "{what}: {stderr}"
                );
                assert!(stderr.contains(why), "{what}: {stderr}");
            }
        }
        proxy.stop().await;
    }
}

/// `warden connect`'s tunnel sends the user's token only to a proxy whose certificate chains to
/// the given root and names the host the user dialled (`verify-full`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tunnel_sends_the_token_only_to_a_verified_gateway() {
    let (tls, pem) = self_signed_localhost();
    let root = std::env::temp_dir().join(format!("warden-gw-{}.pem", uuid::Uuid::new_v4()));
    std::fs::write(&root, pem).unwrap();
    let config = warden_pgwire::ProxyConfig {
        tls: Some(std::sync::Arc::new(tls)),
        require_tls: true,
        ..Default::default()
    };
    let proxy = Proxy::start_with(TestBackend::allow_all(), config).await;
    let port = proxy.addr.port();
    use warden_pgwire::UpstreamTls::VerifyFull;
    let cases = [
        ("localhost", root.clone(), true),
        // The gateway's certificate does not name the address dialled…
        ("127.0.0.1", root.clone(), false),
        // …or does not chain to the root the user trusts.
        ("localhost", std::path::PathBuf::from(SNAKEOIL), false),
    ];
    for (host, trusted, ok) in cases {
        let what = format!("{host} with root {}", trusted.display());
        let before = *proxy.backend.auth_calls.lock().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = listener.local_addr().unwrap().port();
        let tunnel = tokio::spawn(warden_pgwire::run_tunnel(
            listener,
            warden_pgwire::GatewayAddr {
                host: host.into(),
                port,
            },
            USER.into(),
            warden_core::secret::Secret::new(TOKEN.into()),
            CONNECTION.into(),
            VerifyFull {
                root: Some(trusted),
            },
            std::future::pending::<()>(),
        ));
        let mut cmd = std::process::Command::new("psql");
        cmd.arg(format!(
            "host=127.0.0.1 port={local} user=x dbname={CONNECTION}"
        ))
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]);
        let out = run(cmd, "SELECT 'through';\n").await;
        let (stdout, stderr) = text(&out);
        let asked = *proxy.backend.auth_calls.lock().unwrap() - before;
        if ok {
            assert!(out.status.success(), "{what}: {stderr}");
            assert_eq!(stdout.trim(), "through");
            assert_eq!(asked, 1, "{what}");
        } else {
            assert!(!out.status.success(), "{what}: {stdout}");
            assert!(stderr.contains("TLS handshake failed"), "{what}: {stderr}");
            assert_eq!(asked, 0, "{what}: the token reached an unverified gateway");
        }
        tunnel.abort();
    }
    let _ = std::fs::remove_file(&root);
    proxy.stop().await;
}

/// A TLS server configuration with a fresh self-signed certificate for `localhost`, and that
/// certificate as PEM (the root a client must trust).
fn self_signed_localhost() -> (rustls::ServerConfig, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let tls = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    (tls, cert.cert.pem())
}
