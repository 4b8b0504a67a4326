//! Test harness shared by the integration tests of every crate: a real gateway on port 0 with a
//! temp data dir, SQLite or a fresh PostgreSQL database, and typed HTTP helpers.
//!
//! PostgreSQL is required, not optional: when it is unreachable the harness panics with a
//! message saying so (tests fail loudly, they never skip).

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::app::Clock;
use crate::config::Config;
use crate::server::{self, Running};

/// Which store the gateway under test uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub const ADMIN_EMAIL: &str = "admin@warden.test";
pub const ADMIN_PASSWORD: &str = "admin-password-1";

/// The admin URL of the test PostgreSQL (`WARDEN_TEST_PG_URL`, default local trust auth).
pub fn pg_admin_url() -> String {
    std::env::var("WARDEN_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Creates a fresh PostgreSQL database and returns its URL. Panics if PostgreSQL is down.
pub async fn fresh_pg_database(prefix: &str) -> String {
    use sqlx::Connection;
    let admin = pg_admin_url();
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL is required for this test and is unreachable at {admin}: {e}")
        });
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("creating test database {name}: {e}"));
    let base = admin
        .rsplit_once('/')
        .map(|(b, _)| b.to_string())
        .unwrap_or(admin);
    format!("{base}/{name}")
}

/// A temp dir only its owner can enter (0700), fit to be a gateway's data dir.
pub fn private_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    make_private(dir.path());
    dir
}

#[cfg(unix)]
fn make_private(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if dir.is_dir() {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .expect("chmod 700 the test data dir");
    }
}

#[cfg(not(unix))]
fn make_private(_dir: &std::path::Path) {}

/// A controllable clock for tests, starting at the real time: frozen ([`FakeClock::new`]:
/// time moves only by [`FakeClock::advance`]) or flowing with real time plus whatever was
/// advanced ([`FakeClock::flowing`], what a [`TestGateway`] gets by default, so a test jumps
/// over a timeout instead of sleeping through it while everything else still sees time pass).
pub struct FakeClock(std::sync::Mutex<FakeTime>);

struct FakeTime {
    at: OffsetDateTime,
    /// Flowing: real time elapsed since this instant is added to `at`.
    since: Option<std::time::Instant>,
}

impl FakeClock {
    pub fn new() -> Arc<FakeClock> {
        Arc::new(FakeClock(std::sync::Mutex::new(FakeTime {
            at: OffsetDateTime::now_utc(),
            since: None,
        })))
    }
    pub fn flowing() -> Arc<FakeClock> {
        Arc::new(FakeClock(std::sync::Mutex::new(FakeTime {
            at: OffsetDateTime::now_utc(),
            since: Some(std::time::Instant::now()),
        })))
    }
    pub fn advance(&self, secs: i64) {
        if let Ok(mut t) = self.0.lock() {
            t.at += time::Duration::seconds(secs);
        }
    }
}

impl Clock for FakeClock {
    fn now(&self) -> OffsetDateTime {
        self.0
            .lock()
            .map(|t| match t.since {
                Some(s) => t.at + time::Duration::try_from(s.elapsed()).unwrap_or_default(),
                None => t.at,
            })
            .unwrap_or_else(|_| OffsetDateTime::now_utc())
    }
}

pub struct TestGateway {
    /// The gateway's clock: fake unless started with [`TestGateway::spawn_real_time`], so a
    /// test jumps time with `gw.clock().advance(…)` instead of sleeping.
    clock: Option<Arc<FakeClock>>,
    pub running: Running,
    pub base: String,
    pub admin_token: String,
    pub dir: Arc<tempfile::TempDir>,
    pub config: Config,
    http: reqwest::Client,
}

impl TestGateway {
    pub fn config(dir: PathBuf, backend_url: Option<String>) -> Config {
        let mut c = Config::for_data_dir(dir);
        if let Some(u) = backend_url {
            c.database_url = warden_core::secret::Secret::new(u);
        }
        c.admin_email = ADMIN_EMAIL.into();
        c.admin_password = Some(warden_core::secret::Secret::new(ADMIN_PASSWORD.into()));
        c.secret_key = Some(warden_core::secret::Secret::new(
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".into(),
        ));
        c
    }

