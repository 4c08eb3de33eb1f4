//! The one write model: how an input changes a trace, for every backend.
//!
//! A backend loads the trace (its row, its data expiry and a [`Stored`] port that answers
//! for the span states and client event ids already stored), hands it to one of the
//! operations here (create, append with its optional end, patch, orphan), and persists the
//! [`Written`] changes it gets back. Nothing here does I/O; the only questions asked of the
//! store go through the port. Refusals (not found, id taken, illegal transition, invalid
//! input) are decided before anything changes, and hand the loaded trace back untouched
//! (see [`Refused`]), so a backend that caches traces keeps its entry.

use std::collections::HashMap;
use std::time::Duration;

use traceway_core::{
    ingest, strip_event_body, strip_span, Event, EventBody, EventInput, NewTrace, Rollups, Span,
    SpanChange, SpanId, State, StateChange, Timestamp, Trace, TraceEnded, TraceId, TracePatch,
    TraceStarted,
};

use crate::{BackendError, CaptureConfig, Retention, TraceEnd, TraceError, ORPHANED_REASON};
use traceway_core::StateError;

mod fills;
pub(crate) use fills::{FillChanges, PendingTotals};
pub use fills::{MAX_PENDING_FILLS_PER_TRACE, MAX_PENDING_FILL_BYTES_PER_TRACE};

/// What a write needs to know of one stored span.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SpanState {
    /// Ended: further starts and ends are duplicates.
    Ended {
        /// Its component, for the events that refer to the span.
        component: Option<String>,
    },
    /// Started and not ended: its stored form, which an end completes.
    Running(Box<Span>),
}

impl SpanState {
    /// The span's component.
    pub(crate) fn component(&self) -> Option<&str> {
        match self {
            SpanState::Ended { component } => component.as_deref(),
            SpanState::Running(s) => s.component_id.as_deref(),
        }
    }
}

/// The port through which the model asks what the backend stored before this write.
pub(crate) trait Stored {
    /// The stored state of a span of the trace, if it has one.
    fn span(&self, id: u64) -> Option<&SpanState>;
    /// Whether a client event id (a log's or error's `id`, a message fill's) is stored in
    /// the trace.
    fn client_id_seen(&self, id: &str) -> Result<bool, BackendError>;
    /// The stored form of an ended span (its latest span event), for a message fill;
    /// `None` when its data is gone.
    fn span_body(&self, id: u64) -> Result<Option<Span>, BackendError>;
    /// The message fills waiting for a span not stored yet, in arrival order.
    fn pending_fills(&self, id: u64) -> Option<&[traceway_core::MessageFill]>;
    /// How much waits in the whole trace.
    fn pending_totals(&self) -> PendingTotals;
}

/// A trace as a backend loaded it, with its port.
pub(crate) struct Loaded<S> {
    /// The trace row (expired or not).
    pub trace: Trace,
    /// When its spans and events expire (Unix nanoseconds).
    pub data_expires_at: i64,
    /// What it stored of spans and client ids.
    pub stored: S,
}

/// A refusal: nothing changed, and the loaded trace (if any) comes back as it was.
pub(crate) struct Refused<S> {
    /// Why.
    pub error: TraceError,
    /// The trace that was loaded, unchanged.
    pub loaded: Option<Loaded<S>>,
}

impl<S> Refused<S> {
    fn new(error: TraceError, loaded: Option<Loaded<S>>) -> Refused<S> {
        Refused { error, loaded }
    }
}

impl<S> From<Refused<S>> for TraceError {
    fn from(r: Refused<S>) -> TraceError {
        r.error
    }
}

