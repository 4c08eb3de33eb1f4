//! Live streaming over real HTTP on loopback: replay then live, exact resume, fan-out to
//! many subscribers, release on disconnect, formats, long-poll, `traceway tail`.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use traceway_server::Config;

use crate::sse::{read_until, seq, tool};
use crate::{Backend, TestApp};

/// A test app served on 127.0.0.1 (port 0), with short stream timings.
struct Live {
    app: TestApp,
    base: String,
    http: reqwest::Client,
}

async fn live(backend: Backend) -> Live {
    serve(
        backend,
        Config {
            stream_grace: Duration::from_millis(300),
            sse_keepalive: Duration::from_millis(500),
            max_wait: Duration::from_secs(3),
            ..Config::default()
        },
    )
    .await
}

/// The app of `config` served on 127.0.0.1 (port 0).
async fn serve(backend: Backend, config: Config) -> Live {
    let app = backend.app_with(config).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let router = app.router.clone();
    tokio::spawn(async move { axum::serve(listener, router).await });
    Live {
        app,
        base,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client"),
    }
}

impl Live {
    async fn create(&self) -> String {
        let r = self
            .http
            .post(format!("{}/api/v1/traces", self.base))
            .json(&json!({"name": "live"}))
            .send()
            .await
            .expect("create");
        assert_eq!(r.status(), 201);
        r.json::<Value>().await.expect("json")["trace_id"]
            .as_str()
            .expect("id")
            .to_string()
    }

    async fn append(&self, id: &str, events: Value) -> Value {
        let r = self
            .http
            .post(format!("{}/api/v1/traces/{id}/events", self.base))
            .json(&json!({"events": events}))
            .send()
            .await
            .expect("append");
        assert_eq!(r.status(), 200);
        r.json().await.expect("json")
    }

    async fn complete(&self, id: &str) {
        let r = self
            .http
            .patch(format!("{}/api/v1/traces/{id}", self.base))
            .json(&json!({"state": "COMPLETED"}))
            .send()
            .await
            .expect("patch");
        assert_eq!(r.status(), 200);
    }

    async fn open(&self, path: &str, last_event_id: Option<u64>) -> reqwest::Response {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        req.send().await.expect("stream")
    }
}

on_both! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_events_replay_then_live_ones_follow_in_order(backend: Backend) {
    let l = live(backend).await;
    let id = l.create().await;
    l.append(&id, json!([tool(1), tool(2)])).await; // seqs 2 (RUNNING), 3, 4
    let mut resp = l.open(&format!("/api/v1/traces/{id}/stream"), None).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let replay = read_until(&mut resp, |m| seq(m) == 4).await;
    assert_eq!(replay.iter().map(seq).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    assert_eq!(replay[0].event.as_deref(), Some("trace_started"));
    let e: Value = serde_json::from_str(&replay[2].data).expect("json data");
    assert_eq!(
        (e["type"].as_str(), e["payload"]["name"].as_str()),
        (Some("span_ended"), Some("t1"))
    );

    // A step reported when it starts shows at once, then fills in when it ends.
    l.append(&id, json!([{"type": "span_started", "span": {"span_id": "00000000000000aa", "kind": "llm", "name": "chat"}}])).await;
    let started = read_until(&mut resp, |m| seq(m) == 5).await;
    let e: Value = serde_json::from_str(&started[0].data).expect("json");
    assert_eq!(started[0].event.as_deref(), Some("span_started"));
    assert!(e["payload"].get("end_time").is_none(), "running: {e}");
    l.append(&id, json!([{"type": "span_ended", "span": {"span_id": "00000000000000aa", "llm": {"output_tokens": 7}}}])).await;
    l.complete(&id).await;
    let t0 = Instant::now();
    let rest = read_until(&mut resp, |_| false).await; // until the server closes it
    assert_eq!(rest.iter().map(seq).collect::<Vec<_>>(), vec![6, 7, 8]);
    assert_eq!(
        rest.last().and_then(|m| m.event.as_deref()),
        Some("trace_ended")
    );
    let e: Value = serde_json::from_str(&rest[0].data).expect("json");
    assert_eq!(e["payload"]["llm"]["output_tokens"], 7);
    let closed_after = t0.elapsed();
    assert!(
        closed_after >= Duration::from_millis(250),
        "closed after the grace, not at once: {closed_after:?}"
    );
}
}

