//! The embedded backend: one SQLite file in WAL mode, one writer thread with group commit,
//! a small pool of read-only connections for queries.

mod cache;
mod keys;
mod row;
mod schema;
mod workflows;
mod writer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, params_from_iter, Connection, OpenFlags, OptionalExtension};
use tokio::sync::{mpsc, oneshot};
use traceway_core::{
    Event, EventBody, EventType, NewTrace, Span, Timestamp, Trace, TraceId, TracePatch,
};

use self::row::{read_trace_row, TRACE_COLUMNS};
use self::schema::internal;
pub use self::schema::open_writer_connection;
use self::writer::{Msg, Op, OpError, OpResult, WriterCtx};
use crate::shared::{decode_cursor, encode_cursor};
use crate::{
    AppendOutcome, AppendRequest, BackendError, CaptureConfig, Clock, EventCounts, EventFilter,
    Lease, Leases, Lifecycle, LifecycleError, LiveFeed, OpenError, Orphaned, Page, PageRequest,
    Purged, Retention, TraceError, TraceFilter, Traces,
};

/// Settings of the SQLite backend.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// The database file; its directory is created if missing.
    pub path: PathBuf,
    /// How long data is kept.
    pub retention: Retention,
    /// What capture keeps.
    pub capture: CaptureConfig,
    /// Commands that may wait for the writer; beyond this, callers wait up to
    /// `enqueue_timeout` and then get `Overloaded`.
    pub queue_capacity: usize,
    /// At most this many commands share one transaction.
    pub max_group: usize,
    /// How long a write may wait for room in the queue.
    pub enqueue_timeout: Duration,
    /// Read connections kept open.
    pub readers: usize,
    /// Traces the writer keeps in memory between commands (LRU).
    pub trace_cache: usize,
    /// Events a live subscriber may have waiting before it is dropped as lagging.
    pub subscriber_buffer: usize,
}

impl SqliteConfig {
    /// Defaults for a database at `path`.
    pub fn new(path: impl Into<PathBuf>) -> SqliteConfig {
        SqliteConfig {
            path: path.into(),
            retention: Retention::default(),
            capture: CaptureConfig::default(),
            queue_capacity: 4096,
            max_group: 512,
            enqueue_timeout: Duration::from_secs(5),
            readers: 4,
            trace_cache: 10_000,
            subscriber_buffer: 1024,
        }
    }
}

/// The SQLite store. Cheap to share behind an `Arc`.
pub struct SqliteStore {
    tx: mpsc::Sender<Msg>,
    readers: Arc<ReaderPool>,
    clock: Arc<dyn Clock>,
    enqueue_timeout: Duration,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    checkpointer: Checkpointer,
    hub: crate::InProcessHub,
}

/// One page of a trace's span events after a seq. Its `LIMIT` is written into the SQL (the
/// largest page and the row past it) and the reader takes only the rows it needs: with a
/// bound `LIMIT ?`, SQLite (this build, with STAT4) prepares the statement again on every
/// run, as it did the workflow purge (ADR 023).
const SPAN_PAGE_SQL: &str = "SELECT seq, body FROM events WHERE trace_ref = ?1 AND seq > ?2 \
     AND type IN ('span_started', 'span_ended') ORDER BY seq LIMIT 10001";
const _: () = assert!(crate::contract::MAX_SPAN_PAGE + 1 == 10_001);

/// SQLite's default page size, which this schema keeps.
const PAGE_BYTES: u64 = 4096;
/// The WAL is started over once it holds this much.
pub const WAL_LIMIT_BYTES: u64 = 64 * 1024 * 1024;

/// Copies committed WAL frames into the database from its own connection and thread, so
/// the writer never pays for the copying inside a commit. PASSIVE never blocks the writer
/// or readers, but under continuous writes it never quite catches up, and SQLite only
/// starts a WAL over once it was fully checkpointed: the file would grow without bound.
/// So the checkpointer reports the WAL's size, and the writer, between two groups, runs a
/// RESTART checkpoint once it passes the limit (it alone can find a moment without a
/// writer); little is left to copy by then.
struct Checkpointer {
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Checkpointer {
    const INTERVAL: Duration = Duration::from_millis(100);

    fn start(
        path: &std::path::Path,
        wal_frames: Arc<AtomicU64>,
    ) -> Result<Checkpointer, BackendError> {
        let conn = Connection::open(path).map_err(internal)?;
        conn.busy_timeout(Duration::from_secs(1))
            .map_err(internal)?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("tw-sqlite-ckpt".into())
            .spawn(move || {
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(Self::INTERVAL);
                    Self::checkpoint(&conn, &wal_frames);
                }
            })
            .map_err(|e| BackendError::internal_by("spawn checkpointer", e))?;
        Ok(Checkpointer {
            stop,
            handle: Mutex::new(Some(handle)),
        })
    }

    /// Copies what it can and reports how many frames the WAL holds.
    fn checkpoint(conn: &Connection, wal_frames: &AtomicU64) {
        // (busy, frames in the WAL, frames copied into the database)
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1)) {
            Ok(frames) => wal_frames.store(frames.max(0) as u64, Ordering::Relaxed),
            Err(e) => tracing::debug!(error = %e, "passive checkpoint skipped"),
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The read connections: at most `keep` open at once. A read waits for a permit before it
/// takes a connection (or opens one), so concurrent reads never open connections past
/// `keep` (each with its own page cache and a schema read when opened).
struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    keep: usize,
    permits: Arc<tokio::sync::Semaphore>,
    /// Connections opened so far (for the bound's test).
    opened: AtomicU64,
}

impl ReaderPool {
    fn open(&self) -> Result<Connection, BackendError> {
        self.opened.fetch_add(1, Ordering::Relaxed);
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(internal)?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(internal)?;
        Ok(conn)
    }

