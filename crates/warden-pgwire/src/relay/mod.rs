//! The relay: moves a live session's bytes between client and upstream.
//!
//! Two halves run as two tasks of the session (so a packet wakes only the half it concerns):
//! - [`client_to_upstream`] reads the client, looks only at `Query`, `Parse`, `Execute`,
//!   `Close`, `Sync`, `FunctionCall`, `CopyDone`/`CopyFail`, `Terminate` and the names at the
//!   head of `Bind`, and forwards everything else as it arrives (large `Bind`/`CopyData`
//!   messages stream through without being buffered whole). Each `Query` and each `Execute`
//!   is one audit record ([`crate::prepared`] says what an `Execute` runs).
//!   Under statement review, [`client_to_upstream_reviewed`] holds each query, and each
//!   extended batch that executes something, until the backend decides every statement it
//!   runs (with its parameters); it renames prepared statements on their way to the server.
//! - [`upstream_to_client`] reads the upstream, looks only at `CommandComplete`,
//!   `ErrorResponse`, `EmptyQueryResponse`, `PortalSuspended`, `CopyInResponse` and
//!   `ReadyForQuery`, and is the **only writer to the
//!   client**: messages the proxy makes up (review notices, rejections, FATAL on window end)
//!   are written by it, at frame boundaries, so they never split a frame.
//!
//! Both halves write what they read in one `write_all` per read (flushing when the read
//! buffer is drained, never per message). The end of a session (FATAL) and made-up answers
//! reach the upstream half through [`Shared`] and a [`Signal`], so its loop polls nothing but
//! its socket and one atomic flag.
//!
//! Ordering of made-up answers: every forwarded message that makes the server send
//! `ReadyForQuery` (`Query`, `Sync`, `FunctionCall`) gets an [`Entry`] in a queue shared by the
//! halves, pushed *before* its bytes are forwarded. The upstream half pops one entry per
//! `ReadyForQuery`, attaching the command tags it saw to the entry's audit records. A made-up
//! answer is queued as [`Entry::Synthetic`] and written once every earlier entry is answered,
//! so a client that pipelines sees answers in the order it asked. A `Sync` the server ignores
//! because it arrived during COPY-in is recognised (`CopyInResponse` while a `Sync` entry is
//! first, until the client's `CopyDone`/`CopyFail`).
//!
//! The relay never decides access: under review it asks [`crate::ProxyBackend::authorize`].
//!
//! # Layout
//! - this file: the state both halves share (the [`Entry`] queue, the [`Expect`] walk in
//!   [`Follow`], [`Shared`], [`SessionInfo`]) and the client half without review;
//! - `matcher.rs`: the upstream half and the `Matcher` that pairs answers with entries;
//! - `reviewer.rs`: the client half under statement review (the `Reviewer`).

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use crate::audit::AuditSink;
use crate::backend::{SessionGrant, StatementLog};
use crate::frame::{FrameError, Item, Look, Scanner};
use crate::message;
use crate::prepared::{self, Op, Tracker};
use crate::stream::{BoxRead, BoxWrite};

mod matcher;
mod reviewer;

pub(crate) use matcher::{UpstreamEnd, upstream_to_client};
pub(crate) use reviewer::client_to_upstream_reviewed;

/// Bytes requested per read: large enough that big results move in few system calls.
const READ_CHUNK: usize = 64 * 1024;

/// One expected `ReadyForQuery` (or a made-up answer) in the order the client asked.
#[derive(Debug)]
pub(crate) enum Entry {
    /// A forwarded `Query`, `Sync` or `FunctionCall`.
    Ready {
        sync: bool,
        logs: Vec<StatementLog>,
        /// What of the server's answer reaches the client.
        answer: Answer,
    },
    /// The client's `CopyDone`/`CopyFail`.
    CopyEnd,
    /// The proxy's own answer; `ready` appends `ReadyForQuery` with the current status.
    Synthetic { bytes: BytesMut, ready: bool },
}

