// The detail pane of the selected step.

import { h, copyText, toast } from './dom.js';
import { fmtCost, fmtDuration, fmtInt, fmtTime, prettyJson } from './format.js';

const kv = (rows) => h('table', { class: 'kv' },
  rows.filter(([, v]) => v != null && v !== '').map(([k, v]) =>
    h('tr', null, h('th', null, k), h('td', null, v))));

const section = (title, ...body) => h('section', { class: 'dsec' }, h('h3', null, title), ...body);

const json = (v, cls = '') => h('pre', { class: `json ${cls}` }, prettyJson(v));

function message(m, i) {
  return h('div', { class: `msg role-${(m.role || 'unknown').replace(/[^a-z_-]/gi, '')}`, dataset: { index: String(i) } },
    h('div', { class: 'msg-role' }, m.role || '(no role)', m.name ? ` · ${m.name}` : '',
      m.tool_call_id ? ` · answers ${m.tool_call_id}` : ''),
    m.content != null ? h('pre', { class: 'msg-content' }, m.content) : null,
    (m.tool_calls || []).map((c) => h('div', { class: 'tool-call' },
      h('div', { class: 'muted' }, `tool call ${c.name || ''}${c.id ? ` (${c.id})` : ''}`),
      c.arguments != null ? json(c.arguments) : null)));
}

function llm(l) {
  const tokens = [
    ['Input tokens', fmtInt(l.input_tokens)],
    ['Output tokens', fmtInt(l.output_tokens)],
    ['Total tokens', fmtInt(l.total_tokens)],
    ['Cached tokens', fmtInt(l.cached_tokens)],
    ['Cache write tokens', fmtInt(l.cache_write_tokens)],
    ['Reasoning tokens', fmtInt(l.reasoning_tokens)],
    ['Cost', l.cost_usd != null ? `${fmtCost(l.cost_usd)}${l.cost_source ? ` (${l.cost_source}${l.price_table ? `, ${l.price_table}` : ''})` : ''}` : null],
  ];
  return [
    section('LLM call', kv([['Model', l.model], ['Provider', l.provider], ...tokens])),
    l.input_messages && l.input_messages.length
      ? section('Input messages', h('div', { class: 'msgs input' }, l.input_messages.map(message))) : null,
    l.output_messages && l.output_messages.length
      ? section('Output messages', h('div', { class: 'msgs output' }, l.output_messages.map(message))) : null,
  ];
}

function tool(t) {
  return section('Tool call',
    kv([['Tool', t.name]]),
    t.arguments !== undefined ? [h('h4', null, 'Arguments'), json(t.arguments, 'tool-args')] : null,
    t.result !== undefined ? [h('h4', null, 'Result'), json(t.result, 'tool-result')] : null,
    t.schema !== undefined ? h('details', null, h('summary', null, 'Parameter schema'), json(t.schema)) : null);
}

function retrieval(r) {
  return section('Retrieval',
    r.query != null ? [h('h4', null, 'Query'), h('pre', { class: 'query' }, r.query)] : null,
    h('h4', null, `Documents (${(r.documents || []).length})`),
    h('table', { class: 'docs' },
      h('tr', null, h('th', null, '#'), h('th', null, 'id'), h('th', null, 'score'), h('th', null, 'content')),
      (r.documents || []).map((d, i) => h('tr', null,
        h('td', null, String(i + 1)),
        h('td', null, d.id || ''),
        h('td', { class: 'num' }, d.score != null ? d.score.toFixed(3) : ''),
        h('td', null, d.content != null ? h('pre', { class: 'doc' }, d.content) : '',
          d.metadata != null ? h('details', null, h('summary', null, 'metadata'), json(d.metadata)) : null)))));
}

function eventsOf(list) {
  return section(`Events (${list.length})`, h('ol', { class: 'events' }, list.map((e) => {
    const p = e.payload || {};
    if (e.type === 'error') {
      return h('li', { class: 'ev error' },
        h('span', { class: 'muted' }, fmtTime(e.time, true), ' '),
        h('strong', null, p.error_type ? `${p.error_type}: ` : 'error: '), p.message,
        p.stacktrace ? h('pre', { class: 'stack' }, p.stacktrace) : null);
    }
    return h('li', { class: `ev sev-${p.severity || 'info'}` },
      h('span', { class: 'muted' }, fmtTime(e.time, true), ' ', p.severity || 'info', ' '),
      p.message,
      p.attributes && Object.keys(p.attributes).length ? json(p.attributes) : null);
  })));
}

/** The pane for `span` (its events in `events`), with a link and a copy button. */
export function detailPane(span, events, { link }) {
  if (!span) return h('div', { class: 'detail empty muted' }, 'Select a step to see its details.');
  const dur = span._e == null ? null : span._e - span._s;
  const status = span.status || {};
  const copy = async () => {
    const { _s, _e, ...clean } = span;
    const ok = await copyText(JSON.stringify({ ...clean, events }, null, 2));
    toast(ok ? 'Step copied as JSON' : 'Copy failed', ok ? 'info' : 'error');
  };
  return h('div', { class: 'detail', dataset: { span: span.span_id } },
    h('div', { class: 'dhead' },
      h('span', { class: `kind k-${span.kind || 'other'}` }, span.kind || 'other'),
      h('h2', { title: span.name }, span.name),
      h('span', { class: 'spacer' }),
      h('a', { href: link, class: 'btn', title: 'Permalink to this step' }, 'Link'),
      h('button', { type: 'button', class: 'copy-json', onclick: copy }, 'Copy JSON')),
    kv([
      ['Span id', h('code', null, span.span_id)],
      ['Parent', span.parent_span_id ? h('code', null, span.parent_span_id) : null],
      ['Status', h('span', { class: `status st-${status.code || 'unset'}` }, status.code || 'unset')],
      ['Started', fmtTime(span.start_time, true)],
      ['Duration', dur == null ? 'running…' : fmtDuration(dur)],
      ['Service', span.service],
      ['Component', span.component_id],
    ]),
    status.code === 'error'
      ? section('Error', h('pre', { class: 'error-msg' }, status.message || '(no message)')) : null,
    span.llm ? llm(span.llm) : null,
    span.tool ? tool(span.tool) : null,
    span.retrieval ? retrieval(span.retrieval) : null,
    span.input !== undefined ? section('Input', json(span.input)) : null,
    span.output !== undefined ? section('Output', json(span.output)) : null,
    events && events.length ? eventsOf(events) : null,
    span.attributes && Object.keys(span.attributes).length
      ? section('Attributes', h('table', { class: 'kv attrs' },
        Object.keys(span.attributes).sort().map((k) => {
          const v = span.attributes[k];
          return h('tr', null, h('th', null, k), h('td', null, typeof v === 'string' ? v : h('code', null, JSON.stringify(v))));
        })))
      : null,
    span.links && span.links.length
      ? section('Links', h('ul', null, span.links.map((l) => h('li', null,
        h('a', { href: `#/trace/${l.trace_id}${l.span_id ? `/span/${l.span_id}` : ''}` }, `${l.trace_id}${l.span_id ? ` / ${l.span_id}` : ''}`)))))
      : null);
}
