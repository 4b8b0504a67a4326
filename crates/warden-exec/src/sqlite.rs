//! SQLite executor: opens an existing database file (`sqlite:///abs/path.db`; never created:
//! a missing file is an error) and runs the approved script statement by statement, rendering
//! result sets in the same aligned format as the other SQL executors and a psql-like tag for
//! other statements (`INSERT 2`, `UPDATE 3`, `DELETE 1`, `CREATE TABLE`…).
//!
//! It uses rusqlite (on the same bundled libsqlite3 as sqlx) rather than sqlx: sqlx's
//! multi-statement API gives no column names for an empty result and no way to tell a query
//! from a change, and rusqlite offers `sqlite3_interrupt`, which is how a timeout stops a running
//! statement here. The work runs on a blocking thread.
//!
//! Each statement autocommits unless the script opens a transaction; execution stops at the first
//! error (earlier statements keep their effects; an open explicit transaction is rolled back when
//! the connection closes).
//!
//! # The connection's file and nothing else
//! A script reaches its own database file only: before any statement runs, the connection is
//! confined ([`confine`]) — an authorizer refuses `ATTACH`/`DETACH` of any file (so also
//! `VACUUM INTO`, which attaches its target), `load_extension()` and the pragmas that point
//! SQLite at other directories; the attached-database limit is 0 (raised to 1 only while a plain
//! `VACUUM` builds its private temporary copy, whose file name is empty — every named file is
//! still refused); extension loading stays off; `SQLITE_DBCONFIG_DEFENSIVE` forbids writing the
//! schema by hand, and `TRUSTED_SCHEMA` is off. A connection that cannot be confined is not used.
//! Which file a connection may name at all (never the gateway's own store) is the gateway's
//! check; this module enforces that nothing else is reached from it.
//!
//! # What it must never do
//! Decide access (the gateway approved this script before calling us), create a database file,
//! or run a statement on a connection that is not confined.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::types::ValueRef;
use rusqlite::{Batch, Connection, InterruptHandle, OpenFlags, ffi};

use crate::output::{CappedText, fmt_duration};
use crate::table::{ResultSet, error_position};
use crate::{ExecOptions, RunResult};

pub(crate) struct Location {
    pub(crate) path: PathBuf,
    read_only: bool,
    pub(crate) memory: bool,
}

/// Accepts `sqlite:///abs/path.db`, `sqlite:/abs/path.db`, `sqlite://relative.db`, an optional
/// `?mode=ro|rw`, and `sqlite::memory:`.
pub(crate) fn parse_url(raw: &str) -> Result<Location, String> {
    let rest = raw
        .strip_prefix("sqlite://")
        .or_else(|| raw.strip_prefix("sqlite:"))
        .ok_or_else(|| {
            "invalid SQLite connection URL: expected sqlite:///absolute/path.db".to_string()
        })?;
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let mut read_only = false;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair {
            "mode=ro" => read_only = true,
            "mode=rw" => read_only = false,
            "mode=rwc" => {
                return Err(
                    "mode=rwc is not allowed: warden never creates a SQLite database".into(),
                );
            }
            other => {
                return Err(format!(
                    "unsupported parameter in SQLite connection URL: {other}"
                ));
            }
        }
    }
    let path = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| "invalid percent-encoding in SQLite connection URL".to_string())?
        .into_owned();
    if path.is_empty() {
        return Err("the SQLite connection URL has no file path".into());
    }
    let memory = path == ":memory:";
    Ok(Location {
        path: PathBuf::from(path),
        read_only,
        memory,
    })
}

pub(crate) async fn run(url: &str, input: &str, opts: &ExecOptions) -> RunResult {
    let loc = match parse_url(url) {
        Ok(l) => l,
        Err(msg) => return RunResult::failed(2, &msg, opts.output_cap),
    };
    if !loc.memory && !loc.path.is_file() {
        let msg = format!(
            "warden: SQLite database file {} does not exist (it is never created)",
            loc.path.display()
        );
        return RunResult::failed(2, &msg, opts.output_cap);
    }

    let (handle_tx, handle_rx) = mpsc::channel::<InterruptHandle>();
    let input = input.to_string();
    let cap = opts.output_cap;
    let busy = opts.timeout.min(Duration::from_secs(10));
    let mut job =
        tokio::task::spawn_blocking(move || run_blocking(&loc, &input, cap, busy, handle_tx));

    match tokio::time::timeout(opts.timeout, &mut job).await {
        Ok(Ok(r)) => r,
        Ok(Err(join)) => {
            RunResult::failed(2, &format!("warden: SQLite executor failed: {join}"), cap)
        }
        Err(_) => {
            if let Ok(h) = handle_rx.try_recv() {
                h.interrupt();
            }
            let trailer = format!(
                "… query cancelled after {} timeout",
                fmt_duration(opts.timeout)
            );
            // The interrupted statement returns promptly; keep what it printed before.
            match tokio::time::timeout(Duration::from_secs(5), job).await {
                Ok(Ok(mut r)) => {
                    r.exit_code = 124;
                    r.trailer = Some(trailer);
                    r
                }
                _ => RunResult {
                    out: CappedText::new(cap),
                    exit_code: 124,
                    rows_json: None,
                    trailer: Some(trailer),
                },
            }
        }
    }
}