on_both! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_or_foreign_traces_are_404_before_the_stream_starts(backend: Backend) {
    let l = live(backend).await;
    let id = l.create().await;
    let r = l
        .open(
            &format!("/api/v1/traces/{}/stream", traceway_core::TraceId::new_v7()),
            None,
        )
        .await;
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"]["code"],
        "not_found"
    );
    let r = l
        .http
        .get(format!("{}/api/v1/traces/{id}/stream", l.base))
        .header("x-traceway-tenant", "other")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 404);
    let r = l.open(&format!("/api/v1/traces/{id}/stream"), None).await;
    assert_eq!(r.status(), 200);
    drop(r);
    let r = l
        .http
        .get(format!("{}/api/v1/traces/{id}/stream", l.base))
        .header("last-event-id", "x")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
}
}

on_both! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_with_last_event_id_misses_nothing_and_repeats_nothing_under_concurrent_writers(backend: Backend) {
    let l = live(backend).await;
    let id = l.create().await;
    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let (http, base, id) = (l.http.clone(), l.base.clone(), id.clone());
            tokio::spawn(async move {
                for b in 0..50u64 {
                    let events: Vec<Value> =
                        (0..3).map(|i| tool(1 + w * 100_000 + b * 10 + i)).collect();
                    let r = http
                        .post(format!("{base}/api/v1/traces/{id}/events"))
                        .json(&json!({"events": events}))
                        .send()
                        .await
                        .expect("append");
                    assert_eq!(r.status(), 200);
                }
            })
        })
        .collect();
    // Reconnect after every few events while the writers run.
    let mut seen: Vec<u64> = Vec::new();
    let mut reconnects = 0;
    let total = 2 + 4 * 50 * 3; // trace_started, RUNNING, 3 per batch
    while (seen.len() as u64) < total {
        reconnects += 1;
        let mut resp = l
            .open(&format!("/api/v1/traces/{id}/stream"), seen.last().copied())
            .await;
        assert_eq!(resp.status(), 200);
        let want = 5 + reconnects % 23;
        let mut n = 0;
        let got = read_until(&mut resp, |_| {
            n += 1;
            n >= want || (seen.len() + n) as u64 >= total
        })
        .await;
        seen.extend(got.iter().map(seq));
    }
    for w in writers {
        w.await.expect("writer");
    }
    assert_eq!(
        seen,
        (1..=total).collect::<Vec<_>>(),
        "after {reconnects} reconnects"
    );
    assert!(reconnects > 10);
}
}

