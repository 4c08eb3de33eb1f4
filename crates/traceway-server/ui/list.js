// The trace list: newest first, filters in the URL, pages through the cursor as it is
// scrolled, kept live by the tenant stream.

import { api, describe } from './api.js';
import { h, clear, banner } from './dom.js';
import { fmtAgo, fmtCost, fmtDuration, fmtInt, fmtTime, tsMs } from './format.js';
import { openStream } from './sse.js';

const PAGE = 100;
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
    this.rows = new Map();
    this.order = [];
    this.cursor = null;
    this.done = false;
    this.loading = false;
    this.disposed = false;
    this.tbody = h('tbody');
    this.status = h('div', { class: 'list-status muted' });
    this.sentinel = h('div', { class: 'sentinel' });
    clear(main).append(h('div', { class: 'list-view' },
      this.form(),
      h('table', { class: 'traces' },
        h('thead', null, h('tr', null, ['Name', 'Agent', 'State', 'Started', 'Duration', 'Spans', 'Tokens', 'Cost', 'Errors']
          .map((c) => h('th', { class: ['Spans', 'Tokens', 'Cost', 'Errors', 'Duration'].includes(c) ? 'num' : null }, c)))),
        this.tbody),
      this.status, this.sentinel));
    this.observer = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) this.more();
    }, { rootMargin: '400px' });
    this.observer.observe(this.sentinel);
    this.more();
    this.live();
    this.poll = setInterval(() => {
      if (document.visibilityState === 'visible' && this.order.some((id) => !TERMINAL.has(this.rows.get(id).data.state))) {
        this.refreshTop();
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
      for (const t of r.traces || []) this.put(t, false);
      this.cursor = r.next_cursor || null;
      this.done = !this.cursor;
      this.count();
    } catch (e) {
      this.status.textContent = '';
      banner(describe(e));
      this.done = true;
    } finally {
      this.loading = false;
    }
    // The sentinel may still be in view (a short page): keep going.
    if (!this.done && !this.disposed) {
      const r = this.sentinel.getBoundingClientRect();
      if (r.top < window.innerHeight + 400) this.more();
    }
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
    let row = this.rows.get(id);
    if (row) {
      row.data = { ...row.data, ...t };
    } else {
      row = { data: t, tr: h('tr', { class: 'trace-row', dataset: { id } }) };
      row.tr.addEventListener('click', (e) => {
        if (e.target.closest('a')) return;
        location.hash = `#/trace/${id}`;
      });
      this.rows.set(id, row);
      if (prepend) {
        this.order.unshift(id);
        this.tbody.insertBefore(row.tr, this.tbody.firstChild);
        row.tr.classList.add('fresh');
      } else {
        this.order.push(id);
        this.tbody.appendChild(row.tr);
      }
    }
    this.fill(row);
    this.count();
  }

  count() {
    const n = this.order.length;
    this.status.textContent = n
      ? `${fmtInt(n)} trace${n === 1 ? '' : 's'}${this.done ? '' : ', scroll for more'}`
      : 'No traces yet. Export OTLP to /v1/traces or POST /api/v1/traces, and they appear here.';
  }

  fill(row) {
    const t = row.data;
    const r = t.rollups || {};
    // Cells are rebuilt only when what they show changed (a click on a row being replaced
    // would be lost); the relative start time is refreshed with them.
    const key = JSON.stringify([t.name, t.agent_id, t.state, r, fmtAgo(t.created_at)]);
    if (key === row.key) return;
    row.key = key;
    const running = !TERMINAL.has(t.state);
    const dur = r.duration_ms != null ? r.duration_ms : null;
    clear(row.tr).append(
      h('td', { class: 'name' }, h('a', { href: `#/trace/${t.trace_id}` }, t.name || t.trace_id)),
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
            if (row) { row.data.state = e.payload.to; this.fill(row); }
            break;
          case 'trace_ended':
            if (row) {
              row.data = { ...row.data, state: e.payload.state, ended_at: e.time, rollups: e.payload.rollups };
              this.fill(row);
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
    clearInterval(this.poll);
    clearTimeout(this.refreshTimer);
  }
}
