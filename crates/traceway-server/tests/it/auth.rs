//! API keys (ADR 024): through the router, over OTLP/HTTP and OTLP/gRPC, and on the real
//! binary with `--auth on` on a loopback address.

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use serde_json::{json, Value};
use tonic_types::pb::Status as RpcStatus;
use tower::ServiceExt;
use traceway_core::otlp::{decode_export_request, Encoding};
use traceway_core::Credentials;
use traceway_server::auth::BootstrapKey;
use traceway_server::config::AuthConfig;
use traceway_server::Config;

use crate::{test_app_with, TestApp};

const TRACE: &str = "5b8efff798038103d269b633813fc60c";

fn export_request() -> ExportTraceServiceRequest {
    let path = format!(
        "{}/../traceway-core/tests/fixtures/otlp/genai_agent.json",
        env!("CARGO_MANIFEST_DIR")
    );
    decode_export_request(&std::fs::read(path).expect("fixture"), Encoding::Json).expect("valid")
}

fn secured() -> (TestApp, Credentials) {
    let admin = Credentials::generate();
    let app = test_app_with(Config {
        auth: AuthConfig {
            http: true,
            grpc: true,
            bootstrap: Some(BootstrapKey {
                credentials: admin.clone(),
                tenant: "acme".into(),
            }),
        },
        ..Config::default()
    });
    (app, admin)
}

async fn send(
    app: &TestApp,
    method: Method,
    uri: &str,
    authorization: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value, HeaderMap) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        // Ignored when auth is on: the key names the tenant.
        .header("x-traceway-tenant", "intruder");
    if let Some(a) = authorization {
        req = req.header(header::AUTHORIZATION, a);
    }
    let body = match body {
        Some(v) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Body::from(serde_json::to_vec(&v).expect("json"))
        }
        None => Body::empty(),
    };
    let resp = app
        .router
        .clone()
        .oneshot(req.body(body).expect("request"))
        .await
        .expect("infallible");
    let (status, headers) = (resp.status(), resp.headers().clone());
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, v, headers)
}