on_both! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_subscribers_all_receive_every_event_and_are_released_on_disconnect(backend: Backend) {
    let l = live(backend).await;
    let id = l.create().await;
    let mut streams = Vec::new();
    for _ in 0..1000 {
        let r = l.open(&format!("/api/v1/traces/{id}/stream"), None).await;
        assert_eq!(r.status(), 200);
        streams.push(r);
    }
    // Every subscription is registered before the handler answers.
    assert_eq!(l.app.store.subscriber_count(), 1000);
    for b in 0..10u64 {
        l.append(&id, json!([tool(b * 2 + 1), tool(b * 2 + 2)]))
            .await;
    }
    let total = 2 + 20;
    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut r| {
            tokio::spawn(async move {
                read_until(&mut r, |m| seq(m) == total)
                    .await
                    .iter()
                    .map(seq)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for r in readers {
        assert_eq!(r.await.expect("reader"), (1..=total).collect::<Vec<_>>());
    }
    // The readers dropped their connections: the server releases every subscription.
    let deadline = Instant::now() + Duration::from_secs(10);
    while l.app.store.subscriber_count() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} subscribers still held",
            l.app.store.subscriber_count()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
}

on_both! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_format_is_one_line_per_step_and_level_lowers_detail(backend: Backend) {
    let l = live(backend).await;
    let id = l.create().await;
    l.append(&id, json!([{"type": "span_ended", "span": {"span_id": "00000000000000aa", "kind": "llm", "name": "answer",
        "start_time": "2026-01-01T00:00:00Z", "end_time": "2026-01-01T00:00:01.2Z", "status": {"code": "ok"},
        "llm": {"model": "gpt-4o-mini", "input_tokens": 400, "output_tokens": 70, "input_messages": [{"role": "user", "content": "secret prompt"}]}}}])).await;
    let mut r = l
        .open(
            &format!("/api/v1/traces/{id}/stream?format=streaming"),
            None,
        )
        .await;
    let got = read_until(&mut r, |m| seq(m) == 3).await;
    assert_eq!(
        got[2].data,
        "#3 span_ended llm answer model=gpt-4o-mini tokens=470 1.20s ok"
    );
    let mut r = l
        .open(&format!("/api/v1/traces/{id}/stream?level=standard"), None)
        .await;
    let got = read_until(&mut r, |m| seq(m) == 3).await;
    assert!(!got[2].data.contains("secret prompt"), "{}", got[2].data);
    assert!(
        got[2].data.contains("\"output_tokens\":70"),
        "{}",
        got[2].data
    );
    let r = l
        .open(&format!("/api/v1/traces/{id}/stream?format=xml"), None)
        .await;
    assert_eq!(r.status(), 400);
}
}

on_both! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_stream_carries_trace_level_events_or_all_with_filters(backend: Backend) {
    let l = live(backend).await;
    let mut levels = l.open("/api/v1/stream", None).await;
    let mut all = l
        .open("/api/v1/stream?all=true&format=streaming", None)
        .await;
    let mut other_agent = l.open("/api/v1/stream?agent_id=nobody", None).await;
    let id = l.create().await;
    l.append(&id, json!([tool(1)])).await;
    l.complete(&id).await;
    let got = read_until(&mut levels, |m| m.event.as_deref() == Some("trace_ended")).await;
    let kinds: Vec<_> = got.iter().filter_map(|m| m.event.clone()).collect();
    assert_eq!(
        kinds,
        vec![
            "trace_started",
            "state_changed",
            "state_changed",
            "trace_ended"
        ]
    );
    assert_eq!(got[0].id.as_deref(), Some(format!("{id}:1").as_str()));
    let got = read_until(&mut all, |m| m.event.as_deref() == Some("trace_ended")).await;
    assert!(
        got.iter()
            .any(|m| m.data.starts_with("#3 span_ended tool t1")),
        "{got:?}"
    );
    // Nothing for another agent: the stream only carries keep-alives.
    let quiet = tokio::time::timeout(
        Duration::from_millis(800),
        read_until(&mut other_agent, |_| true),
    )
    .await;
    assert!(
        quiet.is_err(),
        "events leaked to a filtered stream: {quiet:?}"
    );
}
}

on_both! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_answers_when_the_trace_ends_or_when_the_wait_is_over(backend: Backend) {
    let l = live(backend).await;
    let id = l.create().await;
    let (http, base, id2) = (l.http.clone(), l.base.clone(), id.clone());
    let finisher = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        http.patch(format!("{base}/api/v1/traces/{id2}"))
            .json(&json!({"state": "COMPLETED"}))
            .send()
            .await
            .expect("patch");
    });
    // It answers when the trace ends, not when its wait (capped at 3 s) is over: a
    // long-poll on a trace that stays running, sent at the same time with a 2 s wait,
    // answers after it. An order, not a deadline.
    let other = l.create().await;
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (http, base, o) = (l.http.clone(), l.base.clone(), order.clone());
    let control = tokio::spawn(async move {
        http.get(format!("{base}/api/v1/traces/{other}?wait=2s"))
            .send()
            .await
            .expect("get");
        o.lock().unwrap().push("running");
    });
    let t0 = Instant::now();
    let r = l
        .http
        .get(format!("{}/api/v1/traces/{id}?wait=10s", l.base))
        .send()
        .await
        .expect("get");
    order.lock().unwrap().push("ended");
    let v: Value = r.json().await.expect("json");
    let took = t0.elapsed();
    assert_eq!(v["trace"]["state"], "COMPLETED");
    assert!(took >= Duration::from_millis(350), "it waited: {took:?}");
    finisher.await.expect("finisher");
    control.await.expect("control");
    assert_eq!(*order.lock().unwrap(), ["ended", "running"]);

    let running = l.create().await;
    let t0 = Instant::now();
    let v: Value = l
        .http
        .get(format!("{}/api/v1/traces/{running}?wait=300ms", l.base))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(v["trace"]["state"], "RECEIVED");
    assert!(t0.elapsed() >= Duration::from_millis(280));
    // Capped by --max-wait (3 s here): it answers, rather than after an hour (the
    // deadline only stops a hang).
    let t0 = Instant::now();
    tokio::time::timeout(
        Duration::from_secs(120),
        l.http
            .get(format!("{}/api/v1/traces/{running}?wait=1h", l.base))
            .send(),
    )
    .await
    .expect("the wait is capped, not an hour")
    .expect("get");
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(2900), "{took:?}");
    let r = l
        .http
        .get(format!("{}/api/v1/traces/{running}?wait=soon", l.base))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 400);
}
}

