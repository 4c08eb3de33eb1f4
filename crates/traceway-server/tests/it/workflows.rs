//! The workflow context API through the router (SQLite): store, read, refresh, list,
//! delete, tenant isolation and bad input. The Redis side runs in the conformance suite
//! and in the client crate's restart tests on the real binary.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::json;
use traceway_server::Config;

use crate::{test_app, test_app_with};

const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

#[tokio::test]
async fn a_context_is_stored_read_listed_and_deleted() {
    let app = test_app();
    let uri = "/api/v1/workflows/order-42/context";
    let (s, v) = app.call(Method::GET, uri, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["error"]["code"], "not_found");
    let (s, v) = app
        .call(
            Method::PUT,
            uri,
            Some(json!({"traceparent": TP, "tracestate": "congo=t61rcWkgMzE", "agent": "planner", "metadata": {"step": "2"}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["instance_id"], "order-42");
    let (s, got) = app.call(Method::GET, uri, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got, v);
    assert_eq!(got["traceparent"], TP);
    assert_eq!(got["tracestate"], "congo=t61rcWkgMzE");
    assert_eq!(got["agent"], "planner");
    // A percent-encoded id with a slash and a space is one instance.
    let (s, _) = app
        .call(
            Method::PUT,
            "/api/v1/workflows/a%2Fb%20c/context",
            Some(json!({"traceparent": TP})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, st) = app
        .call(Method::GET, "/api/v1/workflows?limit=1", None)
        .await;
    assert_eq!(s, StatusCode::OK, "{st}");
    assert_eq!(st["count"], 2);
    assert_eq!(st["instances"], json!(["a/b c"]));
    let cursor = st["next_cursor"].as_str().expect("cursor").to_string();
    let (_, st) = app
        .call(
            Method::GET,
            &format!("/api/v1/workflows?limit=1&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(st["instances"], json!(["order-42"]));
    assert!(st["next_cursor"].is_null(), "{st}");
    let (s, _) = app.call(Method::DELETE, uri, None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = app.call(Method::DELETE, uri, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app.call(Method::GET, uri, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn another_tenants_instance_is_not_found() {
    let app = test_app();
    let uri = "/api/v1/workflows/wf/context";
    let (s, _) = app
        .call_as("acme", Method::PUT, uri, Some(json!({"traceparent": TP})))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = app.call_as("globex", Method::GET, uri, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, _) = app.call_as("globex", Method::DELETE, uri, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, st) = app
        .call_as("globex", Method::GET, "/api/v1/workflows", None)
        .await;
    assert_eq!(st["count"], 0);
    let (s, _) = app.call_as("acme", Method::GET, uri, None).await;
    assert_eq!(s, StatusCode::OK, "still there for its tenant");
}

#[tokio::test]
async fn bad_input_is_a_400_naming_the_field() {
    let app = test_app();
    let long = "x".repeat(257);
    let cases = [
        (
            format!("/api/v1/workflows/{long}/context"),
            json!({"traceparent": TP}),
            "instance id",
        ),
        (
            "/api/v1/workflows/wf/context".into(),
            json!({"traceparent": "00-nope-01"}),
            "traceparent",
        ),
        (
            "/api/v1/workflows/wf/context".into(),
            json!({"traceparent": TP, "tracestate": "no equals"}),
            "tracestate",
        ),
        (
            "/api/v1/workflows/wf/context".into(),
            json!({"tracestate": "a=b"}),
            "traceparent",
        ),
        (
            "/api/v1/workflows/wf/context".into(),
            json!({"traceparent": TP, "colour": "red"}),
            "colour",
        ),
        (
            "/api/v1/workflows/tab%09id/context".into(),
            json!({"traceparent": TP}),
            "instance id",
        ),
    ];
    for (uri, body, field) in cases {
        let (s, v) = app.call(Method::PUT, &uri, Some(body.clone())).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert_eq!(v["error"]["code"], "invalid_argument", "{v}");
        let m = v["error"]["message"].as_str().expect("message");
        assert!(m.contains(field), "{body}: {m}");
    }
    let (s, v) = app
        .call(
            Method::GET,
            &format!("/api/v1/workflows/{long}/context"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    for q in ["limit=0", "limit=1001", "cursor=zz"] {
        let (s, v) = app
            .call(Method::GET, &format!("/api/v1/workflows?{q}"), None)
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{q}: {v}");
    }
    let (_, st) = app.call(Method::GET, "/api/v1/workflows", None).await;
    assert_eq!(st["count"], 0, "nothing stored");
}

#[tokio::test]
async fn the_configured_ttl_is_refreshed_by_each_put() {
    let config = Config {
        workflow_context_ttl: Duration::from_secs(600),
        ..Config::default()
    };
    let app = test_app_with(config);
    let uri = "/api/v1/workflows/wf/context";
    let put = || app.call(Method::PUT, uri, Some(json!({"traceparent": TP})));
    assert_eq!(put().await.0, StatusCode::OK);
    app.clock.advance(Duration::from_secs(500));
    assert_eq!(put().await.0, StatusCode::OK);
    app.clock.advance(Duration::from_secs(500));
    assert_eq!(app.call(Method::GET, uri, None).await.0, StatusCode::OK);
    app.clock.advance(Duration::from_secs(101));
    assert_eq!(
        app.call(Method::GET, uri, None).await.0,
        StatusCode::NOT_FOUND
    );
}
