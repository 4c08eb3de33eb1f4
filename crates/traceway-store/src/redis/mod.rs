//! The shared backend: Redis, standalone or Cluster (ADR 010).
//!
//! Every key of one trace shares the hash tag `{tenant:trace_id}`, so a trace lives in one
//! Cluster slot and a Lua script can change it atomically. A write reads the trace, computes
//! its new version in Rust with the same core functions as SQLite (state machine, level
//! stripping, span merging, rollups), and commits it with a compare-and-set script on the
//! trace's version; a concurrent writer's commit makes it read again. The script also
//! publishes the events, so every replica's hub sees them in commit order. Indexes (per
//! tenant, and the global active and expiry sets) live in other slots and are updated by
//! separate, idempotent commands after the commit; reads check every index entry against
//! the trace itself.

mod keys;
mod scripts;

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
    Event, EventBody, EventInput, NewTrace, Rollups, Span, SpanId, State, Timestamp, Trace,
    TraceId, TracePatch,
};

use crate::shared::{decode_cursor, encode_cursor, encode_position};
use crate::write::{Loaded, Model, Orphan, SpanState, Stored, Written};
use crate::{
    AppendOutcome, AppendRequest, CaptureConfig, Clock, EventCounts, EventFilter, Lease, Leases,
    Lifecycle, LiveFeed, Orphaned, Page, PageRequest, Purged, Retention, StoreError, TraceFilter,
    TraceMeta, Traces,
};

/// Settings of the Redis backend.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://host:port/db` (standalone) or `redis+cluster://h1:p1,h2:p2` (Cluster seeds).
    pub url: String,
    /// Prepended to every key and channel, so several stores (or tests) share one Redis.
    pub prefix: String,
    /// How long data is kept.
    pub retention: Retention,
    /// What capture keeps.
    pub capture: CaptureConfig,
    /// Events a live subscriber may have waiting before it is dropped as lagging.
    pub subscriber_buffer: usize,
    /// How long one Redis command may take before the operation fails `Unavailable`.
    pub timeout: Duration,
    /// Index rows one listing examines at most. A filter no index answers (`has_error`,
    /// `min_duration_ms`, or a second field) is checked on each row; when this many rows
    /// did not fill the page, the listing returns what it found with a cursor to go on.
    pub list_scan_rows: usize,
}

impl RedisConfig {
    /// Defaults for a Redis at `url`.
    pub fn new(url: impl Into<String>) -> RedisConfig {
        RedisConfig {
            url: url.into(),
            prefix: "tw".into(),
            retention: Retention::default(),
            capture: CaptureConfig::default(),
            subscriber_buffer: 1024,
            timeout: Duration::from_secs(2),
            list_scan_rows: 5000,
        }
    }
}

/// Where a URL points.
enum Target {
    Single(String),
    Cluster(Vec<String>),
}

fn parse_url(url: &str) -> Result<Target, StoreError> {
    if let Some(rest) = url.strip_prefix("redis+cluster://") {
        let nodes: Vec<String> = rest
            .trim_end_matches('/')
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| format!("redis://{s}"))
            .collect();
        if nodes.is_empty() {
            return Err(StoreError::Invalid(format!("no cluster nodes in {url:?}")));
        }
        Ok(Target::Cluster(nodes))
    } else if url.starts_with("redis://") || url.starts_with("rediss://") {
        Ok(Target::Single(url.to_string()))
    } else {
        Err(StoreError::Invalid(format!(
            "not a Redis URL: {url:?} (redis://host:port/db or redis+cluster://h1:p1,h2:p2)"
        )))
    }
}

/// One multiplexed connection (standalone, reconnecting) or a Cluster connection; both are
/// cheap clones sharing one socket per node.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

fn redis_err(e: RedisError) -> StoreError {
    use ::redis::ErrorKind;
    if e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_cluster_error()
        || matches!(e.kind(), ErrorKind::Server(_)) && e.to_string().contains("LOADING")
    {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Internal(format!("redis: {e}"))
    }
}

fn json_err(e: serde_json::Error) -> StoreError {
    StoreError::Internal(format!("stored json: {e}"))
}

/// What a write needs to know of a span, in the trace's span hash: whether it ended, its
/// component, and while it runs its stored form (which the end is merged into). An ended
/// span's form is only in the event log, so it is not stored twice.
#[derive(Deserialize)]
struct StoredSpan {
    ended: bool,
    #[serde(default)]
    component: Option<String>,
    #[serde(default)]
    span: Option<Box<Span>>,
}

impl StoredSpan {
    /// The write model's form; `None` for a running span without its body (never written).
    fn into_state(self) -> Option<SpanState> {
        match (self.ended, self.span) {
            (true, _) => Some(SpanState::Ended {
                component: self.component,
            }),
            (false, Some(span)) => Some(SpanState::Running(span)),
            (false, None) => None,
        }
    }
}

/// [`StoredSpan`] as a commit writes it, borrowing the write model's span state.
#[derive(Serialize)]
struct StoredSpanRef<'a> {
    ended: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    component: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    span: Option<&'a Span>,
}

impl<'a> StoredSpanRef<'a> {
    fn of(s: &'a SpanState) -> StoredSpanRef<'a> {
        match s {
            SpanState::Ended { component } => StoredSpanRef {
                ended: true,
                component: component.as_deref(),
                span: None,
            },
            SpanState::Running(span) => StoredSpanRef {
                ended: false,
                component: span.component_id.as_deref(),
                span: Some(span),
            },
        }
    }
}

/// The write model's port on Redis: the span states and client ids a batch mentions, read
/// with the trace in one round trip.
struct Port {
    spans: HashMap<u64, SpanState>,
    seen: HashSet<String>,
}

impl Stored for Port {
    fn span(&self, id: u64) -> Option<&SpanState> {
        self.spans.get(&id)
    }

    fn client_id_seen(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.seen.contains(id))
    }
}

/// What crosses the live channel, and what one event-stream entry holds: a one-line JSON
/// header, a newline, then the commit's events as a JSON array. A process reads the
/// header to answer its own writer's echo and parses the events only when it has live
/// subscribers; stream readers skip the header.
#[derive(Deserialize)]
struct LiveHeader {
    /// The commit's version, by which the writer learns its own message went round.
    v: String,
    tenant: String,
    agent_id: Option<String>,
    state: String,
}

/// [`LiveHeader`] as the writer builds it, borrowing the draft's fields.
#[derive(Serialize)]
struct LiveHeaderRef<'a> {
    v: &'a str,
    tenant: &'a str,
    agent_id: Option<&'a str>,
    state: &'a str,
}

