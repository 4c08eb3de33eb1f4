//! The commit loop against a real `redis-server`: a commit that loses the compare-and-set
//! to another process reads again, keeps both writes, and is counted.

use super::redis_server::RedisServer;
use super::*;
use crate::ManualClock;
use traceway_core::SpanInput;

async fn open(url: &str, prefix: &str) -> RedisStore {
    let mut cfg = RedisConfig::new(url);
    cfg.prefix = prefix.to_string();
    let clock = ManualClock::new(Timestamp::from_unix_millis(1_767_225_600_000));
    RedisStore::open(cfg, Arc::new(clock))
        .await
        .expect("open redis store")
}

fn started(n: u64) -> EventInput {
    EventInput::SpanStarted {
        span: SpanInput::new(SpanId::from_u64(n).expect("span id")),
    }
}

/// Another process's append lands between this process's read of the trace and its
/// commit: the commit finds the version moved, reads again and commits on top. Both
/// spans are kept; this process counts one retry, the other none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_loses_to_another_process_reads_again_and_is_counted() {
    let server = RedisServer::start();
    let url = server.url();
    let here = open(&url, "conflict").await;
    let (t, _) = here
        .create_trace("t", NewTrace::default())
        .await
        .expect("create");
    let id = t.trace_id;
    assert_eq!(here.commit_retries(), 0);

    let mut other_retries = None;
    let mut steps = 0;
    let r = here
        .write_trace::<_, TraceError>("t", id, &[1], &[], &[], |loaded, model| {
            steps += 1;
            if steps == 1 {
                // The other process: its own store and runtime, on a thread of its own,
                // done before this step goes on.
                let url = url.clone();
                let retries = tokio::task::block_in_place(|| {
                    std::thread::spawn(move || {
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .expect("runtime");
                        rt.block_on(async {
                            let other = open(&url, "conflict").await;
                            other
                                .append(AppendRequest {
                                    tenant: "t".into(),
                                    trace_id: id,
                                    create_if_missing: None,
                                    events: vec![started(2)],
                                    fills: Vec::new(),
                                    end: None,
                                })
                                .await
                                .expect("the other process's append");
                            other.commit_retries()
                        })
                    })
                    .join()
                    .expect("the other process")
                });
                other_retries = Some(retries);
            }
            let w = model
                .append("t", id, loaded, None, [started(1)], None)
                .map_err(|r| r.error)?;
            Ok(Some((w, ())))
        })
        .await
        .expect("append");
    assert!(r.is_some());
    assert_eq!(steps, 2, "read and computed again once");
    assert_eq!(other_retries, Some(0));
    assert_eq!(here.commit_retries(), 1);
    let t = here.get_trace("t", id).await.expect("read").expect("trace");
    assert_eq!(t.rollups.span_count, 2, "both spans kept: {t:?}");
}
