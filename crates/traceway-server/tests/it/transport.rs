//! Regression tests of issue 15's transport failures over real loopback sockets: gRPC
//! codes of undecodable requests (3.5), header-read and idle timeouts and the connection
//! limit (3.6), the body read timeout, and the JSON bodies of 414, 431 and an early 413
//! (3.9). ADR 033.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::BodyExt as _;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message as _;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic_types::pb::Status as RpcStatus;
use tower::ServiceExt;
use traceway_core::otlp::{decode_export_request, Encoding};
use traceway_server::transport::ConnLimits;
use traceway_server::Config;

use crate::{test_app_with, TestApp};

/// A generous deadline: tests poll until something happens, and fail only if it never does.
const PATIENCE: Duration = Duration::from_secs(60);

fn config(header_read_ms: u64, idle_ms: u64, max_connections: u32) -> Config {
    Config {
        conn_limits: ConnLimits {
            header_read_timeout: Duration::from_millis(header_read_ms),
            idle_timeout: Duration::from_millis(idle_ms),
            body_read_timeout: Duration::from_secs(60),
            max_connections,
        },
        ..Config::default()
    }
}

async fn serve_http(app: &TestApp) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(traceway_server::serve_http(
        listener,
        app.state.clone(),
        std::future::pending(),
    ));
    addr
}

async fn serve_grpc(app: &TestApp) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(traceway_server::otlp::grpc::serve(
        listener,
        app.state.clone(),
        std::future::pending(),
    ));
    addr
}

async fn channel(addr: SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect")
}

// ---------------------------------------------------------------------------------------
// 3.5: gRPC codes of requests tonic cannot decode.
// ---------------------------------------------------------------------------------------

/// One gRPC frame: the compressed flag, the length, the bytes.
fn frame(compressed: u8, declared_len: u32, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(compressed);
    b.put_u32(declared_len);
    b.put_slice(payload);
    b.freeze()
}

/// Sends `body` as a `TraceService/Export` call with `headers`; the status it ends with.
async fn raw_export(addr: SocketAddr, headers: &[(&str, &str)], body: Bytes) -> tonic::Status {
    let mut req = axum::http::Request::builder()
        .method("POST")
        .uri(format!(
            "http://{addr}/opentelemetry.proto.collector.trace.v1.TraceService/Export"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(tonic::body::Body::new(axum::body::Body::from(body)))
        .expect("request");
    let resp = channel(addr).await.oneshot(req).await.expect("answered");
    if let Some(st) = tonic::Status::from_header_map(resp.headers()) {
        return st;
    }
    let collected = resp.into_body().collect().await.expect("body");
    let trailers = collected.trailers().cloned().expect("trailers");
    tonic::Status::from_header_map(&trailers).expect("a grpc-status")
}

fn rpc_status(st: &tonic::Status) -> RpcStatus {
    RpcStatus::decode(st.details()).expect("google.rpc.Status details")
}

#[tokio::test]
async fn grpc_malformed_protobuf_answers_invalid_argument_not_internal() {
    let app = test_app_with(Config::default());
    let addr = serve_grpc(&app).await;
    // Field 1 with wire type 7, which does not exist.
    let garbage = [0x0f, 0xff, 0xff, 0xff];
    let st = raw_export(addr, &[], frame(0, 4, &garbage)).await;
    assert_eq!(st.code(), tonic::Code::InvalidArgument, "{st:?}");
    assert!(st.message().contains("decode"), "{}", st.message());
    assert_eq!(rpc_status(&st).code, tonic::Code::InvalidArgument as i32);
}

#[tokio::test]
async fn grpc_uncompressed_message_over_the_cap_answers_resource_exhausted_not_out_of_range() {
    let app = test_app_with(Config {
        max_body_bytes: 1024,
        ..Config::default()
    });
    let addr = serve_grpc(&app).await;
    let big = vec![0u8; 4096];
    let st = raw_export(addr, &[], frame(0, 4096, &big)).await;
    assert_eq!(st.code(), tonic::Code::ResourceExhausted, "{st:?}");
    // Without RetryInfo: OTLP exporters do not retry it (a retry cannot succeed).
    let details = rpc_status(&st);
    assert_eq!(details.code, tonic::Code::ResourceExhausted as i32);
    assert!(
        details
            .details
            .iter()
            .all(|d| d.type_url != traceway_server::otlp::status::RETRY_INFO_TYPE),
        "{details:?}"
    );
}

#[tokio::test]
async fn grpc_compressed_flag_without_grpc_encoding_answers_invalid_argument_not_internal() {
    let app = test_app_with(Config::default());
    let addr = serve_grpc(&app).await;
    let st = raw_export(addr, &[], frame(1, 3, b"abc")).await;
    assert_eq!(st.code(), tonic::Code::InvalidArgument, "{st:?}");
    assert!(st.message().contains("compressed-flag"), "{}", st.message());
    // A body that is not gzip although grpc-encoding says so: the client's fault too.
    let st = raw_export(addr, &[("grpc-encoding", "gzip")], frame(1, 3, b"abc")).await;
    assert_eq!(st.code(), tonic::Code::InvalidArgument, "{st:?}");
    // A flag that is neither 0 nor 1.
    let st = raw_export(addr, &[], frame(7, 3, b"abc")).await;
    assert_eq!(st.code(), tonic::Code::InvalidArgument, "{st:?}");
}

// ---------------------------------------------------------------------------------------
// 3.6: timeouts and the connection limit.
// ---------------------------------------------------------------------------------------

/// Sends `first`, then one byte of `trickle` every `every`, until the server closes the
/// connection or `trickle` runs out. Returns whether it closed, and what it answered.
async fn trickle(
    addr: SocketAddr,
    first: &[u8],
    trickle: &[u8],
    every: Duration,
) -> (bool, Vec<u8>) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        let _ = rd.read_to_end(&mut got).await;
        got
    });
    let mut closed = wr.write_all(first).await.is_err();
    for b in trickle {
        if closed || reader.is_finished() {
            closed = true;
            break;
        }
        closed = wr.write_all(&[*b]).await.is_err();
        tokio::time::sleep(every).await;
    }
    closed |= reader.is_finished();
    drop(wr);
    let got = reader.await.expect("reader");
    (closed, got)
}