on_both! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_shutdown_ends_live_streams(backend: Backend) {
    let l = live(backend).await;
    let id = l.create().await;
    let mut r = l.open(&format!("/api/v1/traces/{id}/stream"), None).await;
    read_until(&mut r, |m| seq(m) == 1).await;
    l.app.stop.send(true).expect("signal");
    let rest = tokio::time::timeout(Duration::from_secs(5), read_until(&mut r, |_| false))
        .await
        .expect("stream ended");
    assert!(rest.is_empty());
}
}

on_both! {
/// 3.9: the tenant stream's `lagged` event carried no resume point. It now names, for the
/// trace it could not deliver (and every trace it sent), the seq to resume after, and
/// reading from there gives exactly the events the stream missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_tenant_stream_says_where_to_resume_and_resuming_there_is_exact(backend: Backend) {
    use axum::body::Body;
    use axum::http::{Method, Request};
    use tower::ServiceExt;

    let app = backend.app().await;
    // The body is not read until the writes are done: the connection's buffer, then the
    // hub's (1,024 events), fill up and the hub drops the subscriber.
    let resp = app
        .router
        .clone()
        .oneshot(Request::get("/api/v1/stream").body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let (status, t) = app
        .call(Method::POST, "/api/v1/traces", Some(json!({"name": "flood"})))
        .await;
    assert_eq!(status, 201, "{t}");
    let id = t["trace_id"].as_str().expect("id").to_string();
    for batch in 0..4 {
        let errors: Vec<Value> = (0..500)
            .map(|i| json!({"type": "error", "message": format!("e{batch}-{i}")}))
            .collect();
        let (status, b) = app
            .call(
                Method::POST,
                &format!("/api/v1/traces/{id}/events"),
                Some(json!({"events": errors})),
            )
            .await;
        assert_eq!(status, 200, "{b}");
    }
    let bytes = tokio::time::timeout(
        Duration::from_secs(60),
        axum::body::to_bytes(resp.into_body(), 64 << 20),
    )
    .await
    .expect("the lagged stream ends")
    .expect("body");
    let msgs = crate::sse::TestSseReader::default().push(&bytes);
    let lagged = msgs
        .iter()
        .find(|m| m.event.as_deref() == Some("lagged"))
        .expect("a lagged event");
    let lag: Value = serde_json::from_str(&lagged.data).expect("json");
    assert_eq!(lag["trace_id"], id.as_str(), "{lag}");
    let after = lag["resume_after_seq"].as_u64().expect("resume_after_seq");
    assert_eq!(lag["resume"], json!([{"trace_id": id, "after_seq": after}]));
    assert_eq!(lag["resume_complete"], true);
    let sent: Vec<u64> = msgs
        .iter()
        .filter(|m| m.event.as_deref() == Some("error"))
        .map(|m| {
            let (t, s) = m.id.as_deref().expect("id").split_once(':').expect("trace:seq");
            assert_eq!(t, id);
            s.parse().expect("seq")
        })
        .collect();
    assert!(sent.len() < 2000, "the stream lagged");
    assert!(sent.iter().all(|s| *s <= after), "nothing after the resume point was sent");
    let (status, rest) = app
        .call(
            Method::GET,
            &format!("/api/v1/traces/{id}/events?type=error&after_seq={after}&limit=10000"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{rest}");
    let mut all: Vec<u64> = sent.clone();
    all.extend(
        rest["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["seq"].as_u64().expect("seq")),
    );
    let (_, every) = app
        .call(
            Method::GET,
            &format!("/api/v1/traces/{id}/events?type=error&limit=10000"),
            None,
        )
        .await;
    let every: Vec<u64> = every["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(every.len(), 2000);
    assert_eq!(all, every, "sent then resumed: every error once, in order");
}
}

on_both! {
/// Live streams per tenant (ADR 025): past the quota a stream is refused with 429 and
/// `Retry-After`; another tenant is not affected, and a closed stream gives its slot back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_streams_past_the_tenant_quota_are_refused_with_retry_after_until_one_closes(backend: Backend) {
    use axum::body::Body;
    use axum::http::{header, Request, StatusCode};
    use tower::ServiceExt;

    let app = backend
        .app_with(Config {
            quota_live_streams: 2,
            ..Config::default()
        })
        .await;
    let (_, t) = app
        .call(axum::http::Method::POST, "/api/v1/traces", Some(json!({"name": "q"})))
        .await;
    let id = t["trace_id"].as_str().expect("id").to_string();
    let open = |tenant: &'static str, path: String| {
        let router = app.router.clone();
        async move {
            router
                .oneshot(
                    Request::get(path)
                        .header("x-traceway-tenant", tenant)
                        .body(Body::empty())
                        .expect("request"),
                )
                .await
                .expect("infallible")
        }
    };
    let first = open("default", "/api/v1/stream".into()).await;
    assert_eq!(first.status(), StatusCode::OK);
    let second = open("default", format!("/api/v1/traces/{id}/stream")).await;
    assert_eq!(second.status(), StatusCode::OK);
    for path in ["/api/v1/stream".to_string(), format!("/api/v1/traces/{id}/stream")] {
        let refused = open("default", path).await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(refused.headers().contains_key(header::RETRY_AFTER));
        let body = axum::body::to_bytes(refused.into_body(), 1 << 20).await.expect("body");
        let v: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["error"]["code"], "quota_exceeded", "{v}");
    }
    assert_eq!(open("other", "/api/v1/stream".into()).await.status(), StatusCode::OK);
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = open("default", "/api/v1/stream".into()).await;
        if r.status() == StatusCode::OK {
            break;
        }
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(Instant::now() < deadline, "the closed stream's slot never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(second);
}
}

/// The comment a stream ends with when it has been open `--stream-max-lifetime`.
const LIFETIME_END: &str =
    ": stream lifetime reached; reconnect (with Last-Event-ID to resume)\n\n";

/// A served app whose streams stay open `lifetime` at most.
async fn live_with_lifetime(backend: Backend, lifetime: Duration, streams: u32) -> Live {
    let config = Config {
        stream_grace: Duration::from_millis(300),
        sse_keepalive: Duration::from_millis(200),
        stream_max_lifetime: lifetime,
        quota_live_streams: streams,
        ..Config::default()
    };
    serve(backend, config).await
}

/// A whole stream response, until the server ends it: its events and its raw text (the
/// comments included). Fails if it is still open after 20 s (a deadline against a
/// stream that never ends, not a measure of speed: keep-alives would keep a per-read
/// timeout from firing).
async fn read_to_end(resp: &mut reqwest::Response) -> (Vec<crate::sse::SseMessage>, String) {
    let mut reader = crate::sse::TestSseReader::default();
    let (mut events, mut raw) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, resp.chunk())
            .await
            .expect("the stream was still open after 20 s");
        let Some(bytes) = chunk.expect("read") else {
            return (events, String::from_utf8(raw).expect("utf-8"));
        };
        raw.extend_from_slice(&bytes);
        events.extend(reader.push(&bytes));
    }
}

