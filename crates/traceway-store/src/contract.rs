//! The store contract: what every backend (SQLite, Redis) does, with the same
//! meaning. Nothing here knows SQL or Redis commands; cursors are opaque strings.

use std::time::Duration;

use crate::error::{BackendError, LifecycleError, TraceError};
use async_trait::async_trait;
use traceway_core::analysis::AnalysisDigest;
use traceway_core::{
    Event, EventInput, EventType, Level, NewTrace, Span, State, Timestamp, Trace, TraceId,
    TracePatch,
};

/// The most traces one listing page returns; a larger `limit` is refused by the API and
/// clamped by the store ([`PageRequest::bounded_limit`]).
pub const MAX_PAGE: u32 = 1000;

/// The most spans one trace may hold (ADR 025): an append that would pass it is refused
/// with [`TraceError::TooManySpans`] before anything is written.
pub const MAX_SPANS_PER_TRACE: u64 = 100_000;

/// The most events one read returns ([`EventFilter::bounded_limit`]).
pub const MAX_EVENTS_PAGE: u32 = 10_000;

/// The most spans one page of a trace's spans holds ([`SpanPageRequest::bounded_limit`]).
pub const MAX_SPAN_PAGE: u32 = 10_000;

/// The spans of a page when the caller names no size.
pub const DEFAULT_SPAN_PAGE: u32 = 1_000;

/// Which page of a trace's spans ([`Traces::get_span_page`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpanPageRequest {
    /// Continue after the span event with this seq (0: from the start); a page's
    /// [`SpanPage::next_after`].
    pub after_seq: u64,
    /// At most this many spans.
    pub limit: u32,
}

/// Builds a [`SpanPage`] from span events read in seq order: a span seen twice keeps its
/// later form, at the later place. `more` says another span event follows the last one
/// read, so the page gets a cursor (a page that holds the last span events has none).
pub(crate) fn span_page_of(events: Vec<(u64, Span)>, more: bool) -> SpanPage {
    let next_after = if more {
        events.last().map(|(seq, _)| *seq)
    } else {
        None
    };
    let mut at: std::collections::HashMap<traceway_core::SpanId, usize> =
        std::collections::HashMap::with_capacity(events.len());
    let mut slots: Vec<Option<(u64, Span)>> = Vec::with_capacity(events.len());
    for (seq, span) in events {
        if let Some(i) = at.insert(span.span_id, slots.len()) {
            slots[i] = None;
        }
        slots.push(Some((seq, span)));
    }
    SpanPage {
        spans: slots.into_iter().flatten().collect(),
        next_after,
    }
}

impl SpanPageRequest {
    /// `limit` within 1 to [`MAX_SPAN_PAGE`].
    pub fn bounded_limit(&self) -> u32 {
        self.limit.clamp(1, MAX_SPAN_PAGE)
    }
}

/// One page of a trace's spans, in the order of the span events that wrote their forms.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpanPage {
    /// Each span with the seq of the event that holds this form of it. A span that was
    /// running when its `span_started` was paged comes again, ended, on a later page: the
    /// form with the higher seq is the current one (within one page a span comes once).
    pub spans: Vec<(u64, Span)>,
    /// Pass this as `after_seq` for the next page; `None` on the last page.
    pub next_after: Option<u64>,
}

/// How long things are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// A trace that is not terminal expires this long after creation, watchdog or not.
    pub failsafe_ttl: Duration,
    /// A terminal trace's row and summary are kept this long after it ended.
    pub terminal_trace_ttl: Duration,
    /// A terminal trace's spans and events are kept this long after it ended.
    pub terminal_data_ttl: Duration,
    /// An orphaned trace (row, spans and events) is kept this long after the sweep that
    /// orphaned it.
    pub orphan_ttl: Duration,
}

impl Default for Retention {
    fn default() -> Retention {
        const HOUR: u64 = 3600;
        Retention {
            failsafe_ttl: Duration::from_secs(24 * HOUR),
            terminal_trace_ttl: Duration::from_secs(7 * 24 * HOUR),
            terminal_data_ttl: Duration::from_secs(3 * 24 * HOUR),
            orphan_ttl: Duration::from_secs(HOUR),
        }
    }
}

/// What capture keeps, applied by the store when it writes.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureConfig {
    /// The level of a trace created without one.
    pub default_level: Level,
    /// Strings longer than this are truncated at `detailed`.
    pub max_content_bytes: usize,
    /// The prices an LLM span's cost is computed from when it reports none (ADR 017): the
    /// shipped table, with the config file's `[pricing]` on top.
    pub prices: Prices,
}