    /// An idle connection, if one is open; never opens one.
    fn try_take(&self) -> Option<Connection> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    /// Returns a connection taken with [`ReaderPool::try_take`].
    fn put_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.keep {
            idle.push(conn);
        }
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        let conn = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match conn {
            Some(c) => c,
            None => self.open()?,
        };
        let r = f(&conn);
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.keep {
            idle.push(conn);
        }
        r
    }
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database and starts the writer.
    pub fn open(cfg: SqliteConfig, clock: Arc<dyn Clock>) -> Result<SqliteStore, OpenError> {
        if let Some(dir) = cfg.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                BackendError::unavailable_by(format!("cannot create {}", dir.display()), e)
            })?;
        }
        let conn = schema::open_writer_connection(&cfg.path)?;

        let (tx, rx) = mpsc::channel(cfg.queue_capacity);
        let wal_frames = Arc::new(AtomicU64::new(0));
        let hub = crate::InProcessHub::new(cfg.subscriber_buffer);
        let ctx = WriterCtx {
            clock: clock.clone(),
            retention: cfg.retention,
            capture: cfg.capture,
            max_group: cfg.max_group.max(1),
            wal_frames: wal_frames.clone(),
            wal_limit_frames: WAL_LIMIT_BYTES / PAGE_BYTES,
            cache_capacity: cfg.trace_cache,
            hub: hub.clone(),
        };
        let checkpointer = Checkpointer::start(&cfg.path, wal_frames)?;
        let writer = std::thread::Builder::new()
            .name("tw-sqlite-write".into())
            .spawn(move || writer::run(conn, rx, ctx))
            .map_err(|e| BackendError::internal_by("spawn writer", e))?;
        Ok(SqliteStore {
            tx,
            readers: Arc::new(ReaderPool {
                path: cfg.path,
                idle: Mutex::new(Vec::new()),
                keep: cfg.readers.max(1),
                permits: Arc::new(tokio::sync::Semaphore::new(cfg.readers.max(1))),
                opened: AtomicU64::new(0),
            }),
            clock,
            enqueue_timeout: cfg.enqueue_timeout,
            writer: Mutex::new(Some(writer)),
            checkpointer,
            hub,
        })
    }

    /// The schema version this binary writes.
    pub fn schema_version() -> usize {
        schema::latest_version()
    }

    async fn write(&self, op: Op) -> Result<OpResult, OpError> {
        let (reply, rx) = oneshot::channel();
        match tokio::time::timeout(self.enqueue_timeout, self.tx.send(Msg::Op(op, reply))).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(BackendError::unavailable("store is shut down").into()),
            Err(_) => return Err(BackendError::overloaded("write queue full").into()),
        }
        rx.await
            .map_err(|_| BackendError::unavailable("writer stopped"))?
    }

    /// Runs `f` on a reader connection. A read never refuses, so it fails only with the
    /// backend's error, which comes back as the caller's family error.
    async fn read<T: Send + 'static, E: From<BackendError>>(
        &self,
        f: impl FnOnce(&Connection, Timestamp) -> Result<T, BackendError> + Send + 'static,
    ) -> Result<T, E> {
        let pool = self.readers.clone();
        // Held by the blocking task until it is done, also if this future is dropped.
        let permit = pool
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| BackendError::internal_by("reader permits", e))?;
        let now = self.clock.now();
        let r = tokio::task::spawn_blocking(move || {
            let r = pool.with(|c| f(c, now));
            drop(permit);
            r
        })
        .await
        .map_err(|e| BackendError::internal_by("reader task", e))?;
        Ok(r?)
    }
}

impl SqliteStore {
    /// Runs a point read (one primary-key lookup of a small row) on the calling task when
    /// a reader connection is idle: it takes a few microseconds, less than handing it to
    /// the blocking pool and waking the task again. Without an idle connection (opening
    /// one reads the schema) it goes the way of [`SqliteStore::read`].
    async fn read_point<T: Send + 'static, E: From<BackendError>>(
        &self,
        f: impl FnOnce(&Connection, Timestamp) -> Result<T, BackendError> + Send + 'static,
    ) -> Result<T, E> {
        let Ok(permit) = self.readers.permits.try_acquire() else {
            return self.read(f).await;
        };
        let Some(conn) = self.readers.try_take() else {
            drop(permit);
            return self.read(f).await;
        };
        let r = f(&conn, self.clock.now());
        self.readers.put_back(conn);
        drop(permit);
        Ok(r?)
    }
}

/// A writer reply of the wrong kind (a bug).
pub(crate) fn unexpected_reply<E: From<BackendError>>() -> E {
    BackendError::internal("unexpected writer reply").into()
}

