//! The real binary on Redis (`--store redis://…`): a smoke test, two replicas sharing one
//! Redis (live fan-out, one watchdog, takeover after kill -9), and Redis stopping under
//! ingest. Each test starts its own `redis-server` on a free loopback port.

#[path = "../../../traceway-store/tests/support/redis_server.rs"]
pub(crate) mod redis_server;

use std::time::Duration;

use serde_json::json;

use self::redis_server::RedisServer;
use crate::e2e::{client, get, metrics, post, running_trace, state_via, wait_for, Server};
use crate::stream::{read_until, seq, tool};

fn on_redis<'a>(url: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--store", url];
    args.extend_from_slice(extra);
    args
}

/// The native API end to end on Redis: create, steps, list, read, end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_runs_on_redis() {
    let redis = RedisServer::start();
    native_api_on(&redis.url()).await;
}

/// The same on a 3-master Redis Cluster (`--store redis+cluster://…`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_runs_on_redis_cluster() {
    let url = tokio::task::spawn_blocking(redis_server::shared_cluster)
        .await
        .expect("cluster");
    native_api_on(url).await;
}

async fn native_api_on(url: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with(dir.path(), &on_redis(url, &[]));
    let c = client();
    let (status, _) = get(&c, format!("{}/readyz", server.url)).await;
    assert_eq!(status, 200);
    let (status, t) = post(
        &c,
        format!("{}/api/v1/traces", server.url),
        &json!({"name": "on redis", "agent_id": "planner"}),
    )
    .await;
    assert_eq!(status, 201, "{t}");
    let id = t["trace_id"].as_str().expect("id").to_string();
    let (status, v) = post(
        &c,
        format!("{}/api/v1/traces/{id}/events", server.url),
        &json!({"events": [tool(1), tool(2)]}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let (_, list) = get(&c, format!("{}/api/v1/traces?agent_id=planner", server.url)).await;
    assert_eq!(list["traces"][0]["trace_id"], id, "{list}");
    let (_, got) = get(&c, format!("{}/api/v1/traces/{id}", server.url)).await;
    assert_eq!(got["trace"]["state"], "RUNNING", "{got}");
    assert_eq!(got["trace"]["last_seq"], 4, "{got}");
    let r = c
        .patch(format!("{}/api/v1/traces/{id}", server.url))
        .json(&json!({"state": "COMPLETED"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), 200);
    let (_, ev) = get(&c, format!("{}/api/v1/traces/{id}/events", server.url)).await;
    assert_eq!(ev["events"].as_array().map(Vec::len), Some(6), "{ev}");
    server.stop();
}

/// Two replicas on one Redis: an SSE client on B replays, then follows live what is
/// ingested through A, every seq exactly once and in order; it can resume on A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_client_on_one_replica_follows_events_ingested_through_another() {
    let redis = RedisServer::start();
    let url = redis.url();
    let (da, db) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let a = Server::start_with(da.path(), &on_redis(&url, &["--no-watchdog"]));
    let b = Server::start_with(db.path(), &on_redis(&url, &["--no-watchdog"]));
    let c = client();
    let (_, t) = post(&c, format!("{}/api/v1/traces", a.url), &json!({})).await;
    let id = t["trace_id"].as_str().expect("id").to_string();
    let events_url = format!("{}/api/v1/traces/{id}/events", a.url);
    let append = move |n: u64| {
        let (c, url) = (client(), events_url.clone());
        async move {
            let (status, v) = post(&c, url, &json!({"events": [tool(n)]})).await;
            assert_eq!(status, 200, "{v}");
        }
    };
    append(1).await; // seqs 2 (RUNNING) and 3
    let mut resp = c
        .get(format!("{}/api/v1/traces/{id}/stream", b.url))
        .send()
        .await
        .expect("stream");
    assert_eq!(resp.status(), 200);
    let replay = read_until(&mut resp, |m| seq(m) == 3).await;
    assert_eq!(replay.iter().map(seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    // Live from A while B's client listens.
    let writer = tokio::spawn({
        let append = append.clone();
        async move {
            for n in 2..=21 {
                append(n).await;
            }
        }
    });
    let live = read_until(&mut resp, |m| seq(m) == 23).await;
    writer.await.expect("writer");
    assert_eq!(
        live.iter().map(seq).filter(|s| *s > 0).collect::<Vec<_>>(),
        (4..=23).collect::<Vec<_>>()
    );
    // The end, ingested through A, closes B's stream after the grace.
    let r = c
        .patch(format!("{}/api/v1/traces/{id}", a.url))
        .json(&json!({"state": "COMPLETED"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), 200);
    let end = read_until(&mut resp, |m| m.event.as_deref() == Some("trace_ended")).await;
    assert_eq!(end.last().map(seq), Some(25));
    // A client that drops from B resumes on A with Last-Event-ID: nothing lost or repeated.
    let mut resumed = c
        .get(format!("{}/api/v1/traces/{id}/stream", a.url))
        .header("last-event-id", "10")
        .send()
        .await
        .expect("stream");
    let rest = read_until(&mut resumed, |m| seq(m) == 25).await;
    assert_eq!(
        rest.iter().map(seq).filter(|s| *s > 0).collect::<Vec<_>>(),
        (11..=25).collect::<Vec<_>>()
    );
}

/// Two replicas on one Redis: exactly one holds the watchdog lease and sweeps; after it
/// is killed with SIGKILL the other takes over within the lease time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_replicas_on_one_redis_one_sweeps_and_the_other_takes_over_after_kill_9() {
    const LEASE: Duration = Duration::from_secs(2);
    let redis = RedisServer::start();
    let url = redis.url();
    let args = on_redis(
        &url,
        &[
            "--lease-ttl",
            "2s",
            "--sweep-interval",
            "100ms",
            "--orphan-after",
            "1s",
        ],
    );
    let (da, db) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let c = client();
    let a = Server::start_with(da.path(), &args);
    wait_for("a leads", Duration::from_secs(10), async || {
        metrics(&c, &a).await["traceway_watchdog_leader"] == 1.0
    })
    .await;
    let b = Server::start_with(db.path(), &args);
    let id = running_trace(&c, &b).await;
    wait_for("orphaned by a", Duration::from_secs(10), async || {
        state_via(&c, &b, &id).await == "ERRORED"
    })
    .await;
    let (ma, mb) = (metrics(&c, &a).await, metrics(&c, &b).await);
    assert_eq!(ma["traceway_traces_orphaned_total"], 1.0);
    assert_eq!(mb["traceway_watchdog_leader"], 0.0);
    assert_eq!(mb["traceway_watchdog_sweeps_total"], 0.0, "b never swept");

    a.kill9();
    let took = wait_for("b takes over", LEASE * 4, async || {
        let m = metrics(&c, &b).await;
        m["traceway_watchdog_leader"] == 1.0 && m["traceway_watchdog_sweeps_total"] >= 1.0
    })
    .await;
    assert!(
        took <= LEASE + Duration::from_secs(2),
        "took over {took:?} after the kill, lease {LEASE:?}"
    );
    let id = running_trace(&c, &b).await;
    wait_for("orphaned by b", Duration::from_secs(10), async || {
        state_via(&c, &b, &id).await == "ERRORED"
    })
    .await;
    assert_eq!(metrics(&c, &b).await["traceway_traces_orphaned_total"], 1.0);
    b.stop();
}

/// Redis stops mid-ingest: ingest answers 503 with Retry-After, /readyz fails, nothing
/// crashes; Redis comes back (with its append-only file) and service resumes by itself
/// with every acknowledged write there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_answers_503_while_redis_is_down_and_resumes_without_losing_acknowledged_writes() {
    let mut redis = RedisServer::start_with(&[
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ]);
    let url = redis.url();
    let dir = tempfile::tempdir().expect("tmp");
    let server = Server::start_with(dir.path(), &on_redis(&url, &["--no-watchdog"]));
    let c = client();
    let (_, t) = post(&c, format!("{}/api/v1/traces", server.url), &json!({})).await;
    let id = t["trace_id"].as_str().expect("id").to_string();
    let events = format!("{}/api/v1/traces/{id}/events", server.url);
    // A writer ingests steadily and keeps what was acknowledged; Redis stops under it.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = tokio::spawn({
        let (stop, events) = (stop.clone(), events.clone());
        async move {
            let c = client();
            let (mut acknowledged, mut refused) = (Vec::new(), Vec::new());
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let r = c
                    .post(events.clone())
                    .json(&json!({"events": [tool(n)]}))
                    .send()
                    .await
                    .expect("the server answers");
                match r.status().as_u16() {
                    200 => acknowledged.push(n),
                    503 => {
                        assert_eq!(r.headers()["retry-after"], "1");
                        refused.push(n);
                    }
                    other => panic!("unexpected status {other}"),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (acknowledged, refused)
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.stop();
    wait_for("not ready", Duration::from_secs(10), async || {
        get(&c, format!("{}/readyz", server.url)).await.0 == 503
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = get(&c, format!("{}/healthz", server.url)).await;
    assert_eq!(status, 200, "the process itself is fine");

    redis.restart();
    wait_for("ready again", Duration::from_secs(15), async || {
        get(&c, format!("{}/readyz", server.url)).await.0 == 200
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acknowledged, refused) = writer.await.expect("writer");
    assert!(!refused.is_empty(), "some writes met the outage");
    assert!(acknowledged.len() > 10, "{acknowledged:?}");
    let (status, got) = get(
        &c,
        format!("{}/api/v1/traces/{id}/events?limit=10000", server.url),
    )
    .await;
    assert_eq!(status, 200, "{got}");
    let got = got.to_string();
    for n in &acknowledged {
        assert!(
            got.contains(&format!("\"t{n}\"")),
            "acknowledged span t{n} missing"
        );
    }
    assert!(
        acknowledged.last() > refused.last(),
        "ingest resumed by itself after Redis came back"
    );
    server.stop();
}
