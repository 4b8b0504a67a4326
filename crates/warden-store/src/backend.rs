//! Backend plumbing shared by every store method: the two pools, opening and migrating them,
//! a backend-neutral query value ([`Q`]) that binds the same SQL text for either driver, and
//! write transactions ([`WriteTx`]) that serialise on the audit head and append the audit chain
//! before they commit.
//!
//! # Why not generics or the `Any` driver
//! sqlx's generic bounds (`for<'c> &'c mut DB::Connection: Executor<'c>`, `Encode + Type` per
//! value…) leak into every function, and the `Any` driver lacks types we rely on. Instead, SQL
//! arguments are collected as [`Val`]s and bound by a small macro expanded once per driver, and
//! rows decode into `#[derive(FromRow)]` structs that implement `FromRow` for both row types.
//! All SQL text is shared: `$1` placeholders work in sqlx's SQLite driver too.

use std::borrow::Cow;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{FromRow, Postgres, Sqlite, Transaction};
use time::OffsetDateTime;
use tokio::sync::OwnedMutexGuard;
use uuid::Uuid;
use warden_core::audit::{AuditEvent, seal_text};

use crate::{Result, StoreError};

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a SQLite writer waits for the write lock before failing with `SQLITE_BUSY`.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a caller waits for a pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
/// Rows per multi-row INSERT: well under SQLite's and PostgreSQL's bind-parameter limits.
const INSERT_CHUNK: usize = 100;

/// The two pools. Cloning is cheap (pools are reference-counted).
#[derive(Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A store's pool and its group-commit writer. Cloning is cheap.
#[derive(Clone)]
pub(crate) struct Db {
    pool: Pool,
    writer: Arc<Writer>,
}

impl Db {
    /// Opens the database named by `url`, creating a SQLite file (and its directory) if needed,
    /// and runs the migrations of that backend.
    pub(crate) async fn connect(url: &str) -> Result<Db> {
        let pool = if url.starts_with("sqlite:") {
            connect_sqlite(url).await?
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            connect_postgres(url).await?
        } else {
            return Err(StoreError::Invalid(format!(
                "unsupported database URL scheme in {:?}: use sqlite://PATH, sqlite::memory: or postgres://USER@HOST/DB",
                url.split(':').next().unwrap_or_default()
            )));
        };
        Ok(Db {
            pool,
            writer: Arc::new(Writer::default()),
        })
    }

    pub(crate) fn name(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    /// Writes committed and the transactions that committed them, since the store was opened
    /// (more writes than commits: group commit at work).
    pub(crate) fn write_stats(&self) -> (u64, u64) {
        (
            self.writer.parts.load(Ordering::Relaxed),
            self.writer.commits.load(Ordering::Relaxed),
        )
    }

    /// Closes the pool (connections are closed once returned).
    pub(crate) async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }

    /// A pooled connection for reads outside a transaction. `ctx` prefixes every error.
    pub(crate) async fn read(&self, ctx: impl Into<Cow<'static, str>>) -> Result<Handle> {
        let ctx = ctx.into();
        let inner = match &self.pool {
            Pool::Sqlite(p) => p.acquire().await.map(Inner::SqlitePool),
            Pool::Postgres(p) => p.acquire().await.map(Inner::PgPool),
        };
        match inner {
            Ok(inner) => Ok(Handle { inner, ctx }),
            Err(source) => Err(StoreError::Database {
                context: ctx.into_owned(),
                source,
            }),
        }
    }

