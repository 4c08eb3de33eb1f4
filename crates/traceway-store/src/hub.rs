//! Live fan-out of committed events to subscribers (SSE clients, `traceway tail`).
//!
//! The contract: a backend publishes every event after its write commits, never before,
//! in `seq` order per trace. Each subscriber has a bounded buffer; one that falls behind is
//! disconnected with the `seq` to resume from, and never slows ingest or other subscribers
//! (publishing never waits). [`InProcessHub`] implements it within one process; the Redis
//! backend feeds one in every replica from a Redis channel (ADR 010), behind the same
//! [`Subscription`] type.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use traceway_core::{Event, EventType, State, TraceId};

/// What a subscriber wants.
#[derive(Debug, Clone, PartialEq)]
pub enum Scope {
    /// Every event of one trace.
    Trace(TraceId),
    /// The tenant's traces: trace-level events (started, state changed, error, ended), or
    /// every event with `all_events`; optionally only one agent or one state.
    Tenant {
        /// Every event, not only trace-level ones.
        all_events: bool,
        /// Only traces of this agent.
        agent_id: Option<String>,
        /// Only events of traces in this state (after the event).
        state: Option<State>,
    },
}

/// What a published event carries besides itself, for tenant-wide filters.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TraceMeta {
    /// The trace's agent.
    pub agent_id: Option<String>,
    /// The trace's state after the event.
    pub state: Option<State>,
}

/// A live feed of events. The channel closes when the subscriber lagged (see
/// [`Subscription::lagged`]) or the hub shut down.
pub struct Subscription {
    /// The events, in `seq` order per trace.
    pub events: mpsc::Receiver<Arc<Event>>,
    lag: Arc<Lag>,
    hub: Arc<Inner>,
    id: u64,
}

#[derive(Default)]
struct Lag {
    /// 0 while in step; otherwise the `seq` of the first event that could not be
    /// delivered (seqs start at 1).
    first_missed: AtomicU64,
    trace: Mutex<Option<TraceId>>,
}

/// Where a lagged subscriber must resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lagged {
    /// The trace whose event could not be delivered.
    pub trace_id: TraceId,
    /// The last `seq` of that trace the subscriber was sent; resume after it.
    pub resume_after_seq: u64,
}

impl Subscription {
    /// Set once the subscriber fell behind and was dropped by the hub.
    pub fn lagged(&self) -> Option<Lagged> {
        let v = self.lag.first_missed.load(Ordering::SeqCst);
        let trace_id = (*self.lag.trace.lock().unwrap_or_else(|e| e.into_inner()))?;
        (v > 0).then(|| Lagged {
            trace_id,
            resume_after_seq: v - 1,
        })
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.remove(self.id);
    }
}

struct Subscriber {
    scope: Scope,
    tx: mpsc::Sender<Arc<Event>>,
    lag: Arc<Lag>,
}

type Subscribers = HashMap<u64, Subscriber>;

/// Subscribers indexed so that a publish touches only those it may deliver to: the
/// followers of that trace and the tenant-wide subscribers of that tenant. Publishing runs
/// on the store's writer thread, so it must not scan every connection.
#[derive(Default)]
struct Registry {
    by_trace: HashMap<(String, TraceId), Subscribers>,
    by_tenant: HashMap<String, Subscribers>,
    /// Where each subscriber is filed, for removal.
    slots: HashMap<u64, (String, Option<TraceId>)>,
}

impl Registry {
    fn insert(&mut self, id: u64, tenant: &str, sub: Subscriber) {
        let trace = match &sub.scope {
            Scope::Trace(t) => Some(*t),
            Scope::Tenant { .. } => None,
        };
        self.slots.insert(id, (tenant.to_string(), trace));
        match trace {
            Some(t) => self
                .by_trace
                .entry((tenant.to_string(), t))
                .or_default()
                .insert(id, sub),
            None => self
                .by_tenant
                .entry(tenant.to_string())
                .or_default()
                .insert(id, sub),
        };
    }

