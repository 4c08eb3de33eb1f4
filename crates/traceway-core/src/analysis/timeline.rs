//! Where each span sits in time once the tree is made consistent: effective intervals
//! (children clamped to their parent, running spans counted up to `now`), self time, and
//! the critical path. See ADR 016.

use std::sync::Arc;

use serde::Serialize;

use crate::index::SpanIndex;
use crate::model::{Span, SpanKind};
use crate::{SpanId, Timestamp};

/// Nanoseconds to milliseconds for output.
pub(crate) fn ms(ns: i64) -> f64 {
    ns as f64 / 1e6
}

/// The consistent timeline of a trace's spans, by index into the slice it was built from.
pub(crate) struct Timeline {
    pub index: SpanIndex,
    /// Effective start and end in Unix nanoseconds (`end >= start`).
    pub start: Vec<i64>,
    pub end: Vec<i64>,
    /// The span lay wholly outside its parent's interval: it is left off the critical path
    /// and its time counts on its own, as if it were a root.
    pub detached: Vec<bool>,
    /// Reached from a root (spans in a parent cycle are not).
    pub reached: Vec<bool>,
    /// Distance from its root (0 for spans not reached).
    pub depth: Vec<usize>,
    /// Exclusive time: the effective interval minus the union of its attached children's.
    pub self_ns: Vec<i64>,
    /// Time on the critical path.
    pub critical_ns: Vec<i64>,
    /// The ordered critical path.
    pub segments: Vec<(usize, i64, i64)>,
    /// Time on the path's window covered by no root (between roots).
    pub gap_ns: i64,
    /// The window of the attached roots: earliest start to latest effective end.
    pub window: Option<(i64, i64)>,
}

/// A span's end, or `now` while it runs (never before its start).
pub(crate) fn end_or_now(s: &Span, now: Timestamp) -> i64 {
    let start = s.start_time.unix_nanos();
    s.end_time
        .map_or(now.unix_nanos(), |e| e.unix_nanos())
        .max(start)
}

impl Timeline {
    pub fn new(spans: &[Span], now: Timestamp) -> Timeline {
        let n = spans.len();
        let index = SpanIndex::new(spans);
        let order = index.preorder();
        let mut start = vec![0i64; n];
        let mut end = vec![0i64; n];
        let mut detached = vec![false; n];
        let mut reached = vec![false; n];
        let mut depth = vec![0usize; n];
        // Parents come before children in preorder, so each parent's interval is final
        // when its children are clamped to it.
        for &(i, d) in &order {
            reached[i] = true;
            depth[i] = d;
            let (s, e) = (spans[i].start_time.unix_nanos(), end_or_now(&spans[i], now));
            match index.parent[i] {
                Some(p) if !(e < start[p] || s > end[p]) => {
                    start[i] = s.clamp(start[p], end[p]);
                    end[i] = e.clamp(start[p], end[p]);
                }
                Some(_) => {
                    detached[i] = true;
                    (start[i], end[i]) = (s, e);
                }
                None => (start[i], end[i]) = (s, e),
            }
        }
        let mut t = Timeline {
            index,
            start,
            end,
            detached,
            reached,
            depth,
            self_ns: vec![0; n],
            critical_ns: vec![0; n],
            segments: Vec::new(),
            gap_ns: 0,
            window: None,
        };
        t.compute_self_times();
        t.compute_critical_path();
        t
    }

    fn attached_children(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        self.index.children[i]
            .iter()
            .copied()
            .filter(|&c| !self.detached[c])
    }

    fn compute_self_times(&mut self) {
        for i in 0..self.start.len() {
            if !self.reached[i] {
                continue;
            }
            // Children are sorted by raw start; clamping to the parent keeps that order.
            let mut covered = 0i64;
            let mut cur: Option<(i64, i64)> = None;
            for c in self.attached_children(i) {
                let (s, e) = (self.start[c], self.end[c]);
                cur = match cur {
                    Some((cs, ce)) if s <= ce => Some((cs, ce.max(e))),
                    Some((cs, ce)) => {
                        covered += ce - cs;
                        Some((s, e))
                    }
                    None => Some((s, e)),
                };
            }
            if let Some((cs, ce)) = cur {
                covered += ce - cs;
            }
            self.self_ns[i] = (self.end[i] - self.start[i] - covered).max(0);
        }
    }

