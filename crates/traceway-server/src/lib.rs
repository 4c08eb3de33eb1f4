//! The Traceway server: configuration, the HTTP router, OTLP ingestion (HTTP and gRPC)
//! and the `serve` loop. The `traceway` binary lives in `traceway-cli`, which adds the CLI
//! client; this crate does not depend on it.

pub mod analysis;
pub mod api;
pub mod auth;
pub mod bounds;
pub mod config;
pub mod error;
pub mod extract;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod objects_only;
pub mod openapi;
pub mod otlp;
pub mod quotas;
pub mod stream;
pub mod transport;
pub mod ui;
pub mod watchdog;
pub mod workflows;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use tokio::net::TcpListener;
use traceway_store::sqlite::{SqliteConfig, SqliteStore};
use traceway_store::{Clock, Store, SystemClock};

pub use config::{Config, Lifecycle, ServeArgs, StoreKind};
pub use metrics::Metrics;

/// What every handler sees.
#[derive(Clone)]
pub struct AppState {
    /// The store, whichever backend.
    pub store: Arc<dyn Store>,
    /// The resolved configuration.
    pub config: Arc<Config>,
    /// The clock (a test clock in tests).
    pub clock: Arc<dyn Clock>,
    /// Flips to true when the server starts shutting down; live streams end on it.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// What `/metrics` shows.
    pub metrics: Arc<Metrics>,
    /// API-key verification (and its cache).
    pub auth: Arc<auth::Auth>,
    /// The per-tenant ingest quota (ADR 025).
    pub ingest_quota: Arc<quotas::IngestQuota>,
    /// The per-tenant quota of open live streams (ADR 025).
    pub stream_quota: Arc<quotas::StreamQuota>,
    /// The per-tenant quota of stored bytes (ADR 040).
    pub stored_quota: Arc<quotas::StoredQuota>,
}

impl AppState {
    /// The state over `store`, which is wrapped so that ingest and write latency are
    /// counted in a fresh [`Metrics`]; live streams end when `shutdown` turns true.
    pub fn with_shutdown(
        store: Arc<dyn Store>,
        config: Config,
        clock: Arc<dyn Clock>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> AppState {
        let metrics = Arc::new(Metrics::new());
        let auth = Arc::new(auth::Auth::new(config.auth.bootstrap.as_ref()));
        let ingest_quota = Arc::new(quotas::IngestQuota::new(
            config.quota_spans_per_sec,
            config.quota_spans_burst,
        ));
        let stream_quota = Arc::new(quotas::StreamQuota::new(config.quota_live_streams));
        let stored_quota = Arc::new(quotas::StoredQuota::new(config.quota_stored_bytes));
        AppState {
            auth,
            ingest_quota,
            stream_quota,
            stored_quota,
            store: Arc::new(metrics::MeteredStore::new(
                Arc::new(traceway_store::AnalysedStore::new(
                    store,
                    clock.clone(),
                    traceway_store::AnalysisSettings {
                        delay: config.analysis_delay,
                        ..Default::default()
                    },
                )),
                metrics.clone(),
            )),
            config: Arc::new(config),
            clock,
            shutdown,
            metrics,
        }
    }

    /// The same with a shutdown channel of its own; returns the sender that ends live
    /// streams.
    pub fn new(
        store: Arc<dyn Store>,
        config: Config,
        clock: Arc<dyn Clock>,
    ) -> (AppState, tokio::sync::watch::Sender<bool>) {
        let (tx, shutdown) = tokio::sync::watch::channel(false);
        (AppState::with_shutdown(store, config, clock, shutdown), tx)
    }
}

/// Every route, each with its OpenAPI operation: `routes!` takes the method and path from
/// the handler's `#[utoipa::path]`, so the router and the document cannot disagree
/// (ADR 026). A route added anywhere else is missing from the document, which the test
/// `openapi::every_route_is_in_the_document_with_its_methods` catches.
pub fn routes() -> utoipa_axum::router::OpenApiRouter<AppState> {
    use utoipa::OpenApi as _;
    use utoipa_axum::routes;
    utoipa_axum::router::OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(otlp::http::export))
        .routes(routes!(otlp::http::export_logs))
        .routes(routes!(otlp::http::export_metrics))
        .routes(routes!(api::create_trace, api::list_traces))
        .routes(routes!(api::cleanup))
        .routes(routes!(api::get_trace, api::patch_trace, api::delete_trace))
        .routes(routes!(api::append_events, api::list_events))
        .routes(routes!(stream::trace_stream))
        .routes(routes!(analysis::trace_summary))
        .routes(routes!(analysis::trace_analysis))
        .routes(routes!(analysis::cross_analysis))
        .routes(routes!(stream::tenant_stream))
        .routes(routes!(workflows::stats))
        .routes(routes!(
            workflows::get_context,
            workflows::put_context,
            workflows::delete_context
        ))
        .routes(routes!(keys::create, keys::list))
        .routes(routes!(keys::revoke))
        .routes(routes!(api::openapi))
        .routes(routes!(api::healthz))
        .routes(routes!(api::readyz))
        .routes(routes!(api::metrics))
        .routes(routes!(ui::index))
        .routes(routes!(ui::asset))
}

