//! The analysis routes through the router, on SQLite and on a real Redis: a trace's
//! summary and analysis (a running one analysed as far as it goes), the formats of
//! `GET /api/v1/traces/{id}`, the cross-trace analysis with its bound, bad thresholds,
//! and tenant isolation.

use crate::test_app;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use tower::ServiceExt;

async fn call(
    router: &Router,
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
            Body::from(serde_json::to_vec(&v).unwrap())
        }
        None => Body::empty(),
    };
    let resp = router
        .clone()
        .oneshot(req.body(body).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20)
        .await
        .unwrap();
    let v = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, v)
}

fn tool_call(id: &str, start: &str, end: &str) -> Value {
    json!({"type": "span_ended", "span": {
        "span_id": id, "parent_span_id": "00000000000000a0", "kind": "tool", "name": "get_order",
        "start_time": start, "end_time": end, "status": {"code": "ok"},
        "tool": {"name": "get_order", "arguments": {"order_id": 42, "request_id": id}, "result": {"status": "pending"}}
    }})
}

/// One agent run: a root still running, three identical tool calls and an LLM answer.
async fn seed(router: &Router, tenant: &str, agent: &str) -> String {
    let (status, t) = call(
        router,
        tenant,
        Method::POST,
        "/api/v1/traces",
        Some(json!({"agent_id": agent})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{t}");
    let id = t["trace_id"].as_str().unwrap().to_string();
    let events = json!({"events": [
        {"type": "span_started", "span": {"span_id": "00000000000000a0", "kind": "agent", "name": "run", "start_time": "2026-01-01T00:00:00Z"}},
        tool_call("00000000000000a1", "2026-01-01T00:00:00.100Z", "2026-01-01T00:00:00.200Z"),
        tool_call("00000000000000a2", "2026-01-01T00:00:00.300Z", "2026-01-01T00:00:00.400Z"),
        tool_call("00000000000000a3", "2026-01-01T00:00:00.500Z", "2026-01-01T00:00:00.600Z"),
        {"type": "span_ended", "span": {"span_id": "00000000000000a4", "parent_span_id": "00000000000000a0", "kind": "llm", "name": "answer",
            "start_time": "2026-01-01T00:00:00.600Z", "end_time": "2026-01-01T00:00:01.600Z", "status": {"code": "ok"},
            "llm": {"provider": "openai", "model": "gpt-4o", "input_tokens": 1000, "output_tokens": 100, "cost_usd": 0.0035}}}
    ]});
    let (status, v) = call(
        router,
        tenant,
        Method::POST,
        &format!("/api/v1/traces/{id}/events"),
        Some(events),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    id
}

async fn routes_answer(router: &Router, now_is_after_start: bool) {
    let id = seed(router, "acme", "support").await;

    let (status, a) = call(
        router,
        "acme",
        Method::GET,
        &format!("/api/v1/traces/{id}/analysis"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{a}");
    assert_eq!(a["partial"], true, "a running trace is flagged");
    assert_eq!(a["loops"][0]["type"], "repeated_call");
    assert_eq!(a["loops"][0]["count"], 3);
    assert_eq!(
        a["loops"][0]["span_ids"],
        json!(["00000000000000a1", "00000000000000a2", "00000000000000a3"])
    );
    assert!(a["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["kind"] == "repeated_call"
            && r["message"].as_str().unwrap().contains("get_order")));
    if now_is_after_start {
        assert_eq!(a["critical_path"]["includes_running"], true);
    }
    // A threshold as a query parameter: 4 identical calls needed, so no repeated call.
    let (_, b) = call(
        router,
        "acme",
        Method::GET,
        &format!("/api/v1/traces/{id}/analysis?repeat_threshold=4"),
        None,
    )
    .await;
    assert_ne!(b["loops"][0]["type"], "repeated_call", "{}", b["loops"]);
    assert_eq!(b["options"]["repeat_threshold"], 4);

    let (status, s) = call(
        router,
        "acme",
        Method::GET,
        &format!("/api/v1/traces/{id}/summary"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{s}");
    assert_eq!(s["summary"]["span_count"], 5);
    assert_eq!(
        s["summary"]["tools"][0],
        json!({"tool": "get_order", "calls": 3, "errors": 0})
    );
    assert_eq!(s["summary"]["events"]["span_ended"], 4);
    assert_eq!(s["rollups"]["models"]["gpt-4o"]["input_tokens"], 1000);

    let (status, c) = call(
        router,
        "acme",
        Method::GET,
        &format!("/api/v1/traces/{id}?format=compact"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{c}");
    let lines: Vec<&str> = c["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["line"].as_str().unwrap())
        .collect();
    assert_eq!(lines[0], "agent run running");
    assert_eq!(lines[4], "  llm answer model=gpt-4o tokens=1100 1.00s ok");
    let (_, d) = call(
        router,
        "acme",
        Method::GET,
        &format!("/api/v1/traces/{id}?format=detailed&level=minimal"),
        None,
    )
    .await;
    assert_eq!(d["level"], "minimal");
    assert!(
        d["steps"][1].get("tool").is_none(),
        "minimal keeps no tool details"
    );
    let (_, st) = call(
        router,
        "acme",
        Method::GET,
        &format!("/api/v1/traces/{id}?format=streaming"),
        None,
    )
    .await;
    assert!(
        st["lines"][0]
            .as_str()
            .unwrap()
            .starts_with("#1 trace_started"),
        "{st}"
    );
    let (status, e) = call(
        router,
        "acme",
        Method::GET,
        &format!("/api/v1/traces/{id}?format=yaml"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(e["error"]["code"], "invalid_argument");

    // Bad thresholds are refused clearly.
    for q in [
        "repeat_threshold=0",
        "dominant_share=2",
        "slow_mean_ms=-1",
        "nope=1",
    ] {
        let (status, e) = call(
            router,
            "acme",
            Method::GET,
            &format!("/api/v1/traces/{id}/analysis?{q}"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{q}: {e}");
        assert!(e["error"]["message"].is_string());
    }
    // Another tenant sees nothing.
    let (status, _) = call(
        router,
        "other",
        Method::GET,
        &format!("/api/v1/traces/{id}/analysis"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Across traces: from the rows' rollups.
    seed(router, "acme", "support").await;
    seed(router, "acme", "billing").await;
    let (status, x) = call(
        router,
        "acme",
        Method::GET,
        "/api/v1/analysis?agent_id=support",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{x}");
    assert_eq!(x["trace_count"], 2);
    assert_eq!(x["truncated"], false);
    assert_eq!(x["models"]["gpt-4o"]["calls"], 2);
    assert_eq!(x["tokens"]["input"], 2000);
    assert!((x["cost_usd"].as_f64().unwrap() - 0.007).abs() < 1e-9);
    assert_eq!(x["duration_ms"]["p50"], 1600.0);
    let (_, all) = call(router, "acme", Method::GET, "/api/v1/analysis", None).await;
    assert_eq!(all["trace_count"], 3);
    let (_, none) = call(router, "other", Method::GET, "/api/v1/analysis", None).await;
    assert_eq!(none["trace_count"], 0);
    let (status, _) = call(
        router,
        "acme",
        Method::GET,
        "/api/v1/analysis?from=2030-01-01T00:00:00Z&to=2020-01-01T00:00:00Z",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

on_both! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analysis_routes_answer(backend: Backend) {
    let t = backend.app().await;
    t.clock
        .set(traceway_core::Timestamp::parse_rfc3339("2026-01-01T00:00:05Z").unwrap());
    routes_answer(&t.router, true).await;
}
}

/// The cross-trace analysis reads at most `limit` (default and at most `MAX_TRACES`)
/// rows, the newest, and says when it stopped.
#[tokio::test]
async fn the_cross_trace_analysis_is_bounded() {
    let t = test_app();
    for _ in 0..3 {
        seed(&t.router, "acme", "a").await;
    }
    let (_, x) = call(&t.router, "acme", Method::GET, "/api/v1/analysis", None).await;
    assert_eq!(x["trace_count"], 3);
    assert_eq!(x["max_traces"], traceway_server::analysis::MAX_TRACES);
    assert_eq!(x["truncated"], false);
    let (_, x) = call(
        &t.router,
        "acme",
        Method::GET,
        "/api/v1/analysis?limit=2",
        None,
    )
    .await;
    assert_eq!(
        (x["trace_count"].as_u64(), x["truncated"].as_bool()),
        (Some(2), Some(true))
    );
    let (_, x) = call(
        &t.router,
        "acme",
        Method::GET,
        "/api/v1/analysis?limit=3",
        None,
    )
    .await;
    assert_eq!(
        (x["trace_count"].as_u64(), x["truncated"].as_bool()),
        (Some(3), Some(false))
    );
    let (status, _) = call(
        &t.router,
        "acme",
        Method::GET,
        "/api/v1/analysis?limit=10001",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// One ended run: `planner` (0–1000 ms) over a `search` tool (100–400, failing when
/// `fail`) and a `writer` LLM call (500–900) that reports no cost.
async fn ended_run(router: &Router, tenant: &str, agent: &str, fail: bool, model: &str) -> String {
    let (status, t) = call(
        router,
        tenant,
        Method::POST,
        "/api/v1/traces",
        Some(json!({"agent_id": agent})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{t}");
    let id = t["trace_id"].as_str().unwrap().to_string();
    let search_status = if fail {
        json!({"code": "error", "message": "timeout after 30 s"})
    } else {
        json!({"code": "ok"})
    };
    let events = json!({"events": [
        {"type": "span_ended", "span": {"span_id": "00000000000000b0", "kind": "agent", "name": "run",
            "component_id": "planner", "start_time": "2026-01-01T00:00:00Z",
            "end_time": "2026-01-01T00:00:01Z", "status": {"code": "ok"}}},
        {"type": "span_ended", "span": {"span_id": "00000000000000b1", "parent_span_id": "00000000000000b0",
            "kind": "tool", "name": "search", "component_id": "search",
            "start_time": "2026-01-01T00:00:00.100Z", "end_time": "2026-01-01T00:00:00.400Z",
            "status": search_status}},
        {"type": "span_ended", "span": {"span_id": "00000000000000b2", "parent_span_id": "00000000000000b0",
            "kind": "llm", "name": "write", "component_id": "writer",
            "start_time": "2026-01-01T00:00:00.500Z", "end_time": "2026-01-01T00:00:00.900Z",
            "status": {"code": "ok"},
            "llm": {"model": model, "input_tokens": 1000, "output_tokens": 100}}}
    ]});
    let (status, v) = call(
        router,
        tenant,
        Method::POST,
        &format!("/api/v1/traces/{id}/events"),
        Some(events),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = call(
        router,
        tenant,
        Method::PATCH,
        &format!("/api/v1/traces/{id}"),
        Some(json!({"state": "COMPLETED"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    id
}

fn quick_digests() -> traceway_server::Config {
    traceway_server::Config {
        analysis_delay: std::time::Duration::from_millis(10),
        ..Default::default()
    }
}

on_both! {
/// Issue 12, Deliver 4: the top components by self time and the top error groups come
/// from the digests kept on the rows of ended traces; rows without one are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cross_trace_analysis_merges_the_digests_of_ended_traces(backend: Backend) {
    let t = backend.app_with(quick_digests()).await;
    t.clock
        .set(traceway_core::Timestamp::parse_rfc3339("2026-01-01T00:00:05Z").unwrap());
    ended_run(&t.router, "acme", "support", true, "gpt-4o").await;
    ended_run(&t.router, "acme", "support", true, "gpt-4o").await;
    seed(&t.router, "acme", "support").await; // still running
    ended_run(&t.router, "other", "support", true, "gpt-4o").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let x = loop {
        let (status, x) = call(
            &t.router,
            "acme",
            Method::GET,
            "/api/v1/analysis?agent_id=support",
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{x}");
        if x["summaries"]["traces"] == 2 {
            break x;
        }
        assert!(std::time::Instant::now() < deadline, "no digests after 30 s: {x}");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    };
    assert_eq!(x["trace_count"], 3);
    assert_eq!(
        x["summaries"],
        json!({"traces": 2, "missing": 1, "missing_running": 1, "stale": 0})
    );
    let comps: Vec<(String, f64, u64)> = x["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["key"].as_str().unwrap().to_string(),
                c["self_ms"].as_f64().unwrap(),
                c["traces"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        comps,
        [
            ("writer".to_string(), 800.0, 2),
            ("planner".to_string(), 600.0, 2),
            ("search".to_string(), 600.0, 2)
        ]
    );
    assert_eq!(x["span_names"][0]["key"], "write");
    assert_eq!(x["span_names"][0]["kind"], "llm");
    assert_eq!(
        x["error_groups"],
        json!([{"kind": "tool", "name": "search", "message": "timeout after <n> s",
            "count": 2, "traces": 2, "retried_traces": 0}])
    );
    // The other tenant's trace is not in it; `top` cuts the lists and is bounded.
    let (_, one) = call(&t.router, "acme", Method::GET, "/api/v1/analysis?top=1", None).await;
    assert_eq!(one["components"].as_array().unwrap().len(), 1);
    assert_eq!(one["error_groups"][0]["count"], 2);
    for bad in ["top=0", "top=101", "top=x"] {
        let (status, v) = call(
            &t.router,
            "acme",
            Method::GET,
            &format!("/api/v1/analysis?{bad}"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert!(v["error"]["code"].is_string(), "{v}");
    }
}
}

on_both! {
/// A trace without a digest (as every trace stored before digests existed) is counted,
/// not read span by span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_without_a_digest_are_counted_not_analysed(backend: Backend) {
    let config = traceway_server::Config {
        analysis_delay: std::time::Duration::from_secs(3600),
        ..Default::default()
    };
    let t = backend.app_with(config).await;
    ended_run(&t.router, "acme", "a", true, "gpt-4o").await;
    let (_, x) = call(&t.router, "acme", Method::GET, "/api/v1/analysis", None).await;
    assert_eq!(x["trace_count"], 1);
    assert_eq!(
        x["summaries"],
        json!({"traces": 0, "missing": 1, "missing_running": 0, "stale": 0})
    );
    assert_eq!(x["components"], json!([]));
    assert_eq!(x["error_groups"], json!([]));
}
}

fn find_span<'a>(nodes: &'a Value, name: &str) -> Option<&'a Value> {
    for n in nodes.as_array()? {
        if n["name"] == name {
            return Some(n);
        }
        if let Some(found) = n.get("children").and_then(|c| find_span(c, name)) {
            return Some(found);
        }
    }
    None
}

on_both! {
/// Issue 12, Deliver 2: the config file's `[pricing]` changes the cost computed at ingest
/// (an override of a listed model, and a model the table lacks), and the rollups follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pricing_from_the_config_file_prices_ingested_llm_spans(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traceway.toml");
    std::fs::write(
        &path,
        "[pricing]\nlabel = \"acme\"\n\
         [pricing.models.\"gpt-4o\"]\ninput = 1.0\noutput = 2.0\n\
         [pricing.models.\"acme/house-model\"]\ninput = 0.5\noutput = 1.5\n",
    )
    .unwrap();
    let config = traceway_server::Config::resolve(traceway_server::config::ServeArgs {
        config: Some(path),
        ..Default::default()
    })
    .unwrap();
    let t = backend.app_with(config).await;
    let cases = [("gpt-4o", 1000.0 * 1.0e-6 + 100.0 * 2.0e-6), ("acme/house-model", 1000.0 * 0.5e-6 + 100.0 * 1.5e-6)];
    for (model, want) in cases {
        let id = ended_run(&t.router, "acme", "a", false, model).await;
        let (_, v) = call(&t.router, "acme", Method::GET, &format!("/api/v1/traces/{id}"), None).await;
        let llm = &find_span(&v["spans"], "write").expect("llm span")["llm"];
        let cost = llm["cost_usd"].as_f64().expect("a computed cost");
        assert!((cost - want).abs() < 1e-12, "{model}: {cost} != {want}");
        assert_eq!(llm["cost_source"], "computed");
        let version = llm["price_table"].as_str().unwrap();
        assert!(version.ends_with("+acme"), "{version}");
        let (_, sum) = call(
            &t.router,
            "acme",
            Method::GET,
            &format!("/api/v1/traces/{id}/summary"),
            None,
        )
        .await;
        let rolled = sum["rollups"]["cost_usd"].as_f64().expect("rollups");
        assert!((rolled - want).abs() < 1e-12, "{sum}");
    }
}
}

on_both! {
/// ADR 037: the summary and the analysis count every event of a trace, not the first
/// page of them, and an `error` event logged after 10,500 spans (past any one page of
/// events) is in the error groups and the error count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_analysis_counts_every_event_and_reads_late_error_events(backend: Backend) {
    let t = backend.app().await;
    let (status, created) = call(&t.router, "acme", Method::POST, "/api/v1/traces", Some(json!({}))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["trace_id"].as_str().unwrap().to_string();
    let root = json!({"type": "span_ended", "span": {"span_id": "00000000000f0000", "kind": "agent",
        "name": "run", "start_time": "2026-01-01T00:00:00Z", "end_time": "2026-01-01T00:10:00Z",
        "status": {"code": "ok"}}});
    let mut events = vec![root];
    for n in 1..10_500u64 {
        let ms = n * 10;
        events.push(json!({"type": "span_ended", "span": {
            "span_id": format!("{n:016x}"), "parent_span_id": "00000000000f0000", "kind": "tool",
            "name": "lookup",
            "start_time": format!("2026-01-01T00:{:02}:{:02}.{:03}Z", ms / 60_000, ms / 1000 % 60, ms % 1000),
            "end_time": format!("2026-01-01T00:{:02}:{:02}.{:03}Z", ms / 60_000, ms / 1000 % 60, ms % 1000 + 5),
            "status": {"code": "ok"}}}));
    }
    events.push(json!({"type": "error", "message": "upstream closed after 12 s", "error_type": "TimeoutError"}));
    for chunk in events.chunks(1000) {
        let (status, v) = call(
            &t.router,
            "acme",
            Method::POST,
            &format!("/api/v1/traces/{id}/events"),
            Some(json!({"events": chunk})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{v}");
    }
    for route in ["summary", "analysis"] {
        let (status, a) = call(&t.router, "acme", Method::GET, &format!("/api/v1/traces/{id}/{route}"), None).await;
        assert_eq!(status, StatusCode::OK, "{a}");
        let events = &a["summary"]["events"];
        assert_eq!(events["span_ended"], 10_500, "{route}: {events}");
        assert_eq!(events["trace_started"], 1, "{route}: {events}");
        assert_eq!(events["error"], 1, "{route}: {events}");
        assert_eq!(a["summary"]["error_count"], 1, "{route}");
        assert_eq!(a["events_truncated"], false, "{route}");
    }
    let (_, a) = call(&t.router, "acme", Method::GET, &format!("/api/v1/traces/{id}/analysis"), None).await;
    let groups = a["error_groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert_eq!(groups[0]["error_type"], "TimeoutError");
    assert_eq!(groups[0]["message"], "upstream closed after <n> s");
}
}
