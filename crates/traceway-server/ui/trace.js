// The trace view: header, waterfall, detail pane and analysis, kept live by the trace's
// SSE stream (resumed with Last-Event-ID after a dropped connection).

import { api, describe } from './api.js';
import { h, clear, banner, copyText, toast } from './dom.js';
import { fmtCost, fmtDuration, fmtInt, fmtTime, tsMs } from './format.js';
import { openStream } from './sse.js';
import { TraceModel, flattenTree } from './tree.js';
import { Waterfall } from './waterfall.js';
import { detailPane } from './detail.js';
import { analysisPanel, criticalMap } from './analysis.js';
import { setLive } from './list.js';

const TERMINAL = new Set(['COMPLETED', 'ERRORED']);
/** Spans per page when a trace is read page by page (the server's maximum). */
const SPAN_PAGE = 10000;
/** Log and error events read when a trace opens (the API's largest page). */
const EVENTS_PAGE = 10000;

export class TraceView {
  constructor(main, id) {
    this.id = id;
    this.main = main;
    this.model = new TraceModel();
    this.trace = null;
    this.selected = null;
    this.analysis = null;
    this.stream = null;
    this.disposed = false;
    this.timers = [];
    this.header = h('div', { class: 'trace-head' });
    this.detail = h('div', { class: 'detail-wrap' });
    this.analysisEl = h('div', { class: 'analysis-wrap' });
    this.wf = new Waterfall({
      onSelect: (sid) => { location.hash = `#/trace/${this.id}/span/${sid}`; },
      onToggle: (sid) => {
        if (this.model.collapsed.has(sid)) this.model.collapsed.delete(sid); else this.model.collapsed.add(sid);
        this.refreshRows();
      },
    });
    const critToggle = h('input', { type: 'checkbox', checked: true, id: 'crit-toggle' });
    critToggle.addEventListener('change', () => { this.wf.showCritical = critToggle.checked; this.wf.schedule(); });
    this.toolbar = h('div', { class: 'toolbar' },
      h('a', { href: '#/', class: 'btn' }, '← Traces'),
      h('button', { type: 'button', onclick: () => this.copyLink() }, 'Copy link'),
      h('button', { type: 'button', onclick: () => { this.model.collapsed.clear(); this.refreshRows(); } }, 'Expand all'),
      h('button', { type: 'button', onclick: () => this.collapseAll() }, 'Collapse all'),
      h('label', { class: 'check' }, critToggle, ' critical path'),
      h('span', { class: 'spacer' }),
      h('span', { class: 'legend' }, ['agent', 'chain', 'llm', 'tool', 'retriever', 'embedding', 'other'].map((k) =>
        h('span', { class: `kind k-${k}` }, k))));
    clear(main).append(
      h('div', { class: 'trace-view', dataset: { trace: id } },
        this.header, this.toolbar,
        (this.body = h('div', { class: 'trace-body' }, this.wf.el, this.detail)),
        h('h2', { class: 'section-title' }, 'Analysis'),
        this.analysisEl));
    this.load();
  }

  async load() {
    let data;
    try {
      // Asked for in pages of the largest size (ADR 031): a trace of up to 10,000 spans
      // comes in one answer. Without `span_limit`, a trace too large for the tree form is
      // read whole to find that out and answered with its first 1,000 spans only.
      data = await api(`/api/v1/traces/${this.id}`, { span_limit: SPAN_PAGE });
    } catch (e) {
      if (this.disposed) return;
      clear(this.main).append(h('div', { class: 'pad' },
        h('h2', null, `Trace ${this.id}`), h('p', { class: 'error-msg' }, describe(e)), h('a', { href: '#/' }, '← Traces')));
      return;
    }
    if (this.disposed) return;
    banner(null);
    this.trace = data.trace;
    this.level = data.level;
    for (const s of flattenTree(data.spans || [])) this.model.upsert(s);
    this.refreshRows();
    this.select(this.pendingSpan || this.selected, true);
    this.follow(data.trace.last_seq);
    this.timers.push(setInterval(() => this.tick(), 250));
    // A trace too large for one answer comes page by page (`span_page`, ADR 031): read
    // the rest while the first page is already on screen. The steps' events and the
    // analysis (each a read of the whole trace on the server) wait for the spans, so as not
    // to slow the waterfall down.
    await this.loadSpanPages(data.span_page);
    this.markInteractive();
    if (this.disposed) return;
    this.loadEvents();
    this.loadAnalysis();
  }