/// What of the server's answer to an entry reaches the client.
#[derive(Debug, Clone, Default)]
pub(crate) enum Answer {
    /// Everything, as the server sent it.
    #[default]
    Pass,
    /// The proxy's refusal: the server's `ErrorResponse` is replaced by this one (dropped
    /// when `None`); everything else, `ReadyForQuery` with the server's status included, passes.
    Replace(Option<BytesMut>),
    /// The proxy's own statement: nothing reaches the client, except that an error becomes
    /// this notice when set.
    Hidden { notice_on_error: Option<BytesMut> },
}

/// What the server answers next, one per forwarded message that it answers, pushed by the
/// client half (in order, before the bytes go out) into [`Shared::expect`]. The upstream half
/// walks them as the answers arrive, so it knows which message each answer belongs to: an
/// `ErrorResponse` fails exactly one message and the server skips the rest up to `Sync`; a
/// `Parse`/`Bind`/`Close` counts only once confirmed; an `Execute` is recorded only when the
/// server ran it, with the text of the statement as the server had it.
#[derive(Debug)]
pub(crate) enum Expect {
    /// `Parse`, `Bind`, `Close`: answered by `ParseComplete`, `BindComplete`, `CloseComplete`.
    Change(Op),
    /// `Describe`: answered by `RowDescription` or `NoData`.
    Describe,
    /// `Execute`: answered by `CommandComplete`, `EmptyQueryResponse` or `PortalSuspended`
    /// (after its rows or its copy data), or by an error.
    Execute(Exec),
    /// A `Query` or `FunctionCall`, the client's or the proxy's own: answered up to its
    /// `ReadyForQuery` (its record stays on its [`Entry`]). Holds the text of a query that may
    /// be an SQL `DEALLOCATE` (followed once the server ran it, in audited sessions).
    Simple(Option<Box<str>>),
    /// The proxy's own failing `Parse` (a refusal): answered by an error.
    Refusal,
    /// `Sync`: answered by `ReadyForQuery` (ignored by the server during COPY-in).
    Sync,
    /// `CopyDone` / `CopyFail`.
    CopyEnd,
}

/// The record of one `Execute`.
#[derive(Debug)]
pub(crate) enum Exec {
    /// Audited session: what it ran is read from the server-confirmed state when answered.
    Portal { portal: Box<[u8]>, at: SystemTime },
    /// Reviewed session: decided (and resolved) before it was sent.
    Decided(StatementLog),
}

/// The tag of an `Execute` the server skipped because an earlier message of its batch failed.
pub const SKIPPED: &str = "SKIPPED (an earlier message of the batch failed; not run)";

/// The walk through [`Expect`]s: the client half appends, the upstream half consumes (both
/// under [`Shared::follow`]'s lock, held for one message at a time).
#[derive(Default)]
pub(crate) struct Follow {
    ahead: VecDeque<Expect>,
    /// Audited sessions: prepared statements and portals as the server confirmed them.
    tracker: Option<Tracker>,
    /// The server is in COPY-in: `Sync`s it receives now are ignored.
    copy_in: bool,
    /// The simple query being answered failed.
    simple_failed: bool,
    /// A message of the extended batch being answered failed.
    failed: bool,
}

/// The proxy lost step with the server: it cannot say what runs any more.
const LOST: &str = "Warden lost track of the server's answers and cannot record what runs; \
     the session is closed (reconnect to go on)";

impl Follow {
    fn new(audited: bool) -> Self {
        Self {
            tracker: audited.then(Tracker::default),
            ..Self::default()
        }
    }

    /// The expectation the next answer belongs to (stale copy markers dropped).
    fn front(&mut self) -> Option<&Expect> {
        loop {
            match self.ahead.front()? {
                Expect::CopyEnd => {
                    self.copy_in = false;
                    self.ahead.pop_front();
                }
                Expect::Sync if self.copy_in => {
                    self.ahead.pop_front();
                }
                _ => return self.ahead.front(),
            }
        }
    }

    fn record(&self, exec: Exec, tag: Option<String>, info: &SessionInfo) -> StatementLog {
        match exec {
            Exec::Decided(mut log) => {
                log.tag = tag;
                log
            }
            Exec::Portal { portal, at } => {
                let text = self
                    .tracker
                    .as_ref()
                    .map(|t| t.execute(&portal).to_string())
                    .unwrap_or_default();
                info.log_at(text, None, tag, at)
            }
        }
    }