/// The events of one stream entry: a commit's batch (`header\n[events]`), or a single
/// event (as entries were written before batches). Compact JSON has no raw newline, so
/// the newline tells them apart.
fn entry_events(d: &[u8]) -> Result<Vec<Event>, StoreError> {
    match d.iter().position(|b| *b == b'\n') {
        Some(i) => serde_json::from_slice(&d[i + 1..]).map_err(json_err),
        None => Ok(vec![serde_json::from_slice(d).map_err(json_err)?]),
    }
}

fn micros(t: Timestamp) -> i64 {
    t.unix_nanos().div_euclid(1000)
}

/// Milliseconds from `now` until `t` plus a margin, at least a second: the physical bound
/// of a key whose logical expiry (which reads check) is `t` on the store's clock.
fn ttl_ms(now: Timestamp, t_ns: i64) -> i64 {
    const MARGIN_MS: i64 = 60_000;
    ((t_ns - now.unix_nanos()) / 1_000_000).max(0) + MARGIN_MS
}

/// A writer that counts what passes through it.
struct Counting<W> {
    inner: W,
    n: usize,
}

impl<W: std::io::Write> std::io::Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The keys of one trace.
struct TraceKeys {
    row: String,
    spans: String,
    keys: String,
    events: String,
}

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
    lease_acquire: Script,
    lease_cas: Script,
    versions: AtomicU64,
    /// Bytes per event of the latest commit's message: sizes the next commit command's
    /// buffer, so that it is not grown (and copied) again and again while JSON goes in.
    event_bytes: AtomicUsize,
    seed: u64,
    echoes: Echoes,
}

/// Writers waiting for their own live message to come back through the channel: a write
/// returns only once this process's hub has published its events, so a subscriber that
/// subscribes after a write returns never receives that write's events late.
#[derive(Default)]
struct EchoBoard {
    waiters: Mutex<HashMap<String, tokio::sync::oneshot::Sender<()>>>,
    /// Whether the live channel is subscribed now; while it is not, writers do not wait.
    up: AtomicBool,
}

type Echoes = Arc<EchoBoard>;

/// How long a writer waits for its echo before answering anyway (the channel is down; its
/// listener reconnects).
const ECHO_WAIT: Duration = Duration::from_secs(1);

/// How a trace was found.
struct Row {
    trace: Trace,
    dexp: i64,
}

impl RedisStore {
    /// Connects, subscribes to the live channel, and returns once both work.
    pub async fn open(cfg: RedisConfig, clock: Arc<dyn Clock>) -> Result<RedisStore, StoreError> {
        let target = parse_url(&cfg.url)?;
        let (conn, pubsub_urls) = match &target {
            Target::Single(url) => {
                let client = ::redis::Client::open(url.as_str())
                    .map_err(|e| StoreError::Invalid(format!("redis url: {e}")))?;
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
                .map_err(|_| StoreError::Unavailable(format!("connect to {url}: timed out")))?
                .map_err(redis_err)?;
                (Conn::Single(m), vec![url.clone()])
            }
            Target::Cluster(nodes) => {
                let client = ::redis::cluster::ClusterClient::builder(nodes.clone())
                    .connection_timeout(cfg.timeout)
                    .response_timeout(cfg.timeout)
                    .retries(2)
                    .build()
                    .map_err(|e| StoreError::Invalid(format!("redis cluster: {e}")))?;
                let c = tokio::time::timeout(cfg.timeout * 2, client.get_async_connection())
                    .await
                    .map_err(|_| StoreError::Unavailable("connect to cluster: timed out".into()))?
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
                return Err(StoreError::Unavailable(
                    "could not subscribe to the live channel".into(),
                ));
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
            lease_acquire: Script::new(scripts::LEASE_ACQUIRE),
            lease_cas: Script::new(scripts::LEASE_CAS),
            versions: AtomicU64::new(1),
            event_bytes: AtomicUsize::new(1024),
            seed,
            echoes,
        })
    }

