//! Real OpenTelemetry clients against the real binary: the Python SDK with its OTLP/HTTP
//! and OTLP/gRPC exporters (pinned versions, installed by `scripts/otel-venv`) emit an
//! OpenInference agent run and a GenAI-conventions agent run; the traces are read back
//! over the REST API.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::e2e::Server;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The venv's python: `TRACEWAY_OTEL_PYTHON` (set by `scripts/test`), else whatever
/// `scripts/otel-venv` prints after installing (so `cargo nextest run` alone works too).
/// Never skips: no python is a failure.
pub(crate) fn otel_python() -> PathBuf {
    if let Some(p) = std::env::var_os("TRACEWAY_OTEL_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let out = Command::new(repo_root().join("scripts/otel-venv"))
        .output()
        .expect("run scripts/otel-venv");
    assert!(
        out.status.success(),
        "scripts/otel-venv failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    PathBuf::from(stdout.lines().last().expect("a python path").trim())
}

/// Runs the emitter for one protocol; returns the trace ids it printed.
fn emit(python: &PathBuf, protocol: &str, endpoint: &str, tenant: &str) -> std::process::Child {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/emit_agent_traces.py");
    Command::new(python)
        .arg(script)
        .args([
            "--protocol",
            protocol,
            "--endpoint",
            endpoint,
            "--tenant",
            tenant,
        ])
        .env("OTEL_SDK_DISABLED", "false")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn python")
}

fn wait_ids(child: std::process::Child, protocol: &str) -> Value {
    let out = child.wait_with_output().expect("python");
    assert!(
        out.status.success(),
        "{protocol} emitter failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{protocol} emitter printed no ids ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

async fn get(c: &reqwest::Client, url: String, tenant: &str) -> Value {
    let r = c
        .get(&url)
        .header("x-traceway-tenant", tenant)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200, "{url}");
    r.json().await.expect("json")
}

/// The span named `name` anywhere in a span tree.
fn find<'a>(nodes: &'a Value, name: &str) -> &'a Value {
    fn walk<'a>(nodes: &'a Value, name: &str) -> Option<&'a Value> {
        for n in nodes.as_array()? {
            if n["name"] == name {
                return Some(n);
            }
            if let Some(found) = walk(&n["children"], name) {
                return Some(found);
            }
        }
        None
    }
    walk(nodes, name).unwrap_or_else(|| panic!("no span {name:?} in {nodes:#}"))
}

fn children_names(node: &Value) -> Vec<&str> {
    node["children"]
        .as_array()
        .map(|c| c.iter().map(|n| n["name"].as_str().unwrap_or("")).collect())
        .unwrap_or_default()
}

