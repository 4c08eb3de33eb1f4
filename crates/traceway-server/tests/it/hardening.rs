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

/// Reads every page of a trace's spans from the first answer of `GET …/traces/{id}`
/// (`first_query`) on; returns the merged spans (a later form wins) and each answer's size.
async fn read_all_span_pages(
    app: &crate::TestApp,
    id: &str,
    first_query: &str,
    limit: u32,
) -> (
    std::collections::BTreeMap<String, serde_json::Value>,
    Vec<usize>,
) {
    let mut merged = std::collections::BTreeMap::new();
    let mut sizes = Vec::new();
    let mut uri = format!("/api/v1/traces/{id}?{first_query}");
    for _ in 0..10_000 {
        let (status, v) = app.call(Method::GET, &uri, None).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        sizes.push(serde_json::to_vec(&v).expect("json").len());
        let page = &v["span_page"];
        assert!(
            page.is_object(),
            "a paged answer: {}",
            &v.to_string()[..200.min(v.to_string().len())]
        );
        for s in v["spans"].as_array().expect("spans") {
            merged.insert(s["span_id"].as_str().expect("id").to_string(), s.clone());
        }
        match page["next_cursor"].as_str() {
            Some(c) => uri = format!("/api/v1/traces/{id}?span_limit={limit}&span_cursor={c}"),
            None => return (merged, sizes),
        }
    }
    panic!("the cursors never ended");
}

