//! The generated OpenAPI document (ADR 026) against the router and the real answers:
//! every route the router holds is in the document with the methods it serves, the served
//! document is valid OpenAPI 3.1 by the OpenAPI Initiative's own JSON Schemas (vendored in
//! `tests/oas-3.1`), and real answers validate against the schemas the document gives
//! them (`jsonschema`).

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::{test_app, TestApp};

/// Where the document is registered for `$ref`s into it.
const DOC_URI: &str = "https://traceway.test/openapi.json";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

async fn served_document(app: &TestApp) -> Value {
    let req = Request::get("/api/v1/openapi.json")
        .body(Body::empty())
        .unwrap();
    let resp = app.router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
    let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20)
        .await
        .unwrap();
    // A copy to look at or to feed other tools (schemathesis): set the variable to a path.
    if let Ok(path) = std::env::var("TRACEWAY_OPENAPI_DUMP") {
        std::fs::write(path, &bytes).expect("dump the document");
    }
    serde_json::from_slice(&bytes).expect("the document is JSON")
}

/// The path templates the router holds. axum has no public listing, but its `Debug` form
/// prints its path table (`RouteId(3): "/api/v1/traces"`); the fallback's own paths are
/// left out. Reading the router itself, not a list kept by hand, is the point: a route
/// added with a plain `.route(...)` is found here and is missing from the document.
fn router_paths(app: &TestApp) -> BTreeSet<String> {
    let debug = format!("{:?}", app.router);
    // `Router { path_router: …, fallback_router: … }`: only the first holds the routes.
    let start = debug
        .find("path_router")
        .expect("axum's Router Debug names path_router");
    let end = debug.find("fallback_router").unwrap_or(debug.len());
    let mut out = BTreeSet::new();
    let mut rest = &debug[start..end];
    while let Some(i) = rest.find("RouteId(") {
        rest = &rest[i + "RouteId(".len()..];
        let Some(j) = rest.find("): \"") else {
            continue;
        };
        if !rest[..j].chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let after = &rest[j + 4..];
        let Some(k) = after.find('"') else { break };
        let path = &after[..k];
        if !path.contains("__private__axum") {
            out.insert(path.to_string());
        }
        rest = &after[k..];
    }
    out
}

/// A concrete path for a template: every `{param}` becomes a valid trace id, which each
/// path parameter accepts or refuses with a 400 of its handler (never the 405 of a
/// method the route does not serve).
fn concrete(template: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let j = rest[i..].find('}').expect("closed parameter") + i;
        out.push_str(TRACE);
        rest = &rest[j + 1..];
    }
    out.push_str(rest);
    out
}

const METHODS: [&str; 5] = ["get", "put", "post", "patch", "delete"];

#[tokio::test]
async fn every_route_is_in_the_document_with_its_methods() {
    let app = test_app();
    let doc = served_document(&app).await;
    let paths = doc["paths"].as_object().expect("paths");
    let documented: BTreeSet<String> = paths.keys().cloned().collect();
    let routed = router_paths(&app);
    assert!(
        routed.contains("/healthz") && routed.len() >= 10,
        "the router's paths could not be read from its Debug form: {routed:?}"
    );
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        undocumented.is_empty() && unrouted.is_empty(),
        "routes missing from the document: {undocumented:?}; documented but not routed: {unrouted:?}"
    );
    for (template, item) in paths {
        let want: BTreeSet<&str> = METHODS
            .into_iter()
            .filter(|m| item.get(*m).is_some())
            .collect();
        let mut served = BTreeSet::new();
        for m in METHODS {
            let req = Request::builder()
                .method(Method::from_bytes(m.to_uppercase().as_bytes()).unwrap())
                .uri(concrete(template))
                .body(Body::empty())
                .unwrap();
            let resp = app.router.clone().oneshot(req).await.unwrap();
            // Only the 405 fallback's body is read: a live stream's body never ends.
            let not_allowed = resp.status() == StatusCode::METHOD_NOT_ALLOWED && {
                let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
                    .await
                    .unwrap();
                let v: Value = serde_json::from_slice(&bytes).unwrap_or_default();
                v["error"]["code"] == "method_not_allowed"
            };
            if !not_allowed {
                served.insert(m);
            }
        }
        assert_eq!(served, want, "methods of {template}: served vs documented");
    }
}