    /// One answer from the server. Completed `Execute`s go to `records`; `Ok(true)` when the
    /// answer belongs to a simple query (its tags are the entry's); `Err` when the proxy lost
    /// step.
    fn on(
        &mut self,
        tag: u8,
        body: &[u8],
        info: &SessionInfo,
        records: &mut Vec<StatementLog>,
    ) -> Result<bool, &'static str> {
        let simple = matches!(self.front(), Some(Expect::Simple(_)) | None);
        match tag {
            b'1' | b'2' | b'3' => match self.ahead.pop_front() {
                Some(Expect::Change(op)) => {
                    if let Some(t) = self.tracker.as_mut() {
                        t.apply(&op);
                    }
                }
                _ => return Err(LOST),
            },
            b'T' | b'n' if !simple => match self.ahead.pop_front() {
                Some(Expect::Describe) => {}
                _ => return Err(LOST),
            },
            b'C' | b'I' | b's' if !simple => match self.ahead.pop_front() {
                Some(Expect::Execute(exec)) => {
                    let t = match tag {
                        b'C' => message::command_tag(body),
                        b'I' => "EMPTY".into(),
                        _ => "SUSPENDED".into(),
                    };
                    records.push(self.record(exec, Some(t), info));
                }
                _ => return Err(LOST),
            },
            b'G' => self.copy_in = true,
            b'E' if simple => self.simple_failed = true,
            b'E' => {
                // The first unanswered message failed; the server skips the rest to Sync.
                self.failed = true;
                if let Some(Expect::Execute(exec)) = self.ahead.pop_front() {
                    let f = message::error_fields(body);
                    let t = format!("ERROR {}", message::field(&f, b'C').unwrap_or(""));
                    records.push(self.record(exec, Some(t), info));
                }
                self.skip_to_sync(info, records);
            }
            b'Z' => {
                let status = body.first().copied().unwrap_or(b'I');
                if simple {
                    if let Some(Expect::Simple(text)) = self.ahead.pop_front()
                        && let Some(t) = self.tracker.as_mut()
                    {
                        t.apply(&Op::ForgetUnnamed);
                        if let Some(text) = text
                            && !self.simple_failed
                        {
                            t.deallocate(&text);
                        }
                    }
                    self.simple_failed = false;
                } else {
                    if self.failed {
                        self.skip_to_sync(info, records);
                    }
                    self.failed = false;
                    match self.front() {
                        Some(Expect::Sync) => {
                            self.ahead.pop_front();
                        }
                        _ => return Err(LOST),
                    }
                }
                if status == b'I'
                    && let Some(t) = self.tracker.as_mut()
                {
                    // Portals end with their transaction.
                    t.forget_portals();
                }
            }
            _ => {}
        }
        Ok(simple)
    }

    /// After an error: everything up to the `Sync` is skipped by the server (its `Execute`s
    /// recorded as not run, its changes never made).
    fn skip_to_sync(&mut self, info: &SessionInfo, records: &mut Vec<StatementLog>) {
        while let Some(e) = self.ahead.front() {
            match e {
                Expect::Sync if !self.copy_in => return,
                Expect::Simple(_) => return,
                _ => {}
            }
            match self.ahead.pop_front() {
                Some(Expect::Execute(exec)) => {
                    records.push(self.record(exec, Some(SKIPPED.into()), info))
                }
                Some(Expect::CopyEnd) => self.copy_in = false,
                _ => {}
            }
        }
    }

    /// Records of `Execute`s never answered (the session ended first).
    fn leftovers(&mut self, info: &SessionInfo) -> Vec<StatementLog> {
        let ahead = std::mem::take(&mut self.ahead);
        ahead
            .into_iter()
            .filter_map(|e| match e {
                Expect::Execute(exec) => Some(self.record(exec, None, info)),
                _ => None,
            })
            .collect()
    }
}

