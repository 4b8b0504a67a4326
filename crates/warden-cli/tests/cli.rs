//! The real `warden` binary against a real gateway: login, admin commands with tables and
//! `-o json`, and the held-command flow (exec waits with its message, an approver approves from
//! another CLI, the waiting exec prints the approved command's output).

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use warden_gateway::testing::{ADMIN_EMAIL, ADMIN_PASSWORD, Backend, TestGateway};

struct Cli {
    gateway: String,
    config: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Cli {
    fn new(gw: &TestGateway) -> Cli {
        let dir = tempfile::tempdir().unwrap();
        Cli {
            gateway: gw.base.clone(),
            config: dir.path().join("config.json"),
            _dir: dir,
        }
    }
    fn cmd(&self, token: Option<&str>, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_warden"));
        c.args(args)
            .env("WARDEN_GATEWAY", &self.gateway)
            .env("WARDEN_CONFIG", &self.config)
            .env_remove("WARDEN_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(t) = token {
            c.env("WARDEN_TOKEN", t);
        }
        c
    }
    async fn run(&self, token: Option<&str>, args: &[&str]) -> (i32, String, String) {
        let out = self.cmd(token, args).output().await.unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into(),
            String::from_utf8_lossy(&out.stderr).into(),
        )
    }
    async fn ok(&self, token: Option<&str>, args: &[&str]) -> String {
        let (code, out, err) = self.run(token, args).await;
        assert_eq!(code, 0, "warden {args:?} failed: {err}\n{out}");
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_and_admin_commands() {
    let gw = TestGateway::spawn(Backend::Sqlite).await;
    let cli = Cli::new(&gw);
    // login stores the token in the config file; later commands use it
    let mut login = cli.cmd(None, &["login", "--email", ADMIN_EMAIL, "--password-stdin"]);
    login.stdin(Stdio::piped());
    let mut child = login.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{ADMIN_PASSWORD}\n").as_bytes())
        .await
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let saved: Value = serde_json::from_slice(&std::fs::read(&cli.config).unwrap()).unwrap();
    assert!(saved["token"].as_str().unwrap().starts_with("wdn_"));
    cli.ok(
        None,
        &[
            "admin",
            "create",
            "user",
            "dev@example.com",
            "--groups",
            "dev,backend",
        ],
    )
    .await;
    let tok: Value = serde_json::from_str(
        &cli.ok(
            None,
            &[
                "admin",
                "create",
                "token",
                "--user",
                "dev@example.com",
                "-o",
                "json",
            ],
        )
        .await,
    )
    .unwrap();
    assert!(tok["token"].as_str().unwrap().starts_with("wdn_"));
    cli.ok(
        None,
        &[
            "admin",
            "create",
            "connection",
            "shell",
            "--type",
            "command",
            "--reviewers",
            "dba",
            "--env",
            "SECRET=s3cr3t-value",
            "--",
            "sh",
        ],
    )
    .await;
    let table = cli.ok(None, &["admin", "get", "connections"]).await;
    assert!(
        table.contains("shell") && table.contains("SECRET") && !table.contains("s3cr3t-value"),
        "{table}"
    );
    let conns: Value = serde_json::from_str(
        &cli.ok(None, &["admin", "get", "connections", "-o", "json"])
            .await,
    )
    .unwrap();
    assert_eq!(conns.as_array().unwrap().len(), 1);
    // One connection: fields as lines by default, the object with -o json; no secret either way.
    let one = cli
        .ok(None, &["admin", "get", "connections", "shell"])
        .await;
    assert!(
        one.lines()
            .any(|l| l.starts_with("name") && l.ends_with("shell"))
            && one.contains("SECRET")
            && !one.contains("s3cr3t-value")
            && !one.trim_start().starts_with('{'),
        "{one}"
    );
    let v: Value = serde_json::from_str(
        &cli.ok(
            None,
            &["admin", "get", "connections", "shell", "-o", "json"],
        )
        .await,
    )
    .unwrap();
    assert_eq!(v["name"], "shell", "{v}");
    for what in ["users", "groups", "rules", "reviews", "sessions", "tokens"] {
        let v: Value =
            serde_json::from_str(&cli.ok(None, &["admin", "get", what, "-o", "json"]).await)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(v.is_array(), "{what} -o json prints an array");
    }
    cli.ok(
        None,
        &[
            "admin",
            "create",
            "rule",
            "win",
            "--type",
            "jit",
            "--connections",
            "shell",
            "--approval-groups",
            "dba",
            "--max-duration",
            "2h",
            "--require-reason",
        ],
    )
    .await;
    let rules: Value =
        serde_json::from_str(&cli.ok(None, &["admin", "get", "rules", "-o", "json"]).await)
            .unwrap();
    let win = rules
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "win")
        .unwrap();
    assert_eq!(win["max_duration_sec"], 7200);
    assert_eq!(win["require_reason"], true);
    cli.ok(
        None,
        &["admin", "update", "rule", "win", "--approval-amount", "2"],
    )
    .await;
    // a refused rule: clear error, non-zero exit
    let (code, _, err) = cli
        .run(
            None,
            &[
                "admin",
                "create",
                "rule",
                "bad",
                "--type",
                "command",
                "--connections",
                "shell",
                "--approval-groups",
                "x",
            ],
        )
        .await;
    assert_ne!(code, 0);
    assert!(err.contains("already has a command rule"), "{err}");
    let (code, _, err) = cli
        .run(
            None,
            &[
                "admin",
                "create",
                "rule",
                "bad",
                "--type",
                "command",
                "--connections",
                "nope",
                "--approval-groups",
                "x",
            ],
        )
        .await;
    assert_ne!(code, 0);
    assert!(err.contains("unknown connection"), "{err}");
    cli.ok(None, &["admin", "delete", "rule", "win"]).await;
    // a non-admin is told plainly
    let dev = tok["token"].as_str().unwrap();
    let (code, _, err) = cli.run(Some(dev), &["admin", "get", "users"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("admin"), "{err}");
    gw.stop().await;
}

/// Spawns `warden exec`, waits until it prints the review URL, returns the child, the review id
/// and everything it writes to stderr (collected in the background).
async fn start_exec_logged(
    cli: &Cli,
    token: &str,
    conn: &str,
    input: &str,
) -> (tokio::process::Child, String, Arc<Mutex<String>>) {
    let mut child = cli
        .cmd(Some(token), &["exec", conn, "-i", input])
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let log = Arc::new(Mutex::new(String::new()));
    let line = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let l = lines
                .next_line()
                .await
                .unwrap()
                .expect("exec printed nothing");
            log.lock().unwrap().push_str(&format!("{l}\n"));
            if l.contains("Waiting for approval at") {
                return l;
            }
        }
    })
    .await
    .expect("exec announces the wait");
    let id = line
        .rsplit("/reviews/")
        .next()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let sink = log.clone();
    tokio::spawn(async move {
        while let Ok(Some(l)) = lines.next_line().await {
            sink.lock().unwrap().push_str(&format!("{l}\n"));
        }
    });
    (child, id, log)
}

