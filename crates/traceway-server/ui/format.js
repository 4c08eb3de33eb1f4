// Formatting of times, durations, tokens and money.

/** Milliseconds since the epoch of an RFC 3339 time, keeping sub-millisecond digits. */
export function tsMs(s) {
  if (!s) return null;
  const m = /^(.*T\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$/i.exec(s);
  if (!m) { const t = Date.parse(s); return Number.isNaN(t) ? null : t; }
  const base = Date.parse(m[1] + m[3]);
  if (Number.isNaN(base)) return null;
  return base + (m[2] ? Number(m[2]) * 1000 : 0);
}

/** `850 µs`, `12.3 ms`, `1.20 s`, `3m 05s`, `2h 04m`. */
export function fmtDuration(ms) {
  if (ms == null || !Number.isFinite(ms)) return '';
  if (ms < 0) ms = 0;
  if (ms < 1) return `${Math.round(ms * 1000)} µs`;
  if (ms < 100) return `${ms.toFixed(1)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(2)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(Math.floor(s % 60)).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, '0')}m`;
}

/** A local date and time, to the second (milliseconds when asked). */
export function fmtTime(s, withMs = false) {
  const t = typeof s === 'number' ? s : tsMs(s);
  if (t == null) return '';
  const d = new Date(t);
  const p = (n, w = 2) => String(n).padStart(w, '0');
  const date = `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`;
  const time = `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  return withMs ? `${date} ${time}.${p(d.getMilliseconds(), 3)}` : `${date} ${time}`;
}

/** `5 min ago`, for recent times. */
export function fmtAgo(s, now = Date.now()) {
  const t = tsMs(s);
  if (t == null) return '';
  const d = (now - t) / 1000;
  if (d < 5) return 'just now';
  if (d < 60) return `${Math.floor(d)} s ago`;
  if (d < 3600) return `${Math.floor(d / 60)} min ago`;
  if (d < 86400) return `${Math.floor(d / 3600)} h ago`;
  return fmtTime(t);
}

export function fmtInt(n) {
  if (n == null || !Number.isFinite(n)) return '';
  return Math.round(n).toLocaleString('en-US');
}

export function fmtCost(usd) {
  if (usd == null || !Number.isFinite(usd) || usd === 0) return usd === 0 ? '$0' : '';
  if (usd < 0.01) return `$${usd.toPrecision(2)}`;
  return `$${usd.toFixed(usd < 10 ? 3 : 2)}`;
}

export function fmtShare(x) {
  return x == null ? '' : `${(x * 100).toFixed(x < 0.1 ? 1 : 0)}%`;
}

/** JSON shown readably: strings that hold JSON are parsed first. */
export function prettyJson(v) {
  if (typeof v === 'string') {
    const t = v.trim();
    if ((t.startsWith('{') && t.endsWith('}')) || (t.startsWith('[') && t.endsWith(']'))) {
      try { return JSON.stringify(JSON.parse(t), null, 2); } catch (_) { /* not JSON */ }
    }
    return v;
  }
  try { return JSON.stringify(v, null, 2); } catch (_) { return String(v); }
}

/** A trace id as the API wants it (32 lowercase hex), or null. */
export function normaliseTraceId(s) {
  const t = String(s || '').trim().toLowerCase().replace(/-/g, '');
  return /^[0-9a-f]{32}$/.test(t) ? t : null;
}
