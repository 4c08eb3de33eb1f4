//! The shared backend: Redis, standalone or Cluster (ADR 010).
//!
//! Every key of one trace shares the hash tag `{tenant:trace_id}`, so a trace lives in one
//! Cluster slot and a Lua script can change it atomically. A write reads the trace, computes
//! its new version with the write model SQLite uses too (`crate::write`), and commits it
//! with a compare-and-set script on the trace's version; a concurrent writer's commit
//! makes it read again. The script also
//! publishes the events, so every replica's hub sees them in commit order. Indexes (per
//! tenant, and the global active and expiry sets) live in other slots and are updated by
//! separate, idempotent commands after the commit; reads check every index entry against
//! the trace itself.
//!
//! Modules: `config` (settings, URLs), `connection` (standalone or Cluster, errors),
//! `keys` (the keyspace), `codec` (what is stored and sent), `commit` (load, model,
//! `EVALSHA`), `indexes`, `live` (the channel listener), `reads` (and the `Traces`
//! contract), `lifecycle` (sweep, purge), `lease`, `scripts` (the Lua), `api_keys` (the
//! `ApiKeys` contract).

mod api_keys;
mod codec;
mod commit;
mod config;
mod connection;
mod indexes;
mod keys;
mod lease;
mod lifecycle;
mod live;
mod reads;
mod scripts;
mod workflows;

#[cfg(test)]
#[path = "../../tests/support/redis_server.rs"]
mod redis_server;
#[cfg(test)]
mod tests;

use self::codec::*;
use self::commit::*;
pub use self::config::RedisConfig;
use self::config::*;
use self::connection::*;
use self::live::*;

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster_async::ClusterConnection;
use ::redis::{Cmd, Pipeline, RedisError, RedisFuture, Script, Value};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use traceway_core::{
    Event, EventBody, EventInput, MessageFill, NewTrace, Rollups, Span, SpanId, State, Timestamp,
    Trace, TraceId, TracePatch,
};

use crate::shared::{decode_cursor, encode_cursor, encode_position};
use crate::write::{Loaded, Model, Orphan, PendingTotals, SpanState, Stored, Written};
use crate::{
    AppendOutcome, AppendRequest, BackendError, CaptureConfig, Clock, EventCounts, EventFilter,
    Lease, LeaseLost, Leases, Lifecycle, LifecycleError, LiveFeed, OpenError, Orphaned, Page,
    PageRequest, Purged, Retention, TraceError, TraceFilter, TraceMeta, Traces,
};

/// The Redis store. Cheap to share behind an `Arc`.
pub struct RedisStore {
    conn: Conn,
    prefix: String,
    clock: Arc<dyn Clock>,
    retention: Retention,
    capture: CaptureConfig,
    list_scan_rows: usize,
    hub: crate::InProcessHub,
    closed: Arc<AtomicBool>,
    listener: Mutex<Option<tokio::task::JoinHandle<()>>>,
    commit: Script,
    purge_data: Script,
    delete_keys: Script,
    lease_acquire: Script,
    lease_cas: Script,
    put_doc: Script,
    versions: AtomicU64,
    /// Bytes per event of the latest commit's message: sizes the next commit command's
    /// buffer, so that it is not grown (and copied) again and again while JSON goes in.
    event_bytes: AtomicUsize,
    seed: u64,
    echoes: Echoes,
    /// Commits that lost the compare-and-set and were read and computed again.
    commit_retries: AtomicU64,
    /// Writes to one trace from this process take turns (ADR 010): a trace's writers
    /// queue on the shard its tenant and id hash to, so that they do not all read the same
    /// version and all but one retry. Fixed size, whatever the number of traces.
    trace_turns: Box<[tokio::sync::Mutex<()>]>,
}

/// Shards of [`RedisStore::trace_turns`]: enough that two busy traces rarely share one.
const TRACE_TURNS: usize = 1024;

/// How a trace was found.
struct Row {
    trace: Trace,
    dexp: i64,
}