impl Default for CaptureConfig {
    fn default() -> CaptureConfig {
        CaptureConfig {
            default_level: Level::Detailed,
            max_content_bytes: traceway_core::DEFAULT_MAX_CONTENT_BYTES,
            prices: Prices::builtin(),
        }
    }
}

/// A shared price table. Compared (and shown in `Debug`) by its version, which names the
/// shipped table and the label of any overrides.
#[derive(Clone)]
pub struct Prices(pub std::sync::Arc<traceway_core::pricing::PriceTable>);

impl Prices {
    /// The table shipped with this build (one shared copy).
    pub fn builtin() -> Prices {
        static BUILTIN: std::sync::OnceLock<std::sync::Arc<traceway_core::pricing::PriceTable>> =
            std::sync::OnceLock::new();
        Prices(
            BUILTIN
                .get_or_init(|| {
                    std::sync::Arc::new(traceway_core::pricing::PriceTable::builtin().clone())
                })
                .clone(),
        )
    }

    /// The shipped table with `overrides` on top.
    pub fn with_overrides(overrides: &traceway_core::pricing::PriceOverrides) -> Prices {
        Prices(std::sync::Arc::new(
            traceway_core::pricing::PriceTable::builtin().with_overrides(overrides),
        ))
    }

    /// The table.
    pub fn table(&self) -> &traceway_core::pricing::PriceTable {
        &self.0
    }
}

impl PartialEq for Prices {
    fn eq(&self, other: &Prices) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0) || *self.0 == *other.0
    }
}

impl std::fmt::Debug for Prices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prices")
            .field("version", &self.0.version())
            .field("models", &self.0.len())
            .finish()
    }
}

/// A batch of events for one trace.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    /// The tenant.
    pub tenant: String,
    /// The trace.
    pub trace_id: TraceId,
    /// When set, a missing trace is created from it (OTLP); when not, a missing trace is
    /// `NotFound`. When the trace exists, its name, agent, session and user are filled from
    /// it where still empty, and metadata keys it lacks are added: a later batch may know
    /// what the first one did not.
    pub create_if_missing: Option<NewTrace>,
    /// The events, in order.
    pub events: Vec<EventInput>,
    /// After the events, prompt and completion messages for LLM spans (the GenAI message
    /// events of OTLP logs): each lands on its span, running or ended, or waits (bounded)
    /// for the span to arrive (ADR 027). A fill that changed a span counts as accepted.
    pub fills: Vec<traceway_core::MessageFill>,
    /// After the events, in the same write, end the trace in this (terminal) state,
    /// unless it has ended already: the first end decides.
    pub end: Option<TraceEnd>,
}

/// How an append ends its trace.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceEnd {
    /// `COMPLETED` or `ERRORED`.
    pub state: State,
    /// Why (`root span ended`, …).
    pub reason: Option<String>,
}

/// What an append stored.
#[derive(Debug, Clone, Default)]
pub struct AppendOutcome {
    /// Inputs that added something.
    pub accepted: u32,
    /// Inputs skipped as already stored (retries).
    pub duplicates: u32,
    /// Whether the trace was created by this append.
    pub created: bool,
    /// The trace's last `seq` after the append (also when nothing new was stored).
    pub last_seq: u64,
    /// How many events of each type the append stored.
    pub stored: EventCounts,
    /// Whether the trace is in a terminal state after the append.
    pub terminal: bool,
}

/// How many events of each type a write stored. The events themselves go to live
/// subscribers through the hub, not back to the caller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventCounts([u32; EventType::ALL.len()]);

impl EventCounts {
    /// The counts of `events`.
    pub fn of(events: &[Event]) -> EventCounts {
        let mut c = EventCounts::default();
        for e in events {
            c.add(e.body.event_type());
        }
        c
    }

    /// Counts one more event of type `t`.
    pub fn add(&mut self, t: EventType) {
        self.0[Self::index(t)] += 1;
    }

    /// Counts `n` more events of type `t`.
    pub fn add_n(&mut self, t: EventType, n: u32) {
        let c = &mut self.0[Self::index(t)];
        *c = c.saturating_add(n);
    }

    fn index(t: EventType) -> usize {
        EventType::ALL.iter().position(|x| *x == t).unwrap_or(0)
    }

