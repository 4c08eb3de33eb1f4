//! The Redis backend: the conformance suite on a standalone `redis-server` each test starts
//! on a free loopback port, and on a 3-master Redis Cluster started once for this binary
//! (each test in its own key prefix).

#[path = "support/redis_server.rs"]
mod redis_server;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use traceway_store::conformance::Harness;
use traceway_store::redis::{RedisConfig, RedisStore};
use traceway_store::ManualClock;

fn prefix() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "t{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

async fn open(url: &str, clock: &ManualClock) -> RedisStore {
    let mut cfg = RedisConfig::new(url);
    cfg.prefix = prefix();
    RedisStore::open(cfg, Arc::new(clock.clone()))
        .await
        .expect("open redis store")
}

mod standalone {
    use super::*;

    async fn make_redis(clock: ManualClock) -> Harness {
        let server = redis_server::RedisServer::start();
        let store = open(&server.url(), &clock).await;
        Harness {
            store: Arc::new(store),
            clock,
            guard: Box::new(server),
        }
    }

    traceway_store::conformance_suite!(make_redis);
}

mod cluster {
    use super::*;

    async fn make_cluster(clock: ManualClock) -> Harness {
        let url = tokio::task::spawn_blocking(redis_server::shared_cluster)
            .await
            .expect("cluster");
        let store = open(url, &clock).await;
        Harness {
            store: Arc::new(store),
            clock,
            guard: Box::new(()),
        }
    }

    traceway_store::conformance_suite!(make_cluster);
}