impl RedisStore {
    /// Connects, subscribes to the live channel, and returns once both work.
    pub async fn open(cfg: RedisConfig, clock: Arc<dyn Clock>) -> Result<RedisStore, OpenError> {
        let target = parse_url(&cfg.url)?;
        let (conn, pubsub_urls) = match &target {
            Target::Single(url) => {
                let client = ::redis::Client::open(url.as_str())
                    .map_err(|e| OpenError::Config(format!("redis url: {e}")))?;
                let mc = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(cfg.timeout))
                    .set_response_timeout(Some(cfg.timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                let m = tokio::time::timeout(
                    cfg.timeout * 2,
                    client.get_connection_manager_with_config(mc),
                )
                .await
                .map_err(|_| BackendError::unavailable(format!("connect to {url}: timed out")))?
                .map_err(redis_err)?;
                (Conn::Single(m), vec![url.clone()])
            }
            Target::Cluster(nodes) => {
                let client = ::redis::cluster::ClusterClient::builder(nodes.clone())
                    .connection_timeout(cfg.timeout)
                    .response_timeout(cfg.timeout)
                    .retries(2)
                    .build()
                    .map_err(|e| OpenError::Config(format!("redis cluster: {e}")))?;
                let c = tokio::time::timeout(cfg.timeout * 2, client.get_async_connection())
                    .await
                    .map_err(|_| BackendError::unavailable("connect to cluster: timed out"))?
                    .map_err(redis_err)?;
                // PUBLISH reaches every node of a Cluster: any seed will do, the next one
                // when it fails.
                (Conn::Cluster(c), nodes.clone())
            }
        };
        let hub = crate::InProcessHub::new(cfg.subscriber_buffer);
        let closed = Arc::new(AtomicBool::new(false));
        let channel = format!("{}:live", cfg.prefix);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let echoes: Echoes = Arc::default();
        let listener = tokio::spawn(listen(
            pubsub_urls,
            channel,
            hub.clone(),
            echoes.clone(),
            closed.clone(),
            ready_tx,
        ));
        match tokio::time::timeout(cfg.timeout * 2, ready_rx).await {
            Ok(Ok(())) => {}
            _ => {
                listener.abort();
                return Err(
                    BackendError::unavailable("could not subscribe to the live channel").into(),
                );
            }
        }
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Ok(RedisStore {
            conn,
            prefix: cfg.prefix,
            clock,
            retention: cfg.retention,
            capture: cfg.capture,
            list_scan_rows: cfg.list_scan_rows.max(1),
            hub,
            closed,
            listener: Mutex::new(Some(listener)),
            commit: Script::new(scripts::COMMIT),
            purge_data: Script::new(scripts::PURGE_DATA),
            delete_keys: Script::new(scripts::DELETE_KEYS),
            lease_acquire: Script::new(scripts::LEASE_ACQUIRE),
            lease_cas: Script::new(scripts::LEASE_CAS),
            put_doc: Script::new(scripts::PUT_DOC),
            versions: AtomicU64::new(1),
            event_bytes: AtomicUsize::new(1024),
            seed,
            echoes,
            commit_retries: AtomicU64::new(0),
            trace_turns: (0..TRACE_TURNS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        })
    }

    fn conn(&self) -> Result<Conn, BackendError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(BackendError::unavailable("store is shut down"));
        }
        Ok(self.conn.clone())
    }

    fn channel(&self) -> String {
        format!("{}:live", self.prefix)
    }

    fn new_version(&self) -> String {
        let n = self.versions.fetch_add(1, Ordering::Relaxed);
        format!("{:x}-{n:x}", self.seed)
    }

    /// The turn the writers of one trace in this process queue on.
    fn trace_turn(&self, tenant: &str, id: TraceId) -> &tokio::sync::Mutex<()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&self.seed, &mut h);
        std::hash::Hash::hash(tenant, &mut h);
        std::hash::Hash::hash(&id, &mut h);
        // The modulo keeps the index below TRACE_TURNS, which fits in usize.
        #[allow(clippy::cast_possible_truncation)]
        let i = (h.finish() % TRACE_TURNS as u64) as usize;
        &self.trace_turns[i]
    }

    fn model(&self, now: Timestamp) -> Model {
        Model {
            now,
            retention: self.retention,
            capture: self.capture.clone(),
        }
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Relaxed);
        if let Some(h) = self
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            h.abort();
        }
    }
}