    fn conn(&self) -> Result<Conn, StoreError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(StoreError::Unavailable("store is shut down".into()));
        }
        Ok(self.conn.clone())
    }

    fn channel(&self) -> String {
        format!("{}:live", self.prefix)
    }

    /// One page of a trace's event stream from `from` on, in seq order; `more` when the
    /// page was full. An entry is one commit's events and its id is the last one's seq, so
    /// the first entry read may begin before `from`.
    async fn event_page(&self, key: &str, from: u64) -> Result<(Vec<Event>, bool), StoreError> {
        const PAGE: usize = 100;
        let mut conn = self.conn()?;
        let entries: Vec<(String, HashMap<String, Vec<u8>>)> = ::redis::cmd("XRANGE")
            .arg(key)
            .arg(format!("{from}-0"))
            .arg("+")
            .arg("COUNT")
            .arg(PAGE)
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        let more = entries.len() == PAGE;
        let mut events = Vec::new();
        for (_, fields) in entries {
            let Some(d) = fields.get("d") else { continue };
            events.extend(entry_events(d)?.into_iter().filter(|e| e.seq >= from));
        }
        Ok((events, more))
    }

    fn trace_keys(&self, tenant: &str, id: TraceId) -> TraceKeys {
        let base = format!("{}:t:{{{tenant}:{id}}}", self.prefix);
        TraceKeys {
            row: format!("{base}:r"),
            spans: format!("{base}:s"),
            keys: format!("{base}:k"),
            events: format!("{base}:e"),
        }
    }

    fn tenant_index(&self, tenant: &str, which: &str) -> String {
        format!("{}:i:{{{tenant}}}:{which}", self.prefix)
    }

    fn global(&self, which: &str) -> String {
        format!("{}:g:{which}", self.prefix)
    }

    fn member(tenant: &str, id: TraceId) -> String {
        format!("{tenant}/{id}")
    }

    fn parse_member(m: &str) -> Option<(String, TraceId)> {
        let (t, id) = m.rsplit_once('/')?;
        Some((t.to_string(), id.parse().ok()?))
    }

    fn new_version(&self) -> String {
        let n = self.versions.fetch_add(1, Ordering::Relaxed);
        format!("{:x}-{n:x}", self.seed)
    }

    async fn load(&self, tenant: &str, id: TraceId) -> Result<Option<Row>, StoreError> {
        let k = self.trace_keys(tenant, id);
        let mut conn = self.conn()?;
        let (doc, ver, dexp): (Option<String>, Option<String>, Option<i64>) = ::redis::cmd("HMGET")
            .arg(&k.row)
            .arg("doc")
            .arg("ver")
            .arg("dexp")
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        let (Some(doc), Some(_)) = (doc, ver) else {
            return Ok(None);
        };
        let trace: Trace = serde_json::from_str(&doc).map_err(json_err)?;
        Ok(Some(Row {
            trace,
            dexp: dexp.unwrap_or(0),
        }))
    }

    /// Loads a trace with the state a batch needs: the spans and client keys it mentions.
    async fn load_for(
        &self,
        tenant: &str,
        id: TraceId,
        span_ids: &[u64],
        client_keys: &[String],
    ) -> Result<Option<(String, Loaded<Port>)>, StoreError> {
        // One round trip: the three reads share the trace's slot. Span id 0 and the empty
        // string are never stored, so they stand in for an empty list.
        let k = self.trace_keys(tenant, id);
        let mut p = ::redis::pipe();
        p.cmd("HMGET").arg(&k.row).arg("doc").arg("ver").arg("dexp");
        p.cmd("HMGET").arg(&k.spans);
        if span_ids.is_empty() {
            p.arg(0u64);
        } else {
            p.arg(span_ids);
        }
        p.cmd("SMISMEMBER").arg(&k.keys);
        if client_keys.is_empty() {
            p.arg("");
        } else {
            p.arg(client_keys);
        }
        let mut conn = self.conn()?;
        type Row = (Option<String>, Option<String>, Option<i64>);
        let (row, vals, flags): (Row, Vec<Option<String>>, Vec<bool>) =
            p.query_async(&mut conn).await.map_err(redis_err)?;
        let (Some(doc), Some(ver)) = (row.0, row.1) else {
            return Ok(None);
        };
        let trace = serde_json::from_str(&doc).map_err(json_err)?;
        let mut spans = HashMap::new();
        for (sid, v) in span_ids.iter().zip(vals) {
            if let Some(v) = v {
                let stored: StoredSpan = serde_json::from_str(&v).map_err(json_err)?;
                if let Some(state) = stored.into_state() {
                    spans.insert(*sid, state);
                }
            }
        }
        let mut seen = HashSet::new();
        for (key, f) in client_keys.iter().zip(flags) {
            if f {
                seen.insert(key.clone());
            }
        }
        let loaded = Loaded {
            trace,
            data_expires_at: row.2.unwrap_or(0),
            stored: Port { spans, seen },
        };
        Ok(Some((ver, loaded)))
    }

    /// Commits a draft; false when another writer got there first (read again and retry).
    ///
    /// The `EVALSHA` command is built by hand rather than with `ScriptInvocation`, which
    /// copies every argument into a vector of its own and then again into the command:
    /// here the JSON is written straight into the command's buffer, once.
    async fn commit(
        &self,
        d: &Written<Port>,
        ver: &str,
        reset: bool,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        use ::redis::RedisWrite as _;
        use std::io::Write as _;
        let k = self.trace_keys(&d.trace.tenant, d.trace.trace_id);
        let version = self.new_version();
        let per_event = self.event_bytes.load(Ordering::Relaxed);
        let mut cmd = Cmd::with_capacity(
            16 + 2 * d.spans.len() + d.client_ids.len(),
            2048 + d.events.len() * per_event + d.spans.len() * 64,
        );
        cmd.arg("EVALSHA")
            .arg(self.commit.get_hash())
            .arg(4)
            .arg(&k.row)
            .arg(&k.spans)
            .arg(&k.keys)
            .arg(&k.events)
            .arg(ver)
            .arg(&version)
            .arg(if reset { 1 } else { 0 });
        serde_json::to_writer(cmd.writer_for_next_arg(), &d.trace).map_err(json_err)?;
        cmd.arg(d.data_expires_at)
            .arg(ttl_ms(now, d.trace.expires_at.unix_nanos()))
            .arg(ttl_ms(now, d.data_expires_at))
            .arg(d.spans.len())
            .arg(d.client_ids.len());
        // The events go once: the same argument is the stream entry and the live message.
        match d.events.last() {
            Some(last) => cmd.arg(format!("{}-0", last.seq)),
            None => cmd.arg(""),
        };
        cmd.arg(self.channel());
        if d.events.is_empty() {
            cmd.arg("");
        } else {
            let mut w = Counting {
                inner: cmd.writer_for_next_arg(),
                n: 0,
            };
            let header = LiveHeaderRef {
                v: &version,
                tenant: &d.trace.tenant,
                agent_id: d.trace.agent_id.as_deref(),
                state: d.trace.state.as_str(),
            };
            serde_json::to_writer(&mut w, &header).map_err(json_err)?;
            let mut sep = b"\n[".as_slice();
            for e in &d.events {
                w.write_all(sep)
                    .map_err(|e| StoreError::Internal(e.to_string()))?;
                serde_json::to_writer(&mut w, e).map_err(json_err)?;
                sep = b",";
            }
            w.write_all(b"]")
                .map_err(|e| StoreError::Internal(e.to_string()))?;
            let per_event = w.n / d.events.len();
            self.event_bytes
                .store(per_event + per_event / 4, Ordering::Relaxed);
        }
        for (sid, s) in &d.spans {
            cmd.arg(*sid);
            serde_json::to_writer(cmd.writer_for_next_arg(), &StoredSpanRef::of(s))
                .map_err(json_err)?;
        }
        for (_, key) in &d.client_ids {
            cmd.arg(key);
        }
        let echo = (!d.events.is_empty() && self.echoes.up.load(Ordering::Relaxed)).then(|| {
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.echoes
                .waiters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(version.clone(), tx);
            rx
        });
        let mut conn = self.conn()?;
        let r = match cmd.query_async::<i64>(&mut conn).await {
            Err(e)
                if e.kind() == ::redis::ErrorKind::Server(::redis::ServerErrorKind::NoScript) =>
            {
                // Redis restarted or flushed its scripts: load it and send again.
                match self.commit.load_async(&mut conn).await {
                    Ok(_) => cmd.query_async::<i64>(&mut conn).await,
                    Err(e) => Err(e),
                }
            }
            r => r,
        }
        .map_err(redis_err);
        let committed = matches!(r, Ok(1));
        if let Some(rx) = echo {
            if committed && tokio::time::timeout(ECHO_WAIT, rx).await.is_err() {
                tracing::warn!("live channel: own event not echoed in time");
            }
            self.echoes
                .waiters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&version);
        }
        Ok(r? == 1)
    }

    /// Runs independent commands: one pipeline on standalone Redis; concurrently on a
    /// Cluster, where a pipeline may not span slots (each command goes to its node over the
    /// shared multiplexed connections).
    async fn exec<T: ::redis::FromRedisValue>(&self, cmds: Vec<Cmd>) -> Result<Vec<T>, StoreError> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        let conn = self.conn()?;
        match conn {
            Conn::Single(mut c) => {
                let mut p = ::redis::pipe();
                for cmd in cmds {
                    p.add_command(cmd);
                }
                p.query_async(&mut c).await.map_err(redis_err)
            }
            Conn::Cluster(c) => {
                let futs = cmds.into_iter().map(|cmd| {
                    let mut c = c.clone();
                    async move { cmd.query_async::<T>(&mut c).await }
                });
                futures::future::try_join_all(futs).await.map_err(redis_err)
            }
        }
    }

    /// Brings the indexes in line with a trace as committed (idempotent; a retry repairs
    /// what a failure between the commit and here left out).
    async fn index(&self, t: &Trace, dexp: i64, before: Option<&Trace>) -> Result<(), StoreError> {
        let tenant = &t.tenant;
        let id = t.trace_id.to_string();
        let created = micros(t.created_at);
        let member = Self::member(tenant, t.trace_id);
        let mut p: Vec<Cmd> = Vec::new();
        p.push(Cmd::zadd(self.tenant_index(tenant, "all"), &id, created));
        for (tag, v) in [("a", &t.agent_id), ("u", &t.user_id), ("s", &t.session_id)] {
            if let Some(v) = v {
                p.push(Cmd::zadd(
                    self.tenant_index(tenant, &format!("{tag}:{v}")),
                    &id,
                    created,
                ));
            }
        }
        if let Some(b) = before {
            if b.state != t.state {
                p.push(Cmd::zrem(
                    self.tenant_index(tenant, &format!("st:{}", b.state.as_str())),
                    &id,
                ));
            }
        }
        p.push(Cmd::zadd(
            self.tenant_index(tenant, &format!("st:{}", t.state.as_str())),
            &id,
            created,
        ));
        if t.state.is_terminal() {
            p.push(Cmd::zrem(self.global("active"), &member));
            p.push(Cmd::zrem(self.global("active_exp"), &member));
            if let Some(end) = t.ended_at {
                p.push(Cmd::zadd(
                    self.tenant_index(tenant, "ended"),
                    &id,
                    micros(end),
                ));
            }
        } else {
            let mut gt = ::redis::cmd("ZADD");
            gt.arg(self.global("active"))
                .arg("GT")
                .arg(micros(t.last_activity_at))
                .arg(&member);
            p.push(gt);
            p.push(Cmd::zadd(
                self.global("active_exp"),
                &member,
                micros(t.expires_at),
            ));
        }
        p.push(Cmd::zadd(self.global("exp"), &member, micros(t.expires_at)));
        if dexp > 0 {
            p.push(Cmd::zadd(
                self.global("dexp"),
                &member,
                dexp.div_euclid(1000),
            ));
        }
        self.exec::<Value>(p).await.map(drop)
    }

    /// Removes a trace from every index (it was deleted or purged).
    async fn unindex(&self, t: &Trace) -> Result<(), StoreError> {
        let tenant = &t.tenant;
        let id = t.trace_id.to_string();
        let member = Self::member(tenant, t.trace_id);
        let mut p: Vec<Cmd> = vec![Cmd::zrem(self.tenant_index(tenant, "all"), &id)];
        for (tag, v) in [("a", &t.agent_id), ("u", &t.user_id), ("s", &t.session_id)] {
            if let Some(v) = v {
                p.push(Cmd::zrem(
                    self.tenant_index(tenant, &format!("{tag}:{v}")),
                    &id,
                ));
            }
        }
        p.push(Cmd::zrem(
            self.tenant_index(tenant, &format!("st:{}", t.state.as_str())),
            &id,
        ));
        p.push(Cmd::zrem(self.tenant_index(tenant, "ended"), &id));
        for g in ["active", "active_exp", "exp", "dexp"] {
            p.push(Cmd::zrem(self.global(g), &member));
        }
        self.exec::<Value>(p).await.map(drop)
    }

    async fn delete_keys(&self, tenant: &str, id: TraceId) -> Result<(), StoreError> {
        let k = self.trace_keys(tenant, id);
        let mut conn = self.conn()?;
        ::redis::cmd("DEL")
            .arg(&k.row)
            .arg(&k.spans)
            .arg(&k.keys)
            .arg(&k.events)
            .query_async::<()>(&mut conn)
            .await
            .map_err(redis_err)
    }

    fn model(&self, now: Timestamp) -> Model {
        Model {
            now,
            retention: self.retention,
            capture: self.capture,
        }
    }

    /// Reads, computes and commits until no other writer interferes. `step` runs the
    /// write model on what was read; `Ok(None)` writes nothing.
    async fn write_trace<T>(
        &self,
        tenant: &str,
        id: TraceId,
        span_ids: &[u64],
        client_keys: &[String],
        mut step: impl FnMut(
            Option<Loaded<Port>>,
            Model,
        ) -> Result<Option<(Written<Port>, T)>, StoreError>,
    ) -> Result<Option<(Trace, Vec<Event>, T)>, StoreError> {
        const ATTEMPTS: u32 = 200;
        for attempt in 0..ATTEMPTS {
            let (ver, loaded) = match self.load_for(tenant, id, span_ids, client_keys).await? {
                Some((ver, l)) => (Some(ver), Some(l)),
                None => (None, None),
            };
            let now = self.clock.now();
            let before = loaded.as_ref().map(|l| l.trace.clone());
            let Some((written, extra)) = step(loaded, self.model(now))? else {
                return Ok(None);
            };
            // A new trace over a stale one's keys replaces them.
            let reset = written.created && ver.is_some();
            let ver = ver.unwrap_or_default();
            if self.commit(&written, &ver, reset, now).await? {
                let before = before.filter(|_| !reset);
                self.index(&written.trace, written.data_expires_at, before.as_ref())
                    .await?;
                return Ok(Some((written.trace, written.events, extra)));
            }
            if attempt > 3 {
                tokio::time::sleep(Duration::from_micros(50 * u64::from(attempt.min(40)))).await;
            } else {
                tokio::task::yield_now().await;
            }
        }
        Err(StoreError::Overloaded(format!(
            "trace {id}: too many concurrent writers"
        )))
    }

    async fn fence(&self, fence: &Lease) -> Result<(), StoreError> {
        if self.lease_cas_call("check", fence, Duration::ZERO).await? {
            Ok(())
        } else {
            Err(StoreError::LeaseLost(format!(
                "lease {} token {} is no longer held by {}",
                fence.name, fence.token, fence.holder
            )))
        }
    }

    fn lease_keys(&self, name: &str) -> (String, String) {
        let base = format!("{}:lease:{{{name}}}", self.prefix);
        (base.clone(), format!("{base}:token"))
    }

    async fn lease_cas_call(
        &self,
        mode: &str,
        lease: &Lease,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = self.clock.now();
        let (key, _) = self.lease_keys(&lease.name);
        let mut conn = self.conn()?;
        let n: i64 = self
            .lease_cas
            .key(key)
            .arg(mode)
            .arg(&lease.holder)
            .arg(lease.token)
            .arg(micros(now))
            .arg(micros(now.saturating_add(ttl)))
            .arg((ttl.as_millis() as i64).max(1))
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err)?;
        Ok(n == 1)
    }

    /// Loads the traces behind index members (missing ones are `None`).
    async fn load_many(
        &self,
        tenant: &str,
        ids: &[TraceId],
    ) -> Result<Vec<Option<Trace>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let cmds = ids
            .iter()
            .map(|id| Cmd::hget(self.trace_keys(tenant, *id).row, "doc"))
            .collect();
        let docs: Vec<Option<String>> = self.exec(cmds).await?;
        docs.into_iter()
            .map(|d| {
                d.map(|d| serde_json::from_str::<Trace>(&d).map_err(json_err))
                    .transpose()
            })
            .collect()
    }

    async fn zrem(&self, key: String, members: Vec<String>) -> Result<(), StoreError> {
        if members.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn()?;
        ::redis::cmd("ZREM")
            .arg(key)
            .arg(members)
            .query_async::<()>(&mut conn)
            .await
            .map_err(redis_err)
    }

    async fn delete_one(&self, tenant: &str, id: TraceId) -> Result<Option<Trace>, StoreError> {
        let Some(l) = self.load(tenant, id).await? else {
            return Ok(None);
        };
        self.delete_keys(tenant, id).await?;
        self.unindex(&l.trace).await?;
        Ok(Some(l.trace))
    }
}

