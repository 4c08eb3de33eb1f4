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
    // create (429), create (503), create, append, patch
    let paths: Vec<&str> = log.iter().map(|(_, p)| p.as_str()).collect();
    assert_eq!(paths[0], "/api/v1/traces");
    assert_eq!(paths[2], "/api/v1/traces");
    assert!(paths[3].ends_with("/events"), "{paths:?}");
    assert!(
        log[1].0 - log[0].0 >= Duration::from_secs(1),
        "the retry waited for Retry-After"
    );
}