    /// Begins a write: a part of this process's current group commit (see [`Writer`]), or the
    /// first part of a new one. A new group's transaction first takes the `audit_head` row (row
    /// lock on PostgreSQL; the database write lock on SQLite, taken up front so a deferred
    /// transaction never has to upgrade a read lock and fail with `SQLITE_BUSY`). Every write
    /// therefore runs one at a time, which keeps the audit chain a single ordered list across
    /// tasks and gateway replicas.
    pub(crate) async fn write(&self, ctx: impl Into<Cow<'static, str>>) -> Result<WriteTx> {
        let ctx = ctx.into();
        let mut state = self.writer.lock().await;
        if state.batch.as_ref().is_some_and(|b| b.rollback_pending) {
            state.undo_failed_part().await;
        }
        if state.batch.is_none() {
            let batch = self.begin_batch(ctx.clone(), state.next_id).await?;
            state.next_id += 1;
            state.batch = Some(batch);
        }
        let Some(batch) = state.batch.as_mut() else {
            return Err(StoreError::Corrupt(format!(
                "{ctx}: the write batch vanished"
            )));
        };
        let savepoint = batch.parts > 0;
        let inner = std::mem::replace(&mut batch.conn, Inner::Gone);
        let (head_seq, head_hash, head_at_ms) =
            (batch.head_seq, batch.head_hash.clone(), batch.head_at_ms);
        let mut tx = WriteTx {
            h: Handle { inner, ctx },
            head_seq,
            head_hash,
            head_at_ms,
            pending: Vec::new(),
            savepoint,
            state: Some(state),
            writer: self.writer.clone(),
        };
        if savepoint {
            // On failure, dropping `tx` hands the connection back marked for rollback.
            tx.h.execute(q("SAVEPOINT warden_part")).await?;
        }
        Ok(tx)
    }

    /// A new group's transaction, holding the audit head.
    async fn begin_batch(&self, ctx: Cow<'static, str>, id: u64) -> Result<Batch> {
        let inner = match &self.pool {
            Pool::Sqlite(p) => p.begin().await.map(Inner::SqliteTx),
            Pool::Postgres(p) => p.begin().await.map(Inner::PgTx),
        };
        let mut h = match inner {
            Ok(inner) => Handle { inner, ctx },
            Err(source) => {
                return Err(StoreError::Database {
                    context: ctx.into_owned(),
                    source,
                });
            }
        };
        let head: Option<(i64, String, i64)> = h
            .fetch_optional(q(
                "UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash, at_ms",
            ))
            .await?;
        let Some((head_seq, head_hash, head_at_ms)) = head else {
            return Err(StoreError::Corrupt(format!(
                "{}: the audit_head row is missing (the audit log cannot be extended)",
                h.ctx
            )));
        };
        Ok(Batch {
            id,
            conn: h.inner,
            head_seq,
            head_hash,
            head_at_ms,
            parts: 0,
            rollback_pending: false,
            outcome: Arc::new(OnceLock::new()),
        })
    }
}

// ---- group commit -------------------------------------------------------------------------

/// Most writes that share one commit: bounds how long the first one waits for the rest.
const MAX_BATCH_PARTS: usize = 64;

/// Group commit. Writes run one at a time (they all take the audit head), and on SQLite with
/// `synchronous = FULL` each commit is a disk flush: committing each write alone made the
/// flush, not the work, the gateway's ceiling (measured: ~6 commits per held → approved →
/// executed cycle, 127 cycles/s on two cores). So writes that arrive while another is running
/// join its transaction, each inside a savepoint, and commit together:
///
/// - a write that finds no group begins one (no savepoint: if it fails, the group is only it);
/// - a write joining a group runs inside `SAVEPOINT warden_part`; if it fails or is dropped,
///   that savepoint is rolled back before anything else runs, so its rows and audit entries
///   vanish and the others' stay;
/// - a finished part commits the group at once when no other write is waiting (a lone write
///   costs what it did before) or the group is full; otherwise it lets the waiting writes
///   join and waits for the group's commit, which the last of them (or it, taking the lock
///   again) performs;
/// - `commit` returns only after the group's commit is durable, and every part of a group
///   reports the same outcome: all committed, or none.
///
/// The commit itself runs in its own task, so a caller that gives up (a closed HTTP request)
/// never leaves the others of its group without an outcome.
#[derive(Default)]
pub(crate) struct Writer {
    state: Arc<tokio::sync::Mutex<WriterState>>,
    /// Writes waiting for the lock (a finished part commits at once when this is zero).
    waiting: AtomicUsize,
    /// Writes finished (parts) and transactions committed, since the store was opened.
    parts: AtomicU64,
    commits: AtomicU64,
}

impl Writer {
    async fn lock(&self) -> OwnedMutexGuard<WriterState> {
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
        self.state.clone().lock_owned().await
    }
}

#[derive(Default)]
struct WriterState {
    batch: Option<Batch>,
    next_id: u64,
}