async fn check_openinference(
    c: &reqwest::Client,
    base: &str,
    tenant: &str,
    id: &str,
    protocol: &str,
) {
    let v = get(c, format!("{base}/api/v1/traces/{id}"), tenant).await;
    let at = format!("{protocol} openinference trace");
    let t = &v["trace"];
    assert_eq!(t["state"], "COMPLETED", "{at}: the root ended OK: {t}");
    // The children arrived (flushed) before the root: the root still names the trace.
    assert_eq!(t["name"], "support_agent", "{at}");
    assert_eq!(t["session_id"], format!("sess-{protocol}"), "{at}");
    assert_eq!(t["user_id"], "user-7", "{at}");
    assert_eq!(
        t["metadata"]["service.name"],
        format!("agents-{protocol}"),
        "{at}"
    );
    assert_eq!(t["rollups"]["span_count"], 6, "{at}");
    assert_eq!(t["rollups"]["error_count"], 1, "{at}: the guardrail failed");
    assert_eq!(t["rollups"]["total_tokens"], 155, "{at}");

    let spans = &v["spans"];
    assert_eq!(spans.as_array().map(Vec::len), Some(1), "{at}: one root");
    let root = &spans[0];
    assert_eq!(
        (root["name"].as_str(), root["kind"].as_str()),
        (Some("support_agent"), Some("agent")),
        "{at}"
    );
    assert_eq!(root["output"], "Yes, within 30 days.", "{at}");
    assert_eq!(
        root["attributes"]["customer.tier"], "gold",
        "{at}: unknown attributes kept"
    );
    let mut kids = children_names(root);
    kids.sort_unstable();
    assert_eq!(
        kids,
        ["lookup_order", "pii_check", "plan", "search_policies"],
        "{at}"
    );

    let plan = find(spans, "plan");
    assert_eq!(plan["kind"], "chain", "{at}");
    assert_eq!(
        children_names(plan),
        ["ChatCompletion"],
        "{at}: the llm call is inside plan"
    );
    let llm = find(spans, "ChatCompletion");
    assert_eq!(
        (llm["kind"].as_str(), llm["depth"].as_u64()),
        (Some("llm"), Some(2)),
        "{at}"
    );
    assert_eq!(llm["parent_span_id"], plan["span_id"], "{at}");
    assert_eq!(llm["llm"]["model"], "gpt-4o-mini", "{at}");
    assert_eq!(llm["llm"]["provider"], "openai", "{at}");
    assert_eq!(
        (
            llm["llm"]["input_tokens"].as_u64(),
            llm["llm"]["output_tokens"].as_u64()
        ),
        (Some(120), Some(35)),
        "{at}"
    );
    assert_eq!(
        llm["llm"]["input_messages"][1]["content"], "Can I get a refund for order 1234?",
        "{at}"
    );
    assert_eq!(
        llm["llm"]["output_messages"][0]["role"], "assistant",
        "{at}"
    );

    let retriever = find(spans, "search_policies");
    assert_eq!(retriever["kind"], "retriever", "{at}");
    let docs = retriever["retrieval"]["documents"]
        .as_array()
        .expect("documents");
    assert_eq!(docs.len(), 3, "{at}");
    assert_eq!(docs[0]["id"], "policy-7#2", "{at}");
    assert_eq!(docs[0]["score"], 0.92, "{at}");
    assert_eq!(
        docs[2]["content"], "Digital goods are not refundable once downloaded.",
        "{at}"
    );
    assert_eq!(retriever["retrieval"]["query"], "refund policy", "{at}");

    let tool = find(spans, "lookup_order");
    assert_eq!(tool["kind"], "tool", "{at}");
    assert_eq!(tool["tool"]["name"], "get_order", "{at}");
    assert_eq!(tool["tool"]["arguments"]["order_id"], "1234", "{at}");
    assert_eq!(tool["tool"]["result"]["total"], 59.9, "{at}");

    let guard = find(spans, "pii_check");
    assert_eq!(guard["kind"], "guardrail", "{at}");
    assert_eq!(guard["status"]["code"], "error", "{at}");
    assert_eq!(
        guard["status"]["message"], "email address in the answer",
        "{at}"
    );
    let errors = get(
        c,
        format!("{base}/api/v1/traces/{id}/events?type=error"),
        tenant,
    )
    .await;
    let errors = errors["events"].as_array().expect("events");
    assert_eq!(errors.len(), 1, "{at}: {errors:?}");
    let e = &errors[0]["payload"];
    assert_eq!(
        (e["error_type"].as_str(), e["message"].as_str()),
        (Some("ValueError"), Some("email address in the answer")),
        "{at}"
    );
    assert_eq!(e["span_id"], guard["span_id"], "{at}");
    assert!(e["stacktrace"].is_string(), "{at}: {e}");
}

