//! Other real clients through the proxy: pgbench (initialisation with COPY, then simple,
//! extended and prepared runs) and psycopg 3 from PyPI (pipeline mode, COPY, prepared; dropping
//! prepared statements under statement review).

mod common;

use std::process::Command;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_initialises_and_runs_in_every_protocol_mode() {
    // Sessions on dedicated relay threads (ProxyConfig::relay_threads), as the benchmark runs.
    let config = warden_pgwire::ProxyConfig {
        relay_threads: 2,
        ..Default::default()
    };
    let proxy = Proxy::start_with(TestBackend::allow_all(), config).await;
    let port = proxy.addr.port().to_string();
    let pgbench = |args: &[&str]| {
        let mut c = Command::new("pgbench");
        c.args(["-h", "127.0.0.1", "-p", &port, "-U", USER, CONNECTION]);
        c.args(args)
            .env("PGPASSWORD", TOKEN)
            .env("PGSSLMODE", "disable");
        c
    };
    let out = run(pgbench(&["-i", "-s", "1", "-q"]), "").await;
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "pgbench -i failed: {stderr}");
    assert!(stderr.contains("done in"), "{stderr}");
    for mode in ["simple", "extended", "prepared"] {
        let out = run(pgbench(&["-c", "4", "-j", "2", "-t", "50", "-M", mode]), "").await;
        let (stdout, stderr) = text(&out);
        assert!(
            out.status.success(),
            "pgbench -M {mode} failed: {stdout}\n{stderr}"
        );
        assert!(
            stdout.contains("number of transactions actually processed: 200/200"),
            "{stdout}"
        );
        assert!(
            stdout.contains("number of failed transactions: 0"),
            "{stdout}"
        );
    }
    // Every statement of the prepared run was audited with its tag.
    let l = proxy
        .backend
        .wait_log("UPDATE pgbench_accounts SET abalance")
        .await;
    assert!(
        l.tag.as_deref().is_some_and(|t| t.starts_with("UPDATE")),
        "{l:?}"
    );
    proxy.stop().await;
}

/// psycopg must be importable; install it from PyPI if it is not (fails loudly otherwise).
async fn ensure_psycopg() {
    let probe = || {
        let mut c = Command::new("python3");
        c.args(["-c", "import psycopg; print(psycopg.__version__)"]);
        c
    };
    let out = run(probe(), "").await;
    if out.status.success() {
        return;
    }
    let mut pip = Command::new("python3");
    pip.args(["-m", "pip", "install", "--quiet", "psycopg[binary]"]);
    let installed = run(pip, "").await;
    let out = run(probe(), "").await;
    assert!(
        out.status.success(),
        "python3 with psycopg 3 is required for this test and could not be installed: {}\n{}",
        String::from_utf8_lossy(&installed.stderr),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs one of the psycopg scripts in `tests/` (installing psycopg if needed); it must succeed
/// and print `OK …`.
async fn run_psycopg(script: &str, args: &[&str]) {
    ensure_psycopg().await;
    let mut cmd = Command::new("python3");
    cmd.arg(format!("{}/tests/{script}", env!("CARGO_MANIFEST_DIR")))
        .args(args);
    let out = run(cmd, "").await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{stderr}");
    assert!(stdout.starts_with("OK "), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_full_workout() {
    let proxy = Proxy::start(TestBackend::allow_all()).await;
    run_psycopg(
        "psycopg_client.py",
        &[&proxy.conninfo("disable"), &table("psy")],
    )
    .await;
    let l = proxy.backend.wait_log("SELECT 42").await;
    assert_eq!(l.tag.as_deref(), Some("SELECT 1"));
    proxy.stop().await;
}

/// psycopg drops prepared statements (cache eviction, or an SQL `DEALLOCATE` by hand). Under
/// statement review the proxy renames every prepared statement on the server, so it must
/// translate those names, or the driver's `DEALLOCATE` fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_deallocate_under_review() {
    let proxy = Proxy::start(TestBackend::reviewing(Vec::new())).await;
    run_psycopg("psycopg_deallocate.py", &[&proxy.conninfo("disable")]).await;
    // The DEALLOCATE was reviewed and recorded with the client's own text.
    let l = proxy.backend.wait_log("DEALLOCATE _pg3_0").await;
    assert_eq!(l.tag.as_deref(), Some("DEALLOCATE"));
    let asked = proxy.backend.asked.lock().unwrap().clone();
    assert!(
        asked.iter().any(|s| s == "DEALLOCATE _pg3_0"),
        "the DEALLOCATE went through review: {asked:?}"
    );
    proxy.stop().await;
}
