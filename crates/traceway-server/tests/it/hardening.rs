//! Regression tests of the failures issue 15 found under attack, each named after what it
//! reproduces.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::test_app;

fn llm_end(span: &str, llm: serde_json::Value) -> serde_json::Value {
    json!({"type": "span_ended", "span": {"span_id": span, "kind": "llm", "llm": llm}})
}

/// 3.1: two LLM spans with `cost_usd: 1e308` made the cost rollup +inf, stored as null;
/// the trace's GET and the whole tenant's listing then answered 500.
#[tokio::test]
async fn poison_trace_with_two_spans_costing_1e308_leaves_its_get_and_the_listing_readable() {
    let app = test_app();
    let (status, t) = app
        .call(
            Method::POST,
            "/api/v1/traces",
            Some(json!({"name": "poison"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{t}");
    let id = t["trace_id"].as_str().unwrap().to_string();
    let (status, b) = app
        .call(
            Method::POST,
            &format!("/api/v1/traces/{id}/events"),
            Some(json!({"events": [
                llm_end("00000000000000a1", json!({"cost_usd": 1e308, "input_tokens": u64::MAX})),
                llm_end("00000000000000a2", json!({"cost_usd": 1e308, "input_tokens": u64::MAX})),
            ]})),
        )
        .await;
    assert!(status.is_success(), "{status} {b}");
    let (status, got) = app
        .call(Method::GET, &format!("/api/v1/traces/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{got}");
    let rollups = &got["trace"]["rollups"];
    let cost = rollups["cost_usd"].as_f64().expect("a number, not null");
    assert!(cost.is_finite() && cost > 0.0, "{rollups}");
    // 3.2: the token sum neither wraps nor overflows.
    let tokens = rollups["input_tokens"].as_u64().expect("tokens");
    assert!(
        tokens >= 2 * traceway_core::ingest::MAX_SPAN_TOKENS,
        "{rollups}"
    );
    let (status, list) = app.call(Method::GET, "/api/v1/traces", None).await;
    assert_eq!(status, StatusCode::OK, "{list}");
}

/// 3.3: `page=9223372036854775808` or `offset>=2^63` answered 500 on SQLite,
/// `page=4294967296&page_size=1000` wrapped, `after_seq=2^64-1` returned every event (and
/// replayed a stream from seq 1). All are 400 with a message now.
#[tokio::test]
async fn paging_overflow_answers_400_on_listings_event_reads_and_streams() {
    let app = test_app();
    let (_, t) = app
        .call(Method::POST, "/api/v1/traces", Some(json!({})))
        .await;
    let id = t["trace_id"].as_str().unwrap().to_string();
    for uri in [
        "/api/v1/traces?page=9223372036854775808".to_string(),
        "/api/v1/traces?page=4294967296&page_size=1000".to_string(),
        format!("/api/v1/traces/{id}/events?offset=9223372036854775808"),
        format!("/api/v1/traces/{id}/events?after_seq=18446744073709551615"),
        format!("/api/v1/traces/{id}/stream?after_seq=18446744073709551615"),
    ] {
        let (status, body) = app.call(Method::GET, &uri, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_eq!(body["error"]["code"], "invalid_argument", "{uri}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("at most")
                || body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("largest"),
            "{uri}: {body}"
        );
    }
    let (status, _) = app
        .call(Method::GET, "/api/v1/traces?page=2&page_size=1000", None)
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a page within the bound still works"
    );
}

/// Deliver 2: one tenant flooding past its spans-per-second quota gets 429 with
/// Retry-After (OTLP too), while another tenant's writes still go through.
#[tokio::test]
async fn a_flooding_tenant_is_refused_with_retry_after_and_another_tenant_still_writes() {
    let app = crate::test_app_with(traceway_server::Config {
        quota_spans_per_sec: 10,
        quota_spans_burst: 10,
        ..traceway_server::Config::default()
    });
    let events = |base: u64| json!({"events": (0..5).map(|i| llm_end(&format!("{:016x}", base + i), json!({}))).collect::<Vec<_>>()});
    let mut refused = None;
    for round in 0..20u64 {
        let (_, t) = app
            .call_as("flood", Method::POST, "/api/v1/traces", Some(json!({})))
            .await;
        let id = t["trace_id"].as_str().unwrap().to_string();
        let (status, body) = app
            .call_as(
                "flood",
                Method::POST,
                &format!("/api/v1/traces/{id}/events"),
                Some(events(round * 10 + 1)),
            )
            .await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(body);
            break;
        }
        assert!(status.is_success(), "{status} {body}");
    }
    let body = refused.expect("the flood is refused within 20 batches of 5 spans at 10/s");
    assert_eq!(body["error"]["code"], "quota_exceeded");

    // The other tenant's bucket is untouched.
    let (_, t) = app
        .call_as("quiet", Method::POST, "/api/v1/traces", Some(json!({})))
        .await;
    let id = t["trace_id"].as_str().unwrap().to_string();
    let (status, body) = app
        .call_as(
            "quiet",
            Method::POST,
            &format!("/api/v1/traces/{id}/events"),
            Some(events(1)),
        )
        .await;
    assert!(status.is_success(), "{status} {body}");

    // The refusal carries Retry-After.
    let req = axum::http::Request::builder()
        .method(Method::POST)
        .uri(format!("/api/v1/traces/{id}/events"))
        .header("x-traceway-tenant", "flood")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(events(900).to_string()))
        .unwrap();
    let resp = tower::ServiceExt::oneshot(app.router.clone(), req)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().contains_key("retry-after"));
}
