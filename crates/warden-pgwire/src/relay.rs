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

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::{Buf, BytesMut};
use futures::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use crate::audit::AuditSink;
use crate::backend::Statement;
use crate::backend::{HeldOutcome, ProxyBackend, SessionGrant, StatementDecision, StatementLog};
use crate::frame::{self, FrameError, Item, Look, Scanner};
use crate::message::{self, Severity, sqlstate};
use crate::prepared::{self, Op, Run, Tracker};
use crate::stream::{BoxRead, BoxWrite};

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

/// Completions, confirmations and errors (all small); a `RowDescription` only by its tag.
fn look_upstream(tag: u8) -> Look {
    match tag {
        b'C' | b'E' | b'G' | b'Z' | b'I' | b's' | b'1' | b'2' | b'3' | b'n' => Look::Whole,
        b'T' => Look::Head(0),
        _ => Look::Pass,
    }
}

/// A reviewed session also reads parameter changes (tiny).
fn look_upstream_reviewed(tag: u8) -> Look {
    match tag {
        b'S' => Look::Whole,
        _ => look_upstream(tag),
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

/// The proxy's own statement that always fails to parse: sent in place of a refused
/// statement so that the server fails the transaction exactly as it would have failed the
/// statement (PostgreSQL's error is replaced by Warden's before the client sees it).
const REFUSED_SQL: &str = "WARDEN_REFUSED_THIS_STATEMENT";

/// Client → upstream under statement review: every `Query`, and every extended batch holding
/// an `Execute`, waits for [`ProxyBackend::authorize`].
///
/// The client half follows the server's state, not the client's wishes: before it decides
/// anything it waits until the server has answered everything sent before (so it knows the
/// transaction status and which prepared statements and portals really exist); a change to
/// statements or portals is applied only when the server confirms it.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn client_to_upstream_reviewed<B: ProxyBackend>(
    mut client: BoxRead,
    upstream: &mut BoxWrite,
    mut buf: BytesMut,
    shared: Arc<Shared>,
    info: SessionInfo,
    audit: AuditSink,
    max_message: usize,
    backend: Arc<B>,
    grant: Arc<SessionGrant>,
    done: tokio::sync::mpsc::UnboundedReceiver<Done>,
    status: u8,
) -> Result<ClientEnd, RelayError> {
    let mut r = Reviewer {
        shared,
        info,
        audit,
        backend,
        grant,
        out: BytesMut::new(),
        staged: Vec::new(),
        staged_len: 0,
        unit: None,
        tracker: Tracker::renaming(),
        unconfirmed: VecDeque::new(),
        discard_until_sync: false,
        max_message,
        done,
        outstanding: 0,
        copying: false,
        status,
    };
    async {
        loop {
            while let Some((tag, _, len)) = frame::whole(&buf, max_message)? {
                let frame = buf.split_to(len);
                if r.handle(tag, frame, &mut client, &mut buf, upstream)
                    .await?
                {
                    return Ok(ClientEnd::Terminated);
                }
            }
            r.flush_out(upstream).await?;
            let need = frame::header(&buf, max_message)?.map_or(0, |(_, total)| total);
            reserve_for_read(&mut buf, need);
            if client.read_buf(&mut buf).await? == 0 {
                close_upstream(upstream).await;
                return Ok(ClientEnd::Closed);
            }
        }
    }
    .await
}

/// How one statement fared in review.
enum Verdict {
    Allowed {
        review_id: Option<Uuid>,
        read_write: bool,
    },
    Refused {
        tag: &'static str,
        message: String,
        /// The review that refused it (none for a plain denial).
        review_id: Option<Uuid>,
    },
    /// The client went away while its statement was held.
    ClientGone,
}

/// An extended-protocol unit (messages up to `Sync`) some of which were forwarded (cut at
/// `Flush`): the statements and portals as they will be if the server accepts them.
struct Unit {
    scratch: Tracker,
    ops: Vec<Op>,
    /// The unit was let write: restore the read-only default after its Sync.
    reset_after: bool,
}

struct Reviewer<B> {
    shared: Arc<Shared>,
    info: SessionInfo,
    audit: AuditSink,
    backend: Arc<B>,
    grant: Arc<SessionGrant>,
    /// Decided bytes not yet written upstream.
    out: BytesMut,
    /// The open extended batch as the client sent it, resolved when it is decided.
    staged: Vec<BytesMut>,
    staged_len: usize,
    /// Set while a unit was cut at `Flush` and its `Sync` has not come yet.
    unit: Option<Unit>,
    /// Prepared statements and portals as the server confirmed them.
    tracker: Tracker,
    /// Per queued entry not yet answered: the changes it asked of the server, in order.
    unconfirmed: VecDeque<Vec<Op>>,
    /// After a refused batch cut at `Flush`: drop messages until `Sync`.
    discard_until_sync: bool,
    max_message: usize,
    done: tokio::sync::mpsc::UnboundedReceiver<Done>,
    /// Entries sent to the server and not answered yet.
    outstanding: usize,
    /// The server is in COPY-in: copy messages flow without waiting.
    copying: bool,
    /// The server's transaction status as of its last answer (`I`, `T`, `E`).
    status: u8,
}

fn closed() -> RelayError {
    RelayError::Io(io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the upstream half ended",
    ))
}

