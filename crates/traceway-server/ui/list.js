// The trace list: newest first, filters in the URL, pages through the cursor as it is
// scrolled, kept live by the tenant stream. Windowed (ADR 041): only the rows in view,
// plus a margin, exist in the DOM, between two spacer rows as tall as the rows they stand
// for; the rows read so far are kept as data, at most MAX_ROWS of them.

import { api, describe } from './api.js';
import { h, clear, banner } from './dom.js';
import { fmtAgo, fmtCost, fmtDuration, fmtInt, fmtTime, tsMs } from './format.js';
import { openStream } from './sse.js';

const PAGE = 100;
/** Rows read at most; past it the list asks for narrower filters (a bound on memory). */
const MAX_ROWS = 50000;
/** Rows drawn above and below the window. */
const OVERSCAN = 20;
const COLUMNS = ['Name', 'Agent', 'State', 'Started', 'Duration', 'Spans', 'Tokens', 'Cost', 'Errors'];
const NUMERIC = new Set(['Spans', 'Tokens', 'Cost', 'Errors', 'Duration']);
const FILTERS = ['agent_id', 'user_id', 'session_id', 'state', 'has_error', 'from', 'to', 'min_duration_ms'];
const TERMINAL = new Set(['COMPLETED', 'ERRORED']);

/** Shows the state of the live connection in the header. */
export function setLive(state) {
  const el = document.getElementById('live');
  if (!el) return;
  el.textContent = state;
  el.className = `live s-${state}`;
}

/** `datetime-local` value <-> RFC 3339. */
const toLocalInput = (iso) => {
  const t = tsMs(iso);
  if (t == null) return '';
  const d = new Date(t - new Date(t).getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 16);
};
const fromLocalInput = (v) => (v ? new Date(v).toISOString() : '');