async fn start_exec(
    cli: &Cli,
    token: &str,
    conn: &str,
    input: &str,
) -> (tokio::process::Child, String) {
    let (child, id, _) = start_exec_logged(cli, token, conn, input).await;
    (child, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_exec_waits_for_approval_and_prints_the_result() {
    let gw = TestGateway::spawn(Backend::Sqlite).await;
    let cli = Cli::new(&gw);
    let dev = gw.user("dev@example.com", &["dev"]).await;
    let dba = gw.user("dba@example.com", &["dba"]).await;
    gw.command_connection("shell", &["sh"], &["dba"]).await;
    let (child, id, log) =
        start_exec_logged(&cli, &dev, "shell", "echo from-the-approved-command").await;
    // the approver sees it in the list and approves from their own CLI
    let list = cli.ok(Some(&dba), &["review", "list"]).await;
    assert!(
        list.contains(&id[..8]) && list.contains("dev@example.com"),
        "{list}"
    );
    let show = cli.ok(Some(&dba), &["review", "show", &id]).await;
    assert!(
        show.contains("echo from-the-approved-command") && show.contains("PENDING"),
        "{show}"
    );
    // what the approver may do is the server's answer, with the command to do it
    assert!(
        show.contains(&format!(
            "you may:     approve (warden review approve {id})"
        )) && show.contains("reject (")
            && !show.contains("withdraw ("),
        "{show}"
    );
    let mine = cli.ok(Some(&dev), &["review", "show", &id]).await;
    assert!(
        mine.contains(&format!(
            "you may:     withdraw (warden review withdraw {id})"
        )) && !mine.contains("approve ("),
        "{mine}"
    );
    cli.ok(Some(&dba), &["review", "approve", &id, "--reason", "ok"])
        .await;
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "from-the-approved-command\n"
    );
    // who approved is said when it runs
    // (the background reader may still be draining the pipe of the exited child)
    let mut said = String::new();
    for _ in 0..100 {
        said = log.lock().unwrap().clone();
        if said.contains("Ran: ") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(said.contains("Ran: approved by dba@example.com"), "{said}");
    // the result is kept for later
    let show = cli.ok(Some(&dev), &["review", "show", &id]).await;
    assert!(
        show.contains("EXECUTED") && show.contains("from-the-approved-command"),
        "{show}"
    );
    // a failing command propagates its exit code
    let (child, id) = start_exec(&cli, &dev, "shell", "exit 7").await;
    cli.ok(Some(&dba), &["review", "approve", &id]).await;
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(7));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_and_expired_exec_exit_non_zero() {
    let gw = TestGateway::spawn(Backend::Sqlite).await;
    let cli = Cli::new(&gw);
    let dev = gw.user("dev@example.com", &["dev"]).await;
    let dba = gw.user("dba@example.com", &["dba"]).await;
    gw.command_connection("shell", &["sh"], &["dba"]).await;
    let (child, id) = start_exec(&cli, &dev, "shell", "rm -rf /data").await;
    let (code, _, err) = cli.run(Some(&dba), &["review", "reject", &id]).await;
    assert_ne!(code, 0, "reject needs --reason: {err}");
    cli.ok(
        Some(&dba),
        &["review", "reject", &id, "--reason", "not on prod"],
    )
    .await;
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    // the child's stderr was consumed by start_exec's drain; check the reason via show
    let show = cli.ok(Some(&dev), &["review", "show", &id]).await;
    assert!(
        show.contains("dba@example.com") && show.contains("not on prod"),
        "{show}"
    );
    // expiry
    gw.admin("POST", "/api/rules", Some(serde_json::json!({"name": "fast", "type": "command", "connections": ["quick"], "approval_groups": ["dba"], "timeout_sec": 1}))).await;
    gw.command_connection("quick", &["sh"], &[]).await;
    gw.admin("POST", "/api/rules", Some(serde_json::json!({"name": "fast", "type": "command", "connections": ["quick"], "approval_groups": ["dba"], "timeout_sec": 1}))).await;
    let (code, _, err) = cli
        .run(Some(&dev), &["exec", "quick", "-i", "echo never"])
        .await;
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("expired — resubmit"), "{err}");
    // `review wait` on a settled review reports it again
    let (code, _, err) = cli.run(Some(&dev), &["review", "wait", &id]).await;
    assert_eq!(code, 3);
    assert!(
        err.contains("Rejected by dba@example.com: not on prod"),
        "{err}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_leaves_the_request_pending_and_wait_resumes() {
    let gw = TestGateway::spawn(Backend::Sqlite).await;
    let cli = Cli::new(&gw);
    let dev = gw.user("dev@example.com", &["dev"]).await;
    let dba = gw.user("dba@example.com", &["dba"]).await;
    gw.command_connection("shell", &["sh"], &["dba"]).await;
    let (child, id, log) = start_exec_logged(&cli, &dev, "shell", "echo resumed").await;
    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(130));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let err = log.lock().unwrap().clone();
    assert!(err.contains(&format!("warden review wait {id}")), "{err}");
    let (_, r) = gw
        .call("GET", &format!("/api/reviews/{id}"), Some(&dev), None)
        .await;
    assert_eq!(r["status"], "PENDING", "still pending after Ctrl-C");
    // resume with `review wait`, approve meanwhile
    let waiter = cli
        .cmd(Some(&dev), &["review", "wait", &id])
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    cli.ok(Some(&dba), &["review", "approve", &id]).await;
    let out = tokio::time::timeout(Duration::from_secs(30), waiter.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "resumed\n");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_exec_reconnects_after_a_gateway_restart() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gw = TestGateway::spawn_with(Backend::Sqlite, |c| c.listen = port).await;
    let cli = Cli::new(&gw);
    let dev = gw.user("dev@example.com", &["dev"]).await;
    let dba = gw.user("dba@example.com", &["dba"]).await;
    gw.command_connection("shell", &["sh"], &["dba"]).await;
    let (child, id, log) = start_exec_logged(&cli, &dev, "shell", "echo survived-restart").await;
    let (config, dir) = gw.stop().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let gw = TestGateway::start(config, dir, None).await;
    let (s, _) = gw.decide(&dba, &id, "approve", None).await;
    assert_eq!(s, 200);
    let out = tokio::time::timeout(Duration::from_secs(40), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let err = log.lock().unwrap().clone();
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "survived-restart\n");
    assert!(
        err.contains("gateway unreachable, retrying"),
        "the CLI said it was reconnecting: {err}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jit_request_waits_then_access_lists_the_window() {
    let gw = TestGateway::spawn(Backend::Sqlite).await;
    let cli = Cli::new(&gw);
    let dev = gw.user("dev@example.com", &["dev"]).await;
    let dba = gw.user("dba@example.com", &["dba"]).await;
    gw.command_connection("c", &["cat"], &[]).await;
    gw.admin("POST", "/api/rules", Some(serde_json::json!({"name": "win", "type": "jit", "connections": ["c"], "approval_groups": ["dba"], "max_duration_sec": 7200}))).await;
    let (code, _, err) = cli
        .run(Some(&dev), &["request", "c", "--duration", "3h"])
        .await;
    assert_ne!(code, 0);
    assert!(err.contains("max duration 2h"), "{err}");
    let mut child = cli
        .cmd(
            Some(&dev),
            &["request", "c", "--duration", "30m", "--reason", "deploy"],
        )
        .spawn()
        .unwrap();
    let id = loop {
        let (_, list) = gw
            .call("GET", "/api/reviews?status=pending", Some(&dba), None)
            .await;
        if let Some(id) = list[0]["id"].as_str() {
            break id.to_string();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    cli.ok(Some(&dba), &["review", "approve", &id]).await;
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    let access: Value =
        serde_json::from_str(&cli.ok(Some(&dev), &["access", "-o", "json"]).await).unwrap();
    assert_eq!(access.as_array().unwrap().len(), 1);
    let table = cli.ok(Some(&dev), &["access"]).await;
    assert!(
        table.contains("TIME LEFT") && table.contains("29m"),
        "{table}"
    );
    let approved = cli
        .ok(
            None,
            &[
                "--token",
                &gw.admin_token,
                "admin",
                "get",
                "reviews",
                "--status",
                "approved",
            ],
        )
        .await;
    assert!(
        approved.contains("TIME LEFT") && approved.contains(&id[..8]),
        "{approved}"
    );
    assert_eq!(
        cli.ok(Some(&dev), &["exec", "c", "-i", "inside the window"])
            .await,
        "inside the window\n"
    );
    cli.ok(Some(&dba), &["review", "revoke", &id, "--reason", "done"])
        .await;
    let (code, _, err) = cli.run(Some(&dev), &["exec", "c", "-i", "after"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("warden request c"), "{err}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_tunnels_psql_without_a_password() {
    let gw = TestGateway::spawn(Backend::Sqlite).await;
    let cli = Cli::new(&gw);
    let dev = gw.user("dev@example.com", &["dev"]).await;
    gw.admin("POST", "/api/connections", Some(serde_json::json!({"name": "pg", "type": "postgres", "url": "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"}))).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let pg = gw.running.pg_addr.unwrap().to_string();
    let mut tunnel = cli
        .cmd(
            Some(&dev),
            &[
                "connect",
                "pg",
                "--port",
                &port.to_string(),
                "--pg-addr",
                &pg,
                "--sslmode",
                "disable",
            ],
        )
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = tunnel.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let hint = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(hint, format!("psql -h 127.0.0.1 -p {port} pg"));
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "anything",
            "-X",
            "-t",
            "-A",
            "-c",
            "SELECT 'through the tunnel'",
            "pg",
        ])
        .env_remove("PGPASSWORD")
        .env("PGSSLMODE", "disable")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "through the tunnel"
    );
    tunnel.kill().await.ok();
    // the session was recorded as the tunnel's user
    let (_, sessions) = gw.admin("GET", "/api/sessions?kind=proxy", None).await;
    assert_eq!(sessions[0]["user"], "dev@example.com");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_export_verifies_offline_and_analytics_prints() {
    let gw = TestGateway::spawn(Backend::Sqlite).await;
    let cli = Cli::new(&gw);
    let dev = gw.user("dev@example.com", &["dev"]).await;
    let dba = gw.user("dba@example.com", &["dba"]).await;
    gw.command_connection("shell", &["sh"], &["dba"]).await;
    let (child, id) = start_exec(&cli, &dev, "shell", "echo audited").await;
    cli.ok(Some(&dba), &["review", "approve", &id]).await;
    child.wait_with_output().await.unwrap();
    let admin = gw.admin_token.clone();
    let out = cli.ok(Some(&admin), &["audit", "verify"]).await;
    assert!(out.contains("audit chain OK"), "{out}");
    let file = cli.config.with_file_name("export.json");
    let f = file.to_str().unwrap();
    cli.ok(Some(&admin), &["audit", "export", "--since", "1d", "-O", f])
        .await;
    // offline: no gateway, no token
    let (code, out, err) = cli
        .run(
            None,
            &[
                "--gateway",
                "http://127.0.0.1:1",
                "audit",
                "verify",
                "--file",
                f,
            ],
        )
        .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("export OK: 1 reviews"), "{out}");
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("echo audited", "echo tampered");
    std::fs::write(&file, text).unwrap();
    let (code, out, _) = cli.run(None, &["audit", "verify", "--file", f]).await;
    assert_ne!(code, 0);
    assert!(out.contains("BROKEN"), "{out}");
    let csv = cli
        .ok(Some(&admin), &["audit", "export", "--format", "csv"])
        .await;
    assert!(
        csv.lines().count() == 2 && csv.contains("echo audited"),
        "{csv}"
    );
    // keygen writes a private key and prints the public key
    let key = cli.config.with_file_name("cp.key");
    let public = cli
        .ok(None, &["audit", "keygen", "--out", key.to_str().unwrap()])
        .await;
    assert_eq!(public.trim().len(), 44, "base64 of 32 bytes: {public}");
    let table = cli
        .ok(Some(&admin), &["admin", "analytics", "--since", "7d"])
        .await;
    assert!(
        table.contains("approved 1 (100%)")
            && table.contains("dba@example.com")
            && table.contains("ECHO AUDITED"),
        "{table}"
    );
    let json: Value = serde_json::from_str(
        &cli.ok(Some(&admin), &["admin", "analytics", "-o", "json"])
            .await,
    )
    .unwrap();
    assert_eq!(json["overall"]["approved"], 1);
    assert!(json["overall"]["p90_time_to_approval_sec"].is_number());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_checkpoints_verify_from_the_cli() {
    let keydir = tempfile::tempdir().unwrap();
    let key = keydir.path().join("cp.key");
    let k = key.clone();
    let f = keydir.path().join("checkpoints.jsonl");
    let gw = TestGateway::spawn_with(Backend::Sqlite, move |c| {
        c.checkpoint_key = Some(k);
        c.checkpoint_file = f;
    })
    .await;
    let cli = Cli::new(&gw);
    let admin = gw.admin_token.clone();
    let public = cli
        .ok(None, &["audit", "keygen", "--out", key.to_str().unwrap()])
        .await;
    let dev = gw.user("dev@example.com", &["dev"]).await;
    gw.command_connection("shell", &["sh"], &["dba"]).await;
    let (s, held) = gw
        .call(
            "POST",
            "/api/exec",
            Some(&dev),
            Some(json!({"connection": "shell", "command": "echo one-review"})),
        )
        .await;
    assert_eq!(s, 202, "{held}");
    let review = held["review"]["id"].as_str().unwrap().to_string();
    let line = cli.ok(Some(&admin), &["audit", "checkpoint"]).await;
    let cp: Value = serde_json::from_str(line.trim()).unwrap();
    assert!(
        cp["signature"].is_string() && cp["seq"].as_i64().unwrap() > 0,
        "{line}"
    );
    let file = gw.config.checkpoint_file.to_str().unwrap().to_string();
    let out = cli
        .ok(
            Some(&admin),
            &[
                "audit",
                "verify",
                "--checkpoints",
                &file,
                "--public-key",
                public.trim(),
            ],
        )
        .await;
    assert!(
        out.contains("audit chain OK") && out.contains("OK"),
        "{out}"
    );
    // the wrong public key fails
    let other = cli.config.with_file_name("other.key");
    let wrong = cli
        .ok(None, &["audit", "keygen", "--out", other.to_str().unwrap()])
        .await;
    let (code, out, _) = cli
        .run(
            Some(&admin),
            &[
                "audit",
                "verify",
                "--checkpoints",
                &file,
                "--public-key",
                wrong.trim(),
            ],
        )
        .await;
    assert_ne!(code, 0);
    assert!(out.contains("checkpoint FAILED"), "{out}");
    // One review exported alone verifies offline with the public key, not with another key.
    let one = keydir.path().join("one-review.json");
    cli.ok(
        Some(&admin),
        &[
            "audit",
            "export",
            "--review",
            &review,
            "-O",
            one.to_str().unwrap(),
        ],
    )
    .await;
    let out = cli
        .ok(
            None,
            &[
                "audit",
                "verify",
                "--file",
                one.to_str().unwrap(),
                "--public-key",
                public.trim(),
            ],
        )
        .await;
    assert!(out.contains("export OK: 1 reviews"), "{out}");
    let (code, out, _) = cli
        .run(
            None,
            &[
                "audit",
                "verify",
                "--file",
                one.to_str().unwrap(),
                "--public-key",
                wrong.trim(),
            ],
        )
        .await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("export BROKEN"), "{out}");
    // And the log of checkpoints (two now: the export signed one) still chains.
    let out = cli
        .ok(
            Some(&admin),
            &[
                "audit",
                "verify",
                "--checkpoints",
                &file,
                "--public-key",
                public.trim(),
            ],
        )
        .await;
    assert!(out.contains("checkpoint log OK: 2 checkpoints"), "{out}");
    gw.stop().await;
}

/// Issue 15: `--overwrite` changes only the flags given, clearing needs an explicit flag, the CLI
/// prints before → after, and a group with no members is accepted with a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwrite_changes_only_what_is_given_and_says_what_changed() {
    let gw = TestGateway::spawn(Backend::Sqlite).await;
    let cli = Cli::new(&gw);
    let admin = gw.admin_token.clone();
    let t = Some(admin.as_str());
    gw.user("dev@example.com", &["dev"]).await;
    gw.user("dba@example.com", &["dba"]).await;
    let get = |name: &'static str| {
        let gw = &gw;
        async move {
            gw.admin("GET", &format!("/api/connections/{name}"), None)
                .await
                .1
        }
    };
    cli.ok(
        t,
        &[
            "admin",
            "create",
            "connection",
            "prod",
            "--type",
            "command",
            "--access-groups",
            "dev",
            "--reviewers",
            "dba",
            "--",
            "sh",
        ],
    )
    .await;
    // The pattern the docs teach: re-run with --overwrite and one new flag.
    let (code, out, err) = cli
        .run(
            t,
            &[
                "admin",
                "create",
                "connection",
                "prod",
                "--type",
                "command",
                "--overwrite",
                "--reviewers",
                "dba,security",
                "--",
                "sh",
            ],
        )
        .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        get("prod").await["access_groups"],
        serde_json::json!(["dev"]),
        "kept"
    );
    assert_eq!(
        get("prod").await["command"],
        serde_json::json!(["sh"]),
        "kept"
    );
    assert!(out.contains("reviewers: dba → dba,security"), "{out}");
    assert!(
        !out.contains("access_groups"),
        "unchanged fields are not listed: {out}"
    );
    assert!(
        err.contains("warning: reviewer group security has no members"),
        "{err}"
    );
    let (_, rule) = gw.admin("GET", "/api/rules/prod", None).await;
    assert_eq!(
        rule["approval_groups"],
        serde_json::json!(["dba", "security"])
    );

    // Clearing is explicit, and shown.
    let out = cli
        .ok(
            t,
            &[
                "admin",
                "create",
                "connection",
                "prod",
                "--type",
                "command",
                "--overwrite",
                "--clear-access-groups",
            ],
        )
        .await;
    assert!(
        out.contains("access_groups: dev → (none: every user)"),
        "{out}"
    );
    assert_eq!(get("prod").await["access_groups"], serde_json::json!([]));
    assert_eq!(
        get("prod").await["command"],
        serde_json::json!(["sh"]),
        "argv kept"
    );
    let (s, _) = gw.admin("GET", "/api/rules/prod", None).await;
    assert_eq!(s, 200, "the review rule is kept");
    let out = cli
        .ok(
            t,
            &[
                "admin",
                "create",
                "connection",
                "prod",
                "--type",
                "command",
                "--overwrite",
                "--clear-reviewers",
            ],
        )
        .await;
    assert!(out.contains("reviewers: dba,security → (no rule)"), "{out}");
    let (s, _) = gw.admin("GET", "/api/rules/prod", None).await;
    assert_eq!(s, 404, "removed on request");
    let (code, _, err) = cli
        .run(
            t,
            &[
                "admin",
                "create",
                "connection",
                "prod",
                "--type",
                "command",
                "--overwrite",
                "--access-groups",
                "dev",
                "--clear-access-groups",
            ],
        )
        .await;
    assert_ne!(code, 0, "contradictory flags are refused: {err}");
    let out = cli
        .ok(
            t,
            &[
                "admin",
                "create",
                "connection",
                "prod",
                "--type",
                "command",
                "--overwrite",
            ],
        )
        .await;
    assert!(out.contains("(nothing changed)"), "{out}");
    gw.stop().await;
}

