//! The backends the router tests run on, and `on_both!`, which generates a test for each
//! from one definition: a test that exists runs on SQLite and on Redis.

use std::sync::Arc;

use traceway_server::Config;
use traceway_store::redis::{RedisConfig, RedisStore};
use traceway_store::{ManualClock, Store};

use crate::redis_server::RedisServer;
use crate::{test_app_wrapping, TestApp};

/// Where a test's store lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A fresh SQLite file in a temporary directory.
    Sqlite,
    /// A `redis-server` of the test's own on loopback.
    Redis,
}

impl Backend {
    /// A test app with the default configuration.
    pub async fn app(self) -> TestApp {
        self.app_with(Config::default()).await
    }

    /// A test app with `config`.
    pub async fn app_with(self, config: Config) -> TestApp {
        self.app_wrapping(config, |store| store).await
    }

    /// A test app whose store is `wrap` of a fresh store (to make it fail on purpose).
    pub async fn app_wrapping(
        self,
        config: Config,
        wrap: impl FnOnce(Arc<dyn Store>) -> Arc<dyn Store>,
    ) -> TestApp {
        match self {
            Backend::Sqlite => test_app_wrapping(config, wrap),
            Backend::Redis => {
                let server = RedisServer::start();
                let clock = ManualClock::new(traceway_store::conformance::start_time());
                let mut redis = RedisConfig::new(server.url());
                redis.capture = config.capture.clone();
                redis.retention = config.retention;
                let store = RedisStore::open(redis, Arc::new(clock.clone()))
                    .await
                    .expect("open the Redis store");
                let store = wrap(Arc::new(store));
                let dir = tempfile::tempdir().expect("tempdir");
                TestApp::assemble(store, config, clock, dir, Some(server))
            }
        }
    }
}

/// `on_both! { #[tokio::test] async fn name(backend: Backend) { … } }` defines the test
/// once and runs it as `name::sqlite` and `name::redis`.
macro_rules! on_both {
    ($(#[$meta:meta])* async fn $name:ident($backend:ident: Backend) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run($backend: $crate::Backend) $body

            $(#[$meta])*
            async fn sqlite() {
                run($crate::Backend::Sqlite).await
            }

            $(#[$meta])*
            async fn redis() {
                run($crate::Backend::Redis).await
            }
        }
    };
}
