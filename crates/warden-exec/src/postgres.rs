//! PostgreSQL executor: runs the approved script once, over one fresh connection, with the
//! simple query protocol (one `Query` message holding the whole script), and renders what the
//! server sends back the way `psql` shows it: aligned tables, command tags (`UPDATE 3`,
//! `INSERT 0 1`, `CREATE TABLE`), notices, and errors with their SQLSTATE.
//!
//! Why not `tokio_postgres::Client::simple_query`: it drops the command tag (it keeps only the
//! row count) and the column types, both needed to show results like psql. This module speaks
//! the query protocol itself with `postgres-protocol`'s message codec. The login (socket, TLS,
//! authentication) is `warden_pgwire::upstream`, the proxy's own client code, which also hands
//! over the backend key to cancel a query on timeout.
//!
//! Supported: TCP and Unix sockets; trust, cleartext, MD5 and SCRAM-SHA-256 authentication;
//! TLS via rustls with libpq's `sslmode` semantics (`disable`, `allow`/`prefer` = TLS when the
//! server offers it, `require` = TLS without certificate checks, `verify-ca` / `verify-full`
//! against `sslrootcert`, default `~/.postgresql/root.crt`). The URL is read, and TLS configured,
//! by `warden_pgwire::conninfo`, the same code the proxy's upstream uses.
//!
//! A multi-statement script runs as one implicit transaction (PostgreSQL's rule for a simple
//! query): when a statement fails, the changes of the earlier statements since the last
//! `COMMIT` are rolled back, and the output says so.
//!
//! Executors never decide access: the gateway approved this script before calling us.

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::{backend::Message, frontend};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use warden_pgwire::Upstream;
use warden_pgwire::conninfo::ConnInfo;
use warden_pgwire::upstream::{self, UpstreamError};

use crate::output::{CappedText, fmt_duration, scrub};
use crate::table::{ResultSet, error_position};
use crate::{ExecOptions, RunResult};

// ---------------------------------------------------------------------------------------------
// Connection parameters
// ---------------------------------------------------------------------------------------------

// The URL's meaning is shared with the proxy's upstream: `warden_pgwire::conninfo`.

// ---------------------------------------------------------------------------------------------
// Transport
// ---------------------------------------------------------------------------------------------

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Conn {
    io: Box<dyn Io>,
    rbuf: BytesMut,
    wbuf: BytesMut,
}

impl Conn {
    async fn read(&mut self) -> io::Result<Message> {
        loop {
            if let Some(msg) = Message::parse(&mut self.rbuf)? {
                return Ok(msg);
            }
            if self.io.read_buf(&mut self.rbuf).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection unexpectedly",
                ));
            }
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        let buf = self.wbuf.split();
        self.io.write_all(&buf).await?;
        self.io.flush().await
    }
}

/// A connection failure, shown to the user (exit code 2). Never holds the URL or password.
#[derive(Debug)]
struct ConnectError(String);

impl From<io::Error> for ConnectError {
    fn from(e: io::Error) -> Self {
        ConnectError(e.to_string())
    }
}

