//! The server's metrics, served at `GET /metrics` in the OpenMetrics text format by
//! `prometheus-client` (ADR 014).
//!
//! Ingest counts and store write latency are recorded by [`MeteredStore`], which wraps
//! the store every handler sees, so every ingest path (native API, OTLP) is counted the
//! same way; the watchdog records its own. Gauges read from the store (active traces,
//! live subscribers) are taken at scrape time.

mod labels;
mod store;

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter as PromCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram as PromHistogram;
use prometheus_client::registry::Registry;
use traceway_core::EventType;
use traceway_store::{EventCounts, StoreFailure};

pub use labels::{error_kind_label, WriteOp};
pub use store::MeteredStore;

/// Upper bounds (seconds) of the latency buckets: 100 µs to 10 s.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5, 10.0,
];

/// The `OpenMetrics` content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(&'static str, &'static str)>;
type HistogramFamily = Family<Labels, PromHistogram, fn() -> PromHistogram>;

fn latency_histogram() -> PromHistogram {
    PromHistogram::new(LATENCY_BUCKETS)
}

/// A latency histogram (a handle into the registry).
#[derive(Clone, Debug)]
pub struct Histogram(PromHistogram);

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram(latency_histogram())
    }
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        self.0.observe(d.as_secs_f64());
    }
}

/// A monotonically increasing count (a handle into the registry).
#[derive(Clone, Debug, Default)]
pub struct Counter(PromCounter<u64, AtomicU64>);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.inc_by(n);
    }

    /// The count.
    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

/// What `/metrics` reads from the store at scrape time.
#[derive(Clone, Copy, Debug, Default)]
pub struct AtScrape {
    /// The store's count of active traces; `None` when the store could not answer.
    pub active: Option<u64>,
    /// Live subscribers of this process.
    pub subscribers: usize,
    /// [`traceway_store::Lifecycle::commit_retries`].
    pub commit_retries: u64,
}

