//! The OpenAPI document (`src/openapi.json`) against the code: the routes the router
//! serves, the statuses and bodies the handlers answer, the JSON form of every model type,
//! the enums, the query parameters and the examples. Any drift between the document and
//! the code fails one of these tests.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode as Http};
use serde::Serialize;
use serde_json::{json, Map, Value};
use tower::ServiceExt;
use traceway_core::{
    CostSource, Document, ErrorRecord, Event, EventBody, EventInput, EventType, Level, Link,
    LlmDetails, LogRecord, Message, ModelUsage, NewTrace, RetrievalDetails, Rollups, Severity,
    Span, SpanId, SpanInput, SpanKind, SpanNode, SpanStatus, State, StateChange, StatusCode,
    Timestamp, ToolCall, ToolDetails, Trace, TraceEnded, TraceId, TracePatch, TraceStarted,
};
use traceway_server::api::AppendResponse;
use traceway_server::Config;

use crate::{test_app, test_app_with, TestApp};

/// Every route of `traceway_server::app`: method, path template, a body that the route
/// takes (JSON), and the status it answers for it when `{id}` is an existing trace. Keep
/// in step with `fn app` in `src/lib.rs`; the DELETE comes last because it removes the
/// trace.
const ROUTES: &[(&str, &str, Option<&str>, u16)] = &[
    ("POST", "/v1/traces", Some("{}"), 200),
    ("POST", "/v1/logs", Some("{}"), 200),
    ("POST", "/v1/metrics", Some("{}"), 200),
    ("POST", "/api/v1/traces", Some("{}"), 201),
    ("GET", "/api/v1/traces", None, 200),
    (
        "POST",
        "/api/v1/traces/cleanup",
        Some(r#"{"older_than_days": 1}"#),
        200,
    ),
    ("GET", "/api/v1/traces/{id}", None, 200),
    ("PATCH", "/api/v1/traces/{id}", Some("{}"), 200),
    (
        "POST",
        "/api/v1/traces/{id}/events",
        Some(r#"{"events": []}"#),
        200,
    ),
    ("GET", "/api/v1/traces/{id}/events", None, 200),
    ("GET", "/api/v1/traces/{id}/stream", None, 200),
    ("GET", "/api/v1/stream", None, 200),
    ("GET", "/api/v1/traces/{id}/summary", None, 200),
    ("GET", "/api/v1/traces/{id}/analysis", None, 200),
    ("GET", "/api/v1/analysis", None, 200),
    ("GET", "/api/v1/openapi.json", None, 200),
    ("GET", "/healthz", None, 200),
    ("GET", "/readyz", None, 200),
    ("GET", "/metrics", None, 200),
    ("DELETE", "/api/v1/traces/{id}", None, 204),
];

const HTTP_METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

const TRACE: &str = "0123456789abcdef0123456789abcdef";

// ---------------------------------------------------------------------------------------
// The document and a small JSON Schema checker (the subset the document uses).
// ---------------------------------------------------------------------------------------

struct Doc(Value);

fn doc() -> &'static Doc {
    static DOC: OnceLock<Doc> = OnceLock::new();
    DOC.get_or_init(|| {
        Doc(serde_json::from_str(traceway_server::OPENAPI_JSON).expect("openapi.json is JSON"))
    })
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// The merged object view of a schema: its properties (with every schema that constrains
/// each), required names and `additionalProperties`, through `allOf` and a discriminated
/// `oneOf`.
#[derive(Default)]
struct Shape<'a> {
    props: BTreeMap<String, Vec<&'a Value>>,
    required: BTreeSet<String>,
    additional: Option<&'a Value>,
}

impl Doc {
    fn pointer(&self, r: &str) -> &Value {
        let p = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("non-local $ref {r}"));
        self.0
            .pointer(p)
            .unwrap_or_else(|| panic!("unresolved $ref {r}"))
    }

    fn resolve<'a>(&'a self, mut s: &'a Value) -> &'a Value {
        for _ in 0..32 {
            match s.get("$ref").and_then(Value::as_str) {
                Some(r) => s = self.pointer(r),
                None => return s,
            }
        }
        panic!("$ref loop at {s}")
    }

    fn schema(&self, name: &str) -> &Value {
        self.0["components"]["schemas"]
            .get(name)
            .unwrap_or_else(|| panic!("no schema {name}"))
    }

    fn enum_of(&self, name: &str) -> Vec<String> {
        self.schema(name)["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} has no enum"))
            .iter()
            .map(|v| v.as_str().expect("string enum").to_string())
            .collect()
    }

    fn shape<'a>(
        &'a self,
        s: &'a Value,
        v: &Value,
        out: &mut Shape<'a>,
        at: &str,
        errs: &mut Vec<String>,
    ) {
        let s = self.resolve(s);
        if let Some(p) = s.get("properties").and_then(Value::as_object) {
            for (k, ps) in p {
                out.props.entry(k.clone()).or_default().push(ps);
            }
        }
        for r in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out.required
                .insert(r.as_str().expect("required name").to_string());
        }
        if let Some(a) = s.get("additionalProperties") {
            out.additional = Some(a);
        }
        for sub in s
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.shape(sub, v, out, at, errs);
        }
        if let (Some(d), Some(_)) = (s.get("discriminator"), s.get("oneOf")) {
            let prop = d["propertyName"].as_str().expect("propertyName");
            let tag = v.get(prop).and_then(Value::as_str);
            match tag
                .and_then(|t| d["mapping"].get(t))
                .and_then(Value::as_str)
            {
                Some(target) => self.shape(self.pointer(target), v, out, at, errs),
                None => errs.push(format!(
                    "{at}: `{prop}` {tag:?} is not in the discriminator mapping"
                )),
            }
        }
    }

    /// The properties a (non-discriminated) schema lists, through `allOf`.
    fn props(&self, name: &str) -> BTreeSet<String> {
        let mut shape = Shape::default();
        let mut errs = Vec::new();
        // Without a value no discriminated branch is taken: the schema's own properties.
        self.shape(self.schema(name), &json!({}), &mut shape, name, &mut errs);
        shape.props.keys().cloned().collect()
    }

    fn required(&self, name: &str) -> BTreeSet<String> {
        let mut shape = Shape::default();
        let mut errs = Vec::new();
        self.shape(self.schema(name), &json!({}), &mut shape, name, &mut errs);
        shape.required
    }

    fn is_object_schema(&self, s: &Value) -> bool {
        s.get("properties").is_some()
            || s.get("allOf").is_some()
            || s.get("discriminator").is_some()
            || s.get("type") == Some(&json!("object"))
    }

    /// Checks `v` against schema `s`. Objects are checked strictly: a property the schema
    /// does not list is an error unless `additionalProperties` allows it.
    fn validate(&self, s: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            check_id_format(r, v, at, errs);
        }
        let s = self.resolve(s);
        if let Some(t) = s.get("type") {
            let types: Vec<&str> = match t {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                _ => panic!("{at}: bad type {t}"),
            };
            if !types.iter().any(|t| type_ok(t, v)) {
                errs.push(format!("{at}: {v} is not of type {t}"));
                return;
            }
        }
        if let Some(e) = s.get("enum").and_then(Value::as_array) {
            if !e.contains(v) {
                errs.push(format!("{at}: {v} is not one of {e:?}"));
            }
        }
        if let Some(c) = s.get("const") {
            if c != v {
                errs.push(format!("{at}: {v} is not {c}"));
            }
        }
        if let Some(n) = v.as_f64() {
            if s.get("minimum")
                .and_then(Value::as_f64)
                .is_some_and(|m| n < m)
            {
                errs.push(format!("{at}: {n} is below the minimum"));
            }
            if s.get("maximum")
                .and_then(Value::as_f64)
                .is_some_and(|m| n > m)
            {
                errs.push(format!("{at}: {n} is above the maximum"));
            }
        }
        if let Some(text) = v.as_str() {
            let len = text.chars().count() as u64;
            if s.get("minLength")
                .and_then(Value::as_u64)
                .is_some_and(|m| len < m)
                || s.get("maxLength")
                    .and_then(Value::as_u64)
                    .is_some_and(|m| len > m)
            {
                errs.push(format!("{at}: {v} has the wrong length"));
            }
            if s.get("format") == Some(&json!("date-time")) {
                if let Err(e) = Timestamp::parse_rfc3339(text) {
                    errs.push(format!("{at}: {e}"));
                }
            }
        }
        if let (Some(items), Some(a)) = (s.get("items"), v.as_array()) {
            for (i, x) in a.iter().enumerate() {
                self.validate(items, x, &format!("{at}[{i}]"), errs);
            }
        }
        if let (Some(branches), None) = (
            s.get("oneOf").and_then(Value::as_array),
            s.get("discriminator"),
        ) {
            let passing = branches
                .iter()
                .filter(|b| {
                    let mut e = Vec::new();
                    self.validate(b, v, at, &mut e);
                    e.is_empty()
                })
                .count();
            if passing != 1 {
                errs.push(format!(
                    "{at}: {v} matches {passing} of the oneOf branches, not 1"
                ));
            }
        }
        match v.as_object() {
            Some(obj) if self.is_object_schema(s) => {
                let mut shape = Shape::default();
                self.shape(s, v, &mut shape, at, errs);
                for r in &shape.required {
                    if !obj.contains_key(r) {
                        errs.push(format!("{at}: required property `{r}` is missing"));
                    }
                }
                for (k, x) in obj {
                    let here = format!("{at}.{k}");
                    match (shape.props.get(k), shape.additional) {
                        (Some(schemas), _) => schemas
                            .iter()
                            .for_each(|ps| self.validate(ps, x, &here, errs)),
                        (None, Some(Value::Bool(true))) => {}
                        (None, Some(a @ Value::Object(_))) => self.validate(a, x, &here, errs),
                        (None, _) if shape.props.is_empty() && shape.additional.is_none() => {}
                        (None, _) => errs.push(format!("{here}: property not in the schema")),
                    }
                }
            }
            _ => {
                for sub in s
                    .get("allOf")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    self.validate(sub, v, at, errs);
                }
            }
        }
    }

    #[track_caller]
    fn assert_valid(&self, schema: &Value, v: &Value, what: &str) {
        let mut errs = Vec::new();
        self.validate(schema, v, what, &mut errs);
        assert!(
            errs.is_empty(),
            "{what} does not match its schema:\n{}\nvalue: {v:#}",
            errs.join("\n")
        );
    }

    /// `(METHOD, path)` of every operation in the document.
    fn operations(&self) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for (path, item) in self.0["paths"].as_object().expect("paths") {
            for (k, _) in item.as_object().expect("path item") {
                if HTTP_METHODS.contains(&k.as_str()) {
                    out.insert((k.to_uppercase(), path.clone()));
                }
            }
        }
        out
    }

    fn operation(&self, method: &Method, template: &str) -> &Value {
        self.0["paths"]
            .get(template)
            .and_then(|p| p.get(method.as_str().to_lowercase()))
            .unwrap_or_else(|| panic!("{method} {template} is not in the document"))
    }

    /// Parameters of an operation, path-level ones included, by `(in, name)`.
    fn parameters(&self, method: &Method, template: &str) -> BTreeMap<(String, String), &Value> {
        let path_level = &self.0["paths"][template]["parameters"];
        let op_level = &self.operation(method, template)["parameters"];
        [path_level, op_level]
            .into_iter()
            .filter_map(Value::as_array)
            .flatten()
            .map(|p| {
                let p = self.resolve(p);
                let key = (
                    p["in"].as_str().expect("in").to_string(),
                    p["name"].as_str().expect("name").to_string(),
                );
                (key, p)
            })
            .collect()
    }

    /// Fails unless the operation documents this status, its headers and its body.
    fn check_response(
        &self,
        method: &Method,
        template: &str,
        status: Http,
        headers: &HeaderMap,
        body: &Value,
    ) {
        let what = format!("{method} {template} -> {status}");
        let responses = &self.operation(method, template)["responses"];
        let resp = responses
            .get(status.as_str())
            .map(|r| self.resolve(r))
            .unwrap_or_else(|| panic!("{what} is not documented (body {body})"));
        match resp.get("content") {
            Some(content) if content.get("text/event-stream").is_some() => {
                assert_eq!(
                    body,
                    &json!("text/event-stream"),
                    "{what}: not an event stream"
                );
            }
            // Text (the OpenMetrics exposition): the body is a string.
            Some(content) if content.get("application/openmetrics-text").is_some() => {
                let ct = headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                assert!(
                    ct.starts_with("application/openmetrics-text"),
                    "{what}: Content-Type {ct:?}"
                );
                assert!(body.is_string(), "{what}: not text");
            }
            Some(content) => {
                let media = content
                    .get("application/json")
                    .unwrap_or_else(|| panic!("{what}: no application/json content"));
                let ct = headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                assert!(
                    ct.starts_with("application/json"),
                    "{what}: Content-Type {ct:?}"
                );
                self.assert_valid(&media["schema"], body, &what);
            }
            None => assert_eq!(body, &Value::Null, "{what}: documented without a body"),
        }
        let documented: BTreeSet<String> = resp
            .get("headers")
            .and_then(Value::as_object)
            .map(|h| h.keys().map(|k| k.to_ascii_lowercase()).collect())
            .unwrap_or_default();
        for h in &documented {
            assert!(
                headers.contains_key(h.as_str()),
                "{what}: documented header {h} is missing"
            );
        }
        for h in ["retry-after", "location"] {
            if headers.contains_key(h) {
                assert!(
                    documented.contains(h),
                    "{what}: header {h} is sent but not documented"
                );
            }
        }
    }
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        other => panic!("unknown type {other}"),
    }
}