    pub async fn spawn(backend: Backend) -> TestGateway {
        Self::spawn_with(backend, |_| {}).await
    }

    /// A gateway on a fresh store, its config tweaked, on a fake clock.
    pub async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> TestGateway {
        let (config, dir) = Self::fresh(backend, tweak).await;
        Self::start(config, dir, None).await
    }

    /// A gateway on the real clock, for the few tests whose point is a race against real time
    /// (an approval arriving around a deadline the sweeper enforces).
    pub async fn spawn_real_time(backend: Backend, tweak: impl FnOnce(&mut Config)) -> TestGateway {
        let (config, dir) = Self::fresh(backend, tweak).await;
        Self::launch(config, dir, None).await
    }

    async fn fresh(
        backend: Backend,
        tweak: impl FnOnce(&mut Config),
    ) -> (Config, Arc<tempfile::TempDir>) {
        let dir = Arc::new(private_tempdir());
        let url = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(fresh_pg_database("warden_gw").await),
        };
        let mut config = Self::config(dir.path().to_path_buf(), url);
        tweak(&mut config);
        (config, dir)
    }

    /// The fake clock this gateway reads (panics for a real-time gateway).
    pub fn clock(&self) -> &Arc<FakeClock> {
        self.clock
            .as_ref()
            .expect("this gateway runs on the real clock (spawn_real_time)")
    }

    /// Starts a gateway on an existing config/data dir (restart tests reuse the dir). The data
    /// dir is made private (0700) first, as the gateway requires: `tempfile` creates dirs with
    /// the umask's mode.
    /// `clock` is the fake clock to read (a new [`FakeClock::flowing`] one when `None`).
    pub async fn start(
        config: Config,
        dir: Arc<tempfile::TempDir>,
        clock: Option<Arc<FakeClock>>,
    ) -> TestGateway {
        Self::launch(config, dir, Some(clock.unwrap_or_else(FakeClock::flowing))).await
    }

    async fn launch(
        config: Config,
        dir: Arc<tempfile::TempDir>,
        clock: Option<Arc<FakeClock>>,
    ) -> TestGateway {
        make_private(&config.data_dir);
        let running = match &clock {
            Some(c) => server::start_with_clock(config.clone(), c.clone() as Arc<dyn Clock>).await,
            None => server::start(config.clone()).await,
        }
        .expect("gateway starts");
        let base = format!("http://{}", running.http_addr);
        let http = reqwest::Client::new();
        let resp: Value = http
            .post(format!("{base}/api/login"))
            .json(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
            .send()
            .await
            .expect("login")
            .json()
            .await
            .expect("login json");
        let admin_token = resp["token"].as_str().expect("admin token").to_string();
        TestGateway {
            clock,
            running,
            base,
            admin_token,
            dir,
            config,
            http,
        }
    }

    /// Stops the gateway, returning what is needed to start it again on the same store.
    pub async fn stop(self) -> (Config, Arc<tempfile::TempDir>) {
        let config = self.config.clone();
        let dir = self.dir.clone();
        self.running.stop().await;
        (config, dir)
    }

    /// `(status, json body)` of an API call with an optional token.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(m, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(method, path, Some(&self.admin_token.clone()), body)
            .await
    }

    /// Creates a user with groups and returns a token for them.
    pub async fn user(&self, email: &str, groups: &[&str]) -> String {
        self.user_as(email, groups, false).await
    }

    /// Creates a read-only auditor (in `groups`, which must grant it nothing) and returns a
    /// token for them.
    pub async fn auditor(&self, email: &str, groups: &[&str]) -> String {
        self.user_as(email, groups, true).await
    }

    async fn user_as(&self, email: &str, groups: &[&str], auditor: bool) -> String {
        let (s, b) = self
            .admin(
                "POST",
                "/api/users",
                Some(json!({"email": email, "groups": groups, "auditor": auditor})),
            )
            .await;
        assert_eq!(s, 201, "create user {email}: {b}");
        assert_eq!(b["auditor"], auditor, "{b}");
        let (s, b) = self
            .admin("POST", "/api/tokens", Some(json!({"user": email})))
            .await;
        assert_eq!(s, 201, "token for {email}: {b}");
        b["token"].as_str().expect("token").to_string()
    }

    /// `POST /api/exec` as `token`: `(status, body)`.
    pub async fn exec(&self, token: &str, connection: &str, command: &str) -> (u16, Value) {
        self.call(
            "POST",
            "/api/exec",
            Some(token),
            Some(json!({"connection": connection, "command": command})),
        )
        .await
    }

    /// A command that must be held for review: its review id.
    pub async fn held(&self, token: &str, connection: &str, command: &str) -> String {
        let (s, r) = self.exec(token, connection, command).await;
        assert_eq!(s, 202, "{command:?} on {connection} should be held: {r}");
        r["review"]["id"].as_str().expect("review id").to_string()
    }

    /// `PUT /api/reviews/{id}/{action}` as `token` (`approve`, `reject`, `withdraw`, `revoke`)
    /// with an optional body: `(status, body)`.
    pub async fn decide(
        &self,
        token: &str,
        id: &str,
        action: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.call(
            "PUT",
            &format!("/api/reviews/{id}/{action}"),
            Some(token),
            body,
        )
        .await
    }

    /// Approves as `token`, which must succeed: the review after the approval.
    pub async fn approve(&self, token: &str, id: &str) -> Value {
        let (s, r) = self.decide(token, id, "approve", None).await;
        assert_eq!(s, 200, "approve {id}: {r}");
        r
    }

    /// Rejects as `token` with `reason`, which must succeed.
    pub async fn reject(&self, token: &str, id: &str, reason: &str) -> Value {
        let (s, r) = self
            .decide(token, id, "reject", Some(json!({"reason": reason})))
            .await;
        assert_eq!(s, 200, "reject {id}: {r}");
        r
    }

    /// Revokes an approved window as `token` with `reason`, which must succeed.
    pub async fn revoke(&self, token: &str, id: &str, reason: &str) -> Value {
        let (s, r) = self
            .decide(token, id, "revoke", Some(json!({"reason": reason})))
            .await;
        assert_eq!(s, 200, "revoke {id}: {r}");
        r
    }

    /// One pass of the sweeper now (expiries, window ends, stale claims), as the background
    /// task would run it.
    pub async fn sweep(&self) {
        self.running.app.sweep().await.expect("sweep");
    }

    /// Long-polls the review until it settles (or 10 s pass): the review as `token` sees it.
    pub async fn wait(&self, token: &str, id: &str) -> Value {
        let (s, r) = self
            .call(
                "GET",
                &format!("/api/reviews/{id}/wait?timeout=10"),
                Some(token),
                None,
            )
            .await;
        assert_eq!(s, 200, "wait {id}: {r}");
        r
    }

    /// Creates a `command` connection running `sh -c 'CMD'`-style argv.
    pub async fn command_connection(&self, name: &str, argv: &[&str], reviewers: &[&str]) {
        let (s, b) = self
            .admin("POST", "/api/connections", Some(json!({"name": name, "type": "command", "command": argv, "reviewers": reviewers})))
            .await;
        assert_eq!(s, 201, "create connection {name}: {b}");
    }
}

/// Polls `probe` every 50 ms until it answers `Some`, for at most 10 s (then panics naming
/// `what`): for what the gateway records on its own time (a proxied session's statements and
/// end, a held statement's outcome), instead of a fixed sleep that is too long or too short.
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "waited 10 s for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Runs each named `async fn(Backend)` on both stores, as tests `NAME::sqlite` and
/// `NAME::postgres`: every gateway behaviour holds on the embedded default and on PostgreSQL.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() { super::$name($crate::testing::Backend::Sqlite).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() { super::$name($crate::testing::Backend::Postgres).await }
        }
    )*};
}