/// The live row id and data expiry of a trace, if it exists and has not expired.
fn live_trace_ref(
    c: &Connection,
    tenant: &str,
    id: TraceId,
    now: Timestamp,
) -> Result<Option<(i64, i64)>, BackendError> {
    c.prepare_cached(
        "SELECT id, data_expires_at FROM traces WHERE tenant = ?1 AND trace_id = ?2 AND expires_at > ?3",
    )
    .and_then(|mut s| {
        s.query_row(params![tenant, &id.to_bytes()[..], now.unix_nanos()], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
    })
    .map_err(internal)
}

/// The span inside a stored `span_started` / `span_ended` event body.
pub(crate) fn span_of_event_body(body: &str) -> Result<Span, BackendError> {
    match serde_json::from_str(body) {
        Ok(EventBody::SpanStarted(s) | EventBody::SpanEnded(s)) => Ok(s),
        Ok(other) => Err(BackendError::internal(format!(
            "span points at a {} event",
            other.event_type().as_str()
        ))),
        Err(e) => Err(BackendError::internal(format!("stored span: {e}"))),
    }
}

/// Spans from fewer bodies than this are parsed on the reader's thread alone.
const PARALLEL_PARSE_FROM: usize = 2_048;

/// Most threads one trace's span bodies are parsed on.
const MAX_PARSE_THREADS: usize = 4;

/// The spans of the bodies at `ranges` of `bodies`, in the order of `ranges`. Parsing is
/// most of the cost of reading a large trace (ADR 037: ~8,700 instructions a span, more
/// than SQLite's read of its row), so a trace of [`PARALLEL_PARSE_FROM`] spans or more is
/// parsed in contiguous chunks on scoped threads, one per available core (at most
/// [`MAX_PARSE_THREADS`]), the reader's own thread taking the first chunk. This shortens
/// one large read; it does not make it cheaper (the same parses, plus a thread start per
/// extra chunk).
fn spans_of_bodies(bodies: &str, ranges: &[(usize, usize)]) -> Result<Vec<Span>, BackendError> {
    let parse = |part: &[(usize, usize)]| {
        part.iter()
            .map(|&(from, to)| span_of_event_body(&bodies[from..to]))
            .collect::<Result<Vec<Span>, _>>()
    };
    if ranges.len() < PARALLEL_PARSE_FROM {
        return parse(ranges);
    }
    // Asked once: `available_parallelism` reads the affinity mask and cgroup files.
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let threads = cores
        .min(MAX_PARSE_THREADS)
        .min(ranges.len() / (PARALLEL_PARSE_FROM / 2));
    if threads < 2 {
        return parse(ranges);
    }
    let chunk = ranges.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let mut chunks = ranges.chunks(chunk);
        let first = chunks.next().unwrap_or_default();
        let rest: Vec<_> = chunks.map(|c| scope.spawn(move || parse(c))).collect();
        let mut spans = parse(first)?;
        spans.reserve(ranges.len() - spans.len());
        for handle in rest {
            let part = handle
                .join()
                .map_err(|_| BackendError::internal("span parse thread panicked"))??;
            spans.extend(part);
        }
        Ok(spans)
    })
}

/// A WHERE clause under construction with its numbered parameters.
struct Query {
    sql: String,
    args: Vec<rusqlite::types::Value>,
}

impl Query {
    fn and(&mut self, clause: &str, v: rusqlite::types::Value) {
        self.args.push(v);
        self.sql
            .push_str(&format!(" AND {clause} ?{}", self.args.len()));
    }
}

/// The listing's SQL and its parameters (the second, `now`, is filled in by the reader),
/// and the page size.
fn listing_query(
    tenant: &str,
    filter: &TraceFilter,
    page: &PageRequest,
) -> Result<(String, Vec<rusqlite::types::Value>, u32), TraceError> {
    use rusqlite::types::Value;
    let after = page.cursor.as_deref().map(decode_cursor).transpose()?;
    let limit = page.bounded_limit();
    let mut q = Query {
        sql: format!("SELECT {TRACE_COLUMNS} FROM traces WHERE tenant = ?1 AND expires_at > ?2"),
        args: vec![Value::Text(tenant.to_string()), Value::Null],
    };
    for (col, v) in [
        ("agent_id", &filter.agent_id),
        ("user_id", &filter.user_id),
        ("session_id", &filter.session_id),
    ] {
        if let Some(v) = v {
            q.and(&format!("{col} ="), Value::Text(v.clone()));
        }
    }
    if let Some(s) = &filter.state {
        q.and("state =", Value::Text(s.as_str().to_string()));
    }
    if let Some(t) = filter.created_after {
        q.and("created_at >=", Value::Integer(t.unix_nanos()));
    }
    if let Some(t) = filter.created_before {
        q.and("created_at <", Value::Integer(t.unix_nanos()));
    }
    match filter.has_error {
        Some(true) => q.sql.push_str(" AND error_count > 0"),
        Some(false) => q.sql.push_str(" AND error_count = 0"),
        None => {}
    }
    if let Some(d) = filter.min_duration_ms {
        q.and("duration_ms >=", Value::Real(d));
    }
    if let Some((t, id)) = after {
        q.args.push(Value::Integer(t));
        q.args.push(Value::Blob(id.to_bytes().to_vec()));
        let n = q.args.len();
        q.sql
            .push_str(&format!(" AND (created_at, trace_id) < (?{}, ?{n})", n - 1));
    }
    let Query { mut sql, args } = q;
    if let Some(d) = filter
        .min_duration_ms
        .filter(|_| filter.has_error != Some(true))
    {
        // Served by `traces_by_duration` (ADR 042): one arm per bucket from the
        // threshold's up, each read newest first from the index; SQLite merges the
        // ordered arms (MERGE (UNION ALL)) and stops at the LIMIT, so a page reads its
        // own rows plus one look per bucket. The index is named: given another filter
        // (an agent, a time range) the planner could pick that filter's index in every
        // arm and read it once per bucket. With `has_error=true` the errored traces
        // are the smaller set: the planner's own choice, `traces_errored`, serves it.
        let arm = sql.replacen(
            "FROM traces WHERE",
            "FROM traces INDEXED BY traces_by_duration WHERE",
            1,
        );
        sql = crate::duration_index::buckets_from(d)
            .map(|b| format!("{arm} AND duration_bucket = {b}"))
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
    }
    // One row more than asked tells whether there is a next page.
    sql.push_str(&format!(
        " ORDER BY created_at DESC, trace_id DESC LIMIT {}",
        limit + 1
    ));
    if after.is_none() && page.offset > 0 {
        sql.push_str(&format!(" OFFSET {}", page.offset));
    }
    Ok((sql, args, limit))
}