/// A wake-up flag for one waiter: cheaper than `tokio::sync::Notify` (no waiter list, no lock),
/// which matters because the upstream half waits on it around every read.
#[derive(Default)]
pub(crate) struct Signal {
    raised: std::sync::atomic::AtomicBool,
    waker: futures::task::AtomicWaker,
}

impl Signal {
    pub fn raise(&self) {
        self.raised
            .store(true, std::sync::atomic::Ordering::Release);
        self.waker.wake();
    }

    /// Resolves once the flag is raised (consuming it).
    pub fn wait(&self) -> impl std::future::Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.raised.swap(false, std::sync::atomic::Ordering::AcqRel) {
                return std::task::Poll::Ready(());
            }
            self.waker.register(cx.waker());
            if self.raised.swap(false, std::sync::atomic::Ordering::AcqRel) {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
    }
}

/// Why the session is ending.
#[derive(Debug)]
pub(crate) enum Ending {
    /// Written to the client at the next frame boundary, then the session closes.
    Fatal(BytesMut),
    /// The client half is done; the upstream gets a moment to close.
    ClientDone,
}

/// State shared by the two halves of one session.
#[derive(Default)]
pub(crate) struct Shared {
    pub queue: Mutex<VecDeque<Entry>>,
    /// What the server answers next, message by message ([`Expect`]).
    pub follow: Mutex<Follow>,
    ending: Mutex<Option<Ending>>,
    /// Wakes the upstream half when a synthetic entry may be writable.
    pub wake: Signal,
}

impl Shared {
    fn push(&self, entries: impl IntoIterator<Item = Entry>) {
        if let Ok(mut q) = self.queue.lock() {
            q.extend(entries);
        }
    }

    /// `audited`: the proxy follows prepared statements itself (no statement review).
    pub fn new(audited: bool) -> Self {
        Self {
            follow: Mutex::new(Follow::new(audited)),
            ..Self::default()
        }
    }

    fn queue_expected(&self, expected: impl IntoIterator<Item = Expect>) {
        if let Ok(mut f) = self.follow.lock() {
            f.ahead.extend(expected);
        }
    }

    /// Asks the upstream half to end the session (the first request wins).
    pub fn end(&self, ending: Ending) {
        if let Ok(mut e) = self.ending.lock()
            && e.is_none()
        {
            *e = Some(ending);
        }
        self.wake.raise();
    }

    fn take_ending(&self) -> Option<Ending> {
        self.ending.lock().ok()?.take()
    }

    fn push_synthetic(&self, bytes: BytesMut, ready: bool) {
        self.push([Entry::Synthetic { bytes, ready }]);
        self.wake.raise();
    }

    /// Audit records of entries never answered (session ended first).
    pub fn drain_logs(&self, info: &SessionInfo) -> Vec<StatementLog> {
        let mut logs = self
            .follow
            .lock()
            .map(|mut f| f.leftovers(info))
            .unwrap_or_default();
        logs.extend(self.drain_entry_logs());
        logs
    }

    fn drain_entry_logs(&self) -> Vec<StatementLog> {
        let Ok(mut q) = self.queue.lock() else {
            return Vec::new();
        };
        q.drain(..)
            .flat_map(|e| match e {
                Entry::Ready { logs, .. } => logs,
                _ => Vec::new(),
            })
            .collect()
    }
}

/// Why a relay half stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RelayError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("{0}")]
    Limit(String),
    /// A message sequence the proxy cannot follow the server through.
    #[error("{0}")]
    Unsupported(&'static str),
    /// The audit store does not accept records: nothing more may reach the server.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditStalled),
}

/// Why a simple `Query` inside an unfinished extended batch ends the session: the server runs
/// it or skips it depending on whether an earlier message of the batch failed, which the
/// proxy would have to guess to record (or review) it.
const QUERY_IN_BATCH: &str = "a simple Query arrived inside an unfinished extended-protocol batch \
     (after Parse/Bind/Execute/Describe/Close, before Sync); the server may run or skip it, so \
     Warden cannot record what it does — send Sync before a simple Query";

