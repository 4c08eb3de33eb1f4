// Server-sent events read with fetch, not EventSource: EventSource cannot send headers,
// and the page's streams must carry the same Authorization (or X-Traceway-Tenant) as its
// other calls, without putting the key in a URL (ADR 036). The parser follows the
// text/event-stream rules the server uses: `event:`, `id:`, `data:` lines, a blank line
// ends an event, `:` starts a comment (the keep-alives).

import { authHeaders, errorOf, qs } from './api.js';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Follows `path` until closed. Reconnects after a dropped connection with exponential
 * backoff (0.2 s to 5 s), sending `Last-Event-ID` of the last event seen when `resume`.
 * `onEvent({type, id, data})` gets each event; `onState('open'|'retrying'|'closed', err)`
 * the connection's state; `shouldReconnect()` is asked when the server ends the stream.
 * Stops for good on 400, 401, 403 and 404.
 */
export function openStream(path, opts) {
  const { params, resume = true, onEvent, onState = () => {}, shouldReconnect = () => true } = opts;
  let last = opts.lastEventId == null ? null : String(opts.lastEventId);
  let closed = false;
  let backoff = 200;
  const ctrl = new AbortController();

  async function once() {
    const headers = { Accept: 'text/event-stream', ...authHeaders() };
    if (resume && last != null) headers['Last-Event-ID'] = last;
    const r = await fetch(path + qs(params), { headers, signal: ctrl.signal, cache: 'no-store' });
    if (!r.ok) {
      const err = await errorOf(r);
      err.fatal = [400, 401, 403, 404].includes(r.status);
      throw err;
    }
    onState('open');
    backoff = 200;
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    let ev = { type: 'message', id: null, data: [] };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        let line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.endsWith('\r')) line = line.slice(0, -1);
        if (line === '') {
          if (ev.data.length) {
            if (ev.id != null) last = ev.id;
            try { onEvent({ type: ev.type, id: ev.id, data: ev.data.join('\n') }); } catch (e) { console.error(e); }
          }
          ev = { type: 'message', id: null, data: [] };
          continue;
        }
        if (line[0] === ':') continue;
        const c = line.indexOf(':');
        const field = c < 0 ? line : line.slice(0, c);
        let val = c < 0 ? '' : line.slice(c + 1);
        if (val[0] === ' ') val = val.slice(1);
        if (field === 'data') ev.data.push(val);
        else if (field === 'event') ev.type = val;
        else if (field === 'id') ev.id = val;
      }
    }
  }

  (async () => {
    while (!closed) {
      try {
        await once();
        if (closed || !shouldReconnect()) break;
      } catch (e) {
        if (closed || (e && e.name === 'AbortError')) break;
        if (e && e.fatal) { onState('closed', e); closed = true; return; }
        onState('retrying', e);
      }
      await sleep(backoff);
      backoff = Math.min(backoff * 2, 5000);
    }
    onState('closed');
  })();

  return {
    close() { closed = true; ctrl.abort(); },
    get lastEventId() { return last; },
  };
}
