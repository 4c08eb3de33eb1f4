//! The Lua scripts. Each touches the keys of one trace (one hash tag, so one Cluster slot)
//! or of one lease; Redis runs a script atomically.

/// Commits a trace's new version if nobody else wrote since it was read (compare-and-set
/// on `ver`), then publishes the events on the live channel in the same atomic step, so
/// subscribers see them in commit order.
///
/// The commit's events are one argument, `header\n[events]`: one stream entry (its id the
/// last event's seq) and the live message, so they cross the socket and enter Lua once
/// (Redis hashes every byte of every string that enters Lua). Spans and keys go in one
/// `HSET`/`SADD` per few hundred (`unpack` has a stack limit); `PEXPIRE` of a key that does
/// not exist does nothing, so it needs no `EXISTS`.
///
/// The row's `bytes` field is the size of the trace's stream entries (ADR 040): the entry
/// adds its length, a reset (a new trace over a stale one) drops the old figure.
///
/// KEYS: row, spans, keys, events. ARGV: expected ver, new ver, reset (0/1), doc, data
/// expiry (ns), row ttl (ms), data ttl (ms), #spans, #keys, entry id ('' when there are no
/// events), channel, entry (the message), then span id/json pairs, then keys. Returns
/// {1, change of the trace's bytes}, or {0, 0} on a conflict.
pub(super) const COMMIT: &str = r#"
local cur = redis.call('HGET', KEYS[1], 'ver') or ''
if cur ~= ARGV[1] then return {0, 0} end
local delta = 0
if ARGV[3] == '1' then
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
  delta = -tonumber(redis.call('HGET', KEYS[1], 'bytes') or '0')
  redis.call('HDEL', KEYS[1], 'bytes')
end
redis.call('HSET', KEYS[1], 'doc', ARGV[4], 'ver', ARGV[2], 'dexp', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
local i = 13
local n = tonumber(ARGV[8])
while n > 0 do
  local c = math.min(n, 200)
  redis.call('HSET', KEYS[2], unpack(ARGV, i, i + 2 * c - 1))
  i = i + 2 * c
  n = n - c
end
n = tonumber(ARGV[9])
while n > 0 do
  local c = math.min(n, 400)
  redis.call('SADD', KEYS[3], unpack(ARGV, i, i + c - 1))
  i = i + c
  n = n - c
end
if ARGV[10] ~= '' then
  redis.call('XADD', KEYS[4], ARGV[10], 'd', ARGV[12])
  redis.call('PUBLISH', ARGV[11], ARGV[12])
  redis.call('HINCRBY', KEYS[1], 'bytes', string.len(ARGV[12]))
  delta = delta + string.len(ARGV[12])
end
for j = 2, 4 do redis.call('PEXPIRE', KEYS[j], ARGV[7]) end
return {1, delta}
"#;

/// Deletes up to ARGV[1] entries of a trace's event stream (oldest first; an entry is one
/// commit's events); when none are left, deletes its spans and keys too. The entries'
/// bytes come off the row's `bytes` (if the row is still there). KEYS: spans, keys,
/// events, row. Returns {deleted entries, complete (0/1), deleted events, deleted bytes}.
///
/// An entry's id is its last event's seq; its first event's seq leads its JSON (events
/// serialise `trace_id`, then `seq`), so an entry holds `last - first + 1` events without
/// parsing it. An entry whose first seq cannot be read counts as one event (the
/// one-event entries written before batches).
pub(super) const PURGE_DATA: &str = r#"
local n = tonumber(ARGV[1])
local deleted = 0
local events = 0
local bytes = 0
if n > 0 then
  local entries = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', n)
  for _, e in ipairs(entries) do
    local last = tonumber(string.match(e[1], '^(%d+)'))
    local d = e[2][2] or ''
    local at = string.find(d, '\n', 1, true)
    local first
    if at then
      first = string.match(d, '^%[{"trace_id":"%x+","seq":(%d+)', at + 1)
    else
      first = string.match(d, '^{"trace_id":"%x+","seq":(%d+)')
    end
    first = tonumber(first)
    if first and last and last >= first then
      events = events + (last - first + 1)
    else
      events = events + 1
    end
    redis.call('XDEL', KEYS[3], e[1])
    deleted = deleted + 1
    bytes = bytes + string.len(d)
  end
end
if bytes > 0 and redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('HINCRBY', KEYS[4], 'bytes', -bytes)
end
if redis.call('XLEN', KEYS[3]) == 0 then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
  return {deleted, 1, events, bytes}
end
return {deleted, 0, events, bytes}
"#;

/// Adds ARGV[1] (negative to take off) to a tenant's stored-bytes counter, KEYS[1], and
/// deletes it at 0 or below (ADR 040). Returns the new figure.
pub(super) const ADD_USAGE: &str = r#"
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if n <= 0 then redis.call('DEL', KEYS[1]) end
return n
"#;

/// Deletes a trace's keys and returns the bytes its row still counted (ADR 040).
/// KEYS: row, spans, keys, events.
pub(super) const DELETE_KEYS: &str = r#"
local b = tonumber(redis.call('HGET', KEYS[1], 'bytes') or '0')
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return b
"#;

/// Takes or extends a lease. The holder record is `SET NX PX`-like (it lapses at its
/// expiry); the token lives in its own counter so it is never reused.
/// KEYS: lease, token. ARGV: holder, now (µs), expires (µs), ttl (ms). Returns the token
/// or nil while another holder has it.
pub(super) const LEASE_ACQUIRE: &str = r#"
local h = redis.call('HMGET', KEYS[1], 'holder', 'token', 'exp')
if h[1] and tonumber(h[3]) > tonumber(ARGV[2]) then
  if h[1] ~= ARGV[1] then return false end
  redis.call('HSET', KEYS[1], 'exp', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return tonumber(h[2])
end
local token = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'holder', ARGV[1], 'token', token, 'exp', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return token
"#;

/// Compare-and-renew (mode `renew`), release (`release`) or check (`check`) a lease.
/// KEYS: lease. ARGV: mode, holder, token, now (µs), expires (µs), ttl (ms). Returns 1 when
/// the lease was current.
pub(super) const LEASE_CAS: &str = r#"
local h = redis.call('HMGET', KEYS[1], 'holder', 'token', 'exp')
if not h[1] or h[1] ~= ARGV[2] or h[2] ~= ARGV[3] or tonumber(h[3]) <= tonumber(ARGV[4]) then
  return 0
end
if ARGV[1] == 'renew' then
  redis.call('HSET', KEYS[1], 'exp', ARGV[5])
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
elseif ARGV[1] == 'release' then
  redis.call('DEL', KEYS[1])
end
return 1
"#;

/// Replaces a trace row's `doc` (and its `ver`) if nobody wrote since it was read: how a
/// trace's analysis digest goes onto its row (ADR 028). Nothing is published and the TTL
/// is unchanged. KEYS: row. ARGV: expected ver, new ver, doc. Returns 1, or 0 on a
/// conflict.
pub(super) const PUT_DOC: &str = r#"
local cur = redis.call('HGET', KEYS[1], 'ver')
if not cur or cur ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'doc', ARGV[3], 'ver', ARGV[2])
return 1
"#;
