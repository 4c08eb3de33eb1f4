//! The current span: a task-local context that holds across `.await` and is handed to
//! spawned tasks explicitly.

use std::future::Future;
use std::sync::Arc;

use traceway_core::trace_context::{TraceFlags, TraceParent, TraceState};
use traceway_core::{SpanId, TraceId};

use crate::completion::Collector;

/// Where a span sits: its trace, its id, the W3C flags and `tracestate` it carries, and
/// (for a request that asked for its trace back) the collector its steps go to.
///
/// A context is cheap to clone (two `Arc`s at most).
#[derive(Clone, Debug)]
pub struct SpanContext {
    pub(crate) trace_id: TraceId,
    pub(crate) span_id: SpanId,
    pub(crate) flags: TraceFlags,
    pub(crate) state: Option<Arc<TraceState>>,
    pub(crate) remote: bool,
    pub(crate) collector: Option<Arc<Collector>>,
}

tokio::task_local! {
    static CURRENT: SpanContext;
}

impl SpanContext {
    /// A context received from another service (a parsed `traceparent`): spans started
    /// under it are its children, in its trace.
    pub fn remote(parent: TraceParent, state: Option<TraceState>) -> SpanContext {
        SpanContext {
            trace_id: parent.trace_id,
            span_id: parent.parent_id,
            flags: parent.flags,
            state: state.filter(|s| !s.is_empty()).map(Arc::new),
            remote: true,
            collector: None,
        }
    }

    /// The trace.
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// The span.
    pub fn span_id(&self) -> SpanId {
        self.span_id
    }

    /// The W3C flags.
    pub fn flags(&self) -> TraceFlags {
        self.flags
    }

    /// The `tracestate` carried along, if any.
    pub fn trace_state(&self) -> Option<&TraceState> {
        self.state.as_deref()
    }

    /// Whether this context came from another process.
    pub fn is_remote(&self) -> bool {
        self.remote
    }

    /// The `traceparent` that names this span as the parent.
    pub fn traceparent(&self) -> TraceParent {
        TraceParent {
            version: 0,
            trace_id: self.trace_id,
            parent_id: self.span_id,
            flags: self.flags,
        }
    }

    /// Whether the request this context belongs to asked for its trace back.
    pub fn is_collecting(&self) -> bool {
        self.collector.is_some()
    }

    /// Runs `fut` with this context as the current span. The context holds across every
    /// `.await` inside `fut`; a task spawned from inside does not inherit it (hand it over
    /// with [`SpanContext::scope`] again, or use [`spawn`]).
    pub fn scope<F: Future>(self, fut: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self, fut)
    }

    /// Runs synchronous `f` with this context as the current span.
    pub fn sync_scope<R>(self, f: impl FnOnce() -> R) -> R {
        CURRENT.sync_scope(self, f)
    }
}

/// The current span's context, if code runs inside a [`SpanContext::scope`] (or a
/// [`crate::Span::in_scope`], or a request under [`crate::TraceLayer`]).
pub fn current() -> Option<SpanContext> {
    CURRENT.try_with(|c| c.clone()).ok()
}

/// `tokio::spawn` that hands the current span to the new task, so steps it records
/// become children of the span that spawned it.
pub fn spawn<F>(fut: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match current() {
        Some(ctx) => tokio::spawn(ctx.scope(fut)),
        None => tokio::spawn(fut),
    }
}