  /** Marks, for the benchmark and the browser's performance panel, when the waterfall is
   *  drawn with every span read (`tw:trace-rows`) and when that frame has been painted and
   *  the page answers input again (`tw:trace-interactive`). The waterfall's own frame was
   *  asked for first, so it runs before this one. */
  markInteractive() {
    if (this.disposed) return;
    requestAnimationFrame(() => {
      if (this.disposed) return;
      performance.mark('tw:trace-rows');
      setTimeout(() => performance.mark('tw:trace-interactive'), 0);
    });
  }

  async loadSpanPages(page) {
    while (page && page.next_cursor && !this.disposed) {
      let more;
      try {
        more = await api(`/api/v1/traces/${this.id}`, { span_limit: SPAN_PAGE, span_cursor: page.next_cursor });
      } catch (e) {
        toast(`Spans not all loaded: ${describe(e)}`, 'error');
        return;
      }
      if (this.disposed) return;
      for (const s of more.spans || []) this.model.upsert(s);
      this.refreshRows();
      this.select(this.pendingSpan || this.selected, true);
      page = more.span_page;
    }
  }

  async loadEvents() {
    try {
      const r = await api(`/api/v1/traces/${this.id}/events`, { type: 'log,error', limit: EVENTS_PAGE });
      if (this.disposed) return;
      for (const e of r.events || []) this.model.addEvent(e, e.seq);
      this.renderDetail();
      this.renderHeader();
    } catch (e) {
      toast(`Events not loaded: ${describe(e)}`, 'error');
    }
  }

  follow(lastSeq) {
    this.ended = TERMINAL.has(this.trace.state);
    this.stream = openStream(`/api/v1/traces/${this.id}/stream`, {
      lastEventId: lastSeq,
      onEvent: (m) => this.onEvent(m),
      onState: (state, err) => {
        setLive(state === 'open' ? 'live' : state === 'retrying' ? 'reconnecting' : 'offline');
        if (err && state === 'closed') toast(describe(err), 'error');
      },
      // The server closes the stream a grace period after the trace ended.
      shouldReconnect: () => !this.ended && !this.disposed,
    });
  }

  onEvent(m) {
    if (m.type === 'lagged') return; // reconnects with Last-Event-ID, which resumes exactly
    let e;
    try { e = JSON.parse(m.data); } catch (_) { return; }
    const t = this.trace;
    switch (e.type) {
      case 'span_started':
      case 'span_ended':
        this.model.upsert(e.payload);
        this.rowsDirty = true;
        if (e.payload.span_id === this.selected) this.detailDirty = true;
        break;
      case 'log':
      case 'error':
        this.model.addEvent(e, e.seq);
        if (e.payload && e.payload.span_id === this.selected) this.detailDirty = true;
        break;
      case 'state_changed':
        t.state = e.payload.to;
        break;
      case 'trace_ended':
        t.state = e.payload.state;
        t.ended_at = e.time;
        t.rollups = e.payload.rollups;
        this.ended = true;
        break;
      default:
        break;
    }
    t.last_seq = e.seq;
    this.headerDirty = true;
    this.analysisDirty = true;
  }

  /** Four times a second: apply what the stream brought, grow running bars. */
  tick() {
    if (this.disposed) return;
    if (this.rowsDirty) { this.rowsDirty = false; this.refreshRows(); }
    else if (!TERMINAL.has(this.trace.state) && this.model.totals().running) this.updateExtent();
    if (this.detailDirty) { this.detailDirty = false; this.renderDetail(); }
    if (this.headerDirty) { this.headerDirty = false; this.renderHeader(); }
    if (this.analysisDirty && Date.now() - (this.analysisAt || 0) > 2000) {
      this.analysisDirty = false;
      this.loadAnalysis();
    }
  }

  updateExtent() {
    const now = Date.now();
    const [t0, t1] = this.model.extent(TERMINAL.has(this.trace.state) ? -Infinity : now);
    this.wf.setExtent(t0, t1, now);
  }

  refreshRows() {
    const rows = this.model.visible();
    this.updateExtent();
    this.wf.setRows(this.model, rows);
    // As tall as its rows (the detail pane needs room), at most the window.
    const want = Math.max(rows.length * 24 + 30, 420);
    this.body.style.height = `min(${want}px, calc(100vh - 190px))`;
    this.renderHeader();
  }

