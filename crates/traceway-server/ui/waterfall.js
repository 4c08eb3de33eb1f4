// The waterfall: one row per visible span, virtualised (only the rows in view, plus a
// margin, exist in the DOM), a tree column with collapse toggles and a lane with the bar.

import { h, clear } from './dom.js';
import { fmtDuration } from './format.js';

export const ROW = 24;
const OVERSCAN = 12;

export class Waterfall {
  constructor({ onSelect, onToggle }) {
    this.onSelect = onSelect;
    this.onToggle = onToggle;
    this.rows = [];
    this.model = null;
    this.selected = null;
    this.critical = new Map();
    this.showCritical = true;
    this.t0 = 0;
    this.t1 = 1;
    this.now = Date.now();
    this.axis = h('div', { class: 'wf-axis' });
    this.spacer = h('div', { class: 'wf-spacer' });
    this.layer = h('div', { class: 'wf-layer' });
    this.viewport = h('div', { class: 'wf-viewport', tabindex: '0' }, this.spacer, this.layer);
    this.el = h('div', { class: 'waterfall' },
      h('div', { class: 'wf-head' }, h('div', { class: 'wf-label' }, 'Step'), this.axis),
      this.viewport);
    this.pool = [];
    this.frame = 0;
    this.viewport.addEventListener('scroll', () => this.schedule());
    this.viewport.addEventListener('keydown', (e) => this.key(e));
    this.layer.addEventListener('click', (e) => {
      const row = e.target.closest('.wf-row');
      if (!row) return;
      const id = row.dataset.id;
      if (e.target.closest('.wf-toggle')) this.onToggle(id);
      else this.onSelect(id);
    });
    new ResizeObserver(() => this.schedule()).observe(this.viewport);
  }

  /** New rows (after a rebuild or a collapse). */
  setRows(model, rows) {
    this.model = model;
    this.rows = rows;
    this.index = null;
    this.spacer.style.height = `${rows.length * ROW}px`;
    this.schedule();
  }

  setExtent(t0, t1, now) {
    this.t0 = t0;
    this.t1 = t1;
    this.now = now;
    this.schedule();
  }

  setCritical(map) {
    this.critical = map;
    this.schedule();
  }

  select(id, scroll) {
    this.selected = id;
    if (scroll) this.scrollTo(id);
    this.schedule();
  }

  indexOf(id) {
    if (!this.index) {
      this.index = new Map();
      this.rows.forEach((s, i) => this.index.set(s.span_id, i));
    }
    return this.index.has(id) ? this.index.get(id) : -1;
  }

  scrollTo(id) {
    const i = this.indexOf(id);
    if (i < 0) return;
    const v = this.viewport;
    const top = i * ROW;
    if (top < v.scrollTop || top + ROW > v.scrollTop + v.clientHeight) {
      v.scrollTop = Math.max(0, top - v.clientHeight / 2);
    }
  }