/// What the id and state schemas promise, checked with the code's own parsers (the
/// `pattern`s are not evaluated here).
fn check_id_format(r: &str, v: &Value, at: &str, errs: &mut Vec<String>) {
    let Some(s) = v.as_str() else { return };
    let ok = match r.rsplit('/').next().unwrap_or("") {
        "TraceId" => s.len() == 32 && s.parse::<TraceId>().is_ok() && s == s.to_lowercase(),
        "TraceIdInput" => s.parse::<TraceId>().is_ok(),
        "SpanId" => s.parse::<SpanId>().is_ok(),
        "State" => s.parse::<State>().is_ok(),
        _ => true,
    };
    if !ok {
        errs.push(format!("{at}: {s:?} is not a valid {r}"));
    }
}

// ---------------------------------------------------------------------------------------
// Requests through the router, checked against the document.
// ---------------------------------------------------------------------------------------

fn request(method: &str, uri: &str, body: Option<&str>) -> Request<Body> {
    let mut req = Request::builder().method(method).uri(uri);
    if body.is_some() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    req.body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .expect("request")
}

fn json_request(method: &str, uri: &str, body: &Value) -> Request<Body> {
    request(method, uri, Some(&body.to_string()))
}

async fn send(app: &TestApp, req: Request<Body>) -> (Http, HeaderMap, Value) {
    let resp = app.router.clone().oneshot(req).await.expect("infallible");
    let (status, headers) = (resp.status(), resp.headers().clone());
    // A live stream never ends on its own: check its headers, not its body.
    if headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        == Some("text/event-stream")
    {
        return (status, headers, Value::String("text/event-stream".into()));
    }
    let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20)
        .await
        .expect("body");
    let text = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.starts_with("text/plain") || ct.starts_with("application/openmetrics-text")
        });
    let v = if bytes.is_empty() {
        Value::Null
    } else if text {
        Value::String(String::from_utf8(bytes.to_vec()).expect("utf-8 text"))
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
    };
    (status, headers, v)
}

/// Sends a request for the operation at `template` and fails unless every query parameter
/// it uses is documented and the answer (status, headers, body) is documented.
async fn checked(app: &TestApp, template: &str, req: Request<Body>) -> (Http, HeaderMap, Value) {
    let d = doc();
    let method = req.method().clone();
    let params = d.parameters(&method, template);
    if let Some(q) = req.uri().query() {
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let name = pair.split('=').next().unwrap_or("");
            assert!(
                params.contains_key(&("query".to_string(), name.to_string())),
                "{method} {template}: query parameter {name} is not documented"
            );
        }
    }
    let (status, headers, body) = send(app, req).await;
    d.check_response(&method, template, status, &headers, &body);
    (status, headers, body)
}

#[track_caller]
fn assert_error(status: Http, body: &Value, want: Http, code: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().expect("object").keys().cloned().collect()
}

fn to_json(v: &impl Serialize) -> Value {
    serde_json::to_value(v).expect("serialize")
}