/// Feeds this process's hub from the live channel; reconnects with backoff.
async fn listen(
    urls: Vec<String>,
    channel: String,
    hub: crate::InProcessHub,
    echoes: Echoes,
    closed: Arc<AtomicBool>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    use futures::StreamExt;
    let mut ready = Some(ready);
    let mut backoff = Duration::from_millis(100);
    let mut next = 0usize;
    while !closed.load(Ordering::Relaxed) {
        let url = &urls[next % urls.len()];
        next += 1;
        let attempt = async {
            let client = ::redis::Client::open(url.as_str())?;
            let mut ps = client.get_async_pubsub().await?;
            ps.subscribe(&channel).await?;
            Ok::<_, RedisError>(ps)
        };
        let ps = match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(Ok(ps)) => ps,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "live channel: subscribe failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
            Err(_) => {
                tracing::warn!("live channel: subscribe timed out; retrying");
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        echoes.up.store(true, Ordering::Relaxed);
        match ready.take() {
            Some(r) => {
                let _ = r.send(());
            }
            // Subscribers that arrived while the channel was down may have missed events
            // committed before the subscription was back: they reconnect and replay too.
            None => hub.close_all(),
        }
        let mut stream = ps.into_on_message();
        while let Some(msg) = stream.next().await {
            // Borrowed, not copied: the message holds every event of the commit.
            let payload = msg.get_payload_bytes();
            let split = payload.iter().position(|b| *b == b'\n');
            let Some((head, body)) = split.map(|i| (&payload[..i], &payload[i + 1..])) else {
                tracing::warn!("live channel: bad message");
                continue;
            };
            let h = match serde_json::from_slice::<LiveHeader>(head) {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(error = %e, "live channel: bad message");
                    continue;
                }
            };
            if hub.subscriber_count() > 0 {
                match serde_json::from_slice::<Vec<Event>>(body) {
                    Ok(events) => {
                        let meta = TraceMeta {
                            agent_id: h.agent_id,
                            state: h.state.parse().ok(),
                        };
                        hub.publish(&h.tenant, &meta, &events);
                    }
                    Err(e) => tracing::warn!(error = %e, "live channel: bad events"),
                }
            }
            let waiter = echoes
                .waiters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&h.v);
            if let Some(w) = waiter {
                let _ = w.send(());
            }
        }
        // Whatever was published while the connection was down never reached this hub.
        echoes.up.store(false, Ordering::Relaxed);
        hub.close_all();
        if !closed.load(Ordering::Relaxed) {
            tracing::warn!("live channel: connection lost; reconnecting");
            tokio::time::sleep(backoff).await;
        }
    }
}