    /// Events of type `t`.
    pub fn get(&self, t: EventType) -> u32 {
        self.0[Self::index(t)]
    }

    /// Events of every type.
    pub fn total(&self) -> u32 {
        self.0.iter().sum()
    }

    /// Each type with its count, in [`EventType::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (EventType, u32)> + '_ {
        EventType::ALL.iter().copied().zip(self.0.iter().copied())
    }
}

/// Filters for listing traces. Absent fields do not filter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceFilter {
    /// Only this agent.
    pub agent_id: Option<String>,
    /// Only this user.
    pub user_id: Option<String>,
    /// Only this session.
    pub session_id: Option<String>,
    /// Only this state.
    pub state: Option<State>,
    /// Created at or after.
    pub created_after: Option<Timestamp>,
    /// Created before.
    pub created_before: Option<Timestamp>,
    /// Only traces with (true) or without (false) errors.
    pub has_error: Option<bool>,
    /// Only traces whose spans span at least this long.
    pub min_duration_ms: Option<f64>,
}

/// Which page of a listing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PageRequest {
    /// Continue after the page that returned this cursor (newest first).
    pub cursor: Option<String>,
    /// Skip this many rows (page/page_size); ignored with a cursor.
    pub offset: u64,
    /// At most this many rows.
    pub limit: u32,
}

impl PageRequest {
    /// `limit` within 1 to [`MAX_PAGE`]: what every backend returns at most.
    pub fn bounded_limit(&self) -> u32 {
        self.limit.clamp(1, MAX_PAGE)
    }
}

/// One page of results.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page<T> {
    /// The rows.
    pub items: Vec<T>,
    /// Pass this as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Filters for reading a trace's events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    /// Only these types (all when empty).
    pub types: Vec<EventType>,
    /// Only events of spans of this component.
    pub component_id: Option<String>,
    /// Only events with `seq` greater than this.
    pub after_seq: u64,
    /// Skip this many matching events.
    pub offset: u64,
    /// At most this many.
    pub limit: u32,
}

impl EventFilter {
    /// `limit` within 1 to [`MAX_EVENTS_PAGE`]: what every backend returns at most.
    pub fn bounded_limit(&self) -> u32 {
        self.limit.clamp(1, MAX_EVENTS_PAGE)
    }
}

/// The reason recorded (in `state_changed` and `trace_ended`) when the sweep ends an idle
/// trace.
pub const ORPHANED_REASON: &str = "orphaned";

/// The name of the lease that elects the one watchdog of a store.
pub const WATCHDOG_LEASE: &str = "watchdog";

/// A held lease. `token` is the fencing token: it grows every time the lease changes
/// hands, and fenced writes ([`Lifecycle::sweep_orphans`], [`Lifecycle::purge_expired`]) are
/// refused with [`LifecycleError::LeaseLost`] unless it is still the current one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Which lease.
    pub name: String,
    /// Who holds it.
    pub holder: String,
    /// The fencing token.
    pub token: u64,
    /// When it lapses unless renewed (the store's clock).
    pub expires_at: Timestamp,
}

/// A trace the sweep ended because it was idle too long.
#[derive(Debug, Clone, PartialEq)]
pub struct Orphaned {
    /// Its tenant.
    pub tenant: String,
    /// The trace.
    pub trace_id: TraceId,
    /// How long it had been idle (since its last activity).
    pub idle: Duration,
}

/// What one purge batch deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Trace rows deleted (with all their events).
    pub traces: u64,
    /// Events deleted (of deleted traces, and of traces whose data expired), each counted
    /// once on every backend. The purge's budget (`max_rows`) counts the backend's rows
    /// instead: one event on SQLite, one commit's events (a stream entry) on Redis.
    pub events: u64,
    /// Whether more expired rows were left for another batch.
    pub more: bool,
}