// ---------------------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_document_is_served_as_json_and_is_openapi_3_1() {
    let app = test_app();
    let (status, headers, v) = send(&app, request("GET", "/api/v1/openapi.json", None)).await;
    assert_eq!(status, Http::OK);
    let ct = headers.get(header::CONTENT_TYPE).expect("content-type");
    assert_eq!(ct, "application/json");
    assert_eq!(v, doc().0, "served document differs from src/openapi.json");
    let version = v["openapi"].as_str().expect("openapi field");
    assert!(version.starts_with("3.1"), "openapi is {version}");
    assert_eq!(
        v["info"]["version"],
        env!("CARGO_PKG_VERSION"),
        "info.version is the crate version"
    );
    assert!(v["info"]["title"].is_string());
}

#[tokio::test]
async fn every_route_is_documented_and_every_documented_route_is_served() {
    let d = doc();
    let table: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p, _, _)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(table.len(), ROUTES.len(), "duplicate route in the table");
    let documented = d.operations();
    let missing: Vec<_> = table.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&table).collect();
    assert!(
        missing.is_empty(),
        "routes not in the document: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "documented operations the router does not serve: {extra:?}"
    );

    let app = test_app();
    let (status, _, v) = send(
        &app,
        json_request("POST", "/api/v1/traces", &json!({"trace_id": TRACE})),
    )
    .await;
    assert_eq!(status, Http::CREATED, "{v}");

    for (method, template, body, want) in ROUTES {
        let uri = template.replace("{id}", TRACE);
        let (status, _, v) = checked(&app, template, request(method, &uri, *body)).await;
        assert_ne!(
            v["error"]["message"]
                .as_str()
                .map(|m| m.contains("no such route")),
            Some(true),
            "{method} {template} fell through to the fallback"
        );
        assert_eq!(status.as_u16(), *want, "{method} {template}: {v}");
    }

    // The router serves no other method on the documented paths.
    let paths: BTreeSet<&str> = ROUTES.iter().map(|r| r.1).collect();
    for template in paths {
        let uri = template.replace("{id}", TRACE);
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            if table.contains(&(method.to_string(), template.to_string())) {
                continue;
            }
            let (status, _, v) = send(&app, request(method, &uri, None)).await;
            assert_error(status, &v, Http::METHOD_NOT_ALLOWED, "method_not_allowed");
        }
    }

    // Unknown paths get the JSON 404 the document describes.
    let (status, _, v) = send(&app, request("GET", "/api/v1/nope", None)).await;
    assert_error(status, &v, Http::NOT_FOUND, "not_found");
    d.assert_valid(&schema_ref("Error"), &v, "fallback 404");
}

#[test]
fn every_ref_resolves_and_every_schema_is_described_and_used() {
    let d = doc();
    let mut refs = BTreeSet::new();
    fn walk(v: &Value, refs: &mut BTreeSet<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    if k == "$ref" {
                        refs.insert(x.as_str().expect("$ref is a string").to_string());
                    }
                    if k == "mapping" {
                        for target in x.as_object().expect("mapping").values() {
                            refs.insert(target.as_str().expect("mapping target").to_string());
                        }
                    }
                    walk(x, refs);
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, refs)),
            _ => {}
        }
    }
    walk(&d.0, &mut refs);
    assert!(!refs.is_empty());
    for r in &refs {
        let target = d.pointer(r);
        assert!(target.is_object(), "{r} does not point at an object");
    }

    for (kind, items) in d.0["components"].as_object().expect("components") {
        for (name, item) in items.as_object().expect("component map") {
            let r = format!("#/components/{kind}/{name}");
            assert!(refs.contains(&r), "{r} is never used");
            if kind == "schemas" {
                let desc = item["description"].as_str().unwrap_or("");
                assert!(!desc.trim().is_empty(), "schema {name} has no description");
            }
        }
    }

    // Operations: unique ids, responses, every `{param}` of a path declared.
    let mut ids = BTreeSet::new();
    for (method, path) in d.operations() {
        let method: Method = method.parse().expect("method");
        let op = d.operation(&method, &path);
        let id = op["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path}: no operationId"));
        assert!(ids.insert(id.to_string()), "duplicate operationId {id}");
        assert!(
            op["responses"].as_object().is_some_and(|r| !r.is_empty()),
            "{id}: no responses"
        );
        let params = d.parameters(&method, &path);
        for seg in path.split('/').filter(|s| s.starts_with('{')) {
            let name = seg.trim_matches(|c| c == '{' || c == '}');
            let p = params
                .get(&("path".to_string(), name.to_string()))
                .unwrap_or_else(|| panic!("{id}: path parameter {name} not declared"));
            assert_eq!(
                p["required"], true,
                "{id}: path parameter {name} must be required"
            );
        }
        for ((place, name), p) in &params {
            assert!(
                p["schema"].is_object(),
                "{id}: parameter {place} {name} has no schema"
            );
            if place == "path" {
                assert!(
                    path.contains(&format!("{{{name}}}")),
                    "{id}: {name} is not in the path"
                );
            }
        }
    }
}

#[test]
fn every_example_in_the_document_matches_its_schema() {
    let d = doc();
    let mut checked_examples = 0;
    for (name, s) in d.0["components"]["schemas"].as_object().expect("schemas") {
        let here = schema_ref(name);
        if let Some(ex) = s.get("example") {
            d.assert_valid(&here, ex, &format!("{name}.example"));
            checked_examples += 1;
        }
        for (i, ex) in s
            .get("examples")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            d.assert_valid(&here, ex, &format!("{name}.examples[{i}]"));
            checked_examples += 1;
        }
    }
    for (name, r) in d.0["components"]["responses"]
        .as_object()
        .expect("responses")
    {
        for (mt, media) in r["content"].as_object().expect("content") {
            if let Some(ex) = media.get("example") {
                d.assert_valid(
                    &media["schema"],
                    ex,
                    &format!("responses.{name}.{mt}.example"),
                );
                checked_examples += 1;
            }
        }
    }
    for (method, path) in d.operations() {
        let method: Method = method.parse().expect("method");
        for ((place, name), p) in d.parameters(&method, &path) {
            if let Some(ex) = p.get("example") {
                d.assert_valid(
                    &p["schema"],
                    ex,
                    &format!("{method} {path} {place} {name} example"),
                );
                checked_examples += 1;
            }
        }
    }
    assert!(
        checked_examples >= 10,
        "only {checked_examples} examples found"
    );

    // The three the clients copy from.
    for name in ["NewTrace", "AppendBody", "Trace"] {
        assert!(
            d.schema(name).get("example").is_some(),
            "{name} has no example"
        );
    }
    // The append example shows every kind of step a client reports.
    let events = d.schema("AppendBody")["example"]["events"]
        .as_array()
        .expect("events")
        .clone();
    let has = |ty: &str, kind: Option<&str>, field: &str| {
        events.iter().any(|e| {
            e["type"] == ty
                && kind.is_none_or(|k| e["span"]["kind"] == k)
                && (e.get(field).is_some() || e["span"].get(field).is_some())
        })
    };
    assert!(has("span_started", Some("agent"), "span_id"));
    assert!(has("span_ended", Some("llm"), "llm"));
    assert!(has("span_ended", Some("retriever"), "retrieval"));
    assert!(has("span_ended", Some("tool"), "tool"));
    assert!(has("log", None, "message"));
    assert!(has("error", None, "error_type"));
}

