//! Storage for Traceway: the [`Store`] contract that handlers see, its backends, and the
//! conformance suite every backend must pass.
//!
//! Backends: [`sqlite::SqliteStore`] (embedded, the default) and [`redis::RedisStore`]
//! (shared by many replicas, standalone or Cluster); both run the same conformance tests
//! (the `conformance` module, behind the `testsuite` feature).
//!
//! The rules of a write live once, in the write model (`write`): a backend loads a trace,
//! hands it to the model and persists the changes it returns.

#![deny(missing_docs)]

pub mod analysed;
pub mod clock;
#[cfg(feature = "testsuite")]
pub mod conformance;
mod contract;
mod duration_index;
mod error;
pub mod hub;
mod keys;
pub mod redis;
mod shared;
pub mod sqlite;
mod workflows;
mod write;

pub use analysed::{read_events_paged, AnalysedStore, AnalysisSettings};
pub use clock::{Clock, ManualClock, SystemClock};
pub use contract::*;
pub use error::{
    BackendError, Cause, ErrorChain, ErrorKind, KeyError, LeaseLost, LifecycleError, OpenError,
    StoreFailure, TraceError, WorkflowError,
};
pub use hub::{InProcessHub, Lagged, Scope, Subscription, TraceMeta};
pub use keys::{ApiKey, ApiKeys, ApiKeysLayer, StoredKey, MAX_KEYS_PER_TENANT};
pub use workflows::*;
pub use write::{
    MAX_PENDING_FILLS_PER_TRACE, MAX_PENDING_FILL_BYTES_PER_TRACE, ORPHANED_AT_KEY, RESUMED_REASON,
};

/// The contract's traits, for `use traceway_store::prelude::*` where a `dyn Store` is
/// called (its methods belong to the five concerns).
pub mod prelude {
    pub use crate::{
        ApiKeys, Leases, Lifecycle, LiveFeed, Store, StoreFailure, Traces, WorkflowContexts,
    };
}