fn matches(t: &Trace, f: &TraceFilter) -> bool {
    let eq = |a: &Option<String>, b: &Option<String>| b.is_none() || a == b;
    eq(&t.agent_id, &f.agent_id)
        && eq(&t.user_id, &f.user_id)
        && eq(&t.session_id, &f.session_id)
        && f.state.as_ref().is_none_or(|s| *s == t.state)
        && f.created_after.is_none_or(|a| t.created_at >= a)
        && f.created_before.is_none_or(|b| t.created_at < b)
        && f.has_error.is_none_or(|e| (t.rollups.error_count > 0) == e)
        && f.min_duration_ms
            .is_none_or(|d| t.rollups.duration_ms.is_some_and(|x| x >= d))
}

/// Input ids a batch needs state for.
fn needs(events: &[EventInput]) -> (Vec<u64>, Vec<String>) {
    let mut spans = Vec::new();
    let mut keys = Vec::new();
    for e in events {
        let (sid, key) = match e {
            EventInput::SpanStarted { span } | EventInput::SpanEnded { span } => {
                (Some(span.span_id), None)
            }
            EventInput::Log { id, record, .. } => (record.span_id, id.clone()),
            EventInput::Error { id, record, .. } => (record.span_id, id.clone()),
        };
        if let Some(s) = sid {
            if !spans.contains(&s.as_u64()) {
                spans.push(s.as_u64());
            }
        }
        if let Some(k) = key {
            keys.push(k);
        }
    }
    (spans, keys)
}

#[async_trait]
impl Traces for RedisStore {
    async fn create_trace(
        &self,
        tenant: &str,
        new: NewTrace,
    ) -> Result<(Trace, EventCounts), StoreError> {
        let id = new.trace_id.unwrap_or_else(TraceId::new_v7);
        let r = self
            .write_trace(tenant, id, &[], &[], |loaded, model| {
                let w = model.create(tenant, id, new.clone(), loaded)?;
                Ok(Some((w, ())))
            })
            .await?;
        let (t, e, ()) = r.ok_or_else(|| StoreError::Internal("create wrote nothing".into()))?;
        Ok((t, EventCounts::of(&e)))
    }

    async fn append(&self, req: AppendRequest) -> Result<AppendOutcome, StoreError> {
        let (span_ids, keys) = needs(&req.events);
        let AppendRequest {
            tenant,
            trace_id,
            create_if_missing,
            events,
            end,
        } = req;
        let r = self
            .write_trace(&tenant, trace_id, &span_ids, &keys, |loaded, model| {
                let w = model.append(
                    &tenant,
                    trace_id,
                    loaded,
                    create_if_missing.clone(),
                    events.iter().cloned(),
                    end.clone(),
                )?;
                let outcome = AppendOutcome {
                    accepted: w.accepted,
                    duplicates: w.duplicates,
                    created: w.created,
                    last_seq: w.trace.last_seq,
                    stored: EventCounts::default(),
                };
                Ok(Some((w, outcome)))
            })
            .await?;
        let (_, events, mut outcome) =
            r.ok_or_else(|| StoreError::Internal("append wrote nothing".into()))?;
        outcome.stored = EventCounts::of(&events);
        Ok(outcome)
    }