#[tokio::test]
async fn the_examples_are_accepted_and_the_answers_match_the_schemas() {
    let d = doc();
    let app = test_app();

    // Create from the NewTrace example.
    let new = d.schema("NewTrace")["example"].clone();
    let _: NewTrace = serde_json::from_value(new.clone()).expect("NewTrace example deserializes");
    let (status, headers, trace) = checked(
        &app,
        "/api/v1/traces",
        json_request("POST", "/api/v1/traces", &new),
    )
    .await;
    assert_eq!(status, Http::CREATED, "{trace}");
    let id = trace["trace_id"].as_str().expect("trace_id").to_string();
    assert_eq!(
        id,
        new["trace_id"]
            .as_str()
            .expect("example trace_id")
            .to_lowercase()
    );
    assert_eq!(headers[header::LOCATION], format!("/api/v1/traces/{id}"));
    for (k, v) in new.as_object().expect("object") {
        assert_eq!(&trace[k], v, "created trace keeps {k}");
    }

    // Append the AppendBody example: every event is accepted; a retry is all duplicates.
    let append = d.schema("AppendBody")["example"].clone();
    let n = append["events"].as_array().expect("events").len() as u64;
    let events_uri = format!("/api/v1/traces/{id}/events");
    let events_template = "/api/v1/traces/{id}/events";
    let (status, _, out) = checked(
        &app,
        events_template,
        json_request("POST", &events_uri, &append),
    )
    .await;
    assert_eq!(status, Http::OK, "{out}");
    assert_eq!(out["accepted"], n, "{out}");
    assert_eq!(out["duplicates"], 0, "{out}");
    assert_eq!(
        out["last_seq"],
        n + 1,
        "trace_started plus the appended events"
    );
    let (status, _, out) = checked(
        &app,
        events_template,
        json_request("POST", &events_uri, &append),
    )
    .await;
    assert_eq!(status, Http::OK, "{out}");
    assert_eq!(
        (out["accepted"].as_u64(), out["duplicates"].as_u64()),
        (Some(0), Some(n)),
        "{out}"
    );

    // Finish it with the TracePatch example.
    let patch = d.schema("TracePatch")["example"].clone();
    let trace_uri = format!("/api/v1/traces/{id}");
    let (status, _, trace) = checked(
        &app,
        "/api/v1/traces/{id}",
        json_request("PATCH", &trace_uri, &patch),
    )
    .await;
    assert_eq!(status, Http::OK, "{trace}");

    // The Trace example is this very trace: same fields, same state and totals.
    let example = &d.schema("Trace")["example"];
    assert_eq!(
        keys(&trace),
        keys(example),
        "the Trace example shows the fields the server returns"
    );
    for k in [
        "trace_id",
        "tenant",
        "name",
        "agent_id",
        "session_id",
        "user_id",
        "state",
        "level",
        "last_seq",
    ] {
        assert_eq!(trace[k], example[k], "Trace example {k}");
    }
    assert_eq!(keys(&trace["rollups"]), keys(&example["rollups"]));
    for (k, want) in example["rollups"].as_object().expect("rollups") {
        let got = &trace["rollups"][k];
        match (got.as_f64(), want.as_f64()) {
            (Some(g), Some(w)) => assert!((g - w).abs() < 1e-9, "rollups.{k}: {g} != {w}"),
            _ => assert_eq!(got, want, "rollups.{k}"),
        }
    }
    let mut metadata = new["metadata"].as_object().expect("metadata").clone();
    metadata.extend(patch["metadata"].as_object().expect("metadata").clone());
    assert_eq!(
        trace["metadata"],
        Value::Object(metadata),
        "PATCH merges metadata"
    );
    assert_eq!(trace["metadata"], example["metadata"]);

    // Reads of it match their schemas.
    let (status, _, detail) = checked(
        &app,
        "/api/v1/traces/{id}",
        request("GET", &trace_uri, None),
    )
    .await;
    assert_eq!(status, Http::OK);
    let roots = detail["spans"].as_array().expect("spans");
    assert_eq!(roots.len(), 1, "{detail:#}");
    assert_eq!(
        roots[0]["children"].as_array().map(Vec::len),
        Some(3),
        "{detail:#}"
    );
    let minimal = format!("{trace_uri}?level=minimal");
    let (status, _, detail) =
        checked(&app, "/api/v1/traces/{id}", request("GET", &minimal, None)).await;
    assert_eq!(status, Http::OK);
    assert_eq!(detail["level"], "minimal");

    let (status, _, events) =
        checked(&app, events_template, request("GET", &events_uri, None)).await;
    assert_eq!(status, Http::OK);
    let events = events["events"].as_array().expect("events");
    assert_eq!(
        events.len() as u64,
        n + 3,
        "started, the events, state_changed, trace_ended"
    );
    let types: BTreeSet<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    let all: BTreeSet<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
    assert_eq!(types, all, "this trace has an event of every type");

    let (status, _, list) = checked(
        &app,
        "/api/v1/traces",
        request("GET", "/api/v1/traces", None),
    )
    .await;
    assert_eq!(status, Http::OK);
    assert_eq!(list["traces"][0]["trace_id"], id.as_str());
}

#[test]
fn enums_match_what_the_code_accepts() {
    let d = doc();
    fn names<T: Serialize>(all: &[T]) -> Vec<String> {
        all.iter()
            .map(|x| to_json(x).as_str().expect("string").to_string())
            .collect()
    }

    assert_eq!(d.enum_of("SpanKind"), names(&SpanKind::ALL));
    assert_eq!(d.enum_of("EventType"), names(&EventType::ALL));
    for t in EventType::ALL {
        assert_eq!(
            t.as_str().parse::<EventType>(),
            Ok(t),
            "the `type` query parameter takes {t:?}"
        );
    }

    // A new variant fails to compile here: add it to the list and to the document.
    let levels = [
        Level::Minimal,
        Level::Standard,
        Level::Detailed,
        Level::Debug,
    ];
    for l in levels {
        match l {
            Level::Minimal | Level::Standard | Level::Detailed | Level::Debug => {}
        }
        assert_eq!(l.as_str().parse::<Level>(), Ok(l));
    }
    assert_eq!(d.enum_of("Level"), names(&levels));
    let severities = [
        Severity::Debug,
        Severity::Info,
        Severity::Warn,
        Severity::Error,
    ];
    for s in severities {
        match s {
            Severity::Debug | Severity::Info | Severity::Warn | Severity::Error => {}
        }
    }
    assert_eq!(d.enum_of("Severity"), names(&severities));
    let codes = [StatusCode::Unset, StatusCode::Ok, StatusCode::Error];
    for c in codes {
        match c {
            StatusCode::Unset | StatusCode::Ok | StatusCode::Error => {}
        }
    }
    assert_eq!(d.enum_of("StatusCode"), names(&codes));

    // Values outside the enums are refused.
    assert!(serde_json::from_value::<SpanKind>(json!("robot")).is_err());
    assert!(serde_json::from_value::<Level>(json!("verbose")).is_err());
    assert!(serde_json::from_value::<Severity>(json!("fatal")).is_err());

    // Defaults the document states.
    let span_input = d.schema("SpanInput");
    assert_eq!(to_json(&SpanKind::default()), "other");
    assert!(span_input["properties"]["kind"]["description"]
        .as_str()
        .is_some_and(|s| s.contains("`other`")));
    assert_eq!(
        to_json(&StatusCode::default()),
        d.schema("SpanStatus")["properties"]["code"]["default"]
    );
    assert_eq!(
        to_json(&Severity::default()),
        d.schema("LogInput")["properties"]["severity"]["default"]
    );
    assert_eq!(
        to_json(&Message::default())["role"],
        d.schema("Message")["properties"]["role"]["default"]
    );

    // Built-in states are valid State values; terminal ones are named as such.
    for s in d.schema("State")["examples"].as_array().expect("examples") {
        let st: State = serde_json::from_value(s.clone()).expect("state example parses");
        assert_eq!(&to_json(&st), s);
    }

    // Output events: one variant per EventType, tagged by `type`.
    let event = d.schema("Event");
    let mapping: Vec<String> = event["discriminator"]["mapping"]
        .as_object()
        .expect("mapping")
        .keys()
        .cloned()
        .collect();
    let mut want = names(&EventType::ALL);
    want.sort();
    assert_eq!(mapping, want, "Event discriminator covers every EventType");
    for (tag, target) in event["discriminator"]["mapping"]
        .as_object()
        .expect("mapping")
    {
        let variant = d.pointer(target.as_str().expect("target"));
        assert_eq!(variant["properties"]["type"]["const"], *tag, "{target}");
    }
    assert_eq!(
        event["oneOf"].as_array().map(Vec::len),
        Some(EventType::ALL.len())
    );

    // Input events: one variant per EventInput variant.
    let sid = SpanId::from_u64(1).expect("span id");
    let inputs = [
        EventInput::SpanStarted {
            span: SpanInput::new(sid),
        },
        EventInput::SpanEnded {
            span: SpanInput::new(sid),
        },
        EventInput::Log {
            id: None,
            time: None,
            record: LogRecord::default(),
        },
        EventInput::Error {
            id: None,
            time: None,
            record: ErrorRecord::default(),
        },
    ];
    for i in &inputs {
        match i {
            EventInput::SpanStarted { .. }
            | EventInput::SpanEnded { .. }
            | EventInput::Log { .. }
            | EventInput::Error { .. } => {}
        }
    }
    let input = d.schema("EventInput");
    let mapping: BTreeSet<String> = input["discriminator"]["mapping"]
        .as_object()
        .expect("mapping")
        .keys()
        .cloned()
        .collect();
    let tags: BTreeSet<String> = inputs
        .iter()
        .map(|i| to_json(i)["type"].as_str().expect("type").to_string())
        .collect();
    assert_eq!(
        mapping, tags,
        "EventInput discriminator covers every EventInput variant"
    );
    for (tag, target) in input["discriminator"]["mapping"]
        .as_object()
        .expect("mapping")
    {
        let variant = d.pointer(target.as_str().expect("target"));
        assert_eq!(variant["properties"]["type"]["const"], *tag, "{target}");
    }
    assert_eq!(input["oneOf"].as_array().map(Vec::len), Some(inputs.len()));
}