/// What the authorizer of one connection shares with the script runner.
#[derive(Default)]
struct Guard {
    /// Why the authorizer refused the statement being prepared (shown instead of SQLite's bare
    /// "not authorized").
    refusal: Mutex<Option<String>>,
    /// The running statement is a `VACUUM` (its internal ATTACH names the `INTO` target).
    vacuum: AtomicBool,
}

impl Guard {
    fn refuse(&self, why: String) -> Authorization {
        if let Ok(mut r) = self.refusal.lock() {
            *r = Some(why);
        }
        Authorization::Deny
    }

    fn take_refusal(&self) -> Option<String> {
        self.refusal.lock().ok().and_then(|mut r| r.take())
    }
}

const ONLY_OWN_FILE: &str = "a SQLite connection reaches only its own database file";

/// The authorizer's verdict on one action: `Some(reason)` refuses it.
fn refusal(action: &AuthAction<'_>, vacuum: bool) -> Option<String> {
    match action {
        // An empty name is the private temporary database a plain VACUUM builds (or `ATTACH ''`):
        // no file anyone else can see. Every named file — including VACUUM INTO's target — is out.
        AuthAction::Attach { filename: "" } => None,
        AuthAction::Attach { .. } if vacuum => {
            Some(format!("VACUUM INTO is not allowed: {ONLY_OWN_FILE}"))
        }
        AuthAction::Attach { .. } => Some(format!("ATTACH is not allowed: {ONLY_OWN_FILE}")),
        AuthAction::Detach { .. } => Some(format!("DETACH is not allowed: {ONLY_OWN_FILE}")),
        // ATTACH of an expression: SQLite gives the authorizer no file name at all.
        AuthAction::Unknown { code, .. } if *code == ffi::SQLITE_ATTACH => {
            Some(format!("ATTACH is not allowed: {ONLY_OWN_FILE}"))
        }
        AuthAction::Unknown { code, .. } if *code == ffi::SQLITE_DETACH => {
            Some(format!("DETACH is not allowed: {ONLY_OWN_FILE}"))
        }
        AuthAction::Function { function_name }
            if function_name.eq_ignore_ascii_case("load_extension") =>
        {
            Some("load_extension is not allowed: warden never loads SQLite extensions".into())
        }
        AuthAction::Pragma { pragma_name, .. }
            if ["temp_store_directory", "data_store_directory"]
                .iter()
                .any(|p| pragma_name.eq_ignore_ascii_case(p)) =>
        {
            Some(format!(
                "PRAGMA {pragma_name} is not allowed: {ONLY_OWN_FILE}"
            ))
        }
        _ => None,
    }
}

/// Confines `conn` to its own database file (see the module doc). An error means the connection
/// must not be used.
fn confine(conn: &Connection, guard: Arc<Guard>) -> Result<(), String> {
    for (name, config, on) in [
        ("DEFENSIVE", DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true),
        (
            "TRUSTED_SCHEMA",
            DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA,
            false,
        ),
        (
            "ENABLE_FTS3_TOKENIZER",
            DbConfig::SQLITE_DBCONFIG_ENABLE_FTS3_TOKENIZER,
            false,
        ),
    ] {
        match conn.set_db_config(config, on) {
            Ok(now) if now == on => {}
            Ok(_) => return Err(format!("SQLITE_DBCONFIG_{name} did not take effect")),
            Err(e) => return Err(format!("setting SQLITE_DBCONFIG_{name}: {e}")),
        }
    }
    conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0);
    if conn.limit(Limit::SQLITE_LIMIT_ATTACHED) != 0 {
        return Err("the attached-database limit could not be set to 0".into());
    }
    conn.authorizer(Some(move |ctx: AuthContext<'_>| {
        match refusal(&ctx.action, guard.vacuum.load(Ordering::Relaxed)) {
            Some(why) => guard.refuse(why),
            None => Authorization::Allow,
        }
    }));
    Ok(())
}

