//! Leases and fencing.

use super::*;

impl RedisStore {
    pub(super) async fn fence(&self, fence: &Lease) -> Result<(), LifecycleError> {
        if self.lease_cas_call("check", fence, Duration::ZERO).await? {
            Ok(())
        } else {
            Err(LeaseLost::of(fence).into())
        }
    }

    pub(super) async fn lease_cas_call(
        &self,
        mode: &str,
        lease: &Lease,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        let now = self.clock.now();
        let (key, _) = self.lease_keys(&lease.name);
        let mut conn = self.conn()?;
        let n: i64 = self
            .lease_cas
            .key(key)
            .arg(mode)
            .arg(&lease.holder)
            .arg(lease.token)
            .arg(micros(now))
            .arg(micros(now.saturating_add(ttl)))
            .arg((ttl.as_millis() as i64).max(1))
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err)?;
        Ok(n == 1)
    }
}

#[async_trait]
impl Leases for RedisStore {
    async fn try_acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, BackendError> {
        let now = self.clock.now();
        let expires_at = now.saturating_add(ttl);
        let (key, token_key) = self.lease_keys(name);
        let mut conn = self.conn()?;
        let token: Option<u64> = self
            .lease_acquire
            .key(key)
            .key(token_key)
            .arg(holder)
            .arg(micros(now))
            .arg(micros(expires_at))
            .arg((ttl.as_millis() as i64).max(1))
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err)?;
        Ok(token.map(|token| Lease {
            name: name.to_string(),
            holder: holder.to_string(),
            token,
            expires_at,
        }))
    }

    async fn renew_lease(
        &self,
        lease: &Lease,
        ttl: Duration,
    ) -> Result<Option<Lease>, BackendError> {
        let expires_at = self.clock.now().saturating_add(ttl);
        Ok(self
            .lease_cas_call("renew", lease, ttl)
            .await?
            .then(|| Lease {
                expires_at,
                ..lease.clone()
            }))
    }

    async fn release_lease(&self, lease: &Lease) -> Result<bool, BackendError> {
        self.lease_cas_call("release", lease, Duration::ZERO).await
    }
}