/// What a write changed; the backend persists it.
pub(crate) struct Written<S> {
    /// The trace as it is after the write.
    pub trace: Trace,
    /// Its data expiry after the write (Unix nanoseconds).
    pub data_expires_at: i64,
    /// The port the write started from; `None` when the trace is new.
    pub stored: Option<S>,
    /// Whether the trace is new: no live trace had its id (a stale one's data is replaced).
    pub created: bool,
    /// Whether the metadata changed (the rest of the row is always rewritten).
    pub metadata_changed: bool,
    /// The events written, in `seq` order.
    pub events: Vec<Event>,
    /// The spans whose state changed, with their new state.
    pub spans: HashMap<u64, SpanState>,
    /// The new client event ids, each with the `seq` of its event, in `seq` order.
    pub client_ids: Vec<(u64, String)>,
    /// Inputs that added something.
    pub accepted: u32,
    /// Inputs skipped as already stored.
    pub duplicates: u32,
    /// Message fills kept for spans not stored yet, or taken by spans that arrived.
    pub fills: FillChanges,
}

/// What the orphan sweep made of a candidate.
pub(crate) enum Orphan<S> {
    /// Ended as orphaned, after being idle this long.
    Ended(Written<S>, Duration),
    /// Not idle after all (terminal, active since, or expired): unchanged.
    NotIdle(Loaded<S>),
}

/// The settings a write applies, and its time.
#[derive(Debug, Clone)]
pub(crate) struct Model {
    /// The time of the write (the store's clock).
    pub now: Timestamp,
    /// How long things are kept.
    pub retention: Retention,
    /// What capture keeps.
    pub capture: CaptureConfig,
}

/// Refuses a trace that cannot be created, before anything is written.
fn validate_new(new: &NewTrace) -> Result<(), TraceError> {
    match &new.state {
        Some(state) if state.is_terminal() => Err(TraceError::CreatedTerminal(state.clone())),
        _ => Ok(()),
    }
}

// A refusal carries the loaded trace back, once per write; boxing it would cost an
// allocation on a path that a cache hit otherwise keeps allocation-free.
#[allow(clippy::result_large_err)]
impl Model {
    fn live<S>(&self, l: &Option<Loaded<S>>) -> bool {
        l.as_ref().is_some_and(|l| l.trace.expires_at > self.now)
    }

    /// Creates a trace with its `trace_started` event. Refused when the id is taken by a
    /// live trace, or the input is invalid.
    pub(crate) fn create<S: Stored>(
        &self,
        tenant: &str,
        id: TraceId,
        new: NewTrace,
        loaded: Option<Loaded<S>>,
    ) -> Result<Written<S>, Refused<S>> {
        if let Err(e) = validate_new(&new) {
            return Err(Refused::new(e, loaded));
        }
        if self.live(&loaded) {
            return Err(Refused::new(TraceError::IdTaken(id), loaded));
        }
        Ok(self.fresh(tenant, id, new).into_written())
    }