on_both! {
/// 3.7: a GET of a 200,000-span trace was 43 MB and peaked the server at 614 MB. A trace
/// larger than a page (here 12,300 spans; 300 of them started in one batch and ended in
/// a later one) is answered page by page: the default answer is its first page of 1,000
/// with a cursor, and following the cursors gives back every span in its current form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_larger_than_a_page_of_spans_reads_back_completely_through_span_pages(backend: Backend) {
    let app = backend.app().await;
    let (status, t) = app
        .call(Method::POST, "/api/v1/traces", Some(json!({"name": "big"})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{t}");
    let id = t["trace_id"].as_str().expect("id").to_string();
    let sid = |n: u64| format!("{n:016x}");
    let post = |events: Vec<serde_json::Value>| {
        let (app, id) = (&app, &id);
        async move {
            let (status, b) = app
                .call(
                    Method::POST,
                    &format!("/api/v1/traces/{id}/events"),
                    Some(json!({"events": events})),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{b}");
        }
    };
    post((1..=300)
        .map(|n| json!({"type": "span_started", "span": {"span_id": sid(n), "name": "s"}}))
        .collect())
    .await;
    for chunk in 0..6u64 {
        post((0..2000u64)
            .map(|i| {
                let n = 1000 + chunk * 2000 + i;
                json!({"type": "span_ended", "span": {"span_id": sid(n), "name": "e", "parent_span_id": sid(1)}})
            })
            .collect())
        .await;
    }
    post((1..=300)
        .map(|n| json!({"type": "span_ended", "span": {"span_id": sid(n), "status": {"code": "ok"}}}))
        .collect())
    .await;

    let (status, first) = app
        .call(Method::GET, &format!("/api/v1/traces/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["spans"].as_array().expect("spans").len(), 1000);
    assert_eq!(first["span_page"]["limit"], 1000);
    assert!(first["span_page"]["next_cursor"].is_string());
    assert_eq!(first["trace"]["rollups"]["span_count"], 12_300);

    let (merged, sizes) = read_all_span_pages(&app, &id, "", 5000).await;
    assert_eq!(merged.len(), 12_300, "every span once merged");
    assert!(
        merged.values().all(|s| s["end_time"].is_string()),
        "each in its current (ended) form"
    );
    assert!(sizes
        .iter()
        .all(|n| *n <= traceway_server::api::MAX_TRACE_RESPONSE_BYTES + 64 * 1024));
    // A bad page request is a 400 with a message.
    for q in ["span_limit=0", "span_limit=10001", "span_cursor=x", "span_cursor=-1"] {
        let (status, v) = app
            .call(Method::GET, &format!("/api/v1/traces/{id}?{q}"), None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{q}: {v}");
        assert!(v["error"]["message"].is_string());
    }
    // The formats read the whole trace: refused with a clear error past a page's maximum.
    let (status, v) = app
        .call(Method::GET, &format!("/api/v1/traces/{id}?format=compact"), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["code"], "trace_too_large");
}
}

on_both! {
/// 3.7: one answer stays under the size cap: a page whose spans would pass it is cut
/// before the span that would, says so, and goes on from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_spans_over_the_size_cap_is_cut_and_says_so(backend: Backend) {
    let app = backend.app().await;
    let (_, t) = app
        .call(Method::POST, "/api/v1/traces", Some(json!({"name": "wide"})))
        .await;
    let id = t["trace_id"].as_str().expect("id").to_string();
    // 700 spans of ~15 KB each (under the 16 KiB content cap): ~10 MB, over the 8 MiB cap.
    let input = "x".repeat(15_000);
    for chunk in 0..7u64 {
        let events: Vec<serde_json::Value> = (0..100u64)
            .map(|i| {
                json!({"type": "span_ended", "span": {
                    "span_id": format!("{:016x}", 1 + chunk * 100 + i), "name": "w", "input": input,
                }})
            })
            .collect();
        let (status, b) = app
            .call(
                Method::POST,
                &format!("/api/v1/traces/{id}/events"),
                Some(json!({"events": events})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{b}");
    }
    // Without paging the tree would pass the cap: the paged answer comes instead.
    let (_, first) = app
        .call(Method::GET, &format!("/api/v1/traces/{id}"), None)
        .await;
    assert!(first["span_page"].is_object(), "paged");
    let (status, page) = app
        .call(Method::GET, &format!("/api/v1/traces/{id}?span_limit=1000"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["span_page"]["cut_by_size"], true);
    let n = page["spans"].as_array().expect("spans").len();
    assert!(n > 0 && n < 700, "{n}");
    let (merged, sizes) = read_all_span_pages(&app, &id, "span_limit=1000", 1000).await;
    assert_eq!(merged.len(), 700);
    let cap = traceway_server::api::MAX_TRACE_RESPONSE_BYTES;
    assert!(sizes.iter().all(|s| *s <= cap + 64 * 1024), "{sizes:?}");
    assert!(sizes.len() >= 2);
}
}

fn count_nodes(nodes: &serde_json::Value) -> usize {
    nodes.as_array().map_or(0, |a| {
        a.iter().map(|n| 1 + count_nodes(&n["children"])).sum()
    })
}

on_both! {
/// 3.9: spans in a parent cycle were counted in the rollups but missing from the tree.
/// They are shown now, the cycle broken at its earliest span, which is a root flagged
/// `in_parent_cycle`.
#[tokio::test]
async fn spans_in_a_parent_cycle_are_in_the_tree_as_a_flagged_root(backend: Backend) {
    let app = backend.app().await;
    let (_, t) = app
        .call(Method::POST, "/api/v1/traces", Some(json!({"name": "cycle"})))
        .await;
    let id = t["trace_id"].as_str().expect("id").to_string();
    let span = |id: &str, parent: &str, start: &str| {
        json!({"type": "span_ended", "span": {
            "span_id": id, "parent_span_id": parent, "name": id,
            "start_time": start, "end_time": "2026-01-01T00:00:10Z",
        }})
    };
    let (status, b) = app
        .call(
            Method::POST,
            &format!("/api/v1/traces/{id}/events"),
            Some(json!({"events": [
                json!({"type": "span_ended", "span": {"span_id": "00000000000000a0", "name": "root",
                    "start_time": "2026-01-01T00:00:00Z", "end_time": "2026-01-01T00:00:10Z"}}),
                span("00000000000000b1", "00000000000000b2", "2026-01-01T00:00:01Z"),
                span("00000000000000b2", "00000000000000b1", "2026-01-01T00:00:02Z"),
                span("00000000000000b3", "00000000000000b2", "2026-01-01T00:00:03Z"),
            ]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{b}");
    let (status, v) = app
        .call(Method::GET, &format!("/api/v1/traces/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["trace"]["rollups"]["span_count"], 4);
    assert_eq!(count_nodes(&v["spans"]), 4, "every counted span is in the tree: {v}");
    let roots = v["spans"].as_array().expect("roots");
    assert_eq!(roots.len(), 2);
    assert_eq!(roots[0]["span_id"], "00000000000000a0");
    assert!(roots[0].get("in_parent_cycle").is_none());
    assert_eq!(roots[1]["span_id"], "00000000000000b1");
    assert_eq!(roots[1]["in_parent_cycle"], true);
    assert_eq!(roots[1]["children"][0]["span_id"], "00000000000000b2");
}
}