/// The OpenAPI 3.1 schema of whole documents (Schema Objects included) as a validator.
fn openapi_validator() -> jsonschema::Validator {
    let load = |s: &str| -> Value { serde_json::from_str(s).expect("vendored schema") };
    let schema = load(include_str!("../oas-3.1/schema.json"));
    let base = load(include_str!("../oas-3.1/schema-base.json"));
    let dialect = load(include_str!("../oas-3.1/dialect.json"));
    let meta = load(include_str!("../oas-3.1/meta.json"));
    let id = |v: &Value| v["$id"].as_str().unwrap().to_string();
    let resources = [schema, dialect, meta]
        .into_iter()
        .map(|v| (id(&v), jsonschema::Resource::from_contents(v)));
    let registry = jsonschema::Registry::new()
        .extend(resources)
        .and_then(|r| r.prepare())
        .expect("the OpenAPI 3.1 schemas register");
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .with_registry(&registry)
        .build(&base)
        .expect("the OpenAPI 3.1 schema builds")
}

fn errors(v: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance)
        .map(|e| format!("{e} (at {})", e.instance_path()))
        .collect()
}

#[tokio::test]
async fn the_served_document_is_valid_openapi_3_1() {
    let app = test_app();
    let doc = served_document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let validator = openapi_validator();
    let errs = errors(&validator, &doc);
    assert!(errs.is_empty(), "not valid OpenAPI 3.1: {errs:#?}");
    // The validator can fail: a document with a broken operation is refused.
    let mut broken = doc.clone();
    broken["paths"]["/healthz"]["get"]["responses"] = json!({"200": {"content": 5}});
    assert!(!errors(&validator, &broken).is_empty());
    let mut broken = doc.clone();
    broken["components"]["schemas"]["Trace"]["type"] = json!("record");
    assert!(
        !errors(&validator, &broken).is_empty(),
        "Schema Objects are checked too"
    );
    // Every `$ref` points at something in the document (the meta-schema does not check).
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(refs.len() > 50, "{} refs", refs.len());
    for r in refs {
        let target = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("external $ref {r}"));
        assert!(doc.pointer(target).is_some(), "dangling $ref {r}");
    }
    // Every operation says how it is authorised, and the schemes exist.
    let schemes = &app_schemes(&doc);
    assert_eq!(schemes, &["basic", "bearer"]);
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r.clone());
            }
            m.values().for_each(|v| collect_refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

fn app_schemes(doc: &Value) -> Vec<String> {
    let mut names: Vec<String> = doc["components"]["securitySchemes"]
        .as_object()
        .expect("security schemes")
        .keys()
        .cloned()
        .collect();
    names.sort();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in METHODS {
            if let Some(op) = item.get(m) {
                assert!(op["security"].is_array(), "{m} {path} has no security");
            }
        }
    }
    names
}

/// A validator of `pointer` (a JSON pointer into the document).
fn schema_at(doc: &Value, pointer: &str) -> jsonschema::Validator {
    let registry = jsonschema::Registry::new()
        .add(DOC_URI, jsonschema::Resource::from_contents(doc.clone()))
        .and_then(|r| r.prepare())
        .expect("the document registers");
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .with_registry(&registry)
        .build(&json!({"$ref": format!(
            "{DOC_URI}#{}",
            pointer.replace('{', "%7B").replace('}', "%7D")
        )}))
        .unwrap_or_else(|e| panic!("schema at {pointer}: {e}"))
}

