//! The Traceway client: a trace id made at ingress and carried to egress, a tracer for
//! agent steps that shows each step the moment it starts, tower middleware, and
//! completion with trace.
//!
//! # Quick start
//!
//! ```no_run
//! use traceway::{SpanKind, Tracer, TraceLayer};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // One tracer per process; it exports in the background and never blocks.
//! let tracer = Tracer::builder()
//!     .endpoint("http://127.0.0.1:4318")
//!     .service("support-agent")
//!     .build()?;
//!
//! // An agent run: a new trace with a UUIDv7 id (or a child of the current span).
//! let run = tracer.agent("support-agent").input("where is my order?").start();
//! run.in_scope(async {
//!     // Steps started inside nest under `run`, across `.await`s.
//!     let mut docs = tracer.retrieval("search_policies").query("refund policy").start();
//!     docs.add_document("policy-7", 0.92, Some("Refunds within 30 days".into()));
//!     docs.end();
//!
//!     let mut call = tracer.tool("get_order").arguments(serde_json::json!({"id": 42})).start();
//!     call.set_result(serde_json::json!({"status": "shipped"}));
//!     call.end();
//!
//!     let mut llm = tracer
//!         .llm("answer")
//!         .provider("openai")
//!         .model("gpt-4o-mini")
//!         .message("user", "where is my order?")
//!         .start();
//!     llm.set_tokens(412, 58);
//!     llm.add_output_message("assistant", "It shipped yesterday.");
//!     llm.end(); // dropped without end(), a step ends as an error
//! })
//! .await;
//! run.end();
//!
//! // A web service: every request gets its trace (continuing an incoming traceparent),
//! // `traceresponse` and `x-trace-id` in the answer, and `?return_trace=compact` returns
//! // the request's steps inside its JSON.
//! let app: axum::Router = axum::Router::new()
//!     .route("/ask", axum::routing::post(|| async { axum::Json(serde_json::json!({"ok": true})) }))
//!     .layer(TraceLayer::new(tracer.clone()).root_kind(SpanKind::Chain));
//!
//! // Calls to other services carry the context (and bring back their steps).
//! let answer = traceway::client::send(reqwest::Client::new().post("http://agent/answer")).await?;
//!
//! // At shutdown: send what is queued, within a deadline.
//! tracer.shutdown(std::time::Duration::from_secs(5)).await;
//! # let _ = (app, answer); Ok(()) }
//! ```
//!
//! # How it behaves
//!
//! - Recording a step is a push onto a bounded queue; the exporter task sends batches to
//!   the native API (`span_started` when a step starts, so it shows live; `span_ended`
//!   when it ends), one request per trace per batch that also creates and ends the trace,
//!   with up to [`TracerBuilder::max_in_flight`] requests at once. When the queue is full
//!   the record is dropped and counted ([`Tracer::metrics`]); 429 and 503 are retried
//!   with backoff, honouring `Retry-After`. Design:
//!   `docs/adr/018-client-tracer-and-exporter.md`, `docs/adr/030-exporter-keeps-up.md`.
//! - The current span is task-local ([`current`], [`Span::in_scope`],
//!   [`SpanContext::scope`]). It holds across `.await`; a spawned task gets it only when
//!   handed over ([`spawn`]).
//! - W3C Trace Context: [`propagation::extract`] and [`propagation::inject`] over
//!   `http::HeaderMap`; the parsing is `traceway_core::trace_context`.
//! - Completion with trace: see [`TraceLayer`] and `docs/adr/019-completion-with-trace.md`.
//! - OpenTelemetry (feature `otel`): see the `otel` module.
#![deny(missing_docs)]

pub mod client;
pub mod completion;
mod context;
mod exporter;
mod layer;
#[cfg(feature = "otel")]
pub mod otel;
pub mod propagation;
mod span;
mod tracer;
mod wire;
pub mod workflow;

pub use context::{current, spawn, SpanContext};
pub use layer::{BoxError, TraceBody, TraceLayer, TraceService, TRACE_ID_HEADER};
pub use span::{AttrValue, Span, SpanBuilder};
pub use tracer::{BuildError, ExporterMetrics, Tracer, TracerBuilder};

pub use traceway_core::trace_context::{TraceFlags, TraceParent, TraceState};
pub use traceway_core::{Level, Severity, SpanId, SpanKind, State, Timestamp, TraceId};

/// The data model the server reads and writes (`traceway_core`'s), for code that reads
/// Traceway's JSON with the same types.
pub mod model {
    pub use traceway_core::model::*;
}

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