async fn check_genai(c: &reqwest::Client, base: &str, tenant: &str, id: &str, protocol: &str) {
    let v = get(c, format!("{base}/api/v1/traces/{id}"), tenant).await;
    let at = format!("{protocol} genai trace");
    let t = &v["trace"];
    assert_eq!(
        t["state"], "ERRORED",
        "{at}: the root ended with an error: {t}"
    );
    assert_eq!(t["name"], "invoke_agent travel-planner", "{at}");
    assert_eq!(t["agent_id"], "travel-planner", "{at}");
    assert_eq!(t["session_id"], format!("conv-{protocol}"), "{at}");
    assert_eq!(t["rollups"]["span_count"], 5, "{at}");
    assert_eq!(
        t["rollups"]["error_count"], 2,
        "{at}: the tool and the root"
    );
    assert_eq!(t["rollups"]["input_tokens"], 200, "{at}: the chat call");
    assert_eq!(
        t["rollups"]["embedding_tokens"], 8,
        "{at}: the embeddings, counted apart"
    );

    let spans = &v["spans"];
    let root = &spans[0];
    assert_eq!(
        (root["kind"].as_str(), root["status"]["code"].as_str()),
        (Some("agent"), Some("error")),
        "{at}"
    );
    assert_eq!(root["status"]["message"], "agent gave up", "{at}");
    assert_eq!(children_names(root).len(), 4, "{at}");

    let chat = find(spans, "chat claude-sonnet-4");
    assert_eq!(
        (chat["kind"].as_str(), chat["depth"].as_u64()),
        (Some("llm"), Some(1)),
        "{at}"
    );
    assert_eq!(
        chat["llm"]["model"], "claude-sonnet-4-20250514",
        "{at}: the model that answered"
    );
    assert_eq!(chat["llm"]["provider"], "anthropic", "{at}");
    assert_eq!(
        (
            chat["llm"]["input_tokens"].as_u64(),
            chat["llm"]["output_tokens"].as_u64()
        ),
        (Some(200), Some(50)),
        "{at}"
    );
    assert_eq!(
        chat["llm"]["input_messages"][0]["content"], "Weather in Paris?",
        "{at}"
    );
    assert_eq!(
        chat["llm"]["output_messages"][0]["content"], "Checking the weather.",
        "{at}"
    );

    let retrieval = find(spans, "retrieval guides");
    assert_eq!(retrieval["kind"], "retriever", "{at}");
    assert_eq!(retrieval["retrieval"]["query"], "paris in spring", "{at}");
    assert_eq!(
        retrieval["retrieval"]["documents"][1]["id"], "guide-2",
        "{at}"
    );

    let embedding = find(spans, "embeddings text-embedding-3-small");
    assert_eq!(embedding["kind"], "embedding", "{at}");
    assert_eq!(embedding["llm"]["model"], "text-embedding-3-small", "{at}");

    let tool = find(spans, "execute_tool get_weather");
    assert_eq!(tool["kind"], "tool", "{at}");
    assert_eq!(tool["tool"]["name"], "get_weather", "{at}");
    assert_eq!(tool["tool"]["arguments"]["city"], "Paris", "{at}");
    assert_eq!(tool["status"]["code"], "error", "{at}");
    let errors = get(
        c,
        format!("{base}/api/v1/traces/{id}/events?type=error"),
        tenant,
    )
    .await;
    let e = &errors["events"][0]["payload"];
    assert_eq!(
        (e["error_type"].as_str(), e["message"].as_str()),
        (Some("TimeoutError"), Some("weather service timed out")),
        "{at}"
    );

    let ended = get(
        c,
        format!("{base}/api/v1/traces/{id}/events?type=state_changed"),
        tenant,
    )
    .await;
    let last = ended["events"]
        .as_array()
        .and_then(|e| e.last())
        .expect("a state change");
    assert_eq!(last["payload"]["to"], "ERRORED", "{at}: {last}");
    assert_eq!(
        last["payload"]["reason"], "root span ended with an error",
        "{at}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_otel_sdks_export_agent_traces_over_http_and_grpc() {
    let python = otel_python();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    // Both exporters at once, each as its own tenant (sent as an OTLP header).
    let http = emit(&python, "http", &server.url, "sdk-http");
    let grpc = emit(&python, "grpc", &server.grpc_url, "sdk-grpc");
    let ids = [
        ("http", "sdk-http", wait_ids(http, "http")),
        ("grpc", "sdk-grpc", wait_ids(grpc, "grpc")),
    ];
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    for (protocol, tenant, ids) in &ids {
        let oi = ids["openinference"].as_str().expect("openinference id");
        let genai = ids["genai"].as_str().expect("genai id");
        check_openinference(&c, &server.url, tenant, oi, protocol).await;
        check_genai(&c, &server.url, tenant, genai, protocol).await;
        // Each exporter's tenant sees its own two traces, and only those.
        let list = get(&c, format!("{}/api/v1/traces", server.url), tenant).await;
        let mut listed: Vec<&str> = list["traces"]
            .as_array()
            .expect("traces")
            .iter()
            .map(|t| t["trace_id"].as_str().unwrap_or(""))
            .collect();
        listed.sort_unstable();
        let mut want = vec![oi, genai];
        want.sort_unstable();
        assert_eq!(listed, want, "{protocol}: the tenant's traces");
    }
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_grpc_and_http_with_clients_still_connected_and_keeps_their_spans() {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;

    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let body = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../traceway-core/tests/fixtures/otlp/genai_agent.json"),
    )
    .expect("fixture");
    let request =
        traceway_core::otlp::decode_export_request(&body, traceway_core::otlp::Encoding::Json)
            .expect("valid");
    // A gRPC channel and a keep-alive HTTP connection stay open across the shutdown.
    let channel = tonic::transport::Endpoint::from_shared(server.grpc_url.clone())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut grpc = TraceServiceClient::new(channel);
    grpc.export(request).await.expect("gRPC export");
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/v1/traces", server.url))
        .header("content-type", "application/json")
        .body(
            std::fs::read(
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("../traceway-core/tests/fixtures/otlp/openinference_agent.json"),
            )
            .expect("fixture"),
        )
        .send()
        .await
        .expect("HTTP export");
    assert_eq!(r.status().as_u16(), 200);

    server.stop(); // asserts a clean exit within 20 s of SIGTERM
    let server = Server::start(dir.path());
    let c = reqwest::Client::new();
    for id in [
        "5b8efff798038103d269b633813fc60c",
        "4bf92f3577b34da6a3ce929d0e0e4736",
    ] {
        let v = get(&c, format!("{}/api/v1/traces/{id}", server.url), "default").await;
        assert_eq!(v["trace"]["state"], "COMPLETED", "{id}");
    }
    server.stop();
}

/// Issue 11 with the real Python SDK (`tests/python/emit_fidelity.py`): an OpenInference
/// agent span under an incoming `traceparent` completes its trace, named after it, with
/// its agent, and the real OpenInference OpenAI instrumentation's chat calls (to a fake
/// model on loopback) keep their tool calls and tool call ids typed; and a GenAI
/// `event_only` capture's log records reach `/v1/logs` and become the LLM span's messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_sdk_remote_parent_agent_completes_and_genai_event_logs_reach_the_llm_span() {
    let python = otel_python();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let tenant = "sdk-fidelity";
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/emit_fidelity.py");
    let child = Command::new(&python)
        .arg(script)
        .args(["--endpoint", &server.url, "--tenant", tenant])
        .env("OTEL_SDK_DISABLED", "false")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn python");
    let ids = wait_ids(child, "fidelity");
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");

    // 1. The local root's parent is the caller's span, in another process.
    let remote = ids["remote"].as_str().expect("remote id");
    let v = get(&c, format!("{}/api/v1/traces/{remote}", server.url), tenant).await;
    let t = &v["trace"];
    assert_eq!(t["state"], "COMPLETED", "the local root ended the run: {t}");
    assert_eq!(t["name"], "research_agent");
    assert_eq!(
        t["agent_id"], "research_agent",
        "the root agent span names the agent"
    );
    assert_eq!(
        t["metadata"]["service.version"], "2.3.4",
        "resource attributes kept"
    );
    assert_eq!(t["metadata"]["deployment.environment.name"], "test");
    let root = find(&v["spans"], "research_agent");
    assert_eq!(root["kind"], "agent");
    assert_eq!(root["parent_span_id"], ids["caller_span"]);
    assert_eq!(find(&v["spans"], "render_prompt")["kind"], "prompt");
    let tool = find(&v["spans"], "search_docs");
    assert_eq!(tool["tool"]["arguments"]["query"], "refund policy");
    assert_eq!(
        tool["tool"]["schema"]["properties"]["query"]["type"], "string",
        "tool.parameters is the schema"
    );
    // The real OpenInference OpenAI instrumentation's two chat calls: a tool call, then the
    // tool's answer, as typed message fields.
    fn llm_spans(nodes: &Value, out: &mut Vec<Value>) {
        for n in nodes.as_array().into_iter().flatten() {
            if n["kind"] == "llm" {
                out.push(n.clone());
            }
            llm_spans(&n["children"], out);
        }
    }
    let mut chats = Vec::new();
    llm_spans(&v["spans"], &mut chats);
    chats.sort_by_key(|c| c["start_time"].as_str().unwrap_or("").to_string());
    assert_eq!(chats.len(), 2, "{chats:#?}");
    let (first, second) = (&chats[0]["llm"], &chats[1]["llm"]);
    assert_eq!(first["model"], "gpt-4o-mini-2024-07-18");
    assert_eq!(
        (
            first["input_tokens"].as_u64(),
            first["output_tokens"].as_u64()
        ),
        (Some(21), Some(7))
    );
    let call = &first["output_messages"][0]["tool_calls"][0];
    assert_eq!(
        (call["id"].as_str(), call["name"].as_str()),
        (Some("call_1"), Some("get_weather"))
    );
    assert_eq!(call["arguments"]["city"], "Paris");
    let tool_msg = &second["input_messages"][2];
    assert_eq!(
        (tool_msg["role"].as_str(), tool_msg["tool_call_id"].as_str()),
        (Some("tool"), Some("call_1"))
    );
    assert_eq!(second["input_messages"][1]["tool_calls"][0]["id"], "call_1");
    assert_eq!(
        second["output_messages"][0]["content"],
        "It is rainy in Paris."
    );
    for c in &chats {
        let loose: Vec<&String> = c["attributes"]
            .as_object()
            .map(|m| {
                m.keys()
                    .filter(|k| k.contains("_messages.") || k.starts_with("llm.token_count"))
                    .collect()
            })
            .unwrap_or_default();
        assert!(loose.is_empty(), "left loose: {loose:?}");
    }
    assert_eq!(t["rollups"]["total_tokens"], 74, "both calls counted");

    // 2. The event_only capture: the messages came as log records of the chat span, and
    // are now its messages (ADR 027); none of them is left as a log event.
    let events = ids["events"].as_str().expect("events id");
    let llm_span = ids["llm_span"].as_str().expect("llm span");
    let v = get(&c, format!("{}/api/v1/traces/{events}", server.url), tenant).await;
    assert_eq!(v["trace"]["state"], "COMPLETED");
    let chat = find(&v["spans"], "chat gpt-4o-mini");
    assert_eq!(chat["kind"], "llm");
    assert_eq!(chat["span_id"], llm_span);
    // The per-message events appended the system and user messages and the choice; the
    // operation-details event, exported last, holds the whole call and replaces each side.
    let llm = &chat["llm"];
    assert_eq!(
        llm["input_messages"],
        serde_json::json!([{"role": "user", "content": "What is the refund window?"}]),
        "{chat}"
    );
    assert_eq!(
        llm["output_messages"],
        serde_json::json!([{"role": "assistant", "content": "30 days."}]),
        "{chat}"
    );
    let logs = get(
        &c,
        format!("{}/api/v1/traces/{events}/events?type=log", server.url),
        tenant,
    )
    .await;
    assert_eq!(logs["events"].as_array().map(Vec::len), Some(0), "{logs}");
    server.stop();
}

