// Server-sent events read with fetch, not EventSource: EventSource cannot send headers,
// and the page's streams must carry the same Authorization (or X-Traceway-Tenant) as its
// other calls, without putting the key in a URL (ADR 036). The parser follows the
// text/event-stream rules the server uses: `event:`, `id:`, `data:` lines, a blank line
// ends an event, `:` starts a comment (the keep-alives).
//
// Every stream is paused when the page is hidden for another (`pagehide`) and resumed if
// the browser shows it again from its back-forward cache (`pageshow` with `persisted`):
// a page kept in that cache with its stream open holds one of the browser's six HTTP/1.1
// connections to the server until the browser evicts it, about a minute later, and the
// seventh page load waits for one (ADR 041).

import { authHeaders, errorOf, qs } from './api.js';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The streams open now, paused and resumed together with the page. */
const streams = new Set();

window.addEventListener('pagehide', () => { for (const s of streams) s.pause(); });
window.addEventListener('pageshow', (e) => {
  if (e.persisted) for (const s of streams) s.resume();
});

/**
 * Follows `path` until closed. Reconnects after a dropped connection with exponential
 * backoff (0.2 s to 5 s), sending `Last-Event-ID` of the last event seen when `resume`.
 * `onEvent({type, id, data})` gets each event; `onState('open'|'retrying'|'closed', err)`
 * the connection's state; `shouldReconnect()` is asked when the server ends the stream.
 * Stops for good on 400, 401, 403 and 404. While the page is in the back-forward cache the
 * stream is closed; shown again, it reconnects (from the last event seen when `resume`).
 * Each connection opened after an earlier one (the server ended a stream at its
 * `--stream-max-lifetime`, a connection dropped, the page was shown again) calls
 * `onResume()` once it is open, for what a stream that resumes nothing missed meanwhile:
 * read then, after the new subscription exists, it leaves no gap (ADR 007).
 */
export function openStream(path, opts) {
  const {
    params, resume = true, onEvent, onState = () => {}, shouldReconnect = () => true, onResume = () => {},
  } = opts;
  let last = opts.lastEventId == null ? null : String(opts.lastEventId);
  let closed = false;
  let backoff = 200;
  /** Whether a connection was open before: the next one calls `onResume`. */
  let opened = false;
  /** The connection of the moment (one per attempt, so a paused one can be reopened). */
  let ctrl = null;
  /** Paused: no connection until `wake` is called (by `resume` or `close`). */
  let paused = false;
  let wake = null;

  async function once(attempt) {
    const headers = { Accept: 'text/event-stream', ...authHeaders() };
    if (resume && last != null) headers['Last-Event-ID'] = last;
    const r = await fetch(path + qs(params), { headers, signal: attempt.signal, cache: 'no-store' });
    if (!r.ok) {
      const err = await errorOf(r);
      err.fatal = [400, 401, 403, 404].includes(r.status);
      throw err;
    }
    onState('open');
    backoff = 200;
    if (opened) {
      try { onResume(); } catch (e) { console.error(e); }
    }
    opened = true;
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

  const handle = {
    close() {
      closed = true;
      if (ctrl) ctrl.abort();
      if (wake) wake();
    },
    pause() {
      if (closed || paused) return;
      paused = true;
      if (ctrl) ctrl.abort();
    },
    resume() {
      if (closed || !paused) return;
      paused = false;
      backoff = 200;
      if (wake) wake();
    },
    get lastEventId() { return last; },
  };
  streams.add(handle);

  (async () => {
    while (!closed) {
      if (paused) {
        await new Promise((r) => { wake = r; });
        wake = null;
        continue;
      }
      const attempt = new AbortController();
      ctrl = attempt;
      try {
        await once(attempt);
        if (closed) break;
        // Aborted by `pause` (the page may already be shown again): wait, or reconnect.
        if (attempt.signal.aborted) continue;
        if (!shouldReconnect()) break;
      } catch (e) {
        if (closed) break;
        if (attempt.signal.aborted) continue;
        if (e && e.fatal) { closed = true; streams.delete(handle); onState('closed', e); return; }
        onState('retrying', e);
      }
      await sleep(backoff);
      backoff = Math.min(backoff * 2, 5000);
    }
    closed = true;
    streams.delete(handle);
    onState('closed');
  })();

  return handle;
}
