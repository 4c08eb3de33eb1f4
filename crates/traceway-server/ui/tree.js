// The trace's spans as a model the waterfall draws: a map by id, rebuilt into a preorder
// list in linear time (plus the sort of each span's children by start), so 10,000 spans
// and a stream of live ones stay cheap.

import { tsMs } from './format.js';

/** The span tree of `GET /api/v1/traces/{id}` as a flat list of spans (no recursion). */
export function flattenTree(nodes) {
  const out = [];
  const stack = [...nodes].reverse();
  while (stack.length) {
    const n = stack.pop();
    const { children, depth, ...span } = n;
    out.push(span);
    if (children) for (let i = children.length - 1; i >= 0; i--) stack.push(children[i]);
  }
  return out;
}

export class TraceModel {
  constructor() {
    /** span id -> span (with `_s`/`_e`: start and end in ms). */
    this.spans = new Map();
    /** span id -> its log and error events. */
    this.events = new Map();
    /** Trace-level error events (no span). */
    this.traceErrors = [];
    this.collapsed = new Set();
    this.order = [];
    this.depth = new Map();
    this.childCount = new Map();
    this.dirty = true;
    this.seenEvents = new Set();
  }

  /** Adds or replaces a span. A `span_started` never replaces an ended span (a late copy). */
  upsert(span) {
    const old = this.spans.get(span.span_id);
    if (old && old.end_time && !span.end_time) return false;
    span._s = tsMs(span.start_time);
    span._e = span.end_time ? tsMs(span.end_time) : null;
    this.spans.set(span.span_id, span);
    this.dirty = true;
    return true;
  }

  /** Files a log or error event under its span; `key` drops an event seen twice. */
  addEvent(ev, key) {
    if (key != null) {
      if (this.seenEvents.has(key)) return;
      this.seenEvents.add(key);
    }
    const sid = ev.payload && ev.payload.span_id;
    if (!sid) {
      if (ev.type === 'error') this.traceErrors.push(ev);
      return;
    }
    let list = this.events.get(sid);
    if (!list) this.events.set(sid, (list = []));
    list.push(ev);
  }

  /** Rebuilds the preorder list if spans changed. */
  build() {
    if (!this.dirty) return;
    this.dirty = false;
    const spans = this.spans;
    const kids = new Map();
    const roots = [];
    for (const s of spans.values()) {
      const p = s.parent_span_id;
      if (p && p !== s.span_id && spans.has(p)) {
        let l = kids.get(p);
        if (!l) kids.set(p, (l = []));
        l.push(s);
      } else {
        roots.push(s);
      }
    }
    const byStart = (a, b) => (a._s - b._s) || (a.span_id < b.span_id ? -1 : a.span_id > b.span_id ? 1 : 0);
    roots.sort(byStart);
    for (const l of kids.values()) l.sort(byStart);
    const order = [];
    const depth = new Map();
    const childCount = new Map();
    const seen = new Set();
    const walk = (root) => {
      const stack = [[root, 0]];
      while (stack.length) {
        const [s, d] = stack.pop();
        if (seen.has(s.span_id)) continue;
        seen.add(s.span_id);
        order.push(s);
        depth.set(s.span_id, d);
        const l = kids.get(s.span_id);
        childCount.set(s.span_id, l ? l.length : 0);
        if (l) for (let i = l.length - 1; i >= 0; i--) stack.push([l[i], d + 1]);
      }
    };
    for (const r of roots) walk(r);
    // A parent cycle (bad input) is reached from no root: show its members as roots.
    if (order.length < spans.size) {
      for (const s of [...spans.values()].sort(byStart)) if (!seen.has(s.span_id)) walk(s);
    }
    this.order = order;
    this.depth = depth;
    this.childCount = childCount;
  }

  /** The rows shown: the preorder list without the descendants of collapsed spans. */
  visible() {
    this.build();
    if (!this.collapsed.size) return this.order;
    const out = [];
    let skipBelow = -1;
    for (const s of this.order) {
      const d = this.depth.get(s.span_id);
      if (skipBelow >= 0) {
        if (d > skipBelow) continue;
        skipBelow = -1;
      }
      out.push(s);
      if (this.collapsed.has(s.span_id) && this.childCount.get(s.span_id)) skipBelow = d;
    }
    return out;
  }

  /** Expands the ancestors of a span so that it is shown. */
  reveal(id) {
    let s = this.spans.get(id);
    const guard = new Set();
    while (s && s.parent_span_id && !guard.has(s.span_id)) {
      guard.add(s.span_id);
      this.collapsed.delete(s.parent_span_id);
      s = this.spans.get(s.parent_span_id);
    }
  }

  /** [first start, last end] in ms; running spans count up to `now`. */
  extent(now) {
    let t0 = Infinity;
    let t1 = -Infinity;
    for (const s of this.spans.values()) {
      if (s._s == null) continue;
      if (s._s < t0) t0 = s._s;
      const e = s._e == null ? Math.max(now, s._s) : s._e;
      if (e > t1) t1 = e;
    }
    if (!Number.isFinite(t0)) return [now, now + 1];
    return [t0, Math.max(t1, t0 + 0.001)];
  }

  /** Counts for the header: spans, running, errors, tokens, cost. */
  totals() {
    let running = 0, errors = 0, tokens = 0, cost = 0;
    for (const s of this.spans.values()) {
      if (s._e == null) running++;
      if (s.status && s.status.code === 'error') errors++;
      const l = s.llm;
      if (l && s.kind !== 'embedding') {
        tokens += l.total_tokens != null ? l.total_tokens : (l.input_tokens || 0) + (l.output_tokens || 0);
        if (l.cost_usd) cost += l.cost_usd;
      }
    }
    return { spans: this.spans.size, running, errors: errors + this.traceErrors.length, tokens, cost };
  }
}
