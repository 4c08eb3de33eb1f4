//! Completion with trace: a request that asks for it gets its own steps back inside the
//! response, formatted by the same functions the server's `format=compact|detailed` uses
//! (`traceway_core::format`), with no round trip to the server (ADR 019).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use traceway_core::{Level, Rollups, Span, SpanId, State, StatusCode, Timestamp, Trace, TraceId};

use crate::span::SpanData;

/// The query parameter that asks for the trace: `?return_trace=compact|detailed`.
pub const RETURN_TRACE_PARAM: &str = "return_trace";
/// The header that asks for the trace (same values as the query parameter).
pub const RETURN_TRACE_HEADER: &str = "x-traceway-return-trace";

/// The form of the trace returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnTrace {
    /// `traceway_core::format::compact`.
    Compact,
    /// `traceway_core::format::detailed`.
    Detailed,
    /// The raw spans (`{"trace_id", "spans": [...]}`): what a service asks of the
    /// services it calls, so their steps join its own (see [`crate::client`]).
    Spans,
}

impl ReturnTrace {
    /// Parses `compact`, `detailed` or `spans`.
    pub fn parse(s: &str) -> Option<ReturnTrace> {
        match s.trim() {
            "compact" => Some(ReturnTrace::Compact),
            "detailed" => Some(ReturnTrace::Detailed),
            "spans" => Some(ReturnTrace::Spans),
            _ => None,
        }
    }
}

/// The bounds of one request's collected trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletionBounds {
    /// Most steps kept (default 500); later steps are counted, not kept.
    pub max_steps: usize,
    /// Most bytes of step JSON kept (default 1 MiB).
    pub max_bytes: usize,
    /// Largest JSON response body the trace is added to (default 8 MiB); a larger one is
    /// passed through unchanged.
    pub max_body_bytes: usize,
}

impl Default for CompletionBounds {
    fn default() -> Self {
        CompletionBounds {
            max_steps: 500,
            max_bytes: 1 << 20,
            max_body_bytes: 8 << 20,
        }
    }
}

struct State_ {
    spans: Vec<Span>,
    index: HashMap<SpanId, (usize, usize)>,
    bytes: usize,
    /// Steps left out by the bounds (each counted once, up to `MAX_DROPPED_IDS` ids).
    dropped: u64,
    dropped_ids: std::collections::HashSet<SpanId>,
}

const MAX_DROPPED_IDS: usize = 10_000;

/// The steps of one request, gathered in the process while it runs.
pub struct Collector {
    bounds: CompletionBounds,
    state: Mutex<State_>,
    /// For an SSE response: each step as it starts and ends.
    live: Mutex<Option<mpsc::Sender<Value>>>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("bounds", &self.bounds)
            .finish()
    }
}

impl Collector {
    pub(crate) fn new(bounds: CompletionBounds, live: Option<mpsc::Sender<Value>>) -> Collector {
        Collector {
            bounds,
            state: Mutex::new(State_ {
                spans: Vec::new(),
                index: HashMap::new(),
                bytes: 0,
                dropped: 0,
                dropped_ids: Default::default(),
            }),
            live: Mutex::new(live),
        }
    }

    /// From now on, each kept step also goes to `tx` (an SSE response's `trace` events).
    pub(crate) fn set_live(&self, tx: mpsc::Sender<Value>) {
        *self.live.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
    }

    pub(crate) fn on_span(&self, data: &SpanData, service: Option<&str>) {
        self.insert(data.to_span(service));
    }