#[async_trait]
impl Traces for SqliteStore {
    async fn create_trace(
        &self,
        tenant: &str,
        new: NewTrace,
    ) -> Result<(Trace, EventCounts), TraceError> {
        match self
            .write(Op::Create {
                tenant: tenant.to_string(),
                new,
            })
            .await?
        {
            OpResult::Trace(t, e) => Ok((t, EventCounts::of(&e))),
            _ => Err(unexpected_reply()),
        }
    }

    async fn append(&self, req: AppendRequest) -> Result<AppendOutcome, TraceError> {
        match self.write(Op::Append(req)).await? {
            OpResult::Append(o, _, _) => Ok(o),
            _ => Err(unexpected_reply()),
        }
    }

    async fn update_trace(
        &self,
        tenant: &str,
        id: TraceId,
        patch: TracePatch,
    ) -> Result<(Trace, EventCounts), TraceError> {
        match self
            .write(Op::Update {
                tenant: tenant.to_string(),
                id,
                patch,
            })
            .await?
        {
            OpResult::Trace(t, e) => Ok((t, EventCounts::of(&e))),
            _ => Err(unexpected_reply()),
        }
    }

    async fn get_trace(&self, tenant: &str, id: TraceId) -> Result<Option<Trace>, TraceError> {
        let tenant = tenant.to_string();
        self.read(move |c, now| {
            c.prepare_cached(&format!(
                "SELECT {TRACE_COLUMNS} FROM traces WHERE tenant = ?1 AND trace_id = ?2 AND expires_at > ?3"
            ))
            .and_then(|mut s| {
                s.query_row(params![tenant, &id.to_bytes()[..], now.unix_nanos()], |r| read_trace_row(r, 0))
                    .optional()
            })
            .map_err(internal)
        })
        .await
    }

    async fn get_spans(&self, tenant: &str, id: TraceId) -> Result<Option<Vec<Span>>, TraceError> {
        Ok(self.get_trace_with_spans(tenant, id).await?.map(|(_, s)| s))
    }