impl<B: ProxyBackend> Reviewer<B> {
    /// Handles one whole client frame; true when the client terminated.
    async fn handle(
        &mut self,
        tag: u8,
        frame: BytesMut,
        client: &mut BoxRead,
        buf: &mut BytesMut,
        upstream: &mut BoxWrite,
    ) -> Result<bool, RelayError> {
        // Nothing is decided, recorded or sent while records cannot be made durable.
        if tag != b'X' {
            self.audit.admit().await?;
        }
        if self.discard_until_sync {
            if tag == b'S' {
                self.discard_until_sync = false;
                self.refuse(None);
            }
            return Ok(false);
        }
        if self.copying && !matches!(tag, b'd' | b'c' | b'f' | b'H' | b'S') {
            return Err(RelayError::Frame(FrameError::Malformed(
                "message other than copy data during COPY",
            )));
        }
        let body = &frame[5..];
        match tag {
            b'Q' | b'F' if !self.staged.is_empty() || self.unit.is_some() => {
                return Err(RelayError::Unsupported(QUERY_IN_BATCH));
            }
            b'Q' => {
                let text = message::query_text(body)?;
                self.settle(upstream).await?;
                let statement = Statement {
                    text: &text,
                    params: None,
                };
                match self.decide(statement, client, buf).await {
                    Verdict::Allowed {
                        review_id,
                        read_write,
                    } => {
                        // An SQL DEALLOCATE of a renamed statement goes out with the server's
                        // name (the record keeps the client's text).
                        let translated = self.tracker.deallocate(&text);
                        let log = self.info.log(text, review_id, None);
                        let bytes = match translated {
                            Some(sql) => message::query(&sql),
                            None => frame,
                        };
                        // A simple query drops the unnamed statement and portal.
                        self.send_unit(
                            bytes,
                            vec![log],
                            vec![Op::ForgetUnnamed],
                            vec![Expect::Simple(None)],
                            read_write,
                        );
                    }
                    Verdict::Refused {
                        tag,
                        message,
                        review_id,
                    } => {
                        self.audit
                            .push([self.info.log(text, review_id, Some(tag.into()))])
                            .await;
                        self.refuse(Some(refusal(&message)));
                    }
                    Verdict::ClientGone => return Ok(true),
                }
            }
            b'P' | b'B' | b'E' | b'D' | b'C' => {
                if self.staged_len + frame.len() > self.max_message {
                    return Err(RelayError::Limit(format!(
                        "an extended-protocol batch above {} bytes cannot be held for review",
                        self.max_message
                    )));
                }
                self.staged_len += frame.len();
                self.staged.push(frame);
            }
            b'S' | b'H' if !self.staged.is_empty() => {
                self.decide_batch(tag, frame, client, buf, upstream).await?;
                if self.discard_until_sync && tag == b'S' {
                    self.discard_until_sync = false;
                }
            }
            b'S' => {
                // A bare Sync runs nothing: it closes a unit cut at Flush, or follows COPY.
                let ops = self.unit.take().map(|u| u.ops).unwrap_or_default();
                self.shared.queue_expected([Expect::Sync]);
                self.push_entry(true, Vec::new(), Answer::Pass, ops);
                self.out.extend_from_slice(&frame);
            }
            b'F' => {
                // A function call could run anything without a statement to review: refuse.
                self.audit
                    .push([self
                        .info
                        .log(function_call_text(body), None, Some("DENIED".into()))])
                    .await;
                self.settle(upstream).await?;
                self.refuse(Some(refusal(
                    "Warden: function calls are not allowed on a connection under statement review",
                )));
            }
            b'c' | b'f' => {
                self.copying = false;
                self.shared.queue_expected([Expect::CopyEnd]);
                self.shared.push([Entry::CopyEnd]);
                self.out.extend_from_slice(&frame);
            }
            b'X' => {
                self.out.extend_from_slice(&frame);
                self.flush_out(upstream).await?;
                let _ = upstream.shutdown().await;
                return Ok(true);
            }
            _ => self.out.extend_from_slice(&frame),
        }
        Ok(false)
    }

