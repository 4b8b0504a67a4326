//! Statement audit off the hot path: relays push [`StatementLog`]s into a bounded channel and
//! one background task hands them to [`ProxyBackend::record`] in batches.
//!
//! The relay never waits on the store. It waits on the channel only if the store has fallen
//! more than `audit_queue` records behind: then audit completeness wins over throughput and the
//! relay slows down rather than dropping records. This module never filters or drops a record.
//! [`AuditSink::flush`] waits until everything pushed before it has been handed over, so a
//! session's end is reported only after its last statements.
//!
//! Fail closed: when [`ProxyBackend::record`] cannot make a batch durable, the writer keeps the
//! batch and retries it (backing off) until it can, and meanwhile the audit is *stalled*: relays
//! ask [`AuditSink::admit`] before sending the server anything, and a stalled audit makes them
//! wait, then (after `stall_timeout`) end the session with an error that says why. What can run
//! unrecorded-yet is bounded by what was already on its way to the server when the store failed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::backend::{ProxyBackend, StatementLog, Unrecorded};

/// The relays' side of the audit channel. Cheap to clone.
#[derive(Clone)]
pub(crate) struct AuditSink {
    tx: mpsc::Sender<Item>,
    health: Arc<Health>,
}

/// Whether the writer can make records durable right now.
struct Health {
    stalled: AtomicBool,
    recovered: Notify,
    stall_timeout: Duration,
}

/// The audit store has not accepted records for longer than the stall timeout.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "the audit store has not accepted statement records for {0:?}: the session ends so that nothing runs unrecorded (reconnect when the gateway's store is back)"
)]
pub(crate) struct AuditStalled(pub Duration);

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

    /// Returns at once while the audit is healthy (one atomic load). While it is stalled, waits
    /// for it to recover, and gives up after the stall timeout: the caller must then not send
    /// the server anything more.
    pub async fn admit(&self) -> Result<(), AuditStalled> {
        let h = &self.health;
        if !h.stalled.load(Ordering::Acquire) {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + h.stall_timeout;
        loop {
            let recovered = h.recovered.notified();
            if !h.stalled.load(Ordering::Acquire) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, recovered).await.is_err() {
                return Err(AuditStalled(h.stall_timeout));
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
    stall_timeout: Duration,
) -> (AuditSink, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(queue.max(1));
    let health = Arc::new(Health {
        stalled: AtomicBool::new(false),
        recovered: Notify::new(),
        stall_timeout,
    });
    let task = tokio::spawn(run(backend, rx, batch.max(1), linger, health.clone()));
    (AuditSink { tx, health }, task)
}

/// Hands `batch` to the backend until it is durable. While it is not, the audit is stalled.
async fn record_durably<B: ProxyBackend>(
    backend: &B,
    health: &Health,
    mut batch: Vec<StatementLog>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        match backend.record(batch).await {
            Ok(()) => {
                if health.stalled.swap(false, Ordering::AcqRel) {
                    tracing::warn!("audit store accepts statement records again");
                    health.recovered.notify_waiters();
                }
                return;
            }
            Err(Unrecorded {
                batch: back,
                reason,
            }) => {
                if !health.stalled.swap(true, Ordering::AcqRel) {
                    tracing::error!(
                        error = %reason,
                        statements = back.len(),
                        "audit store refused statement records: sessions wait, and end if it does not recover"
                    );
                }
                batch = back;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

async fn run<B: ProxyBackend>(
    backend: Arc<B>,
    mut rx: mpsc::Receiver<Item>,
    batch: usize,
    linger: Duration,
    health: Arc<Health>,
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
                        let full = std::mem::replace(&mut buf, Vec::with_capacity(batch));
                        record_durably(&*backend, &health, full).await;
                    }
                    let _ = done.send(());
                }
            }
        }
        if !buf.is_empty() {
            let full = std::mem::replace(&mut buf, Vec::with_capacity(batch));
            record_durably(&*backend, &health, full).await;
        }
    }
}
