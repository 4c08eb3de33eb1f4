//! The watchdog: a task of `serve` that, while this process holds the store's watchdog
//! lease, sweeps orphaned traces and purges expired data every `sweep_interval`.
//!
//! Exactly one process per store sweeps: the lease (with a fencing token) is renewed every
//! third of its ttl; a process that cannot renew stops sweeping, and one whose lease
//! lapsed anyway is refused by the store itself (the sweep and purge commands carry the
//! token). Store errors are logged and the loop goes on; at shutdown the lease is released
//! so another process takes over at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use traceway_store::{ErrorChain, Lease, LifecycleError, Store, WATCHDOG_LEASE};

use crate::config::Lifecycle;
use crate::metrics::Metrics;

/// A running watchdog.
pub struct Watchdog {
    stop: watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
}

impl Watchdog {
    /// Starts the watchdog task. `holder` names this process in the lease (unique per
    /// process).
    pub fn start(
        store: Arc<dyn Store>,
        cfg: Lifecycle,
        metrics: Arc<Metrics>,
        holder: String,
    ) -> Watchdog {
        let (stop, stopped) = watch::channel(false);
        let handle = tokio::spawn(run(store, cfg, metrics, holder, stopped));
        Watchdog { stop, handle }
    }

    /// Stops sweeping, releases the lease, and waits for the task to end.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.handle.await {
            tracing::error!(error = %e, "watchdog task failed");
        }
    }
}

/// The lease as this process holds it, and when it was last renewed.
struct Keeper {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    holder: String,
    ttl: Duration,
    lease: Option<Lease>,
    renewed: Instant,
}

impl Keeper {
    fn renew_every(&self) -> Duration {
        (self.ttl / 3).max(Duration::from_millis(10))
    }

    /// How long until the next upkeep: a holder renews every third of the ttl; a
    /// non-holder tries every sixth, so it takes over soon after the lease lapses.
    fn next_upkeep(&self) -> Duration {
        match self.lease {
            Some(_) => self.renew_every(),
            None => (self.ttl / 6).max(Duration::from_millis(10)),
        }
    }

    /// Renews the lease if held (when `due`, or always with `force`), or tries to take it.
    /// Returns true when it was just taken.
    async fn upkeep(&mut self, force: bool) -> bool {
        let taken = match self.lease.take() {
            Some(l) if !force && self.renewed.elapsed() < self.renew_every() => {
                self.lease = Some(l);
                false
            }
            Some(l) => {
                match self.store.renew_lease(&l, self.ttl).await {
                    Ok(Some(l)) => {
                        self.lease = Some(l);
                        self.renewed = Instant::now();
                    }
                    Ok(None) => {
                        tracing::warn!(holder = %self.holder, token = l.token, "watchdog lease lost; this process stops sweeping");
                    }
                    // Keep it: the store refuses fenced writes if it lapsed meanwhile.
                    Err(e) => {
                        tracing::warn!(error = %traceway_store::ErrorChain(&e), "watchdog lease renewal failed");
                        self.lease = Some(l);
                    }
                }
                false
            }
            None => match self
                .store
                .try_acquire_lease(WATCHDOG_LEASE, &self.holder, self.ttl)
                .await
            {
                Ok(Some(l)) => {
                    tracing::info!(holder = %self.holder, token = l.token, "watchdog lease acquired; this process sweeps");
                    self.metrics.lease_acquired.add(1);
                    self.lease = Some(l);
                    self.renewed = Instant::now();
                    true
                }
                Ok(None) => false,
                Err(e) => {
                    tracing::warn!(error = %traceway_store::ErrorChain(&e), "watchdog lease acquisition failed");
                    false
                }
            },
        };
        self.metrics.set_leader(self.lease.is_some());
        taken
    }

    fn lost(&mut self) {
        if let Some(l) = self.lease.take() {
            tracing::warn!(holder = %self.holder, token = l.token, "watchdog lease lost; this process stops sweeping");
        }
        self.metrics.set_leader(false);
    }
}