/// Everything `/metrics` shows that is not read from the store at scrape time. The
/// handles are resolved once, here, so recording never looks a label set up.
pub struct Metrics {
    registry: Registry,
    /// Traces created (natively or by a first OTLP span).
    pub traces_created: Counter,
    /// Events stored by ingest, by [`EventType::ALL`] index.
    events: [Counter; 7],
    /// Inputs recognised as retries and not stored again.
    pub duplicates: Counter,
    /// Latency of successful writes, by [`WriteOp`] index.
    write_latency: [Histogram; 8],
    /// Latency of failed writes, by op and error kind (a failure is the rare path, so
    /// its label set is looked up when it happens).
    failed_write_latency: HistogramFamily,
    /// Failed writes, by op and error kind.
    write_errors: Family<Labels, PromCounter<u64, AtomicU64>>,
    /// 1 while this process holds the watchdog lease.
    leader: Gauge<i64>,
    /// Connections open on the HTTP listener.
    pub http_connections: Gauge<i64>,
    /// Connections open on the OTLP/gRPC listener.
    pub grpc_connections: Gauge<i64>,
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

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every family registered and every series at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let traces_created = Counter::default();
        registry.register(
            "traceway_traces_created",
            "Traces created",
            traces_created.0.clone(),
        );
        let events_family = Family::<Labels, PromCounter<u64, AtomicU64>>::default();
        let events = EventType::ALL.map(|t| {
            Counter(
                events_family
                    .get_or_create(&vec![("type", t.as_str())])
                    .clone(),
            )
        });
        registry.register(
            "traceway_ingest_events",
            "Events stored by ingest, by type (span_started and span_ended count steps)",
            events_family,
        );
        let duplicates = Counter::default();
        registry.register(
            "traceway_ingest_duplicates",
            "Ingested inputs recognised as retries and not stored again",
            duplicates.0.clone(),
        );
        let latency_family: HistogramFamily = Family::new_with_constructor(latency_histogram);
        let write_latency = WriteOp::ALL.map(|op| {
            Histogram(
                latency_family
                    .get_or_create(&vec![("op", op.label())])
                    .clone(),
            )
        });
        registry.register(
            "traceway_store_write_seconds",
            "Latency of successful store writes, queueing and group commit included",
            latency_family,
        );
        let failed_write_latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "traceway_store_write_failed_seconds",
            "Latency of failed store writes, by op and error kind",
            failed_write_latency.clone(),
        );
        let write_errors = Family::<Labels, PromCounter<u64, AtomicU64>>::default();
        registry.register(
            "traceway_store_write_errors",
            "Failed store writes, by op and error kind",
            write_errors.clone(),
        );
        let connections = Family::<Labels, Gauge<i64>>::default();
        let http_connections = connections
            .get_or_create(&vec![("listener", "http")])
            .clone();
        let grpc_connections = connections
            .get_or_create(&vec![("listener", "grpc")])
            .clone();
        registry.register(
            "traceway_open_connections",
            "Connections open, by listener (at most --max-connections each)",
            connections,
        );
        let leader = Gauge::<i64>::default();
        registry.register(
            "traceway_watchdog_leader",
            "1 while this process holds the watchdog lease and runs the sweeps",
            leader.clone(),
        );
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.0.clone());
            c
        };
        let lease_acquired = counter(
            &mut registry,
            "traceway_watchdog_lease_acquired",
            "Times this process took the watchdog lease",
        );
        let sweeps = counter(
            &mut registry,
            "traceway_watchdog_sweeps",
            "Sweeps (orphans, then expired data) this process completed",
        );
        let sweep_errors = counter(
            &mut registry,
            "traceway_watchdog_sweep_errors",
            "Sweeps stopped by a store error or a lost lease",
        );
        let orphaned = counter(
            &mut registry,
            "traceway_traces_orphaned",
            "Traces this process marked ERRORED (orphaned) after they went idle",
        );
        let sweep_duration = Histogram::default();
        registry.register(
            "traceway_watchdog_sweep_seconds",
            "Duration of sweeps",
            sweep_duration.0.clone(),
        );
        let purged = Family::<Labels, PromCounter<u64, AtomicU64>>::default();
        let purged_traces = Counter(purged.get_or_create(&vec![("table", "traces")]).clone());
        let purged_events = Counter(purged.get_or_create(&vec![("table", "events")]).clone());
        registry.register(
            "traceway_expired_rows_deleted",
            "Expired rows physically deleted by the purge, by table",
            purged,
        );
        Metrics {
            registry,
            traces_created,
            events,
            duplicates,
            write_latency,
            failed_write_latency,
            write_errors,
            leader,
            http_connections,
            grpc_connections,
            lease_acquired,
            sweeps,
            sweep_errors,
            sweep_duration,
            orphaned,
            purged_traces,
            purged_events,
        }
    }

    /// Whether this process holds the watchdog lease.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Whether this process holds the watchdog lease.
    pub fn is_leader(&self) -> bool {
        self.leader.get() == 1
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

    /// Records how long a successful store write took.
    pub fn observe_write(&self, op: WriteOp, d: Duration) {
        self.write_latency[op as usize].observe(d);
    }

    /// Records a failed store write: counted and timed by op and error kind.
    pub fn observe_failed_write(&self, op: WriteOp, e: &impl StoreFailure, d: Duration) {
        let labels = vec![("op", op.label()), ("kind", error_kind_label(e))];
        self.write_errors.get_or_create(&labels).inc();
        self.failed_write_latency
            .get_or_create(&labels)
            .observe(d.as_secs_f64());
    }

    /// Failed writes of `op` with this error kind so far.
    pub fn write_errors(&self, op: WriteOp, kind: &'static str) -> u64 {
        self.write_errors
            .get_or_create(&vec![("op", op.label()), ("kind", kind)])
            .get()
    }

    /// The OpenMetrics text exposition ([`CONTENT_TYPE`]). `at_scrape` is what is read
    /// from the store when it is scraped.
    pub fn render(&self, at_scrape: &AtScrape) -> String {
        let AtScrape {
            active,
            subscribers,
            commit_retries,
        } = *at_scrape;
        let mut scrape = Registry::default();
        if let Some(active) = active {
            let g = Gauge::<i64>::default();
            g.set(i64::try_from(active).unwrap_or(i64::MAX));
            scrape.register(
                "traceway_active_traces",
                "Traces not yet finished and not expired (the active index)",
                g,
            );
        }
        let g = Gauge::<i64>::default();
        g.set(i64::try_from(subscribers).unwrap_or(i64::MAX));
        scrape.register(
            "traceway_live_subscribers",
            "Live stream subscribers connected to this process",
            g,
        );
        let retries = PromCounter::<u64, AtomicU64>::default();
        retries.inc_by(commit_retries);
        scrape.register(
            "traceway_store_commit_retries",
            "Trace commits read and computed again because another writer committed the \
             trace first (a compare-and-set conflict; Redis only, between processes)",
            retries,
        );
        let mut out = String::with_capacity(8192);
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut out, &scrape);
        let _ = encode_registry(&mut out, &self.registry);
        let _ = encode_eof(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use traceway_store::{BackendError, ErrorKind, LeaseLost, LifecycleError, TraceError};

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let m = Metrics::new();
        m.observe_write(WriteOp::Append, Duration::from_micros(50));
        m.observe_write(WriteOp::Append, Duration::from_millis(3));
        m.observe_write(WriteOp::Append, Duration::from_secs(60));
        let out = m.render(&AtScrape::default());
        let has = |line: &str| assert!(out.contains(line), "{line:?} not in\n{out}");
        has("traceway_store_write_seconds_bucket{le=\"0.0001\",op=\"append\"} 1\n");
        has("traceway_store_write_seconds_bucket{le=\"0.005\",op=\"append\"} 2\n");
        has("traceway_store_write_seconds_bucket{le=\"10.0\",op=\"append\"} 2\n");
        has("traceway_store_write_seconds_bucket{le=\"+Inf\",op=\"append\"} 3\n");
        has("traceway_store_write_seconds_count{op=\"append\"} 3\n");
        has("traceway_store_write_seconds_sum{op=\"append\"} 60.00305\n");
        has("traceway_store_write_seconds_count{op=\"create\"} 0\n");
        assert!(
            !out.contains("traceway_active_traces"),
            "absent when unknown"
        );
        assert!(out.ends_with("# EOF\n"));
    }

    #[test]
    fn failed_writes_are_counted_and_timed_by_kind() {
        let m = Metrics::new();
        let busy = TraceError::from(BackendError::overloaded("queue full"));
        m.observe_failed_write(WriteOp::Append, &busy, Duration::from_millis(2));
        m.observe_failed_write(WriteOp::Append, &busy, Duration::from_millis(4));
        let taken = LifecycleError::from(LeaseLost {
            name: "watchdog".into(),
            holder: "a".into(),
            token: 1,
        });
        m.observe_failed_write(WriteOp::Lease, &taken, Duration::from_millis(1));
        assert_eq!(m.write_errors(WriteOp::Append, "overloaded"), 2);
        let out = m.render(&AtScrape {
            active: Some(3),
            subscribers: 1,
            commit_retries: 7,
        });
        let has = |line: &str| assert!(out.contains(line), "{line:?} not in\n{out}");
        has("traceway_store_write_errors_total{op=\"append\",kind=\"overloaded\"} 2\n");
        has("traceway_store_write_errors_total{op=\"lease\",kind=\"lease_lost\"} 1\n");
        has("traceway_store_write_failed_seconds_count{op=\"append\",kind=\"overloaded\"} 2\n");
        has("traceway_store_write_failed_seconds_sum{op=\"append\",kind=\"overloaded\"} 0.006\n");
        has("traceway_active_traces 3\n");
        has("traceway_live_subscribers 1\n");
        has("traceway_store_commit_retries_total 7\n");
        assert_eq!(m.write_errors(WriteOp::Create, "overloaded"), 0);
    }

    #[test]
    fn every_error_kind_has_its_own_label() {
        let id = traceway_core::TraceId::from_u128(1).unwrap();
        let lost = LeaseLost {
            name: "watchdog".into(),
            holder: "a".into(),
            token: 1,
        };
        let labels = [
            error_kind_label(&TraceError::NotFound(id)),
            error_kind_label(&TraceError::IdTaken(id)),
            error_kind_label(&TraceError::IllegalTransition(
                traceway_core::StateError::InvalidName(String::new()),
            )),
            error_kind_label(&TraceError::BadCursor(String::new())),
            error_kind_label(&BackendError::overloaded("")),
            error_kind_label(&BackendError::unavailable("")),
            error_kind_label(&LifecycleError::from(lost)),
            error_kind_label(&BackendError::internal("")),
        ];
        // The labels are the kinds' stable names, in ErrorKind::ALL order.
        let want: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(labels.to_vec(), want);
        assert_eq!(
            labels
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            8
        );
    }
}
