//! The server's one integration-test binary: router tests (no socket), the server on a
//! loopback socket, and the OpenAPI document's checks. The tests of the real `traceway`
//! binary live with it, in `traceway-cli`.

#[macro_use]
mod backends;
mod analysis;
mod auth;
mod hardening;
mod http;
mod lifecycle;
mod metered;
mod openapi;
mod otlp;
mod otlp_logs;
#[path = "../support/prom.rs"]
mod prom;
#[path = "../../../traceway-store/tests/support/redis_server.rs"]
mod redis_server;
#[path = "../support/sse.rs"]
mod sse;
mod stream;
mod transport;
mod ui;
mod workflows;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use serde_json::Value;
use tower::ServiceExt;
use traceway_server::{app, AppState, Config};
use traceway_store::sqlite::{SqliteConfig, SqliteStore};
use traceway_store::{ManualClock, Store};

pub use backends::Backend;

/// A router on a fresh SQLite file, with a clock the test moves.
pub struct TestApp {
    /// Starts the shutdown of live streams.
    pub stop: tokio::sync::watch::Sender<bool>,
    pub state: AppState,
    pub router: Router,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<traceway_server::Metrics>,
    pub clock: ManualClock,
    _dir: tempfile::TempDir,
    /// The Redis server of a test on Redis; stopped when the app is dropped.
    _redis: Option<redis_server::RedisServer>,
}

pub fn test_app_with(config: Config) -> TestApp {
    test_app_wrapping(config, |store| store)
}

/// A test app whose store is `wrap` of a fresh SQLite store (to make it fail on purpose).
pub fn test_app_wrapping(
    config: Config,
    wrap: impl FnOnce(Arc<dyn Store>) -> Arc<dyn Store>,
) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(traceway_store::conformance::start_time());
    let mut sqlite = SqliteConfig::new(dir.path().join("traceway.db"));
    sqlite.capture = config.capture.clone();
    sqlite.retention = config.retention;
    let store: Arc<dyn Store> = wrap(Arc::new(
        SqliteStore::open(sqlite, Arc::new(clock.clone())).expect("open"),
    ));
    TestApp::assemble(store, config, clock, dir, None)
}

impl TestApp {
    /// The app over `store` (already wrapped as the test wants).
    fn assemble(
        store: Arc<dyn Store>,
        config: Config,
        clock: ManualClock,
        dir: tempfile::TempDir,
        redis: Option<redis_server::RedisServer>,
    ) -> TestApp {
        let (state, stop) = AppState::new(store, config, Arc::new(clock.clone()));
        TestApp {
            stop,
            store: state.store.clone(),
            metrics: state.metrics.clone(),
            state: state.clone(),
            router: app(state),
            clock,
            _dir: dir,
            _redis: redis,
        }
    }
}

pub fn test_app() -> TestApp {
    test_app_with(Config::default())
}

impl TestApp {
    /// Sends a request through the router; JSON in, status and JSON (or Null) out.
    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_as("default", method, uri, body).await
    }

    pub async fn call_as(
        &self,
        tenant: &str,
        method: Method,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("x-traceway-tenant", tenant);
        let body = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Body::from(serde_json::to_vec(&v).expect("json"))
            }
            None => Body::empty(),
        };
        self.raw(req.body(body).expect("request")).await
    }

    pub async fn raw(&self, req: Request<Body>) -> (StatusCode, Value) {
        let resp = self.router.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 64 * 1024 * 1024)
            .await
            .expect("body");
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, v)
    }
}