/// Fully populated values of every model type, written without `..Default::default()` so
/// that a new field fails to compile here (and the document gets updated with it).
mod full {
    use super::*;

    pub fn t(ms: i64) -> Timestamp {
        Timestamp::from_unix_millis(1_767_261_600_000 + ms)
    }

    pub fn sid(n: u64) -> SpanId {
        SpanId::from_u64(n).expect("span id")
    }

    pub fn tid() -> TraceId {
        TRACE.parse().expect("trace id")
    }

    pub fn attrs() -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("k".into(), json!({"nested": [1, "two"]}));
        m
    }

    pub fn metadata() -> BTreeMap<String, String> {
        BTreeMap::from([("env".to_string(), "prod".to_string())])
    }

    pub fn status() -> SpanStatus {
        SpanStatus {
            code: StatusCode::Error,
            message: Some("boom".into()),
        }
    }

    pub fn message() -> Message {
        Message {
            role: "user".into(),
            content: Some("hi".into()),
            tool_calls: vec![ToolCall {
                id: Some("call_1".into()),
                name: Some("search".into()),
                arguments: Some(json!({"q": "a"})),
            }],
            tool_call_id: Some("call_0".into()),
            name: Some("ada".into()),
        }
    }

    pub fn llm() -> LlmDetails {
        LlmDetails {
            provider: Some("openai".into()),
            model: Some("gpt-4o".into()),
            input_tokens: Some(10),
            output_tokens: Some(5),
            total_tokens: Some(15),
            cached_tokens: Some(2),
            reasoning_tokens: Some(1),
            cost_usd: Some(0.01),
            cache_write_tokens: Some(3),
            cost_source: Some(CostSource::Computed),
            price_table: Some("litellm-1.110.2".into()),
            input_messages: vec![message()],
            output_messages: vec![message()],
        }
    }

    pub fn tool() -> ToolDetails {
        ToolDetails {
            name: Some("search".into()),
            arguments: Some(json!({"q": "a"})),
            result: Some(json!(["r"])),
            schema: Some(json!({"type": "object"})),
        }
    }

    pub fn document() -> Document {
        Document {
            id: Some("d1".into()),
            score: Some(0.5),
            content: Some("chunk".into()),
            metadata: Some(json!({"src": "a"})),
        }
    }

    pub fn retrieval() -> RetrievalDetails {
        RetrievalDetails {
            query: Some("q".into()),
            documents: vec![document()],
        }
    }

    pub fn link() -> Link {
        Link {
            trace_id: tid(),
            span_id: Some(sid(9)),
            attributes: attrs(),
        }
    }

    pub fn span() -> Span {
        Span {
            span_id: sid(2),
            parent_span_id: Some(sid(1)),
            kind: SpanKind::Llm,
            name: "chat".into(),
            component_id: Some("answer".into()),
            service: Some("bot".into()),
            start_time: t(0),
            end_time: Some(t(250)),
            status: status(),
            input: Some(json!("question")),
            output: Some(json!({"answer": 42})),
            llm: Some(llm()),
            tool: Some(tool()),
            retrieval: Some(retrieval()),
            attributes: attrs(),
            links: vec![link()],
        }
    }

    pub fn rollups() -> Rollups {
        Rollups {
            span_count: 3,
            error_count: 1,
            input_tokens: 10,
            output_tokens: 5,
            total_tokens: 15,
            embedding_tokens: 4,
            cost_usd: 0.01,
            first_span_start: Some(t(0)),
            last_span_end: Some(t(250)),
            duration_ms: Some(250.0),
            models: [(
                "gpt-4o".to_string(),
                ModelUsage {
                    calls: 1,
                    input_tokens: 10,
                    output_tokens: 5,
                    cached_tokens: 2,
                    cache_write_tokens: 3,
                    reasoning_tokens: 1,
                    total_tokens: 15,
                    cost_usd: 0.01,
                },
            )]
            .into(),
            ..Rollups::default()
        }
    }

    pub fn trace() -> Trace {
        Trace {
            trace_id: tid(),
            tenant: "default".into(),
            name: Some("run".into()),
            agent_id: Some("agent".into()),
            session_id: Some("session".into()),
            user_id: Some("user".into()),
            state: State::Completed,
            level: Level::Debug,
            created_at: t(0),
            last_activity_at: t(300),
            ended_at: Some(t(300)),
            expires_at: t(1_000_000),
            last_seq: 9,
            metadata: metadata(),
            rollups: rollups(),
        }
    }

    pub fn trace_started() -> TraceStarted {
        TraceStarted {
            name: Some("run".into()),
            agent_id: Some("agent".into()),
            session_id: Some("session".into()),
            user_id: Some("user".into()),
            state: State::Running,
            level: Level::Standard,
            metadata: metadata(),
        }
    }

    pub fn log() -> LogRecord {
        LogRecord {
            span_id: Some(sid(2)),
            severity: Severity::Warn,
            message: "m".into(),
            attributes: attrs(),
        }
    }

    pub fn error() -> ErrorRecord {
        ErrorRecord {
            span_id: Some(sid(2)),
            error_type: Some("ValueError".into()),
            message: "bad".into(),
            stacktrace: Some("at line 1".into()),
        }
    }

    pub fn state_change() -> StateChange {
        StateChange {
            from: State::Running,
            to: State::Custom("WAITING_FOR_HUMAN".into()),
            reason: Some("asked".into()),
        }
    }

    pub fn trace_ended() -> TraceEnded {
        TraceEnded {
            state: State::Errored,
            reason: Some("orphaned".into()),
            rollups: rollups(),
        }
    }

    pub fn span_input() -> SpanInput {
        SpanInput {
            span_id: sid(2),
            parent_span_id: Some(sid(1)),
            kind: Some(SpanKind::Tool),
            name: Some("search".into()),
            component_id: Some("c".into()),
            service: Some("s".into()),
            start_time: Some(t(0)),
            end_time: Some(t(5)),
            status: Some(status()),
            input: Some(json!(1)),
            output: Some(json!(2)),
            llm: Some(llm()),
            tool: Some(tool()),
            retrieval: Some(retrieval()),
            attributes: attrs(),
            links: vec![link()],
        }
    }

    pub fn new_trace() -> NewTrace {
        NewTrace {
            trace_id: Some(tid()),
            name: Some("run".into()),
            agent_id: Some("agent".into()),
            session_id: Some("session".into()),
            user_id: Some("user".into()),
            state: Some(State::Running),
            level: Some(Level::Minimal),
            metadata: metadata(),
        }
    }

    pub fn trace_patch() -> TracePatch {
        TracePatch {
            state: Some(State::Completed),
            reason: Some("done".into()),
            metadata: metadata(),
            name: Some("renamed".into()),
        }
    }

    pub fn bodies() -> Vec<EventBody> {
        let all = vec![
            EventBody::TraceStarted(trace_started()),
            EventBody::SpanStarted(span()),
            EventBody::SpanEnded(span()),
            EventBody::Log(log()),
            EventBody::Error(error()),
            EventBody::StateChanged(state_change()),
            EventBody::TraceEnded(trace_ended()),
        ];
        for b in &all {
            match b {
                EventBody::TraceStarted(_)
                | EventBody::SpanStarted(_)
                | EventBody::SpanEnded(_)
                | EventBody::Log(_)
                | EventBody::Error(_)
                | EventBody::StateChanged(_)
                | EventBody::TraceEnded(_) => {}
            }
        }
        all
    }
}

