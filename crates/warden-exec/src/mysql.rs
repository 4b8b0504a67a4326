//! MySQL / MariaDB executor: runs the approved script once, over one fresh connection, as a
//! multi-statement text-protocol query (`query_iter`), and renders every result: tables in the
//! same aligned format as PostgreSQL results, `Query OK, N rows affected` (plus the server's
//! info line, e.g. `Rows matched: 2  Changed: 2  Warnings: 0`) for other statements, and
//! `ERROR 1146 (42S02): Table 'test.nope' doesn't exist` for errors. The server stops at the first
//! failing statement; statements before it keep their effects (autocommit), as in the `mysql`
//! client.
//!
//! On timeout the running statement is killed server-side (`KILL QUERY <id>` from a second
//! connection). `LOAD DATA LOCAL INFILE` is refused (no local infile handler is installed).
//!
//! Executors never decide access: the gateway approved this script before calling us.

use std::time::Duration;

use mysql_async::consts::ColumnType;
use mysql_async::prelude::Queryable;
use mysql_async::{Column, Conn, Opts, Value};

use crate::output::{CappedText, fmt_duration, scrub};
use crate::table::ResultSet;
use crate::{ExecOptions, RunResult};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

struct State {
    out: CappedText,
    exit_code: i32,
    last_table: Option<ResultSet>,
    /// The result set being read (complete or not: see `script`).
    pending: Option<ResultSet>,
    conn_id: Option<u32>,
}

pub(crate) async fn run(url: &str, input: &str, opts: &ExecOptions) -> RunResult {
    let url = match url.strip_prefix("mariadb://") {
        Some(rest) => format!("mysql://{rest}"),
        None => url.to_string(),
    };
    let my_opts = match Opts::from_url(&url) {
        Ok(o) => o,
        // UrlError texts name parameters, never the URL itself; scrub anyway.
        Err(e) => {
            let msg = scrub(
                &format!("invalid MySQL connection URL: {e}"),
                &password_of(&url),
            );
            return RunResult::failed(2, &msg, opts.output_cap);
        }
    };
    let mut state = State {
        out: CappedText::new(opts.output_cap),
        exit_code: 0,
        last_table: None,
        pending: None,
        conn_id: None,
    };
    let timed_out = tokio::time::timeout(opts.timeout, run_inner(&my_opts, input, &mut state))
        .await
        .is_err();
    let mut trailer = None;
    if timed_out {
        if let Some(rs) = state.pending.take() {
            let footer = format!(
                "({} received before the timeout)",
                plural(rs.row_count, "row")
            );
            show(&mut state, rs, Some(&footer));
        }
        let what = match state.conn_id {
            Some(id) => {
                kill_query(&my_opts, id).await;
                "query cancelled"
            }
            None => "connection attempt abandoned",
        };
        state.exit_code = 124;
        trailer = Some(format!(
            "… {what} after {} timeout",
            fmt_duration(opts.timeout)
        ));
    }
    let rows_json = state.last_table.as_ref().map(ResultSet::to_json);
    RunResult {
        out: state.out,
        exit_code: state.exit_code,
        rows_json,
        trailer,
    }
}

/// The password as it appears in the URL (raw and decoded), for scrubbing.
fn password_of(url: &str) -> Vec<String> {
    let Ok(u) = url::Url::parse(url) else {
        return Vec::new();
    };
    let Some(p) = u.password() else {
        return Vec::new();
    };
    let mut v = vec![p.to_string()];
    if let Ok(d) = percent_encoding::percent_decode_str(p).decode_utf8() {
        v.push(d.into_owned());
    }
    v
}

fn endpoint(opts: &Opts) -> String {
    match opts.socket() {
        Some(s) if !opts.prefer_socket() || opts.ip_or_hostname().is_empty() => s.to_string(),
        _ => format!("{}:{}", opts.ip_or_hostname(), opts.tcp_port()),
    }
}

fn scrub_opts(msg: &str, opts: &Opts) -> String {
    match opts.pass() {
        Some(p) => scrub(msg, &[p]),
        None => msg.to_string(),
    }
}

async fn run_inner(opts: &Opts, input: &str, st: &mut State) {
    let mut conn = match tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(opts.clone())).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            let msg = match &e {
                mysql_async::Error::Server(se) => {
                    format!("ERROR {} ({}): {}", se.code, se.state, se.message)
                }
                other => other.to_string(),
            };
            st.out.push_str(&format!(
                "warden: could not connect to MySQL at {}: {}\n",
                endpoint(opts),
                scrub_opts(&msg, opts)
            ));
            st.exit_code = 2;
            return;
        }
        Err(_) => {
            st.out.push_str(&format!(
                "warden: could not connect to MySQL at {}: timed out after {}\n",
                endpoint(opts),
                fmt_duration(CONNECT_TIMEOUT)
            ));
            st.exit_code = 2;
            return;
        }
    };
    st.conn_id = Some(conn.id());
    match script(&mut conn, input, st).await {
        Ok(()) => {
            let _ = conn.disconnect().await;
        }
        Err(mysql_async::Error::Server(e)) => {
            st.out
                .push_str(&format!("ERROR {} ({}): {}\n", e.code, e.state, e.message));
            st.exit_code = 1;
        }
        Err(e) => {
            st.out.push_str(&format!(
                "warden: MySQL error: {}\n",
                scrub_opts(&e.to_string(), opts)
            ));
            st.exit_code = 2;
        }
    }
}