#[tokio::test]
async fn http_client_trickling_its_headers_is_disconnected() {
    let app = test_app_with(config(500, 60_000, 100));
    let addr = serve_http(&app).await;
    // 600 bytes at 100 ms each: a minute of headers, far past the 500 ms allowed.
    let (closed, got) = trickle(
        addr,
        b"GET /healthz HTTP/1.1\r\nhost: t\r\nx-slow: ",
        &[b'a'; 600],
        Duration::from_millis(100),
    )
    .await;
    assert!(closed, "the server kept a trickling client");
    assert!(
        !got.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
}

#[tokio::test]
async fn grpc_client_trickling_its_preface_is_disconnected() {
    let app = test_app_with(config(500, 60_000, 100));
    let addr = serve_grpc(&app).await;
    // The 24-byte HTTP/2 preface at 2.5 s a byte: a minute, far past the 500 ms allowed.
    let (closed, _) = trickle(
        addr,
        b"",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        Duration::from_millis(2500),
    )
    .await;
    assert!(closed, "the server kept a trickling client");
}

/// Connects and sends nothing; true once the server closed the connection (an HTTP/2
/// server sends its SETTINGS first, so this reads to the end).
async fn silent_socket_is_closed(addr: SocketAddr) -> bool {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut got = Vec::new();
    tokio::time::timeout(PATIENCE, s.read_to_end(&mut got))
        .await
        .is_ok()
}

#[tokio::test]
async fn silent_sockets_are_closed_on_both_listeners() {
    let app = test_app_with(config(300, 60_000, 100));
    let http = serve_http(&app).await;
    let grpc = serve_grpc(&app).await;
    assert!(
        silent_socket_is_closed(http).await,
        "HTTP kept a silent socket"
    );
    assert!(
        silent_socket_is_closed(grpc).await,
        "gRPC kept a silent socket"
    );
}

/// Reads one HTTP/1.1 response (headers and a `content-length` body).
async fn read_response(s: &mut TcpStream) -> (u16, Value) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.expect("read");
        assert!(
            n > 0,
            "closed before a response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let status: u16 = head[9..12].parse().expect("status");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().expect("length"));
        while buf.len() < end + 4 + len {
            let n = s.read(&mut chunk).await.expect("read");
            assert!(n > 0, "closed in the body");
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = &buf[end + 4..end + 4 + len];
        return (status, serde_json::from_slice(body).unwrap_or(Value::Null));
    }
}

async fn healthz(s: &mut TcpStream) -> (u16, Value) {
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .expect("write");
    read_response(s).await
}

#[tokio::test]
async fn http_idle_keep_alive_connection_is_closed() {
    let app = test_app_with(config(300, 300, 100));
    let addr = serve_http(&app).await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    assert_eq!(healthz(&mut s).await, (200, json!({"status": "ok"})));
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(PATIENCE, s.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "an idle keep-alive connection stayed open");
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
}

#[tokio::test]
async fn grpc_idle_connection_is_closed_and_the_client_reconnects() {
    let app = test_app_with(config(5_000, 300, 100));
    let addr = serve_grpc(&app).await;
    let export = || {
        let path = format!(
            "{}/../traceway-core/tests/fixtures/otlp/genai_agent.json",
            env!("CARGO_MANIFEST_DIR")
        );
        decode_export_request(&std::fs::read(path).expect("fixture"), Encoding::Json)
            .expect("valid")
    };
    let mut client = TraceServiceClient::new(channel(addr).await);
    client.export(export()).await.expect("export");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while app.metrics.grpc_connections.get() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "an idle gRPC connection stayed open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The server said GOAWAY; the channel connects again for the next export.
    client
        .export(export())
        .await
        .expect("export after the close");
}

#[tokio::test]
async fn a_long_poll_longer_than_the_idle_timeout_is_not_cut() {
    let app = test_app_with(config(300, 300, 100));
    let addr = serve_http(&app).await;
    let (_, t) = app
        .call(
            Method::POST,
            "/api/v1/traces",
            Some(json!({"name": "slow"})),
        )
        .await;
    let id = t["trace_id"].as_str().expect("id");
    let mut s = TcpStream::connect(addr).await.expect("connect");
    // The trace does not end, so the read waits the whole 2 s, nothing moving meanwhile.
    s.write_all(format!("GET /api/v1/traces/{id}?wait=2s HTTP/1.1\r\nhost: t\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let (status, body) = read_response(&mut s).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["trace"]["state"], "RECEIVED");
}

#[tokio::test]
async fn past_the_connection_limit_held_connections_answer_and_a_waiting_one_is_served_after_another_closes(
) {
    let app = test_app_with(config(60_000, 60_000, 2));
    let addr = serve_http(&app).await;
    let mut first = TcpStream::connect(addr).await.expect("connect");
    let mut second = TcpStream::connect(addr).await.expect("connect");
    assert_eq!(healthz(&mut first).await.0, 200);
    assert_eq!(healthz(&mut second).await.0, 200);
    // The third completes TCP (the kernel's backlog) but is not accepted.
    let mut third = TcpStream::connect(addr).await.expect("connect");
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .expect("write");
    assert_eq!(app.metrics.http_connections.get(), 2);
    // The connections held keep being served.
    assert_eq!(healthz(&mut first).await, (200, json!({"status": "ok"})));
    let mut buf = [0u8; 16];
    assert!(
        matches!(third.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the third connection was served past the limit"
    );
    // One closes: the waiting one is accepted and answered.
    drop(second);
    let answered = tokio::time::timeout(PATIENCE, read_response(&mut third)).await;
    assert_eq!(
        answered.expect("served once a connection closed"),
        (200, json!({"status": "ok"}))
    );
    assert_eq!(healthz(&mut first).await.0, 200);
}

// ---------------------------------------------------------------------------------------
// 3.9: 414, 431 and an early 413 answer with the JSON error.
// ---------------------------------------------------------------------------------------

async fn raw_request(addr: SocketAddr, head: &[u8]) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(head).await.expect("write");
    tokio::time::timeout(PATIENCE, read_response(&mut s))
        .await
        .expect("an answer before the body is sent")
}

#[tokio::test]
async fn uri_over_the_limit_is_414_with_the_json_error() {
    let app = test_app_with(Config::default());
    let addr = serve_http(&app).await;
    let long = "a".repeat(traceway_server::limits::MAX_URI_BYTES + 1);
    let (status, body) = raw_request(
        addr,
        format!("GET /api/v1/traces?agent_id={long} HTTP/1.1\r\nhost: t\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status, 414);
    assert_eq!(body["error"]["code"], "uri_too_long", "{body}");
    assert!(body["error"]["message"].as_str().is_some(), "{body}");
}

#[tokio::test]
async fn headers_over_the_limit_are_431_with_the_json_error() {
    let app = test_app_with(Config::default());
    let addr = serve_http(&app).await;
    let mut many = String::from("GET /healthz HTTP/1.1\r\nhost: t\r\n");
    for i in 0..=traceway_server::limits::MAX_HEADERS {
        many.push_str(&format!("x-h{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let (status, body) = raw_request(addr, many.as_bytes()).await;
    assert_eq!(status, 431);
    assert_eq!(body["error"]["code"], "headers_too_large", "{body}");

    let big = format!(
        "GET /healthz HTTP/1.1\r\nhost: t\r\nx-big: {}\r\n\r\n",
        "b".repeat(traceway_server::limits::MAX_HEADER_BYTES + 1)
    );
    let (status, body) = raw_request(addr, big.as_bytes()).await;
    assert_eq!(status, 431);
    assert_eq!(body["error"]["code"], "headers_too_large", "{body}");
}

#[tokio::test]
async fn content_length_over_the_cap_is_413_before_the_body_is_sent() {
    let app = test_app_with(Config {
        max_body_bytes: 1024,
        ..Config::default()
    });
    let addr = serve_http(&app).await;
    // Headers only: the body is never sent, so only a refusal before reading it answers.
    let (status, body) = raw_request(
        addr,
        b"POST /api/v1/traces HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n\
          content-length: 1000000\r\n\r\n",
    )
    .await;
    assert_eq!(status, 413);
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");

    // OTLP/HTTP answers with its google.rpc.Status, in the request's encoding.
    let (status, body) = raw_request(
        addr,
        b"POST /v1/traces HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n\
          content-length: 1000000\r\n\r\n",
    )
    .await;
    assert_eq!(status, 413);
    assert_eq!(
        body["code"],
        tonic::Code::ResourceExhausted as i32,
        "{body}"
    );
    let (status, _) = app.call(Method::GET, "/api/v1/traces", None).await;
    assert_eq!(status, StatusCode::OK);
}

/// Sends `bytes` (a writer that ignores the server closing on it) and reads what comes
/// back until the server closes: the status and JSON body of the one answer.
async fn exchange_to_close(addr: SocketAddr, bytes: Vec<u8>) -> (u16, Value) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&bytes).await;
        wr
    });
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = tokio::time::timeout(PATIENCE, async {
        loop {
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    });
    assert!(read.await.is_ok(), "the server never closed");
    drop(writer.await);
    let text = String::from_utf8_lossy(&got).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{text:?}"));
    let status = head[9..12].parse().expect("status");
    let len: usize = head
        .to_ascii_lowercase()
        .lines()
        .find_map(|l| {
            l.strip_prefix("content-length:")
                .map(|v| v.trim().parse().expect("len"))
        })
        .expect("a content-length");
    assert_eq!(body.len(), len, "{text:?}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn uri_over_the_parsers_64_kib_is_414_with_the_json_error() {
    let app = test_app_with(Config::default());
    let addr = serve_http(&app).await;
    let long = "a".repeat(traceway_server::transport::HYPER_MAX_URI_BYTES + 1);
    let (status, body) = exchange_to_close(
        addr,
        format!("GET /api/v1/traces?agent_id={long} HTTP/1.1\r\nhost: t\r\n\r\n").into_bytes(),
    )
    .await;
    assert_eq!(status, 414);
    assert_eq!(body["error"]["code"], "uri_too_long", "{body}");
    assert!(body["error"]["message"].as_str().is_some(), "{body}");
}

#[tokio::test]
async fn header_block_over_the_parsers_buffer_is_431_with_the_json_error() {
    let app = test_app_with(Config::default());
    let addr = serve_http(&app).await;
    // Fewer fields than the middleware's limit, together well past hyper's read buffer,
    // so hyper refuses the head before it is complete.
    let mut head = String::from("GET /healthz HTTP/1.1\r\nhost: t\r\n");
    let value = "v".repeat(8192);
    for i in 0..traceway_server::limits::MAX_HEADERS - 10 {
        head.push_str(&format!("x-h{i}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let (status, body) = exchange_to_close(addr, head.into_bytes()).await;
    assert_eq!(status, 431);
    assert_eq!(body["error"]["code"], "headers_too_large", "{body}");
}

#[tokio::test]
async fn more_header_fields_than_the_parser_holds_is_431_with_the_json_error() {
    let app = test_app_with(Config::default());
    let addr = serve_http(&app).await;
    let mut head = String::from("GET /healthz HTTP/1.1\r\nhost: t\r\n");
    for i in 0..=traceway_server::transport::HYPER_MAX_HEADERS {
        head.push_str(&format!("x-h{i}: v\r\n"));
    }
    head.push_str("\r\n");
    let (status, body) = exchange_to_close(addr, head.into_bytes()).await;
    assert_eq!(status, 431);
    assert_eq!(body["error"]["code"], "headers_too_large", "{body}");
}

#[tokio::test]
async fn malformed_request_head_is_400_with_the_json_error() {
    let app = test_app_with(Config::default());
    let addr = serve_http(&app).await;
    let (status, body) = exchange_to_close(
        addr,
        b"GET /healthz HTTP/1.1\r\nhost: t\r\nno colon here\r\n\r\n".to_vec(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "bad_request", "{body}");
    // The server still answers the next connection.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    assert_eq!(healthz(&mut s).await, (200, json!({"status": "ok"})));
}

// ---------------------------------------------------------------------------------------
// 3.6 over HTTP/2: trickled header blocks, PING-only connections, many held sockets.
// ---------------------------------------------------------------------------------------

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The client preface and an empty SETTINGS frame.
fn h2_open() -> Vec<u8> {
    let mut b = H2_PREFACE.to_vec();
    b.extend(h2_frame(0x4, 0, 0, &[]));
    b
}

/// A complete HEADERS frame (END_STREAM | END_HEADERS) for `GET /healthz` on `stream`,
/// HPACK without Huffman or indexing, with an `x-slow` field of `pad` bytes.
fn h2_get_healthz(stream: u32, pad: usize) -> Vec<u8> {
    assert!(pad < 127);
    let mut block = vec![0x82, 0x86, 0x04, 8];
    block.extend_from_slice(b"/healthz");
    block.extend_from_slice(&[0x01, 1, b't', 0x00, 6]);
    block.extend_from_slice(b"x-slow");
    block.push(pad as u8);
    block.extend(std::iter::repeat_n(b'a', pad));
    h2_frame(0x1, 0x5, stream, &block)
}

#[tokio::test]
async fn h2c_client_trickling_its_first_header_block_is_disconnected() {
    let app = test_app_with(config(500, 60_000, 100));
    let http = serve_http(&app).await;
    let grpc = serve_grpc(&app).await;
    for addr in [http, grpc] {
        // The preface and SETTINGS at once, then a header block at 400 ms a byte: ~55 s.
        let (closed, _) = trickle(
            addr,
            &h2_open(),
            &h2_get_healthz(1, 120),
            Duration::from_millis(400),
        )
        .await;
        assert!(closed, "{addr} kept a client trickling its header block");
    }
}

#[tokio::test]
async fn h2c_client_trickling_a_header_block_after_a_request_is_disconnected() {
    let app = test_app_with(config(500, 500, 100));
    let http = serve_http(&app).await;
    let grpc = serve_grpc(&app).await;
    for addr in [http, grpc] {
        // One request answered, then the next header block at 400 ms a byte: each byte
        // arrives well within the idle timeout, but no request ever begins.
        let mut first = h2_open();
        first.extend(h2_get_healthz(1, 0));
        let (closed, _) = trickle(
            addr,
            &first,
            &h2_get_healthz(3, 120),
            Duration::from_millis(400),
        )
        .await;
        assert!(
            closed,
            "{addr} kept a client trickling its second header block"
        );
    }
}

#[tokio::test]
async fn h2c_connection_kept_up_only_by_pings_is_closed_when_idle() {
    let app = test_app_with(config(500, 500, 100));
    let http = serve_http(&app).await;
    let grpc = serve_grpc(&app).await;
    let pings: Vec<u8> = (0..300u64)
        .flat_map(|i| h2_frame(0x6, 0, 0, &i.to_be_bytes()))
        .collect();
    for addr in [http, grpc] {
        let mut first = h2_open();
        first.extend(h2_get_healthz(1, 0));
        // A PING every ~170 ms (17 bytes at 10 ms a byte) for ~50 s.
        let (closed, _) = trickle(addr, &first, &pings, Duration::from_millis(10)).await;
        assert!(closed, "{addr} kept a connection that only sends PINGs");
    }
}

#[tokio::test]
async fn healthz_answers_while_1100_trickling_h2_sockets_are_held_on_each_listener_and_all_are_closed(
) {
    const HELD: usize = 1_100;
    // What the server does at start (its soft limit raised to the hard one); this process
    // holds both ends of every socket.
    let limit = rlimit::increase_nofile_limit(u64::MAX).expect("descriptor limit");
    assert!(
        limit >= (4 * HELD + 500) as u64,
        "the hard descriptor limit ({limit}) is too low for this test"
    );
    // Long enough to hold them all while /healthz is asked; closed by the timer after.
    let app = test_app_with(config(30_000, 60_000, 10_000));
    let http = serve_http(&app).await;
    let grpc = serve_grpc(&app).await;
    // The preface, SETTINGS and the first bytes of a header block, then nothing.
    let mut partial = h2_open();
    partial.extend_from_slice(&h2_get_healthz(1, 120)[..20]);
    let mut held = Vec::new();
    for addr in [http, grpc] {
        for _ in 0..HELD {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.write_all(&partial).await.expect("write");
            held.push(s);
        }
    }
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while app.metrics.http_connections.get() < HELD as i64
        || app.metrics.grpc_connections.get() < HELD as i64
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "held: http {}, grpc {}",
            app.metrics.http_connections.get(),
            app.metrics.grpc_connections.get()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut s = TcpStream::connect(http).await.expect("connect");
    assert_eq!(healthz(&mut s).await, (200, json!({"status": "ok"})));
    drop(s);
    // Every held socket is closed by the server (read to its end).
    let closes = held.into_iter().map(|mut s| async move {
        let mut sink = Vec::new();
        tokio::time::timeout(PATIENCE * 2, s.read_to_end(&mut sink))
            .await
            .is_ok()
    });
    let closed = futures::future::join_all(closes).await;
    assert!(
        closed.iter().all(|c| *c),
        "{} of {} sockets stayed open",
        closed.iter().filter(|c| !**c).count(),
        closed.len()
    );
}

// ---------------------------------------------------------------------------------------
// Trickled request bodies: the body read timeout, on HTTP/1.1, HTTP/2 and gRPC.
// ---------------------------------------------------------------------------------------

/// A server whose bodies must arrive within 1 s; the other bounds are far off.
fn body_timeout_config() -> Config {
    let mut c = config(60_000, 60_000, 100);
    c.conn_limits.body_read_timeout = Duration::from_secs(1);
    c
}

/// The status and JSON body of one HTTP/1.1 response in `got`.
fn parse_response(got: &[u8]) -> (u16, String, Value) {
    let text = String::from_utf8_lossy(got).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no response: {text:?}"));
    let status = head[9..12].parse().expect("status");
    (
        status,
        head.to_ascii_lowercase(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn http1_client_trickling_its_body_is_answered_408_and_disconnected() {
    let app = test_app_with(body_timeout_config());
    let addr = serve_http(&app).await;
    for (path, content_type) in [
        ("/api/v1/traces", "application/json"),
        ("/v1/traces", "application/json"),
    ] {
        // 1,000 bytes announced, then a byte every 300 ms: five minutes of body, far past
        // the second allowed. Before the timeout, the server waited for all of it.
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: t\r\ncontent-type: {content_type}\r\n\
             content-length: 1000\r\n\r\n{{"
        );
        let (closed, got) = trickle(
            addr,
            head.as_bytes(),
            &[b' '; 1000],
            Duration::from_millis(300),
        )
        .await;
        assert!(closed, "{path}: the server kept a trickling body");
        let (status, head, body) = parse_response(&got);
        assert_eq!(status, 408, "{path}: {head} {body}");
        assert!(head.contains("connection: close"), "{path}: {head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        if path.starts_with("/v1/") {
            // OTLP/HTTP answers with its google.rpc.Status, as for every refusal.
            assert_eq!(body["code"], tonic::Code::DeadlineExceeded as i32, "{body}");
            assert!(body["message"].as_str().is_some(), "{body}");
        } else {
            assert_eq!(body["error"]["code"], "request_timeout", "{body}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("body")),
                "{body}"
            );
        }
    }
    // The server still answers.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    assert_eq!(healthz(&mut s).await, (200, json!({"status": "ok"})));
}

/// A request body that sends `first`, then one byte of `rest` every `every`.
fn trickled_body(first: Bytes, rest: usize, every: Duration) -> tonic::body::Body {
    use futures::StreamExt as _;
    let bytes = futures::stream::once(async move { first }).chain(futures::stream::unfold(
        0usize,
        move |sent| async move {
            if sent == rest {
                return None;
            }
            tokio::time::sleep(every).await;
            Some((Bytes::from_static(b" "), sent + 1))
        },
    ));
    let frames = bytes.map(|b| Ok::<_, std::convert::Infallible>(http_body::Frame::data(b)));
    tonic::body::Body::new(http_body_util::StreamBody::new(frames))
}

#[tokio::test]
async fn h2c_client_trickling_its_body_is_answered_408() {
    let app = test_app_with(body_timeout_config());
    let addr = serve_http(&app).await;
    // tonic's channel is a plain HTTP/2 (prior knowledge) client.
    let req = axum::http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}/api/v1/traces"))
        .header("content-type", "application/json")
        .body(trickled_body(
            Bytes::from_static(b"{"),
            1000,
            Duration::from_millis(300),
        ))
        .expect("request");
    let resp = tokio::time::timeout(PATIENCE, channel(addr).await.oneshot(req))
        .await
        .expect("an answer while the body is still trickling")
        .expect("answered");
    assert_eq!(resp.status(), StatusCode::REQUEST_TIMEOUT);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let body: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(body["error"]["code"], "request_timeout", "{body}");
}

#[tokio::test]
async fn grpc_client_trickling_its_message_is_answered_deadline_exceeded() {
    let app = test_app_with(body_timeout_config());
    let addr = serve_grpc(&app).await;
    // A frame that announces 1,000 bytes, then a byte every 300 ms.
    let req = axum::http::Request::builder()
        .method("POST")
        .uri(format!(
            "http://{addr}/opentelemetry.proto.collector.trace.v1.TraceService/Export"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(trickled_body(
            frame(0, 1000, b""),
            1000,
            Duration::from_millis(300),
        ))
        .expect("request");
    let resp = tokio::time::timeout(PATIENCE, channel(addr).await.oneshot(req))
        .await
        .expect("an answer while the message is still trickling")
        .expect("answered");
    let st = match tonic::Status::from_header_map(resp.headers()) {
        Some(st) => st,
        None => {
            let collected = resp.into_body().collect().await.expect("body");
            let trailers = collected.trailers().cloned().expect("trailers");
            tonic::Status::from_header_map(&trailers).expect("a grpc-status")
        }
    };
    assert_eq!(st.code(), tonic::Code::DeadlineExceeded, "{st:?}");
    assert!(st.message().contains("body"), "{}", st.message());
    assert_eq!(rpc_status(&st).code, tonic::Code::DeadlineExceeded as i32);
}
