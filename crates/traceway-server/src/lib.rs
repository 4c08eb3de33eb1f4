//! The Traceway server: configuration, the HTTP router and the `serve` loop. The binary
//! (`src/main.rs`) adds the CLI client.

pub mod api;
pub mod cli;
pub mod config;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod watchdog;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use traceway_store::sqlite::{SqliteConfig, SqliteStore};
use traceway_store::{Clock, Store, SystemClock};

pub use config::{Config, Lifecycle, ServeArgs};
pub use metrics::Metrics;

/// The OpenAPI document served at `/api/v1/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// What every handler sees.
#[derive(Clone)]
pub struct AppState {
    /// The store, whichever backend.
    pub store: Arc<dyn Store>,
    /// The resolved configuration.
    pub config: Arc<Config>,
    /// The clock (a test clock in tests).
    pub clock: Arc<dyn Clock>,
    /// What `/metrics` shows.
    pub metrics: Arc<Metrics>,
}

impl AppState {
    /// The state over `store`, which is wrapped so that ingest and write latency are
    /// counted in a fresh [`Metrics`].
    pub fn new(store: Arc<dyn Store>, config: Config, clock: Arc<dyn Clock>) -> AppState {
        let metrics = Arc::new(Metrics::new());
        AppState {
            store: Arc::new(metrics::MeteredStore::new(store, metrics.clone())),
            config: Arc::new(config),
            clock,
            metrics,
        }
    }
}

/// The one place routes are assembled; `serve` and every test use it.
pub fn app(state: AppState) -> Router {
    let body_limit = state.config.max_body_bytes;
    Router::new()
        .route(
            "/api/v1/traces",
            post(api::create_trace).get(api::list_traces),
        )
        .route("/api/v1/traces/cleanup", post(api::cleanup))
        .route(
            "/api/v1/traces/{id}",
            get(api::get_trace)
                .patch(api::patch_trace)
                .delete(api::delete_trace),
        )
        .route(
            "/api/v1/traces/{id}/events",
            post(api::append_events).get(api::list_events),
        )
        .route("/api/v1/openapi.json", get(api::openapi))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/metrics", get(api::metrics))
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            axum::response::IntoResponse::into_response(error::ApiError::internal(
                "handler panicked",
            ))
        }))
        .with_state(state)
}

/// Opens the store named by the configuration.
pub fn open_store(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<dyn Store>> {
    let mut sqlite = SqliteConfig::new(config.data_dir.join("traceway.db"));
    sqlite.retention = config.retention;
    sqlite.capture = config.capture;
    Ok(Arc::new(SqliteStore::open(sqlite, clock)?))
}

/// Names this process in the watchdog lease: its address, pid and a random part, so two
/// processes never share a name even on one machine.
fn lease_holder(addr: std::net::SocketAddr) -> String {
    format!(
        "{addr}/pid-{}/{}",
        std::process::id(),
        traceway_core::TraceId::new_v7()
    )
}

/// Runs the server until `shutdown` resolves, then lets in-flight requests finish and
/// the store write what it has acknowledged or queued. `on_listen` learns the bound
/// address (useful with port 0).
pub async fn serve(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    on_listen: impl FnOnce(std::net::SocketAddr),
) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = open_store(&config, clock.clone())?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, data_dir = %config.data_dir.display(), "traceway listening");
    on_listen(addr);
    let state = AppState::new(store.clone(), config, clock);
    let lifecycle = state.config.lifecycle;
    let watchdog = if lifecycle.watchdog {
        Some(watchdog::Watchdog::start(
            state.store.clone(),
            lifecycle,
            state.metrics.clone(),
            lease_holder(addr),
        ))
    } else {
        tracing::info!("watchdog disabled (--no-watchdog): no orphan sweep, no purge");
        None
    };
    let result = axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await;
    tracing::info!("shutting down: finishing pending writes");
    if let Some(w) = watchdog {
        w.stop().await;
    }
    store.shutdown().await;
    tracing::info!("stopped");
    Ok(result?)
}

/// Resolves when the process gets SIGTERM or Ctrl-C.
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
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