/// Issue 15: `review show` and `review list` print hidden code points escaped, never raw, so a
/// terminal escape or a bidi override cannot make an approver read another command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_show_and_list_escape_hidden_code_points() {
    let gw = TestGateway::spawn(Backend::Sqlite).await;
    let cli = Cli::new(&gw);
    let dev = gw.user("dev@example.com", &["dev"]).await;
    let dba = gw.user("dba@example.com", &["dba"]).await;
    gw.command_connection("shell", &["sh"], &["dba"]).await;
    let command = "echo safe \u{1b}[2K\rrm -rf / #\u{202e}\u{2066}\u{200b}";
    let (s, r) = gw
        .call(
            "POST",
            "/api/exec",
            Some(&dev),
            Some(serde_json::json!({"connection": "shell", "command": command})),
        )
        .await;
    assert_eq!(s, 202, "{r}");
    let id = r["review"]["id"].as_str().unwrap().to_string();
    let show = cli.ok(Some(&dba), &["review", "show", &id]).await;
    let list = cli.ok(Some(&dba), &["review", "list"]).await;
    for out in [&show, &list] {
        for raw in ['\u{1b}', '\r', '\u{202e}', '\u{2066}', '\u{200b}'] {
            assert!(!out.contains(raw), "raw {raw:?} printed: {out:?}");
        }
    }
    assert!(
        show.contains("echo safe \\x1b[2K\\x0drm -rf / #\\u{202e}\\u{2066}\\u{200b}"),
        "{show}"
    );
    assert!(list.contains("\\x1b[2K"), "{list}");
    // A rejection reason made only of invisible characters is refused.
    let (code, _, err) = cli
        .run(
            Some(&dba),
            &["review", "reject", &id, "--reason", "\u{200b}\u{202e} "],
        )
        .await;
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("reason"), "{err}");
    gw.stop().await;
}