    async fn update_trace(
        &self,
        tenant: &str,
        id: TraceId,
        patch: TracePatch,
    ) -> Result<(Trace, EventCounts), StoreError> {
        let r = self
            .write_trace(tenant, id, &[], &[], |loaded, model| {
                let w = model.patch(id, loaded, patch.clone())?;
                Ok(Some((w, ())))
            })
            .await?;
        let (t, e, ()) = r.ok_or_else(|| StoreError::Internal("update wrote nothing".into()))?;
        Ok((t, EventCounts::of(&e)))
    }

    async fn get_trace(&self, tenant: &str, id: TraceId) -> Result<Option<Trace>, StoreError> {
        let now = self.clock.now();
        Ok(self
            .load(tenant, id)
            .await?
            .map(|l| l.trace)
            .filter(|t| t.expires_at > now))
    }

    async fn get_spans(&self, tenant: &str, id: TraceId) -> Result<Option<Vec<Span>>, StoreError> {
        Ok(self.get_trace_with_spans(tenant, id).await?.map(|(_, s)| s))
    }

    async fn get_trace_with_spans(
        &self,
        tenant: &str,
        id: TraceId,
    ) -> Result<Option<(Trace, Vec<Span>)>, StoreError> {
        let now = self.clock.now();
        let Some(l) = self.load(tenant, id).await? else {
            return Ok(None);
        };
        if l.trace.expires_at <= now {
            return Ok(None);
        }
        if l.dexp <= now.unix_nanos() {
            return Ok(Some((l.trace, Vec::new())));
        }
        // A span's current form is its latest span event, as in SQLite.
        let key = self.trace_keys(tenant, id).events;
        let mut latest: HashMap<SpanId, Span> = HashMap::new();
        let mut from = 1u64;
        loop {
            let (events, more) = self.event_page(&key, from).await?;
            for e in events {
                from = e.seq + 1;
                if let EventBody::SpanStarted(s) | EventBody::SpanEnded(s) = e.body {
                    latest.insert(s.span_id, s);
                }
            }
            if !more {
                break;
            }
        }
        let mut spans: Vec<Span> = latest.into_values().collect();
        spans.sort_by_key(|s| (s.start_time, s.span_id));
        Ok(Some((l.trace, spans)))
    }

    async fn list_traces(
        &self,
        tenant: &str,
        filter: &TraceFilter,
        page: &PageRequest,
    ) -> Result<Page<Trace>, StoreError> {
        let after = page.cursor.as_deref().map(decode_cursor).transpose()?;
        let limit = page.bounded_limit() as usize;
        let now = self.clock.now();
        // The most selective index the filter allows; every other filter is checked on the
        // trace itself.
        let which = if let Some(a) = &filter.agent_id {
            format!("a:{a}")
        } else if let Some(s) = &filter.session_id {
            format!("s:{s}")
        } else if let Some(u) = &filter.user_id {
            format!("u:{u}")
        } else if let Some(s) = &filter.state {
            format!("st:{}", s.as_str())
        } else {
            "all".to_string()
        };
        let key = self.tenant_index(tenant, &which);
        let mut max = match filter.created_before {
            Some(b) => micros(b).to_string(),
            None => "+inf".to_string(),
        };
        if let Some((t, _)) = after {
            let c = t.div_euclid(1000);
            if filter.created_before.is_none_or(|b| micros(b) > c) {
                max = c.to_string();
            }
        }
        let min = filter
            .created_after
            .map(|a| micros(a).to_string())
            .unwrap_or_else(|| "-inf".to_string());
        let mut skip = if after.is_none() { page.offset } else { 0 };
        let mut items: Vec<Trace> = Vec::new();
        // A chunk holds a full page, the row past it (which says there is a next page) and
        // the cursor's own row (the score bound is inclusive), so an unfiltered listing
        // reads each row once.
        let chunk = (limit * 2).clamp(64, 1000).max(limit + 2);
        let mut offset = 0usize;
        // Bounded: after `list_scan_rows` rows the page ends at the last row examined.
        let mut examined = 0usize;
        let mut last_examined: Option<(Timestamp, TraceId)> = None;
        let mut cut_short = false;
        loop {
            let mut conn = self.conn()?;
            let take = chunk.min(self.list_scan_rows.saturating_sub(examined).max(1));
            let ids: Vec<String> = ::redis::cmd("ZREVRANGEBYSCORE")
                .arg(&key)
                .arg(&max)
                .arg(&min)
                .arg("LIMIT")
                .arg(offset)
                .arg(take)
                .query_async(&mut conn)
                .await
                .map_err(redis_err)?;
            let n = ids.len();
            offset += n;
            examined += n;
            let parsed: Vec<TraceId> = ids.iter().filter_map(|s| s.parse().ok()).collect();
            let docs = self.load_many(tenant, &parsed).await?;
            let mut gone = Vec::new();
            let mut found: Vec<Trace> = Vec::new();
            for (id, doc) in parsed.iter().zip(docs) {
                match doc {
                    None => gone.push(id.to_string()),
                    Some(t) => {
                        if let Some((ct, cid)) = after {
                            if (t.created_at.unix_nanos(), t.trace_id) >= (ct, cid) {
                                continue;
                            }
                        }
                        let at = (t.created_at, t.trace_id);
                        if last_examined.is_none_or(|l| at < l) {
                            last_examined = Some(at);
                        }
                        if t.expires_at <= now || !matches(&t, filter) {
                            continue;
                        }
                        found.push(t);
                    }
                }
            }
            // Index entries of traces that are gone (their keys expired): cleaned lazily.
            self.zrem(key.clone(), gone).await?;
            found.sort_by_key(|t| std::cmp::Reverse((t.created_at, t.trace_id)));
            for t in found {
                if skip > 0 {
                    skip -= 1;
                    continue;
                }
                items.push(t);
            }
            if items.len() > limit || n < take {
                break;
            }
            // Only a row that still exists can carry the cursor on; rows whose trace is
            // gone were just removed from the index, so they are not examined twice.
            if examined >= self.list_scan_rows && last_examined.is_some() {
                cut_short = true;
                break;
            }
        }
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(encode_cursor)
        } else if cut_short {
            last_examined.map(|(t, id)| encode_position(t, id))
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    async fn read_events(
        &self,
        tenant: &str,
        id: TraceId,
        filter: &EventFilter,
    ) -> Result<Option<Vec<Event>>, StoreError> {
        let now = self.clock.now();
        let Some(l) = self.load(tenant, id).await? else {
            return Ok(None);
        };
        if l.trace.expires_at <= now {
            return Ok(None);
        }
        if l.dexp <= now.unix_nanos() {
            return Ok(Some(Vec::new()));
        }
        let key = self.trace_keys(tenant, id).events;
        let limit = filter.bounded_limit() as usize;
        let mut skip = filter.offset;
        let mut from = filter.after_seq + 1;
        let mut out = Vec::new();
        loop {
            let (events, more) = self.event_page(&key, from).await?;
            for e in events {
                from = e.seq + 1;
                if !filter.types.is_empty() && !filter.types.contains(&e.body.event_type()) {
                    continue;
                }
                if filter.component_id.is_some() && e.component_id != filter.component_id {
                    continue;
                }
                if skip > 0 {
                    skip -= 1;
                    continue;
                }
                out.push(e);
                if out.len() >= limit {
                    return Ok(Some(out));
                }
            }
            if !more {
                return Ok(Some(out));
            }
        }
    }

    async fn delete_trace(&self, tenant: &str, id: TraceId) -> Result<bool, StoreError> {
        let now = self.clock.now();
        Ok(self
            .delete_one(tenant, id)
            .await?
            .is_some_and(|t| t.expires_at > now))
    }

    async fn delete_ended_before(
        &self,
        tenant: &str,
        cutoff: Timestamp,
        limit: Option<u64>,
    ) -> Result<u64, StoreError> {
        let key = self.tenant_index(tenant, "ended");
        let limit = limit.unwrap_or(u64::MAX);
        let mut total = 0;
        let mut offset = 0u64;
        while total < limit {
            let mut conn = self.conn()?;
            let n = (limit - total).min(200);
            let ids: Vec<String> = ::redis::cmd("ZRANGEBYSCORE")
                .arg(&key)
                .arg("-inf")
                .arg(micros(cutoff))
                .arg("LIMIT")
                .arg(offset)
                .arg(n)
                .query_async(&mut conn)
                .await
                .map_err(redis_err)?;
            if ids.is_empty() {
                break;
            }
            let parsed: Vec<TraceId> = ids.iter().filter_map(|s| s.parse().ok()).collect();
            let docs = self.load_many(tenant, &parsed).await?;
            let mut gone = Vec::new();
            for (id, doc) in parsed.iter().zip(docs) {
                match doc {
                    Some(t) if t.ended_at.is_some_and(|e| e < cutoff) => {
                        self.delete_keys(tenant, *id).await?;
                        self.unindex(&t).await?;
                        total += 1;
                    }
                    Some(_) => offset += 1,
                    None => gone.push(id.to_string()),
                }
            }
            self.zrem(key.clone(), gone).await?;
        }
        Ok(total)
    }

    async fn count_ended_before(&self, tenant: &str, cutoff: Timestamp) -> Result<u64, StoreError> {
        let key = self.tenant_index(tenant, "ended");
        let c = micros(cutoff);
        let mut conn = self.conn()?;
        let below: u64 = ::redis::cmd("ZCOUNT")
            .arg(&key)
            .arg("-inf")
            .arg(format!("({c}"))
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        // Entries in the cutoff's own microsecond are checked exactly.
        let edge: Vec<String> = ::redis::cmd("ZRANGEBYSCORE")
            .arg(&key)
            .arg(c)
            .arg(c)
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        let parsed: Vec<TraceId> = edge.iter().filter_map(|s| s.parse().ok()).collect();
        let docs = self.load_many(tenant, &parsed).await?;
        let edge = docs
            .iter()
            .flatten()
            .filter(|t| t.ended_at.is_some_and(|e| e < cutoff))
            .count() as u64;
        Ok(below + edge)
    }
}

#[async_trait]
impl Lifecycle for RedisStore {
    async fn active_traces(&self) -> Result<u64, StoreError> {
        let now = self.clock.now();
        let mut conn = self.conn()?;
        ::redis::cmd("ZCOUNT")
            .arg(self.global("active_exp"))
            .arg(format!("({}", micros(now)))
            .arg("+inf")
            .query_async(&mut conn)
            .await
            .map_err(redis_err)
    }