    async fn get_trace_with_spans(
        &self,
        tenant: &str,
        id: TraceId,
    ) -> Result<Option<(Trace, Vec<Span>)>, TraceError> {
        let tenant = tenant.to_string();
        self.read(move |c, now| {
            let row = c
                .prepare_cached(&format!(
                    "SELECT id, data_expires_at, {TRACE_COLUMNS} FROM traces \
                     WHERE tenant = ?1 AND trace_id = ?2 AND expires_at > ?3"
                ))
                .and_then(|mut s| {
                    s.query_row(params![tenant, &id.to_bytes()[..], now.unix_nanos()], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, i64>(1)?,
                            read_trace_row(r, 2)?,
                        ))
                    })
                    .optional()
                })
                .map_err(internal)?;
            let Some((rowid, data_expires, trace)) = row else {
                return Ok(None);
            };
            if data_expires <= now.unix_nanos() {
                return Ok(Some((trace, Vec::new())));
            }
            // A span's current form is its latest span event.
            let mut stmt = c
                .prepare_cached(
                    "SELECT span_id, body FROM events WHERE trace_ref = ?1 \
                     AND type IN ('span_started', 'span_ended') ORDER BY seq",
                )
                .map_err(internal)?;
            // The bodies are copied into one buffer and each span's latest is kept by its
            // place in it: one allocation for the trace rather than one per event (ADR 037).
            let mut rows = stmt.query([rowid]).map_err(internal)?;
            let mut bodies = String::new();
            let mut latest: std::collections::HashMap<i64, (usize, usize)> =
                std::collections::HashMap::new();
            while let Some(r) = rows.next().map_err(internal)? {
                let span_id = r.get::<_, i64>(0).map_err(internal)?;
                let body = r
                    .get_ref(1)
                    .and_then(|v| Ok(v.as_str()?))
                    .map_err(internal)?;
                let at = bodies.len();
                bodies.push_str(body);
                latest.insert(span_id, (at, bodies.len()));
            }
            let ranges: Vec<(usize, usize)> = latest.into_values().collect();
            let spans = spans_of_bodies(&bodies, &ranges)?;
            Ok(Some((trace, crate::shared::sort_spans(spans))))
        })
        .await
    }

    async fn get_span_page(
        &self,
        tenant: &str,
        id: TraceId,
        page: &crate::SpanPageRequest,
    ) -> Result<Option<(Trace, crate::SpanPage)>, TraceError> {
        let tenant = tenant.to_string();
        let limit = page.bounded_limit();
        let after = i64::try_from(page.after_seq).unwrap_or(i64::MAX);
        self.read(move |c, now| {
            let row = c
                .prepare_cached(&format!(
                    "SELECT id, data_expires_at, {TRACE_COLUMNS} FROM traces \
                     WHERE tenant = ?1 AND trace_id = ?2 AND expires_at > ?3"
                ))
                .and_then(|mut s| {
                    s.query_row(params![tenant, &id.to_bytes()[..], now.unix_nanos()], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, i64>(1)?,
                            read_trace_row(r, 2)?,
                        ))
                    })
                    .optional()
                })
                .map_err(internal)?;
            let Some((rowid, data_expires, trace)) = row else {
                return Ok(None);
            };
            if data_expires <= now.unix_nanos() {
                return Ok(Some((trace, crate::SpanPage::default())));
            }
            // A seek on (trace_ref, seq): the page costs its own rows, and one more that
            // says whether another page follows (a full last page has no cursor). The rows
            // come in index order, so taking `limit + 1` of them stops the walk there.
            let mut stmt = c.prepare_cached(SPAN_PAGE_SQL).map_err(internal)?;
            let rows = stmt
                .query_map(params![rowid, after], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(internal)?;
            let mut events = Vec::new();
            for row in rows.take(limit as usize + 1) {
                let (seq, body) = row.map_err(internal)?;
                events.push((seq as u64, span_of_event_body(&body)?));
            }
            let more = events.len() > limit as usize;
            events.truncate(limit as usize);
            Ok(Some((trace, crate::contract::span_page_of(events, more))))
        })
        .await
    }

    async fn list_traces(
        &self,
        tenant: &str,
        filter: &TraceFilter,
        page: &PageRequest,
    ) -> Result<Page<Trace>, TraceError> {
        use rusqlite::types::Value;
        let (sql, mut args, limit) = listing_query(tenant, filter, page)?;
        self.read(move |c, now| {
            args[1] = Value::Integer(now.unix_nanos());
            let mut stmt = c.prepare_cached(&sql).map_err(internal)?;
            let rows = stmt
                .query_map(params_from_iter(args.iter()), |r| read_trace_row(r, 0))
                .map_err(internal)?;
            let mut items = rows.collect::<Result<Vec<_>, _>>().map_err(internal)?;
            let next_cursor = if items.len() > limit as usize {
                items.truncate(limit as usize);
                items.last().map(encode_cursor)
            } else {
                None
            };
            Ok(Page { items, next_cursor })
        })
        .await
    }

    async fn read_events(
        &self,
        tenant: &str,
        id: TraceId,
        filter: &EventFilter,
    ) -> Result<Option<Vec<Event>>, TraceError> {
        use rusqlite::types::Value;
        let tenant = tenant.to_string();
        let mut sql = String::from(
            "SELECT seq, time, component_id, body FROM events WHERE trace_ref = ?1 AND seq > ?2",
        );
        let mut args: Vec<Value> = vec![Value::Null, Value::Integer(filter.after_seq as i64)];
        if !filter.types.is_empty() {
            let marks: Vec<String> = filter
                .types
                .iter()
                .map(|t| {
                    args.push(Value::Text(t.as_str().to_string()));
                    format!("?{}", args.len())
                })
                .collect();
            sql.push_str(&format!(" AND type IN ({})", marks.join(", ")));
        }
        if let Some(comp) = &filter.component_id {
            args.push(Value::Text(comp.clone()));
            sql.push_str(&format!(" AND component_id = ?{}", args.len()));
        }
        sql.push_str(&format!(
            " ORDER BY seq LIMIT {} OFFSET {}",
            filter.bounded_limit(),
            filter.offset
        ));
        self.read(move |c, now| {
            let Some((rowid, data_expires)) = live_trace_ref(c, &tenant, id, now)? else {
                return Ok(None);
            };
            if data_expires <= now.unix_nanos() {
                return Ok(Some(Vec::new()));
            }
            args[0] = Value::Integer(rowid);
            let mut stmt = c.prepare_cached(&sql).map_err(internal)?;
            let rows = stmt
                .query_map(params_from_iter(args.iter()), |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                })
                .map_err(internal)?;
            let mut events = Vec::new();
            for row in rows {
                let (seq, time, component_id, body) = row.map_err(internal)?;
                let body: EventBody = serde_json::from_str(&body)
                    .map_err(|e| BackendError::internal(format!("stored event: {e}")))?;
                events.push(Event {
                    trace_id: id,
                    seq: seq as u64,
                    time: Timestamp::from_unix_nanos(time),
                    component_id,
                    body,
                });
            }
            Ok(Some(events))
        })
        .await
    }

    async fn count_events(
        &self,
        tenant: &str,
        id: TraceId,
    ) -> Result<Option<EventCounts>, TraceError> {
        let tenant = tenant.to_string();
        self.read(move |c, now| {
            let Some((rowid, data_expires)) = live_trace_ref(c, &tenant, id, now)? else {
                return Ok(None);
            };
            let mut counts = EventCounts::default();
            if data_expires <= now.unix_nanos() {
                return Ok(Some(counts));
            }
            // One range of `events_by_seq`; each row's type is read, never its body.
            let mut stmt = c
                .prepare_cached(
                    "SELECT type, count(*) FROM events WHERE trace_ref = ?1 GROUP BY type",
                )
                .map_err(internal)?;
            let rows = stmt
                .query_map([rowid], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                })
                .map_err(internal)?;
            for row in rows {
                let (t, n) = row.map_err(internal)?;
                let t: EventType = t
                    .parse()
                    .map_err(|e| BackendError::internal(format!("stored event: {e}")))?;
                counts.add_n(t, u32::try_from(n).unwrap_or(u32::MAX));
            }
            Ok(Some(counts))
        })
        .await
    }

    async fn delete_trace(&self, tenant: &str, id: TraceId) -> Result<bool, TraceError> {
        match self
            .write(Op::Delete {
                tenant: tenant.to_string(),
                id,
            })
            .await?
        {
            OpResult::Deleted(d) => Ok(d),
            _ => Err(unexpected_reply()),
        }
    }

    async fn delete_ended_before(
        &self,
        tenant: &str,
        cutoff: Timestamp,
        limit: Option<u64>,
    ) -> Result<u64, TraceError> {
        // Small batches, each its own command, so ingest keeps flowing between them.
        let mut total = 0;
        let limit = limit.unwrap_or(u64::MAX);
        while total < limit {
            let op = Op::DeleteEndedBefore {
                tenant: tenant.to_string(),
                cutoff,
                limit: (limit - total).min(200) as u32,
            };
            match self.write(op).await? {
                OpResult::Count(0) => break,
                OpResult::Count(n) => total += n,
                _ => return Err(unexpected_reply()),
            }
        }
        Ok(total)
    }

    async fn count_ended_before(&self, tenant: &str, cutoff: Timestamp) -> Result<u64, TraceError> {
        let tenant = tenant.to_string();
        self.read(move |c, _| {
            c.prepare_cached("SELECT count(*) FROM traces WHERE tenant = ?1 AND ended_at < ?2")
                .and_then(|mut s| {
                    s.query_row(params![tenant, cutoff.unix_nanos()], |r| r.get::<_, i64>(0))
                })
                .map(|n| n as u64)
                .map_err(internal)
        })
        .await
    }

    async fn stored_bytes(&self, tenant: &str) -> Result<u64, TraceError> {
        let tenant = tenant.to_string();
        self.read(move |c, _| {
            c.prepare_cached("SELECT bytes FROM tenant_usage WHERE tenant = ?1")
                .and_then(|mut s| s.query_row([tenant], |r| r.get::<_, i64>(0)).optional())
                .map(|n| n.unwrap_or(0).max(0) as u64)
                .map_err(internal)
        })
        .await
    }

    async fn put_analysis(
        &self,
        tenant: &str,
        id: TraceId,
        digest: traceway_core::analysis::AnalysisDigest,
    ) -> Result<bool, TraceError> {
        let mut stored = self
            .put_analyses(vec![(tenant.to_string(), id, digest)])
            .await?;
        Ok(stored.pop().unwrap_or(false))
    }

    async fn digest_inputs(
        &self,
        keys: &[(String, TraceId)],
        max_errors: usize,
    ) -> Result<Vec<Option<crate::DigestInput>>, TraceError> {
        let keys = keys.to_vec();
        // One reader round trip for the whole batch; each trace's span and error events
        // come from one range of `events_by_seq`, and the spans are parsed cut (ADR 028).
        self.read(move |c, now| {
            let mut out = Vec::with_capacity(keys.len());
            let mut spans = 0;
            for (tenant, id) in &keys {
                if spans >= crate::DIGEST_BATCH_SPANS {
                    break;
                }
                let input = digest_input(c, tenant, *id, now, max_errors)?;
                spans += input.as_ref().map_or(0, |i| i.spans.len());
                out.push(input);
            }
            Ok(out)
        })
        .await
    }

    async fn put_analyses(
        &self,
        digests: Vec<(String, TraceId, traceway_core::analysis::AnalysisDigest)>,
    ) -> Result<Vec<bool>, TraceError> {
        if digests.is_empty() {
            return Ok(Vec::new());
        }
        match self.write(Op::PutAnalyses { digests }).await? {
            OpResult::Stored(v) => Ok(v),
            _ => Err(unexpected_reply()),
        }
    }
}