/// `warden audit log --follow -o json`: one OCSF line per entry, new entries as they are
/// written, and across a gateway restart it resumes where it stopped — nothing skipped, nothing
/// printed twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_log_follows_as_ocsf_lines_across_a_restart() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gw = TestGateway::spawn_with(Backend::Sqlite, |c| c.listen = port).await;
    let cli = Cli::new(&gw);
    let admin = gw.admin_token.clone();
    gw.user("dev@example.com", &["dev"]).await;
    let mut child = cli
        .cmd(Some(&admin), &["audit", "log", "--follow", "-o", "json"])
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seqs: Vec<i64> = Vec::new();
    let mut next = async || -> Value {
        let line = tokio::time::timeout(Duration::from_secs(30), out.next_line())
            .await
            .expect("a line in time")
            .unwrap()
            .expect("the follow is still running");
        serde_json::from_str(&line).unwrap()
    };
    let (_, entries) = gw.admin("GET", "/api/audit?limit=1000", None).await;
    let head = entries.as_array().unwrap().len();
    for _ in 0..head {
        let v = next().await;
        assert!(v["class_uid"].is_u64(), "{v}");
        seqs.push(v["metadata"]["sequence"].as_i64().unwrap());
    }
    let (config, dir) = gw.stop().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let gw = TestGateway::start(config, dir, None).await;
    gw.user("after-restart@example.com", &["dev"]).await;
    let (_, entries) = gw.admin("GET", "/api/audit?limit=1000", None).await;
    let total = entries.as_array().unwrap().len();
    let mut saw_user = false;
    while seqs.len() < total {
        let v = next().await;
        saw_user |= v["message"]
            .as_str()
            .is_some_and(|m| m.contains("after-restart@example.com"));
        seqs.push(v["metadata"]["sequence"].as_i64().unwrap());
    }
    assert!(saw_user, "the entry written after the restart was followed");
    let want: Vec<i64> = (1..=total as i64).collect();
    assert_eq!(seqs, want, "every entry once, in order");
    child.kill().await.ok();
    gw.stop().await;
}

