//! [`serve`]: the accept loop. Spawns one task per client connection, owns the audit writer,
//! and on shutdown closes live sessions (FATAL 57P01), waits briefly, and drains the audit
//! queue before returning.
//!
//! A session's failure or panic stays inside its task; the accept loop never stops for one.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::backend::ProxyBackend;
use crate::cancel::CancelRegistry;
use crate::config::ProxyConfig;
use crate::session::{self, Ctx};
use warden_core::limiter::FailureLimiter;

/// Serves PostgreSQL clients on `listener` until `shutdown` resolves.
pub async fn serve<B: ProxyBackend>(
    listener: TcpListener,
    backend: Arc<B>,
    config: ProxyConfig,
    shutdown: impl Future + Send,
) -> io::Result<()> {
    let (audit, audit_task) = crate::audit::spawn(
        backend.clone(),
        config.audit_queue,
        config.audit_batch,
        config.audit_linger,
        config.audit_stall_timeout,
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let grace = config.shutdown_grace;
    let workers = (0..config.relay_threads)
        .map(Worker::start)
        .collect::<io::Result<Vec<_>>>()?;
    let mut next_worker = 0usize;
    let pool = crate::pool::WarmPool::new(config.warm_upstreams, config.connect_timeout);
    let ctx = Arc::new(Ctx {
        backend,
        limiter: FailureLimiter::new(warden_core::limiter::Limits {
            per_user_and_address: config.max_auth_failures,
            per_user: config.max_auth_failures_per_user,
            per_address: config.max_auth_failures_per_address,
            window: config.auth_failure_window,
        }),
        config,
        audit,
        cancels: Arc::new(CancelRegistry::default()),
        pool,
        shutdown: stop_rx,
    });
    // Warm logins nobody took are closed once they are too old to hand out.
    let pruner = {
        let pool = ctx.pool.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                pool.prune();
            }
        })
    };
    info!(listen = %listener.local_addr()?, "PostgreSQL proxy listening");
    let mut sessions = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    if workers.is_empty() {
                        sessions.spawn(session::handle(ctx.clone(), tcp, peer));
                    } else {
                        // Hand the socket to a relay thread: it must be registered there.
                        let worker = &workers[next_worker % workers.len()];
                        next_worker = next_worker.wrapping_add(1);
                        match tcp.into_std() {
                            Ok(std_tcp) => {
                                let ctx = ctx.clone();
                                sessions.spawn_on(
                                    async move {
                                        match tokio::net::TcpStream::from_std(std_tcp) {
                                            Ok(tcp) => session::handle(ctx, tcp, peer).await,
                                            Err(e) => warn!("cannot move a connection to a relay thread: {e}"),
                                        }
                                    },
                                    &worker.handle,
                                );
                            }
                            Err(e) => warn!("cannot move a connection to a relay thread: {e}"),
                        }
                    }
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(done) = sessions.join_next(), if !sessions.is_empty() => {
                if let Err(e) = done && e.is_panic() {
                    warn!("a proxy session panicked: {e}");
                }
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(grace, async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        sessions.abort_all();
        while sessions.join_next().await.is_some() {}
    }
    pruner.abort();
    drop(workers);
    drop(ctx);
    let _ = audit_task.await;
    info!("PostgreSQL proxy stopped");
    Ok(())
}

/// A dedicated thread running a single-threaded runtime for sessions. Dropping it lets the
/// thread finish (its runtime, and any task still on it, is dropped there).
struct Worker {
    handle: tokio::runtime::Handle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Worker {
    fn start(index: usize) -> io::Result<Worker> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("warden-pg-relay-{index}"))
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        Ok(Worker {
            handle,
            _stop: stop,
        })
    }
}
