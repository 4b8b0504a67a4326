//! Shared harness for the proxy's integration tests: a scriptable in-memory [`ProxyBackend`],
//! a proxy spawned on `127.0.0.1:0` in front of the real PostgreSQL at 127.0.0.1:5432
//! (trust auth, user `postgres`, database `test`), and helpers to run real clients.
//!
//! PostgreSQL being unreachable is a test failure, never a skip.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::FutureExt;
use tokio::sync::{oneshot, watch};
use uuid::Uuid;
use warden_core::secret::Secret;
use warden_pgwire::{
    AuthFailure, HeldOutcome, Login, ProxyBackend, ProxyConfig, SessionGrant, Statement,
    StatementDecision, StatementLog, Unrecorded, Upstream, UpstreamTls,
};

pub const USER: &str = "alice@example.com";
pub const TOKEN: &str = "wdn_test_token";
pub const CONNECTION: &str = "prod-db";
pub const PG_HOST: &str = "127.0.0.1";
pub const PG_PORT: u16 = 5432;

/// What the review backend answers, in order, for each statement it is asked about.
#[derive(Debug, Clone)]
pub enum Script {
    /// Allowed as a read: the server runs it read-only (the classifier's answer, which the
    /// server's read-only transaction backs; also "classifier off" when used for writes).
    Allow,
    /// Allowed to write (as the gateway allows an approved statement).
    AllowWrite,
    Deny(String),
    /// Held, then decided after the delay.
    Held(Duration, HeldOutcome),
}

#[derive(Default)]
pub struct TestBackend {
    pub review: bool,
    /// Decisions by statement: first script whose needle the statement contains.
    pub rules: Mutex<Vec<(String, Script)>>,
    pub asked: Mutex<Vec<String>>,
    pub logs: Mutex<Vec<StatementLog>>,
    pub batches: Mutex<Vec<usize>>,
    pub ended: Mutex<Vec<Uuid>>,
    pub auth_calls: Mutex<u32>,
    pub ends_in: Option<Duration>,
    pub upstream_tls: Option<UpstreamTls>,
    /// Replaces the real PostgreSQL as upstream (fake servers in tests).
    pub upstream: Option<Upstream>,
    /// Revoke switches of live sessions, newest last.
    pub terminators: Mutex<VecDeque<watch::Sender<Option<String>>>>,
    /// While set, `record` fails as a store that is away would.
    pub refuse_records: std::sync::atomic::AtomicBool,
    /// While set, `start_session` fails (the session's start cannot be recorded).
    pub refuse_starts: std::sync::atomic::AtomicBool,
    /// While set, logins are granted under statement review whatever `review` says (one
    /// upstream, sessions with and without review, as a JIT window and a rule give).
    pub review_from_now: std::sync::atomic::AtomicBool,
    /// Sessions whose start was recorded.
    pub started: Mutex<Vec<Uuid>>,
}

impl TestBackend {
    pub fn allow_all() -> Self {
        Self::default()
    }

    pub fn reviewing(rules: Vec<(&str, Script)>) -> Self {
        Self {
            review: true,
            rules: Mutex::new(rules.into_iter().map(|(n, s)| (n.to_string(), s)).collect()),
            ..Self::default()
        }
    }

    pub fn logs(&self) -> Vec<StatementLog> {
        self.logs.lock().unwrap().clone()
    }

    /// Waits until a statement containing `needle` has been recorded (the audit writer batches).
    pub async fn wait_log(&self, needle: &str) -> StatementLog {
        for _ in 0..100 {
            if let Some(l) = self
                .logs()
                .into_iter()
                .find(|l| l.statement.contains(needle))
            {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "no audit record containing {needle:?}; have {:#?}",
            self.logs()
        );
    }
}

impl ProxyBackend for TestBackend {
    async fn authenticate(&self, login: Login) -> Result<SessionGrant, AuthFailure> {
        *self.auth_calls.lock().unwrap() += 1;
        if login.user != USER || login.password.expose() != TOKEN {
            return Err(AuthFailure::BadCredentials);
        }
        if login.database != CONNECTION {
            return Err(AuthFailure::Denied(format!(
                "no access to connection \"{}\"",
                login.database
            )));
        }
        let (tx, rx) = watch::channel(None);
        self.terminators.lock().unwrap().push_back(tx);
        Ok(SessionGrant {
            session_id: Uuid::new_v4(),
            user: login.user,
            connection: login.database,
            upstream: self.upstream.clone().unwrap_or(Upstream {
                host: PG_HOST.into(),
                port: PG_PORT,
                user: "postgres".into(),
                password: Some(Secret::new("unused-under-trust".into())),
                database: "test".into(),
                tls: self.upstream_tls.clone().unwrap_or(UpstreamTls::Disable),
            }),
            review_statements: self.review
                || self
                    .review_from_now
                    .load(std::sync::atomic::Ordering::SeqCst),
            review_id: None,
            ends_at: self.ends_in.map(|d| SystemTime::now() + d),
            terminate: rx,
        })
    }