    /// Appends a batch: creates the trace from `create_if_missing` when there is no live
    /// one, else fills its empty fields from it; applies each input (a retried one is a
    /// duplicate); then ends the trace if asked and it has not ended yet.
    pub(crate) fn append<S: Stored>(
        &self,
        tenant: &str,
        id: TraceId,
        loaded: Option<Loaded<S>>,
        create_if_missing: Option<NewTrace>,
        inputs: impl IntoIterator<Item = EventInput>,
        end: Option<TraceEnd>,
    ) -> Result<Written<S>, Refused<S>> {
        let inputs: Vec<EventInput> = inputs.into_iter().collect();
        let mut d = if self.live(&loaded) {
            let Some(l) = loaded else {
                unreachable!("a live trace was loaded")
            };
            // The spans-per-trace quota (ADR 025), refused before anything is written. Span
            // inputs are counted whether or not they turn out to be retries.
            let adding = inputs
                .iter()
                .filter(|e| {
                    matches!(
                        e,
                        EventInput::SpanStarted { .. } | EventInput::SpanEnded { .. }
                    )
                })
                .count() as u64;
            let has = l.trace.rollups.span_count;
            if adding > 0 && has.saturating_add(adding) > crate::MAX_SPANS_PER_TRACE {
                let e = TraceError::TooManySpans { id, has, adding };
                return Err(Refused::new(e, Some(l)));
            }
            let mut d = self.existing(l);
            if let Some(hints) = &create_if_missing {
                d.fill_hints(hints);
            }
            d
        } else {
            let Some(new) = create_if_missing else {
                return Err(Refused::new(TraceError::NotFound(id), loaded));
            };
            if let Err(e) = validate_new(&new) {
                return Err(Refused::new(e, loaded));
            }
            self.fresh(tenant, id, new)
        };
        // From here on nothing refuses: a port failure is an internal error, which fails
        // the backend's whole write.
        let go = || -> Result<(), TraceError> {
            for input in inputs {
                if d.apply(input)? {
                    d.out.accepted += 1;
                } else {
                    d.out.duplicates += 1;
                }
            }
            if let Some(end) = end {
                // The first end decides; a trace that already ended keeps its state.
                if !d.out.trace.state.is_terminal() {
                    d.change_state(end.state, end.reason)?;
                }
            }
            Ok(())
        };
        match go() {
            Ok(()) => Ok(d.into_written()),
            Err(e) => Err(Refused::new(e, None)),
        }
    }

    /// Changes a trace's name, metadata or state. Refused when it does not exist or the
    /// state change is not allowed.
    pub(crate) fn patch<S: Stored>(
        &self,
        id: TraceId,
        loaded: Option<Loaded<S>>,
        patch: TracePatch,
    ) -> Result<Written<S>, Refused<S>> {
        if !self.live(&loaded) {
            return Err(Refused::new(TraceError::NotFound(id), loaded));
        }
        let Some(l) = loaded else {
            unreachable!("a live trace was loaded")
        };
        let reopen = patch
            .state
            .as_ref()
            .is_some_and(|to| reopens(&l.trace, to, patch.reason.as_deref()));
        if let Some(to) = patch.state.as_ref().filter(|_| !reopen) {
            if let Err(e) = l.trace.state.check_transition(to) {
                return Err(Refused::new(e.into(), Some(l)));
            }
        }
        let mut d = self.existing(l);
        if let Some(name) = patch.name {
            d.out.trace.name = Some(name);
        }
        d.out.metadata_changed |= !patch.metadata.is_empty();
        d.out.trace.metadata.extend(patch.metadata);
        if reopen {
            d.reopen(patch.reason);
        } else if let Some(to) = patch.state {
            if let Err(e) = d.change_state(to, patch.reason) {
                return Err(Refused::new(e.into(), None));
            }
        }
        Ok(d.into_written())
    }

    /// Ends a trace that has been idle since before `idle_before` as orphaned, keeping it
    /// for the orphan retention. A trace that is not a candidate (terminal, active since,
    /// or expired) comes back untouched.
    pub(crate) fn orphan<S: Stored>(
        &self,
        loaded: Loaded<S>,
        idle_before: Timestamp,
    ) -> Result<Orphan<S>, BackendError> {
        let t = &loaded.trace;
        if t.state.is_terminal() || t.last_activity_at >= idle_before || t.expires_at <= self.now {
            return Ok(Orphan::NotIdle(loaded));
        }
        let idle = self.now.since(t.last_activity_at);
        let mut d = self.existing(loaded);
        // Every state that is not terminal may end as ERRORED: a refusal here is a bug.
        d.change_state(State::Errored, Some(ORPHANED_REASON.into()))
            .map_err(|e| BackendError::internal_by("orphaning a trace", e))?;
        // Marks the trace as ended by the sweep, which alone may reopen (ADR 022).
        d.out
            .trace
            .metadata
            .insert(ORPHANED_AT_KEY.into(), self.now.to_rfc3339());
        d.out.metadata_changed = true;
        let keep = self.now.saturating_add(self.retention.orphan_ttl);
        d.out.trace.expires_at = keep;
        d.out.data_expires_at = keep.unix_nanos();
        Ok(Orphan::Ended(d.into_written(), idle))
    }

