// The trace's analysis (`/api/v1/traces/{id}/analysis`): critical path, bottlenecks,
// loops, error groups, cost per model and the recommendations.

import { h } from './dom.js';
import { fmtCost, fmtDuration, fmtInt, fmtShare, tsMs } from './format.js';

/** span id -> [[start ms, end ms], …] of its critical-path segments. */
export function criticalMap(analysis) {
  const m = new Map();
  const segs = (analysis && analysis.critical_path && analysis.critical_path.segments) || [];
  for (const s of segs) {
    let l = m.get(s.span_id);
    if (!l) m.set(s.span_id, (l = []));
    l.push([tsMs(s.start), tsMs(s.end)]);
  }
  return m;
}

const spanLink = (id, onSpan, text) =>
  h('a', { href: '#', class: 'span-link', onclick: (e) => { e.preventDefault(); onSpan(id); } }, text || id);

const spans = (ids, onSpan) => h('span', { class: 'span-ids' },
  ids.slice(0, 8).map((id) => spanLink(id, onSpan)),
  ids.length > 8 ? ` +${ids.length - 8} more` : '');

const table = (cls, head, rows) => h('table', { class: `grid ${cls}` },
  h('tr', null, head.map((c) => h('th', null, c))),
  rows);

const empty = (text) => h('p', { class: 'muted' }, text);

function loopText(l) {
  switch (l.type) {
    case 'repeated_call': return `${l.tool} called ${l.count}× with the same arguments ${l.arguments} (${l.identical_results} identical results)`;
    case 'no_progress': return `${l.tool} called ${l.count}× with the same arguments and result`;
    case 'alternation': return `${l.tools[0]} ⇄ ${l.tools[1]} alternating for ${l.cycles} cycles`;
    case 'repeated_prompt': return `the same prompt sent ${l.count}×${l.model ? ` to ${l.model}` : ''}`;
    default: return l.type;
  }
}

/** The analysis panel; `onSpan(id)` selects a span. */
export function analysisPanel(a, onSpan) {
  if (!a) return h('div', { class: 'analysis muted' }, 'Analysis…');
  const cp = a.critical_path || { segments: [] };
  const sum = a.summary || {};
  const top = [...cp.segments].sort((x, y) => y.duration_ms - x.duration_ms).slice(0, 10);
  return h('div', { class: 'analysis' },
    a.partial ? h('p', { class: 'muted' }, 'The trace is still running: analysed as far as it goes.') : null,
    h('section', { class: 'asec critical' },
      h('h3', null, `Critical path: ${fmtDuration(cp.duration_ms)}`,
        cp.gap_ms ? h('span', { class: 'muted' }, ` (+${fmtDuration(cp.gap_ms)} uncovered)`) : null),
      h('p', { class: 'muted' }, (cp.by_kind || []).map((k) => `${k.key} ${fmtShare(k.share)}`).join(' · ')),
      top.length
        ? table('segments', ['step', 'kind', 'time', 'share'], top.map((s) => h('tr', null,
          h('td', null, spanLink(s.span_id, onSpan, s.name)),
          h('td', null, h('span', { class: `kind k-${s.kind}` }, s.kind)),
          h('td', { class: 'num' }, fmtDuration(s.duration_ms)),
          h('td', { class: 'num' }, fmtShare(cp.duration_ms ? s.duration_ms / cp.duration_ms : 0)))))
        : empty('No finished steps yet.')),
    h('section', { class: 'asec bottlenecks' }, h('h3', null, 'Bottlenecks'),
      (a.bottlenecks || []).length
        ? table('', ['step', 'calls', 'on path', 'self', 'mean', 'max', 'spans'], a.bottlenecks.map((b) => h('tr', { class: b.slow ? 'slow' : null },
          h('td', null, h('span', { class: `kind k-${b.kind}` }, b.kind), ' ', b.name, b.slow ? h('span', { class: 'badge' }, 'slow') : null),
          h('td', { class: 'num' }, fmtInt(b.calls)),
          h('td', { class: 'num' }, `${fmtDuration(b.critical_ms)} (${fmtShare(b.critical_share)})`),
          h('td', { class: 'num' }, fmtDuration(b.self_ms)),
          h('td', { class: 'num' }, fmtDuration(b.mean_ms)),
          h('td', { class: 'num' }, fmtDuration(b.max_ms)),
          h('td', null, spans(b.span_ids || [], onSpan)))))
        : empty('None.')),
    h('section', { class: 'asec loops' }, h('h3', null, 'Loops'),
      (a.loops || []).length
        ? h('ul', null, a.loops.map((l) => h('li', null, loopText(l), ' ', spans(l.span_ids || [], onSpan))))
        : empty('None found.')),
    h('section', { class: 'asec errors' }, h('h3', null, 'Error groups'),
      (a.error_groups || []).length
        ? table('', ['error', 'where', 'count', 'spans'], a.error_groups.map((g) => h('tr', null,
          h('td', null, g.error_type ? h('strong', null, `${g.error_type}: `) : null, g.example || g.message,
            g.retry_succeeded ? h('span', { class: 'muted' }, ' (a retry succeeded)') : null),
          h('td', null, [g.kind, g.name].filter(Boolean).join(' ')),
          h('td', { class: 'num' }, fmtInt(g.count)),
          h('td', null, spans(g.span_ids || [], onSpan)))))
        : empty('No errors.')),
    h('section', { class: 'asec models' }, h('h3', null, 'Cost per model'),
      (sum.models || []).length
        ? table('', ['model', 'calls', 'input', 'output', 'total', 'cost'], sum.models.map((m) => h('tr', null,
          h('td', null, m.model, m.provider ? h('span', { class: 'muted' }, ` ${m.provider}`) : null),
          h('td', { class: 'num' }, fmtInt(m.calls)),
          h('td', { class: 'num' }, fmtInt(m.input_tokens)),
          h('td', { class: 'num' }, fmtInt(m.output_tokens)),
          h('td', { class: 'num' }, fmtInt(m.total_tokens)),
          h('td', { class: 'num' }, m.calls_without_cost ? `${fmtCost(m.cost_usd)} (${m.calls_without_cost} without a price)` : fmtCost(m.cost_usd)))))
        : empty('No LLM calls.')),
    (a.recommendations || []).length
      ? h('section', { class: 'asec recs' }, h('h3', null, 'Recommendations'),
        h('ul', null, a.recommendations.map((r) => h('li', null, r.message, ' ', spans(r.span_ids || [], onSpan)))))
      : null);
}
