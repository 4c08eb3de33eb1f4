//! Lifecycle through the server: `/metrics`, cleanup in chunks, and the watchdog task on a
//! store whose clock the test moves (hours pass without sleeping).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use traceway_core::{EventType, TraceId};
use traceway_server::watchdog::Watchdog;
use traceway_server::{Config, Lifecycle};
use traceway_store::{BackendError, LifecycleError, Scope, WATCHDOG_LEASE};

use crate::prom::parse_metrics;
use crate::TestApp;

async fn scrape(app: &TestApp) -> BTreeMap<String, f64> {
    let (status, v) = app.call(Method::GET, "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    parse_metrics(v.as_str().expect("text"))
}

async fn create(app: &TestApp, body: Value) -> String {
    let (status, v) = app.call(Method::POST, "/api/v1/traces", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    v["trace_id"].as_str().expect("trace_id").to_string()
}

async fn finish(app: &TestApp, id: &str) {
    let (status, v) = app
        .call(
            Method::PATCH,
            &format!("/api/v1/traces/{id}"),
            Some(json!({"state": "COMPLETED"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
}

fn steps() -> Value {
    json!({"events": [
        {"type": "span_started", "span": {"span_id": "00000000000000a1", "kind": "agent", "name": "a"}},
        {"type": "span_ended", "span": {"span_id": "00000000000000b1", "kind": "tool", "name": "t"}},
        {"type": "log", "id": "l1", "message": "hello"},
        {"type": "span_ended", "span": {"span_id": "00000000000000b1"}}
    ]})
}

on_both! {
#[tokio::test]
async fn metrics_are_prometheus_text_and_count_ingest(backend: Backend) {
    let app = backend.app().await;
    let m = scrape(&app).await;
    assert_eq!(m["traceway_active_traces"], 0.0);
    assert_eq!(m["traceway_traces_created_total"], 0.0);
    assert_eq!(m["traceway_watchdog_leader"], 0.0);

    let id = create(&app, json!({"name": "m"})).await;
    let (status, v) = app
        .call(
            Method::POST,
            &format!("/api/v1/traces/{id}/events"),
            Some(steps()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let _live = app
        .store
        .subscribe("default", Scope::Trace(id.parse().expect("id")));
    let m = scrape(&app).await;
    assert_eq!(m["traceway_active_traces"], 1.0);
    assert_eq!(m["traceway_live_subscribers"], 1.0);
    assert_eq!(m["traceway_traces_created_total"], 1.0);
    let events = |m: &BTreeMap<String, f64>, t: &str| {
        m[&format!("traceway_ingest_events_total{{type=\"{t}\"}}")]
    };
    assert_eq!(events(&m, "trace_started"), 1.0);
    assert_eq!(
        events(&m, "state_changed"),
        1.0,
        "RUNNING on the first step"
    );
    assert_eq!(events(&m, "span_started"), 1.0);
    assert_eq!(events(&m, "span_ended"), 1.0);
    assert_eq!(events(&m, "log"), 1.0);
    assert_eq!(
        m["traceway_ingest_duplicates_total"], 1.0,
        "the second end of b1"
    );
    assert_eq!(m["traceway_store_write_seconds_count{op=\"create\"}"], 1.0);
    assert_eq!(m["traceway_store_write_seconds_count{op=\"append\"}"], 1.0);
    assert_eq!(
        m["traceway_store_write_seconds_bucket{le=\"+Inf\",op=\"append\"}"],
        1.0
    );
    assert!(m["traceway_store_write_seconds_sum{op=\"append\"}"] > 0.0);

    finish(&app, &id).await;
    let m = scrape(&app).await;
    assert_eq!(
        m["traceway_active_traces"], 0.0,
        "finished traces leave the index"
    );
    assert_eq!(events(&m, "trace_ended"), 1.0);
    for key in [
        "traceway_watchdog_sweeps_total",
        "traceway_traces_orphaned_total",
        "traceway_expired_rows_deleted_total{table=\"traces\"}",
        "traceway_expired_rows_deleted_total{table=\"events\"}",
        "traceway_watchdog_sweep_seconds_count",
    ] {
        assert_eq!(m[key], 0.0, "{key}");
    }
}
}

on_both! {
#[tokio::test]
async fn failed_writes_are_counted_and_timed_by_error_kind(backend: Backend) {
    let app = backend.app().await;
    let id = create(&app, json!({"name": "t"})).await;
    finish(&app, &id).await;
    for _ in 0..2 {
        let (status, v) = app
            .call(
                Method::PATCH,
                &format!("/api/v1/traces/{id}"),
                Some(json!({"state": "RUNNING"})),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{v}");
    }
    let missing = "0190f1c2a3b47c8d9e0f112233445566";
    let (status, _) = app
        .call(
            Method::PATCH,
            &format!("/api/v1/traces/{missing}"),
            Some(json!({"state": "RUNNING"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let m = scrape(&app).await;
    let errors = |kind: &str| {
        m[&format!("traceway_store_write_errors_total{{op=\"update\",kind=\"{kind}\"}}")]
    };
    assert_eq!(errors("illegal_transition"), 2.0);
    assert_eq!(errors("not_found"), 1.0);
    assert_eq!(
        m["traceway_store_write_failed_seconds_count{op=\"update\",kind=\"illegal_transition\"}"],
        2.0
    );
    assert!(m["traceway_store_write_failed_seconds_sum{op=\"update\",kind=\"illegal_transition\"}"] > 0.0);
    assert_eq!(
        m["traceway_store_write_seconds_count{op=\"update\"}"], 1.0,
        "only the successful update is in the success histogram"
    );
}
}

on_both! {
#[tokio::test]
async fn metrics_are_served_as_openmetrics(backend: Backend) {
    let app = backend.app().await;
    let req = axum::http::Request::get("/metrics")
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = tower::ServiceExt::oneshot(app.router.clone(), req)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
}
}

on_both! {
#[tokio::test]
async fn cleanup_with_a_limit_reports_what_remains(backend: Backend) {
    let app = backend.app().await;
    for _ in 0..5 {
        let id = create(&app, json!({})).await;
        finish(&app, &id).await;
    }
    create(&app, json!({"name": "running"})).await;
    app.clock.advance(Duration::from_secs(3600));
    let call = |body: Value| {
        let app = &app;
        async move {
            app.call(Method::POST, "/api/v1/traces/cleanup", Some(body))
                .await
        }
    };
    let (status, v) = call(json!({"older_than_days": 0.01, "limit": 2})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v, json!({"deleted": 2, "remaining": 3}));
    let (_, v) = call(json!({"older_than_days": 0.01, "limit": 2})).await;
    assert_eq!(v, json!({"deleted": 2, "remaining": 1}));
    let (_, v) = call(json!({"older_than_days": 0.01})).await;
    assert_eq!(v, json!({"deleted": 1, "remaining": 0}));
    let (status, v) = call(json!({"older_than_days": 1, "limit": 0})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
}
}

/// Settings that let a test watch the watchdog in real time: the store's clock is moved by
/// hand, the watchdog's own timers tick every few milliseconds.
fn fast() -> Lifecycle {
    Lifecycle {
        sweep_interval: Duration::from_millis(20),
        // Store time: the test jumps the clock by far more, so a taken lease lapses at
        // each jump and is taken again (a new token) within a renewal period.
        lease_ttl: Duration::from_millis(150),
        ..Lifecycle::default()
    }
}

async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

on_both! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_orphans_idle_traces_and_leaves_the_rest(backend: Backend) {
    let app = backend.app().await;
    let idle = create(&app, json!({"name": "worker crashed"})).await;
    let busy = create(&app, json!({"name": "still working"})).await;
    let done = create(&app, json!({"name": "finished"})).await;
    finish(&app, &done).await;
    let idle_id: TraceId = idle.parse().expect("id");
    let mut live = app.store.subscribe("default", Scope::Trace(idle_id));

    let dog = Watchdog::start(app.store.clone(), fast(), app.metrics.clone(), "me".into());
    eventually("leader", async || app.metrics.is_leader().then_some(())).await;
    // 20 minutes: nothing is idle long enough.
    app.clock.advance(Duration::from_secs(20 * 60));
    let sweeps = app.metrics.sweeps.get();
    eventually("two more sweeps", async || {
        (app.metrics.sweeps.get() >= sweeps + 2).then_some(())
    })
    .await;
    assert_eq!(app.metrics.orphaned.get(), 0);
    let (_, v) = app
        .call(
            Method::POST,
            &format!("/api/v1/traces/{busy}/events"),
            Some(steps()),
        )
        .await;
    assert_eq!(v["accepted"], 3, "{v}");

    // 20 more: idle for 40 minutes, busy for 20.
    app.clock.advance(Duration::from_secs(20 * 60));
    let state = |id: String| {
        let app = &app;
        async move {
            let (_, v) = app
                .call(Method::GET, &format!("/api/v1/traces/{id}"), None)
                .await;
            v["trace"]["state"].as_str().map(str::to_string)
        }
    };
    eventually("idle trace orphaned", async || {
        (state(idle.clone()).await.as_deref() == Some("ERRORED")).then_some(())
    })
    .await;
    assert_eq!(state(busy.clone()).await.as_deref(), Some("RUNNING"));
    assert_eq!(state(done.clone()).await.as_deref(), Some("COMPLETED"));
    assert_eq!(app.metrics.orphaned.get(), 1);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let e = tokio::time::timeout(Duration::from_secs(5), live.events.recv())
            .await
            .expect("announced live")
            .expect("open");
        seen.push(e.body.event_type());
    }
    assert_eq!(seen, vec![EventType::StateChanged, EventType::TraceEnded]);

    // An hour and a bit later the orphan is gone and purged; the busy trace, silent since,
    // is orphaned in turn; the finished trace keeps its row for days.
    app.clock.advance(Duration::from_secs(61 * 60));
    eventually("orphan purged", async || {
        (app.metrics.purged_traces.get() >= 1).then_some(())
    })
    .await;
    assert_eq!(state(idle.clone()).await, None);
    eventually("the busy trace went quiet", async || {
        (state(busy.clone()).await.as_deref() == Some("ERRORED")).then_some(())
    })
    .await;
    assert_eq!(state(done.clone()).await.as_deref(), Some("COMPLETED"));
    let m = scrape(&app).await;
    assert_eq!(m["traceway_watchdog_leader"], 1.0);
    assert!(m["traceway_watchdog_sweeps_total"] >= 3.0);
    assert!(m["traceway_watchdog_sweep_seconds_count"] >= 3.0);
    assert_eq!(m["traceway_traces_orphaned_total"], 2.0);
    // A backend counts its own rows: SQLite one per event, Redis one per stream entry
    // (a commit's events), so only "some" holds on both.
    assert!(m["traceway_expired_rows_deleted_total{table=\"events\"}"] >= 1.0);
    assert!(m["traceway_store_write_seconds_count{op=\"sweep\"}"] >= 3.0);

    // Stopping releases the lease: another holder gets it at once.
    dog.stop().await;
    assert!(!app.metrics.is_leader());
    let other = app
        .store
        .try_acquire_lease(WATCHDOG_LEASE, "other", Duration::from_secs(60))
        .await
        .expect("acquire");
    assert!(other.is_some(), "released at stop");
}
}

on_both! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_watchdogs_on_one_store_only_the_lease_holder_sweeps(backend: Backend) {
    let app = backend.app_with(Config {
        lifecycle: fast(),
        ..Config::default()
    }).await;
    let m1 = std::sync::Arc::new(traceway_server::Metrics::new());
    let m2 = std::sync::Arc::new(traceway_server::Metrics::new());
    // The store clock does not move here, so the first holder keeps the lease until it
    // releases it; the other polls every sixth of the ttl.
    let cfg = Lifecycle {
        lease_ttl: Duration::from_millis(600),
        sweep_interval: Duration::from_millis(20),
        ..Lifecycle::default()
    };
    let d1 = Watchdog::start(app.store.clone(), cfg, m1.clone(), "one".into());
    eventually("one leads", async || m1.is_leader().then_some(())).await;
    let d2 = Watchdog::start(app.store.clone(), cfg, m2.clone(), "two".into());
    let start = m1.sweeps.get();
    eventually("one sweeps on", async || {
        (m1.sweeps.get() >= start + 5).then_some(())
    })
    .await;
    assert!(!m2.is_leader());
    assert_eq!(m2.sweeps.get(), 0, "the other never swept");
    // The holder stops (and releases): the other takes over.
    d1.stop().await;
    eventually("two leads", async || m2.is_leader().then_some(())).await;
    eventually("two sweeps", async || (m2.sweeps.get() >= 1).then_some(())).await;
    d2.stop().await;
}
}

/// A store whose first `fail` sweeps fail with an internal error; everything else passes
/// through.
struct Flaky {
    inner: std::sync::Arc<dyn traceway_store::Store>,
    fail: std::sync::atomic::AtomicU32,
}

impl traceway_store::Decorates for Flaky {
    fn inner(&self) -> &dyn traceway_store::Store {
        &*self.inner
    }
}

#[async_trait::async_trait]
impl traceway_store::LifecycleLayer for Flaky {
    async fn sweep_orphans(
        &self,
        fence: &traceway_store::Lease,
        orphan_after: std::time::Duration,
        limit: u32,
    ) -> Result<Vec<traceway_store::Orphaned>, LifecycleError> {
        use std::sync::atomic::Ordering;
        if self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(BackendError::internal("disk on fire").into());
        }
        self.inner.sweep_orphans(fence, orphan_after, limit).await
    }
}

impl traceway_store::TracesLayer for Flaky {}
impl traceway_store::LeasesLayer for Flaky {}
impl traceway_store::ApiKeysLayer for Flaky {}
impl traceway_store::LiveFeedLayer for Flaky {}
impl traceway_store::WorkflowContextsLayer for Flaky {}

on_both! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_survives_store_errors(backend: Backend) {
    let app = backend.app().await;
    let idle = create(&app, json!({})).await;
    let flaky = std::sync::Arc::new(Flaky {
        inner: app.store.clone(),
        fail: std::sync::atomic::AtomicU32::new(3),
    });
    let cfg = Lifecycle {
        lease_ttl: Duration::from_secs(3),
        ..fast()
    };
    app.clock.advance(Duration::from_secs(31 * 60));
    let dog = Watchdog::start(flaky.clone(), cfg, app.metrics.clone(), "me".into());
    eventually("three failed sweeps", async || {
        (app.metrics.sweep_errors.get() >= 3).then_some(())
    })
    .await;
    eventually("then a sweep that works", async || {
        (app.metrics.orphaned.get() == 1).then_some(())
    })
    .await;
    assert!(app.metrics.is_leader(), "errors do not give the lease up");
    assert_eq!(app.metrics.lease_acquired.get(), 1);
    let (_, v) = app
        .call(Method::GET, &format!("/api/v1/traces/{idle}"), None)
        .await;
    assert_eq!(v["trace"]["state"], "ERRORED");
    dog.stop().await;
}
}