/// One trace's [`crate::DigestInput`], read on `c`.
fn digest_input(
    c: &Connection,
    tenant: &str,
    id: TraceId,
    now: Timestamp,
    max_errors: usize,
) -> Result<Option<crate::DigestInput>, BackendError> {
    let row = c
        .prepare_cached(&format!(
            "SELECT id, data_expires_at, {TRACE_COLUMNS} FROM traces \
             WHERE tenant = ?1 AND trace_id = ?2 AND expires_at > ?3"
        ))
        .and_then(|mut s| {
            s.query_row(params![tenant, &id.to_bytes()[..], now.unix_nanos()], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    read_trace_row(r, 2)?,
                ))
            })
            .optional()
        })
        .map_err(internal)?;
    let Some((rowid, data_expires, trace)) = row else {
        return Ok(None);
    };
    let mut input = crate::DigestInput {
        trace,
        spans: Vec::new(),
        errors: Vec::new(),
    };
    if data_expires <= now.unix_nanos() {
        return Ok(Some(input));
    }
    let upto = input.trace.last_seq;
    let mut stmt = c
        .prepare_cached(
            "SELECT span_id, type = 'error', seq, time, component_id, body FROM events \
             WHERE trace_ref = ?1 AND type IN ('span_started', 'span_ended', 'error') \
             ORDER BY seq",
        )
        .map_err(internal)?;
    let mut rows = stmt.query([rowid]).map_err(internal)?;
    let mut bodies = String::new();
    let mut latest: std::collections::HashMap<i64, (usize, usize)> =
        std::collections::HashMap::new();
    while let Some(r) = rows.next().map_err(internal)? {
        let body = r
            .get_ref(5)
            .and_then(|v| Ok(v.as_str()?))
            .map_err(internal)?;
        if r.get::<_, bool>(1).map_err(internal)? {
            let seq = r.get::<_, i64>(2).map_err(internal)? as u64;
            if seq > upto || input.errors.len() >= max_errors {
                continue;
            }
            let body: EventBody = serde_json::from_str(body)
                .map_err(|e| BackendError::internal(format!("stored event: {e}")))?;
            input.errors.push(Event {
                trace_id: id,
                seq,
                time: Timestamp::from_unix_nanos(r.get::<_, i64>(3).map_err(internal)?),
                component_id: r.get::<_, Option<String>>(4).map_err(internal)?,
                body,
            });
            continue;
        }
        let span_id = r.get::<_, i64>(0).map_err(internal)?;
        let at = bodies.len();
        bodies.push_str(body);
        latest.insert(span_id, (at, bodies.len()));
    }
    let spans = latest
        .into_values()
        .map(|(from, to)| {
            traceway_core::analysis::digest_span_of_event_json(&bodies[from..to])
                .map_err(|e| BackendError::internal(format!("stored span: {e}")))
        })
        .collect::<Result<Vec<Span>, _>>()?;
    input.spans = crate::shared::sort_spans(spans);
    Ok(Some(input))
}