    /// Adds (or replaces, by span id) one step, within the bounds.
    pub(crate) fn insert(&self, span: Span) {
        let size = serde_json::to_vec(&span).map_or(0, |v| v.len());
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let kept = match st.index.get(&span.span_id).copied() {
            Some((i, old)) => {
                if st.bytes - old + size > self.bounds.max_bytes {
                    false
                } else {
                    st.bytes = st.bytes - old + size;
                    st.index.insert(span.span_id, (i, size));
                    st.spans[i] = span.clone();
                    true
                }
            }
            None => {
                if st.spans.len() >= self.bounds.max_steps
                    || st.bytes + size > self.bounds.max_bytes
                {
                    false
                } else {
                    st.bytes += size;
                    let i = st.spans.len();
                    st.index.insert(span.span_id, (i, size));
                    st.spans.push(span.clone());
                    true
                }
            }
        };
        if !kept {
            if st.dropped_ids.len() >= MAX_DROPPED_IDS || st.dropped_ids.insert(span.span_id) {
                st.dropped += 1;
            }
            return;
        }
        drop(st);
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(live) = live {
            if live
                .try_send(serde_json::to_value(&span).unwrap_or(Value::Null))
                .is_err()
            {
                self.state.lock().unwrap_or_else(|e| e.into_inner()).dropped += 1;
            }
        }
    }

    /// Adds the steps a called service returned (its `"trace": {"spans": [...]}`).
    pub(crate) fn absorb(&self, trace: &Value) -> usize {
        let Some(spans) = trace.get("spans").and_then(Value::as_array) else {
            return 0;
        };
        let mut n = 0;
        for s in spans {
            if let Ok(span) = serde_json::from_value::<Span>(s.clone()) {
                self.insert(span);
                n += 1;
            }
        }
        n
    }

    /// The steps kept so far, and how many were left out by the bounds.
    pub fn snapshot(&self) -> (Vec<Span>, u64) {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        (st.spans.clone(), st.dropped)
    }

    /// The trace in the asked form.
    pub(crate) fn render(
        &self,
        mode: ReturnTrace,
        trace_id: TraceId,
        tenant: &str,
        level: Level,
    ) -> Value {
        let (spans, dropped) = self.snapshot();
        let trace = || local_trace(trace_id, tenant, level, &spans);
        let mut out = match mode {
            ReturnTrace::Spans => json!({"trace_id": trace_id, "spans": spans}),
            ReturnTrace::Compact => traceway_core::format::compact(&trace(), &spans),
            ReturnTrace::Detailed => traceway_core::format::detailed(&trace(), &spans),
        };
        if dropped > 0 {
            if let Some(o) = out.as_object_mut() {
                o.insert("steps_left_out".into(), json!(dropped));
            }
        }
        out
    }
}

/// The trace row as this process knows it: state from the root step, rollups over the
/// steps collected. Server-side fields (expiry, seq) are what a fresh trace would have.
pub(crate) fn local_trace(trace_id: TraceId, tenant: &str, level: Level, spans: &[Span]) -> Trace {
    let mut rollups = Rollups::default();
    for s in spans {
        rollups.apply_span(None, s);
    }
    let ids: std::collections::HashSet<SpanId> = spans.iter().map(|s| s.span_id).collect();
    // The local root: the step whose parent is not among the collected steps.
    let root = spans
        .iter()
        .find(|s| s.parent_span_id.is_none_or(|p| !ids.contains(&p)));
    let created = spans
        .iter()
        .map(|s| s.start_time)
        .min()
        .unwrap_or_else(Timestamp::now);
    let (state, ended_at) = match root {
        Some(r) if r.end_time.is_some() => (
            if r.status.code == StatusCode::Error {
                State::Errored
            } else {
                State::Completed
            },
            r.end_time,
        ),
        _ => (State::Running, None),
    };
    Trace {
        trace_id,
        tenant: tenant.to_string(),
        name: root.map(|r| r.name.clone()),
        agent_id: None,
        session_id: None,
        user_id: None,
        state,
        level,
        created_at: created,
        last_activity_at: Timestamp::now(),
        ended_at,
        expires_at: created.saturating_add(std::time::Duration::from_secs(24 * 3600)),
        last_seq: 0,
        metadata: BTreeMap::new(),
        rollups,
    }
}