/// Traces: writes (create, append, patch, delete, cleanup) and reads. All of them are
/// scoped to a tenant; a trace of another tenant does not exist. Expired data is never
/// returned.
#[async_trait]
pub trait Traces: Send + Sync + 'static {
    /// Creates a trace and writes its `trace_started` event. `IdTaken` if a live trace has the id.
    async fn create_trace(
        &self,
        tenant: &str,
        new: NewTrace,
    ) -> Result<(Trace, EventCounts), TraceError>;

    /// Appends a batch of events; a retried batch is not stored twice.
    async fn append(&self, req: AppendRequest) -> Result<AppendOutcome, TraceError>;

    /// Changes a trace's state, name or metadata. `IllegalTransition` when leaving a terminal
    /// state.
    async fn update_trace(
        &self,
        tenant: &str,
        id: TraceId,
        patch: TracePatch,
    ) -> Result<(Trace, EventCounts), TraceError>;

    /// One trace.
    async fn get_trace(&self, tenant: &str, id: TraceId) -> Result<Option<Trace>, TraceError>;

    /// A trace's spans, by start time. `None` when the trace does not exist.
    async fn get_spans(&self, tenant: &str, id: TraceId) -> Result<Option<Vec<Span>>, TraceError>;

    /// A trace with its spans (by start time), from one read of its row. `None` when the
    /// trace does not exist.
    async fn get_trace_with_spans(
        &self,
        tenant: &str,
        id: TraceId,
    ) -> Result<Option<(Trace, Vec<Span>)>, TraceError>;

    /// One page of a trace's spans with its row (issue 15, failure 3.7): what a read of
    /// a large trace holds in memory is one page, whatever the trace's size. `None` when
    /// the trace does not exist.
    async fn get_span_page(
        &self,
        tenant: &str,
        id: TraceId,
        page: &SpanPageRequest,
    ) -> Result<Option<(Trace, SpanPage)>, TraceError>;

    /// Traces, newest first.
    async fn list_traces(
        &self,
        tenant: &str,
        filter: &TraceFilter,
        page: &PageRequest,
    ) -> Result<Page<Trace>, TraceError>;

    /// A trace's events in `seq` order. `None` when the trace does not exist.
    async fn read_events(
        &self,
        tenant: &str,
        id: TraceId,
        filter: &EventFilter,
    ) -> Result<Option<Vec<Event>>, TraceError>;

    /// How many events of each type a trace has (all of them, none returned): what the
    /// analysis needs of the log besides its `error` events (ADR 037). `None` when the
    /// trace does not exist.
    async fn count_events(
        &self,
        tenant: &str,
        id: TraceId,
    ) -> Result<Option<EventCounts>, TraceError>;

    /// Deletes a trace with its spans and events. False when it did not exist.
    async fn delete_trace(&self, tenant: &str, id: TraceId) -> Result<bool, TraceError>;

    /// Deletes the tenant's terminal traces that ended before `cutoff`, at most `limit` of
    /// them when given (in small batches, so ingest keeps flowing); returns how many.
    async fn delete_ended_before(
        &self,
        tenant: &str,
        cutoff: Timestamp,
        limit: Option<u64>,
    ) -> Result<u64, TraceError>;

    /// How many of the tenant's terminal traces ended before `cutoff` (what
    /// [`Traces::delete_ended_before`] would delete).
    async fn count_ended_before(&self, tenant: &str, cutoff: Timestamp) -> Result<u64, TraceError>;

    /// Keeps a trace's analysis digest on its row (`rollups.analysis`, ADR 028) when the
    /// trace is live and its `last_seq` is still `digest.at_seq`: a digest of an older
    /// state never replaces the row's newer figures. `false` (nothing changed) otherwise.
    /// No event is written and the trace's activity time does not move.
    async fn put_analysis(
        &self,
        tenant: &str,
        id: TraceId,
        digest: AnalysisDigest,
    ) -> Result<bool, TraceError>;

    /// What the digests of many ended traces are made of, as few reads as the backend
    /// allows (SQLite: one, with the spans cut): the `i`-th answer is for `keys[i]`,
    /// `None` when that trace does not exist. At most `max_errors` error events a trace.
    /// Memory stays bounded: once [`DIGEST_BATCH_SPANS`] spans are read the answer stops,
    /// so it may cover only a prefix of `keys` (never none of a non-empty `keys`); ask
    /// again for the rest.
    async fn digest_inputs(
        &self,
        keys: &[(String, TraceId)],
        max_errors: usize,
    ) -> Result<Vec<Option<DigestInput>>, TraceError>;

    /// [`Traces::put_analysis`] of many digests in one write; the `i`-th answer says
    /// whether `digests[i]` was stored.
    async fn put_analyses(
        &self,
        digests: Vec<(String, TraceId, AnalysisDigest)>,
    ) -> Result<Vec<bool>, TraceError>;

    /// The bytes of the tenant's stored event log (its events' JSON), the figure of the
    /// stored-bytes quota (ADR 040). A counter kept by every write, delete and purge, so
    /// reading it costs one lookup; it is not the file's or the server's memory use.
    async fn stored_bytes(&self, tenant: &str) -> Result<u64, TraceError>;
}

