//! The conformance suite: the behaviour every backend must show, written once against the
//! [`Store`] contract. A backend runs it with [`conformance_suite!`], giving a function that
//! makes a fresh, isolated store on a [`ManualClock`]:
//!
//! ```ignore
//! traceway_store::conformance_suite!(make_sqlite);
//! ```
//!
//! Each function panics (fails the test) on a contract violation. One file per area
//! (`traces`, `reads`, `live`, `lifecycle`, `leases`); the list in `conformance_suite!` is
//! the one registration, and a unit test checks it against the functions of every file.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use traceway_core::{
    EventBody, EventInput, EventType, Level, LlmDetails, LogRecord, Message, NewTrace, SpanId,
    SpanInput, SpanKind, SpanStatus, State, StatusCode, Timestamp, TraceId, TracePatch,
};

use crate::{
    AppendRequest, EventFilter, Lease, LifecycleError, ManualClock, Orphaned, PageRequest, Store,
    TraceError, TraceFilter, ORPHANED_REASON, WATCHDOG_LEASE,
};

mod analysis;
mod fills;
mod filters;
mod keys;
mod leases;
mod lifecycle;
mod live;
mod reads;
mod traces;
mod workflows;

pub use self::analysis::*;
pub use self::fills::*;
pub use self::filters::*;
pub use self::keys::*;
pub use self::leases::*;
pub use self::lifecycle::*;
pub use self::live::*;
pub use self::reads::*;
pub use self::traces::*;
pub use self::workflows::*;

/// A store under test, with the clock it reads and whatever keeps its resources alive.
pub struct Harness {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Its clock.
    pub clock: ManualClock,
    /// Dropped after the test (a temporary directory, a key prefix to clean).
    pub guard: Box<dyn Any + Send>,
}

/// Where the tests' clock starts: 2026-01-01T00:00:00Z.
pub fn start_time() -> Timestamp {
    Timestamp::from_unix_millis(1_767_225_600_000)
}

/// Generates one `#[tokio::test]` per conformance test, each on a fresh store from
/// `$make: async fn(ManualClock) -> Harness`.
#[macro_export]
macro_rules! conformance_suite {
    ($make:path) => {
        $crate::conformance_suite!(@each $make;
            create_then_get,
            create_with_taken_id_conflicts,
            tenants_are_isolated,
            concurrent_appends_get_gapless_seqs,
            retried_batches_are_stored_once,
            started_span_runs_then_ends,
            state_machine_is_enforced,
            late_spans_after_the_end_are_kept,
            append_to_unknown_trace,
            an_append_can_end_its_trace_and_fill_what_was_unknown,
            listing_is_newest_first_with_cursor_and_pages,
            listing_filters,
            has_error_listing_pages_and_follows_changes,
            min_duration_listing_pages_and_follows_changes,
            expired_traces_are_never_returned,
            delete_and_delete_ended_before,
            level_is_applied_at_capture,
            cost_is_computed_at_ingest_when_a_span_reports_none,
            event_filters,
            event_reads_by_after_seq_and_limit_are_exact_at_commit_boundaries,
            span_pages_read_a_trace_back_completely,
            a_page_that_holds_the_last_span_events_has_no_cursor,
            health_is_ok,
            live_events_follow_commits_in_order,
            resume_has_no_gap_and_no_duplicate_under_concurrent_writers,
            a_stalled_subscriber_is_dropped_with_where_to_resume,
            idle_traces_are_orphaned_after_the_threshold_and_not_before,
            recent_activity_keeps_a_trace_alive,
            terminal_traces_are_untouched_by_the_sweep,
            failsafe_expiry_needs_no_watchdog,
            purge_deletes_expired_data_in_bounded_batches,
            stored_bytes_follow_writes_deletes_and_purges_per_tenant,
            lease_is_exclusive_renewable_and_fenced,
            workflow_context_round_trip_per_tenant,
            workflow_context_ttl_is_refreshed_by_each_put,
            workflow_stats_count_and_page_by_cursor,
            workflow_context_input_is_validated,
            an_orphaned_trace_reopens_when_its_workflow_resumes,
            key_is_found_by_id_with_its_tenant_and_hash,
            keys_are_listed_per_tenant_oldest_first,
            revocation_is_per_tenant_and_kept,
            last_use_moves_forward_only,
            message_fills_wait_for_a_span_that_arrives_later,
            message_fills_land_on_running_and_ended_spans_once,
            pending_message_fills_are_bounded_per_trace,
            an_analysis_digest_is_kept_on_the_row_only_for_the_state_it_describes,
            an_ended_trace_gets_its_digest_from_the_decorator,
            traces_ending_together_all_get_their_digests,
            digests_are_read_and_written_in_batches_per_key
        );
    };
    (@each $make:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let h = $make($crate::ManualClock::new($crate::conformance::start_time())).await;
                $crate::conformance::$name(&h).await;
                h.store.shutdown().await;
            }
        )*
    };
}

const T: &str = "tenant-a";

fn sid(n: u64) -> SpanId {
    SpanId::from_u64(n).expect("non-zero")
}

async fn new_trace(h: &Harness, tenant: &str, name: &str) -> TraceId {
    let (t, _) = h
        .store
        .create_trace(
            tenant,
            NewTrace {
                name: Some(name.into()),
                ..Default::default()
            },
        )
        .await
        .expect("create");
    t.trace_id
}