fn escape(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// The pointer to the JSON schema the document gives the answer `status` of `method
/// template`, through a `$ref` to a shared response.
fn response_pointer(doc: &Value, method: &str, template: &str, status: u16) -> String {
    media_pointer(doc, method, template, status, "application/json")
}

fn media_pointer(doc: &Value, method: &str, template: &str, status: u16, media: &str) -> String {
    let mut pointer = format!("/paths/{}/{method}/responses/{status}", escape(template));
    let response = doc
        .pointer(&pointer)
        .unwrap_or_else(|| panic!("{method} {template} does not document {status}"));
    if let Some(r) = response["$ref"].as_str() {
        pointer = r.trim_start_matches('#').to_string();
    }
    pointer.push_str(&format!("/content/{}/schema", escape(media)));
    assert!(
        doc.pointer(&pointer).is_some(),
        "{method} {template} {status} has no JSON schema"
    );
    pointer
}

/// Sends a request and checks the answer against the document: its status is documented
/// for the operation and its body validates against that status's schema.
async fn checked(
    app: &TestApp,
    doc: &Value,
    template: &str,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let (status, v) = app
        .call(
            Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
            uri,
            body,
        )
        .await;
    if status == StatusCode::NO_CONTENT {
        assert!(doc
            .pointer(&format!(
                "/paths/{}/{method}/responses/204",
                escape(template)
            ))
            .is_some());
        return (status, v);
    }
    let pointer = response_pointer(doc, method, template, status.as_u16());
    let errs = errors(&schema_at(doc, &pointer), &v);
    assert!(
        errs.is_empty(),
        "{method} {uri} answered {status} {v:#} which does not match {pointer}: {errs:#?}"
    );
    (status, v)
}

#[tokio::test]
async fn real_answers_match_their_documented_schemas() {
    let app = test_app();
    let doc = served_document(&app).await;
    let t = "/api/v1/traces";
    let (s, created) = checked(
        &app,
        &doc,
        t,
        "post",
        t,
        Some(json!({"name": "support", "agent_id": "a1", "metadata": {"k": "v"}})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let id = created["trace_id"].as_str().unwrap().to_string();
    let events = json!({"events": [
        {"type": "span_started", "span": {"span_id": "a1a1a1a1a1a1a1a1", "kind": "agent", "name": "run",
            "start_time": "2026-11-21T10:00:00Z"}},
        {"type": "span_ended", "span": {"span_id": "b2b2b2b2b2b2b2b2", "parent_span_id": "a1a1a1a1a1a1a1a1",
            "kind": "llm", "name": "chat", "start_time": "2026-11-21T10:00:00.010Z",
            "end_time": "2026-11-21T10:00:01Z",
            "llm": {"model": "gpt-4o", "input_tokens": 100, "output_tokens": 20, "cost_usd": 0.01},
            "status": {"code": "ok"}}},
        {"type": "span_ended", "span": {"span_id": "c3c3c3c3c3c3c3c3", "parent_span_id": "a1a1a1a1a1a1a1a1",
            "kind": "tool", "name": "lookup", "start_time": "2026-11-21T10:00:01Z",
            "end_time": "2026-11-21T10:00:02Z", "tool": {"name": "lookup", "arguments": {"q": 1}},
            "status": {"code": "error", "message": "boom"}}},
        {"type": "log", "message": "hello", "severity": "warn", "span_id": "a1a1a1a1a1a1a1a1"},
        {"type": "error", "message": "timeout", "error_type": "TimeoutError"},
    ]});
    let ev = "/api/v1/traces/{id}/events";
    let (s, _) = checked(
        &app,
        &doc,
        ev,
        "post",
        &format!("{t}/{id}/events"),
        Some(events),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let one = "/api/v1/traces/{id}";
    let (s, _) = checked(
        &app,
        &doc,
        one,
        "patch",
        &format!("{t}/{id}"),
        Some(json!({"state": "WAITING_FOR_HUMAN", "reason": null})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let gets = [
        (t, t.to_string()),
        (t, format!("{t}?limit=1")),
        (t, format!("{t}?page=2&page_size=1")),
        (one, format!("{t}/{id}")),
        (one, format!("{t}/{id}?level=minimal")),
        (one, format!("{t}/{id}?format=compact")),
        (one, format!("{t}/{id}?format=detailed")),
        (one, format!("{t}/{id}?format=streaming")),
        (ev, format!("{t}/{id}/events")),
        (ev, format!("{t}/{id}/events?type=span_ended,error&limit=2")),
        ("/api/v1/traces/{id}/summary", format!("{t}/{id}/summary")),
        ("/api/v1/traces/{id}/analysis", format!("{t}/{id}/analysis")),
        (
            "/api/v1/analysis",
            "/api/v1/analysis?agent_id=a1".to_string(),
        ),
        ("/api/v1/workflows", "/api/v1/workflows".to_string()),
        ("/api/v1/keys", "/api/v1/keys".to_string()),
        ("/healthz", "/healthz".to_string()),
        ("/readyz", "/readyz".to_string()),
    ];
    for (template, uri) in gets {
        let (s, _) = checked(&app, &doc, template, "get", &uri, None).await;
        assert_eq!(s, StatusCode::OK, "{uri}");
    }
    // Errors: the shared error body, at the statuses the operations document.
    let refusals = [
        (
            t,
            format!("{t}?limit=5&page_size=5"),
            StatusCode::BAD_REQUEST,
        ),
        (
            one,
            format!("{t}/{}", "0".repeat(32)),
            StatusCode::BAD_REQUEST,
        ),
        (one, format!("{t}/{TRACE}"), StatusCode::NOT_FOUND),
        (
            "/api/v1/traces/{id}/analysis",
            format!("{t}/{id}/analysis?dominant_share=2"),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/workflows/{instance}/context",
            "/api/v1/workflows/wf-1/context".to_string(),
            StatusCode::NOT_FOUND,
        ),
    ];
    for (template, uri, want) in refusals {
        let (s, _) = checked(&app, &doc, template, "get", &uri, None).await;
        assert_eq!(s, want, "{uri}");
    }
    let wf = "/api/v1/workflows/{instance}/context";
    let (s, _) = checked(
        &app,
        &doc,
        wf,
        "put",
        "/api/v1/workflows/wf-1/context",
        Some(json!({"traceparent": format!("00-{id}-a1a1a1a1a1a1a1a1-01"), "agent": "a1"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = checked(
        &app,
        &doc,
        wf,
        "get",
        "/api/v1/workflows/wf-1/context",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = checked(
        &app,
        &doc,
        "/api/v1/keys",
        "post",
        "/api/v1/keys",
        Some(json!({"name": "ci", "scopes": ["ingest"]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = checked(&app, &doc, "/api/v1/keys", "get", "/api/v1/keys", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = checked(
        &app,
        &doc,
        one,
        "patch",
        &format!("{t}/{id}"),
        Some(json!({"state": "COMPLETED"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = checked(
        &app,
        &doc,
        one,
        "patch",
        &format!("{t}/{id}"),
        Some(json!({"state": "RUNNING"})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = checked(
        &app,
        &doc,
        "/api/v1/traces/cleanup",
        "post",
        "/api/v1/traces/cleanup",
        Some(json!({"older_than_days": 0})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
}

/// Issue 15, failure 3.9: where the document disagreed with the server. Each input is
/// sent to the server and checked against the document's schema; the two must agree on
/// whether it is accepted.
#[tokio::test]
async fn the_document_accepts_what_the_server_accepts() {
    let app = test_app();
    let doc = served_document(&app).await;
    // Ids: the all-zero ones are refused by both; both forms and cases are read.
    let trace_id = schema_at(&doc, "/components/schemas/TraceId");
    let ids = [
        ("0".repeat(32), false),
        ("00000000-0000-0000-0000-000000000000".to_string(), false),
        (TRACE.to_string(), true),
        (TRACE.to_uppercase(), true),
        ("019a8f3c-5e2d-7b41-9c3a-0d1e2f3a4b5c".to_string(), true),
        ("019a8f3c5e2d-7b41-9c3a-0d1e2f3a4b5c-".to_string(), false),
        ("4bf92f3577b34da6a3ce929d0e0e473".to_string(), false),
    ];
    for (raw, valid) in ids {
        let (s, _) = app
            .call(Method::GET, &format!("/api/v1/traces/{raw}"), None)
            .await;
        let server = s != StatusCode::BAD_REQUEST;
        assert_eq!(server, valid, "server on trace id {raw}: {s}");
        assert_eq!(trace_id.is_valid(&json!(raw)), valid, "document on {raw}");
    }
    let span_id = schema_at(&doc, "/components/schemas/SpanId");
    assert!(!span_id.is_valid(&json!("0000000000000000")));
    assert!(span_id.is_valid(&json!("A1B2C3D4E5F60718")));
    // Bodies: `null` where the server takes it as absent, refused where it is not.
    let new_trace = schema_at(
        &doc,
        "/paths/~1api~1v1~1traces/post/requestBody/content/application~1json/schema",
    );
    let bodies = [
        json!({"name": null, "agent_id": null, "state": null, "level": null, "trace_id": null}),
        json!({"metadata": null}),
        json!({"trace_id": "0".repeat(32)}),
        json!({"level": "verbose"}),
        json!({"state": "running"}),
        json!({"nmae": "typo"}),
        json!({"state": "RUNNING", "metadata": {"k": "v"}}),
    ];
    for body in bodies {
        let (s, v) = app
            .call(Method::POST, "/api/v1/traces", Some(body.clone()))
            .await;
        let server = s == StatusCode::CREATED;
        assert!(server || s == StatusCode::BAD_REQUEST, "{body}: {s} {v}");
        assert_eq!(
            new_trace.is_valid(&body),
            server,
            "document and server disagree on {body} (server: {s} {v})"
        );
    }
    // `limit` with `page_size` is refused, and the document says so.
    let (s, _) = app
        .call(Method::GET, "/api/v1/traces?limit=5&page_size=5", None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let params = doc["paths"]["/api/v1/traces"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let page_size = params.iter().find(|p| p["name"] == "page_size").unwrap();
    assert!(page_size["description"]
        .as_str()
        .unwrap()
        .contains("Not with `limit`"));
    // The SSE routes answer with the media type the document names.
    let created = app
        .call(Method::POST, "/api/v1/traces", Some(json!({})))
        .await
        .1;
    let id = created["trace_id"].as_str().unwrap();
    for (template, uri) in [
        (
            "/api/v1/traces/{id}/stream",
            format!("/api/v1/traces/{id}/stream"),
        ),
        ("/api/v1/stream", "/api/v1/stream".to_string()),
    ] {
        let content = doc["paths"][template]["get"]["responses"]["200"]["content"]
            .as_object()
            .unwrap();
        assert_eq!(content.keys().collect::<Vec<_>>(), ["text/event-stream"]);
        let req = Request::get(uri).body(Body::empty()).unwrap();
        let resp = app.router.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(resp.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
    }
}

#[tokio::test]
async fn otlp_answers_match_the_document() {
    let app = test_app();
    let doc = served_document(&app).await;
    let body = json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": "5bf92f3577b34da6a3ce929d0e0e4736", "spanId": "a1a1a1a1a1a1a1a1",
        "name": "root", "startTimeUnixNano": "1763719200000000000",
        "endTimeUnixNano": "1763719201000000000"}]}]}]});
    let cases = [
        ("/v1/traces", body.clone(), StatusCode::OK),
        (
            "/v1/traces",
            json!({"resourceSpans": 5}),
            StatusCode::BAD_REQUEST,
        ),
        ("/v1/logs", json!({"resourceLogs": []}), StatusCode::OK),
        (
            "/v1/metrics",
            json!({"resourceMetrics": []}),
            StatusCode::OK,
        ),
    ];
    for (path, body, want) in cases {
        let req = Request::post(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let resp = app.router.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), want, "{path}");
        let op = &doc["paths"][path]["post"];
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        let schema = media_pointer(&doc, "post", path, want.as_u16(), "application/json");
        let errs = errors(&schema_at(&doc, &schema), &v);
        assert!(
            errs.is_empty(),
            "{path} {want}: {v} does not match {schema}: {errs:?}"
        );
        media_pointer(&doc, "post", path, want.as_u16(), "application/x-protobuf");
        for ct in ["application/json", "application/x-protobuf"] {
            assert!(
                op["requestBody"]["content"][ct].is_object(),
                "{path} takes {ct}"
            );
        }
    }
}