    /// Waits until the server answered everything sent so far (unless it is waiting for copy
    /// data), applying the changes it confirmed.
    async fn settle(&mut self, upstream: &mut BoxWrite) -> Result<(), RelayError> {
        self.flush_out(upstream).await?;
        while self.outstanding > 0 && !self.copying {
            match self.done.recv().await.ok_or_else(closed)? {
                Done::Answered {
                    entries,
                    status,
                    confirmed,
                } => {
                    self.outstanding = self.outstanding.saturating_sub(entries);
                    self.status = status;
                    let idle = status == b'I';
                    let mut left = confirmed;
                    for _ in 0..entries {
                        let Some(ops) = self.unconfirmed.pop_front() else {
                            break;
                        };
                        let n = left.min(ops.len());
                        for op in &ops[..n] {
                            self.tracker.apply(op);
                        }
                        left -= n;
                        // ForgetUnnamed holds whatever the server did.
                        for op in &ops[n..] {
                            if matches!(op, Op::ForgetUnnamed) {
                                self.tracker.apply(op);
                            }
                        }
                    }
                    if idle {
                        // Portals end with their transaction.
                        self.tracker.forget_portals();
                    }
                }
                Done::CopyIn => self.copying = true,
            }
        }
        Ok(())
    }

    /// Resolves, decides and forwards (or refuses) the staged batch at `Sync` or `Flush`.
    async fn decide_batch(
        &mut self,
        tag: u8,
        frame: BytesMut,
        client: &mut BoxRead,
        buf: &mut BytesMut,
        upstream: &mut BoxWrite,
    ) -> Result<(), RelayError> {
        if self.unit.is_none() {
            self.settle(upstream).await?;
        }
        let mut scratch = match &self.unit {
            Some(u) => u.scratch.clone(),
            None => self.tracker.clone(),
        };
        let mut ops = Vec::new();
        let mut runs = Vec::new();
        let mut expect = Vec::new();
        let mut renamed = BytesMut::with_capacity(self.staged_len);
        let staged = std::mem::take(&mut self.staged);
        self.staged_len = 0;
        for f in &staged {
            stage(
                &mut scratch,
                f,
                &mut renamed,
                &mut runs,
                &mut ops,
                &mut expect,
            )?;
        }
        self.tracker.keep_counter(&scratch);
        let mut allowed = Vec::with_capacity(runs.len());
        let mut refused = None;
        for run in &runs {
            let statement = Statement {
                text: &run.text,
                params: run.params.as_deref(),
            };
            match self.decide(statement, client, buf).await {
                Verdict::Allowed {
                    review_id,
                    read_write,
                } => allowed.push((review_id, read_write)),
                Verdict::Refused {
                    tag,
                    message,
                    review_id,
                } => {
                    refused = Some((tag, message, allowed.len(), review_id));
                    break;
                }
                Verdict::ClientGone => {
                    return Err(RelayError::Io(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "client gone while a statement was held",
                    )));
                }
            }
        }
        if let Some((refusal_tag, message, at, review_id)) = refused {
            let logs: Vec<_> = runs
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let review = if i == at { review_id } else { None };
                    self.info
                        .log(r.to_string(), review, Some(refusal_tag.into()))
                })
                .collect();
            self.audit.push(logs).await;
            if tag == b'S' {
                self.refuse(Some(refusal(&message)));
            } else {
                self.shared.push_synthetic(refusal(&message), false);
                self.discard_until_sync = true;
            }
            return Ok(());
        }
        let read_write = allowed.iter().any(|(_, rw)| *rw);
        let mut logs = runs
            .iter()
            .zip(&allowed)
            .map(|(run, (review_id, _))| self.info.log(run.to_string(), *review_id, None));
        for e in expect.iter_mut() {
            if let Expect::Execute(exec) = e
                && let Some(log) = logs.next()
            {
                *exec = Exec::Decided(log);
            }
        }
        if tag == b'H' {
            // The unit goes on after this Flush: its changes wait for its Sync. The server
            // fixes read-only at the unit's first message, so only a first part can be let
            // write; a write in a later part runs read-only (and fails with 25006).
            if self.unit.is_none() {
                let reset_after = self.let_write(read_write);
                self.unit = Some(Unit {
                    scratch: Tracker::default(),
                    ops: Vec::new(),
                    reset_after,
                });
            }
            if let Some(unit) = self.unit.as_mut() {
                unit.scratch = scratch;
                unit.ops.extend(ops);
            }
            self.shared.queue_expected(expect);
            renamed.extend_from_slice(&frame);
            self.out.extend_from_slice(&renamed);
            return Ok(());
        }
        renamed.extend_from_slice(&frame);
        expect.push(Expect::Sync);
        match self.unit.take() {
            Some(started) => {
                let mut all_ops = started.ops;
                all_ops.extend(ops);
                self.shared.queue_expected(expect);
                self.push_entry(true, Vec::new(), Answer::Pass, all_ops);
                self.out.extend_from_slice(&renamed);
                if started.reset_after {
                    self.hidden("SET SESSION default_transaction_read_only = on", None);
                }
            }
            None => self.send_unit(renamed, Vec::new(), ops, expect, read_write),
        }
        Ok(())
    }

    /// Before a unit that may write: lets the server's next transaction (or the open one, if
    /// it has not read yet) be read-write. True when the session default must be restored
    /// after the unit.
    fn let_write(&mut self, read_write: bool) -> bool {
        if !read_write {
            return false;
        }
        match self.status {
            b'I' => {
                self.hidden("SET SESSION default_transaction_read_only = off", None);
                true
            }
            b'T' => {
                self.hidden(
                    "SET TRANSACTION READ WRITE",
                    Some(message::error_frame(
                        Severity::Notice,
                        sqlstate::READ_ONLY_SQL_TRANSACTION,
                        "Warden: an approved write inside a transaction block can run only as \
                         the block's first statement (PostgreSQL fixes read-only before the \
                         first query); roll back, then run BEGIN and the approved statement first",
                    )),
                );
                false
            }
            // An aborted transaction runs nothing until it ends.
            _ => false,
        }
    }

    /// Queues a unit the server answers with one `ReadyForQuery`; `read_write` lets it write
    /// (the server runs everything else read-only).
    fn send_unit(
        &mut self,
        bytes: BytesMut,
        logs: Vec<StatementLog>,
        ops: Vec<Op>,
        expect: Vec<Expect>,
        read_write: bool,
    ) {
        let sync = bytes.first() != Some(&b'Q');
        let reset_after = self.let_write(read_write);
        self.shared.queue_expected(expect);
        self.push_entry(sync, logs, Answer::Pass, ops);
        self.out.extend_from_slice(&bytes);
        if reset_after {
            self.hidden("SET SESSION default_transaction_read_only = on", None);
        }
    }

    /// The proxy's own statement, answered out of the client's sight.
    /// Being a simple query, it drops the unnamed statement and portal (a unit that binds
    /// the unnamed statement of an earlier batch then fails on the server: fail closed).
    fn hidden(&mut self, sql: &str, notice_on_error: Option<BytesMut>) {
        self.shared.queue_expected([Expect::Simple(None)]);
        self.push_entry(
            false,
            Vec::new(),
            Answer::Hidden { notice_on_error },
            vec![Op::ForgetUnnamed],
        );
        self.out.extend_from_slice(&message::query(sql));
    }

    /// Sends the server a statement that fails in place of the refused one, so the
    /// transaction fails as PostgreSQL would fail it; `error` replaces the server's.
    fn refuse(&mut self, error: Option<BytesMut>) {
        match self.unit.take() {
            // Part of the unit is on the server: end it with a failing Parse and its Sync.
            Some(unit) => {
                let mut ops = unit.ops;
                ops.push(Op::ForgetUnnamed);
                self.tracker.apply(&Op::ForgetUnnamed);
                self.shared.queue_expected([Expect::Refusal, Expect::Sync]);
                self.push_entry(true, Vec::new(), Answer::Replace(error), ops);
                self.out
                    .extend_from_slice(&message::parse_unnamed_and_sync(REFUSED_SQL));
                if unit.reset_after {
                    self.hidden("SET SESSION default_transaction_read_only = on", None);
                }
            }
            None => {
                self.shared.queue_expected([Expect::Simple(None)]);
                self.push_entry(
                    false,
                    Vec::new(),
                    Answer::Replace(error),
                    vec![Op::ForgetUnnamed],
                );
                self.out.extend_from_slice(&message::query(REFUSED_SQL));
            }
        }
    }

    fn push_entry(&mut self, sync: bool, logs: Vec<StatementLog>, answer: Answer, ops: Vec<Op>) {
        self.shared.push([Entry::Ready { sync, logs, answer }]);
        self.unconfirmed.push_back(ops);
        self.outstanding += 1;
    }

    async fn flush_out(&mut self, upstream: &mut BoxWrite) -> Result<(), RelayError> {
        if !self.out.is_empty() {
            // Nothing reaches the server while its records could not be made durable.
            self.audit.admit().await?;
            upstream.write_all(&self.out).await?;
            upstream.flush().await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Asks the backend about one statement and, if held, waits for the outcome while still
    /// noticing a client that hangs up.
    async fn decide(
        &mut self,
        statement: Statement<'_>,
        client: &mut BoxRead,
        buf: &mut BytesMut,
    ) -> Verdict {
        let decision = self.backend.authorize(&self.grant, &statement).await;
        match decision {
            StatementDecision::Allow {
                review_id,
                read_write,
            } => Verdict::Allowed {
                review_id,
                read_write,
            },
            StatementDecision::Deny { message } => Verdict::Refused {
                tag: "DENIED",
                message,
                review_id: None,
            },
            StatementDecision::Held {
                review_id: held_by,
                review_url,
                outcome,
            } => {
                let notice = message::error_frame(
                    Severity::Notice,
                    sqlstate::SUCCESSFUL_COMPLETION,
                    &format!("Warden: statement held for approval at {review_url}"),
                );
                self.shared.push_synthetic(notice, false);
                let mut outcome = outcome.fuse();
                loop {
                    tokio::select! {
                        o = &mut outcome => return match o {
                            HeldOutcome::Approved { review_id } => Verdict::Allowed {
                                review_id: Some(review_id),
                                read_write: true,
                            },
                            HeldOutcome::Rejected { by, reason } => Verdict::Refused {
                                tag: "REJECTED",
                                message: format!("Warden: statement rejected by {by}: {reason}"),
                                review_id: held_by,
                            },
                            HeldOutcome::Expired => Verdict::Refused {
                                tag: "EXPIRED",
                                message: "Warden: review expired — resubmit the statement".into(),
                                review_id: held_by,
                            },
                        },
                        n = client.read_buf(buf), if buf.len() < self.max_message => {
                            // Keep what the client pipelines; notice if it hangs up.
                            if !matches!(n, Ok(n) if n > 0) {
                                return Verdict::ClientGone;
                            }
                        }
                    }
                }
            }
        }
    }
}

fn refusal(message: &str) -> BytesMut {
    message::error_frame(Severity::Error, sqlstate::INSUFFICIENT_PRIVILEGE, message)
}

/// Adds one staged extended-protocol message to the batch for the server: statement names
/// renamed, each `Execute` resolved to what it runs, each change noted for confirmation.
fn stage(
    t: &mut Tracker,
    frame: &[u8],
    out: &mut BytesMut,
    runs: &mut Vec<Run>,
    ops: &mut Vec<Op>,
    expect: &mut Vec<Expect>,
) -> Result<(), RelayError> {
    let tag = frame[0];
    let body = &frame[5..];
    match tag {
        b'P' => {
            let (name, text) = message::parse_parts(body)?;
            let server = t.server_name_for_parse(name);
            let op = Op::Parse {
                name: name.into(),
                server: server.clone(),
                text: text.into(),
            };
            t.apply(&op);
            expect.push(Expect::Change(op.clone()));
            ops.push(op);
            out.extend_from_slice(&message::rebuild(b'P', 0, &server, &body[name.len() + 1..]));
        }
        b'B' => {
            let (portal, statement) =
                message::bind_names(body).ok_or(FrameError::Malformed("Bind"))?;
            let params = message::bind_params(body)?;
            let server = t.server_name(statement);
            let op = Op::Bind {
                portal: portal.into(),
                statement: statement.into(),
                params,
            };
            t.apply(&op);
            expect.push(Expect::Change(op.clone()));
            ops.push(op);
            let mut rest = server.to_vec();
            rest.push(0);
            rest.extend_from_slice(&body[portal.len() + statement.len() + 2..]);
            out.extend_from_slice(&message::rebuild(b'B', 0, portal, &rest));
        }
        b'E' => {
            runs.push(t.execute(message::execute_portal(body)?));
            // Its record is filled in once the run is decided.
            expect.push(Expect::Execute(Exec::Portal {
                portal: Box::default(),
                at: SystemTime::now(),
            }));
            out.extend_from_slice(frame);
        }
        // Describe / Close
        _ => {
            let (kind, name) = message::target(body)?;
            let server = if kind == b'S' {
                t.server_name(name)
            } else {
                name.into()
            };
            if tag == b'C' {
                let op = Op::Close {
                    kind,
                    name: name.into(),
                };
                t.apply(&op);
                expect.push(Expect::Change(op.clone()));
                ops.push(op);
            } else {
                expect.push(Expect::Describe);
            }
            out.extend_from_slice(&message::rebuild(tag, kind, &server, &[]));
        }
    }
    Ok(())
}

/// How the upstream half ended.
#[derive(Debug)]
pub(crate) enum UpstreamEnd {
    /// The upstream closed the connection (normally after `Terminate`).
    UpstreamClosed,
    /// The session was ended by the proxy; the FATAL frame was written if `notified`.
    Ended { notified: bool },
}

/// State the upstream half keeps while matching answers to entries.
struct Matcher {
    copy_ignores_sync: bool,
    carry: Vec<StatementLog>,
    tags: Vec<String>,
    status: u8,
    /// Queued entries answered since the last report to a reviewed client half.
    answered: usize,
}

impl Matcher {
    /// Pops the entry answered by a `ReadyForQuery` (counting, in `answered`, every queued
    /// entry the server has now answered).
    fn pop(&mut self, q: &mut VecDeque<Entry>) -> Option<Vec<StatementLog>> {
        loop {
            match q.front()? {
                Entry::CopyEnd => {
                    q.pop_front();
                    self.copy_ignores_sync = false;
                }
                Entry::Ready { sync: true, .. } if self.copy_ignores_sync => {
                    if let Some(Entry::Ready { logs, .. }) = q.pop_front() {
                        self.answered += 1;
                        self.carry.extend(logs);
                    }
                }
                Entry::Synthetic { .. } => {
                    // Only reachable if the queue lost step with the server; drop rather than
                    // answer out of order.
                    q.pop_front();
                }
                Entry::Ready { .. } => {
                    let Some(Entry::Ready { logs, .. }) = q.pop_front() else {
                        return None;
                    };
                    self.answered += 1;
                    // Stale CopyEnd markers (a COPY that failed before the client finished).
                    while matches!(q.front(), Some(Entry::CopyEnd)) && !self.copy_ignores_sync {
                        q.pop_front();
                    }
                    let mut all = std::mem::take(&mut self.carry);
                    all.extend(logs);
                    return Some(all);
                }
            }
        }
    }

    /// How the server's answer to the entry now being answered reaches the client.
    fn answer_mode(q: &VecDeque<Entry>) -> Option<Answer> {
        q.iter().find_map(|e| match e {
            Entry::Ready { answer, .. } => Some(answer.clone()),
            _ => None,
        })
    }

    /// `CopyInResponse`: a `Sync` entry first in line was read by the server in COPY-in mode.
    fn copy_in(&mut self, q: &VecDeque<Entry>) {
        let first = q.iter().find(|e| !matches!(e, Entry::CopyEnd));
        if matches!(first, Some(Entry::Ready { sync: true, .. }))
            && !matches!(q.front(), Some(Entry::CopyEnd))
        {
            self.copy_ignores_sync = true;
        }
    }

    /// Attaches the command tags of a simple query's (or function call's) answer to its record.
    /// (Records of `Execute`s never ride on entries: [`Follow`] writes them as they complete.)
    fn finish(&mut self, mut logs: Vec<StatementLog>, out: &mut Vec<StatementLog>) {
        let tags = std::mem::take(&mut self.tags);
        if logs.len() == 1 {
            if !tags.is_empty() {
                logs[0].tag = Some(tags.join(", "));
            }
        } else {
            for (log, tag) in logs.iter_mut().zip(tags) {
                log.tag = Some(tag);
            }
        }
        out.append(&mut logs);
    }

    /// Records still held when the session ends.
    fn leftovers(&mut self) -> Vec<StatementLog> {
        std::mem::take(&mut self.carry)
    }
}

/// The upstream half's state in a reviewed session.
struct Reviewed {
    shared: UpstreamReview,
    /// How the answer now arriving reaches the client; `None` until its first message.
    mode: Option<Answer>,
    /// Confirmations (`1`, `2`, `3`) since the last report.
    confirmed: usize,
}

impl Reviewed {
    /// After a `ReadyForQuery`: tells the client half what the server has now answered.
    fn answered(&mut self, m: &mut Matcher) {
        let _ = self.shared.done.send(Done::Answered {
            entries: std::mem::take(&mut m.answered),
            status: m.status,
            confirmed: std::mem::take(&mut self.confirmed),
        });
        self.mode = None;
    }

    /// A `ParameterStatus` that changes a pinned setting: the FATAL that ends the session.
    fn violation(&self, body: &[u8]) -> Option<BytesMut> {
        let (name, value) = message::parameter_status(body)?;
        let (_, want) = self.shared.pinned.iter().find(|(k, _)| *k == name)?;
        (*want != value).then(|| {
            message::error_frame(
                Severity::Fatal,
                sqlstate::INSUFFICIENT_PRIVILEGE,
                &format!(
                    "Warden: the server setting {name} changed to {value:?}; Warden keeps it \
                     at {want:?} on a connection under statement review, so the session is \
                     closed (reconnect to go on)"
                ),
            )
        })
    }
}

/// Writes synthetic entries at the head of the queue; call only at a frame boundary.
async fn write_synthetics(shared: &Shared, client: &mut BoxWrite, status: u8) -> io::Result<bool> {
    let mut out = BytesMut::new();
    if let Ok(mut q) = shared.queue.lock() {
        while matches!(
            q.front(),
            Some(Entry::Synthetic { .. }) | Some(Entry::CopyEnd)
        ) {
            if let Some(Entry::Synthetic { bytes, ready }) = q.pop_front() {
                out.extend_from_slice(&bytes);
                if ready {
                    message::ready_for_query(&mut out, status);
                }
            } else {
                // A CopyEnd first in line with nothing in flight is stale.
            }
        }
    }
    if out.is_empty() {
        return Ok(false);
    }
    client.write_all(&out).await?;
    Ok(true)
}

/// Upstream → client, the single writer to the client. [`Shared::end`] tells it to close the
/// session: with a FATAL frame (window over, revoked, shutdown, broken client input) or quietly
/// once the client half has finished (the upstream then gets a moment to close).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn upstream_to_client(
    upstream: BoxRead,
    client: BoxWrite,
    buf: BytesMut,
    shared: Arc<Shared>,
    audit: AuditSink,
    info: SessionInfo,
    status: u8,
    review: Option<UpstreamReview>,
) -> Result<UpstreamEnd, RelayError> {
    let mut m = Matcher {
        copy_ignores_sync: false,
        carry: Vec::new(),
        tags: Vec::new(),
        status,
        answered: 0,
    };
    let review = review.map(|shared| Reviewed {
        shared,
        mode: None,
        confirmed: 0,
    });
    let result = upstream_to_client_inner(
        &mut m, upstream, client, buf, &shared, &audit, &info, review,
    )
    .await;
    let leftovers = m.leftovers();
    if !leftovers.is_empty() {
        audit.push(leftovers).await;
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn upstream_to_client_inner(
    m: &mut Matcher,
    mut upstream: BoxRead,
    mut client: BoxWrite,
    mut buf: BytesMut,
    shared: &Shared,
    audit: &AuditSink,
    info: &SessionInfo,
    mut review: Option<Reviewed>,
) -> Result<UpstreamEnd, RelayError> {
    // Server messages are trusted for size (DataRow can be large); only the inspected,
    // small ones are ever buffered whole.
    let mut scanner = Scanner::new(i32::MAX as usize);
    let look = if review.is_some() {
        look_upstream_reviewed
    } else {
        look_upstream
    };
    let mut records = Vec::new();
    let mut ending: Option<BytesMut> = None;
    let grace = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(grace);
    let mut end_fired = false;
    loop {
        if scanner.at_boundary() {
            if let Some(fatal) = ending.take() {
                client.write_all(&fatal).await?;
                client.flush().await?;
                let _ = client.shutdown().await;
                return Ok(UpstreamEnd::Ended { notified: true });
            }
            if write_synthetics(shared, &mut client, m.status).await? {
                client.flush().await?;
            }
        }
        let mut pos = 0;
        let mut written = 0;
        let need;
        loop {
            let start = pos;
            let item = scanner.next(&buf[pos..], look)?;
            if let Some(rv) = review.as_mut()
                && rv.mode.is_none()
                && !matches!(item, Item::NeedMore { .. })
            {
                rv.mode = shared
                    .queue
                    .lock()
                    .ok()
                    .and_then(|q| Matcher::answer_mode(&q));
            }
            let mode = review.as_ref().and_then(|rv| rv.mode.as_ref());
            // Which message this answer belongs to (records of the Executes it completes).
            let seen = match &item {
                Item::Frame { tag, body, .. } => Some((*tag, *body)),
                Item::Head { tag, .. } => Some((*tag, &[][..])),
                _ => None,
            };
            let mut simple = true;
            if let Some((tag, body)) = seen {
                let followed = shared
                    .follow
                    .lock()
                    .map_err(|_| LOST)
                    .and_then(|mut f| f.on(tag, body, info, &mut records));
                match followed {
                    Ok(s) => simple = s,
                    Err(why) => {
                        tracing::error!("{why}");
                        client.write_all(&buf[written..start]).await?;
                        client
                            .write_all(&message::error_frame(
                                Severity::Fatal,
                                sqlstate::PROTOCOL_VIOLATION,
                                &format!("Warden: {why}"),
                            ))
                            .await?;
                        client.flush().await?;
                        let _ = client.shutdown().await;
                        return Ok(UpstreamEnd::Ended { notified: true });
                    }
                }
            }
            if let Some(Answer::Hidden { notice_on_error }) = mode {
                // The proxy's own statement: none of its answer reaches the client.
                let (n, tag, status) = match item {
                    Item::Pass(n) | Item::Head { pass: n, .. } => (n, 0, b'I'),
                    Item::Frame { tag, body, len } => {
                        (len, tag, body.first().copied().unwrap_or(b'I'))
                    }
                    Item::NeedMore { total } => {
                        need = total;
                        break;
                    }
                };
                if start > written {
                    client.write_all(&buf[written..start]).await?;
                }
                written = start + n;
                pos += n;
                if tag == b'E'
                    && let Some(notice) = notice_on_error
                {
                    client.write_all(notice).await?;
                }
                if tag == b'Z' {
                    m.status = status;
                    let _ = shared.queue.lock().ok().and_then(|mut q| m.pop(&mut q));
                    if let Some(rv) = review.as_mut() {
                        rv.answered(m);
                    }
                }
                continue;
            }
            match item {
                Item::Pass(n) | Item::Head { pass: n, .. } => pos += n,
                Item::Frame { tag, body, len } => {
                    match tag {
                        b'C' | b'I' | b's' if !simple => {}
                        b'C' => m.tags.push(message::command_tag(body)),
                        b'I' => m.tags.push("EMPTY".into()),
                        b's' => m.tags.push("SUSPENDED".into()),
                        b'E' => {
                            if let Some(Answer::Replace(replacement)) = mode {
                                // Warden's refusal in place of the server's error.
                                client.write_all(&buf[written..start]).await?;
                                if let Some(r) = replacement {
                                    client.write_all(r).await?;
                                }
                                pos += len;
                                written = pos;
                                continue;
                            }
                            if simple {
                                let f = message::error_fields(body);
                                m.tags.push(format!(
                                    "ERROR {}",
                                    message::field(&f, b'C').unwrap_or("")
                                ));
                            }
                        }
                        b'G' => {
                            if let Ok(q) = shared.queue.lock() {
                                m.copy_in(&q);
                            }
                            if let Some(rv) = review.as_ref() {
                                let _ = rv.shared.done.send(Done::CopyIn);
                            }
                        }
                        b'1' | b'2' | b'3' => {
                            if let Some(rv) = review.as_mut() {
                                rv.confirmed += 1;
                            }
                        }
                        b'S' => {
                            if let Some(rv) = review.as_ref()
                                && let Some(fatal) = rv.violation(body)
                            {
                                client.write_all(&buf[written..start]).await?;
                                client.write_all(&fatal).await?;
                                client.flush().await?;
                                let _ = client.shutdown().await;
                                return Ok(UpstreamEnd::Ended { notified: true });
                            }
                        }
                        _ => {
                            // 'Z' ReadyForQuery
                            m.status = body.first().copied().unwrap_or(b'I');
                            let popped = shared.queue.lock().ok().and_then(|mut q| m.pop(&mut q));
                            match popped {
                                Some(logs) => m.finish(logs, &mut records),
                                None => m.tags.clear(),
                            }
                            if let Some(rv) = review.as_mut() {
                                rv.answered(m);
                            }
                            pos += len;
                            // Answers the proxy owes after this one.
                            let due = shared
                                .queue
                                .lock()
                                .map(|q| matches!(q.front(), Some(Entry::Synthetic { .. })))
                                .unwrap_or(false);
                            if due {
                                client.write_all(&buf[written..pos]).await?;
                                written = pos;
                                write_synthetics(shared, &mut client, m.status).await?;
                            }
                            continue;
                        }
                    }
                    pos += len;
                }
                Item::NeedMore { total } => {
                    need = total;
                    break;
                }
            }
        }
        if pos > written {
            client.write_all(&buf[written..pos]).await?;
        }
        if pos > 0 {
            client.flush().await?;
            buf.advance(pos);
        }
        if !records.is_empty() {
            audit.push(records.drain(..)).await;
        }
        if ending.is_some() && scanner.at_boundary() {
            continue;
        }
        reserve_for_read(&mut buf, need);
        // Biased: the common case (upstream data) is polled first and alone.
        tokio::select! {
            biased;
            n = upstream.read_buf(&mut buf) => {
                if n? == 0 {
                    // The server may close because the client half ended the session (its
                    // write half dropped): the FATAL that says why still goes first.
                    let fatal = ending.take().or_else(|| match shared.take_ending() {
                        Some(Ending::Fatal(f)) => Some(f),
                        _ => None,
                    });
                    if let Some(f) = fatal.filter(|_| scanner.at_boundary()) {
                        let _ = client.write_all(&f).await;
                        let _ = client.flush().await;
                    }
                    let _ = client.shutdown().await;
                    return Ok(UpstreamEnd::UpstreamClosed);
                }
            }
            _ = shared.wake.wait(), if scanner.at_boundary() || !end_fired => {
                if !end_fired && let Some(e) = shared.take_ending() {
                    end_fired = true;
                    ending = match e {
                        Ending::Fatal(frame) => Some(frame),
                        Ending::ClientDone => None,
                    };
                    // Give a frame in flight a moment to complete so a FATAL lands whole, and
                    // the upstream a moment to close after the client's Terminate.
                    grace.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(1));
                }
            }
            _ = &mut grace, if end_fired => {
                let _ = client.shutdown().await;
                return Ok(UpstreamEnd::Ended { notified: false });
            }
        }
    }
}
