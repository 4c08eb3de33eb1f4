//! [`AnalysedStore`]: the decorator that keeps each ended trace's analysis digest on its
//! row (ADR 028), so that the analysis across traces merges rows and never reads spans.
//!
//! When a write leaves a trace terminal (an append that ended it or added to it after its
//! end, a patch to a terminal state, the orphan sweep), the trace is queued. A worker task
//! takes the queue in order, waits until `delay` after the write (late spans of other
//! services arrive in that time), reads the trace with its spans (one read) and its error
//! events, runs
//! [`traceway_core::analysis::analyze`] and stores [`digest`] of it with
//! [`Traces::put_analysis`], which refuses it if the trace changed since it was read (the
//! write that changed it queued the trace again). The queue is bounded: when it is full
//! the trace is left without a digest and counted ([`AnalysedStore::dropped`]); the
//! analysis across traces reports traces without one. A trace already waiting is not
//! queued twice. Jobs are lost on restart, with the same consequence.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::time::Instant;
use traceway_core::analysis::{analyze, digest, AnalysisOptions};
use traceway_core::{Event, EventType, Timestamp, Trace, TraceId, TracePatch};

use crate::{
    AppendOutcome, AppendRequest, Clock, Decorates, DigestInput, EventCounts, EventFilter, Lease,
    LifecycleError, LifecycleLayer, Orphaned, Store, TraceError, TracesLayer, MAX_EVENTS_PAGE,
};

/// Error events read for one digest (their types and messages make the error groups).
pub const MAX_DIGEST_ERROR_EVENTS: usize = 100_000;

/// Most traces whose digests are read, made and written together: one read and one write
/// for all of them, instead of a reader and a writer round trip each.
pub const DIGEST_BATCH: usize = 64;

/// Settings of [`AnalysedStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnalysisSettings {
    /// How long after the write that left a trace terminal its digest is made.
    pub delay: Duration,
    /// Traces that may wait for their digest; past it they get none.
    pub queue: usize,
}

impl Default for AnalysisSettings {
    fn default() -> AnalysisSettings {
        AnalysisSettings {
            delay: Duration::from_secs(5),
            queue: 4096,
        }
    }
}

struct Job {
    tenant: String,
    id: TraceId,
    due: Instant,
}

type Pending = Arc<Mutex<HashSet<(String, TraceId)>>>;

/// The store with digests kept; everything else passes through.
pub struct AnalysedStore {
    inner: Arc<dyn Store>,
    jobs: mpsc::Sender<Job>,
    pending: Pending,
    delay: Duration,
    dropped: Arc<AtomicU64>,
    done: Arc<AtomicU64>,
}

impl AnalysedStore {
    /// Wraps `inner` and starts the worker on the current Tokio runtime; it stops when
    /// this store is dropped.
    pub fn new(
        inner: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        settings: AnalysisSettings,
    ) -> AnalysedStore {
        let (jobs, rx) = mpsc::channel(settings.queue.max(1));
        let pending: Pending = Arc::default();
        let done = Arc::new(AtomicU64::new(0));
        tokio::spawn(work(
            inner.clone(),
            clock,
            rx,
            pending.clone(),
            done.clone(),
        ));
        AnalysedStore {
            inner,
            jobs,
            pending,
            delay: settings.delay,
            dropped: Arc::new(AtomicU64::new(0)),
            done,
        }
    }