    fn existing<S: Stored>(&self, l: Loaded<S>) -> Draft<S> {
        Draft {
            model: self.clone(),
            out: Written {
                trace: l.trace,
                data_expires_at: l.data_expires_at,
                stored: Some(l.stored),
                created: false,
                metadata_changed: false,
                events: Vec::new(),
                spans: HashMap::new(),
                client_ids: Vec::new(),
                accepted: 0,
                duplicates: 0,
                fills: FillChanges::default(),
            },
        }
    }

    fn fresh<S: Stored>(&self, tenant: &str, id: TraceId, new: NewTrace) -> Draft<S> {
        let now = self.now;
        let state = new.state.unwrap_or(State::Received);
        let level = new.level.unwrap_or(self.capture.default_level);
        let failsafe = now.saturating_add(self.retention.failsafe_ttl);
        let trace = Trace {
            trace_id: id,
            tenant: tenant.to_string(),
            name: new.name,
            agent_id: new.agent_id,
            session_id: new.session_id,
            user_id: new.user_id,
            state,
            level,
            created_at: now,
            last_activity_at: now,
            ended_at: None,
            expires_at: failsafe,
            last_seq: 0,
            metadata: new.metadata,
            rollups: Rollups::default(),
        };
        let started = TraceStarted {
            name: trace.name.clone(),
            agent_id: trace.agent_id.clone(),
            session_id: trace.session_id.clone(),
            user_id: trace.user_id.clone(),
            state: trace.state.clone(),
            level,
            metadata: trace.metadata.clone(),
        };
        let mut d = Draft {
            model: self.clone(),
            out: Written {
                trace,
                data_expires_at: failsafe.unix_nanos(),
                stored: None,
                created: true,
                metadata_changed: true,
                events: Vec::new(),
                spans: HashMap::new(),
                client_ids: Vec::new(),
                accepted: 0,
                duplicates: 0,
                fills: FillChanges::default(),
            },
        };
        d.write_event(now, None, EventBody::TraceStarted(started));
        d
    }
}

/// One trace being written.
struct Draft<S> {
    model: Model,
    out: Written<S>,
}

impl<S: Stored> Draft<S> {
    /// Every write is activity.
    fn into_written(mut self) -> Written<S> {
        self.out.trace.last_activity_at = self.model.now;
        self.out
    }

    fn span(&self, id: u64) -> Option<&SpanState> {
        match self.out.spans.get(&id) {
            Some(s) => Some(s),
            None => self.out.stored.as_ref()?.span(id),
        }
    }

    /// Whether a client event id was stored before, or earlier in this write.
    fn seen(&self, id: Option<&str>) -> Result<bool, BackendError> {
        let Some(id) = id else { return Ok(false) };
        if self.out.client_ids.iter().any(|(_, k)| k == id) {
            return Ok(true);
        }
        match &self.out.stored {
            Some(s) => s.client_id_seen(id),
            None => Ok(false),
        }
    }

    /// Fills what the trace does not know yet from a later batch's hints.
    fn fill_hints(&mut self, hints: &NewTrace) {
        let t = &mut self.out.trace;
        for (field, hint) in [
            (&mut t.name, &hints.name),
            (&mut t.agent_id, &hints.agent_id),
            (&mut t.session_id, &hints.session_id),
            (&mut t.user_id, &hints.user_id),
        ] {
            if field.is_none() {
                field.clone_from(hint);
            }
        }
        for (k, v) in &hints.metadata {
            if !t.metadata.contains_key(k) {
                t.metadata.insert(k.clone(), v.clone());
                self.out.metadata_changed = true;
            }
        }
    }

