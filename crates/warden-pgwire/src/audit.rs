//! Statement audit off the hot path: relays push [`StatementLog`]s into a bounded channel and
//! one background task hands them to [`ProxyBackend::record`] in batches.
//!
//! The relay never waits on the store. It waits on the channel only if the store has fallen
//! more than `audit_queue` records behind: then audit completeness wins over throughput and the
//! relay slows down rather than dropping records. This module never filters or drops a record.
//! [`AuditSink::flush`] waits until everything pushed before it has been handed over, so a
//! session's end is reported only after its last statements.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::backend::{ProxyBackend, StatementLog};

/// The relays' side of the audit channel. Cheap to clone.
#[derive(Clone)]
pub(crate) struct AuditSink {
    tx: mpsc::Sender<Item>,
}

enum Item {
    Log(StatementLog),
    /// Answered once every record queued before it has been handed to the backend.
    Flushed(oneshot::Sender<()>),
}

impl AuditSink {
    /// Queues records; returns at once unless the queue is full.
    pub async fn push(&self, logs: impl IntoIterator<Item = StatementLog>) {
        for log in logs {
            match self.tx.try_send(Item::Log(log)) {
                Ok(()) => {}
                Err(TrySendError::Full(log)) => {
                    tracing::warn!("audit queue full: relay waits for the store");
                    if self.tx.send(log).await.is_err() {
                        tracing::error!("audit writer gone: statement record lost");
                    }
                }
                Err(TrySendError::Closed(_)) => {
                    tracing::error!("audit writer gone: statement record lost")
                }
            }
        }
    }

    /// Returns once every record pushed before this call has been handed to
    /// [`ProxyBackend::record`] (or the writer is gone).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Item::Flushed(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Starts the batching task. It ends once every [`AuditSink`] is dropped and the queue is drained.
pub(crate) fn spawn<B: ProxyBackend>(
    backend: Arc<B>,
    queue: usize,
    batch: usize,
    linger: Duration,
) -> (AuditSink, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(queue.max(1));
    let task = tokio::spawn(run(backend, rx, batch.max(1), linger));
    (AuditSink { tx }, task)
}

async fn run<B: ProxyBackend>(
    backend: Arc<B>,
    mut rx: mpsc::Receiver<Item>,
    batch: usize,
    linger: Duration,
) {
    let mut items = Vec::with_capacity(batch);
    let mut buf = Vec::with_capacity(batch);
    loop {
        if rx.recv_many(&mut items, batch).await == 0 {
            return;
        }
        let flushing = items.iter().any(|i| matches!(i, Item::Flushed(_)));
        if items.len() < batch && !linger.is_zero() && !flushing {
            // Let a batch build up without being woken per record.
            tokio::time::sleep(linger).await;
            while items.len() < batch {
                match rx.try_recv() {
                    Ok(item) => items.push(item),
                    Err(_) => break,
                }
            }
        }
        for item in items.drain(..) {
            match item {
                Item::Log(log) => buf.push(log),
                Item::Flushed(done) => {
                    if !buf.is_empty() {
                        backend
                            .record(std::mem::replace(&mut buf, Vec::with_capacity(batch)))
                            .await;
                    }
                    let _ = done.send(());
                }
            }
        }
        if !buf.is_empty() {
            backend
                .record(std::mem::replace(&mut buf, Vec::with_capacity(batch)))
                .await;
        }
    }
}