/// `warden … | head` ends quietly when the reader stops reading: no panic message, the exit
/// status a shell reports for a closed pipe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pipe_ends_quietly() {
    let gw = TestGateway::spawn(Backend::Sqlite).await;
    let cli = Cli::new(&gw);
    let admin = gw.admin_token.clone();
    for i in 0..3 {
        gw.user(&format!("u{i}@example.com"), &["dev"]).await;
    }
    for args in [
        &["admin", "get", "users"][..],
        &["admin", "get", "users", "-o", "json"],
    ] {
        let mut child = cli.cmd(Some(&admin), args).spawn().unwrap();
        // The reader is gone before the answer arrives from the gateway.
        drop(child.stdout.take());
        let out = child.wait_with_output().await.unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(141), "{args:?}: {err}");
    }
    gw.stop().await;
}

/// `--no-wait` answers at once: the review id, or with `-o json` the review itself (typed
/// values: its status, outcome and what the caller may do).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_wait_prints_the_id_or_the_review_as_json() {
    let gw = TestGateway::spawn(Backend::Sqlite).await;
    let cli = Cli::new(&gw);
    let dev = gw.user("dev@example.com", &["dev"]).await;
    gw.command_connection("shell", &["sh"], &["dba"]).await;
    let id = cli
        .ok(
            Some(&dev),
            &["exec", "shell", "-i", "echo one", "--no-wait"],
        )
        .await;
    assert_eq!(id.trim().len(), 36, "{id}");
    let out = cli
        .ok(
            Some(&dev),
            &["exec", "shell", "-i", "echo two", "--no-wait", "-o", "json"],
        )
        .await;
    let v: Value = serde_json::from_str(&out).expect("the review as JSON");
    assert_eq!(v["status"], "PENDING", "{v}");
    assert_eq!(v["outcome"], "pending", "{v}");
    assert_eq!(v["command"], "echo two", "{v}");
    assert_eq!(v["actions"]["withdraw"], true, "{v}");
    assert_eq!(v["actions"]["approve"], false, "{v}");
    gw.stop().await;
}

/// `admin create connection … --test` says at once whether the gateway can reach the target
/// and log in, and what to do when it cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_connection_with_test_says_what_to_fix() {
    let gw = TestGateway::spawn(Backend::Sqlite).await;
    let cli = Cli::new(&gw);
    let admin = gw.admin_token.clone();
    let (code, _, err) = cli
        .run(
            Some(&admin),
            &[
                "admin",
                "create",
                "connection",
                "pg",
                "--type",
                "postgres",
                "--url",
                "postgres://postgres@127.0.0.1:5432/test?sslmode=disable",
                "--test",
            ],
        )
        .await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("connection test passed"), "{err}");
    let (code, _, err) = cli
        .run(
            Some(&admin),
            &[
                "admin",
                "create",
                "connection",
                "down",
                "--type",
                "postgres",
                "--url",
                "postgres://postgres:hunter22pw@127.0.0.1:1/test",
                "--test",
            ],
        )
        .await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("connection down was saved, but its test failed")
            && err.contains("--overwrite --test"),
        "{err}"
    );
    assert!(!err.contains("hunter22pw"), "{err}");
    gw.stop().await;
}