/// Spans after which [`Traces::digest_inputs`] stops reading further traces.
pub const DIGEST_BATCH_SPANS: usize = 20_000;

/// One ended trace as its analysis digest reads it (ADR 028), from
/// [`Traces::digest_inputs`].
#[derive(Debug, Clone, PartialEq)]
pub struct DigestInput {
    /// The row as read.
    pub trace: Trace,
    /// Its spans by start time, whole or cut to what a digest reads
    /// (`traceway_core::analysis::digest_span_of_event_json`).
    pub spans: Vec<Span>,
    /// Its `error` events up to the row's `last_seq`, in `seq` order, at most the number
    /// asked for.
    pub errors: Vec<Event>,
}

/// The store's lifecycle work across tenants: the active count, the watchdog's fenced
/// sweep and purge, health and shutdown.
#[async_trait]
pub trait Lifecycle: Send + Sync + 'static {
    /// Traces not yet terminal and not expired, all tenants (the active index).
    async fn active_traces(&self) -> Result<u64, LifecycleError>;

    /// Ends traces that are not terminal and have had no activity for `orphan_after`:
    /// each becomes `ERRORED` (reason [`ORPHANED_REASON`], `state_changed` and `trace_ended`
    /// events, published live), is kept for the orphan retention, and leaves the active
    /// index. At most `limit` per call, most idle first; call again while it returns
    /// `limit`. Refused with `LeaseLost` unless `fence` is current.
    async fn sweep_orphans(
        &self,
        fence: &Lease,
        orphan_after: Duration,
        limit: u32,
    ) -> Result<Vec<Orphaned>, LifecycleError>;

    /// Physically deletes one batch of expired data (about `max_rows` rows): traces whose
    /// row expired, with their events, then events of traces whose data expired. Call
    /// again while [`Purged::more`]. Refused with `LeaseLost` unless `fence` is current.
    async fn purge_expired(&self, fence: &Lease, max_rows: u32) -> Result<Purged, LifecycleError>;

    /// Whether the store can serve.
    async fn health(&self) -> Result<(), LifecycleError>;

    /// Finishes pending writes and stops. Later calls fail with `Unavailable`.
    async fn shutdown(&self);

    /// Trace commits this process had to read and compute again because another writer
    /// committed the trace first (a compare-and-set conflict), since it opened the store.
    /// Always 0 on a store with one writer (SQLite).
    fn commit_retries(&self) -> u64 {
        0
    }
}

/// Leases with fencing tokens, which elect the one watchdog of a store.
#[async_trait]
pub trait Leases: Send + Sync + 'static {
    /// Takes the lease `name` for `ttl` if it is free or lapsed (a new fencing token), or
    /// extends it if `holder` already holds it (same token). `None` while another holder
    /// has it.
    async fn try_acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, BackendError>;

    /// Extends a held lease to `ttl` from now, if it is still current (same holder and
    /// token, not lapsed); `None` when it was lost.
    async fn renew_lease(
        &self,
        lease: &Lease,
        ttl: Duration,
    ) -> Result<Option<Lease>, BackendError>;

    /// Gives the lease up so another holder can take it at once; false if it was no
    /// longer held.
    async fn release_lease(&self, lease: &Lease) -> Result<bool, BackendError>;
}

/// The live feed: subscriptions to events as they commit, over the process's
/// [`crate::InProcessHub`].
pub trait LiveFeed: Send + Sync + 'static {
    /// Subscribes to events as they commit (see [`crate::hub`]). To resume without a gap,
    /// subscribe first, then read stored events after your last `seq`, then take live
    /// events whose `seq` is above the last one read.
    fn subscribe(&self, tenant: &str, scope: crate::Scope) -> crate::Subscription;

    /// Live subscribers right now.
    fn subscriber_count(&self) -> usize;
}

/// The whole contract, as handlers see it (`Arc<dyn Store>`): every backend implements
/// the concerns, and is a `Store` by that alone.
pub trait Store:
    Traces + Lifecycle + Leases + LiveFeed + crate::WorkflowContexts + crate::ApiKeys
{
}

impl<T: Traces + Lifecycle + Leases + LiveFeed + crate::WorkflowContexts + crate::ApiKeys> Store
    for T
{
}