#[async_trait]
impl Lifecycle for SqliteStore {
    async fn active_traces(&self) -> Result<u64, LifecycleError> {
        self.read(|c, now| {
            // Covered by the active index (last_activity_at, expires_at) WHERE ended_at IS NULL.
            c.prepare_cached(
                "SELECT count(*) FROM traces WHERE ended_at IS NULL AND expires_at > ?1",
            )
            .and_then(|mut s| s.query_row([now.unix_nanos()], |r| r.get::<_, i64>(0)))
            .map(|n| n as u64)
            .map_err(internal)
        })
        .await
    }

    async fn sweep_orphans(
        &self,
        fence: &Lease,
        orphan_after: Duration,
        limit: u32,
    ) -> Result<Vec<Orphaned>, LifecycleError> {
        let op = Op::SweepOrphans {
            fence: fence.clone(),
            orphan_after,
            limit: limit.max(1),
        };
        match self.write(op).await? {
            OpResult::Orphaned(list) => Ok(list.into_iter().map(|o| o.orphan).collect()),
            _ => Err(unexpected_reply()),
        }
    }

    async fn purge_expired(&self, fence: &Lease, max_rows: u32) -> Result<Purged, LifecycleError> {
        let op = Op::PurgeExpired {
            fence: fence.clone(),
            max_rows,
        };
        match self.write(op).await? {
            OpResult::Purged(p) => Ok(p),
            _ => Err(unexpected_reply()),
        }
    }

    async fn health(&self) -> Result<(), LifecycleError> {
        if self.tx.is_closed() {
            return Err(BackendError::unavailable("writer stopped").into());
        }
        self.read(|c, _| c.query_row("SELECT 1", [], |_| Ok(())).map_err(internal))
            .await
    }

    async fn shutdown(&self) {
        self.checkpointer
            .stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let handle = self
            .checkpointer
            .handle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
        let (reply, done) = oneshot::channel();
        if self.tx.send(Msg::Shutdown(reply)).await.is_ok() {
            let _ = done.await;
        }
        let handle = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}

#[async_trait]
impl Leases for SqliteStore {
    async fn try_acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, BackendError> {
        let op = Op::AcquireLease {
            name: name.to_string(),
            holder: holder.to_string(),
            ttl,
        };
        match self.write(op).await? {
            OpResult::Lease(l) => Ok(l),
            _ => Err(unexpected_reply()),
        }
    }

    async fn renew_lease(
        &self,
        lease: &Lease,
        ttl: Duration,
    ) -> Result<Option<Lease>, BackendError> {
        let op = Op::RenewLease {
            lease: lease.clone(),
            ttl,
        };
        match self.write(op).await? {
            OpResult::Lease(l) => Ok(l),
            _ => Err(unexpected_reply()),
        }
    }

    async fn release_lease(&self, lease: &Lease) -> Result<bool, BackendError> {
        let op = Op::ReleaseLease {
            lease: lease.clone(),
        };
        match self.write(op).await? {
            OpResult::Deleted(released) => Ok(released),
            _ => Err(unexpected_reply()),
        }
    }
}

impl LiveFeed for SqliteStore {
    fn subscribe(&self, tenant: &str, scope: crate::Scope) -> crate::Subscription {
        self.hub.subscribe(tenant, scope)
    }

