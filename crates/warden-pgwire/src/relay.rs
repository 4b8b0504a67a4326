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
use crate::backend::{HeldOutcome, ProxyBackend, SessionGrant, StatementDecision, StatementLog};
use crate::frame::{self, FrameError, Item, Look, Scanner};
use crate::message::{self, Severity, sqlstate};
use crate::prepared::Tracker;
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
        /// Written just before this entry's `ReadyForQuery` (an extended batch the backend
        /// refused: the server only sees its `Sync`).
        error_before: Option<BytesMut>,
    },
    /// The client's `CopyDone`/`CopyFail`.
    CopyEnd,
    /// The proxy's own answer; `ready` appends `ReadyForQuery` with the current status.
    Synthetic { bytes: BytesMut, ready: bool },
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
    pub fn drain_logs(&self) -> Vec<StatementLog> {
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
}

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
        b'Q' | b'P' | b'S' | b'F' | b'c' | b'f' | b'X' | b'E' | b'C' => Look::Whole,
        b'B' => Look::Head(BIND_HEAD),
        _ => Look::Pass,
    }
}

fn look_upstream(tag: u8) -> Look {
    match tag {
        b'C' | b'E' | b'G' | b'Z' | b'I' | b's' => Look::Whole,
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
    mut upstream: BoxWrite,
    mut buf: BytesMut,
    shared: Arc<Shared>,
    info: SessionInfo,
    audit: AuditSink,
    max_message: usize,
) -> Result<ClientEnd, RelayError> {
    let mut scanner = Scanner::new(max_message);
    let mut tracker = Tracker::default();
    // Records of the `Execute`s since the last `Sync`, attached to it.
    let mut pending_exec: Vec<StatementLog> = Vec::new();
    let mut entries: Vec<Entry> = Vec::new();
    let result = async {
        loop {
            let mut pos = 0;
            let mut terminated = false;
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
                        match message::bind_names(head) {
                            Some((portal, statement)) => tracker.bind(portal, statement, ""),
                            None => tracker.forget_portals(),
                        }
                    }
                    Item::Frame { tag, body, len } => {
                        pos += len;
                        match tag {
                            b'Q' => {
                                let text = message::query_text(body)?;
                                tracker.deallocate(&text);
                                entries.push(Entry::Ready {
                                    sync: false,
                                    logs: vec![info.log_at(text, None, None, at())],
                                    error_before: None,
                                });
                            }
                            b'P' => {
                                let (name, text) = message::parse_parts(body)?;
                                tracker.parse(name, &text);
                            }
                            b'E' => {
                                let runs = tracker.execute(message::execute_portal(body)?);
                                pending_exec.push(info.log_at(runs.to_string(), None, None, at()));
                            }
                            b'C' => {
                                let (kind, name) = message::target(body)?;
                                tracker.close(kind, name);
                            }
                            b'S' => entries.push(Entry::Ready {
                                sync: true,
                                logs: std::mem::take(&mut pending_exec),
                                error_before: None,
                            }),
                            b'F' => entries.push(Entry::Ready {
                                sync: false,
                                logs: vec![info.log_at(function_call_text(body), None, None, at())],
                                error_before: None,
                            }),
                            b'c' | b'f' => entries.push(Entry::CopyEnd),
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
            reserve_for_read(&mut buf, need);
            if client.read_buf(&mut buf).await? == 0 {
                close_upstream(&mut upstream).await;
                return Ok(ClientEnd::Closed);
            }
        }
    }
    .await;
    if !pending_exec.is_empty() {
        audit.push(pending_exec).await;
    }
    result
}

fn function_call_text(body: &[u8]) -> String {
    let oid = if body.len() >= 4 {
        u32::from_be_bytes([body[0], body[1], body[2], body[3]])
    } else {
        0
    };
    format!("-- FunctionCall oid {oid}")
}

/// Client → upstream under statement review: every `Query`, and every extended batch holding a
/// `Parse`, waits for [`ProxyBackend::authorize`].
#[allow(clippy::too_many_arguments)]
pub(crate) async fn client_to_upstream_reviewed<B: ProxyBackend>(
    mut client: BoxRead,
    mut upstream: BoxWrite,
    mut buf: BytesMut,
    shared: Arc<Shared>,
    info: SessionInfo,
    audit: AuditSink,
    max_message: usize,
    backend: Arc<B>,
    grant: Arc<SessionGrant>,
) -> Result<ClientEnd, RelayError> {
    let mut r = Reviewer {
        shared,
        info,
        audit,
        backend,
        grant,
        out: BytesMut::new(),
        batch: BytesMut::new(),
        batch_runs: Vec::new(),
        tracker: Tracker::renaming(),
        scratch: None,
        pending_logs: Vec::new(),
        discard_until_sync: false,
        max_message,
    };
    let result = async {
        loop {
            while let Some((tag, _, len)) = frame::whole(&buf, max_message)? {
                let frame = buf.split_to(len);
                if r.handle(tag, frame, &mut client, &mut buf, &mut upstream)
                    .await?
                {
                    return Ok(ClientEnd::Terminated);
                }
            }
            if !r.out.is_empty() {
                upstream.write_all(&r.out).await?;
                upstream.flush().await?;
                r.out.clear();
            }
            let need = frame::header(&buf, max_message)?.map_or(0, |(_, total)| total);
            reserve_for_read(&mut buf, need);
            if client.read_buf(&mut buf).await? == 0 {
                close_upstream(&mut upstream).await;
                return Ok(ClientEnd::Closed);
            }
        }
    }
    .await;
    if !r.pending_logs.is_empty() {
        r.audit.push(std::mem::take(&mut r.pending_logs)).await;
    }
    result
}

/// How one statement fared in review.
enum Verdict {
    Allowed(Option<Uuid>),
    Refused {
        tag: &'static str,
        message: String,
    },
    /// The client went away while its statement was held.
    ClientGone,
}

struct Reviewer<B> {
    shared: Arc<Shared>,
    info: SessionInfo,
    audit: AuditSink,
    backend: Arc<B>,
    grant: Arc<SessionGrant>,
    /// Decided bytes not yet written upstream.
    out: BytesMut,
    /// An extended-protocol batch, waiting for `Sync`/`Flush` (statement names renamed).
    batch: BytesMut,
    /// What each `Execute` of the batch runs, in order: the texts to decide.
    batch_runs: Vec<Arc<str>>,
    /// Prepared statements and portals as the server has them.
    tracker: Tracker,
    /// The tracker with the open batch applied; it replaces `tracker` only if the batch is
    /// forwarded (a refused batch never reaches the server).
    scratch: Option<Tracker>,
    /// Records of allowed `Parse`s, attached to the next `Sync`.
    pending_logs: Vec<StatementLog>,
    /// After a refused batch cut at `Flush`: drop messages until `Sync`.
    discard_until_sync: bool,
    max_message: usize,
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
        let body = &frame[5..];
        if self.discard_until_sync {
            if tag == b'S' {
                self.discard_until_sync = false;
                self.forward_sync(frame, None);
            }
            return Ok(false);
        }
        match tag {
            b'Q' => {
                let text = message::query_text(body)?;
                self.flush_out(upstream).await?;
                match self.decide(&text, client, buf).await {
                    Verdict::Allowed(review_id) => {
                        // An SQL DEALLOCATE of a renamed statement goes out with the server's
                        // name (the record keeps the client's text).
                        if let Some(t) = self.scratch.as_mut() {
                            t.deallocate(&text);
                        }
                        let translated = self.tracker.deallocate(&text);
                        let log = self.info.log(text, review_id, None);
                        self.shared.push([Entry::Ready {
                            sync: false,
                            logs: vec![log],
                            error_before: None,
                        }]);
                        match translated {
                            Some(sql) => self.out.extend_from_slice(&message::rebuild(
                                b'Q',
                                0,
                                sql.as_bytes(),
                                &[],
                            )),
                            None => self.out.extend_from_slice(&frame),
                        }
                    }
                    Verdict::Refused { tag, message } => {
                        self.audit
                            .push([self.info.log(text, None, Some(tag.into()))])
                            .await;
                        let err = message::error_frame(
                            Severity::Error,
                            sqlstate::INSUFFICIENT_PRIVILEGE,
                            &message,
                        );
                        self.shared.push_synthetic(err, true);
                    }
                    Verdict::ClientGone => return Ok(true),
                }
            }
            b'P' | b'B' | b'E' | b'D' | b'C' => self.stage(tag, &frame)?,
            b'S' | b'H' if !self.batch.is_empty() => {
                self.flush_out(upstream).await?;
                let statements = std::mem::take(&mut self.batch_runs);
                let mut allowed = Vec::with_capacity(statements.len());
                let mut refused = None;
                for text in statements.iter() {
                    match self.decide(text, client, buf).await {
                        Verdict::Allowed(review_id) => allowed.push(review_id),
                        Verdict::Refused { tag, message } => {
                            refused = Some((tag, message));
                            break;
                        }
                        Verdict::ClientGone => return Ok(true),
                    }
                }
                let batch = std::mem::take(&mut self.batch);
                let staged = self.scratch.take();
                match refused {
                    None => {
                        if let Some(t) = staged {
                            self.tracker = t;
                        }
                        for (text, review_id) in statements.into_iter().zip(allowed) {
                            self.pending_logs.push(self.info.log(
                                text.to_string(),
                                review_id,
                                None,
                            ));
                        }
                        self.out.extend_from_slice(&batch);
                        if tag == b'S' {
                            self.forward_sync(frame, None);
                        } else {
                            self.out.extend_from_slice(&frame);
                        }
                    }
                    Some((refusal, message)) => {
                        let logs: Vec<_> = statements
                            .iter()
                            .map(|t| self.info.log(t.to_string(), None, Some(refusal.into())))
                            .collect();
                        self.audit.push(logs).await;
                        let err = message::error_frame(
                            Severity::Error,
                            sqlstate::INSUFFICIENT_PRIVILEGE,
                            &message,
                        );
                        if tag == b'S' {
                            // The server only sees the Sync; its ReadyForQuery follows our error.
                            self.forward_sync(frame, Some(err));
                        } else {
                            self.shared.push_synthetic(err, false);
                            self.discard_until_sync = true;
                        }
                    }
                }
            }
            b'H' | b'd' if !self.batch.is_empty() => self.add_to_batch(&frame)?,
            b'S' => self.forward_sync(frame, None),
            b'F' => {
                // A function call could run anything without a statement to review: refuse.
                self.audit
                    .push([self
                        .info
                        .log(function_call_text(body), None, Some("DENIED".into()))])
                    .await;
                let err = message::error_frame(
                    Severity::Error,
                    sqlstate::INSUFFICIENT_PRIVILEGE,
                    "Warden: function calls are not allowed on a connection under statement review",
                );
                self.flush_out(upstream).await?;
                self.shared.push_synthetic(err, true);
            }
            b'c' | b'f' => {
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

    /// Adds an extended-protocol message to the open batch: statement names renamed for the
    /// server, and each `Execute` resolved to the text it runs.
    fn stage(&mut self, tag: u8, frame: &[u8]) -> Result<(), RelayError> {
        let body = &frame[5..];
        let t = self.scratch.get_or_insert_with(|| self.tracker.clone());
        let mut run = None;
        let renamed = match tag {
            b'P' => {
                let (name, text) = message::parse_parts(body)?;
                let server = t.parse(name, &text);
                Some(message::rebuild(b'P', 0, &server, &body[name.len() + 1..]))
            }
            b'B' => {
                let (portal, statement) =
                    message::bind_names(body).ok_or(FrameError::Malformed("Bind"))?;
                let params = message::bind_params(body)?;
                let server = t.server_name(statement);
                t.bind(portal, statement, &params);
                let mut rest = server.to_vec();
                rest.push(0);
                rest.extend_from_slice(&body[portal.len() + statement.len() + 2..]);
                Some(message::rebuild(b'B', 0, portal, &rest))
            }
            b'E' => {
                run = Some(t.execute(message::execute_portal(body)?));
                None
            }
            // Describe / Close
            _ => {
                let (kind, name) = message::target(body)?;
                let server = (kind == b'S').then(|| t.server_name(name));
                if tag == b'C' {
                    t.close(kind, name);
                }
                server.map(|s| message::rebuild(tag, kind, &s, &[]))
            }
        };
        if let Some(run) = run {
            self.batch_runs.push(run);
        }
        match renamed {
            Some(frame) => self.add_to_batch(&frame),
            None => self.add_to_batch(frame),
        }
    }

    fn add_to_batch(&mut self, frame: &[u8]) -> Result<(), RelayError> {
        if self.batch.len() + frame.len() > self.max_message {
            return Err(RelayError::Limit(format!(
                "an extended-protocol batch above {} bytes cannot be held for review",
                self.max_message
            )));
        }
        self.batch.extend_from_slice(frame);
        Ok(())
    }

    fn forward_sync(&mut self, frame: BytesMut, error_before: Option<BytesMut>) {
        let logs = std::mem::take(&mut self.pending_logs);
        self.shared.push([Entry::Ready {
            sync: true,
            logs,
            error_before,
        }]);
        self.out.extend_from_slice(&frame);
    }

    async fn flush_out(&mut self, upstream: &mut BoxWrite) -> io::Result<()> {
        if !self.out.is_empty() {
            upstream.write_all(&self.out).await?;
            upstream.flush().await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Asks the backend about one statement and, if held, waits for the outcome while still
    /// noticing a client that hangs up.
    async fn decide(&mut self, text: &str, client: &mut BoxRead, buf: &mut BytesMut) -> Verdict {
        let decision = self.backend.authorize(&self.grant, text).await;
        match decision {
            StatementDecision::Allow { review_id } => Verdict::Allowed(review_id),
            StatementDecision::Deny { message } => Verdict::Refused {
                tag: "DENIED",
                message,
            },
            StatementDecision::Held {
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
                            HeldOutcome::Approved { review_id } => Verdict::Allowed(Some(review_id)),
                            HeldOutcome::Rejected { by, reason } => Verdict::Refused {
                                tag: "REJECTED",
                                message: format!("Warden: statement rejected by {by}: {reason}"),
                            },
                            HeldOutcome::Expired => Verdict::Refused {
                                tag: "EXPIRED",
                                message: "Warden: review expired — resubmit the statement".into(),
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
    untagged: Vec<StatementLog>,
    tags: Vec<String>,
    status: u8,
}

impl Matcher {
    /// Pops the entry answered by a `ReadyForQuery`.
    fn pop(&mut self, q: &mut VecDeque<Entry>) -> Option<(Vec<StatementLog>, Option<BytesMut>)> {
        loop {
            match q.front()? {
                Entry::CopyEnd => {
                    q.pop_front();
                    self.copy_ignores_sync = false;
                }
                Entry::Ready { sync: true, .. } if self.copy_ignores_sync => {
                    if let Some(Entry::Ready { logs, .. }) = q.pop_front() {
                        self.carry.extend(logs);
                    }
                }
                Entry::Synthetic { .. } => {
                    // Only reachable if the queue lost step with the server; drop rather than
                    // answer out of order.
                    q.pop_front();
                }
                Entry::Ready { .. } => {
                    let Some(Entry::Ready {
                        logs, error_before, ..
                    }) = q.pop_front()
                    else {
                        return None;
                    };
                    // Stale CopyEnd markers (a COPY that failed before the client finished).
                    while matches!(q.front(), Some(Entry::CopyEnd)) && !self.copy_ignores_sync {
                        q.pop_front();
                    }
                    let mut all = std::mem::take(&mut self.carry);
                    all.extend(logs);
                    return Some((all, error_before));
                }
            }
        }
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

    /// Attaches the collected tags to the answered entry's records. Records of a batch that
    /// only prepared (no tag: e.g. a driver's `Parse`/`Describe`/`Sync`) wait for the next
    /// answer that has tags but no records of its own (its `Bind`/`Execute`/`Sync`).
    fn finish(&mut self, logs: Vec<StatementLog>, out: &mut Vec<StatementLog>) {
        if self.tags.is_empty() {
            if !logs.is_empty() {
                out.append(&mut self.untagged);
                self.untagged = logs;
            }
            return;
        }
        let mut logs = if logs.is_empty() {
            std::mem::take(&mut self.untagged)
        } else {
            logs
        };
        out.append(&mut self.untagged);
        if logs.len() == 1 {
            logs[0].tag = Some(if self.tags.len() == 1 {
                self.tags.pop().unwrap_or_default()
            } else {
                self.tags.join(", ")
            });
        } else {
            for (log, tag) in logs.iter_mut().zip(self.tags.drain(..)) {
                log.tag = Some(tag);
            }
        }
        self.tags.clear();
        out.append(&mut logs);
    }

    /// Records still held when the session ends.
    fn leftovers(&mut self) -> Vec<StatementLog> {
        let mut v = std::mem::take(&mut self.carry);
        v.append(&mut self.untagged);
        v
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
pub(crate) async fn upstream_to_client(
    upstream: BoxRead,
    client: BoxWrite,
    buf: BytesMut,
    shared: Arc<Shared>,
    audit: AuditSink,
    status: u8,
) -> Result<UpstreamEnd, RelayError> {
    let mut m = Matcher {
        copy_ignores_sync: false,
        carry: Vec::new(),
        untagged: Vec::new(),
        tags: Vec::new(),
        status,
    };
    let result = upstream_to_client_inner(&mut m, upstream, client, buf, &shared, &audit).await;
    let leftovers = m.leftovers();
    if !leftovers.is_empty() {
        audit.push(leftovers).await;
    }
    result
}

async fn upstream_to_client_inner(
    m: &mut Matcher,
    mut upstream: BoxRead,
    mut client: BoxWrite,
    mut buf: BytesMut,
    shared: &Shared,
    audit: &AuditSink,
) -> Result<UpstreamEnd, RelayError> {
    // Server messages are trusted for size (DataRow can be large); only the inspected,
    // small ones are ever buffered whole.
    let mut scanner = Scanner::new(i32::MAX as usize);
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
            match scanner.next(&buf[pos..], look_upstream)? {
                Item::Pass(n) | Item::Head { pass: n, .. } => pos += n,
                Item::Frame { tag, body, len } => {
                    match tag {
                        b'C' => m.tags.push(message::command_tag(body)),
                        b'I' => m.tags.push("EMPTY".into()),
                        b's' => m.tags.push("SUSPENDED".into()),
                        b'E' => {
                            let f = message::error_fields(body);
                            m.tags
                                .push(format!("ERROR {}", message::field(&f, b'C').unwrap_or("")));
                        }
                        b'G' => {
                            if let Ok(q) = shared.queue.lock() {
                                m.copy_in(&q);
                            }
                        }
                        _ => {
                            // 'Z' ReadyForQuery
                            m.status = body.first().copied().unwrap_or(b'I');
                            let popped = shared.queue.lock().ok().and_then(|mut q| m.pop(&mut q));
                            if let Some((logs, error_before)) = popped {
                                if let Some(err) = error_before {
                                    client.write_all(&buf[written..pos]).await?;
                                    client.write_all(&err).await?;
                                    written = pos;
                                }
                                m.finish(logs, &mut records);
                            } else {
                                m.tags.clear();
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