/// A decorator of a whole store (metrics, fault injection in tests). It names the store it
/// wraps, then implements the layer of each concern ([`TracesLayer`], [`LifecycleLayer`],
/// [`LeasesLayer`], [`LiveFeedLayer`]), overriding only the methods it changes; an empty
/// `impl` passes a concern through unchanged.
pub trait Decorates: Send + Sync + 'static {
    /// The wrapped store.
    fn inner(&self) -> &dyn Store;
}

/// [`Traces`] for a decorator: every method goes to [`Decorates::inner`] unless the
/// decorator overrides it.
#[async_trait]
pub trait TracesLayer: Decorates {
    /// [`Traces::create_trace`].
    async fn create_trace(
        &self,
        tenant: &str,
        new: NewTrace,
    ) -> Result<(Trace, EventCounts), TraceError> {
        self.inner().create_trace(tenant, new).await
    }

    /// [`Traces::append`].
    async fn append(&self, req: AppendRequest) -> Result<AppendOutcome, TraceError> {
        self.inner().append(req).await
    }

    /// [`Traces::update_trace`].
    async fn update_trace(
        &self,
        tenant: &str,
        id: TraceId,
        patch: TracePatch,
    ) -> Result<(Trace, EventCounts), TraceError> {
        self.inner().update_trace(tenant, id, patch).await
    }

    /// [`Traces::get_trace`].
    async fn get_trace(&self, tenant: &str, id: TraceId) -> Result<Option<Trace>, TraceError> {
        self.inner().get_trace(tenant, id).await
    }

    /// [`Traces::get_spans`].
    async fn get_spans(&self, tenant: &str, id: TraceId) -> Result<Option<Vec<Span>>, TraceError> {
        self.inner().get_spans(tenant, id).await
    }

    /// [`Traces::get_trace_with_spans`].
    async fn get_trace_with_spans(
        &self,
        tenant: &str,
        id: TraceId,
    ) -> Result<Option<(Trace, Vec<Span>)>, TraceError> {
        self.inner().get_trace_with_spans(tenant, id).await
    }

    /// [`Traces::get_span_page`].
    async fn get_span_page(
        &self,
        tenant: &str,
        id: TraceId,
        page: &SpanPageRequest,
    ) -> Result<Option<(Trace, SpanPage)>, TraceError> {
        self.inner().get_span_page(tenant, id, page).await
    }

    /// [`Traces::list_traces`].
    async fn list_traces(
        &self,
        tenant: &str,
        filter: &TraceFilter,
        page: &PageRequest,
    ) -> Result<Page<Trace>, TraceError> {
        self.inner().list_traces(tenant, filter, page).await
    }

    /// [`Traces::read_events`].
    async fn read_events(
        &self,
        tenant: &str,
        id: TraceId,
        filter: &EventFilter,
    ) -> Result<Option<Vec<Event>>, TraceError> {
        self.inner().read_events(tenant, id, filter).await
    }

    /// [`Traces::count_events`].
    async fn count_events(
        &self,
        tenant: &str,
        id: TraceId,
    ) -> Result<Option<EventCounts>, TraceError> {
        self.inner().count_events(tenant, id).await
    }

    /// [`Traces::delete_trace`].
    async fn delete_trace(&self, tenant: &str, id: TraceId) -> Result<bool, TraceError> {
        self.inner().delete_trace(tenant, id).await
    }

    /// [`Traces::delete_ended_before`].
    async fn delete_ended_before(
        &self,
        tenant: &str,
        cutoff: Timestamp,
        limit: Option<u64>,
    ) -> Result<u64, TraceError> {
        self.inner()
            .delete_ended_before(tenant, cutoff, limit)
            .await
    }

    /// [`Traces::count_ended_before`].
    async fn count_ended_before(&self, tenant: &str, cutoff: Timestamp) -> Result<u64, TraceError> {
        self.inner().count_ended_before(tenant, cutoff).await
    }

    /// [`Traces::put_analysis`].
    async fn put_analysis(
        &self,
        tenant: &str,
        id: TraceId,
        digest: AnalysisDigest,
    ) -> Result<bool, TraceError> {
        self.inner().put_analysis(tenant, id, digest).await
    }

    /// [`Traces::digest_inputs`].
    async fn digest_inputs(
        &self,
        keys: &[(String, TraceId)],
        max_errors: usize,
    ) -> Result<Vec<Option<DigestInput>>, TraceError> {
        self.inner().digest_inputs(keys, max_errors).await
    }

