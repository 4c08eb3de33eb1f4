//! The `Lifecycle` contract: active count, orphan sweep, purge, health, shutdown.

use super::*;

#[async_trait]
impl Lifecycle for RedisStore {
    fn commit_retries(&self) -> u64 {
        self.commit_retries.load(Ordering::Relaxed)
    }

    async fn active_traces(&self) -> Result<u64, LifecycleError> {
        let now = self.clock.now();
        let mut conn = self.conn()?;
        Ok(::redis::cmd("ZCOUNT")
            .arg(self.global("active_exp"))
            .arg(format!("({}", micros(now)))
            .arg("+inf")
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?)
    }

    async fn sweep_orphans(
        &self,
        fence: &Lease,
        orphan_after: Duration,
        limit: u32,
    ) -> Result<Vec<Orphaned>, LifecycleError> {
        self.fence(fence).await?;
        let now = self.clock.now();
        let idle_before = now.saturating_sub(orphan_after);
        let mut conn = self.conn()?;
        let members: Vec<String> = ::redis::cmd("ZRANGEBYSCORE")
            .arg(self.global("active"))
            .arg("-inf")
            .arg(format!("({}", micros(idle_before)))
            .arg("LIMIT")
            .arg(0)
            .arg(limit.max(1))
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        let mut out = Vec::new();
        let mut stale = Vec::new();
        for m in members {
            let Some((tenant, id)) = Self::parse_member(&m) else {
                stale.push(m);
                continue;
            };
            // Each change is fenced: a holder that lost the lease stops at once.
            self.fence(fence).await?;
            let mut idle = Duration::ZERO;
            let r = self
                .write_trace::<_, BackendError>(&tenant, id, &[], &[], &[], |loaded, model| {
                    let Some(l) = loaded else {
                        return Ok(None);
                    };
                    match model.orphan(l, idle_before)? {
                        Orphan::Ended(w, i) => {
                            idle = i;
                            Ok(Some((w, ())))
                        }
                        Orphan::NotIdle(_) => Ok(None),
                    }
                })
                .await?;
            match r {
                Some(_) => out.push(Orphaned {
                    tenant,
                    trace_id: id,
                    idle,
                }),
                None => {
                    // Not a candidate after all (ended, active again, expired or gone):
                    // repair its index entry from the trace itself.
                    match self.load(&tenant, id).await? {
                        Some(l) if !l.trace.state.is_terminal() && l.trace.expires_at > now => {
                            self.index(&l.trace, l.dexp, None, 0).await?
                        }
                        _ => stale.push(m),
                    }
                }
            }
        }
        if !stale.is_empty() {
            self.zrem(self.global("active"), stale.clone()).await?;
            self.zrem(self.global("active_exp"), stale).await?;
        }
        Ok(out)
    }