fn started(id: u64, parent: Option<u64>, kind: SpanKind, name: &str) -> EventInput {
    EventInput::SpanStarted {
        span: SpanInput {
            parent_span_id: parent.map(sid),
            kind: Some(kind),
            name: Some(name.into()),
            ..SpanInput::new(sid(id))
        },
    }
}

fn ended(id: u64) -> EventInput {
    EventInput::SpanEnded {
        span: SpanInput {
            status: Some(SpanStatus {
                code: StatusCode::Ok,
                message: None,
            }),
            ..SpanInput::new(sid(id))
        },
    }
}

fn llm_ended(id: u64, input_tokens: u64, output_tokens: u64) -> EventInput {
    EventInput::SpanEnded {
        span: SpanInput {
            kind: Some(SpanKind::Llm),
            name: Some("chat".into()),
            llm: Some(LlmDetails {
                model: Some("gpt-4o".into()),
                input_tokens: Some(input_tokens),
                output_tokens: Some(output_tokens),
                input_messages: vec![Message {
                    role: "user".into(),
                    content: Some("what is 2+2?".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..SpanInput::new(sid(id))
        },
    }
}

async fn append(
    h: &Harness,
    tenant: &str,
    id: TraceId,
    events: Vec<EventInput>,
) -> Result<crate::AppendOutcome, TraceError> {
    h.store
        .append(AppendRequest {
            fills: Vec::new(),
            tenant: tenant.into(),
            trace_id: id,
            create_if_missing: None,
            events,
            end: None,
        })
        .await
}

fn all_events() -> EventFilter {
    EventFilter {
        limit: 10_000,
        ..Default::default()
    }
}

async fn seqs(h: &Harness, tenant: &str, id: TraceId) -> Vec<u64> {
    let events = h
        .store
        .read_events(tenant, id, &all_events())
        .await
        .expect("read")
        .expect("exists");
    events.iter().map(|e| e.seq).collect()
}

async fn listed(h: &Harness) -> usize {
    h.store
        .list_traces(
            T,
            &TraceFilter::default(),
            &PageRequest {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .expect("list")
        .items
        .len()
}

impl ManualClock {
    /// Now, as the store under test sees it.
    pub fn now_for_tests(&self) -> Timestamp {
        crate::Clock::now(self)
    }
}

const MINUTE: Duration = Duration::from_secs(60);
const ORPHAN_AFTER: Duration = Duration::from_secs(30 * 60);
const LEASE_TTL: Duration = Duration::from_secs(30);

/// Takes (or extends) the watchdog lease for `holder`; the tests move the clock by hours,
/// so a lease taken earlier has usually lapsed and this hands out a new token.
async fn lease(h: &Harness, holder: &str) -> Lease {
    h.store
        .try_acquire_lease(WATCHDOG_LEASE, holder, LEASE_TTL)
        .await
        .expect("acquire")
        .expect("the lease is free")
}

async fn sweep(h: &Harness) -> Vec<Orphaned> {
    let l = lease(h, "sweeper").await;
    h.store
        .sweep_orphans(&l, ORPHAN_AFTER, 100)
        .await
        .expect("sweep")
}

async fn state_of(h: &Harness, id: TraceId) -> State {
    h.store
        .get_trace(T, id)
        .await
        .expect("get")
        .expect("exists")
        .state
}

async fn state_of_tenant(h: &Harness, tenant: &str, id: TraceId) -> State {
    h.store
        .get_trace(tenant, id)
        .await
        .expect("get")
        .expect("exists")
        .state
}

/// The counts a write reports for events of these types.
fn counts(types: &[EventType]) -> crate::EventCounts {
    let mut c = crate::EventCounts::default();
    for t in types {
        c.add(*t);
    }
    c
}

#[cfg(test)]
mod tests {
    /// Every conformance test is a `pub async fn name(h: &Harness)` of this file; the list
    /// in `conformance_suite!` is the one place that registers them. A test missing from
    /// it (or listed twice) would never run, or run twice, on every backend: this fails
    /// first.
    #[test]
    fn every_conformance_test_is_registered_once() {
        let src = [
            include_str!("mod.rs"),
            include_str!("traces.rs"),
            include_str!("reads.rs"),
            include_str!("live.rs"),
            include_str!("lifecycle.rs"),
            include_str!("leases.rs"),
            include_str!("workflows.rs"),
            include_str!("keys.rs"),
            include_str!("fills.rs"),
            include_str!("filters.rs"),
            include_str!("analysis.rs"),
        ]
        .concat();
        let defined: Vec<&str> = src
            .lines()
            .filter_map(|l| l.strip_prefix("pub async fn "))
            .filter(|l| l.contains("(h: &Harness)"))
            .filter_map(|l| l.split('(').next())
            .collect();
        let start = src.find("@each $make;").expect("the list");
        let end = start + src[start..].find(");").expect("its end");
        let listed: Vec<&str> = src[start + "@each $make;".len()..end]
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect();
        assert!(!defined.is_empty());
        for name in &defined {
            let n = listed.iter().filter(|l| *l == name).count();
            assert_eq!(n, 1, "{name} is registered {n} times in conformance_suite!");
        }
        for name in &listed {
            assert!(defined.contains(name), "{name} is listed but not defined");
        }
    }
}