export class ListView {
  constructor(main, params) {
    this.main = main;
    this.filters = {};
    for (const k of FILTERS) if (params.get(k)) this.filters[k] = params.get(k);
    /** trace id -> { data, fresh } of every row read; `order` is their order, newest first. */
    this.rows = new Map();
    this.order = [];
    this.cursor = null;
    this.done = false;
    this.capped = false;
    this.loading = false;
    this.disposed = false;
    /** Measured from the first row drawn (CSS sets a fixed height; this is its real size). */
    this.rowH = 31;
    /** The row elements drawn, in order: pool[k] shows order[first + k]. */
    this.pool = [];
    this.first = 0;
    this.frame = 0;
    this.topPad = h('tr', { class: 'pad-row', 'aria-hidden': 'true' }, h('td', { colspan: String(COLUMNS.length) }));
    this.bottomPad = h('tr', { class: 'pad-row', 'aria-hidden': 'true' }, h('td', { colspan: String(COLUMNS.length) }));
    this.tbody = h('tbody', null, this.topPad, this.bottomPad);
    this.tbody.addEventListener('click', (e) => {
      const tr = e.target.closest('tr.trace-row');
      if (!tr || e.target.closest('a') || !tr.dataset.id) return;
      location.hash = `#/trace/${tr.dataset.id}`;
    });
    this.status = h('div', { class: 'list-status muted' });
    this.sentinel = h('div', { class: 'sentinel' });
    clear(main).append(h('div', { class: 'list-view' },
      this.form(),
      h('table', { class: 'traces' },
        h('colgroup', null, COLUMNS.map((c) => h('col', { class: `c-${c.toLowerCase()}` }))),
        h('thead', null, h('tr', null, COLUMNS.map((c) => h('th', { class: NUMERIC.has(c) ? 'num' : null }, c)))),
        this.tbody),
      this.status, this.sentinel));
    this.observer = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) this.more();
    }, { rootMargin: '400px' });
    this.observer.observe(this.sentinel);
    this.onScroll = () => this.schedule();
    window.addEventListener('scroll', this.onScroll, { passive: true });
    window.addEventListener('resize', this.onScroll);
    this.more();
    this.live();
    this.poll = setInterval(() => {
      // Only the newest page is re-read, so only its rows can need it.
      if (document.visibilityState !== 'visible') return;
      const n = Math.min(this.order.length, PAGE);
      for (let i = 0; i < n; i++) {
        if (!TERMINAL.has(this.rows.get(this.order[i]).data.state)) { this.refreshTop(); return; }
      }
    }, 5000);
  }

  form() {
    const f = this.filters;
    const input = (name, placeholder, extra = {}) =>
      h('input', { name, placeholder, value: f[name] || '', spellcheck: 'false', ...extra });
    const select = (name, options) => {
      const s = h('select', { name }, options.map(([v, t]) => h('option', { value: v }, t)));
      s.value = f[name] || '';
      return s;
    };
    const from = h('input', { type: 'datetime-local', name: 'from', value: toLocalInput(f.from) });
    const to = h('input', { type: 'datetime-local', name: 'to', value: toLocalInput(f.to) });
    const form = h('form', { class: 'filters', autocomplete: 'off' },
      h('label', null, 'Agent', input('agent_id', 'any')),
      h('label', null, 'User', input('user_id', 'any')),
      h('label', null, 'Session', input('session_id', 'any')),
      h('label', null, 'State', select('state', [['', 'any'], ['RUNNING', 'RUNNING'], ['COMPLETED', 'COMPLETED'], ['ERRORED', 'ERRORED'], ['RECEIVED', 'RECEIVED']])),
      h('label', null, 'Errors', select('has_error', [['', 'any'], ['true', 'with errors'], ['false', 'without']])),
      h('label', null, 'From', from),
      h('label', null, 'To', to),
      h('label', null, 'Min duration (ms)', input('min_duration_ms', '0', { type: 'number', min: '0', step: 'any', size: '6' })),
      h('button', { type: 'submit' }, 'Apply'),
      h('a', { href: '#/', class: 'btn' }, 'Clear'));
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      const q = new URLSearchParams();
      for (const el of form.elements) {
        if (!el.name || !el.value) continue;
        q.set(el.name, el.type === 'datetime-local' ? fromLocalInput(el.value) : el.value.trim());
      }
      location.hash = `#/${q.toString() ? `?${q}` : ''}`;
    });
    return form;
  }

  async more() {
    if (this.loading || this.done || this.disposed) return;
    this.loading = true;
    this.status.textContent = 'Loading…';
    try {
      const r = await api('/api/v1/traces', { ...this.filters, limit: PAGE, cursor: this.cursor });
      if (this.disposed) return;
      banner(null);
      const firstPage = !this.order.length;
      for (const t of r.traces || []) this.put(t, false);
      this.cursor = r.next_cursor || null;
      this.done = !this.cursor;
      if (!this.done && this.order.length >= MAX_ROWS) { this.done = true; this.capped = true; }
      this.count();
      if (firstPage) this.markFirstRows();
    } catch (e) {
      this.status.textContent = '';
      banner(describe(e));
      this.done = true;
    } finally {
      this.loading = false;
    }
    // Drawn now, so that the spacers put the sentinel where the rows end; the sentinel may
    // still be in view (a short page), and then the next page is read.
    this.render();
  }

  /** Reads the next page when the end of the rows is near the window. The scroll handler
   *  asks too: the IntersectionObserver misses a sentinel that left the window and came
   *  back between two frames (rows added, then scrolled to the end again). */
  nearEnd() {
    if (this.done || this.loading || this.disposed) return;
    if (this.sentinel.getBoundingClientRect().top < window.innerHeight + 400) this.more();
  }

  /** Re-reads the newest page: new traces and fresh rollups of running ones. */
  async refreshTop() {
    if (this.refreshing || this.disposed) return;
    this.refreshing = true;
    try {
      const r = await api('/api/v1/traces', { ...this.filters, limit: Math.min(PAGE, Math.max(20, this.order.length)) });
      if (!this.disposed) for (const t of (r.traces || []).reverse()) this.put(t, true);
    } catch (_) { /* the next refresh tries again */ } finally {
      this.refreshing = false;
    }
  }

  scheduleRefresh() {
    if (this.refreshTimer) return;
    this.refreshTimer = setTimeout(() => { this.refreshTimer = 0; this.refreshTop(); }, 1000);
  }

  /** Adds or updates a row; a new one goes on top when `prepend`. */
  put(t, prepend) {
    const id = t.trace_id;
    const row = this.rows.get(id);
    if (row) {
      row.data = { ...row.data, ...t };
    } else {
      this.rows.set(id, { data: t, fresh: prepend ? Date.now() : 0 });
      if (prepend) {
        this.order.unshift(id);
        // Rows below the top move down one: keep the ones being read where they are.
        if (this.tbody.getBoundingClientRect().top < 0) window.scrollBy(0, this.rowH);
        if (this.order.length > MAX_ROWS) {
          this.rows.delete(this.order.pop());
          if (!this.done) { this.done = true; this.capped = true; }
        }
      } else {
        this.order.push(id);
      }
    }
    this.schedule();
    this.count();
  }

  count() {
    const n = this.order.length;
    this.status.textContent = n
      ? `${fmtInt(n)} trace${n === 1 ? '' : 's'}${this.capped ? ` (the newest ${fmtInt(MAX_ROWS)}: narrow the filters or the time range for older ones)` : this.done ? '' : ', scroll for more'}`
      : 'No traces yet. Export OTLP to /v1/traces or POST /api/v1/traces, and they appear here.';
  }

  schedule() {
    if (this.frame || this.disposed) return;
    this.frame = requestAnimationFrame(() => { this.frame = 0; this.render(); });
  }

  /** Draws the rows in the window (plus OVERSCAN each side), reusing their elements. */
  render() {
    if (this.disposed) return;
    const n = this.order.length;
    // How far the rows (the top spacer included) start above the window's top edge.
    const into = -this.tbody.getBoundingClientRect().top;
    const last = Math.min(n, Math.max(0, Math.ceil((into + window.innerHeight) / this.rowH)) + OVERSCAN);
    const first = Math.min(last, Math.max(0, Math.floor(into / this.rowH) - OVERSCAN));
    const need = Math.max(0, last - first);
    while (this.pool.length < need) {
      const tr = h('tr', { class: 'trace-row' });
      tr._key = '';
      this.tbody.insertBefore(tr, this.bottomPad);
      this.pool.push(tr);
    }
    while (this.pool.length > need) this.pool.pop().remove();
    this.first = first;
    const now = Date.now();
    for (let k = 0; k < need; k++) this.fill(this.pool[k], this.rows.get(this.order[first + k]), now);
    this.pad(this.topPad, first * this.rowH);
    this.pad(this.bottomPad, (n - last) * this.rowH);
    this.nearEnd();
    if (need && !this.measured) {
      const hgt = this.pool[0].getBoundingClientRect().height;
      this.measured = true;
      if (hgt > 0 && Math.abs(hgt - this.rowH) > 0.5) { this.rowH = hgt; this.schedule(); }
    }
  }

  pad(tr, px) {
    tr.hidden = px <= 0;
    tr.firstChild.style.height = `${px}px`;
  }

  /** Marks, for the benchmark and the browser's performance panel, when the first page's
   *  rows are drawn (`tw:list-rows`) and when that frame has been painted and the page
   *  answers input again (`tw:list-drawn`). */
  markFirstRows() {
    requestAnimationFrame(() => {
      if (!this.pool.length) return;
      performance.mark('tw:list-rows');
      setTimeout(() => performance.mark('tw:list-drawn'), 0);
    });
  }

  fill(tr, row, now) {
    const t = row.data;
    const r = t.rollups || {};
    const fresh = row.fresh && now - row.fresh < 2000;
    // Cells are rebuilt only when what they show changed (a click on a row being replaced
    // would be lost); the relative start time is refreshed with them.
    const key = JSON.stringify([t.trace_id, t.name, t.agent_id, t.state, r, fmtAgo(t.created_at), fresh]);
    if (key === tr._key) return;
    tr._key = key;
    tr.dataset.id = t.trace_id;
    tr.className = fresh ? 'trace-row fresh' : 'trace-row';
    const running = !TERMINAL.has(t.state);
    const dur = r.duration_ms != null ? r.duration_ms : null;
    clear(tr).append(
      h('td', { class: 'name', title: t.name || t.trace_id }, h('a', { href: `#/trace/${t.trace_id}` }, t.name || t.trace_id)),
      h('td', null, t.agent_id || ''),
      h('td', null, h('span', { class: `state st-${t.state}` }, t.state)),
      h('td', { title: fmtTime(t.created_at, true) }, fmtAgo(t.created_at)),
      h('td', { class: 'num' }, dur == null ? (running ? 'running' : '') : `${fmtDuration(dur)}${running ? ' …' : ''}`),
      h('td', { class: 'num' }, fmtInt(r.span_count || 0)),
      h('td', { class: 'num' }, fmtInt(r.total_tokens || 0)),
      h('td', { class: 'num' }, fmtCost(r.cost_usd || 0)),
      h('td', { class: `num${r.error_count ? ' has-errors' : ''}` }, fmtInt(r.error_count || 0)));
  }

  /** Whether a new trace (from its trace_started event) belongs in this filtered list. */
  matches(p, time) {
    const f = this.filters;
    if (f.agent_id && p.agent_id !== f.agent_id) return false;
    if (f.user_id && p.user_id !== f.user_id) return false;
    if (f.session_id && p.session_id !== f.session_id) return false;
    if (f.state && p.state !== f.state) return false;
    if (f.has_error === 'true') return false;
    if (f.min_duration_ms && Number(f.min_duration_ms) > 0) return false;
    const t = tsMs(time);
    if (f.from && t < tsMs(f.from)) return false;
    if (f.to && t >= tsMs(f.to)) return false;
    return true;
  }

  live() {
    this.stream = openStream('/api/v1/stream', {
      resume: false,
      // Reopened (the server ended it at its lifetime, the connection dropped, or the page
      // was shown again from the back-forward cache): the stream resumes nothing (ADR 007),
      // so what started or changed meanwhile comes from the newest page, re-read.
      onResume: () => this.refreshTop(),
      onState: (s) => setLive(s === 'open' ? 'live' : s === 'retrying' ? 'reconnecting' : 'offline'),
      onEvent: (m) => {
        if (m.type === 'lagged') { this.scheduleRefresh(); return; }
        let e;
        try { e = JSON.parse(m.data); } catch (_) { return; }
        const row = this.rows.get(e.trace_id);
        switch (e.type) {
          case 'trace_started':
            if (!row && this.matches(e.payload, e.time)) {
              this.put({
                trace_id: e.trace_id, ...e.payload, created_at: e.time, last_activity_at: e.time,
                last_seq: e.seq, rollups: {},
              }, true);
            }
            break;
          case 'state_changed':
            if (row) { row.data = { ...row.data, state: e.payload.to }; this.schedule(); }
            break;
          case 'trace_ended':
            if (row) {
              row.data = { ...row.data, state: e.payload.state, ended_at: e.time, rollups: e.payload.rollups };
              this.schedule();
            }
            break;
          default:
            break;
        }
        // Rollups of running traces and rows this page cannot build from the event.
        this.scheduleRefresh();
      },
    });
  }

  dispose() {
    this.disposed = true;
    if (this.stream) this.stream.close();
    this.observer.disconnect();
    window.removeEventListener('scroll', this.onScroll);
    window.removeEventListener('resize', this.onScroll);
    if (this.frame) cancelAnimationFrame(this.frame);
    clearInterval(this.poll);
    clearTimeout(this.refreshTimer);
  }
}
