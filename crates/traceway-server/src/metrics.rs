//! The server's metrics, served at `GET /metrics` in the Prometheus text format (0.0.4).
//!
//! A small registry of atomics, rendered by hand: a handful of counters, two gauges read at
//! scrape time, and fixed-bucket histograms. Ingest counts and store write latency are
//! recorded by [`MeteredStore`], which wraps the store every handler sees, so every ingest
//! path (native API, OTLP) is counted the same way; the watchdog records its own.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use traceway_core::{EventType, NewTrace, Timestamp, Trace, TraceId, TracePatch};
use traceway_store::{
    AppendOutcome, AppendRequest, Decorates, EventCounts, Lease, LeasesLayer, LifecycleLayer,
    LiveFeedLayer, Orphaned, Purged, Store, StoreError, TracesLayer,
};

/// Upper bounds (seconds) of the latency buckets: 100 µs to 10 s.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5, 10.0,
];

/// A histogram with fixed buckets.
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last slot is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.buckets[LATENCY_BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
        );
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{} {sum}", braces(labels));
        let _ = writeln!(out, "{name}_count{} {cumulative}", braces(labels));
    }
}

/// A monotonically increasing count.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Store writes, for the latency histogram's `op` label.
#[derive(Debug, Clone, Copy)]
pub enum WriteOp {
    /// create_trace
    Create,
    /// append
    Append,
    /// update_trace
    Update,
    /// delete_trace
    Delete,
    /// delete_ended_before
    Cleanup,
    /// lease acquire / renew / release
    Lease,
    /// sweep_orphans
    Sweep,
    /// purge_expired
    Purge,
}

const WRITE_OPS: [(WriteOp, &str); 8] = [
    (WriteOp::Create, "create"),
    (WriteOp::Append, "append"),
    (WriteOp::Update, "update"),
    (WriteOp::Delete, "delete"),
    (WriteOp::Cleanup, "cleanup"),
    (WriteOp::Lease, "lease"),
    (WriteOp::Sweep, "sweep"),
    (WriteOp::Purge, "purge"),
];

/// Everything `/metrics` shows that is not read from the store at scrape time.
#[derive(Default)]
pub struct Metrics {
    /// Traces created (natively or by a first OTLP span).
    pub traces_created: Counter,
    /// Events stored by ingest, by [`EventType::ALL`] index.
    events: [Counter; 7],
    /// Inputs recognised as retries and not stored again.
    pub duplicates: Counter,
    write_latency: [Histogram; 8],
    /// 1 while this process holds the watchdog lease.
    leader: AtomicU64,
    /// Times this process took the watchdog lease.
    pub lease_acquired: Counter,
    /// Completed sweeps (orphans and purge).
    pub sweeps: Counter,
    /// Sweeps that stopped on a store error or a lost lease.
    pub sweep_errors: Counter,
    /// How long sweeps took.
    pub sweep_duration: Histogram,
    /// Traces the watchdog orphaned.
    pub orphaned: Counter,
    /// Trace rows purged after they expired.
    pub purged_traces: Counter,
    /// Event rows purged after they expired.
    pub purged_events: Counter,
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Whether this process holds the watchdog lease.
    pub fn set_leader(&self, leader: bool) {
        self.leader.store(u64::from(leader), Ordering::Relaxed);
    }