    /// [`Traces::put_analyses`].
    async fn put_analyses(
        &self,
        digests: Vec<(String, TraceId, AnalysisDigest)>,
    ) -> Result<Vec<bool>, TraceError> {
        self.inner().put_analyses(digests).await
    }

    /// [`Traces::stored_bytes`].
    async fn stored_bytes(&self, tenant: &str) -> Result<u64, TraceError> {
        self.inner().stored_bytes(tenant).await
    }
}

#[async_trait]
impl<T: TracesLayer> Traces for T {
    async fn create_trace(
        &self,
        tenant: &str,
        new: NewTrace,
    ) -> Result<(Trace, EventCounts), TraceError> {
        TracesLayer::create_trace(self, tenant, new).await
    }

    async fn append(&self, req: AppendRequest) -> Result<AppendOutcome, TraceError> {
        TracesLayer::append(self, req).await
    }

    async fn update_trace(
        &self,
        tenant: &str,
        id: TraceId,
        patch: TracePatch,
    ) -> Result<(Trace, EventCounts), TraceError> {
        TracesLayer::update_trace(self, tenant, id, patch).await
    }

    async fn get_trace(&self, tenant: &str, id: TraceId) -> Result<Option<Trace>, TraceError> {
        TracesLayer::get_trace(self, tenant, id).await
    }

    async fn get_spans(&self, tenant: &str, id: TraceId) -> Result<Option<Vec<Span>>, TraceError> {
        TracesLayer::get_spans(self, tenant, id).await
    }

    async fn get_trace_with_spans(
        &self,
        tenant: &str,
        id: TraceId,
    ) -> Result<Option<(Trace, Vec<Span>)>, TraceError> {
        TracesLayer::get_trace_with_spans(self, tenant, id).await
    }

    async fn get_span_page(
        &self,
        tenant: &str,
        id: TraceId,
        page: &SpanPageRequest,
    ) -> Result<Option<(Trace, SpanPage)>, TraceError> {
        TracesLayer::get_span_page(self, tenant, id, page).await
    }

    async fn list_traces(
        &self,
        tenant: &str,
        filter: &TraceFilter,
        page: &PageRequest,
    ) -> Result<Page<Trace>, TraceError> {
        TracesLayer::list_traces(self, tenant, filter, page).await
    }

    async fn read_events(
        &self,
        tenant: &str,
        id: TraceId,
        filter: &EventFilter,
    ) -> Result<Option<Vec<Event>>, TraceError> {
        TracesLayer::read_events(self, tenant, id, filter).await
    }

    async fn count_events(
        &self,
        tenant: &str,
        id: TraceId,
    ) -> Result<Option<EventCounts>, TraceError> {
        TracesLayer::count_events(self, tenant, id).await
    }

    async fn delete_trace(&self, tenant: &str, id: TraceId) -> Result<bool, TraceError> {
        TracesLayer::delete_trace(self, tenant, id).await
    }

    async fn delete_ended_before(
        &self,
        tenant: &str,
        cutoff: Timestamp,
        limit: Option<u64>,
    ) -> Result<u64, TraceError> {
        TracesLayer::delete_ended_before(self, tenant, cutoff, limit).await
    }

    async fn count_ended_before(&self, tenant: &str, cutoff: Timestamp) -> Result<u64, TraceError> {
        TracesLayer::count_ended_before(self, tenant, cutoff).await
    }

    async fn put_analysis(
        &self,
        tenant: &str,
        id: TraceId,
        digest: AnalysisDigest,
    ) -> Result<bool, TraceError> {
        TracesLayer::put_analysis(self, tenant, id, digest).await
    }

    async fn digest_inputs(
        &self,
        keys: &[(String, TraceId)],
        max_errors: usize,
    ) -> Result<Vec<Option<DigestInput>>, TraceError> {
        TracesLayer::digest_inputs(self, keys, max_errors).await
    }

    async fn put_analyses(
        &self,
        digests: Vec<(String, TraceId, AnalysisDigest)>,
    ) -> Result<Vec<bool>, TraceError> {
        TracesLayer::put_analyses(self, digests).await
    }

    async fn stored_bytes(&self, tenant: &str) -> Result<u64, TraceError> {
        TracesLayer::stored_bytes(self, tenant).await
    }
}