    fn remove(&mut self, id: u64) {
        let Some((tenant, trace)) = self.slots.remove(&id) else {
            return;
        };
        match trace {
            Some(t) => {
                let key = (tenant, t);
                if let Some(subs) = self.by_trace.get_mut(&key) {
                    subs.remove(&id);
                    if subs.is_empty() {
                        self.by_trace.remove(&key);
                    }
                }
            }
            None => {
                if let Some(subs) = self.by_tenant.get_mut(&tenant) {
                    subs.remove(&id);
                    if subs.is_empty() {
                        self.by_tenant.remove(&tenant);
                    }
                }
            }
        }
    }
}

#[derive(Default)]
struct Inner {
    registry: Mutex<Registry>,
    next_id: AtomicU64,
    count: AtomicUsize,
}

impl Inner {
    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remove(&self, id: u64) {
        let mut reg = self.registry();
        reg.remove(id);
        self.count.store(reg.slots.len(), Ordering::Relaxed);
    }
}

/// The in-process hub.
#[derive(Clone)]
pub struct InProcessHub {
    inner: Arc<Inner>,
    buffer: usize,
}

fn is_trace_level(t: EventType) -> bool {
    matches!(
        t,
        EventType::TraceStarted
            | EventType::StateChanged
            | EventType::Error
            | EventType::TraceEnded
    )
}

/// Offers `e` to each subscriber that wants it; returns those to drop (full or gone).
fn offer(subs: &Subscribers, meta: &TraceMeta, e: &Arc<Event>, dropped: &mut Vec<u64>) {
    for (id, s) in subs {
        if !wants(&s.scope, meta, e) || dropped.contains(id) {
            continue;
        }
        match s.tx.try_send(e.clone()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                *s.lag.trace.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.trace_id);
                s.lag.first_missed.store(e.seq, Ordering::SeqCst);
                dropped.push(*id);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => dropped.push(*id),
        }
    }
}

impl InProcessHub {
    /// A hub whose subscribers each buffer up to `buffer` events.
    pub fn new(buffer: usize) -> InProcessHub {
        InProcessHub {
            inner: Arc::default(),
            buffer: buffer.max(1),
        }
    }

    /// Subscribes to a tenant's events.
    pub fn subscribe(&self, tenant: &str, scope: Scope) -> Subscription {
        let (tx, rx) = mpsc::channel(self.buffer);
        let lag = Arc::new(Lag::default());
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let mut reg = self.inner.registry();
        reg.insert(
            id,
            tenant,
            Subscriber {
                scope,
                tx,
                lag: lag.clone(),
            },
        );
        self.inner.count.store(reg.slots.len(), Ordering::Relaxed);
        Subscription {
            events: rx,
            lag,
            hub: self.inner.clone(),
            id,
        }
    }

    /// How many subscribers are connected.
    pub fn subscriber_count(&self) -> usize {
        self.inner.count.load(Ordering::Relaxed)
    }

    /// Disconnects every subscriber (their channels close). The Redis backend calls it when
    /// its live channel dropped: events published meanwhile never reached this process,
    /// so its subscribers must reconnect and replay from the store (exact resume).
    pub fn close_all(&self) {
        let mut reg = self.inner.registry();
        *reg = Registry::default();
        self.inner.count.store(0, Ordering::Relaxed);
    }

    /// Delivers committed events. Never waits: a subscriber whose buffer is full is
    /// dropped and told where to resume; it gets nothing after the first missed event.
    pub fn publish(&self, tenant: &str, meta: &TraceMeta, events: &[Event]) {
        if events.is_empty() || self.inner.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut reg = self.inner.registry();
        let mut dropped = Vec::new();
        let key = |e: &Event| (tenant.to_string(), e.trace_id);
        for e in events {
            let followers = reg.by_trace.get(&key(e));
            let tenant_wide = reg.by_tenant.get(tenant);
            if followers.is_none() && tenant_wide.is_none() {
                continue;
            }
            let e = Arc::new(e.clone());
            for subs in [followers, tenant_wide].into_iter().flatten() {
                offer(subs, meta, &e, &mut dropped);
            }
        }
        for id in dropped {
            reg.remove(id);
        }
        self.inner.count.store(reg.slots.len(), Ordering::Relaxed);
    }
}

