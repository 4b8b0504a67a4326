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
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{FromRow, Postgres, Sqlite, Transaction};
use time::OffsetDateTime;
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
pub(crate) enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Db {
    /// Opens the database named by `url`, creating a SQLite file (and its directory) if needed,
    /// and runs the migrations of that backend.
    pub(crate) async fn connect(url: &str) -> Result<Db> {
        if url.starts_with("sqlite:") {
            connect_sqlite(url).await
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            connect_postgres(url).await
        } else {
            Err(StoreError::Invalid(format!(
                "unsupported database URL scheme in {:?}: use sqlite://PATH, sqlite::memory: or postgres://USER@HOST/DB",
                url.split(':').next().unwrap_or_default()
            )))
        }
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// A pooled connection for reads outside a transaction. `ctx` prefixes every error.
    pub(crate) async fn read(&self, ctx: impl Into<Cow<'static, str>>) -> Result<Handle> {
        let ctx = ctx.into();
        let inner = match self {
            Db::Sqlite(p) => p.acquire().await.map(Inner::SqlitePool),
            Db::Postgres(p) => p.acquire().await.map(Inner::PgPool),
        };
        match inner {
            Ok(inner) => Ok(Handle { inner, ctx }),
            Err(source) => Err(StoreError::Database {
                context: ctx.into_owned(),
                source,
            }),
        }
    }

    /// Begins a write transaction. Its first statement takes the `audit_head` row (row lock on
    /// PostgreSQL; the database write lock on SQLite, taken up front so a deferred transaction
    /// never has to upgrade a read lock and fail with `SQLITE_BUSY`). Every write transaction
    /// therefore runs one at a time, which keeps the audit chain a single ordered list across
    /// tasks and gateway replicas.
    pub(crate) async fn write(&self, ctx: impl Into<Cow<'static, str>>) -> Result<WriteTx> {
        let ctx = ctx.into();
        let inner = match self {
            Db::Sqlite(p) => p.begin().await.map(Inner::SqliteTx),
            Db::Postgres(p) => p.begin().await.map(Inner::PgTx),
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
        let Some((seq, hash, at_ms)) = head else {
            return Err(StoreError::Corrupt(format!(
                "{}: the audit_head row is missing (the audit log cannot be extended)",
                h.ctx
            )));
        };
        Ok(WriteTx {
            h,
            head_seq: seq,
            head_hash: hash,
            head_at_ms: at_ms,
            pending: Vec::new(),
        })
    }
}

async fn connect_sqlite(url: &str) -> Result<Db> {
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
    let pool = pool_opts
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(opts)
        .await
        .map_err(|source| StoreError::Database {
            context: format!("opening {where_}"),
            source,
        })?;
    SQLITE_MIGRATOR.run(&pool).await?;
    tracing::debug!(database = %where_, "store opened");
    Ok(Db::Sqlite(pool))
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

async fn connect_postgres(url: &str) -> Result<Db> {
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
    Ok(Db::Postgres(pool))
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

/// A write transaction holding the audit head. Audit entries appended with [`WriteTx::audit`]
/// are chained onto the head read at `BEGIN` and inserted by [`WriteTx::commit`], together with
/// the new head, just before the transaction commits. Dropping it without committing rolls
/// everything back, audit entries included.
pub(crate) struct WriteTx {
    h: Handle,
    head_seq: i64,
    head_hash: String,
    /// The time of the head entry: a new entry is never dated before it, so `at` never
    /// decreases along the chain (clocks of replicas differ; a clock can step back).
    head_at_ms: i64,
    pending: Vec<PendingEntry>,
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
        let ctx = self.h.ctx.clone();
        let res = match self.h.inner {
            Inner::SqliteTx(t) => t.commit().await,
            Inner::PgTx(t) => t.commit().await,
            Inner::SqlitePool(_) | Inner::PgPool(_) => Ok(()),
        };
        res.map_err(|source| StoreError::Database {
            context: format!("{ctx} (commit)"),
            source,
        })
    }
}