/// Per-session facts the client half needs to write audit records.
pub(crate) struct SessionInfo {
    pub session_id: Uuid,
    pub user: Arc<str>,
    pub connection: Arc<str>,
    pub review_id: Option<Uuid>,
}

impl SessionInfo {
    pub fn from_grant(g: &SessionGrant) -> Self {
        Self {
            session_id: g.session_id,
            user: g.user.as_str().into(),
            connection: g.connection.as_str().into(),
            review_id: g.review_id,
        }
    }

    fn log(&self, statement: String, review_id: Option<Uuid>, tag: Option<String>) -> StatementLog {
        self.log_at(statement, review_id, tag, SystemTime::now())
    }

    fn log_at(
        &self,
        statement: String,
        review_id: Option<Uuid>,
        tag: Option<String>,
        at: SystemTime,
    ) -> StatementLog {
        StatementLog {
            session_id: self.session_id,
            user: self.user.clone(),
            connection: self.connection.clone(),
            review_id: review_id.or(self.review_id),
            statement,
            at,
            tag,
        }
    }
}

/// Body bytes of a `Bind` the relay looks at: enough for its portal and statement names
/// (PostgreSQL keeps 63 bytes of a name); its parameters stream through.
const BIND_HEAD: usize = 256;

fn look_client(tag: u8) -> Look {
    match tag {
        b'Q' | b'P' | b'S' | b'F' | b'c' | b'f' | b'X' | b'E' | b'C' | b'D' => Look::Whole,
        b'B' => Look::Head(BIND_HEAD),
        _ => Look::Pass,
    }
}

fn reserve_for_read(buf: &mut BytesMut, need_total: usize) {
    if need_total > buf.len() {
        buf.reserve(need_total - buf.len());
    }
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
}

/// How the client half ended without error.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ClientEnd {
    /// The client sent `Terminate` (forwarded).
    Terminated,
    /// The client closed its connection (a `Terminate` was sent upstream for it).
    Closed,
}

async fn close_upstream(upstream: &mut BoxWrite) {
    let _ = upstream.write_all(&message::TERMINATE).await;
    let _ = upstream.flush().await;
    let _ = upstream.shutdown().await;
}