fn run_blocking(
    loc: &Location,
    input: &str,
    cap: usize,
    busy: Duration,
    handle_tx: mpsc::Sender<InterruptHandle>,
) -> RunResult {
    let mut out = CappedText::new(cap);
    let mut flags = OpenFlags::SQLITE_OPEN_NO_MUTEX;
    flags |= if loc.read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
    };
    let opened = if loc.memory {
        Connection::open_in_memory()
    } else {
        Connection::open_with_flags(&loc.path, flags)
    };
    let conn = match opened {
        Ok(c) => c,
        Err(e) => {
            out.push_str(&format!(
                "warden: cannot open SQLite database {}: {e}\n",
                loc.path.display()
            ));
            return RunResult {
                out,
                exit_code: 2,
                rows_json: None,
                trailer: None,
            };
        }
    };
    let guard = Arc::new(Guard::default());
    if let Err(e) = confine(&conn, guard.clone()) {
        out.push_str(&format!(
            "warden: cannot confine the SQLite connection to its file (nothing was run): {e}\n"
        ));
        return RunResult {
            out,
            exit_code: 2,
            rows_json: None,
            trailer: None,
        };
    }
    let _ = handle_tx.send(conn.get_interrupt_handle());
    let _ = conn.busy_timeout(busy);

    let mut last_table: Option<ResultSet> = None;
    let exit_code = match script(&conn, &guard, input, &mut out, &mut last_table) {
        Ok(()) => 0,
        Err(e) => {
            out.push_str(&format_error(&e, input, guard.take_refusal()));
            1
        }
    };
    let rows_json = last_table.as_ref().map(ResultSet::to_json);
    RunResult {
        out,
        exit_code,
        rows_json,
        trailer: None,
    }
}

fn script(
    conn: &Connection,
    guard: &Guard,
    input: &str,
    out: &mut CappedText,
    last_table: &mut Option<ResultSet>,
) -> rusqlite::Result<()> {
    let mut batch = Batch::new(conn, input);
    loop {
        guard.take_refusal();
        let Some(mut stmt) = batch.next()? else {
            break;
        };
        let ncols = stmt.column_count();
        if ncols == 0 {
            let sql = stmt.expanded_sql().unwrap_or_default();
            let before = conn.total_changes();
            let vacuum = keywords(&sql).first().is_some_and(|w| w == "VACUUM");
            let ran = if vacuum {
                // VACUUM builds its copy in an attached temporary database: one slot, for that
                // statement only. The authorizer still refuses every named file (VACUUM INTO).
                guard.vacuum.store(true, Ordering::Relaxed);
                conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 1);
                let ran = stmt.raw_execute();
                conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0);
                guard.vacuum.store(false, Ordering::Relaxed);
                ran
            } else {
                stmt.raw_execute()
            };
            ran?;
            let changed = conn.total_changes() != before;
            out.push_str(&format!("{}\n", tag(&sql, changed.then(|| conn.changes()))));
            continue;
        }
        let names: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
        let mut values: Vec<Vec<Option<String>>> = Vec::new();
        let mut numeric = vec![true; ncols];
        let mut seen = vec![false; ncols];
        let mut count = 0u64;
        let mut kept_bytes = 0usize;
        let room = out.room();
        let mut rows = stmt.raw_query();
        while let Some(row) = rows.next()? {
            count += 1;
            let mut vals = Vec::with_capacity(ncols);
            for j in 0..ncols {
                let v = row.get_ref(j)?;
                match v {
                    ValueRef::Null => {}
                    ValueRef::Integer(_) | ValueRef::Real(_) => seen[j] = true,
                    _ => {
                        seen[j] = true;
                        numeric[j] = false;
                    }
                }
                vals.push(text(v));
            }
            let size: usize = vals
                .iter()
                .map(|v| v.as_ref().map_or(0, String::len) + 3)
                .sum();
            if kept_bytes + size <= room && values.len() as u64 + 1 == count {
                kept_bytes += size;
                values.push(vals);
            }
        }
        let right: Vec<bool> = numeric.iter().zip(&seen).map(|(n, s)| *n && *s).collect();
        let mut rs = ResultSet::new(names, right);
        for v in values {
            rs.push_row(v, usize::MAX);
        }
        rs.row_count = count;
        out.push_str(&rs.render());
        if rs.is_partial() {
            out.mark_truncated();
        }
        *last_table = Some(rs);
    }
    Ok(())
}

fn text(v: ValueRef<'_>) -> Option<String> {
    match v {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(f) => Some(if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e15 {
            format!("{f:.1}")
        } else {
            f.to_string()
        }),
        ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Some(format!("\\x{}", hex::encode(b))),
    }
}

/// The statement's leading keywords, ignoring comments: `INSERT`, `CREATE TABLE`, …
fn keywords(sql: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut s = sql;
    while words.len() < 4 {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix("--") {
            s = rest.split_once('\n').map_or("", |(_, r)| r);
            continue;
        }
        if let Some(rest) = s.strip_prefix("/*") {
            s = rest.split_once("*/").map_or("", |(_, r)| r);
            continue;
        }
        let end = s
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(s.len());
        if end == 0 {
            break;
        }
        words.push(s[..end].to_ascii_uppercase());
        s = &s[end..];
    }
    words
}

