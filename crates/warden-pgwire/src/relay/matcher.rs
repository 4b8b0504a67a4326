//! The upstream half of the relay: [`upstream_to_client`] reads the server, and `Matcher` pairs
//! each `ReadyForQuery` with the queued [`Entry`] it answers (recognising a `Sync` the server
//! ignored during COPY-in), so command tags land on the right audit record and the proxy's own
//! answers reach the client in the order the client asked.
//!
//! It must never write to the client except at a frame boundary, never reorder what the server
//! sent, and never decide access: it only follows the answers to what the client half queued.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::audit::AuditSink;
use crate::backend::StatementLog;
use crate::frame::{Item, Look, Scanner};
use crate::message::{self, Severity, sqlstate};
use crate::stream::{BoxRead, BoxWrite};

use super::{
    Answer, Done, Ending, Entry, LOST, RelayError, SessionInfo, Shared, UpstreamReview,
    reserve_for_read,
};

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

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Arc;

    use bytes::BytesMut;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
    use tokio::sync::mpsc;
    use tokio::task::JoinHandle;

    use super::{Matcher, UpstreamEnd, upstream_to_client};
    use crate::audit::AuditSink;
    use crate::backend::StatementLog;
    use crate::message::{self, Severity, sqlstate};
    use crate::prepared::Op;
    use crate::relay::testkit::*;
    use crate::relay::{
        Answer, Done, Entry, Exec, Expect, RelayError, SessionInfo, Shared, UpstreamReview,
    };

    fn log(text: &str) -> StatementLog {
        SessionInfo::from_grant(&grant()).log(text.into(), None, None)
    }

    fn ready_entry(sync: bool, logs: Vec<StatementLog>, answer: Answer) -> Entry {
        Entry::Ready { sync, logs, answer }
    }

    /// The upstream half of a session whose client half queued `entries` and `expect`; the
    /// test plays the server (`server`) and reads what the client gets (`client`).
    struct Half {
        server: DuplexStream,
        client: DuplexStream,
        shared: Arc<Shared>,
        backend: Arc<Scripted>,
        audit: AuditSink,
        done: mpsc::UnboundedReceiver<Done>,
        task: JoinHandle<Result<UpstreamEnd, RelayError>>,
    }

    fn start(entries: Vec<Entry>, expect: Vec<Expect>, reviewed: bool) -> Half {
        let backend = Scripted::new([]);
        let audit = sink(&backend);
        let shared = Arc::new(Shared::new(!reviewed));
        shared.queue_expected(expect);
        shared.push(entries);
        let (server, relay_upstream) = duplex(1 << 16);
        let (relay_client, client) = duplex(1 << 16);
        let (done_tx, done) = mpsc::unbounded_channel();
        let review = reviewed.then(|| UpstreamReview {
            done: done_tx,
            pinned: Vec::new(),
        });
        let task = tokio::spawn(upstream_to_client(
            Box::new(relay_upstream),
            Box::new(relay_client),
            BytesMut::new(),
            shared.clone(),
            audit.clone(),
            SessionInfo::from_grant(&grant()),
            b'I',
            review,
        ));
        Half {
            server,
            client,
            shared,
            backend,
            audit,
            done,
            task,
        }
    }

    impl Half {
        async fn serve(&mut self, messages: &[Vec<u8>]) {
            self.server.write_all(&messages.concat()).await.unwrap();
        }

        /// The server hangs up: the half ends, and every record it made is handed over.
        async fn close(mut self) -> (Vec<(String, Option<String>)>, Arc<Shared>) {
            drop(self.server);
            let end = self.task.await.unwrap().unwrap();
            assert!(matches!(end, UpstreamEnd::UpstreamClosed), "{end:?}");
            let mut rest = Vec::new();
            self.client.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty(), "unexpected bytes for the client: {rest:?}");
            self.audit.flush().await;
            (self.backend.recorded(), self.shared)
        }
    }

    fn queued(shared: &Shared) -> usize {
        shared.queue.lock().unwrap().len()
    }

    /// A pipeline of a simple query, an extended batch and another query, answered in order:
    /// each `ReadyForQuery` closes the next entry, and the command tags seen before it land on
    /// that entry's record (an `Execute`'s on its own record), the bytes passing unchanged.
    #[tokio::test]
    async fn pipelined_answers_tag_the_entries_in_order() {
        let mut h = start(
            vec![
                ready_entry(false, vec![log("SELECT 1; SELECT 2")], Answer::Pass),
                ready_entry(true, Vec::new(), Answer::Pass),
                ready_entry(false, vec![log("DELETE FROM t")], Answer::Pass),
            ],
            vec![
                Expect::Simple(None),
                Expect::Execute(Exec::Decided(log("UPDATE t SET x = 1"))),
                Expect::Sync,
                Expect::Simple(None),
            ],
            false,
        );
        let answers = [
            command_complete("SELECT 1"),
            command_complete("SELECT 1"),
            ready(b'I'),
            command_complete("UPDATE 2"),
            ready(b'I'),
            command_complete("DELETE 3"),
            ready(b'I'),
        ];
        h.serve(&answers).await;
        assert_eq!(read_messages(&mut h.client, 7).await, answers.concat());
        let (records, shared) = h.close().await;
        assert_eq!(
            records,
            vec![
                (
                    "SELECT 1; SELECT 2".into(),
                    Some("SELECT 1, SELECT 1".into())
                ),
                ("UPDATE t SET x = 1".into(), Some("UPDATE 2".into())),
                ("DELETE FROM t".into(), Some("DELETE 3".into())),
            ]
        );
        assert_eq!(queued(&shared), 0);
    }

    /// Under `Answer::Replace` the server's error (to the proxy's failing stand-in statement)
    /// never reaches the client: Warden's refusal does, or nothing when there is none; the
    /// `ReadyForQuery` passes with the server's status and is reported to the client half.
    #[tokio::test]
    async fn an_error_under_replace_is_replaced() {
        let refusal = message::error_frame(
            Severity::Error,
            sqlstate::INSUFFICIENT_PRIVILEGE,
            "Warden: statement rejected by bob: not today",
        );
        let mut h = start(
            vec![
                ready_entry(false, Vec::new(), Answer::Replace(Some(refusal.clone()))),
                ready_entry(false, Vec::new(), Answer::Replace(None)),
            ],
            vec![Expect::Simple(None), Expect::Simple(None)],
            true,
        );
        let syntax = error(
            "42601",
            "syntax error at or near \"WARDEN_REFUSED_THIS_STATEMENT\"",
        );
        h.serve(&[syntax.clone(), ready(b'T'), syntax, ready(b'E')])
            .await;
        let got = read_messages(&mut h.client, 3).await;
        assert_eq!(got, [&refusal[..], &ready(b'T'), &ready(b'E')].concat());
        let f = fields(&frames(&got)[0].1);
        assert_eq!(message::field(&f, b'C'), Some("42501"));
        for status in [b'T', b'E'] {
            match h.done.recv().await {
                Some(Done::Answered {
                    entries: 1,
                    status: s,
                    confirmed: 0,
                }) if s == status => {}
                other => panic!("expected one entry answered with {status}, got {other:?}"),
            }
        }
        let (_, shared) = h.close().await;
        assert_eq!(queued(&shared), 0);
    }

    /// An extended-protocol COPY with the batch's `Sync` sent before the copy data: the
    /// server, in COPY-in, ignores that `Sync`, so the one `ReadyForQuery` after `CopyDone`
    /// answers both `Sync` entries (and the stale `CopyEnd` between them).
    #[tokio::test]
    async fn a_sync_sent_during_copy_in_is_recognised() {
        let copy = "COPY t FROM STDIN";
        let mut h = start(
            vec![
                ready_entry(true, Vec::new(), Answer::Pass),
                Entry::CopyEnd,
                ready_entry(true, Vec::new(), Answer::Pass),
            ],
            vec![
                Expect::Change(Op::Parse {
                    name: Box::default(),
                    server: Box::default(),
                    text: copy.into(),
                }),
                Expect::Change(Op::Bind {
                    portal: Box::default(),
                    statement: Box::default(),
                    params: String::new(),
                }),
                Expect::Execute(Exec::Decided(log(copy))),
                Expect::Sync,
                Expect::CopyEnd,
                Expect::Sync,
            ],
            true,
        );
        let start_copy = [parse_complete(), bind_complete(), copy_in_response()];
        h.serve(&start_copy).await;
        assert_eq!(read_messages(&mut h.client, 3).await, start_copy.concat());
        assert!(matches!(h.done.recv().await, Some(Done::CopyIn)));
        let end_copy = [command_complete("COPY 2"), ready(b'I')];
        h.serve(&end_copy).await;
        assert_eq!(read_messages(&mut h.client, 2).await, end_copy.concat());
        match h.done.recv().await {
            Some(Done::Answered {
                entries: 2,
                status: b'I',
                confirmed: 2,
            }) => {}
            other => panic!("expected both Sync entries answered, got {other:?}"),
        }
        let (records, shared) = h.close().await;
        assert_eq!(records, vec![(copy.into(), Some("COPY 2".into()))]);
        assert_eq!(queued(&shared), 0);
    }

    /// A made-up answer queued behind a query the server has not answered yet waits for that
    /// answer, then follows it with a `ReadyForQuery` of the server's current status.
    #[tokio::test]
    async fn a_synthetic_entry_waits_for_the_earlier_answers() {
        let notice = message::error_frame(
            Severity::Notice,
            sqlstate::SUCCESSFUL_COMPLETION,
            "Warden: statement held for approval at https://warden.test/r/1",
        );
        let mut h = start(
            vec![
                ready_entry(false, vec![log("SELECT pg_sleep(1)")], Answer::Pass),
                Entry::Synthetic {
                    bytes: notice.clone(),
                    ready: true,
                },
            ],
            vec![Expect::Simple(None)],
            false,
        );
        h.shared.wake.raise();
        assert_quiet(&mut h.client).await;
        h.serve(&[command_complete("SELECT 1"), ready(b'T')]).await;
        let got = read_messages(&mut h.client, 4).await;
        assert_eq!(
            got,
            [
                &command_complete("SELECT 1")[..],
                &ready(b'T'),
                &notice,
                &ready(b'T'),
            ]
            .concat()
        );
        let (records, shared) = h.close().await;
        assert_eq!(
            records,
            vec![("SELECT pg_sleep(1)".into(), Some("SELECT 1".into()))]
        );
        assert_eq!(queued(&shared), 0);
    }

    /// The queue walk on its own: after `CopyInResponse` with a `Sync` entry first, one
    /// `ReadyForQuery` pops through the ignored `Sync` and its `CopyEnd` (carrying the
    /// records); without it, only the first entry is answered.
    #[test]
    fn pop_after_copy_in_answers_the_ignored_sync_too() {
        let queue = || -> VecDeque<Entry> {
            VecDeque::from([
                ready_entry(true, vec![log("a")], Answer::Pass),
                Entry::CopyEnd,
                ready_entry(true, vec![log("b")], Answer::Pass),
            ])
        };
        let matcher = || Matcher {
            copy_ignores_sync: false,
            carry: Vec::new(),
            tags: Vec::new(),
            status: b'I',
            answered: 0,
        };
        let texts = |logs: Vec<StatementLog>| -> Vec<String> {
            logs.into_iter().map(|l| l.statement).collect()
        };

        let (mut q, mut m) = (queue(), matcher());
        m.copy_in(&q);
        assert!(m.copy_ignores_sync);
        assert_eq!(m.pop(&mut q).map(texts), Some(vec!["a".into(), "b".into()]));
        assert_eq!(m.answered, 2);
        assert!(q.is_empty());

        let (mut q, mut m) = (queue(), matcher());
        assert_eq!(m.pop(&mut q).map(texts), Some(vec!["a".into()]));
        assert_eq!(m.answered, 1);
        // The CopyEnd behind it is taken for a stale marker; "b" still waits for its answer.
        assert_eq!(q.len(), 1);
    }
}