fn b64(s: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

async fn create_key(app: &TestApp, admin: &Credentials, name: &str, scopes: &[&str]) -> String {
    let (status, body, _) = send(
        app,
        Method::POST,
        "/api/v1/keys",
        Some(&bearer(&admin.token())),
        Some(json!({"name": name, "scopes": scopes})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["tenant"], "acme");
    body["key"].as_str().expect("the secret, once").to_string()
}

#[tokio::test]
async fn with_auth_on_a_request_needs_a_valid_key_with_the_scope_and_acts_for_its_tenant() {
    let (app, admin) = secured();

    let (status, body, headers) = send(&app, Method::GET, "/api/v1/traces", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthenticated");
    assert!(headers.contains_key(header::WWW_AUTHENTICATE));
    let (status, body, _) = send(
        &app,
        Method::GET,
        "/api/v1/traces",
        Some("Bearer twk_0000000000000000.tws_0"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("malformed"));

    let ingest = create_key(&app, &admin, "exporter", &["ingest"]).await;
    let read = create_key(&app, &admin, "dashboard", &["read"]).await;

    let (status, created, _) = send(
        &app,
        Method::POST,
        "/api/v1/traces",
        Some(&bearer(&ingest)),
        Some(json!({"name": "run"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["trace_id"].as_str().expect("id").to_string();
    let (status, got, _) = send(
        &app,
        Method::GET,
        &format!("/api/v1/traces/{id}"),
        Some(&bearer(&read)),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{got}");
    // The trace belongs to the key's tenant, not to the header's.
    assert!(app
        .store
        .get_trace("acme", id.parse().unwrap())
        .await
        .unwrap()
        .is_some());
    assert!(app
        .store
        .get_trace("intruder", id.parse().unwrap())
        .await
        .unwrap()
        .is_none());

    // Missing scopes are 403.
    for (key, method, uri) in [
        (&ingest, Method::GET, "/api/v1/traces".to_string()),
        (&read, Method::POST, "/api/v1/traces".to_string()),
        (&read, Method::DELETE, format!("/api/v1/traces/{id}")),
        (&ingest, Method::GET, "/api/v1/keys".to_string()),
        (&read, Method::GET, "/metrics".to_string()),
    ] {
        let body = (method == Method::POST).then(|| json!({}));
        let (status, b, _) = send(&app, method.clone(), &uri, Some(&bearer(key)), body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {uri}: {b}");
        assert_eq!(b["error"]["code"], "permission_denied");
    }

    // Basic auth with the public id and the secret, as Langfuse clients send.
    let creds = Credentials::parse_token(&read).unwrap();
    let basic = b64(&format!("{}:{}", creds.key_id, creds.secret));
    let (status, _, _) = send(
        &app,
        Method::GET,
        "/api/v1/traces",
        Some(&format!("Basic {basic}")),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // A known id with a wrong secret is refused.
    let forged = format!("{}.{}", creds.key_id, Credentials::generate().secret);
    let (status, _, _) = send(
        &app,
        Method::GET,
        "/api/v1/traces",
        Some(&bearer(&forged)),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Probes: /healthz is open; /metrics and /readyz need an admin key.
    let (status, _, _) = send(&app, Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    for uri in ["/metrics", "/readyz"] {
        let (status, _, _) = send(&app, Method::GET, uri, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
        let (status, _, _) =
            send(&app, Method::GET, uri, Some(&bearer(&admin.token())), None).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
    }
}

#[tokio::test]
async fn keys_are_listed_without_secrets_and_a_revoked_key_stops_working() {
    let (app, admin) = secured();
    let ingest = create_key(&app, &admin, "exporter", &["ingest"]).await;
    let creds = Credentials::parse_token(&ingest).unwrap();
    let (status, _, _) = send(
        &app,
        Method::POST,
        "/api/v1/traces",
        Some(&bearer(&ingest)),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    let admin_h = bearer(&admin.token());
    // The use is recorded off the request's path: poll for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let list = loop {
        let (status, list, _) = send(&app, Method::GET, "/api/v1/keys", Some(&admin_h), None).await;
        assert_eq!(status, StatusCode::OK);
        if !list["keys"][0]["last_used_at"].is_null() {
            break list;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "use never recorded: {list}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    let keys = list["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["key_id"], creds.key_id.as_str());
    assert_eq!(keys[0]["scopes"], json!(["ingest"]));
    assert!(keys[0].get("key").is_none());
    assert!(
        !list.to_string().contains(&creds.secret),
        "no secret listed"
    );

    let uri = format!("/api/v1/keys/{}", creds.key_id);
    let (status, _, _) = send(&app, Method::DELETE, &uri, Some(&admin_h), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = send(
        &app,
        Method::POST,
        "/api/v1/traces",
        Some(&bearer(&ingest)),
        Some(json!({})),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "revoked on this replica at once"
    );
    let (status, list, _) = send(&app, Method::GET, "/api/v1/keys", Some(&admin_h), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!list["keys"][0]["revoked_at"].is_null());

    let (status, b, _) = send(
        &app,
        Method::DELETE,
        "/api/v1/keys/twk_0000000000000001",
        Some(&admin_h),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{b}");
    let (status, b, _) = send(
        &app,
        Method::DELETE,
        "/api/v1/keys/nope",
        Some(&admin_h),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{b}");
    let (status, b, _) = send(
        &app,
        Method::POST,
        "/api/v1/keys",
        Some(&admin_h),
        Some(json!({"name": "x", "scopes": ["write"]})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{b}");
}

#[tokio::test]
async fn otlp_http_refusals_are_google_rpc_status_and_a_key_lets_the_export_in() {
    let (app, admin) = secured();
    let body = export_request().encode_to_vec();
    let post = |auth: Option<String>| {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri("/v1/traces")
            .header(header::CONTENT_TYPE, "application/x-protobuf");
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let req = req.body(Body::from(body.clone())).expect("request");
        let router = app.router.clone();
        async move {
            let resp = router.oneshot(req).await.expect("infallible");
            let status = resp.status();
            let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .expect("body");
            (status, bytes)
        }
    };
    let (status, bytes) = post(None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let st = RpcStatus::decode(bytes.as_ref()).expect("google.rpc.Status");
    assert_eq!(st.code, tonic::Code::Unauthenticated as i32);

    let read = create_key(&app, &admin, "dashboard", &["read"]).await;
    let (status, bytes) = post(Some(bearer(&read))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        RpcStatus::decode(bytes.as_ref()).expect("status").code,
        tonic::Code::PermissionDenied as i32
    );

    let ingest = create_key(&app, &admin, "exporter", &["ingest"]).await;
    // As OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%20… reaches us undecoded.
    let (status, _) = post(Some(format!("Bearer%20{ingest}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(app
        .store
        .get_trace("acme", TRACE.parse().unwrap())
        .await
        .unwrap()
        .is_some());
}

async fn grpc_client(app: &TestApp) -> TraceServiceClient<tonic::transport::Channel> {
    TraceServiceClient::new(grpc_channel(app).await)
}

async fn grpc_channel(app: &TestApp) -> tonic::transport::Channel {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(traceway_server::otlp::grpc::serve(
        listener,
        app.state.clone(),
        std::future::pending(),
    ));
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect()
        .await
        .expect("connect")
}

fn with_auth(value: Option<&str>) -> tonic::Request<ExportTraceServiceRequest> {
    let mut req = tonic::Request::new(export_request());
    req.metadata_mut()
        .insert("x-traceway-tenant", "intruder".parse().expect("ascii"));
    if let Some(v) = value {
        req.metadata_mut()
            .insert("authorization", v.parse().expect("ascii"));
    }
    req
}

#[tokio::test]
async fn otlp_grpc_takes_the_key_from_metadata() {
    let (app, admin) = secured();
    let mut client = grpc_client(&app).await;
    let err = client.export(with_auth(None)).await.expect_err("no key");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let read = create_key(&app, &admin, "dashboard", &["read"]).await;
    let err = client
        .export(with_auth(Some(&bearer(&read))))
        .await
        .expect_err("read only");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let ingest = create_key(&app, &admin, "exporter", &["ingest"]).await;
    client
        .export(with_auth(Some(&format!("  bearer   {ingest} "))))
        .await
        .expect("export with a key");
    let got = app
        .store
        .get_trace("acme", TRACE.parse().unwrap())
        .await
        .unwrap();
    assert!(got.is_some(), "stored under the key's tenant");
    let other = app
        .store
        .get_trace("intruder", TRACE.parse().unwrap())
        .await
        .unwrap();
    assert!(other.is_none(), "the metadata's tenant is ignored");
}

/// Logs fill spans and metrics are accepted: with keys on, both OTLP/gRPC services need an
/// ingest key as traces do (they once read the tenant from metadata, unchecked), and
/// OTLP/HTTP `/v1/logs` and `/v1/metrics` need the ingest scope, refused in OTLP form.
#[tokio::test]
async fn otlp_logs_and_metrics_need_an_ingest_key_like_traces() {
    use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;

    let (app, admin) = secured();
    let channel = grpc_channel(&app).await;
    let mut logs = LogsServiceClient::new(channel.clone());
    let mut metrics = MetricsServiceClient::new(channel);
    fn req<T>(body: T, auth: Option<&str>) -> tonic::Request<T> {
        let mut r = tonic::Request::new(body);
        r.metadata_mut()
            .insert("x-traceway-tenant", "intruder".parse().expect("ascii"));
        if let Some(v) = auth {
            r.metadata_mut()
                .insert("authorization", v.parse().expect("ascii"));
        }
        r
    }
    let read = bearer(&create_key(&app, &admin, "dashboard", &["read"]).await);
    let ingest = bearer(&create_key(&app, &admin, "exporter", &["ingest"]).await);
    for (auth, want) in [
        (None, Some(tonic::Code::Unauthenticated)),
        (Some(read.as_str()), Some(tonic::Code::PermissionDenied)),
        (Some(ingest.as_str()), None),
    ] {
        let got = logs
            .export(req(ExportLogsServiceRequest::default(), auth))
            .await
            .err()
            .map(|e| e.code());
        assert_eq!(got, want, "gRPC logs with {auth:?}");
        let got = metrics
            .export(req(ExportMetricsServiceRequest::default(), auth))
            .await
            .err()
            .map(|e| e.code());
        assert_eq!(got, want, "gRPC metrics with {auth:?}");
    }
    for path in ["/v1/logs", "/v1/metrics"] {
        for (auth, want, rpc) in [
            (
                None,
                StatusCode::UNAUTHORIZED,
                Some(tonic::Code::Unauthenticated),
            ),
            (
                Some(&read),
                StatusCode::FORBIDDEN,
                Some(tonic::Code::PermissionDenied),
            ),
            (Some(&ingest), StatusCode::OK, None),
        ] {
            let mut r = Request::builder()
                .method(Method::POST)
                .uri(path)
                .header(header::CONTENT_TYPE, "application/x-protobuf");
            if let Some(a) = auth {
                r = r.header(header::AUTHORIZATION, a.as_str());
            }
            let resp = app
                .router
                .clone()
                .oneshot(r.body(Body::empty()).expect("request"))
                .await
                .expect("infallible");
            assert_eq!(resp.status(), want, "{path} with {auth:?}");
            if let Some(code) = rpc {
                let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
                    .await
                    .expect("body");
                let st = RpcStatus::decode(bytes.as_ref()).expect("google.rpc.Status");
                assert_eq!(st.code, code as i32, "{path} with {auth:?}");
            }
        }
    }
}

/// Found by schemathesis (issue 15, 3.9: the document and the server disagreed): with auth
/// on, a malformed `X-Traceway-Tenant` was silently replaced by the key's tenant, where the
/// document (and the server without keys) refuse it. It is 400 with the JSON error (a
/// `google.rpc.Status` on OTLP/HTTP); a valid one is still overridden by the key.
#[tokio::test]
async fn with_auth_on_a_malformed_tenant_header_is_400_not_silently_replaced() {
    let (app, admin) = secured();
    for (path, body) in [
        ("/api/v1/traces", Some(json!({}))),
        ("/v1/traces", Some(json!({}))),
    ] {
        let req = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header("x-traceway-tenant", "not a tenant!")
            .header(header::AUTHORIZATION, bearer(&admin.token()))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.expect("body").to_string()))
            .expect("request");
        let resp = app.router.clone().oneshot(req).await.expect("infallible");
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{path}");
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        let v: Value = serde_json::from_slice(&bytes).expect("json");
        let message = if path.starts_with("/v1/") {
            v["message"].as_str().map(str::to_string)
        } else {
            assert_eq!(v["error"]["code"], "invalid_argument", "{v}");
            v["error"]["message"].as_str().map(str::to_string)
        };
        assert!(
            message.unwrap_or_default().contains("X-Traceway-Tenant"),
            "{v}"
        );
    }
    // No key: 401 first, whatever the header.
    let (status, _, _) = send(&app, Method::GET, "/api/v1/traces", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// gRPC agrees with HTTP on a malformed tenant: with auth off the metadata names the
/// tenant and a malformed one was already `INVALID_ARGUMENT`, but with auth on it was
/// ignored (the key names the tenant) where HTTP answers 400. Each malformed value is now
/// `INVALID_ARGUMENT` on gRPC and 400 on HTTP, with auth on and off; with auth on and no
/// key, both answer the missing key first.
#[tokio::test]
async fn a_malformed_tenant_is_invalid_argument_on_grpc_and_400_on_http_with_auth_on_and_off() {
    let malformed: [(&str, Vec<u8>); 5] = [
        ("bad characters", b"not a tenant!".to_vec()),
        ("too long", vec![b'a'; 129]),
        ("empty", Vec::new()),
        ("non-ASCII (UTF-8)", "t\u{e9}nant".as_bytes().to_vec()),
        ("non-ASCII (a lone byte)", vec![b'a', 0xff]),
    ];
    let (secured, admin) = secured();
    let open = test_app_with(Config::default());
    let ingest = bearer(&create_key(&secured, &admin, "exporter", &["ingest"]).await);
    for (app, auth) in [(&secured, Some(ingest.as_str())), (&open, None)] {
        let mut client = grpc_client(app).await;
        for (what, value) in &malformed {
            let mut req = tonic::Request::new(export_request());
            req.metadata_mut().insert(
                "x-traceway-tenant",
                tonic::metadata::MetadataValue::try_from(value.as_slice()).expect("a value"),
            );
            if let Some(a) = auth {
                req.metadata_mut()
                    .insert("authorization", a.parse().expect("ascii"));
            }
            let err = client
                .export(req)
                .await
                .expect_err(&format!("{what}, auth {}", auth.is_some()));
            assert_eq!(
                err.code(),
                tonic::Code::InvalidArgument,
                "{what}, auth {}: {err:?}",
                auth.is_some()
            );
            assert!(err.message().contains("X-Traceway-Tenant"), "{err:?}");
            let details = RpcStatus::decode(err.details()).expect("google.rpc.Status");
            assert_eq!(details.code, tonic::Code::InvalidArgument as i32);

            for path in ["/api/v1/traces", "/v1/traces"] {
                let mut r = Request::builder()
                    .method(Method::POST)
                    .uri(path)
                    .header(
                        "x-traceway-tenant",
                        axum::http::HeaderValue::from_bytes(value).expect("a header value"),
                    )
                    .header(header::CONTENT_TYPE, "application/json");
                if let Some(a) = auth {
                    r = r.header(header::AUTHORIZATION, a);
                }
                let resp = app
                    .router
                    .clone()
                    .oneshot(r.body(Body::from("{}")).expect("request"))
                    .await
                    .expect("infallible");
                assert_eq!(
                    resp.status(),
                    StatusCode::BAD_REQUEST,
                    "{path}, {what}, auth {}",
                    auth.is_some()
                );
            }
        }
    }
    // Nothing was stored, under the key's tenant or the default one.
    for (app, tenant) in [(&secured, "acme"), (&open, "default")] {
        let got = app.store.get_trace(tenant, TRACE.parse().unwrap()).await;
        assert!(got.expect("read").is_none(), "stored under {tenant}");
    }
    // With auth on and no key, the key is refused first, as on HTTP.
    let mut client = grpc_client(&secured).await;
    let mut req = tonic::Request::new(export_request());
    req.metadata_mut()
        .insert("x-traceway-tenant", "not a tenant!".parse().expect("ascii"));
    let err = client.export(req).await.expect_err("no key");
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    // A valid tenant in the metadata is still overridden by the key.
    let mut req = tonic::Request::new(export_request());
    req.metadata_mut()
        .insert("x-traceway-tenant", "intruder".parse().expect("ascii"));
    req.metadata_mut()
        .insert("authorization", ingest.parse().expect("ascii"));
    client.export(req).await.expect("a valid tenant and a key");
    assert!(secured
        .store
        .get_trace("acme", TRACE.parse().unwrap())
        .await
        .unwrap()
        .is_some());
}