/// One open group commit: its transaction and the audit head as its parts left it.
struct Batch {
    id: u64,
    /// The transaction; [`Inner::Gone`] while a part holds it.
    conn: Inner,
    head_seq: i64,
    head_hash: String,
    head_at_ms: i64,
    /// Parts finished and waiting for the commit.
    parts: usize,
    /// A part failed inside its savepoint: roll it back before anything else runs.
    rollback_pending: bool,
    /// Set once, when the group commits or fails; read by every part.
    outcome: Arc<OnceLock<std::result::Result<(), String>>>,
}

impl WriterState {
    /// Rolls back the savepoint of a part that failed. If even that fails, the whole group
    /// fails (its transaction is dropped, i.e. rolled back).
    async fn undo_failed_part(&mut self) {
        let Some(batch) = self.batch.as_mut() else {
            return;
        };
        let mut h = Handle {
            inner: std::mem::replace(&mut batch.conn, Inner::Gone),
            ctx: Cow::Borrowed("rolling back a failed write"),
        };
        let res = async {
            h.execute(q("ROLLBACK TO SAVEPOINT warden_part")).await?;
            h.execute(q("RELEASE SAVEPOINT warden_part")).await
        }
        .await;
        batch.conn = h.inner;
        batch.rollback_pending = false;
        if let Err(e) = res {
            tracing::error!(error = %e, "could not roll back a failed write; the writes grouped with it fail too");
            if let Some(b) = self.batch.take() {
                let _ = b.outcome.set(Err(e.to_string()));
            }
        }
    }

    /// Commits batch `id` if it is still open (first undoing a failed part).
    async fn finish(&mut self, id: u64, writer: &Writer) {
        if self.batch.as_ref().is_none_or(|b| b.id != id) {
            return;
        }
        if self.batch.as_ref().is_some_and(|b| b.rollback_pending) {
            self.undo_failed_part().await;
        }
        let Some(batch) = self.batch.take() else {
            return;
        };
        let res = match batch.conn {
            Inner::SqliteTx(t) => t.commit().await,
            Inner::PgTx(t) => t.commit().await,
            Inner::SqlitePool(_) | Inner::PgPool(_) | Inner::Gone => Err(sqlx::Error::Io(
                std::io::Error::other("the write batch had no transaction"),
            )),
        };
        if res.is_ok() {
            writer
                .parts
                .fetch_add(batch.parts as u64, Ordering::Relaxed);
            writer.commits.fetch_add(1, Ordering::Relaxed);
        }
        let _ = batch.outcome.set(res.map_err(|e| e.to_string()));
    }
}

async fn connect_sqlite(url: &str) -> Result<Pool> {
    let memory = url.contains(":memory:") || url.contains("mode=memory");
    let mut opts = SqliteConnectOptions::from_str(url)
        .map_err(|source| StoreError::Database {
            context: format!("parsing SQLite URL {url:?}"),
            source,
        })?
        .create_if_missing(true)
        .foreign_keys(true)
        .busy_timeout(SQLITE_BUSY_TIMEOUT);
    let pool_opts = if memory {
        // One connection that lives as long as the pool: the in-memory database lives in it.
        SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
    } else {
        let file = opts.get_filename().to_path_buf();
        create_parent_dir(&file)?;
        // WAL lets readers run beside the one writer. `synchronous` stays FULL (sqlx's
        // default): a committed audit entry must survive a power cut.
        opts = opts
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
        SqlitePoolOptions::new().max_connections(8)
    };
    let where_ = if memory {
        "in-memory SQLite database".to_string()
    } else {
        format!("SQLite database {}", opts.get_filename().display())
    };
    // No ping before handing out a connection: a SQLite connection lives in this process (it
    // cannot go stale like a socket), and the ping is one more round trip to the connection's
    // worker thread on every read (measured: the biggest single cost of a store read).
    let pool = pool_opts
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(false)
        .connect_with(opts)
        .await
        .map_err(|source| StoreError::Database {
            context: format!("opening {where_}"),
            source,
        })?;
    SQLITE_MIGRATOR.run(&pool).await?;
    tracing::debug!(database = %where_, "store opened");
    Ok(Pool::Sqlite(pool))
}

fn create_parent_dir(file: &Path) -> Result<()> {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.exists() => std::fs::create_dir_all(dir)
            .map_err(|e| {
                StoreError::Invalid(format!(
                    "cannot create the directory {} for the SQLite database: {e}",
                    dir.display()
                ))
            }),
        _ => Ok(()),
    }
}