/// [`Lifecycle`] for a decorator: every method goes to [`Decorates::inner`] unless the
/// decorator overrides it.
#[async_trait]
pub trait LifecycleLayer: Decorates {
    /// [`Lifecycle::active_traces`].
    async fn active_traces(&self) -> Result<u64, LifecycleError> {
        self.inner().active_traces().await
    }

    /// [`Lifecycle::sweep_orphans`].
    async fn sweep_orphans(
        &self,
        fence: &Lease,
        orphan_after: Duration,
        limit: u32,
    ) -> Result<Vec<Orphaned>, LifecycleError> {
        self.inner().sweep_orphans(fence, orphan_after, limit).await
    }

    /// [`Lifecycle::purge_expired`].
    async fn purge_expired(&self, fence: &Lease, max_rows: u32) -> Result<Purged, LifecycleError> {
        self.inner().purge_expired(fence, max_rows).await
    }

    /// [`Lifecycle::health`].
    async fn health(&self) -> Result<(), LifecycleError> {
        self.inner().health().await
    }

    /// [`Lifecycle::shutdown`].
    async fn shutdown(&self) {
        self.inner().shutdown().await
    }

    /// [`Lifecycle::commit_retries`].
    fn commit_retries(&self) -> u64 {
        self.inner().commit_retries()
    }
}

#[async_trait]
impl<T: LifecycleLayer> Lifecycle for T {
    async fn active_traces(&self) -> Result<u64, LifecycleError> {
        LifecycleLayer::active_traces(self).await
    }

    async fn sweep_orphans(
        &self,
        fence: &Lease,
        orphan_after: Duration,
        limit: u32,
    ) -> Result<Vec<Orphaned>, LifecycleError> {
        LifecycleLayer::sweep_orphans(self, fence, orphan_after, limit).await
    }

    async fn purge_expired(&self, fence: &Lease, max_rows: u32) -> Result<Purged, LifecycleError> {
        LifecycleLayer::purge_expired(self, fence, max_rows).await
    }

    async fn health(&self) -> Result<(), LifecycleError> {
        LifecycleLayer::health(self).await
    }

    async fn shutdown(&self) {
        LifecycleLayer::shutdown(self).await
    }

    fn commit_retries(&self) -> u64 {
        LifecycleLayer::commit_retries(self)
    }
}

/// [`Leases`] for a decorator: every method goes to [`Decorates::inner`] unless the
/// decorator overrides it.
#[async_trait]
pub trait LeasesLayer: Decorates {
    /// [`Leases::try_acquire_lease`].
    async fn try_acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, BackendError> {
        self.inner().try_acquire_lease(name, holder, ttl).await
    }

    /// [`Leases::renew_lease`].
    async fn renew_lease(
        &self,
        lease: &Lease,
        ttl: Duration,
    ) -> Result<Option<Lease>, BackendError> {
        self.inner().renew_lease(lease, ttl).await
    }

    /// [`Leases::release_lease`].
    async fn release_lease(&self, lease: &Lease) -> Result<bool, BackendError> {
        self.inner().release_lease(lease).await
    }
}

#[async_trait]
impl<T: LeasesLayer> Leases for T {
    async fn try_acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, BackendError> {
        LeasesLayer::try_acquire_lease(self, name, holder, ttl).await
    }

    async fn renew_lease(
        &self,
        lease: &Lease,
        ttl: Duration,
    ) -> Result<Option<Lease>, BackendError> {
        LeasesLayer::renew_lease(self, lease, ttl).await
    }

    async fn release_lease(&self, lease: &Lease) -> Result<bool, BackendError> {
        LeasesLayer::release_lease(self, lease).await
    }
}

/// [`LiveFeed`] for a decorator: every method goes to [`Decorates::inner`] unless the
/// decorator overrides it.
pub trait LiveFeedLayer: Decorates {
    /// [`LiveFeed::subscribe`].
    fn subscribe(&self, tenant: &str, scope: crate::Scope) -> crate::Subscription {
        self.inner().subscribe(tenant, scope)
    }

    /// [`LiveFeed::subscriber_count`].
    fn subscriber_count(&self) -> usize {
        self.inner().subscriber_count()
    }
}

impl<T: LiveFeedLayer> LiveFeed for T {
    fn subscribe(&self, tenant: &str, scope: crate::Scope) -> crate::Subscription {
        LiveFeedLayer::subscribe(self, tenant, scope)
    }

    fn subscriber_count(&self) -> usize {
        LiveFeedLayer::subscriber_count(self)
    }
}