    /// Applies one input; false when it was a duplicate.
    fn apply(&mut self, input: EventInput) -> Result<bool, TraceError> {
        let now = self.model.now;
        match input {
            EventInput::SpanStarted { span } => {
                if self.span(span.span_id.as_u64()).is_some() {
                    return Ok(false);
                }
                let change = ingest::start_span(None, span, now);
                self.record_span(change, false)
            }
            EventInput::SpanEnded { span } => {
                let change = match self.span(span.span_id.as_u64()) {
                    Some(SpanState::Ended { .. }) => return Ok(false),
                    Some(SpanState::Running(started)) => ingest::end_span(Some(started), span, now),
                    None => ingest::end_span(None, span, now),
                };
                self.record_span(change, true)
            }
            EventInput::Log { id, time, record } => {
                self.client_event(id, time, EventBody::Log(record))
            }
            EventInput::Error { id, time, record } => {
                self.client_event(id, time, EventBody::Error(record))
            }
        }
    }

    /// A log or error from a client: skipped when its id was stored before; an error not
    /// tied to a span counts in the rollups (a span's errors count through its status).
    fn client_event(
        &mut self,
        id: Option<String>,
        time: Option<Timestamp>,
        body: EventBody,
    ) -> Result<bool, TraceError> {
        if self.seen(id.as_deref())? {
            return Ok(false);
        }
        let span_id = body.span_id();
        if matches!(body, EventBody::Error(_)) && span_id.is_none() {
            self.out.trace.rollups.error_count += 1;
        }
        let component = self.component_of(span_id);
        self.write_event(time.unwrap_or(self.model.now), component, body);
        if let Some(id) = id {
            let seq = self.out.trace.last_seq;
            self.out.client_ids.push((seq, id));
        }
        Ok(true)
    }

    fn record_span(&mut self, change: SpanChange, ended: bool) -> Result<bool, TraceError> {
        let (previous, mut span) = match change {
            SpanChange::Duplicate => return Ok(false),
            SpanChange::New(span) => (None, span),
            SpanChange::Ended { previous, span } => (Some(previous), span),
        };
        if previous.is_none() {
            self.take_pending(&mut span);
        }
        if self.out.trace.state == State::Received {
            self.change_state(State::Running, Some("first step".into()))?;
        }
        // Cost from the price table when the span reports none, before the level strips
        // what it may not keep, so rollups and listings include it (ADR 017).
        traceway_core::pricing::fill_cost(&mut span, self.model.capture.prices.table());
        strip_span(
            &mut span,
            self.out.trace.level,
            self.model.capture.max_content_bytes,
        );
        self.out.trace.rollups.apply_span(previous.as_ref(), &span);
        let time = match span.end_time {
            Some(end) if ended => end,
            _ => span.start_time,
        };
        let component = span.component_id.clone();
        let state = if ended {
            SpanState::Ended {
                component: component.clone(),
            }
        } else {
            SpanState::Running(Box::new(span.clone()))
        };
        self.out.spans.insert(span.span_id.as_u64(), state);
        let body = if ended {
            EventBody::SpanEnded(span)
        } else {
            EventBody::SpanStarted(span)
        };
        self.push_event(time, component, body);
        Ok(true)
    }

    fn component_of(&self, span_id: Option<SpanId>) -> Option<String> {
        self.span(span_id?.as_u64())?
            .component()
            .map(str::to_string)
    }

    /// Reopens a trace the sweep orphaned (ADR 022): back to `RUNNING`, with a
    /// `state_changed` event that gives the reason, the failsafe expiry again (it is
    /// active, so the sweep sees it), and the orphan mark removed, so only another sweep
    /// can make it reopen again.
    fn reopen(&mut self, reason: Option<String>) {
        let now = self.model.now;
        let t = &mut self.out.trace;
        let from = std::mem::replace(&mut t.state, State::Running);
        t.ended_at = None;
        t.last_activity_at = now;
        let failsafe = now.saturating_add(self.model.retention.failsafe_ttl);
        t.expires_at = failsafe;
        t.metadata.remove(ORPHANED_AT_KEY);
        self.out.metadata_changed = true;
        self.out.data_expires_at = failsafe.unix_nanos();
        let change = StateChange {
            from,
            to: State::Running,
            reason,
        };
        self.write_event(now, None, EventBody::StateChanged(change));
    }