    fn subscriber_count(&self) -> usize {
        self.hub.subscriber_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::encode_position;

    /// The query plan of a listing, one line per step.
    fn plan(filter: &TraceFilter, page: &PageRequest) -> String {
        let mut conn = Connection::open_in_memory().expect("open");
        schema::migrate(&mut conn).expect("migrate");
        let (sql, mut args, _) = listing_query("t", filter, page).expect("query");
        args[1] = rusqlite::types::Value::Integer(0);
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("prepare");
        let rows: Vec<String> = stmt
            .query_map(params_from_iter(args.iter()), |r| r.get::<_, String>(3))
            .expect("plan")
            .collect::<Result<_, _>>()
            .expect("rows");
        rows.join("; ")
    }

    /// Bodies of `n` spans of every kind, some failed, some with content and attributes,
    /// laid end to end as the span read lays them, and each one's place.
    fn span_bodies(n: u64) -> (Vec<Span>, String, Vec<(usize, usize)>) {
        use traceway_core::{EventBody, LlmDetails, SpanId, SpanKind, StatusCode, ToolDetails};
        let t0 = Timestamp::from_unix_millis(1_700_000_000_000);
        let (mut spans, mut bodies, mut ranges) = (Vec::new(), String::new(), Vec::new());
        for i in 1..=n {
            let kind = SpanKind::ALL[i as usize % SpanKind::ALL.len()];
            let at = |ms: u64| Timestamp::from_unix_millis(t0.unix_millis() + ms as i64);
            let mut s = Span::new(
                SpanId::from_u64(i).expect("id"),
                kind,
                format!("s{}", i % 7),
                at(i),
            );
            s.parent_span_id = SpanId::from_u64(i / 2);
            s.end_time = (i % 5 != 0).then(|| at(i + 10));
            if i % 3 == 0 {
                s.status.code = StatusCode::Error;
                s.status.message = Some(format!("failed \"{i}\""));
            }
            if i % 4 == 0 {
                s.input = Some(serde_json::json!({"q": i, "tags": ["a", "b"]}));
                s.attributes.insert("k".into(), serde_json::json!(i));
            }
            match kind {
                SpanKind::Llm => {
                    s.llm = Some(LlmDetails {
                        model: Some("m".into()),
                        input_tokens: Some(i),
                        ..Default::default()
                    })
                }
                SpanKind::Tool => {
                    s.tool = Some(ToolDetails {
                        name: Some("t".into()),
                        arguments: Some(serde_json::json!({"x": i})),
                        ..Default::default()
                    })
                }
                _ => {}
            }
            let at = bodies.len();
            bodies
                .push_str(&serde_json::to_string(&EventBody::SpanEnded(s.clone())).expect("body"));
            ranges.push((at, bodies.len()));
            spans.push(s);
        }
        (spans, bodies, ranges)
    }

    /// Parsed on several threads or on one, the spans are the same and in the order of
    /// their places; a bad body in any chunk is an error, not a panic.
    #[test]
    fn span_bodies_parse_alike_on_one_thread_or_several() {
        for n in [
            0,
            1,
            100,
            PARALLEL_PARSE_FROM as u64 - 1,
            PARALLEL_PARSE_FROM as u64,
            5_001,
        ] {
            let (spans, bodies, ranges) = span_bodies(n);
            assert_eq!(
                spans_of_bodies(&bodies, &ranges).expect("parse"),
                spans,
                "{n}"
            );
        }
        let (_, mut bodies, mut ranges) = span_bodies(5_000);
        let at = bodies.len();
        bodies.push_str(r#"{"type":"span_ended","payload":{"span_id":"zz"}}"#);
        ranges.push((at, bodies.len()));
        let err = spans_of_bodies(&bodies, &ranges).expect_err("bad body");
        assert!(err.to_string().contains("stored span"), "{err}");
    }

    /// A span page walks the (trace_ref, seq) index in order, with no sort, so the reader
    /// stops after the rows it takes; and the statement stays prepared from one page to the
    /// next (a bound `LIMIT ?` was prepared again on every run).
    #[test]
    fn a_span_page_walks_the_index_in_order_and_stays_prepared() {
        let mut conn = Connection::open_in_memory().expect("open");
        schema::migrate(&mut conn).expect("migrate");
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {SPAN_PAGE_SQL}"))
            .expect("prepare")
            .query_map(params![1i64, 0i64], |r| r.get::<_, String>(3))
            .expect("plan")
            .collect::<Result<_, _>>()
            .expect("rows");
        let plan = plan.join("; ");
        assert!(
            plan.contains("USING INDEX") || plan.contains("USING COVERING INDEX"),
            "{plan}"
        );
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
        let mut stmt = conn.prepare_cached(SPAN_PAGE_SQL).expect("cached");
        for after in [0i64, 7, 700] {
            let mut rows = stmt.query(params![1i64, after]).expect("query");
            while rows.next().expect("row").is_some() {}
        }
        assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0);
    }

    fn pages() -> [PageRequest; 2] {
        let cursor = encode_position(Timestamp::from_unix_nanos(1_000), TraceId::new_v7());
        [
            PageRequest {
                limit: 50,
                ..Default::default()
            },
            PageRequest {
                cursor: Some(cursor),
                limit: 50,
                ..Default::default()
            },
        ]
    }

    /// `has_error=true` reads the partial index of errored traces in the listing's order:
    /// no scan of the tenant's traces, no sort (issue 17, ADR 042); with `min_duration_ms`
    /// too, the errored traces are read once, not once per duration bucket.
    #[test]
    fn has_error_is_served_by_the_errored_index() {
        for page in pages() {
            for min_duration_ms in [None, Some(100.0)] {
                let p = plan(
                    &TraceFilter {
                        has_error: Some(true),
                        min_duration_ms,
                        ..Default::default()
                    },
                    &page,
                );
                assert!(
                    p.contains("SEARCH traces USING INDEX traces_errored"),
                    "{p}"
                );
                assert!(!p.contains("UNION"), "{p}");
                assert!(!p.contains("SCAN"), "{p}");
                assert!(!p.contains("TEMP B-TREE"), "{p}");
            }
        }
    }

    /// `min_duration_ms` merges one index search per bucket from the threshold's up, each
    /// in the listing's order: no scan, no sort, with or without a cursor and other filters.
    #[test]
    fn min_duration_is_served_by_the_duration_index() {
        for page in pages() {
            for filter in [
                TraceFilter {
                    min_duration_ms: Some(2000.0),
                    ..Default::default()
                },
                TraceFilter {
                    min_duration_ms: Some(0.0),
                    agent_id: Some("planner".into()),
                    created_before: Some(Timestamp::from_unix_nanos(5_000)),
                    ..Default::default()
                },
            ] {
                let p = plan(&filter, &page);
                let arms =
                    crate::duration_index::buckets_from(filter.min_duration_ms.unwrap()).count();
                let searches = p
                    .matches("SEARCH traces USING INDEX traces_by_duration (tenant=? AND duration_bucket=?")
                    .count();
                assert_eq!(searches, arms, "{p}");
                assert!(p.contains("MERGE (UNION ALL)"), "{p}");
                assert!(!p.contains("SCAN"), "{p}");
                assert!(!p.contains("TEMP B-TREE"), "{p}");
            }
        }
    }

    /// Many reads at once (the analysis route's three, the digests, listings from many
    /// clients) share the `readers` connections: none is opened past them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_reads_open_no_connection_past_the_readers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = SqliteConfig::new(dir.path().join("traceway.db"));
        cfg.readers = 3;
        let store = Arc::new(SqliteStore::open(cfg, Arc::new(crate::SystemClock)).expect("open"));
        let (t, _) = store
            .create_trace("t", traceway_core::NewTrace::default())
            .await
            .expect("create");
        let reads: Vec<_> = (0..64)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    if i % 2 == 0 {
                        store
                            .get_trace_with_spans("t", t.trace_id)
                            .await
                            .map(|r| r.is_some())
                    } else {
                        store.get_trace("t", t.trace_id).await.map(|r| r.is_some())
                    }
                })
            })
            .collect();
        for r in reads {
            assert!(r.await.expect("task").expect("read"), "found");
        }
        let opened = store.readers.opened.load(Ordering::Relaxed);
        assert!((1..=3).contains(&opened), "{opened} connections opened");
        store.shutdown().await;
    }
}
