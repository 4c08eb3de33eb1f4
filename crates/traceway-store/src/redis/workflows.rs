//! Workflow contexts on Redis (ADR 023). All keys of a tenant's contexts share the hash
//! tag `{tenant}`, so they live in one Cluster slot and each operation is one atomic
//! script:
//!
//! - `{prefix}:w:{tenant}:c:{instance}`: the context (JSON), with a TTL (`PX`);
//! - `{prefix}:w:{tenant}:exp`: a sorted set of instance ids by expiry (ms), for the count
//!   (`ZCOUNT` from now) and to drop expired entries a few at a time on each write;
//! - `{prefix}:w:{tenant}:lex`: the same ids at score 0, for the listing by cursor
//!   (`ZRANGEBYLEX`), never a `KEYS` or `SCAN` of the keyspace.
//!
//! Both sets carry a TTL at least as long as their longest-lived member. Expiry is judged
//! on the store's clock (the TTL only reclaims memory), so every backend agrees on it.

use std::sync::LazyLock;
use std::time::Duration;

use ::redis::Script;
use async_trait::async_trait;
use traceway_core::Timestamp;

use super::connection::redis_err;
use super::RedisStore;
use crate::workflows::{checked, checked_instance, decode_instance_cursor, encode_instance_cursor};
use crate::{
    BackendError, NewWorkflowContext, PageRequest, WorkflowContext, WorkflowContexts,
    WorkflowError, WorkflowStats, MAX_WORKFLOW_PAGE,
};

/// KEYS: context, exp, lex. ARGV: instance, body, ttl ms, expiry ms, now ms.
/// Stores the context, indexes it, and drops up to 16 expired ids from both sets.
const PUT: &str = r#"
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('ZADD', KEYS[3], 0, ARGV[1])
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[5], 'LIMIT', 0, 16)
if #old > 0 then
  redis.call('ZREM', KEYS[2], unpack(old))
  redis.call('ZREM', KEYS[3], unpack(old))
end
local ttl = tonumber(ARGV[3])
for i = 2, 3 do
  if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
end
return 1
"#;

/// KEYS: context, exp, lex. ARGV: instance. Deletes and returns the old value (or false).
const DELETE: &str = r#"
local v = redis.call('GET', KEYS[1])
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return v
"#;

/// KEYS: exp, lex. ARGV: now ms, after ('' for the start), limit, scan budget.
/// Returns {count, more (0/1), last scanned id, ids...}: live ids after `after` in byte
/// order; ids found expired on the way are dropped from both sets. At most `budget` ids
/// are examined, so a page costs at most that much however many have expired.
const STATS: &str = r#"
local now = tonumber(ARGV[1])
local count = redis.call('ZCOUNT', KEYS[1], '(' .. ARGV[1], '+inf')
local limit = tonumber(ARGV[3])
local budget = tonumber(ARGV[4])
local from = '-'
if ARGV[2] ~= '' then from = '(' .. ARGV[2] end
local out = {}
local last = ''
local more = 0
while budget > 0 do
  local chunk = redis.call('ZRANGEBYLEX', KEYS[2], from, '+', 'LIMIT', 0, math.min(budget, 100))
  if #chunk == 0 then break end
  for _, id in ipairs(chunk) do
    budget = budget - 1
    local s = redis.call('ZSCORE', KEYS[1], id)
    if s and tonumber(s) > now then
      if #out == limit then more = 1; break end
      out[#out + 1] = id
      last = id
    else
      redis.call('ZREM', KEYS[1], id)
      redis.call('ZREM', KEYS[2], id)
      last = id
    end
  end
  if more == 1 then break end
  if budget <= 0 then
    if #redis.call('ZRANGEBYLEX', KEYS[2], '(' .. last, '+', 'LIMIT', 0, 1) > 0 then more = 1 end
    break
  end
  from = '(' .. chunk[#chunk]
end
local r = {count, more, last}
for _, id in ipairs(out) do r[#r + 1] = id end
return r
"#;

static PUT_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(PUT));
static DELETE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(DELETE));
static STATS_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(STATS));

/// Ids one stats page examines at most, beyond the page itself.
const STATS_SCAN_EXTRA: u32 = 1000;