#[test]
fn model_types_serialize_exactly_the_documented_properties() {
    let d = doc();

    // (schema, every field set, only the required fields set, whether the schema is output-only)
    let sid = full::sid(3);
    let cases: Vec<(&str, Value, Value, bool)> = vec![
        (
            "Span",
            to_json(&full::span()),
            to_json(&Span::new(sid, SpanKind::Chain, "x", full::t(0))),
            true,
        ),
        (
            "SpanNode",
            to_json(&SpanNode {
                span: full::span(),
                depth: 0,
                children: vec![SpanNode {
                    span: full::span(),
                    depth: 1,
                    children: vec![],
                }],
            }),
            to_json(&SpanNode {
                span: Span::new(sid, SpanKind::Chain, "x", full::t(0)),
                depth: 0,
                children: vec![],
            }),
            true,
        ),
        (
            "SpanStatus",
            to_json(&full::status()),
            to_json(&SpanStatus::default()),
            false,
        ),
        (
            "Message",
            to_json(&full::message()),
            to_json(&Message::default()),
            false,
        ),
        (
            "LlmDetails",
            to_json(&full::llm()),
            to_json(&LlmDetails::default()),
            false,
        ),
        (
            "ToolCall",
            to_json(&full::message().tool_calls[0]),
            to_json(&ToolCall::default()),
            false,
        ),
        (
            "ToolDetails",
            to_json(&full::tool()),
            to_json(&ToolDetails::default()),
            false,
        ),
        (
            "Document",
            to_json(&full::document()),
            to_json(&Document::default()),
            false,
        ),
        (
            "RetrievalDetails",
            to_json(&full::retrieval()),
            to_json(&RetrievalDetails::default()),
            false,
        ),
        (
            "Link",
            to_json(&full::link()),
            to_json(&Link {
                trace_id: full::tid(),
                span_id: None,
                attributes: Map::new(),
            }),
            false,
        ),
        (
            "Rollups",
            to_json(&full::rollups()),
            to_json(&Rollups::default()),
            true,
        ),
        (
            "Trace",
            to_json(&full::trace()),
            to_json(&Trace {
                name: None,
                agent_id: None,
                session_id: None,
                user_id: None,
                ended_at: None,
                metadata: BTreeMap::new(),
                ..full::trace()
            }),
            true,
        ),
        (
            "TraceStarted",
            to_json(&full::trace_started()),
            to_json(&TraceStarted {
                name: None,
                agent_id: None,
                session_id: None,
                user_id: None,
                metadata: BTreeMap::new(),
                ..full::trace_started()
            }),
            true,
        ),
        (
            "LogRecord",
            to_json(&full::log()),
            to_json(&LogRecord::default()),
            true,
        ),
        (
            "ErrorRecord",
            to_json(&full::error()),
            to_json(&ErrorRecord::default()),
            true,
        ),
        (
            "StateChange",
            to_json(&full::state_change()),
            to_json(&StateChange {
                reason: None,
                ..full::state_change()
            }),
            true,
        ),
        (
            "TraceEnded",
            to_json(&full::trace_ended()),
            to_json(&TraceEnded {
                reason: None,
                ..full::trace_ended()
            }),
            true,
        ),
        (
            "SpanInput",
            to_json(&full::span_input()),
            to_json(&SpanInput::new(sid)),
            false,
        ),
        (
            "NewTrace",
            to_json(&full::new_trace()),
            to_json(&NewTrace::default()),
            false,
        ),
        (
            "TracePatch",
            to_json(&full::trace_patch()),
            to_json(&TracePatch::default()),
            false,
        ),
        (
            "AppendResponse",
            to_json(&AppendResponse {
                accepted: 1,
                duplicates: 2,
                last_seq: 3,
            }),
            to_json(&AppendResponse {
                accepted: 0,
                duplicates: 0,
                last_seq: 0,
            }),
            true,
        ),
    ];
    for (name, full, minimal, output_only) in &cases {
        assert_eq!(
            keys(full),
            d.props(name),
            "{name}: serialized fields vs documented properties"
        );
        let required = d.required(name);
        if *output_only {
            assert_eq!(
                keys(minimal),
                required,
                "{name}: always-present fields vs documented `required`"
            );
        } else {
            assert!(
                keys(minimal).is_superset(&required),
                "{name}: a required property is optional in the code"
            );
        }
        d.assert_valid(&schema_ref(name), full, &format!("full {name}"));
        d.assert_valid(&schema_ref(name), minimal, &format!("minimal {name}"));
    }

    // Events: the flattened body makes `type` + `payload`, one variant per type.
    for body in full::bodies() {
        let event = Event {
            trace_id: full::tid(),
            seq: 1,
            time: full::t(0),
            component_id: Some("c".into()),
            body,
        };
        let v = to_json(&event);
        assert_eq!(keys(&v), d.props("Event"), "Event fields");
        d.assert_valid(&schema_ref("Event"), &v, &format!("{} event", v["type"]));
        let bare = to_json(&Event {
            component_id: None,
            ..event
        });
        assert_eq!(keys(&bare), d.required("Event"));
    }

    // Input events: log and error fields sit at the top level next to `type`.
    let log = EventInput::Log {
        id: Some("k".into()),
        time: Some(full::t(1)),
        record: full::log(),
    };
    let error = EventInput::Error {
        id: Some("k".into()),
        time: Some(full::t(1)),
        record: full::error(),
    };
    for (name, input) in [
        (
            "SpanStartedInput",
            EventInput::SpanStarted {
                span: full::span_input(),
            },
        ),
        (
            "SpanEndedInput",
            EventInput::SpanEnded {
                span: full::span_input(),
            },
        ),
        ("LogInput", log),
        ("ErrorInput", error),
    ] {
        let v = to_json(&input);
        assert_eq!(keys(&v), d.props(name), "{name} fields");
        d.assert_valid(&schema_ref("EventInput"), &v, name);
        let back: EventInput = serde_json::from_value(v).expect("round trip");
        assert_eq!(back, input);
    }

    // Times are read as RFC 3339 or integer Unix nanos, as TimestampInput says.
    let nanos = json!({"type": "span_ended", "span": {"span_id": "00000000000000aa", "start_time": 1_767_261_600_000_000_000_i64}});
    d.assert_valid(&schema_ref("EventInput"), &nanos, "nanos");
    serde_json::from_value::<EventInput>(nanos).expect("integer nanos accepted");

    // `additionalProperties: false` exactly where the code refuses unknown fields.
    let strict = |name: &str| d.schema(name).get("additionalProperties") == Some(&json!(false));
    assert_eq!(
        serde_json::from_value::<NewTrace>(json!({"bogus": 1})).is_err(),
        strict("NewTrace")
    );
    assert_eq!(
        serde_json::from_value::<TracePatch>(json!({"bogus": 1})).is_err(),
        strict("TracePatch")
    );
    let span = json!({"span_id": "00000000000000aa", "bogus": 1});
    assert_eq!(
        serde_json::from_value::<SpanInput>(span).is_err(),
        strict("SpanInput")
    );
    let log = json!({"type": "log", "message": "m", "bogus": 1});
    assert_eq!(
        serde_json::from_value::<EventInput>(log).is_err(),
        strict("LogInput")
    );
    let error = json!({"type": "error", "message": "m", "bogus": 1});
    assert_eq!(
        serde_json::from_value::<EventInput>(error).is_err(),
        strict("ErrorInput")
    );
    assert!(
        strict("AppendBody") && strict("CleanupBody"),
        "checked over HTTP below"
    );

    // Ids: the forms the TraceIdInput schema describes.
    for ok in [
        TRACE,
        "0123456789ABCDEF0123456789ABCDEF",
        "01234567-89ab-cdef-0123-456789abcdef",
    ] {
        assert!(ok.parse::<TraceId>().is_ok(), "{ok}");
    }
    for bad in [
        "00000000000000000000000000000000",
        "0123456789abcdef",
        "0123456789abcdef0123456789abcdeg",
    ] {
        assert!(bad.parse::<TraceId>().is_err(), "{bad}");
    }
    assert_eq!(
        to_json(&TraceId::from_u128(0xAB).expect("id")),
        "000000000000000000000000000000ab"
    );
    assert_eq!(to_json(&full::sid(0xAB)), "00000000000000ab");
}

