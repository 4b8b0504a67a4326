//! Starting and stopping the gateway: open the store, bootstrap the admin, start the HTTP
//! listener, the proxy listener and the sweeper, and shut all of them down gracefully.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use warden_store::Store;

use crate::app::{App, Clock, SystemClock};
use crate::config::Config;
use crate::secrets::SecretBox;

/// Unknown paths: the API's JSON 404 under `/api` and `/metrics`, the web app's HTML page
/// elsewhere.
async fn not_found(uri: axum::http::Uri) -> axum::response::Response {
    use axum::response::IntoResponse;
    let path = uri.path();
    if path == "/api" || path.starts_with("/api/") || path.starts_with("/metrics") {
        return crate::http::ApiError(crate::app::AppError::NotFound(
            "no such endpoint (see /api/openapi.json)".into(),
        ))
        .into_response();
    }
    crate::web::not_found_page(path)
}

/// A running gateway (used by `warden gateway` and by integration tests).
pub struct Running {
    pub app: Arc<App>,
    pub http_addr: SocketAddr,
    pub pg_addr: Option<SocketAddr>,
    pub shutdown: CancellationToken,
    /// The first-start admin credentials, when this start created them.
    pub bootstrap: Option<(String, Option<String>)>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish, waits for every task.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

pub async fn start(config: Config) -> Result<Running> {
    start_with_clock(config, Arc::new(SystemClock)).await
}

pub async fn start_with_clock(config: Config, clock: Arc<dyn Clock>) -> Result<Running> {
    let _ = crate::telemetry::metrics_handle();
    crate::datadir::prepare(&config)?;
    let store = Store::connect(config.database_url.expose())
        .await
        .context("opening the store (check WARDEN_DATABASE_URL / WARDEN_DATA_DIR)")?;
    let secrets = SecretBox::load(config.secret_key.as_ref(), &config.data_dir)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding WARDEN_LISTEN {}", config.listen))?;
    let http_addr = listener.local_addr()?;
    let mut config = config;
    if config.public_url.is_empty() {
        config.public_url = format!("http://{http_addr}");
    }
    let pg_listener = match config.pg_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding WARDEN_PG_LISTEN {addr}"))?,
        ),
        None => None,
    };
    let pg_addr = pg_listener.as_ref().map(|l| l.local_addr()).transpose()?;
    let app = App::new(store, config, secrets, clock);
    let bootstrap = app.bootstrap_admin().await?;
    let shutdown = app.shutdown.clone();
    let mut tasks = Vec::new();

    let router = crate::web::router()
        .merge(crate::api::router())
        .merge(crate::integrations::router())
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(2 * 1024 * 1024))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(app.clone());
    let sd = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        let serve = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { sd.cancelled().await });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "http server stopped");
        }
    }));
    if let Some(l) = pg_listener {
        tasks.push(crate::proxy::spawn(app.clone(), l, shutdown.clone())?);
    }
    tasks.push(tokio::spawn(app.clone().run_sweeper(shutdown.clone())));
    tasks.push(app.spawn_notifier(shutdown.clone()));
    Ok(Running {
        app,
        http_addr,
        pg_addr,
        shutdown,
        bootstrap,
        tasks,
    })
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