on_both! {
/// A trace's stream ends after `--stream-max-lifetime` with a last comment, while writers
/// append; reconnecting each time with the last id gets exactly the events after it, and
/// the stream that sees `trace_ended` closes after the grace, with no lifetime comment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_stream_ends_after_its_lifetime_and_resuming_with_the_last_id_is_exact(backend: Backend) {
    let l = live_with_lifetime(backend, Duration::from_millis(700), 0).await;
    let id = l.create().await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (http, base, id, stop) = (l.http.clone(), l.base.clone(), id.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let r = http
                    .post(format!("{base}/api/v1/traces/{id}/events"))
                    .json(&json!({"events": [tool(n)]}))
                    .send()
                    .await
                    .expect("append");
                assert_eq!(r.status(), 200);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            n
        })
    };
    let mut seen: Vec<u64> = Vec::new();
    let mut lifetime_ends = 0;
    while lifetime_ends < 3 {
        let mut resp = l
            .open(&format!("/api/v1/traces/{id}/stream"), seen.last().copied())
            .await;
        assert_eq!(resp.status(), 200);
        let (events, raw) = read_to_end(&mut resp).await;
        assert!(raw.ends_with(LIFETIME_END), "ended otherwise: {raw:?}");
        lifetime_ends += 1;
        seen.extend(events.iter().map(seq));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let tools = writer.await.expect("writer");
    l.complete(&id).await;
    let mut resp = l
        .open(&format!("/api/v1/traces/{id}/stream"), seen.last().copied())
        .await;
    let (events, raw) = read_to_end(&mut resp).await;
    assert!(!raw.contains(LIFETIME_END), "{raw:?}");
    assert_eq!(events.last().and_then(|m| m.event.as_deref()), Some("trace_ended"));
    seen.extend(events.iter().map(seq));
    // trace_started, RUNNING, one per tool, COMPLETED, trace_ended.
    let total = 2 + tools + 2;
    assert_eq!(seen, (1..=total).collect::<Vec<_>>());
}
}