#[tokio::test]
async fn documented_query_parameters_and_the_tenant_header_are_what_the_code_takes() {
    let d = doc();
    let app = test_app();
    let (status, _, _) = send(
        &app,
        json_request("POST", "/api/v1/traces", &json!({"trace_id": TRACE})),
    )
    .await;
    assert_eq!(status, Http::CREATED);
    let (status, _, _) = send(&app, json_request("POST", "/api/v1/traces", &json!({}))).await;
    assert_eq!(status, Http::CREATED);
    let (_, _, page) = send(&app, request("GET", "/api/v1/traces?limit=1", None)).await;
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_string();

    // A valid value of each documented query parameter, sent alone, is accepted.
    let sample = |name: &str| -> String {
        match name {
            "agent_id" | "user_id" | "session_id" | "component_id" => "x".into(),
            "state" => "RUNNING".into(),
            "from" => "2025-01-01T00:00:00Z".into(),
            "to" => "2030-01-01T00:00:00.5Z".into(),
            "has_error" => "false".into(),
            "min_duration_ms" => "0.5".into(),
            "cursor" => cursor.clone(),
            "limit" | "page_size" => "10".into(),
            "page" => "2".into(),
            "level" => "minimal".into(),
            "type" => "span_started,trace_started".into(),
            "after_seq" | "offset" => "1".into(),
            "all" => "true".into(),
            "format" => "streaming".into(),
            "wait" => "0s".into(),
            "repeat_threshold"
            | "alternation_cycles"
            | "repeated_prompt_threshold"
            | "max_bottlenecks" => "4".into(),
            "slow_mean_ms" => "2500".into(),
            "dominant_share" | "bottleneck_share" | "empty_retrieval_share" => "0.25".into(),
            other => panic!("no sample for documented query parameter {other}: add one"),
        }
    };
    let mut seen = 0;
    for (method, template) in d.operations() {
        let method: Method = method.parse().expect("method");
        for ((place, name), p) in d.parameters(&method, &template) {
            if place != "query" {
                continue;
            }
            seen += 1;
            let raw = sample(&name);
            // The value read as the schema types it, then checked against the schema.
            let schema = d.resolve(&p["schema"]);
            let as_json = match schema["type"].as_str() {
                Some("integer") | Some("number") => serde_json::from_str(&raw).expect("number"),
                Some("boolean") => json!(raw == "true"),
                Some("array") => {
                    assert_eq!(
                        p["explode"], false,
                        "{name}: comma-separated lists are explode: false"
                    );
                    json!(raw.split(',').collect::<Vec<_>>())
                }
                _ => json!(raw),
            };
            d.assert_valid(&p["schema"], &as_json, &format!("{template} ?{name}"));
            let uri = format!("{}?{name}={raw}", template.replace("{id}", TRACE));
            let (status, _, v) =
                checked(&app, &template, request(method.as_str(), &uri, None)).await;
            assert_eq!(status, Http::OK, "{method} {uri}: {v}");

            // An integer's documented bounds are accepted, and one past them refused.
            let min = schema["minimum"].as_i64().filter(|m| *m >= 1);
            let max = schema["maximum"].as_i64();
            let bounds = [min.map(|m| (m, m - 1)), max.map(|m| (m, m + 1))];
            for (edge, past) in bounds.into_iter().flatten() {
                let base = template.replace("{id}", TRACE);
                let uri = format!("{base}?{name}={edge}");
                let (status, _, v) =
                    checked(&app, &template, request(method.as_str(), &uri, None)).await;
                assert_eq!(status, Http::OK, "{method} {uri}: {v}");
                let uri = format!("{base}?{name}={past}");
                let (status, _, v) =
                    checked(&app, &template, request(method.as_str(), &uri, None)).await;
                assert_error(status, &v, Http::BAD_REQUEST, "invalid_argument");
            }
        }
        // Operations that take query parameters refuse ones the document does not list.
        let takes_query = d
            .parameters(&method, &template)
            .keys()
            .any(|(place, _)| place == "query");
        if takes_query {
            let uri = format!("{}?bogus=1", template.replace("{id}", TRACE));
            let (status, _, v) = send(&app, request(method.as_str(), &uri, None)).await;
            assert_error(status, &v, Http::BAD_REQUEST, "invalid_argument");
        }
    }
    assert!(seen >= 15, "only {seen} query parameters documented");

    // The tenant header: where documented, an invalid value is refused and a valid one is
    // another tenant; elsewhere it is ignored.
    let tenant = d.0["components"]["parameters"]["Tenant"].clone();
    assert_eq!(tenant["name"], "X-Traceway-Tenant");
    assert_eq!(tenant["schema"]["default"], "default");
    assert_eq!(tenant["schema"]["maxLength"], 128);
    let long = "a".repeat(129);
    for (method, template, body, want) in ROUTES {
        let documented = d
            .parameters(&method.parse().expect("method"), template)
            .contains_key(&("header".to_string(), "X-Traceway-Tenant".to_string()));
        let uri = template.replace("{id}", TRACE);
        for bad in ["bad tenant", "", long.as_str(), "tenant/1"] {
            let mut req = request(method, &uri, *body);
            req.headers_mut()
                .insert("x-traceway-tenant", bad.parse().expect("header value"));
            let (status, _, v) = checked(&app, template, req).await;
            if documented && template.starts_with("/v1/") {
                // OTLP answers a google.rpc.Status: INVALID_ARGUMENT.
                assert_eq!((status, &v["code"]), (Http::BAD_REQUEST, &json!(3)), "{v}");
            } else if documented {
                assert_error(status, &v, Http::BAD_REQUEST, "invalid_argument");
            } else {
                assert_eq!(
                    status.as_u16(),
                    *want,
                    "{method} {template} ignores the tenant header"
                );
            }
        }
        if documented && template.contains("{id}") {
            // Another tenant does not see the trace.
            let mut req = request(method, &uri, *body);
            req.headers_mut().insert(
                "x-traceway-tenant",
                "Team-A.prod_1".parse().expect("header value"),
            );
            let (status, _, v) = checked(&app, template, req).await;
            assert_error(status, &v, Http::NOT_FOUND, "not_found");
        }
    }
}

