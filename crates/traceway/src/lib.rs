//! The Traceway client crate.
//!
//! Today it re-exports the ids and model types of `traceway-core`, so a service can make
//! UUIDv7 trace ids and read Traceway's JSON with the same types the server uses. It will
//! hold:
//!
//! - W3C `traceparent`/`tracestate` propagation (inject and extract);
//! - a tracer for agent steps (LLM calls, tool calls, retrievals, components) that exports
//!   to a Traceway server;
//! - durable storage of a workflow instance's trace context, so a resumed workflow
//!   continues its original trace;
//! - tower middleware that gives every request a trace id at ingress and can return the
//!   finished trace inside the response.
#![deny(missing_docs)]

pub use traceway_core::{
    EventType, Level, Span, SpanId, SpanKind, State, Timestamp, Trace, TraceId,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_trace_id_is_a_valid_w3c_trace_id() {
        let id = TraceId::new_v7().to_string();
        assert_eq!(id.len(), 32);
        assert!(id
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(id, "0".repeat(32));
    }
}