    async fn sweep_orphans(
        &self,
        fence: &Lease,
        orphan_after: Duration,
        limit: u32,
    ) -> Result<Vec<Orphaned>, StoreError> {
        self.fence(fence).await?;
        let now = self.clock.now();
        let idle_before = now.saturating_sub(orphan_after);
        let mut conn = self.conn()?;
        let members: Vec<String> = ::redis::cmd("ZRANGEBYSCORE")
            .arg(self.global("active"))
            .arg("-inf")
            .arg(format!("({}", micros(idle_before)))
            .arg("LIMIT")
            .arg(0)
            .arg(limit.max(1))
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        let mut out = Vec::new();
        let mut stale = Vec::new();
        for m in members {
            let Some((tenant, id)) = Self::parse_member(&m) else {
                stale.push(m);
                continue;
            };
            // Each change is fenced: a holder that lost the lease stops at once.
            self.fence(fence).await?;
            let mut idle = Duration::ZERO;
            let r = self
                .write_trace(&tenant, id, &[], &[], |loaded, model| {
                    let Some(l) = loaded else {
                        return Ok(None);
                    };
                    match model.orphan(l, idle_before)? {
                        Orphan::Ended(w, i) => {
                            idle = i;
                            Ok(Some((w, ())))
                        }
                        Orphan::NotIdle(_) => Ok(None),
                    }
                })
                .await?;
            match r {
                Some(_) => out.push(Orphaned {
                    tenant,
                    trace_id: id,
                    idle,
                }),
                None => {
                    // Not a candidate after all (ended, active again, expired or gone):
                    // repair its index entry from the trace itself.
                    match self.load(&tenant, id).await? {
                        Some(l) if !l.trace.state.is_terminal() && l.trace.expires_at > now => {
                            self.index(&l.trace, l.dexp, None).await?
                        }
                        _ => stale.push(m),
                    }
                }
            }
        }
        if !stale.is_empty() {
            self.zrem(self.global("active"), stale.clone()).await?;
            self.zrem(self.global("active_exp"), stale).await?;
        }
        Ok(out)
    }