async fn connect_postgres(url: &str) -> Result<Pool> {
    let opts = PgConnectOptions::from_str(url).map_err(|source| StoreError::Database {
        // The URL may hold a password: never echo it.
        context: "parsing the PostgreSQL URL".into(),
        source,
    })?;
    let where_ = format!(
        "PostgreSQL database {:?} at {}:{}",
        opts.get_database().unwrap_or("(default)"),
        opts.get_host(),
        opts.get_port()
    );
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(opts)
        .await
        .map_err(|source| StoreError::Database {
            context: format!("connecting to {where_}"),
            source,
        })?;
    POSTGRES_MIGRATOR.run(&pool).await?;
    tracing::debug!(database = %where_, "store opened");
    Ok(Pool::Postgres(pool))
}

// ---- values and queries -------------------------------------------------------------------

/// One SQL argument, bound with the same Rust type on both drivers.
#[derive(Debug, Clone)]
pub(crate) enum Val {
    Int(Option<i64>),
    Text(Option<String>),
    Bool(bool),
    Bytes(Option<Vec<u8>>),
}

impl From<i64> for Val {
    fn from(v: i64) -> Self {
        Val::Int(Some(v))
    }
}
impl From<Option<i64>> for Val {
    fn from(v: Option<i64>) -> Self {
        Val::Int(v)
    }
}
impl From<bool> for Val {
    fn from(v: bool) -> Self {
        Val::Bool(v)
    }
}
impl From<String> for Val {
    fn from(v: String) -> Self {
        Val::Text(Some(v))
    }
}
impl From<&str> for Val {
    fn from(v: &str) -> Self {
        Val::Text(Some(v.to_owned()))
    }
}
impl From<&String> for Val {
    fn from(v: &String) -> Self {
        Val::Text(Some(v.clone()))
    }
}
impl From<Option<String>> for Val {
    fn from(v: Option<String>) -> Self {
        Val::Text(v)
    }
}
impl From<Option<&str>> for Val {
    fn from(v: Option<&str>) -> Self {
        Val::Text(v.map(str::to_owned))
    }
}
impl From<&Option<String>> for Val {
    fn from(v: &Option<String>) -> Self {
        Val::Text(v.clone())
    }
}
/// Ids are stored as their hyphenated text on both backends.
impl From<Uuid> for Val {
    fn from(v: Uuid) -> Self {
        Val::Text(Some(v.to_string()))
    }
}
impl From<Option<Uuid>> for Val {
    fn from(v: Option<Uuid>) -> Self {
        Val::Text(v.map(|u| u.to_string()))
    }
}
/// Timestamps are stored as unix milliseconds.
impl From<OffsetDateTime> for Val {
    fn from(v: OffsetDateTime) -> Self {
        Val::Int(Some(ms(v)))
    }
}
impl From<Option<OffsetDateTime>> for Val {
    fn from(v: Option<OffsetDateTime>) -> Self {
        Val::Int(v.map(ms))
    }
}
impl From<Vec<u8>> for Val {
    fn from(v: Vec<u8>) -> Self {
        Val::Bytes(Some(v))
    }
}
impl From<&[u8]> for Val {
    fn from(v: &[u8]) -> Self {
        Val::Bytes(Some(v.to_vec()))
    }
}
impl From<Option<Vec<u8>>> for Val {
    fn from(v: Option<Vec<u8>>) -> Self {
        Val::Bytes(v)
    }
}

/// Unix milliseconds, truncated exactly like `warden_core::audit::truncate_ms`.
pub(crate) fn ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// SQL text plus its arguments, not yet tied to a driver.
#[derive(Debug)]
pub(crate) struct Q {
    sql: Cow<'static, str>,
    args: Vec<Val>,
    /// Prepared-statement caching; off for one-off texts (multi-row inserts).
    persistent: bool,
}

/// A query with static SQL text.
pub(crate) fn q(sql: &'static str) -> Q {
    Q {
        sql: Cow::Borrowed(sql),
        args: Vec::new(),
        persistent: true,
    }
}