    /// Whether this process holds the watchdog lease.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed) == 1
    }

    /// Counts events written by ingest.
    pub fn record_events(&self, stored: &EventCounts) {
        for (i, (_, n)) in stored.iter().enumerate() {
            self.events[i].add(u64::from(n));
        }
    }

    /// Events of type `t` stored by ingest.
    pub fn events(&self, t: EventType) -> u64 {
        EventType::ALL
            .iter()
            .position(|x| *x == t)
            .map_or(0, |i| self.events[i].get())
    }

    /// Records how long a store write took.
    pub fn observe_write(&self, op: WriteOp, d: Duration) {
        self.write_latency[op as usize].observe(d);
    }

    /// The Prometheus text exposition. `active` is the store's count of active traces
    /// (absent when the store could not answer), `subscribers` its live subscribers.
    pub fn render(&self, active: Option<u64>, subscribers: usize) -> String {
        let mut out = String::with_capacity(4096);
        let head = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        if let Some(active) = active {
            head(
                &mut out,
                "traceway_active_traces",
                "gauge",
                "Traces not yet finished and not expired (the active index).",
            );
            let _ = writeln!(out, "traceway_active_traces {active}");
        }
        head(
            &mut out,
            "traceway_live_subscribers",
            "gauge",
            "Live stream subscribers connected to this process.",
        );
        let _ = writeln!(out, "traceway_live_subscribers {subscribers}");
        head(
            &mut out,
            "traceway_traces_created_total",
            "counter",
            "Traces created.",
        );
        let _ = writeln!(
            out,
            "traceway_traces_created_total {}",
            self.traces_created.get()
        );
        head(
            &mut out,
            "traceway_ingest_events_total",
            "counter",
            "Events stored by ingest, by type (span_started and span_ended count steps).",
        );
        for (i, t) in EventType::ALL.iter().enumerate() {
            let _ = writeln!(
                out,
                "traceway_ingest_events_total{{type=\"{}\"}} {}",
                t.as_str(),
                self.events[i].get()
            );
        }
        head(
            &mut out,
            "traceway_ingest_duplicates_total",
            "counter",
            "Ingested inputs recognised as retries and not stored again.",
        );
        let _ = writeln!(
            out,
            "traceway_ingest_duplicates_total {}",
            self.duplicates.get()
        );
        head(
            &mut out,
            "traceway_store_write_seconds",
            "histogram",
            "Latency of store writes, queueing and group commit included.",
        );
        for (op, name) in WRITE_OPS {
            self.write_latency[op as usize].render(
                &mut out,
                "traceway_store_write_seconds",
                &format!("op=\"{name}\""),
            );
        }
        head(
            &mut out,
            "traceway_watchdog_leader",
            "gauge",
            "1 while this process holds the watchdog lease and runs the sweeps.",
        );
        let _ = writeln!(
            out,
            "traceway_watchdog_leader {}",
            self.leader.load(Ordering::Relaxed)
        );
        for (name, help, c) in [
            (
                "traceway_watchdog_lease_acquired_total",
                "Times this process took the watchdog lease.",
                &self.lease_acquired,
            ),
            (
                "traceway_watchdog_sweeps_total",
                "Sweeps (orphans, then expired data) this process completed.",
                &self.sweeps,
            ),
            (
                "traceway_watchdog_sweep_errors_total",
                "Sweeps stopped by a store error or a lost lease.",
                &self.sweep_errors,
            ),
            (
                "traceway_traces_orphaned_total",
                "Traces this process marked ERRORED (orphaned) after they went idle.",
                &self.orphaned,
            ),
        ] {
            head(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", c.get());
        }
        head(
            &mut out,
            "traceway_watchdog_sweep_seconds",
            "histogram",
            "Duration of sweeps.",
        );
        self.sweep_duration
            .render(&mut out, "traceway_watchdog_sweep_seconds", "");
        head(
            &mut out,
            "traceway_expired_rows_deleted_total",
            "counter",
            "Expired rows physically deleted by the purge, by table.",
        );
        let _ = writeln!(
            out,
            "traceway_expired_rows_deleted_total{{table=\"traces\"}} {}",
            self.purged_traces.get()
        );
        let _ = writeln!(
            out,
            "traceway_expired_rows_deleted_total{{table=\"events\"}} {}",
            self.purged_events.get()
        );
        out
    }
}

/// The store as handlers and the watchdog see it: every call goes to the wrapped store;
/// writes are timed and ingest is counted on the way back. Reads, health and the live feed
/// pass through the layers' defaults.
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> MeteredStore {
        MeteredStore { inner, metrics }
    }

    async fn timed<T>(
        &self,
        op: WriteOp,
        f: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let start = Instant::now();
        let r = f.await;
        if r.is_ok() {
            self.metrics.observe_write(op, start.elapsed());
        }
        r
    }
}