    /// Jaeger's walk: from the end of a span, step into the child that finished last
    /// before the cursor, give the parent the gap after it, continue from that child's
    /// start. Several roots are children of a virtual root spanning their window; time
    /// between roots is a gap, on no span.
    fn compute_critical_path(&mut self) {
        let roots: Vec<usize> = self.index.roots.clone();
        if roots.is_empty() {
            return;
        }
        let w_start = roots.iter().map(|&r| self.start[r]).min().unwrap_or(0);
        let w_end = roots.iter().map(|&r| self.end[r]).max().unwrap_or(0);
        self.window = Some((w_start, w_end));
        // Children of every span by effective end, latest first (ties: later start first,
        // so the longer of two equal-ending siblings is not preferred over the one that
        // actually blocked; then id for determinism).
        let by_end = |t: &Timeline, mut v: Vec<usize>| {
            v.sort_by(|&a, &b| t.end[b].cmp(&t.end[a]).then(t.start[b].cmp(&t.start[a])));
            v
        };
        let kids: Vec<Vec<usize>> = (0..self.start.len())
            .map(|i| by_end(self, self.attached_children(i).collect()))
            .collect();
        let root_order = by_end(self, roots);

        // Segments come out latest first; reversed at the end.
        let mut segs: Vec<(usize, i64, i64)> = Vec::new();
        // Frames: (span, cursor, next child position). The virtual root is `None`.
        struct Frame {
            span: Option<usize>,
            cursor: i64,
            pos: usize,
        }
        let mut stack = vec![Frame {
            span: None,
            cursor: w_end,
            pos: 0,
        }];
        let mut gap = 0i64;
        while let Some(f) = stack.last_mut() {
            let list = match f.span {
                Some(i) => &kids[i],
                None => &root_order,
            };
            let mut next = None;
            while f.pos < list.len() {
                let c = list[f.pos];
                f.pos += 1;
                if self.end[c] <= f.cursor {
                    next = Some(c);
                    break;
                }
            }
            match next {
                Some(c) => {
                    let (from, to) = (self.end[c], f.cursor);
                    if to > from {
                        match f.span {
                            Some(i) => segs.push((i, from, to)),
                            None => gap += to - from,
                        }
                    }
                    f.cursor = self.start[c];
                    stack.push(Frame {
                        span: Some(c),
                        cursor: self.end[c],
                        pos: 0,
                    });
                }
                None => {
                    let f = stack.pop().expect("frame");
                    let floor = f.span.map_or(w_start, |i| self.start[i]);
                    if f.cursor > floor {
                        match f.span {
                            Some(i) => segs.push((i, floor, f.cursor)),
                            None => gap += f.cursor - floor,
                        }
                    }
                }
            }
        }
        segs.reverse();
        for &(i, s, e) in &segs {
            self.critical_ns[i] += e - s;
        }
        self.segments = segs;
        self.gap_ns = gap;
    }
}

/// One stretch of the critical path: the span that was the blocking work from `start` to
/// `end`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Segment {
    /// The span.
    pub span_id: SpanId,
    /// Its kind.
    pub kind: SpanKind,
    // Shared by the segments of spans with the same name: a path of thousands of
    // stretches has a handful of names (ADR 037). Serialised as a string.
    /// Its name.
    #[serde(serialize_with = "shared_str")]
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub name: Arc<str>,
    /// Its model, for an LLM span.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "shared_opt_str"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub model: Option<Arc<str>>,
    /// Distance from its root.
    pub depth: usize,
    /// Where the stretch starts.
    pub start: Timestamp,
    /// The start's distance from the start of the trace's first root, in ms.
    pub offset_ms: f64,
    /// Where it ends.
    pub end: Timestamp,
    /// `end - start`, in milliseconds.
    pub duration_ms: f64,
    /// The span had not ended: its time counts up to the analysis time.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    #[cfg_attr(feature = "openapi", schema(required = false))]
    pub running: bool,
}

fn shared_str<S: serde::Serializer>(v: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v)
}

fn shared_opt_str<S: serde::Serializer>(v: &Option<Arc<str>>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_some(&**v),
        None => s.serialize_none(),
    }
}

/// One group's share of the critical path.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PathShare {
    /// The kind or model.
    pub key: String,
    /// Time on the path, in milliseconds.
    pub duration_ms: f64,
    /// Fraction of the path (0 to 1).
    pub share: f64,
}