    /// Changes the state; callers that must refuse check the transition before changing
    /// anything else.
    fn change_state(&mut self, to: State, reason: Option<String>) -> Result<(), StateError> {
        let from = self.out.trace.state.clone();
        let changed = from.check_transition(&to)?;
        if !changed {
            return Ok(());
        }
        self.out.trace.state = to.clone();
        let now = self.model.now;
        let change = StateChange {
            from,
            to: to.clone(),
            reason: reason.clone(),
        };
        self.write_event(now, None, EventBody::StateChanged(change));
        if to.is_terminal() {
            let r = self.model.retention;
            let t = &mut self.out.trace;
            t.ended_at = Some(now);
            t.expires_at = now.saturating_add(r.terminal_trace_ttl);
            self.out.data_expires_at = now.saturating_add(r.terminal_data_ttl).unix_nanos();
            let ended = TraceEnded {
                state: to,
                reason,
                rollups: self.out.trace.rollups.clone(),
            };
            self.write_event(now, None, EventBody::TraceEnded(ended));
        }
        Ok(())
    }

    /// An event whose body is stripped to the trace's level.
    fn write_event(&mut self, time: Timestamp, component: Option<String>, mut body: EventBody) {
        strip_event_body(
            &mut body,
            self.out.trace.level,
            self.model.capture.max_content_bytes,
        );
        self.push_event(time, component, body);
    }

    fn push_event(&mut self, time: Timestamp, component: Option<String>, body: EventBody) {
        let t = &mut self.out.trace;
        t.last_seq += 1;
        self.out.events.push(Event {
            trace_id: t.trace_id,
            seq: t.last_seq,
            time,
            component_id: component,
            body,
        });
    }
}

/// The metadata key the orphan sweep sets (with the time) on the traces it ends.
pub const ORPHANED_AT_KEY: &str = "traceway.orphaned_at";

/// The reason a resumed workflow gives to reopen its orphaned trace.
pub const RESUMED_REASON: &str = "resumed";