impl Q {
    /// A query whose text is built at run time from a bounded set of shapes (filters).
    pub(crate) fn dynamic(sql: String) -> Q {
        Q {
            sql: Cow::Owned(sql),
            args: Vec::new(),
            persistent: true,
        }
    }
    /// A query whose text is unlikely to repeat (not cached as a prepared statement).
    pub(crate) fn one_off(sql: String) -> Q {
        Q {
            sql: Cow::Owned(sql),
            args: Vec::new(),
            persistent: false,
        }
    }
    /// The same arguments with the SQL text they were collected for.
    pub(crate) fn with_sql(mut self, sql: String) -> Self {
        self.sql = Cow::Owned(sql);
        self
    }
    pub(crate) fn bind(mut self, v: impl Into<Val>) -> Self {
        self.args.push(v.into());
        self
    }
    pub(crate) fn push(&mut self, v: impl Into<Val>) {
        self.args.push(v.into());
    }
    /// The placeholder for the next argument (`$n`).
    pub(crate) fn next_param(&self) -> String {
        format!("${}", self.args.len() + 1)
    }
    /// PostgreSQL refuses NUL bytes in text (SQLite would store them): refuse them on both
    /// backends alike, with a message instead of a driver error.
    fn check_text(&self, ctx: &str) -> Result<()> {
        let has_nul = self
            .args
            .iter()
            .any(|a| matches!(a, Val::Text(Some(s)) if s.contains('\0')));
        if has_nul {
            return Err(StoreError::Invalid(format!(
                "{ctx}: text contains a NUL byte (\\0), which cannot be stored; remove it and retry"
            )));
        }
        Ok(())
    }
}

/// Binds every [`Val`] of `$args` onto a sqlx query of either driver (expanded per driver, so
/// each `bind` resolves against that driver's `Encode` impls).
macro_rules! bind_all {
    ($query:expr, $args:expr) => {{
        let mut query = $query;
        for arg in $args {
            query = match arg {
                Val::Int(v) => query.bind(v),
                Val::Text(v) => query.bind(v),
                Val::Bool(v) => query.bind(v),
                Val::Bytes(v) => query.bind(v),
            };
        }
        query
    }};
}

/// A row type decodable from both drivers' rows (every `#[derive(FromRow)]` struct and tuple
/// of plain types is one).
pub(crate) trait Decode:
    for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{
}
impl<T> Decode for T where
    T: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{
}