    async fn purge_expired(&self, fence: &Lease, max_rows: u32) -> Result<Purged, LifecycleError> {
        self.fence(fence).await?;
        let now = self.clock.now();
        let mut budget = i64::from(max_rows.max(1));
        let mut out = Purged::default();
        let mut conn = self.conn()?;
        let expired: Vec<String> = ::redis::cmd("ZRANGEBYSCORE")
            .arg(self.global("exp"))
            .arg("-inf")
            .arg(micros(now))
            .arg("LIMIT")
            .arg(0)
            .arg(budget)
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        out.more = expired.len() as i64 >= budget;
        for m in &expired {
            let Some((tenant, id)) = Self::parse_member(m) else {
                self.zrem(self.global("exp"), vec![m.clone()]).await?;
                continue;
            };
            match self.load(&tenant, id).await? {
                Some(l) if l.trace.expires_at > now => {
                    // Its expiry moved on; the index entry was behind.
                    self.index(&l.trace, l.dexp, None, 0).await?;
                    continue;
                }
                None => {
                    let gone = Trace {
                        ..placeholder(&tenant, id)
                    };
                    self.unindex(&gone).await?;
                    continue;
                }
                Some(l) => {
                    let (rows, events, complete) = self.purge_data_of(&tenant, id, budget).await?;
                    out.events += events;
                    budget -= rows as i64;
                    if !complete || budget <= 0 {
                        out.more = true;
                        return Ok(out);
                    }
                    self.delete_keys(&tenant, id).await?;
                    self.unindex(&l.trace).await?;
                    out.traces += 1;
                    budget -= 1;
                    if budget <= 0 {
                        out.more = true;
                        return Ok(out);
                    }
                }
            }
        }
        let data_expired: Vec<String> = ::redis::cmd("ZRANGEBYSCORE")
            .arg(self.global("dexp"))
            .arg("-inf")
            .arg(micros(now))
            .arg("LIMIT")
            .arg(0)
            .arg(budget)
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        out.more |= data_expired.len() as i64 >= budget;
        for m in data_expired {
            let Some((tenant, id)) = Self::parse_member(&m) else {
                self.zrem(self.global("dexp"), vec![m]).await?;
                continue;
            };
            match self.load(&tenant, id).await? {
                Some(l) if l.dexp > now.unix_nanos() => {
                    self.index(&l.trace, l.dexp, None, 0).await?;
                    continue;
                }
                _ => {}
            }
            let (rows, events, complete) = self.purge_data_of(&tenant, id, budget).await?;
            out.events += events;
            budget -= rows as i64;
            if !complete {
                out.more = true;
                break;
            }
            self.zrem(self.global("dexp"), vec![m]).await?;
            if budget <= 0 {
                out.more = true;
                break;
            }
        }
        Ok(out)
    }

    async fn health(&self) -> Result<(), LifecycleError> {
        // A replica that cannot hear the live channel would serve streams that miss events.
        if !self.echoes.up.load(Ordering::Relaxed) {
            return Err(BackendError::unavailable("redis: live channel not subscribed").into());
        }
        let mut conn = self.conn()?;
        tokio::time::timeout(
            Duration::from_secs(2),
            ::redis::cmd("PING").query_async::<String>(&mut conn),
        )
        .await
        .map_err(|_| BackendError::unavailable("redis: ping timed out"))?
        .map_err(redis_err)?;
        Ok(())
    }

    async fn shutdown(&self) {
        self.closed.store(true, Ordering::Relaxed);
        let handle = self
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(h) = handle {
            h.abort();
        }
    }
}

impl RedisStore {
    /// Deletes up to `budget` stream entries of a trace's data; returns the entries and
    /// the events they held, and whether none are left.
    pub(super) async fn purge_data_of(
        &self,
        tenant: &str,
        id: TraceId,
        budget: i64,
    ) -> Result<(u64, u64, bool), BackendError> {
        let k = self.trace_keys(tenant, id);
        let mut conn = self.conn()?;
        let (rows, complete, events, bytes): (u64, i64, u64, i64) = self
            .purge_data
            .key(&k.spans)
            .key(&k.keys)
            .key(&k.events)
            .key(&k.row)
            .arg(budget.max(0))
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err)?;
        self.add_usage(tenant, -bytes).await?;
        Ok((rows, events, complete == 1))
    }
}

/// A trace with only its identity, to remove index entries of one whose keys are gone
/// (its tenant indexes are left to lazy cleanup on read).
pub(super) fn placeholder(tenant: &str, id: TraceId) -> Trace {
    let t = Timestamp::from_unix_nanos(0);
    Trace {
        trace_id: id,
        tenant: tenant.to_string(),
        name: None,
        agent_id: None,
        session_id: None,
        user_id: None,
        state: State::Received,
        level: traceway_core::Level::Minimal,
        created_at: t,
        last_activity_at: t,
        ended_at: None,
        expires_at: t,
        last_seq: 0,
        metadata: Default::default(),
        rollups: Rollups::default(),
    }
}
