//! The data dir is private (issue 15): a fresh start creates it 0700 with every file 0600, and
//! every start refuses a data dir (or a file in it) that group or others can access, naming the
//! `chmod` that fixes it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::json;
use warden_gateway::server;
use warden_gateway::testing::{Backend, TestGateway};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn chmod(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

async fn start_error(config: warden_gateway::config::Config) -> String {
    match server::start(config).await {
        Ok(running) => {
            running.stop().await;
            panic!("the gateway started on a data dir others can read");
        }
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_start_creates_a_private_data_dir() {
    let base = tempfile::tempdir().unwrap();
    chmod(base.path(), 0o755);
    let data = base.path().join("data");
    let mut config = TestGateway::config(data.clone(), None);
    config.secret_key = None; // the key file is created in the data dir
    let running = server::start(config.clone()).await.expect("first start");
    // Something that writes the store (and so its WAL).
    let app = running.app.clone();
    let admin = app
        .find_user(warden_gateway::testing::ADMIN_EMAIL)
        .await
        .unwrap()
        .unwrap();
    app.create_user(
        &admin,
        serde_json::from_value(json!({"email": "dev@example.com", "groups": ["dev"]})).unwrap(),
    )
    .await
    .unwrap();
    running.stop().await;

    assert_eq!(mode(&data), 0o700, "data dir");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        names.push(path.file_name().unwrap().to_string_lossy().into_owned());
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    for expected in ["warden.db", "secret.key"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    // The next start checks its own files and accepts them.
    server::start(config).await.expect("restart").stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_on_a_data_dir_others_can_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let config = TestGateway::config(data.clone(), None);
    chmod(&data, 0o755);
    let err = start_error(config.clone()).await;
    assert!(
        err.contains(&format!("chmod 700 {}", data.display())),
        "names the fix: {err}"
    );
    assert!(err.contains("mode 0755"), "{err}");
    assert!(
        !data.join("warden.db").exists() || mode(&data.join("warden.db")) == 0o600,
        "nothing readable was created"
    );

    chmod(&data, 0o700);
    let stray = data.join("secret.key");
    std::fs::write(&stray, "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=").unwrap();
    chmod(&stray, 0o644);
    let err = start_error(config.clone()).await;
    assert!(
        err.contains(&format!("chmod 600 {}", stray.display())),
        "names the fix: {err}"
    );

    chmod(&stray, 0o600);
    server::start(config)
        .await
        .expect("starts once fixed")
        .stop()
        .await;
}

/// A command connection's program cannot reach the gateway: as root the gateway runs it as the
/// unprivileged exec user (and says so in /api/health); it cannot read the data dir (store,
/// key) nor the gateway's environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_run_without_access_to_the_store_the_key_or_the_gateway() {
    let gw = TestGateway::spawn(Backend::Sqlite).await;
    let (s, health) = gw.call("GET", "/api/health", None, None).await;
    assert_eq!(s, 200);
    let root = rustix::process::geteuid().is_root();
    assert_eq!(health["exec_isolation"]["isolated"], root, "{health}");
    let dir = gw.dir.path().display().to_string();
    let script = format!(
        "id -u; ls {dir} >/dev/null 2>&1 && echo data-dir-readable || echo no-data-dir; \
         tr '\\0' '\\n' < /proc/$PPID/environ 2>/dev/null | grep -c WARDEN || echo no-environ"
    );
    gw.command_connection("box", &["sh", "-c", &script], &[])
        .await;
    let (s, r) = gw
        .admin(
            "POST",
            "/api/exec",
            Some(json!({"connection": "box", "command": "go"})),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let out = r["session"]["output"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(out.contains("no-environ"), "{r}");
    if root {
        assert_eq!(health["exec_isolation"]["user"], "warden-exec", "{health}");
        assert!(!out.starts_with("0\n"), "not root: {out}");
        assert!(out.contains("no-data-dir"), "{out}");
    } else {
        let detail = health["exec_isolation"]["detail"]
            .as_str()
            .unwrap_or_default();
        assert!(detail.contains("NOT isolated"), "{health}");
    }
    gw.stop().await;
}