  key(e) {
    if (!this.rows.length) return;
    const i = this.selected ? this.indexOf(this.selected) : -1;
    let j = null;
    if (e.key === 'ArrowDown') j = Math.min(this.rows.length - 1, i + 1);
    else if (e.key === 'ArrowUp') j = Math.max(0, i - 1);
    else if ((e.key === 'ArrowLeft' || e.key === 'ArrowRight') && this.selected) {
      const collapsed = this.model.collapsed.has(this.selected);
      if ((e.key === 'ArrowLeft') !== collapsed) this.onToggle(this.selected);
      e.preventDefault();
      return;
    }
    if (j == null) return;
    e.preventDefault();
    this.onSelect(this.rows[j].span_id);
    this.scrollTo(this.rows[j].span_id);
  }

  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => { this.frame = 0; this.render(); });
  }

  renderAxis() {
    clear(this.axis);
    const span = this.t1 - this.t0;
    for (let i = 0; i <= 4; i++) {
      const tick = h('span', { class: 'wf-tick' }, fmtDuration((span * i) / 4));
      tick.style.left = `${i * 25}%`;
      this.axis.appendChild(tick);
    }
  }

  render() {
    this.renderAxis();
    const v = this.viewport;
    const first = Math.max(0, Math.floor(v.scrollTop / ROW) - OVERSCAN);
    const last = Math.min(this.rows.length, Math.ceil((v.scrollTop + v.clientHeight) / ROW) + OVERSCAN);
    const need = Math.max(0, last - first);
    while (this.pool.length < need) {
      const row = this.makeRow();
      this.pool.push(row);
      this.layer.appendChild(row.el);
    }
    for (let k = 0; k < this.pool.length; k++) {
      const row = this.pool[k];
      if (k >= need) { row.el.hidden = true; delete row.el.dataset.id; continue; }
      row.el.hidden = false;
      this.fill(row, first + k);
    }
  }

  /** A pooled row: its elements are made once and updated in place, so a click that
   *  lands while running bars grow is never on an element that was replaced. */
  makeRow() {
    const toggle = h('span', { class: 'wf-toggle' });
    const kind = h('span', { class: 'kind' });
    const name = h('span', { class: 'wf-name' });
    const err = h('span', { class: 'err-mark' }, '!');
    const bar = h('div', { class: 'wf-bar' });
    const crit = h('div', { class: 'wf-crits' });
    const dur = h('span', { class: 'wf-dur' });
    const el = h('div', { class: 'wf-row' },
      h('div', { class: 'wf-label' }, toggle, kind, name, err),
      h('div', { class: 'wf-lane' }, bar, crit, dur));
    return { el, toggle, kind, name, err, bar, crit, dur, critKey: '' };
  }

  fill(row, i) {
    const s = this.rows[i];
    const m = this.model;
    const depth = m.depth.get(s.span_id) || 0;
    const kids = m.childCount.get(s.span_id) || 0;
    const isErr = !!(s.status && s.status.code === 'error');
    const running = s._e == null;
    const kind = s.kind || 'other';
    const el = row.el;
    el.style.transform = `translateY(${i * ROW}px)`;
    el.dataset.id = s.span_id;
    el.className = `wf-row${s.span_id === this.selected ? ' selected' : ''}${isErr ? ' error' : ''}`;
    row.toggle.className = `wf-toggle${kids ? '' : ' leaf'}`;
    row.toggle.textContent = kids ? (m.collapsed.has(s.span_id) ? '▸' : '▾') : '';
    row.toggle.title = kids ? `${kids} children` : '';
    row.toggle.style.marginLeft = `${Math.min(depth, 40) * 12}px`;
    row.kind.className = `kind k-${kind}`;
    row.kind.textContent = kind;
    row.name.textContent = s.name;
    row.name.title = s.name;
    row.err.hidden = !isErr;
    row.err.title = isErr ? (s.status.message || 'error') : '';
    const total = this.t1 - this.t0;
    const end = running ? Math.max(this.now, s._s) : s._e;
    const left = ((s._s - this.t0) / total) * 100;
    const width = Math.max(((end - s._s) / total) * 100, 0.15);
    row.bar.className = `wf-bar k-${kind}${running ? ' running' : ''}${isErr ? ' error' : ''}`;
    row.bar.style.left = `${left}%`;
    row.bar.style.width = `${width}%`;
    const segs = this.showCritical ? this.critical.get(s.span_id) : null;
    const critKey = segs ? `${s.span_id}:${this.t0}:${this.t1}:${segs.length}` : '';
    if (critKey !== row.critKey) {
      row.critKey = critKey;
      clear(row.crit);
      for (const [a, b] of segs || []) {
        const c = h('div', { class: 'wf-crit', title: 'on the critical path' });
        c.style.left = `${((a - this.t0) / total) * 100}%`;
        c.style.width = `${Math.max(((b - a) / total) * 100, 0.15)}%`;
        row.crit.appendChild(c);
      }
    }
    row.dur.textContent = running ? `${fmtDuration(end - s._s)} …` : fmtDuration(end - s._s);
    if (left + width > 88) {
      // No room after the bar: inside its right end.
      row.dur.className = 'wf-dur inside';
      row.dur.style.left = '';
      row.dur.style.right = `${Math.max(0, 100 - left - width)}%`;
    } else {
      row.dur.className = 'wf-dur';
      row.dur.style.right = '';
      row.dur.style.left = `${left + width}%`;
    }
  }
}
