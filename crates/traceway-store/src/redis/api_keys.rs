//! API keys on Redis: one hash per key at `<prefix>:key:{<key_id>}` (one read verifies a
//! key) and a sorted set per tenant, `<prefix>:keys:{<tenant>}`, by creation time, for the
//! listing. The two are in different slots on a Cluster: a key is written before it is
//! indexed, so a failure between the two leaves a key that works but is not listed, never
//! a listed key that does not exist; a listing skips an index member without its hash.

use std::collections::HashMap;

use ::redis::{Cmd, Script};
use async_trait::async_trait;
use traceway_core::{KeyScopes, Timestamp};

use super::{redis_err, RedisStore};
use crate::{ApiKey, ApiKeys, KeyError, StoredKey, MAX_KEYS_PER_TENANT};

/// Creates the hash unless it exists: 1 if created, 0 if taken.
const CREATE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'tenant', ARGV[1], 'name', ARGV[2], 'scopes', ARGV[3],
  'hash', ARGV[4], 'created', ARGV[5])
return 1
"#;

/// Revokes if the key belongs to the tenant (keeping an earlier revocation): 1 if it
/// does, 0 if not.
const REVOKE: &str = r#"
if redis.call('HGET', KEYS[1], 'tenant') ~= ARGV[1] then return 0 end
redis.call('HSETNX', KEYS[1], 'revoked', ARGV[2])
return 1
"#;

/// Raises `last_used` to ARGV[1] on an existing key.
const TOUCH: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local cur = redis.call('HGET', KEYS[1], 'last_used')
if cur and tonumber(cur) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'last_used', ARGV[1])
return 1
"#;

impl RedisStore {
    fn api_key(&self, key_id: &str) -> String {
        format!("{}:key:{{{key_id}}}", self.prefix)
    }

    fn api_key_index(&self, tenant: &str) -> String {
        format!("{}:keys:{{{tenant}}}", self.prefix)
    }
}

fn nanos(fields: &HashMap<String, String>, name: &str) -> Option<Timestamp> {
    fields
        .get(name)
        .and_then(|v| v.parse().ok())
        .map(Timestamp::from_unix_nanos)
}

/// A key from its hash; `None` for an empty (absent) or unreadable hash, which is logged:
/// one bad record never fails a listing.
fn decode(key_id: &str, fields: HashMap<String, String>) -> Option<StoredKey> {
    if fields.is_empty() {
        return None;
    }
    let (Some(tenant), Some(hash), Some(created_at)) = (
        fields.get("tenant"),
        fields.get("hash"),
        nanos(&fields, "created"),
    ) else {
        tracing::warn!(key_id, "stored key is incomplete; skipped");
        return None;
    };
    let scopes = KeyScopes::from_csv(fields.get("scopes").map_or("", |s| s.as_str()))
        .unwrap_or_else(|e| {
            tracing::warn!(key_id, error = %e, "stored key has unreadable scopes; it grants nothing");
            KeyScopes::default()
        });
    Some(StoredKey {
        key: ApiKey {
            key_id: key_id.to_string(),
            tenant: tenant.clone(),
            name: fields.get("name").cloned().unwrap_or_default(),
            scopes,
            created_at,
            revoked_at: nanos(&fields, "revoked"),
            last_used_at: nanos(&fields, "last_used"),
        },
        secret_hash: hash.clone(),
    })
}

#[async_trait]
impl ApiKeys for RedisStore {
    async fn create_key(&self, key: StoredKey) -> Result<(), KeyError> {
        let index = self.api_key_index(&key.key.tenant);
        let mut conn = self.conn()?;
        let held: u64 = ::redis::cmd("ZCARD")
            .arg(&index)
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        if held as usize >= MAX_KEYS_PER_TENANT {
            return Err(KeyError::TenantFull);
        }
        let created = key.key.created_at.unix_nanos();
        let made: i64 = Script::new(CREATE)
            .key(self.api_key(&key.key.key_id))
            .arg(&key.key.tenant)
            .arg(&key.key.name)
            .arg(key.key.scopes.to_csv())
            .arg(&key.secret_hash)
            .arg(created)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err)?;
        if made == 0 {
            return Err(KeyError::KeyIdExists(key.key.key_id));
        }
        ::redis::cmd("ZADD")
            .arg(&index)
            .arg(created)
            .arg(&key.key.key_id)
            .query_async::<()>(&mut conn)
            .await
            .map_err(redis_err)?;
        Ok(())
    }

    async fn get_key(&self, key_id: &str) -> Result<Option<StoredKey>, KeyError> {
        let mut conn = self.conn()?;
        let fields: HashMap<String, String> = ::redis::cmd("HGETALL")
            .arg(self.api_key(key_id))
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        Ok(decode(key_id, fields))
    }

    async fn list_keys(&self, tenant: &str) -> Result<Vec<ApiKey>, KeyError> {
        let mut conn = self.conn()?;
        let ids: Vec<String> = ::redis::cmd("ZRANGE")
            .arg(self.api_key_index(tenant))
            .arg(0)
            .arg(MAX_KEYS_PER_TENANT as i64 - 1)
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        let cmds: Vec<Cmd> = ids
            .iter()
            .map(|id| {
                let mut c = ::redis::cmd("HGETALL");
                c.arg(self.api_key(id));
                c
            })
            .collect();
        let rows: Vec<HashMap<String, String>> = self.exec(cmds).await?;
        Ok(ids
            .iter()
            .zip(rows)
            .filter_map(|(id, fields)| decode(id, fields))
            .filter(|k| k.key.tenant == tenant)
            .map(|k| k.key)
            .collect())
    }

    async fn revoke_key(&self, tenant: &str, key_id: &str) -> Result<bool, KeyError> {
        let mut conn = self.conn()?;
        let n: i64 = Script::new(REVOKE)
            .key(self.api_key(key_id))
            .arg(tenant)
            .arg(self.clock.now().unix_nanos())
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err)?;
        Ok(n == 1)
    }

    async fn touch_key(&self, key_id: &str, at: Timestamp) -> Result<(), KeyError> {
        let mut conn = self.conn()?;
        Script::new(TOUCH)
            .key(self.api_key(key_id))
            .arg(at.unix_nanos())
            .invoke_async::<i64>(&mut conn)
            .await
            .map_err(redis_err)?;
        Ok(())
    }
}