fn wants(scope: &Scope, meta: &TraceMeta, e: &Event) -> bool {
    match scope {
        Scope::Trace(id) => e.trace_id == *id,
        Scope::Tenant {
            all_events,
            agent_id,
            state,
        } => {
            (*all_events || is_trace_level(e.body.event_type()))
                && agent_id
                    .as_ref()
                    .is_none_or(|a| meta.agent_id.as_ref() == Some(a))
                && state
                    .as_ref()
                    .is_none_or(|s| meta.state.as_ref() == Some(s))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use traceway_core::{EventBody, LogRecord, Timestamp};

    fn ev(trace: TraceId, seq: u64) -> Event {
        Event {
            trace_id: trace,
            seq,
            time: Timestamp::from_unix_millis(0),
            component_id: None,
            body: EventBody::Log(LogRecord {
                message: format!("{seq}"),
                ..Default::default()
            }),
        }
    }

    #[tokio::test]
    async fn a_full_subscriber_is_dropped_with_its_resume_point_and_others_continue() {
        let hub = InProcessHub::new(4);
        let t = TraceId::new_v7();
        let mut slow = hub.subscribe("a", Scope::Trace(t));
        let mut fast = hub.subscribe("a", Scope::Trace(t));
        let other_tenant = hub.subscribe("b", Scope::Trace(t));
        assert_eq!(hub.subscriber_count(), 3);
        let meta = TraceMeta::default();
        for seq in 1..=10 {
            hub.publish("a", &meta, &[ev(t, seq)]);
            if let Ok(e) = fast.events.try_recv() {
                assert_eq!(e.seq, seq);
            }
        }
        // The slow one got 1..=4, then was dropped at 5: resume after 4.
        let mut got = Vec::new();
        while let Some(e) = slow.events.recv().await {
            got.push(e.seq);
        }
        assert_eq!(got, vec![1, 2, 3, 4]);
        assert_eq!(
            slow.lagged(),
            Some(Lagged {
                trace_id: t,
                resume_after_seq: 4
            })
        );
        assert_eq!(fast.lagged(), None);
        assert_eq!(
            hub.subscriber_count(),
            2,
            "the lagging subscriber is released"
        );
        drop(other_tenant);
        drop(fast);
        assert_eq!(
            hub.subscriber_count(),
            0,
            "dropping a subscription releases it"
        );
    }

    #[tokio::test]
    async fn tenant_scope_filters_trace_level_agent_and_state() {
        let hub = InProcessHub::new(16);
        let t = TraceId::new_v7();
        let mut levels = hub.subscribe(
            "a",
            Scope::Tenant {
                all_events: false,
                agent_id: None,
                state: None,
            },
        );
        let mut agent = hub.subscribe(
            "a",
            Scope::Tenant {
                all_events: true,
                agent_id: Some("x".into()),
                state: None,
            },
        );
        let meta = TraceMeta {
            agent_id: Some("y".into()),
            state: Some(State::Running),
        };
        let log = ev(t, 1);
        hub.publish("a", &meta, &[log]);
        assert!(
            levels.events.try_recv().is_err(),
            "a log is not trace-level"
        );
        assert!(agent.events.try_recv().is_err(), "other agent");
        let meta_x = TraceMeta {
            agent_id: Some("x".into()),
            state: Some(State::Running),
        };
        hub.publish("a", &meta_x, &[ev(t, 2)]);
        assert_eq!(agent.events.try_recv().expect("for agent x").seq, 2);
    }
}