/// The critical path of a trace: the chain of work that set its duration.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CriticalPath {
    /// The stretches, in time order; they never overlap.
    pub segments: Vec<Segment>,
    /// Sum of the segments, in milliseconds.
    pub duration_ms: f64,
    /// Time between roots that no span covers, in milliseconds.
    pub gap_ms: f64,
    /// The path's share per span kind, largest first.
    pub by_kind: Vec<PathShare>,
    /// The path's share per model (LLM spans only), largest first.
    pub by_model: Vec<PathShare>,
    /// Spans left off because they lay wholly outside their parent (clock skew).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(required = false))]
    pub dropped: Vec<SpanId>,
    /// Some span on the path had not ended.
    pub includes_running: bool,
}

/// Effective interval and self time of one span.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpanTiming {
    /// The span.
    pub span_id: SpanId,
    /// Start after clamping to its parent.
    pub start: Timestamp,
    /// End after clamping (the analysis time for a running span).
    pub end: Timestamp,
    /// Exclusive time in milliseconds.
    pub self_ms: f64,
    /// Time on the critical path in milliseconds.
    pub critical_ms: f64,
    /// Wholly outside its parent: counted on its own, off the critical path.
    pub detached: bool,
}

fn shares(mut v: Vec<(String, i64)>, total: i64) -> Vec<PathShare> {
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.into_iter()
        .map(|(key, ns)| PathShare {
            key,
            duration_ms: ms(ns),
            share: if total > 0 {
                ns as f64 / total as f64
            } else {
                0.0
            },
        })
        .collect()
}

impl Timeline {
    pub fn critical_path<'s>(&self, spans: &'s [Span]) -> CriticalPath {
        let depth = &self.depth;
        let total: i64 = self.segments.iter().map(|&(_, s, e)| e - s).sum();
        let mut by_kind: rustc_hash::FxHashMap<&'static str, i64> = Default::default();
        let mut by_model: rustc_hash::FxHashMap<&str, i64> = Default::default();
        let mut shared: rustc_hash::FxHashMap<&'s str, Arc<str>> = Default::default();
        let mut share =
            |s: &'s str| -> Arc<str> { shared.entry(s).or_insert_with(|| Arc::from(s)).clone() };
        let segments = self
            .segments
            .iter()
            .map(|&(i, s, e)| {
                let span = &spans[i];
                *by_kind.entry(span.kind.as_str()).or_default() += e - s;
                let model = span.llm.as_ref().and_then(|l| l.model.as_deref());
                if let Some(m) = model {
                    *by_model.entry(m).or_default() += e - s;
                }
                Segment {
                    span_id: span.span_id,
                    kind: span.kind,
                    name: share(&span.name),
                    model: model.map(&mut share),
                    depth: depth[i],
                    start: Timestamp::from_unix_nanos(s),
                    offset_ms: ms(s - self.window.map_or(s, |w| w.0)),
                    end: Timestamp::from_unix_nanos(e),
                    duration_ms: ms(e - s),
                    running: span.end_time.is_none(),
                }
            })
            .collect::<Vec<_>>();
        let dropped = (0..spans.len())
            .filter(|&i| self.detached[i])
            .map(|i| spans[i].span_id)
            .collect();
        CriticalPath {
            includes_running: segments.iter().any(|s| s.running),
            segments,
            duration_ms: ms(total),
            gap_ms: ms(self.gap_ns),
            by_kind: shares(
                by_kind
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
                total,
            ),
            by_model: shares(
                by_model
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
                total,
            ),
            dropped,
        }
    }
}

/// The critical path of `spans`, running spans counted up to `now`.
pub fn critical_path(spans: &[Span], now: Timestamp) -> CriticalPath {
    Timeline::new(spans, now).critical_path(spans)
}

/// Effective interval, self time and critical-path time of every span reached from a root
/// (spans caught in a parent cycle are left out), in the order of `spans`.
pub fn span_timings(spans: &[Span], now: Timestamp) -> Vec<SpanTiming> {
    let t = Timeline::new(spans, now);
    (0..spans.len())
        .filter(|&i| t.reached[i])
        .map(|i| SpanTiming {
            span_id: spans[i].span_id,
            start: Timestamp::from_unix_nanos(t.start[i]),
            end: Timestamp::from_unix_nanos(t.end[i]),
            self_ms: ms(t.self_ns[i]),
            critical_ms: ms(t.critical_ns[i]),
            detached: t.detached[i],
        })
        .collect()
}
