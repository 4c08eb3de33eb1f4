// The API client: every call carries the user's key (kept in localStorage) or, without
// one, the chosen tenant.

const KEY = 'traceway.apiKey';
const TENANT = 'traceway.tenant';

function read(name) {
  try { return localStorage.getItem(name) || ''; } catch (_) { return ''; }
}
function write(name, v) {
  try { if (v) localStorage.setItem(name, v); else localStorage.removeItem(name); } catch (_) { /* private mode */ }
}

export const settings = {
  get key() { return read(KEY); },
  set key(v) { write(KEY, (v || '').trim()); },
  get tenant() { return read(TENANT); },
  set tenant(v) { write(TENANT, (v || '').trim()); },
};

/** The headers of every API call. */
export function authHeaders() {
  const h = {};
  const key = settings.key;
  if (key) h.Authorization = `Bearer ${key}`;
  const tenant = settings.tenant;
  // With a key the server takes the key's tenant whatever this says.
  if (tenant && !key) h['X-Traceway-Tenant'] = tenant;
  return h;
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || `HTTP ${status}`);
    this.status = status;
    this.code = code || '';
  }
}

/** `?a=1&b=2` of the params that are set. */
export function qs(params) {
  if (!params) return '';
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v == null || v === '') continue;
    u.set(k, String(v));
  }
  const s = u.toString();
  return s ? `?${s}` : '';
}

/** The API's JSON error of a failed response. */
export async function errorOf(r) {
  let body = null;
  try { body = await r.json(); } catch (_) { body = null; }
  const e = body && body.error;
  return new ApiError(r.status, e && e.code, (e && e.message) || `${r.status} ${r.statusText}`);
}

/** GET `path` with `params`; the parsed JSON, or an ApiError. */
export async function api(path, params, init = {}) {
  const r = await fetch(path + qs(params), {
    ...init,
    headers: { Accept: 'application/json', ...authHeaders(), ...(init.headers || {}) },
    cache: 'no-store',
  });
  if (!r.ok) throw await errorOf(r);
  return r.json();
}

/** What to tell the user about a failed call. */
export function describe(err) {
  if (err instanceof ApiError) {
    if (err.status === 401) return `The server wants an API key (${err.message}). Enter one above.`;
    if (err.status === 403) return `This key may not do that: ${err.message}`;
    return err.message;
  }
  return `Cannot reach the server: ${err && err.message ? err.message : err}`;
}