fn is_numeric(t: ColumnType) -> bool {
    use ColumnType::*;
    matches!(
        t,
        MYSQL_TYPE_TINY
            | MYSQL_TYPE_SHORT
            | MYSQL_TYPE_LONG
            | MYSQL_TYPE_LONGLONG
            | MYSQL_TYPE_INT24
            | MYSQL_TYPE_FLOAT
            | MYSQL_TYPE_DOUBLE
            | MYSQL_TYPE_DECIMAL
            | MYSQL_TYPE_NEWDECIMAL
            | MYSQL_TYPE_YEAR
    )
}

/// Binary strings (charset 63 = `binary`) and BIT values are shown as `0x…` hex.
fn is_binary(c: &Column) -> bool {
    use ColumnType::*;
    c.character_set() == 63
        && matches!(
            c.column_type(),
            MYSQL_TYPE_STRING
                | MYSQL_TYPE_VAR_STRING
                | MYSQL_TYPE_VARCHAR
                | MYSQL_TYPE_BLOB
                | MYSQL_TYPE_TINY_BLOB
                | MYSQL_TYPE_MEDIUM_BLOB
                | MYSQL_TYPE_LONG_BLOB
                | MYSQL_TYPE_BIT
                | MYSQL_TYPE_GEOMETRY
        )
}

fn cell(v: Option<&Value>, binary: bool) -> Option<String> {
    match v? {
        Value::NULL => None,
        Value::Bytes(b) if binary => Some(format!("0x{}", hex::encode_upper(b))),
        Value::Bytes(b) => Some(match std::str::from_utf8(b) {
            Ok(s) => s.to_string(),
            Err(_) => format!("0x{}", hex::encode_upper(b)),
        }),
        other => Some(other.as_sql(true).trim_matches('\'').to_string()),
    }
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

async fn script(conn: &mut Conn, input: &str, st: &mut State) -> mysql_async::Result<()> {
    let mut result = conn.query_iter(input).await?;
    loop {
        // Some(empty) for an OK packet; None once every result set has been read OR when the
        // next statement failed: `next()` then returns that error.
        let Some(columns) = result.columns() else {
            let _ = result.next().await?;
            return Ok(());
        };
        if columns.is_empty() {
            let mut line = format!(
                "Query OK, {} affected",
                plural(result.affected_rows(), "row")
            );
            if result.warnings() > 0 {
                line.push_str(&format!(
                    ", {}",
                    plural(u64::from(result.warnings()), "warning")
                ));
            }
            line.push('\n');
            let info = result.info();
            if !info.is_empty() {
                line.push_str(&info);
                line.push('\n');
            }
            st.out.push_str(&line);
            // Moves on to the next result set.
            let _ = result.next().await?;
            continue;
        }
        let names = columns.iter().map(|c| c.name_str().into_owned()).collect();
        let right = columns
            .iter()
            .map(|c| is_numeric(c.column_type()))
            .collect();
        let binary: Vec<bool> = columns.iter().map(is_binary).collect();
        st.pending = Some(ResultSet::new(names, right));
        // `next()` returns None only once the NEXT statement has produced its first packet, so
        // the set waits in `st.pending` (shown even if the timeout strikes meanwhile).
        while let Some(row) = result.next().await? {
            let values = (0..binary.len())
                .map(|i| cell(row.as_ref(i), binary[i]))
                .collect();
            let room = st.out.room();
            if let Some(rs) = st.pending.as_mut() {
                rs.push_row(values, room);
            }
        }
        if let Some(rs) = st.pending.take() {
            show(st, rs, None);
        }
    }
}

fn show(st: &mut State, rs: ResultSet, footer: Option<&str>) {
    st.out.push_str(&match footer {
        Some(f) => rs.render_with_footer(f),
        None => rs.render(),
    });
    if rs.is_partial() {
        st.out.mark_truncated();
    }
    st.last_table = Some(rs);
}

/// Best effort: stops the statement still running on connection `id`.
async fn kill_query(opts: &Opts, id: u32) {
    let kill = async {
        let mut c = Conn::new(opts.clone()).await?;
        c.query_drop(format!("KILL QUERY {id}")).await?;
        c.disconnect().await
    };
    match tokio::time::timeout(Duration::from_secs(3), kill).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %scrub_opts(&e.to_string(), opts), "mysql KILL QUERY failed")
        }
        Err(_) => tracing::warn!("mysql KILL QUERY timed out"),
    }
}