impl Decorates for MeteredStore {
    fn inner(&self) -> &dyn Store {
        &*self.inner
    }
}

#[async_trait]
impl TracesLayer for MeteredStore {
    async fn create_trace(
        &self,
        tenant: &str,
        new: NewTrace,
    ) -> Result<(Trace, EventCounts), StoreError> {
        let r = self
            .timed(WriteOp::Create, self.inner.create_trace(tenant, new))
            .await?;
        self.metrics.traces_created.add(1);
        self.metrics.record_events(&r.1);
        Ok(r)
    }

    async fn append(&self, req: AppendRequest) -> Result<AppendOutcome, StoreError> {
        let out = self.timed(WriteOp::Append, self.inner.append(req)).await?;
        if out.created {
            self.metrics.traces_created.add(1);
        }
        self.metrics.duplicates.add(u64::from(out.duplicates));
        self.metrics.record_events(&out.stored);
        Ok(out)
    }

    async fn update_trace(
        &self,
        tenant: &str,
        id: TraceId,
        patch: TracePatch,
    ) -> Result<(Trace, EventCounts), StoreError> {
        let r = self
            .timed(WriteOp::Update, self.inner.update_trace(tenant, id, patch))
            .await?;
        self.metrics.record_events(&r.1);
        Ok(r)
    }

    async fn delete_trace(&self, tenant: &str, id: TraceId) -> Result<bool, StoreError> {
        self.timed(WriteOp::Delete, self.inner.delete_trace(tenant, id))
            .await
    }

    async fn delete_ended_before(
        &self,
        tenant: &str,
        cutoff: Timestamp,
        limit: Option<u64>,
    ) -> Result<u64, StoreError> {
        self.timed(
            WriteOp::Cleanup,
            self.inner.delete_ended_before(tenant, cutoff, limit),
        )
        .await
    }
}

#[async_trait]
impl LifecycleLayer for MeteredStore {
    async fn sweep_orphans(
        &self,
        fence: &Lease,
        orphan_after: Duration,
        limit: u32,
    ) -> Result<Vec<Orphaned>, StoreError> {
        self.timed(
            WriteOp::Sweep,
            self.inner.sweep_orphans(fence, orphan_after, limit),
        )
        .await
    }

    async fn purge_expired(&self, fence: &Lease, max_rows: u32) -> Result<Purged, StoreError> {
        self.timed(WriteOp::Purge, self.inner.purge_expired(fence, max_rows))
            .await
    }
}

impl traceway_store::ApiKeysLayer for MeteredStore {}

#[async_trait]
impl LeasesLayer for MeteredStore {
    async fn try_acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        self.timed(
            WriteOp::Lease,
            self.inner.try_acquire_lease(name, holder, ttl),
        )
        .await
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>, StoreError> {
        self.timed(WriteOp::Lease, self.inner.renew_lease(lease, ttl))
            .await
    }

    async fn release_lease(&self, lease: &Lease) -> Result<bool, StoreError> {
        self.timed(WriteOp::Lease, self.inner.release_lease(lease))
            .await
    }
}

impl LiveFeedLayer for MeteredStore {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "op=\"a\"");
        assert!(
            out.contains("x_seconds_bucket{op=\"a\",le=\"0.0001\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{op=\"a\",le=\"0.005\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{op=\"a\",le=\"10\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{op=\"a\",le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("x_seconds_count{op=\"a\"} 3\n"), "{out}");
        assert!(out.contains("x_seconds_sum{op=\"a\"} 60.00305\n"), "{out}");
        let mut out = String::new();
        h.render(&mut out, "y_seconds", "");
        assert!(out.contains("y_seconds_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("y_seconds_count 3\n"), "{out}");
    }
}
