//! The client half of a session under statement review: `Reviewer` holds each `Query`, and
//! each extended batch that executes something, until [`ProxyBackend::authorize`] decides every
//! statement it runs, renames prepared statements on their way to the server, and answers a
//! refusal with Warden's error in place of the statement.
//!
//! It must never forward a statement the backend did not allow, nor decide anything itself:
//! every yes/no comes from the backend, and what the server confirmed is what it believes.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::BytesMut;
use futures::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use crate::audit::AuditSink;
use crate::backend::{
    HeldOutcome, ProxyBackend, SessionGrant, Statement, StatementDecision, StatementLog,
};
use crate::frame::{self, FrameError};
use crate::message::{self, Severity, sqlstate};
use crate::prepared::{Op, Run, Tracker};
use crate::stream::{BoxRead, BoxWrite};

use super::{
    Answer, ClientEnd, Done, Entry, Exec, Expect, QUERY_IN_BATCH, RelayError, SessionInfo, Shared,
    close_upstream, function_call_text, reserve_for_read,
};

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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::BytesMut;
    use futures::FutureExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
    use tokio::sync::{mpsc, oneshot};
    use tokio::task::JoinHandle;
    use uuid::Uuid;

    use super::client_to_upstream_reviewed;
    use crate::audit::AuditSink;
    use crate::backend::{HeldOutcome, StatementDecision, StatementLog};
    use crate::message;
    use crate::relay::testkit::*;
    use crate::relay::{
        ClientEnd, RelayError, SessionInfo, Shared, UpstreamEnd, UpstreamReview, upstream_to_client,
    };
    use crate::stream::BoxWrite;

    /// A reviewed session with both relay halves running in memory: the test plays the client
    /// (`client`) and the server (`server`); the backend's decisions are scripted.
    struct Session {
        client: DuplexStream,
        server: DuplexStream,
        backend: Arc<Scripted>,
        audit: AuditSink,
        client_half: JoinHandle<Result<ClientEnd, RelayError>>,
        upstream_half: JoinHandle<Result<UpstreamEnd, RelayError>>,
    }

    fn session(decisions: impl IntoIterator<Item = StatementDecision>) -> Session {
        let backend = Scripted::new(decisions);
        let audit = sink(&backend);
        let grant = grant();
        let shared = Arc::new(Shared::new(false));
        let (client, relay_client) = duplex(1 << 16);
        let (relay_server, server) = duplex(1 << 16);
        let (client_r, client_w) = tokio::io::split(relay_client);
        let (server_r, server_w) = tokio::io::split(relay_server);
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let upstream_half = tokio::spawn(upstream_to_client(
            Box::new(server_r),
            Box::new(client_w),
            BytesMut::new(),
            shared.clone(),
            audit.clone(),
            SessionInfo::from_grant(&grant),
            b'I',
            Some(UpstreamReview {
                done: done_tx,
                pinned: Vec::new(),
            }),
        ));
        let client_half = {
            let (audit, backend) = (audit.clone(), backend.clone());
            tokio::spawn(async move {
                let mut upstream: BoxWrite = Box::new(server_w);
                client_to_upstream_reviewed(
                    Box::new(client_r),
                    &mut upstream,
                    BytesMut::new(),
                    shared,
                    SessionInfo::from_grant(&grant),
                    audit,
                    1 << 20,
                    backend,
                    grant,
                    done_rx,
                    b'I',
                )
                .await
            })
        };
        Session {
            client,
            server,
            backend,
            audit,
            client_half,
            upstream_half,
        }
    }

    impl Session {
        async fn send(&mut self, messages: &[Vec<u8>]) {
            self.client.write_all(&messages.concat()).await.unwrap();
        }

        async fn answer(&mut self, messages: &[Vec<u8>]) {
            self.server.write_all(&messages.concat()).await.unwrap();
        }

        /// The client terminates: the server gets the `Terminate` and nothing else; every
        /// record made is handed over.
        async fn end(mut self) -> Vec<StatementLog> {
            self.send(&[terminate()]).await;
            let end = self.client_half.await.unwrap().unwrap();
            assert_eq!(end, ClientEnd::Terminated);
            let mut rest = Vec::new();
            self.server.read_to_end(&mut rest).await.unwrap();
            assert_eq!(rest, terminate());
            drop(self.server);
            let end = self.upstream_half.await.unwrap().unwrap();
            assert!(matches!(end, UpstreamEnd::UpstreamClosed), "{end:?}");
            let mut rest = Vec::new();
            self.client.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty(), "unexpected bytes for the client: {rest:?}");
            self.audit.flush().await;
            self.backend.records()
        }
    }

    fn held(review_id: Uuid, outcome: oneshot::Receiver<HeldOutcome>) -> StatementDecision {
        StatementDecision::Held {
            review_id: Some(review_id),
            review_url: format!("https://warden.test/reviews/{review_id}"),
            outcome: async move { outcome.await.unwrap_or(HeldOutcome::Expired) }.boxed(),
        }
    }

    fn allow() -> StatementDecision {
        StatementDecision::Allow {
            review_id: None,
            read_write: false,
        }
    }

    /// The stand-in the proxy sends for a refused statement, and PostgreSQL's answer to it.
    fn stand_in() -> Vec<u8> {
        query("WARDEN_REFUSED_THIS_STATEMENT")
    }

    fn stand_in_fails() -> [Vec<u8>; 2] {
        [
            error(
                "42601",
                "syntax error at or near \"WARDEN_REFUSED_THIS_STATEMENT\"",
            ),
            ready(b'I'),
        ]
    }

    /// `(type, SQLSTATE, message)` of an error or notice.
    fn decode(message: &[u8]) -> (u8, String, String) {
        let (tag, body) = &frames(message)[0];
        let f = fields(body);
        let get = |c| message::field(&f, c).unwrap_or_default().to_string();
        (*tag, get(b'C'), get(b'M'))
    }

    /// A held query reaches the server only once approved (and, being approved, may write:
    /// the proxy lifts the session's read-only default around it, out of the client's sight).
    #[tokio::test]
    async fn a_held_query_is_forwarded_only_once_approved() {
        let review = Uuid::from_u128(42);
        let (approve, outcome) = oneshot::channel();
        let mut s = session([held(review, outcome)]);
        let update = query("UPDATE t SET x = 1");
        s.send(std::slice::from_ref(&update)).await;

        let notice = read_messages(&mut s.client, 1).await;
        assert_eq!(
            decode(&notice),
            (
                b'N',
                "00000".into(),
                format!(
                    "Warden: statement held for approval at https://warden.test/reviews/{review}"
                )
            )
        );
        assert_quiet(&mut s.server).await;

        approve
            .send(HeldOutcome::Approved { review_id: review })
            .unwrap();
        assert_eq!(
            read_messages(&mut s.server, 3).await,
            [
                query("SET SESSION default_transaction_read_only = off"),
                update,
                query("SET SESSION default_transaction_read_only = on"),
            ]
            .concat()
        );
        s.answer(&[
            command_complete("SET"),
            ready(b'I'),
            command_complete("UPDATE 1"),
            ready(b'I'),
            command_complete("SET"),
            ready(b'I'),
        ])
        .await;
        assert_eq!(
            read_messages(&mut s.client, 2).await,
            [command_complete("UPDATE 1"), ready(b'I')].concat()
        );
        assert_eq!(s.backend.asked(), vec!["UPDATE t SET x = 1".to_string()]);
        let records = s.end().await;
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].statement, "UPDATE t SET x = 1");
        assert_eq!(records[0].tag.as_deref(), Some("UPDATE 1"));
        assert_eq!(records[0].review_id, Some(review));
    }

    /// A rejected query never reaches the server: a statement that fails to parse goes in its
    /// place (so an open transaction fails as it would have), and the client gets Warden's
    /// refusal instead of the server's error, then `ReadyForQuery`.
    #[tokio::test]
    async fn a_rejected_query_gets_the_refusal_and_never_reaches_the_server() {
        let review = Uuid::from_u128(43);
        let (reject, outcome) = oneshot::channel();
        let mut s = session([held(review, outcome)]);
        s.send(&[query("DROP TABLE orders")]).await;
        read_messages(&mut s.client, 1).await; // the held notice
        reject
            .send(HeldOutcome::Rejected {
                by: "bob@example.com".into(),
                reason: "not on a Friday".into(),
            })
            .unwrap();
        assert_eq!(read_messages(&mut s.server, 1).await, stand_in());
        s.answer(&stand_in_fails()).await;
        let got = read_messages(&mut s.client, 2).await;
        let (refusal, rest) = got.split_at(got.len() - 6);
        assert_eq!(
            decode(refusal),
            (
                b'E',
                "42501".into(),
                "Warden: statement rejected by bob@example.com: not on a Friday".into()
            )
        );
        assert_eq!(rest, ready(b'I'));
        let records = s.end().await;
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].statement, "DROP TABLE orders");
        assert_eq!(records[0].tag.as_deref(), Some("REJECTED"));
        assert_eq!(records[0].review_id, Some(review));
    }

    /// An extended batch is decided at its `Sync`, one question per `Execute`: once one is
    /// refused, the later ones are not asked about and none of the batch is sent; every run
    /// is recorded as denied.
    #[tokio::test]
    async fn a_refused_execute_drops_the_whole_batch() {
        let mut s = session([
            allow(),
            StatementDecision::Deny {
                message: "Warden: DELETE needs a review".into(),
            },
        ]);
        s.send(&[
            parse(b"", "SELECT 1"),
            bind(b"", b"", &[]),
            execute(b""),
            parse(b"del", "DELETE FROM orders WHERE id = $1"),
            bind(b"p", b"del", &["9"]),
            execute(b"p"),
            parse(b"", "SELECT 3"),
            bind(b"", b"", &[]),
            execute(b""),
            sync(),
        ])
        .await;
        assert_eq!(read_messages(&mut s.server, 1).await, stand_in());
        assert_eq!(
            s.backend.asked(),
            vec![
                "SELECT 1".to_string(),
                "DELETE FROM orders WHERE id = $1\n-- parameters: $1 = '9'".into(),
            ]
        );
        s.answer(&stand_in_fails()).await;
        let got = read_messages(&mut s.client, 2).await;
        let (refusal, rest) = got.split_at(got.len() - 6);
        assert_eq!(
            decode(refusal),
            (b'E', "42501".into(), "Warden: DELETE needs a review".into())
        );
        assert_eq!(rest, ready(b'I'));
        let records: Vec<(String, Option<String>)> = s
            .end()
            .await
            .into_iter()
            .map(|l| (l.statement, l.tag))
            .collect();
        let denied = Some("DENIED".to_string());
        assert_eq!(
            records,
            vec![
                ("SELECT 1".into(), denied.clone()),
                (
                    "DELETE FROM orders WHERE id = $1\n-- parameters: $1 = '9'".into(),
                    denied.clone()
                ),
                ("SELECT 3".into(), denied),
            ]
        );
    }

    /// A named statement gets a fresh server-side name on its way to the server; later binds
    /// (once the server confirmed the `Parse`) and an SQL `DEALLOCATE` use that name too, while
    /// the backend and the records see the client's texts.
    #[tokio::test]
    async fn prepared_statements_are_renamed_for_the_server() {
        let sql = "SELECT $1::int";
        let mut s = session([allow(), allow(), allow()]);
        s.send(&[
            parse(b"s1", sql),
            bind(b"", b"s1", &["42"]),
            execute(b""),
            sync(),
        ])
        .await;
        let sent = read_messages(&mut s.server, 4).await;
        let (tag, body) = &frames(&sent)[0];
        assert_eq!(*tag, b'P');
        let name = body[..body.iter().position(|&b| b == 0).unwrap()].to_vec();
        let shown = String::from_utf8(name.clone()).unwrap();
        let nonce = shown
            .strip_prefix("_warden_")
            .and_then(|s| s.strip_suffix("_1"))
            .unwrap_or_else(|| panic!("not a server-side name: {shown}"));
        assert!(
            nonce.len() == 16 && nonce.bytes().all(|b| b.is_ascii_hexdigit()),
            "{shown}"
        );
        assert_eq!(
            sent,
            [
                parse(&name, sql),
                bind(b"", &name, &["42"]),
                execute(b""),
                sync(),
            ]
            .concat()
        );
        let answers = [
            parse_complete(),
            bind_complete(),
            command_complete("SELECT 1"),
            ready(b'I'),
        ];
        s.answer(&answers).await;
        assert_eq!(read_messages(&mut s.client, 4).await, answers.concat());

        s.send(&[bind(b"", b"s1", &["7"]), execute(b""), sync()])
            .await;
        assert_eq!(
            read_messages(&mut s.server, 3).await,
            [bind(b"", &name, &["7"]), execute(b""), sync()].concat()
        );
        let answers = [bind_complete(), command_complete("SELECT 1"), ready(b'I')];
        s.answer(&answers).await;
        assert_eq!(read_messages(&mut s.client, 3).await, answers.concat());

        s.send(&[query("DEALLOCATE s1")]).await;
        assert_eq!(
            read_messages(&mut s.server, 1).await,
            query(&format!("DEALLOCATE \"{shown}\""))
        );
        let answers = [command_complete("DEALLOCATE"), ready(b'I')];
        s.answer(&answers).await;
        assert_eq!(read_messages(&mut s.client, 2).await, answers.concat());

        let first = format!("{sql}\n-- parameters: $1 = '42'");
        let second = format!("{sql}\n-- parameters: $1 = '7'");
        assert_eq!(
            s.backend.asked(),
            vec![first.clone(), second.clone(), "DEALLOCATE s1".into()]
        );
        let records: Vec<(String, Option<String>)> = s
            .end()
            .await
            .into_iter()
            .map(|l| (l.statement, l.tag))
            .collect();
        assert_eq!(
            records,
            vec![
                (first, Some("SELECT 1".into())),
                (second, Some("SELECT 1".into())),
                ("DEALLOCATE s1".into(), Some("DEALLOCATE".into())),
            ]
        );
    }
}