    async fn purge_expired(&self, fence: &Lease, max_rows: u32) -> Result<Purged, StoreError> {
        self.fence(fence).await?;
        let now = self.clock.now();
        let mut budget = i64::from(max_rows.max(1));
        let mut out = Purged::default();
        let mut conn = self.conn()?;
        let expired: Vec<String> = ::redis::cmd("ZRANGEBYSCORE")
            .arg(self.global("exp"))
            .arg("-inf")
            .arg(micros(now))
            .arg("LIMIT")
            .arg(0)
            .arg(budget)
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        out.more = expired.len() as i64 >= budget;
        for m in &expired {
            let Some((tenant, id)) = Self::parse_member(m) else {
                self.zrem(self.global("exp"), vec![m.clone()]).await?;
                continue;
            };
            match self.load(&tenant, id).await? {
                Some(l) if l.trace.expires_at > now => {
                    // Its expiry moved on; the index entry was behind.
                    self.index(&l.trace, l.dexp, None).await?;
                    continue;
                }
                None => {
                    let gone = Trace {
                        ..placeholder(&tenant, id)
                    };
                    self.unindex(&gone).await?;
                    continue;
                }
                Some(l) => {
                    let (rows, events, complete) = self.purge_data_of(&tenant, id, budget).await?;
                    out.events += events;
                    budget -= rows as i64;
                    if !complete || budget <= 0 {
                        out.more = true;
                        return Ok(out);
                    }
                    self.delete_keys(&tenant, id).await?;
                    self.unindex(&l.trace).await?;
                    out.traces += 1;
                    budget -= 1;
                    if budget <= 0 {
                        out.more = true;
                        return Ok(out);
                    }
                }
            }
        }
        let data_expired: Vec<String> = ::redis::cmd("ZRANGEBYSCORE")
            .arg(self.global("dexp"))
            .arg("-inf")
            .arg(micros(now))
            .arg("LIMIT")
            .arg(0)
            .arg(budget)
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        out.more |= data_expired.len() as i64 >= budget;
        for m in data_expired {
            let Some((tenant, id)) = Self::parse_member(&m) else {
                self.zrem(self.global("dexp"), vec![m]).await?;
                continue;
            };
            match self.load(&tenant, id).await? {
                Some(l) if l.dexp > now.unix_nanos() => {
                    self.index(&l.trace, l.dexp, None).await?;
                    continue;
                }
                _ => {}
            }
            let (rows, events, complete) = self.purge_data_of(&tenant, id, budget).await?;
            out.events += events;
            budget -= rows as i64;
            if !complete {
                out.more = true;
                break;
            }
            self.zrem(self.global("dexp"), vec![m]).await?;
            if budget <= 0 {
                out.more = true;
                break;
            }
        }
        Ok(out)
    }

    async fn health(&self) -> Result<(), StoreError> {
        // A replica that cannot hear the live channel would serve streams that miss events.
        if !self.echoes.up.load(Ordering::Relaxed) {
            return Err(StoreError::Unavailable(
                "redis: live channel not subscribed".into(),
            ));
        }
        let mut conn = self.conn()?;
        tokio::time::timeout(
            Duration::from_secs(2),
            ::redis::cmd("PING").query_async::<String>(&mut conn),
        )
        .await
        .map_err(|_| StoreError::Unavailable("redis: ping timed out".into()))?
        .map_err(redis_err)?;
        Ok(())
    }

    async fn shutdown(&self) {
        self.closed.store(true, Ordering::Relaxed);
        let handle = self
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(h) = handle {
            h.abort();
        }
    }
}

#[async_trait]
impl Leases for RedisStore {
    async fn try_acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let now = self.clock.now();
        let expires_at = now.saturating_add(ttl);
        let (key, token_key) = self.lease_keys(name);
        let mut conn = self.conn()?;
        let token: Option<u64> = self
            .lease_acquire
            .key(key)
            .key(token_key)
            .arg(holder)
            .arg(micros(now))
            .arg(micros(expires_at))
            .arg((ttl.as_millis() as i64).max(1))
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err)?;
        Ok(token.map(|token| Lease {
            name: name.to_string(),
            holder: holder.to_string(),
            token,
            expires_at,
        }))
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>, StoreError> {
        let expires_at = self.clock.now().saturating_add(ttl);
        Ok(self
            .lease_cas_call("renew", lease, ttl)
            .await?
            .then(|| Lease {
                expires_at,
                ..lease.clone()
            }))
    }

    async fn release_lease(&self, lease: &Lease) -> Result<bool, StoreError> {
        self.lease_cas_call("release", lease, Duration::ZERO).await
    }
}

impl LiveFeed for RedisStore {
    fn subscribe(&self, tenant: &str, scope: crate::Scope) -> crate::Subscription {
        self.hub.subscribe(tenant, scope)
    }

    fn subscriber_count(&self) -> usize {
        self.hub.subscriber_count()
    }
}

impl RedisStore {
    /// Deletes up to `budget` stream entries of a trace's data; returns the entries and
    /// the events they held, and whether none are left.
    async fn purge_data_of(
        &self,
        tenant: &str,
        id: TraceId,
        budget: i64,
    ) -> Result<(u64, u64, bool), StoreError> {
        let k = self.trace_keys(tenant, id);
        let mut conn = self.conn()?;
        let (rows, complete, events): (u64, i64, u64) = self
            .purge_data
            .key(&k.spans)
            .key(&k.keys)
            .key(&k.events)
            .arg(budget.max(0))
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err)?;
        Ok((rows, events, complete == 1))
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

/// A trace with only its identity, to remove index entries of one whose keys are gone
/// (its tenant indexes are left to lazy cleanup on read).
fn placeholder(tenant: &str, id: TraceId) -> Trace {
    let t = Timestamp::from_unix_nanos(0);
    Trace {
        trace_id: id,
        tenant: tenant.to_string(),
        name: None,
        agent_id: None,
        session_id: None,
        user_id: None,
        state: State::Received,
        level: traceway_core::Level::Minimal,
        created_at: t,
        last_activity_at: t,
        ended_at: None,
        expires_at: t,
        last_seq: 0,
        metadata: Default::default(),
        rollups: Rollups::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(seq: u64) -> Event {
        Event {
            trace_id: TraceId::new_v7(),
            seq,
            time: Timestamp::from_unix_nanos(1_700_000_000_000_000_000),
            component_id: Some("c\n\"x\"".into()),
            body: EventBody::Log(Default::default()),
        }
    }

    /// A batch entry reads back whole; an entry of the earlier one-event form still reads.
    #[test]
    fn stream_entries_hold_a_batch_or_one_event() {
        let (a, b) = (log(7), log(8));
        let header = serde_json::to_string(&LiveHeaderRef {
            v: "v1",
            tenant: "t\n",
            agent_id: None,
            state: "RUNNING",
        })
        .expect("header");
        let batch = format!(
            "{header}\n[{},{}]",
            serde_json::to_string(&a).expect("a"),
            serde_json::to_string(&b).expect("b")
        );
        assert_eq!(
            entry_events(batch.as_bytes()).expect("batch"),
            vec![a.clone(), b]
        );
        let single = serde_json::to_string(&a).expect("single");
        assert_eq!(entry_events(single.as_bytes()).expect("single"), vec![a]);
    }
}