    /// Traces left without a digest because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Digests stored so far.
    pub fn digests_stored(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    fn schedule(&self, tenant: &str, id: TraceId) {
        let key = (tenant.to_string(), id);
        {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if !p.insert(key.clone()) {
                return;
            }
        }
        let job = Job {
            tenant: key.0.clone(),
            id,
            due: Instant::now() + self.delay,
        };
        if self.jobs.try_send(job).is_err() {
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(tenant, trace_id = %id, "analysis queue full; no digest");
        }
    }
}

async fn work(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    mut rx: mpsc::Receiver<Job>,
    pending: Pending,
    done: Arc<AtomicU64>,
) {
    // The queue is in `due` order (one delay for all), so a batch is the jobs due now,
    // up to the first that is not, which starts the next batch.
    let mut next: Option<Job> = None;
    loop {
        let first = match next.take() {
            Some(j) => j,
            None => match rx.recv().await {
                Some(j) => j,
                None => return,
            },
        };
        tokio::time::sleep_until(first.due).await;
        let now = Instant::now();
        let mut batch = vec![first];
        while batch.len() < DIGEST_BATCH {
            match rx.try_recv() {
                Ok(j) if j.due <= now => batch.push(j),
                Ok(j) => {
                    next = Some(j);
                    break;
                }
                Err(_) => break,
            }
        }
        let keys: Vec<(String, TraceId)> = batch.into_iter().map(|j| (j.tenant, j.id)).collect();
        {
            let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
            for k in &keys {
                p.remove(k);
            }
        }
        match store_digests(&*store, &keys, clock.now()).await {
            Ok(stored) => {
                let n = stored.iter().filter(|s| **s).count() as u64;
                done.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::debug!(traces = keys.len(), error = %crate::ErrorChain(&e), "no digests")
            }
        }
    }
}

/// Makes and stores the digest of a terminal trace as it is now; `false` when the trace
/// is missing, not terminal, or changed while it was read. Running spans count up to the
/// trace's end.
pub async fn store_digest(
    store: &dyn Store,
    tenant: &str,
    id: TraceId,
    now: Timestamp,
) -> Result<bool, TraceError> {
    let stored = store_digests(store, &[(tenant.to_string(), id)], now).await?;
    Ok(stored.first().copied().unwrap_or(false))
}

/// [`store_digest`] of many traces: their inputs in as few reads as the store allows
/// ([`Traces::digest_inputs`], one on SQLite), their digests in one write
/// ([`Traces::put_analyses`]). The `i`-th answer is for `keys[i]`.
pub async fn store_digests(
    store: &dyn Store,
    keys: &[(String, TraceId)],
    now: Timestamp,
) -> Result<Vec<bool>, TraceError> {
    let mut out = vec![false; keys.len()];
    let mut from = 0;
    while from < keys.len() {
        let part = &keys[from..];
        let inputs = store.digest_inputs(part, MAX_DIGEST_ERROR_EVENTS).await?;
        if inputs.is_empty() {
            return Err(TraceError::Backend(crate::BackendError::internal(
                "digest_inputs answered none of a non-empty batch",
            )));
        }
        let n = inputs.len().min(part.len());
        for (i, ok) in make_and_put(store, &part[..n], inputs, now).await? {
            out[from + i] = ok;
        }
        from += n;
    }
    Ok(out)
}

/// The digests of the terminal traces among `inputs` (for `keys`), stored in one write:
/// the place in `keys` of each digest written, and whether it was stored.
async fn make_and_put(
    store: &dyn Store,
    keys: &[(String, TraceId)],
    inputs: Vec<Option<DigestInput>>,
    now: Timestamp,
) -> Result<Vec<(usize, bool)>, TraceError> {
    let mut puts = Vec::with_capacity(keys.len());
    let mut slots = Vec::with_capacity(keys.len());
    for (i, ((tenant, id), input)) in keys.iter().zip(inputs).enumerate() {
        let Some(DigestInput {
            trace,
            spans,
            errors,
        }) = input
        else {
            continue;
        };
        if !trace.state.is_terminal() {
            continue;
        }
        let at = trace.ended_at.unwrap_or(now);
        let a = analyze(&trace, &spans, &errors, at, &AnalysisOptions::default());
        puts.push((tenant.clone(), *id, digest(&a, trace.last_seq)));
        slots.push(i);
    }
    if puts.is_empty() {
        return Ok(Vec::new());
    }
    let stored = store.put_analyses(puts).await?;
    Ok(slots.into_iter().zip(stored).collect())
}

/// [`Traces::digest_inputs`] by one read of each trace and of its error events: what a
/// backend without a batched read does.
pub(crate) async fn digest_inputs_each(
    store: &dyn Store,
    keys: &[(String, TraceId)],
    max_errors: usize,
) -> Result<Vec<Option<DigestInput>>, TraceError> {
    let mut out = Vec::with_capacity(keys.len());
    let mut read = 0;
    for (tenant, id) in keys {
        if read >= crate::DIGEST_BATCH_SPANS {
            break;
        }
        let Some((trace, spans)) = store.get_trace_with_spans(tenant, *id).await? else {
            out.push(None);
            continue;
        };
        let errors = read_events_paged(
            store,
            tenant,
            *id,
            &[EventType::Error],
            Some(trace.last_seq),
            max_errors,
        )
        .await?
        .map(|(events, _)| events)
        .unwrap_or_default();
        read += spans.len();
        out.push(Some(DigestInput {
            trace,
            spans,
            errors,
        }));
    }
    Ok(out)
}

/// A trace's events of `types` (all when empty) in `seq` order, read a page of at most
/// [`MAX_EVENTS_PAGE`] at a time: at most `max`, and whether it had more. Events after
/// `upto` (a `last_seq` read before) are left out. `None` when the trace does not exist.
pub async fn read_events_paged(
    store: &dyn Store,
    tenant: &str,
    id: TraceId,
    types: &[EventType],
    upto: Option<u64>,
    max: usize,
) -> Result<Option<(Vec<Event>, bool)>, TraceError> {
    let upto = upto.unwrap_or(u64::MAX);
    let mut out: Vec<Event> = Vec::new();
    let mut after = 0;
    loop {
        // One more than `max` in all, to know whether there were more.
        let want = (max + 1 - out.len()).min(MAX_EVENTS_PAGE as usize);
        let f = EventFilter {
            types: types.to_vec(),
            after_seq: after,
            limit: want as u32,
            ..Default::default()
        };
        let Some(page) = store.read_events(tenant, id, &f).await? else {
            return Ok(if after == 0 { None } else { Some((out, false)) });
        };
        let full = page.len() >= want;
        let Some(last) = page.last().map(|e| e.seq) else {
            break;
        };
        out.extend(page.into_iter().filter(|e| e.seq <= upto));
        if !full || last >= upto || out.len() > max {
            break;
        }
        after = last;
    }
    let more = out.len() > max;
    out.truncate(max);
    Ok(Some((out, more)))
}

impl Decorates for AnalysedStore {
    fn inner(&self) -> &dyn Store {
        &*self.inner
    }
}

#[async_trait]
impl TracesLayer for AnalysedStore {
    async fn append(&self, req: AppendRequest) -> Result<AppendOutcome, TraceError> {
        let (tenant, id) = (req.tenant.clone(), req.trace_id);
        let out = self.inner.append(req).await?;
        if out.terminal && out.accepted + out.stored.get(EventType::TraceEnded) > 0 {
            self.schedule(&tenant, id);
        }
        Ok(out)
    }

    async fn update_trace(
        &self,
        tenant: &str,
        id: TraceId,
        patch: TracePatch,
    ) -> Result<(Trace, EventCounts), TraceError> {
        let (t, counts) = self.inner.update_trace(tenant, id, patch).await?;
        if counts.get(EventType::TraceEnded) > 0 {
            self.schedule(tenant, id);
        }
        Ok((t, counts))
    }
}

#[async_trait]
impl LifecycleLayer for AnalysedStore {
    async fn sweep_orphans(
        &self,
        fence: &Lease,
        orphan_after: Duration,
        limit: u32,
    ) -> Result<Vec<Orphaned>, LifecycleError> {
        let v = self.inner.sweep_orphans(fence, orphan_after, limit).await?;
        for o in &v {
            self.schedule(&o.tenant, o.trace_id);
        }
        Ok(v)
    }
}

impl crate::LeasesLayer for AnalysedStore {}
impl crate::LiveFeedLayer for AnalysedStore {}
impl crate::WorkflowContextsLayer for AnalysedStore {}
impl crate::ApiKeysLayer for AnalysedStore {}