/// psql-like tag for a statement that returns no rows. `changes` is the row count when the
/// statement changed rows (`None` when it changed none).
fn tag(sql: &str, changes: Option<u64>) -> String {
    let words = keywords(sql);
    let first = words.first().map(String::as_str).unwrap_or("");
    let n = changes.unwrap_or(0);
    match first {
        "INSERT" | "REPLACE" => format!("INSERT {n}"),
        "UPDATE" | "DELETE" => format!("{first} {n}"),
        "WITH" => format!("OK, {n} rows affected"),
        "CREATE" | "DROP" | "ALTER" => {
            let object = words[1..]
                .iter()
                .find(|w| !matches!(w.as_str(), "UNIQUE" | "TEMP" | "TEMPORARY" | "VIRTUAL"))
                .cloned()
                .unwrap_or_default();
            format!("{first} {object}").trim_end().to_string()
        }
        "" => "OK".to_string(),
        other => other.to_string(),
    }
}

/// `refused`: the authorizer's reason, when it is why the statement failed.
fn format_error(e: &rusqlite::Error, input: &str, refused: Option<String>) -> String {
    if let Some(why) = refused {
        let code = e.sqlite_error().map_or(23, |f| f.extended_code);
        return format!("ERROR:  {why} ({})\n", code_name(code));
    }
    match e {
        // A statement that does not parse: show where, like the PostgreSQL executor does.
        rusqlite::Error::SqlInputError {
            error,
            msg,
            sql,
            offset,
        } => {
            let mut out = format!("ERROR:  {msg} ({})\n", code_name(error.extended_code));
            let start = input.len().saturating_sub(sql.len());
            let byte = start + usize::try_from(*offset).unwrap_or(0);
            if input.ends_with(sql.as_str()) && input.is_char_boundary(byte.min(input.len())) {
                let pos = input[..byte.min(input.len())].chars().count() + 1;
                out.push_str(&error_position(input, pos));
            }
            out
        }
        rusqlite::Error::SqliteFailure(err, msg) => {
            let text = msg.clone().unwrap_or_else(|| err.to_string());
            format!("ERROR:  {text} ({})\n", code_name(err.extended_code))
        }
        other => format!("ERROR:  {other}\n"),
    }
}

fn code_name(extended: i32) -> String {
    let name = match extended & 0xff {
        1 => "SQLITE_ERROR",
        2 => "SQLITE_INTERNAL",
        3 => "SQLITE_PERM",
        4 => "SQLITE_ABORT",
        5 => "SQLITE_BUSY",
        6 => "SQLITE_LOCKED",
        7 => "SQLITE_NOMEM",
        8 => "SQLITE_READONLY",
        9 => "SQLITE_INTERRUPT",
        10 => "SQLITE_IOERR",
        11 => "SQLITE_CORRUPT",
        13 => "SQLITE_FULL",
        14 => "SQLITE_CANTOPEN",
        18 => "SQLITE_TOOBIG",
        19 => "SQLITE_CONSTRAINT",
        20 => "SQLITE_MISMATCH",
        21 => "SQLITE_MISUSE",
        23 => "SQLITE_AUTH",
        25 => "SQLITE_RANGE",
        26 => "SQLITE_NOTADB",
        _ => return format!("sqlite code {extended}"),
    };
    if extended > 0xff {
        format!("{name}, extended code {extended}")
    } else {
        name.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        assert_eq!(tag("insert into t values (1)", Some(1)), "INSERT 1");
        assert_eq!(tag("  -- c\n/* x */ UPDATE t set a=1", None), "UPDATE 0");
        assert_eq!(tag("create unique index i on t(a)", None), "CREATE INDEX");
        assert_eq!(tag("CREATE TABLE IF NOT EXISTS t(a)", None), "CREATE TABLE");
        assert_eq!(tag("begin", None), "BEGIN");
    }

    #[test]
    fn urls() {
        let l = parse_url("sqlite:///tmp/x.db?mode=ro").unwrap();
        assert_eq!((l.path, l.read_only), (PathBuf::from("/tmp/x.db"), true));
        assert_eq!(
            parse_url("sqlite:/tmp/y.db").unwrap().path,
            PathBuf::from("/tmp/y.db")
        );
        assert!(parse_url("sqlite:///tmp/x.db?mode=rwc").is_err());
        assert!(parse_url("postgres://x").is_err());
        assert!(parse_url("sqlite::memory:").unwrap().memory);
    }
}