/// ADR 027 with the real OTel GenAI instrumentation: the real `openai` client, instrumented
/// by `opentelemetry-instrumentation-openai-v2` in its `event_only` content mode, calls a
/// fake model on loopback; its chat span carries no messages and its
/// `gen_ai.client.inference.operation.details` log record carries them. Run twice: with the
/// log exported before its span, and after its span ended. Both times the LLM span in the
/// store has the prompt and the completion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_genai_instrumentation_event_only_messages_reach_the_llm_span_in_either_order() {
    let python = otel_python();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let tenant = "sdk-genai-events";
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/emit_genai_events.py");
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    for order in ["logs-first", "spans-first"] {
        let child = Command::new(&python)
            .arg(&script)
            .args([
                "--endpoint",
                &server.url,
                "--tenant",
                tenant,
                "--order",
                order,
            ])
            .env("OTEL_SDK_DISABLED", "false")
            .env(
                "OTEL_SEMCONV_STABILITY_OPT_IN",
                "gen_ai_latest_experimental",
            )
            .env(
                "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT",
                "event_only",
            )
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn python");
        let ids = wait_ids(child, order);
        let id = ids["trace"].as_str().expect("trace id");
        let v = get(&c, format!("{}/api/v1/traces/{id}", server.url), tenant).await;
        assert_eq!(v["trace"]["state"], "COMPLETED", "{order}: {}", v["trace"]);
        let mut chats = Vec::new();
        fn llm_spans(nodes: &Value, out: &mut Vec<Value>) {
            for n in nodes.as_array().into_iter().flatten() {
                if n["kind"] == "llm" {
                    out.push(n.clone());
                }
                llm_spans(&n["children"], out);
            }
        }
        llm_spans(&v["spans"], &mut chats);
        assert_eq!(chats.len(), 1, "{order}: {:#}", v["spans"]);
        let chat = &chats[0];
        let question = format!("What is the refund window ({order})?");
        let llm = &chat["llm"];
        assert_eq!(llm["input_tokens"], 17, "{order}: {chat}");
        let input: Vec<(&str, &str)> = llm["input_messages"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                (
                    m["role"].as_str().unwrap_or(""),
                    m["content"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(
            input,
            [
                ("system", "You answer briefly."),
                ("user", question.as_str())
            ],
            "{order}: {chat}"
        );
        let output = &llm["output_messages"];
        assert_eq!(output.as_array().map(Vec::len), Some(1), "{order}: {chat}");
        assert_eq!(output[0]["role"], "assistant");
        assert_eq!(
            output[0]["content"],
            format!("Answer to: {question}"),
            "{order}: {chat}"
        );
        // Nothing of the call was left as a log event.
        let logs = get(
            &c,
            format!("{}/api/v1/traces/{id}/events?type=log", server.url),
            tenant,
        )
        .await;
        assert_eq!(
            logs["events"].as_array().map(Vec::len),
            Some(0),
            "{order}: {logs}"
        );
    }
    server.stop();
}