enum Inner {
    SqlitePool(PoolConnection<Sqlite>),
    PgPool(PoolConnection<Postgres>),
    SqliteTx(Transaction<'static, Sqlite>),
    PgTx(Transaction<'static, Postgres>),
    /// Handed back (a write's connection returned to its group): every use fails.
    Gone,
}

/// Runs one expression with `$c` bound to the underlying connection of either driver.
macro_rules! on_conn {
    ($inner:expr, |$c:ident| $body:expr) => {
        match $inner {
            Inner::SqlitePool(c) => {
                let $c: &mut sqlx::SqliteConnection = &mut *c;
                $body
            }
            Inner::SqliteTx(t) => {
                let $c: &mut sqlx::SqliteConnection = &mut *t;
                $body
            }
            Inner::PgPool(c) => {
                let $c: &mut sqlx::PgConnection = &mut *c;
                $body
            }
            Inner::PgTx(t) => {
                let $c: &mut sqlx::PgConnection = &mut *t;
                $body
            }
            Inner::Gone => Err(sqlx::Error::PoolClosed),
        }
    };
}

/// A connection (pooled, or inside a transaction) plus the context its errors carry.
pub(crate) struct Handle {
    inner: Inner,
    ctx: Cow<'static, str>,
}

impl Handle {
    fn err(&self, source: sqlx::Error) -> StoreError {
        StoreError::Database {
            context: self.ctx.to_string(),
            source,
        }
    }

    /// Runs a statement; returns the number of rows affected.
    pub(crate) async fn execute(&mut self, q: Q) -> Result<u64> {
        q.check_text(&self.ctx)?;
        let Q {
            sql,
            args,
            persistent,
        } = q;
        let res = on_conn!(&mut self.inner, |c| {
            bind_all!(sqlx::query(&sql).persistent(persistent), args)
                .execute(c)
                .await
                .map(|r| r.rows_affected())
        });
        res.map_err(|e| self.err(e))
    }

    pub(crate) async fn fetch_all<T: Decode>(&mut self, q: Q) -> Result<Vec<T>> {
        let Q {
            sql,
            args,
            persistent,
        } = q;
        let res = on_conn!(&mut self.inner, |c| {
            bind_all!(sqlx::query_as::<_, T>(&sql).persistent(persistent), args)
                .fetch_all(c)
                .await
        });
        res.map_err(|e| self.err(e))
    }

    pub(crate) async fn fetch_optional<T: Decode>(&mut self, q: Q) -> Result<Option<T>> {
        q.check_text(&self.ctx)?;
        let Q {
            sql,
            args,
            persistent,
        } = q;
        let res = on_conn!(&mut self.inner, |c| {
            bind_all!(sqlx::query_as::<_, T>(&sql).persistent(persistent), args)
                .fetch_optional(c)
                .await
        });
        res.map_err(|e| self.err(e))
    }

    pub(crate) async fn fetch_one<T: Decode>(&mut self, q: Q) -> Result<T> {
        let Q {
            sql,
            args,
            persistent,
        } = q;
        let res = on_conn!(&mut self.inner, |c| {
            bind_all!(sqlx::query_as::<_, T>(&sql).persistent(persistent), args)
                .fetch_one(c)
                .await
        });
        res.map_err(|e| self.err(e))
    }
}

/// One write: a part of a group commit (see [`Writer`]) holding the audit head. Audit entries
/// appended with [`WriteTx::audit`] are chained onto the head as the group's earlier parts left
/// it and inserted by [`WriteTx::commit`], together with the new head. Dropping it without
/// committing rolls this write back, audit entries included, and nothing else.
pub(crate) struct WriteTx {
    h: Handle,
    head_seq: i64,
    head_hash: String,
    /// The time of the head entry: a new entry is never dated before it, so `at` never
    /// decreases along the chain (clocks of replicas differ; a clock can step back).
    head_at_ms: i64,
    pending: Vec<PendingEntry>,
    /// This write runs inside `SAVEPOINT warden_part` (it joined a group with finished parts).
    savepoint: bool,
    /// The writer's lock, held from `Db::write` until the part is finished or dropped.
    state: Option<OwnedMutexGuard<WriterState>>,
    writer: Arc<Writer>,
}

impl Drop for WriteTx {
    /// A write that was not committed: its connection goes back to the group, which rolls back
    /// its savepoint before anything else runs; a group's first part ends the whole group
    /// (dropping the transaction rolls it back).
    fn drop(&mut self) {
        let Some(mut state) = self.state.take() else {
            return;
        };
        let inner = std::mem::replace(&mut self.h.inner, Inner::Gone);
        if self.savepoint {
            if let Some(batch) = state.batch.as_mut() {
                batch.conn = inner;
                batch.rollback_pending = true;
            }
        } else {
            drop(inner);
            state.batch = None;
        }
    }
}

struct PendingEntry {
    seq: i64,
    at_ms: i64,
    actor: String,
    event: String,
    prev_hash: String,
    hash: String,
    review_id: Option<Uuid>,
    session_id: Option<Uuid>,
}

impl std::ops::Deref for WriteTx {
    type Target = Handle;
    fn deref(&self) -> &Handle {
        &self.h
    }
}
impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Handle {
        &mut self.h
    }
}

impl WriteTx {
    /// Chains `events` (all by `actor` at `at`) onto the log; written at commit.
    pub(crate) fn audit(
        &mut self,
        at: OffsetDateTime,
        actor: &str,
        events: &[AuditEvent],
    ) -> Result<()> {
        for ev in events {
            let prev = (self.head_seq > 0).then_some((self.head_seq, self.head_hash.as_str()));
            // The canonical text is stored: computed once, it is exactly what was hashed.
            let at = if ms(at) < self.head_at_ms {
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.head_at_ms) * 1_000_000)
                    .unwrap_or(at)
            } else {
                at
            };
            let sealed = seal_text(prev, at, actor, ev);
            self.head_at_ms = ms(sealed.at);
            self.head_seq = sealed.seq;
            self.head_hash.clone_from(&sealed.hash);
            self.pending.push(PendingEntry {
                seq: sealed.seq,
                at_ms: ms(sealed.at),
                actor: actor.to_string(),
                event: sealed.event,
                prev_hash: sealed.prev_hash,
                hash: sealed.hash,
                review_id: ev.review_id(),
                session_id: ev.statements_of(),
            });
        }
        Ok(())
    }

    /// `n` placeholders for the next row of a multi-row `INSERT`, continuing after the
    /// arguments already bound. PostgreSQL gets `$k+1, …, $k+n`; SQLite gets anonymous `?`s,
    /// bound in order: with numbered ones SQLite resolves each parameter's name by a linear
    /// scan, which made a 700-parameter insert quadratic (measured: a fifth of the gateway's
    /// CPU while the proxy recorded 20,000 statements a second).
    pub(crate) fn placeholders(&self, q: &Q, n: usize) -> String {
        if matches!(self.h.inner, Inner::SqliteTx(_) | Inner::SqlitePool(_)) {
            return vec!["?"; n].join(", ");
        }
        let base = q.args.len();
        (1..=n)
            .map(|i| format!("${}", base + i))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Inserts the pending audit entries, moves the head and commits.
    pub(crate) async fn commit(mut self) -> Result<()> {
        let pending = std::mem::take(&mut self.pending);
        for chunk in pending.chunks(INSERT_CHUNK) {
            let mut sql = String::from(
                "INSERT INTO audit_log (seq, at_ms, actor, event, prev_hash, hash, review_id, session_id) VALUES ",
            );
            let mut query = Q::one_off(String::new());
            for (i, e) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("({})", self.placeholders(&query, 8)));
                query.push(e.seq);
                query.push(e.at_ms);
                query.push(e.actor.as_str());
                query.push(e.event.as_str());
                query.push(e.prev_hash.as_str());
                query.push(e.hash.as_str());
                query.push(e.review_id);
                query.push(e.session_id);
            }
            query.sql = Cow::Owned(sql);
            // Full chunks all have the same text: worth a cached prepared statement.
            query.persistent = chunk.len() == INSERT_CHUNK;
            self.h.execute(query).await?;
        }
        if !pending.is_empty() {
            let n = self
                .h
                .execute(
                    q("UPDATE audit_head SET seq = $1, hash = $2, at_ms = $3 WHERE id = 1")
                        .bind(self.head_seq)
                        .bind(self.head_hash.as_str())
                        .bind(self.head_at_ms),
                )
                .await?;
            if n != 1 {
                return Err(StoreError::Corrupt(format!(
                    "{}: the audit_head row vanished during the transaction",
                    self.h.ctx
                )));
            }
        }
        if self.savepoint {
            self.h.execute(q("RELEASE SAVEPOINT warden_part")).await?;
        }
        // This part is done: hand the connection and the new head back to the group.
        let ctx = self.h.ctx.clone();
        let Some(mut state) = self.state.take() else {
            return Err(StoreError::Corrupt(format!(
                "{ctx}: the write lost its group"
            )));
        };
        let Some(batch) = state.batch.as_mut() else {
            return Err(StoreError::Corrupt(format!(
                "{ctx}: the write lost its group"
            )));
        };
        batch.conn = std::mem::replace(&mut self.h.inner, Inner::Gone);
        batch.head_seq = self.head_seq;
        batch.head_hash = std::mem::take(&mut self.head_hash);
        batch.head_at_ms = self.head_at_ms;
        batch.parts += 1;
        let (id, outcome) = (batch.id, batch.outcome.clone());
        let now = batch.parts >= MAX_BATCH_PARTS || self.writer.waiting.load(Ordering::SeqCst) == 0;
        let writer = self.writer.clone();
        // The commit runs in its own task: whether or not this caller waits for it, the group
        // gets its outcome.
        let committer = tokio::spawn(async move {
            let mut state = if now {
                state
            } else {
                // Let the waiting writes join; then commit unless the last of them already has.
                drop(state);
                writer.state.clone().lock_owned().await
            };
            state.finish(id, &writer).await;
        });
        if let Err(e) = committer.await {
            tracing::error!(error = %e, "the group commit task failed");
        }
        match outcome.get() {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(StoreError::Database {
                context: format!("{ctx} (commit)"),
                source: sqlx::Error::Io(std::io::Error::other(e.clone())),
            }),
            None => Err(StoreError::Database {
                context: format!("{ctx} (commit)"),
                source: sqlx::Error::Io(std::io::Error::other(
                    "the group commit ended without an outcome",
                )),
            }),
        }
    }
}