/// The one place routes are assembled; `serve` and every test use it.
pub fn app(state: AppState) -> Router {
    let body_limit = state.config.max_body_bytes;
    let (router, _document) = routes().split_for_parts();
    router
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::middleware,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::middleware,
        ))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            axum::response::IntoResponse::into_response(error::ApiError::internal(
                "handler panicked",
            ))
        }))
        .with_state(state)
}

/// Serves the HTTP API ([`app`]) on `listener` within the configured connection bounds
/// (ADR 033) until `shutdown` resolves, then lets in-flight requests finish.
pub async fn serve_http(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let limits = state.config.conn_limits;
    let open = state.metrics.http_connections.clone();
    let router = app(state);
    let service = tower::ServiceExt::map_request(
        router,
        |req: axum::http::Request<transport::RequestBody>| req.map(axum::body::Body::new),
    );
    transport::serve(
        listener,
        service,
        limits,
        transport::Protocols::Http1And2,
        open,
        shutdown,
    )
    .await
}

/// Opens the store named by the configuration.
pub async fn open_store(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<dyn Store>> {
    if let config::StoreKind::Redis { url, prefix } = &config.store {
        let mut redis = traceway_store::redis::RedisConfig::new(url.clone());
        redis.prefix = prefix.clone();
        redis.retention = config.retention;
        redis.capture = config.capture.clone();
        let store = traceway_store::redis::RedisStore::open(redis, clock)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot open the Redis store at {url}: {}",
                    traceway_store::ErrorChain(&e)
                )
            })?;
        return Ok(Arc::new(store));
    }
    let mut sqlite = SqliteConfig::new(config.data_dir.join("traceway.db"));
    sqlite.retention = config.retention;
    sqlite.capture = config.capture.clone();
    Ok(Arc::new(SqliteStore::open(sqlite, clock)?))
}

/// The addresses `serve` listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listening {
    /// REST API and OTLP/HTTP.
    pub http: std::net::SocketAddr,
    /// OTLP/gRPC.
    pub grpc: std::net::SocketAddr,
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

/// Runs the server (HTTP and OTLP/gRPC) until `shutdown` resolves, then lets in-flight
/// requests of both finish and the store write what it has acknowledged or queued.
/// `on_listen` learns the bound addresses (useful with port 0).
pub async fn serve(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    on_listen: impl FnOnce(Listening),
) -> anyhow::Result<()> {
    // Each connection is a descriptor; the common soft default of 1,024 let 1,100 idle
    // sockets starve /healthz (issue 15, failure 3.6). The hard limit is what we may use.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(nofile = n, "descriptor limit raised to the hard limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the descriptor limit"),
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = open_store(&config, clock.clone()).await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let grpc_listener = TcpListener::bind(config.grpc_listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {} (gRPC): {e}", config.grpc_listen))?;
    let addrs = Listening {
        http: listener.local_addr()?,
        grpc: grpc_listener.local_addr()?,
    };
    tracing::info!(http = %addrs.http, grpc = %addrs.grpc, data_dir = %config.data_dir.display(), "traceway listening");
    on_listen(addrs);
    let auth = &config.auth;
    tracing::info!(http = auth.http, grpc = auth.grpc, "api keys required");
    if (auth.http || auth.grpc) && auth.bootstrap.is_none() {
        tracing::warn!(
            "api keys are required but no --admin-key is set: only keys already stored work"
        );
    }

    // One shutdown signal, seen by both servers and by live streams (which end first, so
    // the graceful shutdown does not wait on them); a server that fails stops the other.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let state = AppState::with_shutdown(store.clone(), config, clock, stop_rx.clone());
    let lifecycle = state.config.lifecycle;
    let watchdog = if lifecycle.watchdog {
        Some(watchdog::Watchdog::start(
            state.store.clone(),
            lifecycle,
            state.metrics.clone(),
            lease_holder(addrs.http),
        ))
    } else {
        tracing::info!("watchdog disabled (--no-watchdog): no orphan sweep, no purge");
        None
    };
    let stop_tx = Arc::new(stop_tx);
    let on_signal = stop_tx.clone();
    tokio::spawn(async move {
        shutdown.await;
        on_signal.send_replace(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let http = serve_http(listener, state.clone(), stopped(stop_rx.clone()));
    let grpc = otlp::grpc::serve(grpc_listener, state, stopped(stop_rx));
    let (http_result, grpc_result) = tokio::join!(
        async {
            let r = http.await;
            stop_tx.send_replace(true);
            r
        },
        async {
            let r = grpc.await;
            stop_tx.send_replace(true);
            r
        }
    );
    tracing::info!("shutting down: finishing pending writes");
    if let Some(w) = watchdog {
        w.stop().await;
    }
    store.shutdown().await;
    tracing::info!("stopped");
    http_result?;
    grpc_result?;
    Ok(())
}

/// Resolves when the process gets SIGTERM or Ctrl-C.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    // The handlers are installed here, when the future is made, not when it is first
    // polled: a SIGTERM that arrives right after the listening line (before `serve` got
    // to poll it) still shuts down gracefully instead of killing the process.
    #[cfg(unix)]
    let (mut term, mut int) = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let term = async {
                match term.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let int = async {
                match int.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = term => {},
                _ = int => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