    async fn start_session(&self, grant: &SessionGrant) -> Result<(), String> {
        if self.refuse_starts.load(std::sync::atomic::Ordering::SeqCst) {
            return Err("the test store is away".into());
        }
        self.started.lock().unwrap().push(grant.session_id);
        Ok(())
    }

    async fn authorize(
        &self,
        _grant: &SessionGrant,
        statement: &Statement<'_>,
    ) -> StatementDecision {
        let statement = statement.to_string();
        self.asked.lock().unwrap().push(statement.clone());
        let script = self
            .rules
            .lock()
            .unwrap()
            .iter()
            .find(|(needle, _)| statement.contains(needle.as_str()))
            .map(|(_, s)| s.clone())
            .unwrap_or(Script::Allow);
        match script {
            Script::Allow => StatementDecision::Allow {
                review_id: None,
                read_write: false,
            },
            Script::AllowWrite => StatementDecision::Allow {
                review_id: None,
                read_write: true,
            },
            Script::Deny(message) => StatementDecision::Deny { message },
            Script::Held(after, outcome) => {
                let id = Uuid::new_v4();
                let (tx, rx) = oneshot::channel();
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    let _ = tx.send(outcome);
                });
                StatementDecision::Held {
                    review_id: Some(id),
                    review_url: format!("http://warden.test/reviews/{id}"),
                    outcome: async move { rx.await.unwrap_or(HeldOutcome::Expired) }.boxed(),
                }
            }
        }
    }

    async fn record(&self, batch: Vec<StatementLog>) -> Result<(), Unrecorded> {
        if self
            .refuse_records
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(Unrecorded {
                batch,
                reason: "test: the store is away".into(),
            });
        }
        self.batches.lock().unwrap().push(batch.len());
        self.logs.lock().unwrap().extend(batch);
        Ok(())
    }

    async fn session_ended(&self, grant: &SessionGrant) {
        self.ended.lock().unwrap().push(grant.session_id);
    }
}

pub struct Proxy {
    pub addr: SocketAddr,
    pub backend: Arc<TestBackend>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Proxy {
    pub async fn start(backend: TestBackend) -> Proxy {
        Self::start_with(backend, ProxyConfig::default()).await
    }

    pub async fn start_with(backend: TestBackend, config: ProxyConfig) -> Proxy {
        require_postgres().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let backend = Arc::new(backend);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(warden_pgwire::serve(
            listener,
            backend.clone(),
            config,
            async move {
                let _ = stopped.await;
            },
        ));
        Proxy {
            addr,
            backend,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), t)
                .await
                .expect("proxy stops")
                .unwrap()
                .unwrap();
        }
    }

    /// A libpq connection string through the proxy.
    pub fn conninfo(&self, sslmode: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={USER} password={TOKEN} dbname={CONNECTION} sslmode={sslmode} connect_timeout=10",
            self.addr.port()
        )
    }

    /// tokio-postgres through the proxy (no TLS).
    pub async fn connect(&self) -> tokio_postgres::Client {
        let (client, conn) =
            tokio_postgres::connect(&self.conninfo("disable"), tokio_postgres::NoTls)
                .await
                .unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }
}

/// Fails the test loudly when the real PostgreSQL is not there.
pub async fn require_postgres() {
    let direct = format!(
        "host={PG_HOST} port={PG_PORT} user=postgres dbname=test sslmode=disable connect_timeout=5"
    );
    match tokio_postgres::connect(&direct, tokio_postgres::NoTls).await {
        Ok((_c, conn)) => drop(conn),
        Err(e) => panic!(
            "PostgreSQL must be running at {PG_HOST}:{PG_PORT} (trust auth, user postgres, database test) \
             for these tests: {e}"
        ),
    }
}

