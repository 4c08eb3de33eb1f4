//! Traceway's core: identifiers, the data model, levels and the pure functions that
//! turn what clients send into what is stored. Nothing here does I/O, so everything is
//! testable without a runtime.
#![deny(missing_docs)]

pub mod analysis;
pub mod apikey;
pub mod format;
pub mod id;
mod index;
pub mod ingest;
pub mod level;
pub mod model;
#[cfg(feature = "openapi")]
pub mod openapi;
#[cfg(feature = "otlp")]
pub mod otlp;
pub mod pricing;
pub mod time;
pub mod trace_context;
pub mod tree;
pub mod workflow;

pub use apikey::{ApiKeyError, Credentials, KeyScope, KeyScopes};
pub use id::{IdError, SpanId, TraceId};
pub use ingest::{
    fill_messages, EventInput, FillMode, MessageFill, NewTrace, SpanChange, SpanInput, TracePatch,
};
pub use level::{strip_event_body, strip_span, DEFAULT_MAX_CONTENT_BYTES};
pub use model::*;
pub use time::Timestamp;
pub use tree::{span_tree, SpanNode};