async fn run(
    store: Arc<dyn Store>,
    cfg: Lifecycle,
    metrics: Arc<Metrics>,
    holder: String,
    mut stopped: watch::Receiver<bool>,
) {
    let mut keeper = Keeper {
        store: store.clone(),
        metrics: metrics.clone(),
        holder,
        ttl: cfg.lease_ttl,
        lease: None,
        renewed: Instant::now(),
    };
    let mut next_sweep = Instant::now();
    loop {
        if keeper.upkeep(false).await {
            // Just took over: sweep now rather than an interval later.
            next_sweep = Instant::now();
        }
        if keeper.lease.is_some() && Instant::now() >= next_sweep {
            match sweep(&mut keeper, &cfg, &stopped).await {
                Ok(()) => {}
                Err(SweepStop::LeaseLost) => {
                    metrics.sweep_errors.add(1);
                    keeper.lost();
                }
                Err(SweepStop::Store(e)) => {
                    metrics.sweep_errors.add(1);
                    tracing::warn!(error = %ErrorChain(&e), "watchdog sweep failed; retrying at the next interval");
                }
            }
            next_sweep = Instant::now() + cfg.sweep_interval;
        }
        let mut wake = Instant::now() + keeper.next_upkeep();
        if keeper.lease.is_some() {
            wake = wake.min(next_sweep);
        }
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = stopped.changed() => break,
        }
        if *stopped.borrow() {
            break;
        }
    }
    if let Some(l) = keeper.lease.take() {
        match store.release_lease(&l).await {
            Ok(_) => tracing::info!(token = l.token, "watchdog lease released"),
            Err(e) => tracing::warn!(error = %ErrorChain(&e), "watchdog lease release failed"),
        }
    }
    metrics.set_leader(false);
}

/// Why a sweep stopped before its end.
enum SweepStop {
    /// The lease is gone: the store refused the fence, or the upkeep between batches lost
    /// it.
    LeaseLost,
    /// The store failed.
    Store(LifecycleError),
}

impl From<LifecycleError> for SweepStop {
    fn from(e: LifecycleError) -> SweepStop {
        match e {
            LifecycleError::LeaseLost(_) => SweepStop::LeaseLost,
            e => SweepStop::Store(e),
        }
    }
}

/// One sweep: orphans in batches, then expired data in batches, renewing the lease between
/// batches when due and stopping early at shutdown.
async fn sweep(
    keeper: &mut Keeper,
    cfg: &Lifecycle,
    stopped: &watch::Receiver<bool>,
) -> Result<(), SweepStop> {
    let started = Instant::now();
    let store = keeper.store.clone();
    let metrics = keeper.metrics.clone();
    let mut orphaned = 0u64;
    loop {
        let Some(lease) = keeper.lease.clone() else {
            return Err(SweepStop::LeaseLost);
        };
        let batch = store
            .sweep_orphans(&lease, cfg.orphan_after, cfg.sweep_batch)
            .await?;
        for o in &batch {
            let age_s = o.idle.as_secs();
            tracing::warn!(trace_id = %o.trace_id, tenant = %o.tenant, age_s, "trace orphaned");
        }
        orphaned += batch.len() as u64;
        metrics.orphaned.add(batch.len() as u64);
        if batch.len() < cfg.sweep_batch as usize || *stopped.borrow() {
            break;
        }
        keeper.upkeep(false).await;
    }
    let (mut traces, mut events) = (0u64, 0u64);
    loop {
        let Some(lease) = keeper.lease.clone() else {
            return Err(SweepStop::LeaseLost);
        };
        let p = store.purge_expired(&lease, cfg.purge_batch).await?;
        traces += p.traces;
        events += p.events;
        metrics.purged_traces.add(p.traces);
        metrics.purged_events.add(p.events);
        if !p.more || *stopped.borrow() {
            break;
        }
        keeper.upkeep(false).await;
        // Each batch is its own write; let others' writes in between.
        tokio::task::yield_now().await;
    }
    let took = started.elapsed();
    metrics.sweeps.add(1);
    metrics.sweep_duration.observe(took);
    let duration_ms = took.as_millis() as u64;
    if orphaned + traces + events > 0 {
        tracing::info!(
            orphaned,
            purged_traces = traces,
            purged_events = events,
            duration_ms,
            "watchdog sweep"
        );
    } else {
        tracing::debug!(duration_ms, "watchdog sweep found nothing");
    }
    Ok(())
}