/// A direct connection to PostgreSQL (for setup and checks).
pub async fn direct() -> tokio_postgres::Client {
    let direct = format!("host={PG_HOST} port={PG_PORT} user=postgres dbname=test sslmode=disable");
    let (client, conn) = tokio_postgres::connect(&direct, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// Runs a command to completion off the async runtime, feeding `stdin`.
pub async fn run(mut cmd: Command, stdin: &str) -> Output {
    let stdin = stdin.to_string();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        if let Some(mut i) = child.stdin.take() {
            let _ = i.write_all(stdin.as_bytes());
        }
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

/// `psql` through the proxy with the given sslmode; `-v ON_ERROR_STOP=1`, quiet, unaligned.
pub fn psql(proxy: &Proxy, sslmode: &str) -> Command {
    let mut c = Command::new("psql");
    c.arg(proxy.conninfo(sslmode))
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]);
    c
}

pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A unique table name per test run.
pub fn table(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        Uuid::new_v4().simple().to_string().get(..8).unwrap_or("x")
    )
}

/// A StartupMessage for protocol 3.0 with `user`, `database` and `extra` parameters.
pub fn startup_with(user: &str, db: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut body = vec![0, 3, 0, 0];
    for (k, v) in [("user", user), ("database", db)].iter().chain(extra) {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut m = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    m.extend(body);
    m
}

pub fn startup(user: &str, db: &str) -> Vec<u8> {
    startup_with(user, db, &[])
}

/// One typed frontend message.
pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// Reads until the server closes; returns everything received.
pub async fn read_all(s: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    out
}

/// Reads messages up to and including the next `ReadyForQuery` (or until the server closes).
pub async fn read_until_ready(s: &mut tokio::net::TcpStream) -> Vec<(u8, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    loop {
        let mut h = [0u8; 5];
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut h)).await;
        if !matches!(read, Ok(Ok(_))) {
            return got;
        }
        let len = i32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize - 4;
        let mut body = vec![0u8; len];
        if s.read_exact(&mut body).await.is_err() {
            return got;
        }
        let done = h[0] == b'Z';
        got.push((h[0], body));
        if done {
            return got;
        }
    }
}

/// Logs in over a raw socket with `extra` startup parameters; returns the socket and what
/// the proxy answered up to the first `ReadyForQuery` (or its refusal).
pub async fn raw_login(
    proxy: &Proxy,
    extra: &[(&str, &str)],
) -> (tokio::net::TcpStream, Vec<(u8, Vec<u8>)>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&startup_with(USER, CONNECTION, extra))
        .await
        .unwrap();
    let mut b = [0u8; 9];
    s.read_exact(&mut b).await.unwrap();
    assert_eq!(
        &b[..],
        &[b'R', 0, 0, 0, 8, 0, 0, 0, 3],
        "cleartext password request"
    );
    s.write_all(&message(b'p', format!("{TOKEN}\0").as_bytes()))
        .await
        .unwrap();
    let got = read_until_ready(&mut s).await;
    (s, got)
}

/// Logs in over a raw socket and returns it positioned after the first ReadyForQuery.
pub async fn raw_session(proxy: &Proxy) -> tokio::net::TcpStream {
    let (s, got) = raw_login(proxy, &[]).await;
    assert_eq!(got.last().map(|m| m.0), Some(b'Z'), "{got:?}");
    s
}

pub fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// The fields of an ErrorResponse/NoticeResponse body as text, for assertions.
pub fn error_text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).replace('\0', " | ")
}

/// Frontend messages of the extended protocol.
pub mod ext {
    use super::message;

    pub fn parse(name: &str, sql: &str) -> Vec<u8> {
        let mut b = name.as_bytes().to_vec();
        b.push(0);
        b.extend_from_slice(sql.as_bytes());
        b.extend_from_slice(&[0, 0, 0]);
        message(b'P', &b)
    }

    pub fn bind(portal: &str, statement: &str) -> Vec<u8> {
        let mut b = portal.as_bytes().to_vec();
        b.push(0);
        b.extend_from_slice(statement.as_bytes());
        b.push(0);
        b.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        message(b'B', &b)
    }

    pub fn execute(portal: &str) -> Vec<u8> {
        let mut b = portal.as_bytes().to_vec();
        b.extend_from_slice(&[0, 0, 0, 0, 0]);
        message(b'E', &b)
    }

    pub fn sync() -> Vec<u8> {
        message(b'S', &[])
    }

    pub fn query(sql: &str) -> Vec<u8> {
        let mut b = sql.as_bytes().to_vec();
        b.push(0);
        message(b'Q', &b)
    }
}
