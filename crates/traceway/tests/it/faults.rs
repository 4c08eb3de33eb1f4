//! A server that is down or slow never slows or fails the app: records are dropped and
//! counted. 429 and 503 are retried after `Retry-After`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::IntoResponse;
use traceway::Tracer;

use crate::serve;

fn record_spans(tracer: &Tracer, n: usize) {
    for i in 0..n {
        let mut s = tracer.tool("lookup").start();
        s.set_attribute("i", i as i64);
        s.end();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_drops_and_counts_within_the_queue_bound() {
    // A real port with nothing listening: bind, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tracer = Tracer::builder()
        .endpoint(format!("http://127.0.0.1:{port}"))
        .queue_capacity(1000)
        .batch_size(100)
        .max_retries(1)
        .max_backoff(Duration::from_millis(20))
        .build()
        .unwrap();
    record_spans(&tracer, 3_000);
    let m = tracer.metrics();
    assert!(m.queued <= 1000, "the queue is bounded: {m:?}");
    assert!(m.dropped_queue_full > 0, "{m:?}");
    assert!(
        tracer.shutdown(Duration::from_secs(60)).await,
        "flush finished"
    );
    let m = tracer.metrics();
    assert_eq!(m.exported, 0);
    assert!(m.dropped_export_failed > 0, "{m:?}");
    assert!(m.failed_requests > 0 && m.retries > 0, "{m:?}");
    assert_eq!(
        m.dropped_queue_full + m.dropped_export_failed + m.queued as u64,
        6_000,
        "every record is accounted for: {m:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_does_not_hold_up_recording() {
    let seen = Arc::new(Mutex::new(0usize));
    let s = seen.clone();
    let app = axum::Router::new().fallback(move || {
        let s = s.clone();
        async move {
            *s.lock().unwrap() += 1;
            std::future::pending::<()>().await;
            StatusCode::OK
        }
    });
    let url = serve(app).await;
    let tracer = Tracer::builder()
        .endpoint(url)
        .queue_capacity(100)
        .batch_size(50)
        .max_retries(0)
        .max_in_flight(16)
        .request_timeout(Duration::from_millis(100))
        .flush_interval(Duration::from_millis(10))
        .build()
        .unwrap();
    record_spans(&tracer, 100);
    // Wait until the exporter is stuck in a request to the silent server…
    let deadline = Instant::now() + Duration::from_secs(30);
    while *seen.lock().unwrap() == 0 {
        assert!(Instant::now() < deadline, "the exporter never called");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // … then the app keeps recording: nothing waits, the overflow is counted.
    record_spans(&tracer, 5_000);
    let m = tracer.metrics();
    assert!(m.dropped_queue_full > 0, "{m:?}");
    assert!(m.queued <= 100, "{m:?}");
    assert!(tracer.shutdown(Duration::from_secs(60)).await);
    assert!(tracer.metrics().dropped_export_failed > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_answers_are_retried_after_retry_after() {
    let log: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let l = log.clone();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let l = l.clone();
        async move {
            let n = {
                let mut l = l.lock().unwrap();
                l.push((Instant::now(), req.uri().path().to_string()));
                l.len()
            };
            match n {
                1 => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")]).into_response(),
                2 => (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "0")]).into_response(),
                _ => (StatusCode::OK, "{}").into_response(),
            }
        }
    });
    let url = serve(app).await;
    let tracer = Tracer::builder().endpoint(url).build().unwrap();
    tracer.agent("run").start().end();
    tracer.flush().await;
    let m = tracer.metrics();
    assert_eq!(
        (m.exported, m.retries, m.dropped_export_failed),
        (2, 2, 0),
        "{m:?}"
    );
    let log = log.lock().unwrap();
    // One append that creates and ends the trace (ADR 030): 429, 503, then answered.
    let paths: Vec<&str> = log.iter().map(|(_, p)| p.as_str()).collect();
    assert_eq!(paths.len(), 3, "{paths:?}");
    assert!(paths.iter().all(|p| p.ends_with("/events")), "{paths:?}");
    assert!(
        log[1].0 - log[0].0 >= Duration::from_secs(1),
        "the retry waited for Retry-After"
    );
}

/// A server from before ADR 030: the append refuses `create_if_missing` as unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_create_if_missing_gets_create_append_and_patch() {
    let log: Arc<Mutex<Vec<(String, String, u16)>>> = Arc::default();
    let l = log.clone();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let l = l.clone();
        async move {
            let (method, path) = (req.method().to_string(), req.uri().path().to_string());
            let body = axum::body::to_bytes(req.into_body(), 1 << 20).await.unwrap();
            let body = String::from_utf8_lossy(&body);
            let (status, answer) = if path.ends_with("/events") && body.contains("create_if_missing") {
                (
                    StatusCode::BAD_REQUEST,
                    r#"{"error":{"code":"invalid_argument","message":"invalid JSON body: unknown field `create_if_missing`, expected `events`"}}"#,
                )
            } else if path == "/api/v1/traces" {
                (StatusCode::CREATED, "{}")
            } else {
                (StatusCode::OK, "{}")
            };
            l.lock().unwrap().push((method, path, status.as_u16()));
            (status, answer).into_response()
        }
    });
    let url = serve(app).await;
    let tracer = Tracer::builder().endpoint(url).build().unwrap();
    tracer.agent("first").start().end();
    tracer.flush().await;
    tracer.agent("second").start().end();
    tracer.flush().await;
    let m = tracer.metrics();
    // Two traces of one step: a start and an end record each.
    assert_eq!(
        (m.exported, m.dropped_export_failed, m.requests),
        (4, 0, 7),
        "{m:?}"
    );
    let log = log.lock().unwrap();
    let calls: Vec<(&str, bool, u16)> = log
        .iter()
        .map(|(m, p, s)| (m.as_str(), p.ends_with("/events"), *s))
        .collect();
    assert_eq!(
        calls,
        [
            // The first trace: refused once, then the old way.
            ("POST", true, 400),
            ("POST", false, 201),
            ("POST", true, 200),
            ("PATCH", false, 200),
            // The second goes the old way at once.
            ("POST", false, 201),
            ("POST", true, 200),
            ("PATCH", false, 200),
        ],
        "{log:?}"
    );
}

