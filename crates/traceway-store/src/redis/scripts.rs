//! The Lua scripts. Each touches the keys of one trace (one hash tag, so one Cluster slot)
//! or of one lease; Redis runs a script atomically.

/// Commits a trace's new version if nobody else wrote since it was read (compare-and-set
/// on `ver`), then publishes the events on the live channel in the same atomic step, so
/// subscribers see them in commit order.
///
/// KEYS: row, spans, keys, events. ARGV: expected ver, new ver, reset (0/1), doc, data
/// expiry (ns), row ttl (ms), data ttl (ms), #spans, #keys, #events, channel, message,
/// then span id/json pairs, keys, event id/json pairs. Returns 1, or 0 on a conflict.
pub(super) const COMMIT: &str = r#"
local cur = redis.call('HGET', KEYS[1], 'ver') or ''
if cur ~= ARGV[1] then return 0 end
if ARGV[3] == '1' then redis.call('DEL', KEYS[2], KEYS[3], KEYS[4]) end
redis.call('HSET', KEYS[1], 'doc', ARGV[4], 'ver', ARGV[2], 'dexp', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
local i = 13
for j = 1, tonumber(ARGV[8]) do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end
for j = 1, tonumber(ARGV[9]) do
  redis.call('SADD', KEYS[3], ARGV[i])
  i = i + 1
end
for j = 1, tonumber(ARGV[10]) do
  redis.call('XADD', KEYS[4], ARGV[i], 'd', ARGV[i + 1])
  i = i + 2
end
for j = 2, 4 do
  if redis.call('EXISTS', KEYS[j]) == 1 then redis.call('PEXPIRE', KEYS[j], ARGV[7]) end
end
if ARGV[12] ~= '' then redis.call('PUBLISH', ARGV[11], ARGV[12]) end
return 1
"#;

/// Deletes up to ARGV[1] events of a trace (oldest first); when none are left, deletes its
/// spans and keys too. KEYS: spans, keys, events. Returns {deleted, complete (0/1)}.
pub(super) const PURGE_DATA: &str = r#"
local n = tonumber(ARGV[1])
local deleted = 0
if n > 0 then
  local ids = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', n)
  for _, e in ipairs(ids) do
    redis.call('XDEL', KEYS[3], e[1])
    deleted = deleted + 1
  end
end
if redis.call('XLEN', KEYS[3]) == 0 then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
  return {deleted, 1}
end
return {deleted, 0}
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