#[tokio::test]
async fn documented_error_statuses_are_what_the_handlers_answer() {
    let app = test_app();
    let traces = "/api/v1/traces";
    let one = "/api/v1/traces/{id}";
    let events = "/api/v1/traces/{id}/events";
    let cleanup = "/api/v1/traces/cleanup";
    let id_uri = format!("/api/v1/traces/{TRACE}");
    let events_uri = format!("{id_uri}/events");

    // 404 for a trace that does not exist, on every route that takes an id.
    for (method, template, body) in [
        ("GET", one, None),
        ("PATCH", one, Some("{}")),
        ("DELETE", one, None),
        ("POST", events, Some(r#"{"events": []}"#)),
        ("GET", events, None),
    ] {
        let uri = template.replace("{id}", TRACE);
        let (status, _, v) = checked(&app, template, request(method, &uri, body)).await;
        assert_error(status, &v, Http::NOT_FOUND, "not_found");
    }

    // 201, then 409 for the same id; 400 for a terminal initial state or an unknown field.
    let create = |body: Value| json_request("POST", traces, &body);
    let (status, _, _) = checked(&app, traces, create(json!({"trace_id": TRACE}))).await;
    assert_eq!(status, Http::CREATED);
    let (status, _, v) = checked(&app, traces, create(json!({"trace_id": TRACE}))).await;
    assert_error(status, &v, Http::CONFLICT, "conflict");
    for bad in [
        json!({"state": "COMPLETED"}),
        json!({"nmae": "x"}),
        json!({"state": "running"}),
        json!({"trace_id": "xyz"}),
    ] {
        let (status, _, v) = checked(&app, traces, create(bad)).await;
        assert_error(status, &v, Http::BAD_REQUEST, "invalid_argument");
    }

    // 400 for bad ids, bad bodies and bad query parameters.
    for (method, template, uri, body) in [
        (
            "GET",
            one,
            "/api/v1/traces/not-a-trace-id".to_string(),
            None,
        ),
        (
            "GET",
            one,
            "/api/v1/traces/00000000000000000000000000000000".to_string(),
            None,
        ),
        (
            "POST",
            events,
            events_uri.clone(),
            Some(r#"{"events": [], "bogus": 1}"#),
        ),
        (
            "POST",
            events,
            events_uri.clone(),
            Some(r#"{"events": [{"type": "trace_started"}]}"#),
        ),
        (
            "POST",
            events,
            events_uri.clone(),
            Some(r#"{"events": [{"type": "log"}]}"#),
        ),
        (
            "POST",
            events,
            events_uri.clone(),
            Some(r#"{"events": [{"type": "span_ended", "span": {}}]}"#),
        ),
        (
            "PATCH",
            one,
            id_uri.clone(),
            Some(r#"{"state": "not a state"}"#),
        ),
        ("PATCH", one, id_uri.clone(), Some(r#"{"bogus": 1}"#)),
        ("POST", cleanup, cleanup.to_string(), Some("{}")),
        (
            "POST",
            cleanup,
            cleanup.to_string(),
            Some(r#"{"older_than_days": -1}"#),
        ),
        (
            "POST",
            cleanup,
            cleanup.to_string(),
            Some(r#"{"older_than_days": 1, "bogus": 1}"#),
        ),
        ("POST", traces, traces.to_string(), Some("{not json")),
        ("GET", traces, format!("{traces}?cursor=abc&page=1"), None),
        (
            "GET",
            traces,
            format!("{traces}?cursor=bm90LWEtY3Vyc29y"),
            None,
        ),
        ("GET", traces, format!("{traces}?state=running"), None),
        ("GET", traces, format!("{traces}?has_error=maybe"), None),
        ("GET", traces, format!("{traces}?from=yesterday"), None),
        ("GET", events, format!("{events_uri}?type=log,robot"), None),
        ("GET", one, format!("{id_uri}?level=verbose"), None),
    ] {
        let (status, _, v) = checked(&app, template, request(method, &uri, body)).await;
        assert_error(status, &v, Http::BAD_REQUEST, "invalid_argument");
    }

    // 415 for other media types; no Content-Type is read as JSON.
    for (method, template, uri, body) in [
        ("POST", traces, traces.to_string(), "{}"),
        ("PATCH", one, id_uri.clone(), "{}"),
        ("POST", events, events_uri.clone(), r#"{"events": []}"#),
        (
            "POST",
            cleanup,
            cleanup.to_string(),
            r#"{"older_than_days": 1}"#,
        ),
    ] {
        let mut req = request(method, &uri, Some(body));
        req.headers_mut()
            .insert(header::CONTENT_TYPE, "text/plain".parse().expect("ct"));
        let (status, _, v) = checked(&app, template, req).await;
        assert_error(
            status,
            &v,
            Http::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        );
        let mut req = request(method, &uri, Some(body));
        req.headers_mut().remove(header::CONTENT_TYPE);
        let (status, _, v) = checked(&app, template, req).await;
        assert!(
            status.is_success(),
            "{method} {template} without Content-Type: {status} {v}"
        );
        let mut req = request(method, &uri, Some(body));
        req.headers_mut().insert(
            header::CONTENT_TYPE,
            "application/vnd.traceway+json; charset=utf-8"
                .parse()
                .expect("ct"),
        );
        let (status, _, v) = checked(&app, template, req).await;
        assert!(
            status.is_success(),
            "{method} {template} with +json: {status} {v}"
        );
    }

    // 409 when leaving a terminal state; the same state again is a no-op.
    let patch = |body: Value| json_request("PATCH", &id_uri, &body);
    let (status, _, t) = checked(
        &app,
        one,
        patch(json!({"state": "COMPLETED", "reason": "done"})),
    )
    .await;
    assert_eq!(status, Http::OK, "{t}");
    let (status, _, again) = checked(&app, one, patch(json!({"state": "COMPLETED"}))).await;
    assert_eq!(status, Http::OK);
    assert_eq!(again["last_seq"], t["last_seq"], "no new events");
    let (status, _, v) = checked(&app, one, patch(json!({"state": "RUNNING"}))).await;
    assert_error(status, &v, Http::CONFLICT, "conflict");

    // 204, then 404.
    let (status, _, v) = checked(&app, one, request("DELETE", &id_uri, None)).await;
    assert_eq!((status, v), (Http::NO_CONTENT, Value::Null));
    let (status, _, v) = checked(&app, one, request("DELETE", &id_uri, None)).await;
    assert_error(status, &v, Http::NOT_FOUND, "not_found");

    // 413 over the configured cap, on every route with a body.
    let small = test_app_with(Config {
        max_body_bytes: 64,
        ..Config::default()
    });
    let big = format!(r#"{{"name": "{}"}}"#, "x".repeat(100));
    for (method, template, uri) in [
        ("POST", traces, traces.to_string()),
        ("PATCH", one, id_uri.clone()),
        ("POST", events, events_uri.clone()),
        ("POST", cleanup, cleanup.to_string()),
    ] {
        let (status, _, v) = checked(&small, template, request(method, &uri, Some(&big))).await;
        assert_error(status, &v, Http::PAYLOAD_TOO_LARGE, "payload_too_large");
    }

    // 503 with Retry-After once the store is shut down (checked() asserts the header).
    let (status, _, _) = checked(&small, "/readyz", request("GET", "/readyz", None)).await;
    assert_eq!(status, Http::OK);
    small.store.shutdown().await;
    let (status, headers, v) = checked(&small, "/readyz", request("GET", "/readyz", None)).await;
    assert_error(status, &v, Http::SERVICE_UNAVAILABLE, "unavailable");
    assert_eq!(headers[header::RETRY_AFTER], "1");
    let (status, _, v) = checked(&small, traces, request("POST", traces, Some("{}"))).await;
    assert_error(status, &v, Http::SERVICE_UNAVAILABLE, "unavailable");
    let (status, _, v) = checked(&small, "/healthz", request("GET", "/healthz", None)).await;
    assert_eq!((status, v), (Http::OK, json!({"status": "ok"})));
}

#[tokio::test]
async fn otlp_http_answers_match_the_document() {
    let d = doc();
    let app = test_app();
    let otlp = "/v1/traces";
    let example = d.schema("OtlpExportRequest")["example"].clone();
    let (status, _, v) = checked(&app, otlp, json_request("POST", otlp, &example)).await;
    assert_eq!((status, v), (Http::OK, json!({})));
    let (status, _, v) = send(
        &app,
        request(
            "GET",
            "/api/v1/traces/4bf92f3577b34da6a3ce929d0e0e4736",
            None,
        ),
    )
    .await;
    assert_eq!(status, Http::OK, "the example's trace is stored");
    assert_eq!(v["trace"]["agent_id"], "support-agent");

    // A partial success, a 400, a 415 and a 413, each as documented.
    let mut partial = example.clone();
    partial["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["spanId"] = json!("0000000000000000");
    let (status, _, v) = checked(&app, otlp, json_request("POST", otlp, &partial)).await;
    assert_eq!(status, Http::OK);
    assert_eq!(v["partialSuccess"]["rejectedSpans"], "1", "{v}");
    let (status, _, v) = checked(
        &app,
        otlp,
        request("POST", otlp, Some(r#"{"resourceSpans": 1}"#)),
    )
    .await;
    assert_eq!((status, &v["code"]), (Http::BAD_REQUEST, &json!(3)), "{v}");
    let mut req = request("POST", otlp, Some("{}"));
    req.headers_mut()
        .insert(header::CONTENT_ENCODING, "br".parse().expect("value"));
    let (status, _, v) = checked(&app, otlp, req).await;
    assert_eq!(status, Http::UNSUPPORTED_MEDIA_TYPE, "{v}");
    let small = test_app_with(Config {
        max_body_bytes: 64,
        ..Config::default()
    });
    let (status, _, v) = checked(&small, otlp, json_request("POST", otlp, &example)).await;
    assert_eq!(status, Http::PAYLOAD_TOO_LARGE, "{v}");

    // 503 with Retry-After (checked() asserts the header) once the store is shut down.
    app.store.shutdown().await;
    let (status, headers, v) = checked(&app, otlp, json_request("POST", otlp, &example)).await;
    assert_eq!(
        (status, &v["code"]),
        (Http::SERVICE_UNAVAILABLE, &json!(14)),
        "{v}"
    );
    assert_eq!(headers[header::RETRY_AFTER], "1");
}
