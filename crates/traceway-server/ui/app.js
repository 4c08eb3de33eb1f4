// The page's router. Hash routes, so every view has a permalink and the server serves
// one page:   #/?agent_id=…   the trace list (filters in the query)
//             #/trace/<id>    a trace          #/trace/<id>/span/<span id>   a step

import { settings } from './api.js';
import { banner, toast } from './dom.js';
import { normaliseTraceId } from './format.js';
import { ListView, setLive } from './list.js';
import { TraceView } from './trace.js';

const main = document.getElementById('main');
let view = null;
let viewKey = '';

function parse() {
  const hash = location.hash.replace(/^#/, '') || '/';
  const m = /^\/trace\/([0-9a-fA-F-]+)(?:\/span\/([0-9a-fA-F]+))?\/?$/.exec(hash);
  if (m) return { kind: 'trace', id: normaliseTraceId(m[1]) || m[1], span: m[2] ? m[2].toLowerCase() : null };
  const q = hash.indexOf('?');
  return { kind: 'list', params: new URLSearchParams(q >= 0 ? hash.slice(q + 1) : '') };
}

function route(force = false) {
  const r = parse();
  const key = r.kind === 'trace' ? `trace:${r.id}` : `list:${r.params.toString()}`;
  if (!force && key === viewKey && view) {
    if (r.kind === 'trace') view.select(r.span, true);
    return;
  }
  if (view) view.dispose();
  setLive('offline');
  banner(null);
  viewKey = key;
  if (r.kind === 'trace') {
    view = new TraceView(main, r.id);
    view.select(r.span, true);
    document.title = `Trace ${r.id} · Traceway`;
  } else {
    view = new ListView(main, r.params);
    document.title = 'Traces · Traceway';
  }
}

function setup() {
  const key = document.getElementById('apikey');
  const tenant = document.getElementById('tenant');
  key.value = settings.key;
  tenant.value = settings.tenant;
  const syncTenant = () => {
    tenant.disabled = !!settings.key;
    tenant.title = settings.key ? 'The API key names the tenant' : 'The tenant whose traces are shown (X-Traceway-Tenant)';
  };
  syncTenant();
  key.addEventListener('change', () => { settings.key = key.value; syncTenant(); route(true); });
  tenant.addEventListener('change', () => { settings.tenant = tenant.value; route(true); });
  document.getElementById('lookup').addEventListener('submit', (e) => {
    e.preventDefault();
    const input = document.getElementById('lookup-id');
    const id = normaliseTraceId(input.value);
    if (!id) { toast('A trace id is 32 hex digits (or a UUID)', 'error'); return; }
    input.value = '';
    location.hash = `#/trace/${id}`;
  });
  window.addEventListener('hashchange', () => route());
  route();
}

setup();