fn ms(t: Timestamp) -> i64 {
    t.unix_millis()
}

impl RedisStore {
    fn workflow_base(&self, tenant: &str) -> String {
        format!("{}:w:{{{tenant}}}", self.prefix)
    }

    /// The context key and the two sets of the tenant.
    fn workflow_keys(&self, tenant: &str, instance: &str) -> [String; 3] {
        let base = self.workflow_base(tenant);
        [
            format!("{base}:c:{instance}"),
            format!("{base}:exp"),
            format!("{base}:lex"),
        ]
    }
}

fn decode(v: &[u8]) -> Result<WorkflowContext, BackendError> {
    serde_json::from_slice(v).map_err(|e| BackendError::internal_by("decode context", e))
}

#[async_trait]
impl WorkflowContexts for RedisStore {
    async fn put_workflow_context(
        &self,
        tenant: &str,
        instance: &str,
        ctx: NewWorkflowContext,
        ttl: Duration,
    ) -> Result<WorkflowContext, WorkflowError> {
        let now = self.clock.now();
        let ctx = checked(instance, ctx, now, ttl)?;
        let body =
            serde_json::to_vec(&ctx).map_err(|e| BackendError::internal_by("encode context", e))?;
        let [key, exp, lex] = self.workflow_keys(tenant, instance);
        let mut conn = self.conn()?;
        let _: i64 = PUT_SCRIPT
            .key(key)
            .key(exp)
            .key(lex)
            .arg(instance)
            .arg(body)
            .arg((ttl.as_millis() as i64).max(1))
            .arg(ms(ctx.expires_at))
            .arg(ms(now))
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err)?;
        Ok(ctx)
    }

    async fn get_workflow_context(
        &self,
        tenant: &str,
        instance: &str,
    ) -> Result<Option<WorkflowContext>, WorkflowError> {
        checked_instance(instance)?;
        let [key, _, _] = self.workflow_keys(tenant, instance);
        let mut conn = self.conn()?;
        let v: Option<Vec<u8>> = ::redis::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        let now = self.clock.now();
        Ok(v.as_deref()
            .map(decode)
            .transpose()?
            .filter(|c| c.expires_at > now))
    }

    async fn delete_workflow_context(
        &self,
        tenant: &str,
        instance: &str,
    ) -> Result<bool, WorkflowError> {
        checked_instance(instance)?;
        let [key, exp, lex] = self.workflow_keys(tenant, instance);
        let mut conn = self.conn()?;
        let v: Option<Vec<u8>> = DELETE_SCRIPT
            .key(key)
            .key(exp)
            .key(lex)
            .arg(instance)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err)?;
        let now = self.clock.now();
        Ok(match v {
            Some(v) => decode(&v)?.expires_at > now,
            None => false,
        })
    }

    async fn workflow_stats(
        &self,
        tenant: &str,
        page: &PageRequest,
    ) -> Result<WorkflowStats, WorkflowError> {
        let after = page
            .cursor
            .as_deref()
            .map(decode_instance_cursor)
            .transpose()?
            .unwrap_or_default();
        let limit = page.limit.clamp(1, MAX_WORKFLOW_PAGE);
        let base = self.workflow_base(tenant);
        let mut conn = self.conn()?;
        let r: Vec<::redis::Value> = STATS_SCRIPT
            .key(format!("{base}:exp"))
            .key(format!("{base}:lex"))
            .arg(ms(self.clock.now()))
            .arg(after)
            .arg(limit)
            .arg(limit + STATS_SCAN_EXTRA)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err)?;
        let bad = || BackendError::internal("unexpected stats reply");
        let mut it = r.into_iter();
        let count: u64 =
            ::redis::from_redis_value(it.next().ok_or_else(bad)?).map_err(|_| bad())?;
        let more: i64 = ::redis::from_redis_value(it.next().ok_or_else(bad)?).map_err(|_| bad())?;
        let last: String =
            ::redis::from_redis_value(it.next().ok_or_else(bad)?).map_err(|_| bad())?;
        let instances = it
            .map(|v| ::redis::from_redis_value::<String>(v).map_err(|_| bad()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(WorkflowStats {
            count,
            next_cursor: (more == 1).then(|| encode_instance_cursor(&last)),
            instances,
        })
    }
}