/// Client → upstream without statement review: scan, record, forward.
pub(crate) async fn client_to_upstream(
    mut client: BoxRead,
    upstream: &mut BoxWrite,
    mut buf: BytesMut,
    shared: Arc<Shared>,
    info: SessionInfo,
    audit: AuditSink,
    max_message: usize,
) -> Result<ClientEnd, RelayError> {
    let mut scanner = Scanner::new(max_message);
    let mut entries: Vec<Entry> = Vec::new();
    let mut expect: Vec<Expect> = Vec::new();
    // Extended-protocol messages were forwarded since the last Sync.
    let mut open_batch = false;
    async {
        loop {
            let mut pos = 0;
            let mut terminated = false;
            let mut unsupported = None;
            let mut need = 0;
            // One timestamp per read: the statements in it arrived together.
            let mut now = None;
            let mut at = || *now.get_or_insert_with(SystemTime::now);
            loop {
                match scanner.next(&buf[pos..], look_client)? {
                    Item::Pass(n) => pos += n,
                    Item::Head { head, pass, .. } => {
                        // A Bind: only its names are read, its parameters stream through.
                        pos += pass;
                        open_batch = true;
                        expect.push(Expect::Change(match message::bind_names(head) {
                            Some((portal, statement)) => Op::Bind {
                                portal: portal.into(),
                                statement: statement.into(),
                                params: String::new(),
                            },
                            None => Op::ForgetPortals,
                        }));
                    }
                    Item::Frame { tag, body, len } => {
                        if matches!(tag, b'Q' | b'F') && open_batch {
                            unsupported = Some(QUERY_IN_BATCH);
                            break;
                        }
                        pos += len;
                        match tag {
                            b'Q' => {
                                let text = message::query_text(body)?;
                                let dealloc =
                                    prepared::may_deallocate(&text).then(|| text.as_str().into());
                                expect.push(Expect::Simple(dealloc));
                                entries.push(Entry::Ready {
                                    sync: false,
                                    logs: vec![info.log_at(text, None, None, at())],
                                    answer: Answer::Pass,
                                });
                            }
                            b'P' => {
                                open_batch = true;
                                let (name, text) = message::parse_parts(body)?;
                                expect.push(Expect::Change(Op::Parse {
                                    name: name.into(),
                                    server: name.into(),
                                    text: text.into(),
                                }));
                            }
                            b'E' => {
                                open_batch = true;
                                expect.push(Expect::Execute(Exec::Portal {
                                    portal: message::execute_portal(body)?.into(),
                                    at: at(),
                                }));
                            }
                            b'C' => {
                                open_batch = true;
                                let (kind, name) = message::target(body)?;
                                expect.push(Expect::Change(Op::Close {
                                    kind,
                                    name: name.into(),
                                }));
                            }
                            b'D' => {
                                open_batch = true;
                                expect.push(Expect::Describe);
                            }
                            b'S' => {
                                open_batch = false;
                                expect.push(Expect::Sync);
                                entries.push(Entry::Ready {
                                    sync: true,
                                    logs: Vec::new(),
                                    answer: Answer::Pass,
                                });
                            }
                            b'F' => {
                                expect.push(Expect::Simple(None));
                                entries.push(Entry::Ready {
                                    sync: false,
                                    logs: vec![info.log_at(
                                        function_call_text(body),
                                        None,
                                        None,
                                        at(),
                                    )],
                                    answer: Answer::Pass,
                                });
                            }
                            b'c' | b'f' => {
                                expect.push(Expect::CopyEnd);
                                entries.push(Entry::CopyEnd);
                            }
                            _ => {
                                terminated = true; // 'X'
                                break;
                            }
                        }
                    }
                    Item::NeedMore { total } => {
                        need = total;
                        break;
                    }
                }
            }
            if pos > 0 {
                // Nothing reaches the server (nor is recorded as sent) while its records could
                // not be made durable.
                audit.admit().await?;
            }
            if !expect.is_empty() {
                shared.queue_expected(expect.drain(..));
            }
            if !entries.is_empty() {
                shared.push(entries.drain(..));
            }
            if pos > 0 {
                upstream.write_all(&buf[..pos]).await?;
                upstream.flush().await?;
                buf.advance(pos);
            }
            if terminated {
                let _ = upstream.shutdown().await;
                return Ok(ClientEnd::Terminated);
            }
            if let Some(why) = unsupported {
                return Err(RelayError::Unsupported(why));
            }
            reserve_for_read(&mut buf, need);
            if client.read_buf(&mut buf).await? == 0 {
                close_upstream(upstream).await;
                return Ok(ClientEnd::Closed);
            }
        }
    }
    .await
}

fn function_call_text(body: &[u8]) -> String {
    let oid = if body.len() >= 4 {
        u32::from_be_bytes([body[0], body[1], body[2], body[3]])
    } else {
        0
    };
    format!("-- FunctionCall oid {oid}")
}

/// What the upstream half tells the client half of a reviewed session.
#[derive(Debug)]
pub(crate) enum Done {
    /// A `ReadyForQuery` answered `entries` queued entries; the server's transaction status is
    /// `status`; `confirmed` `ParseComplete`/`BindComplete`/`CloseComplete`s came with them.
    Answered {
        entries: usize,
        status: u8,
        confirmed: usize,
    },
    /// The server entered COPY-in: the client's copy data must flow before any answer comes.
    CopyIn,
}

/// The reviewed session's extras for the upstream half.
pub(crate) struct UpstreamReview {
    pub done: tokio::sync::mpsc::UnboundedSender<Done>,
    /// Settings the server must keep (name, value as first reported): a `ParameterStatus`
    /// that changes one outside the proxy's own statements ends the session.
    pub pinned: Vec<(String, String)>,
}