impl From<UpstreamError> for ConnectError {
    fn from(e: UpstreamError) -> Self {
        match e {
            // The server's own refusal, shown as psql shows it (with its SQLSTATE).
            UpstreamError::Server { mut frame, .. } => match Message::parse(&mut frame) {
                Ok(Some(Message::ErrorResponse(body))) => {
                    ConnectError(format_server_error(&fields(body.fields()), None))
                }
                _ => ConnectError("the server refused the connection".into()),
            },
            UpstreamError::Io(e) => ConnectError(e.to_string()),
            other => ConnectError(other.to_string()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Startup and authentication: the one client login, `warden_pgwire::upstream`
// ---------------------------------------------------------------------------------------------

struct Session {
    conn: Conn,
    /// Backend process id and secret key, for a cancel request.
    key: Option<(i32, i32)>,
}

/// Opens and authenticates the connection with the same code as the proxy's upstream (TCP or
/// Unix socket, TLS per `sslmode`, cleartext/MD5/SCRAM-SHA-256), then reads on from where the
/// login stopped.
async fn connect(info: &ConnInfo) -> Result<Session, ConnectError> {
    let mut extra = vec![
        (
            "application_name".to_string(),
            info.application_name.clone(),
        ),
        ("client_encoding".to_string(), "UTF8".to_string()),
    ];
    if let Some(o) = &info.options {
        extra.push(("options".to_string(), o.clone()));
    }
    let c = upstream::connect(&Upstream::from_conninfo(info.clone()), &extra).await?;
    Ok(Session {
        conn: Conn {
            io: Box::new(c.stream),
            rbuf: c.leftover,
            wbuf: BytesMut::new(),
        },
        key: c.key,
    })
}

/// Best-effort CancelRequest for a running query (a new connection, as libpq does).
async fn cancel(info: &ConnInfo, key: (i32, i32)) {
    let up = Upstream::from_conninfo(info.clone());
    let send = upstream::cancel(&up.host, up.port, &up.tls, key.0, key.1);
    if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(3), send).await {
        tracing::warn!(error = %e, "postgres cancel request failed");
    }
}

// ---------------------------------------------------------------------------------------------
// Errors and notices
// ---------------------------------------------------------------------------------------------

/// Error/notice fields by their one-letter code.
#[derive(Debug, Default)]
struct Fields(Vec<(u8, String)>);

impl Fields {
    fn get(&self, code: u8) -> Option<&str> {
        self.0
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.as_str())
    }
}

fn fields(mut it: postgres_protocol::message::backend::ErrorFields<'_>) -> Fields {
    let mut out = Vec::new();
    while let Ok(Some(f)) = it.next() {
        out.push((
            f.type_(),
            String::from_utf8_lossy(f.value_bytes()).into_owned(),
        ));
    }
    Fields(out)
}

/// `ERROR:  message (SQLSTATE xxxxx)` then `LINE n: …` with a caret, `DETAIL:`, `HINT:`,
/// `CONTEXT:` lines, as psql prints them (plus the SQLSTATE).
fn format_server_error(f: &Fields, query: Option<&str>) -> String {
    let severity = f.get(b'V').or_else(|| f.get(b'S')).unwrap_or("ERROR");
    let message = f.get(b'M').unwrap_or("unknown error");
    let mut out = match f.get(b'C') {
        Some(code) => format!("{severity}:  {message} (SQLSTATE {code})\n"),
        None => format!("{severity}:  {message}\n"),
    };
    if let (Some(q), Some(pos)) = (query, f.get(b'P').and_then(|p| p.parse::<usize>().ok())) {
        out.push_str(&error_position(q, pos));
    }
    for (code, label) in [(b'D', "DETAIL"), (b'H', "HINT"), (b'W', "CONTEXT")] {
        if let Some(v) = f.get(code) {
            out.push_str(&format!("{label}:  {v}\n"));
        }
    }
    out
}

fn format_notice(f: &Fields) -> String {
    let severity = f.get(b'V').or_else(|| f.get(b'S')).unwrap_or("NOTICE");
    let mut out = format!("{severity}:  {}\n", f.get(b'M').unwrap_or(""));
    for (code, label) in [(b'D', "DETAIL"), (b'H', "HINT")] {
        if let Some(v) = f.get(code) {
            out.push_str(&format!("{label}:  {v}\n"));
        }
    }
    out
}

/// psql's right-aligned types: int2/4/8, float4/8, numeric, oid, xid, xid8, cid, money.
fn is_numeric_oid(oid: u32) -> bool {
    matches!(
        oid,
        20 | 21 | 23 | 700 | 701 | 1700 | 26 | 28 | 5069 | 29 | 790
    )
}

// ---------------------------------------------------------------------------------------------
// Running the script
// ---------------------------------------------------------------------------------------------

/// What survives a timeout: the output so far and the key to cancel the query.
struct State {
    out: CappedText,
    exit_code: i32,
    last_table: Option<ResultSet>,
    key: Option<(i32, i32)>,
    connected: bool,
}

pub(crate) async fn run(url: &str, input: &str, opts: &ExecOptions) -> RunResult {
    let info = match ConnInfo::parse(url) {
        Ok(i) => i,
        Err(msg) => return RunResult::failed(2, &msg, opts.output_cap),
    };
    if input.contains('\0') {
        let msg = "ERROR:  the script contains a NUL character, which PostgreSQL does not accept";
        return RunResult::failed(1, msg, opts.output_cap);
    }
    let mut state = State {
        out: CappedText::new(opts.output_cap),
        exit_code: 0,
        last_table: None,
        key: None,
        connected: false,
    };
    let timed_out = tokio::time::timeout(opts.timeout, run_inner(&info, input, &mut state))
        .await
        .is_err();
    let mut trailer = None;
    if timed_out {
        if let Some(key) = state.key {
            cancel(&info, key).await;
        }
        state.exit_code = 124;
        let what = if state.connected {
            "query cancelled"
        } else {
            "connection attempt abandoned"
        };
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

async fn run_inner(info: &ConnInfo, input: &str, st: &mut State) {
    let connecting = tokio::time::timeout(info.connect_timeout, connect(info)).await;
    let mut session = match connecting {
        Ok(Ok(s)) => s,
        Ok(Err(ConnectError(msg))) => {
            let secrets: Vec<&str> = info.password.iter().map(String::as_str).collect();
            let msg = scrub(&msg, &secrets);
            st.out.push_str(&format!(
                "warden: could not connect to PostgreSQL at {}: {msg}\n",
                info.endpoint()
            ));
            st.exit_code = 2;
            return;
        }
        Err(_) => {
            st.out.push_str(&format!(
                "warden: could not connect to PostgreSQL at {}: timed out after {}\n",
                info.endpoint(),
                fmt_duration(info.connect_timeout)
            ));
            st.exit_code = 2;
            return;
        }
    };
    st.key = session.key;
    st.connected = true;
    if let Err(e) = query(&mut session.conn, input, st).await {
        st.out
            .push_str(&format!("warden: connection to PostgreSQL lost: {e}\n"));
        st.exit_code = 2;
        return;
    }
    frontend::terminate(&mut session.conn.wbuf);
    let _ = session.conn.flush().await;
}

/// Tags whose effects an error later in the same script rolls back.
fn tag_changes_data(tag: &str) -> bool {
    let word = tag.split(' ').next().unwrap_or("");
    !matches!(
        word,
        "SELECT"
            | "SHOW"
            | "FETCH"
            | "EXPLAIN"
            | "BEGIN"
            | "START"
            | "SET"
            | "RESET"
            | "DECLARE"
            | "CLOSE"
            | "MOVE"
            | "LISTEN"
            | "UNLISTEN"
            | "NOTIFY"
            | "DISCARD"
            | "PREPARE"
            | "DEALLOCATE"
            | "SAVEPOINT"
            | "RELEASE"
            | "COMMIT"
            | "ROLLBACK"
            | "VALUES"
            | "TABLE"
    )
}

async fn query(conn: &mut Conn, input: &str, st: &mut State) -> io::Result<()> {
    frontend::query(input, &mut conn.wbuf)?;
    conn.flush().await?;

    let mut current: Option<ResultSet> = None;
    // Statements since the last COMMIT/ROLLBACK whose changes an error would undo.
    let mut uncommitted = false;
    loop {
        match conn.read().await? {
            Message::RowDescription(body) => {
                let mut names = Vec::new();
                let mut right = Vec::new();
                let mut it = body.fields();
                while let Some(f) = it.next()? {
                    names.push(f.name().to_string());
                    right.push(is_numeric_oid(f.type_oid()));
                }
                current = Some(ResultSet::new(names, right));
            }
            Message::DataRow(body) => {
                if let Some(rs) = current.as_mut() {
                    let buf = body.buffer();
                    let mut values = Vec::new();
                    let mut ranges = body.ranges();
                    while let Some(r) = ranges.next()? {
                        values.push(r.map(|r| String::from_utf8_lossy(&buf[r]).into_owned()));
                    }
                    let room = st.out.room();
                    rs.push_row(values, room);
                }
            }
            Message::CommandComplete(body) => {
                let tag = body.tag()?.to_string();
                if matches!(tag.as_str(), "COMMIT" | "ROLLBACK")
                    || tag.starts_with("PREPARE TRANSACTION")
                {
                    uncommitted = false;
                } else if tag_changes_data(&tag)
                    // `SELECT n` without rows: SELECT INTO / CREATE TABLE AS.
                    || (tag.starts_with("SELECT") && current.is_none())
                {
                    uncommitted = true;
                }
                match current.take() {
                    Some(rs) => {
                        st.out.push_str(&rs.render());
                        if rs.is_partial() {
                            st.out.mark_truncated();
                        }
                        // psql also shows the tag of INSERT/UPDATE/DELETE/MERGE … RETURNING.
                        if ["INSERT", "UPDATE", "DELETE", "MERGE"]
                            .iter()
                            .any(|k| tag.starts_with(k))
                        {
                            st.out.push_str(&format!("{tag}\n"));
                        }
                        st.last_table = Some(rs);
                    }
                    None => st.out.push_str(&format!("{tag}\n")),
                }
            }
            Message::EmptyQueryResponse => {}
            Message::ErrorResponse(body) => {
                // Like psql, a result set cut by an error is not shown.
                current = None;
                st.out
                    .push_str(&format_server_error(&fields(body.fields()), Some(input)));
                if uncommitted {
                    st.out.push_str(
                        "NOTE:  the script ran as one transaction: changes made by the statements before the error were rolled back\n",
                    );
                }
                st.exit_code = 1;
            }
            Message::NoticeResponse(body) => {
                st.out.push_str(&format_notice(&fields(body.fields())))
            }
            Message::NotificationResponse(body) => {
                st.out.push_str(&format!(
                    "Asynchronous notification \"{}\" with payload \"{}\" received from server process with PID {}.\n",
                    body.channel()?,
                    body.message()?,
                    body.process_id()
                ));
            }
            Message::CopyInResponse(_) => {
                frontend::copy_fail(
                    "COPY FROM STDIN is not supported through warden exec",
                    &mut conn.wbuf,
                )?;
                conn.flush().await?;
            }
            Message::CopyData(body) => st.out.push_str(&String::from_utf8_lossy(body.data())),
            Message::ReadyForQuery(_) => break,
            _ => {} // ParameterStatus, CopyOutResponse, CopyDone, …
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_caret_like_psql() {
        let q = "select 1;\nselect * from nope;";
        // position 25 is the 'n' of "nope" (1-based over the whole script)
        assert_eq!(
            error_position(q, 25),
            "LINE 2: select * from nope;\n                      ^\n"
        );
    }

    #[test]
    fn formats_errors() {
        let f = Fields(vec![
            (b'S', "ERROR".into()),
            (b'C', "42P01".into()),
            (b'M', "relation \"nope\" does not exist".into()),
            (b'H', "check it".into()),
        ]);
        assert_eq!(
            format_server_error(&f, None),
            "ERROR:  relation \"nope\" does not exist (SQLSTATE 42P01)\nHINT:  check it\n"
        );
    }
}