/// Whether a patch reopens the trace: a trace the sweep orphaned (and only such a trace)
/// goes back to `RUNNING` when a resumed workflow asks, with reason [`RESUMED_REASON`].
fn reopens(t: &Trace, to: &State, reason: Option<&str>) -> bool {
    *to == State::Running
        && t.state == State::Errored
        && reason == Some(RESUMED_REASON)
        && t.metadata.contains_key(ORPHANED_AT_KEY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreFailure;
    use std::collections::HashSet;
    use traceway_core::{LogRecord, SpanKind};

    /// A port over plain collections, as a backend's would be.
    #[derive(Default)]
    pub(super) struct Mem {
        spans: HashMap<u64, SpanState>,
        ids: HashSet<String>,
        bodies: HashMap<u64, Span>,
        pending: HashMap<u64, Vec<traceway_core::MessageFill>>,
    }

    impl Stored for Mem {
        fn span(&self, id: u64) -> Option<&SpanState> {
            self.spans.get(&id)
        }
        fn client_id_seen(&self, id: &str) -> Result<bool, BackendError> {
            Ok(self.ids.contains(id))
        }
        fn span_body(&self, id: u64) -> Result<Option<Span>, BackendError> {
            Ok(self.bodies.get(&id).cloned())
        }
        fn pending_fills(&self, id: u64) -> Option<&[traceway_core::MessageFill]> {
            self.pending.get(&id).map(Vec::as_slice)
        }
        fn pending_totals(&self) -> PendingTotals {
            PendingTotals::of(self.pending.values().flatten())
        }
    }

    pub(super) fn model(ms: i64) -> Model {
        Model {
            now: Timestamp::from_unix_millis(ms),
            retention: Retention::default(),
            capture: CaptureConfig::default(),
        }
    }

    pub(super) fn id() -> TraceId {
        TraceId::from_u128(7).expect("id")
    }

    pub(super) fn loaded(w: Written<Mem>) -> Loaded<Mem> {
        let mut stored = w.stored.unwrap_or_default();
        stored.spans.extend(w.spans);
        stored.ids.extend(w.client_ids.into_iter().map(|(_, k)| k));
        for e in &w.events {
            if let EventBody::SpanStarted(s) | EventBody::SpanEnded(s) = &e.body {
                stored.bodies.insert(s.span_id.as_u64(), s.clone());
            }
        }
        for (sid, list) in w.fills.into_pending() {
            if list.is_empty() {
                stored.pending.remove(&sid);
            } else {
                stored.pending.insert(sid, list);
            }
        }
        Loaded {
            trace: w.trace,
            data_expires_at: w.data_expires_at,
            stored,
        }
    }

    fn span(n: u64, start: i64, end: Option<i64>) -> Span {
        let mut s = Span::new(
            SpanId::from_u64(n).expect("span id"),
            SpanKind::Tool,
            "step",
            Timestamp::from_unix_millis(start),
        );
        s.end_time = end.map(Timestamp::from_unix_millis);
        s
    }

    fn log(id: &str) -> EventInput {
        EventInput::Log {
            id: Some(id.into()),
            time: None,
            record: LogRecord {
                span_id: None,
                message: "m".into(),
                ..Default::default()
            },
        }
    }

    #[test]
    fn an_append_creates_starts_and_dedups_within_and_across_writes() {
        let m = model(1_000);
        let w = m
            .append::<Mem>(
                "t",
                id(),
                None,
                Some(NewTrace::default()),
                vec![
                    EventInput::SpanStarted {
                        span: span(1, 1_000, None).into(),
                    },
                    EventInput::SpanStarted {
                        span: span(1, 1_000, None).into(),
                    },
                    log("a"),
                    log("a"),
                ],
                None,
            )
            .map_err(|r| r.error)
            .expect("append");
        assert!(w.created);
        assert_eq!((w.accepted, w.duplicates), (2, 2));
        let types: Vec<_> = w.events.iter().map(|e| e.body.event_type()).collect();
        use traceway_core::EventType::*;
        assert_eq!(types, [TraceStarted, StateChanged, SpanStarted, Log]);
        assert_eq!(w.trace.state, State::Running);
        assert_eq!(w.client_ids, [(4, "a".to_string())]);
        assert!(matches!(w.spans.get(&1), Some(SpanState::Running(_))));

        let m = model(2_000);
        let w = m
            .append(
                "t",
                id(),
                Some(loaded(w)),
                None,
                vec![
                    log("a"),
                    EventInput::SpanEnded {
                        span: span(1, 1_000, Some(1_500)).into(),
                    },
                ],
                Some(TraceEnd {
                    state: State::Completed,
                    reason: None,
                }),
            )
            .map_err(|r| r.error)
            .expect("append");
        assert!(!w.created);
        assert_eq!((w.accepted, w.duplicates), (1, 1));
        assert_eq!(w.events.first().map(|e| e.seq), Some(5));
        assert_eq!(w.trace.state, State::Completed);
        assert_eq!(w.trace.last_activity_at, Timestamp::from_unix_millis(2_000));
        assert!(matches!(w.spans.get(&1), Some(SpanState::Ended { .. })));
        assert_eq!(w.trace.rollups.span_count, 1);
    }

    /// Issue 15, Deliver 2: spans per trace are bounded, refused before any write.
    #[test]
    fn a_trace_at_the_span_limit_refuses_more_spans_before_writing() {
        let m = model(1_000);
        let mut w = m
            .create::<Mem>("t", id(), NewTrace::default(), None)
            .map_err(|r| r.error)
            .expect("create");
        w.trace.rollups.span_count = crate::MAX_SPANS_PER_TRACE - 1;
        let before = w.trace.clone();
        let two = vec![
            EventInput::SpanStarted {
                span: span(1, 1_000, None).into(),
            },
            EventInput::SpanStarted {
                span: span(2, 1_000, None).into(),
            },
        ];
        let r = m
            .append("t", id(), Some(loaded(w)), None, two, None)
            .err()
            .expect("refused");
        assert!(
            matches!(
                r.error,
                TraceError::TooManySpans {
                    has: 99_999,
                    adding: 2,
                    ..
                }
            ),
            "{:?}",
            r.error
        );
        let back = r.loaded.expect("the trace comes back");
        assert_eq!(back.trace, before, "nothing changed");
        let one = vec![EventInput::SpanStarted {
            span: span(1, 1_000, None).into(),
        }];
        let w = m
            .append("t", id(), Some(back), None, one, None)
            .map_err(|r| r.error)
            .expect("the last span fits");
        assert_eq!(w.trace.rollups.span_count, crate::MAX_SPANS_PER_TRACE);
        let logs = m
            .append("t", id(), Some(loaded(w)), None, vec![log("still")], None)
            .map_err(|r| r.error)
            .expect("a full trace still takes logs");
        assert_eq!(logs.accepted, 1);
    }

    #[test]
    fn refusals_change_nothing_and_give_the_trace_back() {
        let m = model(1_000);
        let w = m
            .create::<Mem>("t", id(), NewTrace::default(), None)
            .map_err(|r| r.error)
            .expect("create");
        let before = w.trace.clone();
        let r = m
            .create("t", id(), NewTrace::default(), Some(loaded(w)))
            .err()
            .expect("taken");
        assert_eq!(r.error.kind(), crate::ErrorKind::IdTaken);
        let l = r.loaded.expect("given back");
        assert_eq!(l.trace, before);

        let ended = m
            .patch(
                id(),
                Some(l),
                TracePatch {
                    state: Some(State::Completed),
                    ..Default::default()
                },
            )
            .map_err(|r| r.error)
            .expect("end");
        let before = ended.trace.clone();
        let r = m
            .patch(
                id(),
                Some(loaded(ended)),
                TracePatch {
                    name: Some("renamed".into()),
                    state: Some(State::Running),
                    ..Default::default()
                },
            )
            .err()
            .expect("illegal");
        assert_eq!(r.error.kind(), crate::ErrorKind::IllegalTransition);
        assert_eq!(r.loaded.expect("given back").trace, before);

        let missing = m
            .append::<Mem>("t", id(), None, None, Vec::new(), None)
            .err()
            .expect("missing");
        assert!(matches!(missing.error, TraceError::NotFound(x) if x == id()));
    }

    #[test]
    fn an_idle_trace_is_orphaned_and_kept_for_the_orphan_retention() {
        let m = model(1_000);
        let w = m
            .create::<Mem>("t", id(), NewTrace::default(), None)
            .map_err(|r| r.error)
            .expect("create");
        let late = model(10_000);
        let Ok(Orphan::NotIdle(active)) = late.orphan(loaded(w), Timestamp::from_unix_millis(500))
        else {
            panic!("active since the cut-off, so not idle")
        };
        let Ok(Orphan::Ended(w, idle)) = late.orphan(active, Timestamp::from_unix_millis(5_000))
        else {
            panic!("idle, so orphaned")
        };
        assert_eq!(idle, Duration::from_secs(9));
        assert_eq!(w.trace.state, State::Errored);
        let keep = late.now.saturating_add(late.retention.orphan_ttl);
        assert_eq!(
            (w.trace.expires_at, w.data_expires_at),
            (keep, keep.unix_nanos())
        );
    }
}