/// When each request arrived or was answered, and its path.
type Timeline = Arc<Mutex<Vec<(Instant, &'static str, String)>>>;

/// Two parts of one trace in flight at once: the later is sent after the earlier's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_of_one_trace_go_in_order_while_other_traces_overlap() {
    let log: Timeline = Arc::default();
    let l = log.clone();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let l = l.clone();
        async move {
            let path = req.uri().path().to_string();
            let first = {
                let mut l = l.lock().unwrap();
                let first = l.is_empty();
                l.push((Instant::now(), "arrived", path.clone()));
                first
            };
            if first {
                // The first part is held until another trace's request arrived (or a
                // generous deadline passed, and the test fails below).
                let deadline = Instant::now() + Duration::from_secs(30);
                while Instant::now() < deadline
                    && !l.lock().unwrap().iter().any(|(_, _, p)| *p != path)
                {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            l.lock().unwrap().push((Instant::now(), "answered", path));
            (StatusCode::OK, "{}").into_response()
        }
    });
    let url = serve(app).await;
    let tracer = Tracer::builder()
        .endpoint(url)
        .batch_size(1)
        .flush_interval(Duration::from_millis(10))
        .build()
        .unwrap();
    // Trace A's start, then (while its request is held) A's end and trace B, each a round.
    let a = tracer.agent("a").start();
    let path_a = format!("/api/v1/traces/{}/events", a.trace_id());
    let deadline = Instant::now() + Duration::from_secs(30);
    while log.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the exporter never called");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.end();
    let b = tracer.agent("b").start();
    let path_b = format!("/api/v1/traces/{}/events", b.trace_id());
    b.end();
    tracer.flush().await;
    let m = tracer.metrics();
    assert_eq!((m.exported, m.dropped_export_failed), (4, 0), "{m:?}");
    let log = log.lock().unwrap();
    let at = |what: &str, path: &str, nth: usize| {
        log.iter()
            .filter(|(_, w, p)| *w == what && p == path)
            .nth(nth)
            .unwrap_or_else(|| panic!("no {what} #{nth} of {path}: {log:?}"))
            .0
    };
    assert!(
        at("arrived", &path_a, 1) >= at("answered", &path_a, 0),
        "A's second part waited for the first: {log:?}"
    );
    assert!(
        at("arrived", &path_b, 0) < at("answered", &path_a, 0),
        "B did not wait for A: {log:?}"
    );
}
