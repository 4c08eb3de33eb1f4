//! Issue 15 on the real binary: API keys with `--auth on` on a loopback address (both
//! listeners), and the soft descriptor limit raised at start.

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use serde_json::{json, Value};
use traceway_core::otlp::{decode_export_request, Encoding};
use traceway_core::Credentials;

const TRACE: &str = "5b8efff798038103d269b633813fc60c";

fn export_request() -> ExportTraceServiceRequest {
    let path = format!(
        "{}/../traceway-core/tests/fixtures/otlp/genai_agent.json",
        env!("CARGO_MANIFEST_DIR")
    );
    decode_export_request(&std::fs::read(path).expect("fixture"), Encoding::Json).expect("valid")
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
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

// Multi-threaded, so that the clients' connection tasks close while `stop` waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_binary_with_auth_on_refuses_anonymous_calls_on_both_listeners() {
    let dir = tempfile::tempdir().expect("tempdir");
    let admin = Credentials::generate();
    let token = admin.token();
    let server = crate::e2e::Server::start_with(
        dir.path(),
        &[
            "--auth",
            "on",
            "--admin-key",
            &token,
            "--admin-key-tenant",
            "acme",
        ],
    );
    let c = crate::e2e::client();
    let anon = c
        .get(format!("{}/api/v1/traces", server.url))
        .send()
        .await
        .expect("get");
    assert_eq!(anon.status(), reqwest::StatusCode::UNAUTHORIZED);
    let created: Value = c
        .post(format!("{}/api/v1/keys", server.url))
        .bearer_auth(&token)
        .json(&json!({"name": "exporter", "scopes": ["ingest", "read"]}))
        .send()
        .await
        .expect("create key")
        .json()
        .await
        .expect("json");
    let key = created["key"].as_str().expect("key").to_string();
    let ok = c
        .post(format!("{}/v1/traces", server.url))
        .bearer_auth(&key)
        .header("content-type", "application/x-protobuf")
        .body(export_request().encode_to_vec())
        .send()
        .await
        .expect("export");
    assert_eq!(ok.status(), reqwest::StatusCode::OK);
    let got = c
        .get(format!("{}/api/v1/traces/{TRACE}", server.url))
        .bearer_auth(&key)
        .send()
        .await
        .expect("get");
    assert_eq!(got.status(), reqwest::StatusCode::OK);

    let channel = tonic::transport::Endpoint::from_shared(server.grpc_url.clone())
        .expect("endpoint")
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect()
        .await
        .expect("connect");
    let mut grpc = TraceServiceClient::new(channel);
    let err = grpc.export(with_auth(None)).await.expect_err("anonymous");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    grpc.export(with_auth(Some(&bearer(&key))))
        .await
        .expect("export with a key");
    drop((grpc, c));
    server.stop();
}

/// 3.6: with the 1,024-descriptor soft default, 1,100 silent sockets starved `/healthz`.
/// The server raises its soft limit to the hard one at start.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_raises_its_soft_descriptor_limit_to_the_hard_one() {
    // nextest runs each test in its own process: lowering this one's soft limit (which
    // the server inherits) touches no other test.
    let (_, hard) = rlimit::Resource::NOFILE.get().expect("getrlimit");
    rlimit::Resource::NOFILE
        .set(256.min(hard), hard)
        .expect("lower the soft limit");
    let dir = tempfile::tempdir().expect("tempdir");
    let server = crate::e2e::Server::start(dir.path());
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("the line");
    let fields: Vec<&str> = line.split_whitespace().collect();
    // "Max open files  <soft>  <hard>  files"
    let (soft, hard) = (fields[3], fields[4]);
    assert_eq!(soft, hard, "{line}");
    server.stop();
}