#[cfg(test)]
pub(crate) mod testkit {
    //! What the relay's unit tests share: a backend with scripted decisions (the
    //! [`ProxyBackend`] seam, nothing user-facing), a session, in-memory connections, and
    //! wire-protocol messages built by hand byte by byte (not with the crate's own writers, so
    //! a fixture cannot share a bug with the code under test).

    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, DuplexStream};
    use uuid::Uuid;

    use crate::audit::{self, AuditSink};
    use crate::backend::{
        AuthFailure, Login, ProxyBackend, SessionGrant, Statement, StatementDecision, StatementLog,
        Unrecorded, Upstream, UpstreamTls,
    };

    /// Decides statements from a script, in order (an unscripted question is denied), and
    /// keeps what it was asked and what it was given to record.
    #[derive(Default)]
    pub(crate) struct Scripted {
        decisions: Mutex<VecDeque<StatementDecision>>,
        asked: Mutex<Vec<String>>,
        recorded: Mutex<Vec<StatementLog>>,
    }

    impl Scripted {
        pub fn new(decisions: impl IntoIterator<Item = StatementDecision>) -> Arc<Self> {
            Arc::new(Self {
                decisions: Mutex::new(decisions.into_iter().collect()),
                ..Self::default()
            })
        }

        /// Every statement asked about, as the backend saw it (text, then parameters).
        pub fn asked(&self) -> Vec<String> {
            self.asked.lock().unwrap().clone()
        }

        /// `(statement, tag)` of every record handed over so far.
        pub fn recorded(&self) -> Vec<(String, Option<String>)> {
            self.recorded
                .lock()
                .unwrap()
                .iter()
                .map(|l| (l.statement.clone(), l.tag.clone()))
                .collect()
        }

        pub fn records(&self) -> Vec<StatementLog> {
            self.recorded.lock().unwrap().clone()
        }
    }

    impl ProxyBackend for Scripted {
        async fn authenticate(&self, _login: Login) -> Result<SessionGrant, AuthFailure> {
            Err(AuthFailure::Internal(
                "the relay's tests never log in".into(),
            ))
        }

        async fn start_session(&self, _grant: &SessionGrant) -> Result<(), String> {
            Ok(())
        }

        fn authorize(
            &self,
            _grant: &SessionGrant,
            statement: &Statement<'_>,
        ) -> impl Future<Output = StatementDecision> + Send {
            self.asked.lock().unwrap().push(statement.to_string());
            let decision =
                self.decisions
                    .lock()
                    .unwrap()
                    .pop_front()
                    .unwrap_or(StatementDecision::Deny {
                        message: "unscripted statement".into(),
                    });
            async move { decision }
        }

        async fn record(&self, batch: Vec<StatementLog>) -> Result<(), Unrecorded> {
            self.recorded.lock().unwrap().extend(batch);
            Ok(())
        }

        async fn session_ended(&self, _grant: &SessionGrant) {}
    }

    /// A reviewed session's grant (only its names reach the records).
    pub fn grant() -> Arc<SessionGrant> {
        let (_, terminate) = tokio::sync::watch::channel(None);
        Arc::new(SessionGrant {
            session_id: Uuid::from_u128(7),
            user: "ann@example.com".into(),
            connection: "shop".into(),
            upstream: Upstream {
                host: "127.0.0.1".into(),
                port: 5432,
                user: "shop".into(),
                password: None,
                database: "shop".into(),
                tls: UpstreamTls::Disable,
            },
            review_statements: true,
            review_id: None,
            ends_at: None,
            terminate,
        })
    }

    /// The audit channel into `backend` (records are handed over at once).
    pub fn sink(backend: &Arc<Scripted>) -> AuditSink {
        audit::spawn(
            backend.clone(),
            64,
            16,
            Duration::ZERO,
            Duration::from_secs(5),
        )
        .0
    }

    /// One message: type byte, length (itself included), body.
    pub fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    fn cstr(s: &[u8]) -> Vec<u8> {
        let mut v = s.to_vec();
        v.push(0);
        v
    }

    // ---- frontend ----

    pub fn query(sql: &str) -> Vec<u8> {
        msg(b'Q', &cstr(sql.as_bytes()))
    }

    /// `Parse` with no parameter types.
    pub fn parse(name: &[u8], sql: &str) -> Vec<u8> {
        let mut b = cstr(name);
        b.extend(cstr(sql.as_bytes()));
        b.extend_from_slice(&0i16.to_be_bytes());
        msg(b'P', &b)
    }

    /// `Bind` with text parameters and text results.
    pub fn bind(portal: &[u8], statement: &[u8], params: &[&str]) -> Vec<u8> {
        let mut b = cstr(portal);
        b.extend(cstr(statement));
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&(params.len() as i16).to_be_bytes());
        for p in params {
            b.extend_from_slice(&(p.len() as i32).to_be_bytes());
            b.extend_from_slice(p.as_bytes());
        }
        b.extend_from_slice(&0i16.to_be_bytes());
        msg(b'B', &b)
    }

    /// `Execute` with no row limit.
    pub fn execute(portal: &[u8]) -> Vec<u8> {
        let mut b = cstr(portal);
        b.extend_from_slice(&0i32.to_be_bytes());
        msg(b'E', &b)
    }

    pub fn sync() -> Vec<u8> {
        msg(b'S', &[])
    }

    pub fn terminate() -> Vec<u8> {
        msg(b'X', &[])
    }

    // ---- backend ----

    pub fn command_complete(tag: &str) -> Vec<u8> {
        msg(b'C', &cstr(tag.as_bytes()))
    }

    pub fn ready(status: u8) -> Vec<u8> {
        msg(b'Z', &[status])
    }

    pub fn parse_complete() -> Vec<u8> {
        msg(b'1', &[])
    }

    pub fn bind_complete() -> Vec<u8> {
        msg(b'2', &[])
    }

    /// `CopyInResponse`: text format, no columns.
    pub fn copy_in_response() -> Vec<u8> {
        msg(b'G', &[0, 0, 0])
    }

    /// An `ErrorResponse` as PostgreSQL sends one (severity twice, SQLSTATE, message).
    pub fn error(code: &str, text: &str) -> Vec<u8> {
        let mut b = Vec::new();
        for (field, value) in [(b'S', "ERROR"), (b'V', "ERROR"), (b'C', code), (b'M', text)] {
            b.push(field);
            b.extend(cstr(value.as_bytes()));
        }
        b.push(0);
        msg(b'E', &b)
    }

    /// Fields of an `ErrorResponse`/`NoticeResponse` body.
    pub fn fields(body: &[u8]) -> Vec<(u8, String)> {
        crate::message::error_fields(body)
    }

    /// Splits bytes into `(type, body)` messages; panics on a partial one.
    pub fn frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            assert!(bytes.len() >= 5, "partial header: {bytes:?}");
            let len = i32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
            assert!(bytes.len() > len, "partial message: {bytes:?}");
            out.push((bytes[0], bytes[5..1 + len].to_vec()));
            bytes = &bytes[1 + len..];
        }
        out
    }

    /// Reads until `n` whole messages have arrived (failing after 5 s), and exactly those.
    pub async fn read_messages(from: &mut DuplexStream, n: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let mut count = 0;
            let mut at = 0;
            while got.len() >= at + 5 {
                let len = i32::from_be_bytes([got[at + 1], got[at + 2], got[at + 3], got[at + 4]]);
                if got.len() < at + 1 + len as usize {
                    break;
                }
                at += 1 + len as usize;
                count += 1;
            }
            if count >= n {
                assert_eq!(count, n, "more messages than expected: {:?}", frames(&got));
                assert_eq!(at, got.len(), "a partial message follows: {got:?}");
                return got;
            }
            let mut chunk = [0u8; 4096];
            let read = tokio::time::timeout_at(deadline, from.read(&mut chunk))
                .await
                .unwrap_or_else(|_| panic!("waited for {n} messages, got {count}: {got:?}"))
                .unwrap();
            assert!(read > 0, "closed after {:?}", got);
            got.extend_from_slice(&chunk[..read]);
        }
    }

    /// Nothing arrives for a while (what is held stays held).
    pub async fn assert_quiet(from: &mut DuplexStream) {
        let mut chunk = [0u8; 256];
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(200), from.read(&mut chunk)).await
        {
            let n = r.unwrap();
            panic!("expected nothing, got {:?}", &chunk[..n]);
        }
    }
}