on_both! {
/// The tenant stream ends after its lifetime too, with the same last comment, having
/// carried what committed while it was open; its slot of the live-stream quota is
/// released, so a reconnect is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_stream_ends_after_its_lifetime_and_frees_its_quota_slot(backend: Backend) {
    let l = live_with_lifetime(backend, Duration::from_millis(700), 1).await;
    let mut resp = l.open("/api/v1/stream", None).await;
    assert_eq!(resp.status(), 200);
    let id = l.create().await;
    let (events, raw) = read_to_end(&mut resp).await;
    assert!(raw.ends_with(LIFETIME_END), "ended otherwise: {raw:?}");
    assert_eq!(
        events.first().and_then(|m| m.id.clone()),
        Some(format!("{id}:1"))
    );
    // The slot is released as the stream's task ends, just after its last byte: poll.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut again = loop {
        let r = l.open("/api/v1/stream", None).await;
        if r.status() == 200 || Instant::now() > deadline {
            break r;
        }
        assert_eq!(r.status(), 429);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(again.status(), 200);
    let (_, raw) = read_to_end(&mut again).await;
    assert!(raw.ends_with(LIFETIME_END), "{raw:?}");
}
}

on_both! {
/// Found by schemathesis once the stream was in its run: `after_seq=2^63` with a
/// `Last-Event-ID` was served (the header wins, so the query was never checked). Each is
/// checked now: a bad value in either is a 400 with the JSON error, whichever would win.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_range_after_seq_is_refused_even_when_last_event_id_wins(backend: Backend) {
    let l = live(backend).await;
    let id = l.create().await;
    for (query, header) in [
        ("?after_seq=9223372036854775808", Some(0)),
        ("?after_seq=1", Some(9_223_372_036_854_775_808)),
        ("?after_seq=9223372036854775808", None),
    ] {
        let r = l
            .open(&format!("/api/v1/traces/{id}/stream{query}"), header)
            .await;
        assert_eq!(r.status(), 400, "{query} {header:?}");
        assert_eq!(
            r.headers()["content-type"],
            "application/json",
            "{query} {header:?}"
        );
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["error"]["code"], "invalid_argument", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("at most"),
            "{body}"
        );
    }
    let mut ok = l
        .open(&format!("/api/v1/traces/{id}/stream?after_seq=5"), Some(0))
        .await;
    assert_eq!(ok.status(), 200, "the header still wins over a valid query");
    let got = read_until(&mut ok, |m| seq(m) == 1).await;
    assert_eq!(got.iter().map(seq).collect::<Vec<_>>(), vec![1]);
}
}
