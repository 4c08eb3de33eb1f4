//! [`MeteredStore`]: the decorator that times every store write (failed ones by error
//! kind) and counts what ingest stored, whatever route it came by. It overrides only the
//! writes; reads, health and the live feed pass through the layers' defaults.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use traceway_core::{NewTrace, Timestamp, Trace, TraceId, TracePatch};
use traceway_store::{
    AppendOutcome, AppendRequest, BackendError, Decorates, EventCounts, Lease, LeasesLayer,
    LifecycleError, LifecycleLayer, LiveFeedLayer, Orphaned, Purged, Store, StoreFailure,
    TraceError, TracesLayer,
};

use super::{Metrics, WriteOp};

/// The store as handlers and the watchdog see it: every call goes to the wrapped store;
/// writes are timed and ingest is counted on the way back. Reads, health and the live feed
/// pass through the layers' defaults.
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> MeteredStore {
        MeteredStore { inner, metrics }
    }

    async fn timed<T, E: StoreFailure>(
        &self,
        op: WriteOp,
        f: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let start = Instant::now();
        let r = f.await;
        match &r {
            Ok(_) => self.metrics.observe_write(op, start.elapsed()),
            Err(e) => self.metrics.observe_failed_write(op, e, start.elapsed()),
        }
        r
    }
}

impl Decorates for MeteredStore {
    fn inner(&self) -> &dyn Store {
        &*self.inner
    }
}

#[async_trait]
impl TracesLayer for MeteredStore {
    async fn create_trace(
        &self,
        tenant: &str,
        new: NewTrace,
    ) -> Result<(Trace, EventCounts), TraceError> {
        let r = self
            .timed(WriteOp::Create, self.inner.create_trace(tenant, new))
            .await?;
        self.metrics.traces_created.add(1);
        self.metrics.record_events(&r.1);
        Ok(r)
    }

    async fn append(&self, req: AppendRequest) -> Result<AppendOutcome, TraceError> {
        let out = self.timed(WriteOp::Append, self.inner.append(req)).await?;
        if out.created {
            self.metrics.traces_created.add(1);
        }
        self.metrics.duplicates.add(u64::from(out.duplicates));
        self.metrics.record_events(&out.stored);
        Ok(out)
    }

    async fn update_trace(
        &self,
        tenant: &str,
        id: TraceId,
        patch: TracePatch,
    ) -> Result<(Trace, EventCounts), TraceError> {
        let r = self
            .timed(WriteOp::Update, self.inner.update_trace(tenant, id, patch))
            .await?;
        self.metrics.record_events(&r.1);
        Ok(r)
    }

    async fn delete_trace(&self, tenant: &str, id: TraceId) -> Result<bool, TraceError> {
        self.timed(WriteOp::Delete, self.inner.delete_trace(tenant, id))
            .await
    }

    async fn delete_ended_before(
        &self,
        tenant: &str,
        cutoff: Timestamp,
        limit: Option<u64>,
    ) -> Result<u64, TraceError> {
        self.timed(
            WriteOp::Cleanup,
            self.inner.delete_ended_before(tenant, cutoff, limit),
        )
        .await
    }
}

#[async_trait]
impl LifecycleLayer for MeteredStore {
    async fn sweep_orphans(
        &self,
        fence: &Lease,
        orphan_after: Duration,
        limit: u32,
    ) -> Result<Vec<Orphaned>, LifecycleError> {
        self.timed(
            WriteOp::Sweep,
            self.inner.sweep_orphans(fence, orphan_after, limit),
        )
        .await
    }

    async fn purge_expired(&self, fence: &Lease, max_rows: u32) -> Result<Purged, LifecycleError> {
        self.timed(WriteOp::Purge, self.inner.purge_expired(fence, max_rows))
            .await
    }
}

#[async_trait]
impl LeasesLayer for MeteredStore {
    async fn try_acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, BackendError> {
        self.timed(
            WriteOp::Lease,
            self.inner.try_acquire_lease(name, holder, ttl),
        )
        .await
    }

    async fn renew_lease(
        &self,
        lease: &Lease,
        ttl: Duration,
    ) -> Result<Option<Lease>, BackendError> {
        self.timed(WriteOp::Lease, self.inner.renew_lease(lease, ttl))
            .await
    }

    async fn release_lease(&self, lease: &Lease) -> Result<bool, BackendError> {
        self.timed(WriteOp::Lease, self.inner.release_lease(lease))
            .await
    }
}

impl LiveFeedLayer for MeteredStore {}
impl traceway_store::WorkflowContextsLayer for MeteredStore {}
impl traceway_store::ApiKeysLayer for MeteredStore {}
