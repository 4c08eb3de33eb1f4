//! The tenant, active and expiry indexes, updated after a commit by idempotent commands.

use super::*;
use crate::duration_index::bucket_of;

impl RedisStore {
    /// Brings the indexes in line with a trace as committed (idempotent; a retry repairs
    /// what a failure between the commit and here left out), and moves the tenant's
    /// stored-bytes counter by `usage` (ADR 040; not idempotent: 0 on a repair).
    pub(super) async fn index(
        &self,
        t: &Trace,
        dexp: i64,
        before: Option<&Trace>,
        usage: i64,
    ) -> Result<(), BackendError> {
        let tenant = &t.tenant;
        let id = t.trace_id.to_string();
        let created = micros(t.created_at);
        let member = Self::member(tenant, t.trace_id);
        let mut p: Vec<Cmd> = Vec::new();
        p.push(Cmd::zadd(self.tenant_index(tenant, "all"), &id, created));
        for (tag, v) in [("a", &t.agent_id), ("u", &t.user_id), ("s", &t.session_id)] {
            if let Some(v) = v {
                p.push(Cmd::zadd(
                    self.tenant_index(tenant, &format!("{tag}:{v}")),
                    &id,
                    created,
                ));
            }
        }
        if let Some(b) = before {
            if b.state != t.state {
                p.push(Cmd::zrem(
                    self.tenant_index(tenant, &format!("st:{}", b.state.as_str())),
                    &id,
                ));
            }
        }
        p.push(Cmd::zadd(
            self.tenant_index(tenant, &format!("st:{}", t.state.as_str())),
            &id,
            created,
        ));
        // The index-served filters (ADR 042): errored traces, and traces by duration
        // bucket, both by creation time like the listing.
        if t.rollups.error_count > 0 {
            p.push(Cmd::zadd(self.tenant_index(tenant, "err"), &id, created));
        } else if before.is_some_and(|b| b.rollups.error_count > 0) {
            p.push(Cmd::zrem(self.tenant_index(tenant, "err"), &id));
        }
        let bucket = t.rollups.duration_ms.map(bucket_of);
        if let Some(old) = before.and_then(|b| b.rollups.duration_ms.map(bucket_of)) {
            if Some(old) != bucket {
                p.push(Cmd::zrem(self.duration_index(tenant, old), &id));
            }
        }
        if let Some(b) = bucket {
            p.push(Cmd::zadd(self.duration_index(tenant, b), &id, created));
        }
        if t.state.is_terminal() {
            p.push(Cmd::zrem(self.global("active"), &member));
            p.push(Cmd::zrem(self.global("active_exp"), &member));
            if let Some(end) = t.ended_at {
                p.push(Cmd::zadd(
                    self.tenant_index(tenant, "ended"),
                    &id,
                    micros(end),
                ));
            }
        } else {
            let mut gt = ::redis::cmd("ZADD");
            gt.arg(self.global("active"))
                .arg("GT")
                .arg(micros(t.last_activity_at))
                .arg(&member);
            p.push(gt);
            p.push(Cmd::zadd(
                self.global("active_exp"),
                &member,
                micros(t.expires_at),
            ));
        }
        p.push(Cmd::zadd(self.global("exp"), &member, micros(t.expires_at)));
        if dexp > 0 {
            p.push(Cmd::zadd(
                self.global("dexp"),
                &member,
                dexp.div_euclid(1000),
            ));
        }
        if usage > 0 {
            let mut incr = ::redis::cmd("INCRBY");
            incr.arg(self.tenant_index(tenant, "bytes")).arg(usage);
            p.push(incr);
        }
        self.exec::<Value>(p).await?;
        if usage < 0 {
            // A new trace over a stale one's keys, which held more.
            self.add_usage(tenant, usage).await?;
        }
        Ok(())
    }

    /// Removes a trace from every index (it was deleted or purged).
    pub(super) async fn unindex(&self, t: &Trace) -> Result<(), BackendError> {
        let tenant = &t.tenant;
        let id = t.trace_id.to_string();
        let member = Self::member(tenant, t.trace_id);
        let mut p: Vec<Cmd> = vec![Cmd::zrem(self.tenant_index(tenant, "all"), &id)];
        for (tag, v) in [("a", &t.agent_id), ("u", &t.user_id), ("s", &t.session_id)] {
            if let Some(v) = v {
                p.push(Cmd::zrem(
                    self.tenant_index(tenant, &format!("{tag}:{v}")),
                    &id,
                ));
            }
        }
        p.push(Cmd::zrem(
            self.tenant_index(tenant, &format!("st:{}", t.state.as_str())),
            &id,
        ));
        p.push(Cmd::zrem(self.tenant_index(tenant, "ended"), &id));
        p.push(Cmd::zrem(self.tenant_index(tenant, "err"), &id));
        if let Some(d) = t.rollups.duration_ms {
            p.push(Cmd::zrem(self.duration_index(tenant, bucket_of(d)), &id));
        }
        for g in ["active", "active_exp", "exp", "dexp"] {
            p.push(Cmd::zrem(self.global(g), &member));
        }
        self.exec::<Value>(p).await.map(drop)
    }

    pub(super) async fn delete_keys(&self, tenant: &str, id: TraceId) -> Result<(), BackendError> {
        let k = self.trace_keys(tenant, id);
        let mut conn = self.conn()?;
        let bytes: i64 = self
            .delete_keys
            .key(&k.row)
            .key(&k.spans)
            .key(&k.keys)
            .key(&k.events)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err)?;
        self.add_usage(tenant, -bytes).await
    }

    /// Moves the tenant's stored-bytes counter (ADR 040). It lives in the tenant's slot,
    /// not the trace's, so it is moved after the change it follows, by a second command;
    /// at 0 (or below, after a drift) it is deleted, so a tenant whose data is all purged
    /// leaves no key behind.
    pub(super) async fn add_usage(&self, tenant: &str, delta: i64) -> Result<(), BackendError> {
        if delta == 0 {
            return Ok(());
        }
        let mut conn = self.conn()?;
        ::redis::cmd("EVAL")
            .arg(scripts::ADD_USAGE)
            .arg(1)
            .arg(self.tenant_index(tenant, "bytes"))
            .arg(delta)
            .query_async::<()>(&mut conn)
            .await
            .map_err(redis_err)
    }

    /// Removes members from a sorted set; returns how many it held.
    pub(super) async fn zrem(
        &self,
        key: String,
        members: Vec<String>,
    ) -> Result<usize, BackendError> {
        if members.is_empty() {
            return Ok(0);
        }
        let mut conn = self.conn()?;
        ::redis::cmd("ZREM")
            .arg(key)
            .arg(members)
            .query_async::<usize>(&mut conn)
            .await
            .map_err(redis_err)
    }

    pub(super) async fn delete_one(
        &self,
        tenant: &str,
        id: TraceId,
    ) -> Result<Option<Trace>, BackendError> {
        let Some(l) = self.load(tenant, id).await? else {
            return Ok(None);
        };
        self.delete_keys(tenant, id).await?;
        self.unindex(&l.trace).await?;
        Ok(Some(l.trace))
    }
}