  collapseAll() {
    for (const [id, n] of this.model.childCount) if (n) this.model.collapsed.add(id);
    // Keep the roots' first level visible.
    this.refreshRows();
  }

  async loadAnalysis() {
    this.analysisAt = Date.now();
    try {
      const a = await api(`/api/v1/traces/${this.id}/analysis`);
      if (this.disposed) return;
      this.analysis = a;
      this.wf.setCritical(criticalMap(a));
      clear(this.analysisEl).append(analysisPanel(a, (sid) => { location.hash = `#/trace/${this.id}/span/${sid}`; }));
      if (!this.analysisMarked) { this.analysisMarked = true; performance.mark('tw:trace-analysis'); }
    } catch (e) {
      if (this.disposed) return;
      clear(this.analysisEl).append(h('p', { class: 'error-msg' }, `Analysis unavailable: ${describe(e)}`));
    }
  }

  renderHeader() {
    const t = this.trace;
    if (!t) return;
    const tot = this.model.totals();
    const r = t.rollups || {};
    const created = tsMs(t.created_at);
    const [t0, t1] = this.model.extent(TERMINAL.has(t.state) ? -Infinity : Date.now());
    // The last event applied, for whoever inspects the page (and the reconnect test).
    this.header.dataset.lastSeq = String(t.last_seq);
    const dur = r.duration_ms != null && TERMINAL.has(t.state) ? r.duration_ms : (tot.spans ? t1 - t0 : null);
    clear(this.header).append(h('div', null,
      h('h1', null, t.name || '(unnamed trace)', ' ', h('span', { class: `state st-${t.state}` }, t.state)),
      h('div', { class: 'facts' },
        h('span', null, 'id ', h('code', { class: 'trace-id' }, t.trace_id)),
        t.agent_id ? h('span', null, 'agent ', h('strong', null, t.agent_id)) : null,
        t.user_id ? h('span', null, 'user ', t.user_id) : null,
        t.session_id ? h('span', null, 'session ', t.session_id) : null,
        h('span', null, 'started ', fmtTime(created)),
        h('span', null, 'duration ', fmtDuration(dur), TERMINAL.has(t.state) ? '' : ' …'),
        h('span', { class: 'span-count' }, `${fmtInt(tot.spans)} spans`, tot.running ? ` (${tot.running} running)` : ''),
        h('span', null, `${fmtInt(tot.tokens)} tokens`),
        tot.cost ? h('span', null, fmtCost(tot.cost)) : null,
        h('span', { class: tot.errors ? 'error-count has' : 'error-count' }, `${tot.errors} error${tot.errors === 1 ? '' : 's'}`),
        h('span', { class: 'muted' }, `level ${this.level || t.level}`)),
      this.model.traceErrors.length
        ? h('div', { class: 'trace-errors' }, this.model.traceErrors.slice(-3).map((e) =>
          h('div', { class: 'error-msg' }, (e.payload.error_type ? `${e.payload.error_type}: ` : '') + e.payload.message)))
        : null));
  }

  /** Selects a span (from the hash route). */
  select(sid, scroll) {
    if (!this.trace) { this.pendingSpan = sid; return; }
    this.selected = sid && this.model.spans.has(sid) ? sid : null;
    if (sid && !this.selected) this.pendingSpan = sid; // may arrive live
    if (this.selected) {
      const before = this.model.collapsed.size;
      this.model.reveal(this.selected);
      if (this.model.collapsed.size !== before) this.refreshRows();
    }
    this.wf.select(this.selected, scroll);
    this.renderDetail();
  }

  renderDetail() {
    if (this.pendingSpan && this.model.spans.has(this.pendingSpan)) {
      const p = this.pendingSpan;
      this.pendingSpan = null;
      this.select(p, true);
      return;
    }
    const s = this.selected ? this.model.spans.get(this.selected) : null;
    clear(this.detail).append(detailPane(s, s ? this.model.events.get(s.span_id) || [] : [], {
      link: s ? `#/trace/${this.id}/span/${s.span_id}` : '',
    }));
  }

  async copyLink() {
    const ok = await copyText(location.href);
    toast(ok ? 'Link copied' : 'Copy failed', ok ? 'info' : 'error');
  }

  dispose() {
    this.disposed = true;
    if (this.stream) this.stream.close();
    this.timers.forEach(clearInterval);
  }
}
