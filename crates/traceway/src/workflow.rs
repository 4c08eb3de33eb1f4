//! Durable workflow trace context: keep each workflow instance's W3C context so that a
//! workflow resumed after a crash or a restart continues its original trace (ADR 022).
//!
//! Durable engines (Dapr Workflow, Temporal, Restate) run a workflow's steps as separate
//! tasks, often in other processes, and resume them after a crash; the OpenTelemetry
//! context does not cross those boundaries. A [`ContextStore`] keeps it:
//!
//! - [`InMemoryContextStore`]: a thread-safe map (what dapr-agents'
//!   `WorkflowContextStorage` does); it is empty after a restart;
//! - [`ServerContextStore`]: the server's `/api/v1/workflows/{instance}/context`, which
//!   survives restarts of the app and of the server.
//!
//! ```no_run
//! use traceway::workflow::{ContextStore, ServerContextStore};
//! # async fn demo(tracer: traceway::Tracer) -> Result<(), traceway::workflow::WorkflowError> {
//! let contexts = ServerContextStore::new(tracer.clone(), "http://127.0.0.1:4318")?;
//! // First run: the workflow's span, then its context is stored.
//! let run = tracer.agent("planner.ToolCallingWorkflow").start();
//! contexts.store("order-42", &run.context(), Some("planner")).await?;
//! // ... the process dies; later, in another process:
//! let resumed = contexts.resume("order-42", "planner").await?;
//! assert!(resumed.continued); // same trace, under the stored span
//! resumed.span.end();
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use traceway_core::trace_context::{TraceParent, TraceState};
use traceway_core::workflow::{validate_context, validate_instance_id, ContextFields};

use crate::{Severity, Span, SpanContext, Tracer};

/// The attribute that names the workflow instance on a resumed step.
pub const INSTANCE_ID_ATTR: &str = "workflow.instance_id";
/// The attribute set to `true` on a resumed workflow's step.
pub const RESUMED_ATTR: &str = "workflow.resumed";
/// The attribute set to `false` when no context was stored and a new trace began.
pub const CONTINUED_ATTR: &str = "workflow.context_restored";

/// What a store failed with.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    /// The instance id or the context is not valid (the message names the field).
    #[error("{0}")]
    Invalid(String),
    /// The server answered with an error.
    #[error("server answered {status}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The server could not be reached.
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
}

/// A stored context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredContext {
    /// The workflow instance.
    pub instance_id: String,
    /// The W3C `traceparent`.
    pub traceparent: String,
    /// The W3C `tracestate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
    /// The agent that runs the workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

impl StoredContext {
    /// The context as a parent for new steps (`None` if the stored value is not valid).
    pub fn span_context(&self) -> Option<SpanContext> {
        let parent = TraceParent::parse(&self.traceparent).ok()?;
        let state = self
            .tracestate
            .as_deref()
            .and_then(|s| TraceState::parse(s).ok());
        Some(SpanContext::remote(parent, state))
    }
}

/// How many contexts are stored, and one page of instance ids.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextStats {
    /// Contexts stored.
    pub count: u64,
    /// Instance ids (ascending), at most one page.
    pub instances: Vec<String>,
    /// The cursor of the next page, if any (server-backed store).
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// A resumed workflow: its first step in this process, which the resumed steps nest
/// under. Ending it ends the trace.
#[derive(Debug)]
pub struct Resumed {
    /// The step; run the resumed steps in its scope ([`Span::in_scope`]).
    pub span: Span,
    /// True when a stored context was found and the original trace continues; false when
    /// a new trace began (continuity was lost, and the step says so).
    pub continued: bool,
}

fn checked(
    instance: &str,
    ctx: &SpanContext,
    agent: Option<&str>,
) -> Result<StoredContext, WorkflowError> {
    validate_instance_id(instance).map_err(|e| WorkflowError::Invalid(e.to_string()))?;
    let traceparent = ctx.traceparent().to_header();
    let tracestate = ctx.trace_state().map(|s| s.to_header());
    let metadata = BTreeMap::new();
    validate_context(ContextFields {
        traceparent: &traceparent,
        tracestate: tracestate.as_deref(),
        agent,
        metadata: &metadata,
    })
    .map_err(|e| WorkflowError::Invalid(e.to_string()))?;
    Ok(StoredContext {
        instance_id: instance.to_string(),
        traceparent,
        tracestate,
        agent: agent.map(str::to_string),
        metadata,
    })
}

/// Where workflow contexts are kept. `resume` is the same for every store.
pub trait ContextStore: Send + Sync {
    /// The tracer resumed steps are recorded with.
    fn tracer(&self) -> &Tracer;

    /// Stores the context of `instance` (replacing any), so that its later steps can
    /// continue from `ctx`.
    fn store(
        &self,
        instance: &str,
        ctx: &SpanContext,
        agent: Option<&str>,
    ) -> impl Future<Output = Result<(), WorkflowError>> + Send;

    /// The stored context of `instance`, if any.
    fn get(
        &self,
        instance: &str,
    ) -> impl Future<Output = Result<Option<StoredContext>, WorkflowError>> + Send;

    /// Forgets the context of `instance` (the workflow finished); false if none was
    /// stored.
    fn cleanup(&self, instance: &str) -> impl Future<Output = Result<bool, WorkflowError>> + Send;

    /// How many contexts are stored, and the first page of their instance ids.
    fn stats(&self) -> impl Future<Output = Result<ContextStats, WorkflowError>> + Send;

    /// Asks the server to reopen `trace` if its watchdog orphaned it while the workflow
    /// was down (ADR 022): it goes back to `RUNNING` with a `state_changed` event whose
    /// reason is `resumed`. A trace that is running, or ended otherwise, is left as it is.
    /// Only a server-backed store has a server to ask.
    fn reopen(
        &self,
        trace: crate::TraceId,
    ) -> impl Future<Output = Result<(), WorkflowError>> + Send {
        let _ = trace;
        async { Ok(()) }
    }

    /// Starts the resumed workflow's step, `{agent}.ToolCallingWorkflow`, with
    /// `workflow.instance_id` and `workflow.resumed=true`:
    ///
    /// - with a stored context, as a child of the stored span in the same trace, linked
    ///   to it; ending it ends the trace;
    /// - without one, as the root of a new trace, which records that continuity was lost
    ///   (`workflow.context_restored=false` and a warning log).
    fn resume(
        &self,
        instance: &str,
        agent: &str,
    ) -> impl Future<Output = Result<Resumed, WorkflowError>> + Send {
        async move {
            validate_instance_id(instance).map_err(|e| WorkflowError::Invalid(e.to_string()))?;
            let stored = self.get(instance).await?;
            let name = format!("{agent}.ToolCallingWorkflow");
            let tracer = self.tracer();
            let builder = tracer
                .agent(name)
                .attribute(INSTANCE_ID_ATTR, instance.to_string())
                .attribute(RESUMED_ATTR, true);
            match stored.as_ref().and_then(StoredContext::span_context) {
                Some(parent) => {
                    self.reopen(parent.trace_id()).await?;
                    let span = builder
                        .parent(&parent)
                        .link(parent.trace_id(), Some(parent.span_id()))
                        .attribute(CONTINUED_ATTR, true)
                        .ends_trace()
                        .start();
                    Ok(Resumed {
                        span,
                        continued: true,
                    })
                }
                None => {
                    let span = builder.new_trace().attribute(CONTINUED_ATTR, false).start();
                    span.log(
                        Severity::Warn,
                        format!(
                            "no stored trace context for workflow instance {instance:?}: \
                             resumed in a new trace, continuity with the original run was lost"
                        ),
                    );
                    Ok(Resumed {
                        span,
                        continued: false,
                    })
                }
            }
        }
    }
}

/// Contexts in a thread-safe map, as dapr-agents keeps them: lost when the process ends.
#[derive(Debug, Clone)]
pub struct InMemoryContextStore {
    tracer: Tracer,
    map: Arc<Mutex<HashMap<String, StoredContext>>>,
}

impl InMemoryContextStore {
    /// An empty store.
    pub fn new(tracer: Tracer) -> InMemoryContextStore {
        InMemoryContextStore {
            tracer,
            map: Arc::default(),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, StoredContext>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ContextStore for InMemoryContextStore {
    fn tracer(&self) -> &Tracer {
        &self.tracer
    }

    async fn store(
        &self,
        instance: &str,
        ctx: &SpanContext,
        agent: Option<&str>,
    ) -> Result<(), WorkflowError> {
        let c = checked(instance, ctx, agent)?;
        self.map().insert(instance.to_string(), c);
        Ok(())
    }

    async fn get(&self, instance: &str) -> Result<Option<StoredContext>, WorkflowError> {
        Ok(self.map().get(instance).cloned())
    }

    async fn cleanup(&self, instance: &str) -> Result<bool, WorkflowError> {
        Ok(self.map().remove(instance).is_some())
    }

    async fn stats(&self) -> Result<ContextStats, WorkflowError> {
        let map = self.map();
        let mut instances: Vec<String> = map.keys().cloned().collect();
        instances.sort();
        instances.truncate(100);
        Ok(ContextStats {
            count: map.len() as u64,
            instances,
            next_cursor: None,
        })
    }
}

/// Contexts kept by the Traceway server (`/api/v1/workflows/{instance}/context`): they
/// survive restarts of the app and of the server, until their TTL (the server's
/// `--workflow-context-ttl`, refreshed by each store).
#[derive(Debug, Clone)]
pub struct ServerContextStore {
    tracer: Tracer,
    base: String,
    tenant: String,
    api_key: Option<String>,
    client: reqwest::Client,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    message: String,
}

/// The path segment of an instance id, percent-encoded.
fn segment(instance: &str) -> String {
    let mut out = String::with_capacity(instance.len());
    for b in instance.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl ServerContextStore {
    /// A store on the server at `endpoint` (`http://127.0.0.1:4318`), in the tracer's
    /// tenant.
    pub fn new(tracer: Tracer, endpoint: &str) -> Result<ServerContextStore, WorkflowError> {
        let base = endpoint.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(WorkflowError::Invalid(format!(
                "endpoint {endpoint:?} is not an http(s) URL"
            )));
        }
        Ok(ServerContextStore {
            tenant: tracer.tenant().to_string(),
            tracer,
            base,
            api_key: None,
            client: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()?,
        })
    }

    /// Another tenant than the tracer's.
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = tenant.into();
        self
    }

    /// An API key, sent as `Authorization: Bearer`.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut rb = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("x-traceway-tenant", &self.tenant);
        if let Some(k) = &self.api_key {
            rb = rb.bearer_auth(k);
        }
        rb
    }

    fn context_path(instance: &str) -> String {
        format!("/api/v1/workflows/{}/context", segment(instance))
    }
}

async fn fail(r: reqwest::Response) -> WorkflowError {
    let status = r.status().as_u16();
    let message = match r.json::<ErrorBody>().await {
        Ok(b) => b.error.message,
        Err(_) => String::new(),
    };
    if status == 400 {
        WorkflowError::Invalid(message)
    } else {
        WorkflowError::Status { status, message }
    }
}

impl ContextStore for ServerContextStore {
    fn tracer(&self) -> &Tracer {
        &self.tracer
    }

    async fn store(
        &self,
        instance: &str,
        ctx: &SpanContext,
        agent: Option<&str>,
    ) -> Result<(), WorkflowError> {
        let c = checked(instance, ctx, agent)?;
        let body = serde_json::json!({
            "traceparent": c.traceparent,
            "tracestate": c.tracestate,
            "agent": c.agent,
        });
        let r = self
            .request(reqwest::Method::PUT, &Self::context_path(instance))
            .json(&body)
            .send()
            .await?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(fail(r).await)
        }
    }

    async fn get(&self, instance: &str) -> Result<Option<StoredContext>, WorkflowError> {
        validate_instance_id(instance).map_err(|e| WorkflowError::Invalid(e.to_string()))?;
        let r = self
            .request(reqwest::Method::GET, &Self::context_path(instance))
            .send()
            .await?;
        match r.status().as_u16() {
            200 => Ok(Some(r.json().await?)),
            404 => Ok(None),
            _ => Err(fail(r).await),
        }
    }

    async fn cleanup(&self, instance: &str) -> Result<bool, WorkflowError> {
        validate_instance_id(instance).map_err(|e| WorkflowError::Invalid(e.to_string()))?;
        let r = self
            .request(reqwest::Method::DELETE, &Self::context_path(instance))
            .send()
            .await?;
        match r.status().as_u16() {
            200..=299 => Ok(true),
            404 => Ok(false),
            _ => Err(fail(r).await),
        }
    }

    async fn reopen(&self, trace: crate::TraceId) -> Result<(), WorkflowError> {
        let r = self
            .request(reqwest::Method::PATCH, &format!("/api/v1/traces/{trace}"))
            .json(&serde_json::json!({"state": "RUNNING", "reason": "resumed"}))
            .send()
            .await?;
        // 409: it ended otherwise (not orphaned), and stays ended; 404: it is gone (the
        // resumed steps then create it again).
        match r.status().as_u16() {
            200..=299 | 404 | 409 => Ok(()),
            _ => Err(fail(r).await),
        }
    }

    async fn stats(&self) -> Result<ContextStats, WorkflowError> {
        let r = self
            .request(reqwest::Method::GET, "/api/v1/workflows")
            .send()
            .await?;
        if r.status().is_success() {
            Ok(r.json().await?)
        } else {
            Err(fail(r).await)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_are_percent_encoded_as_one_segment() {
        assert_eq!(segment("order-42"), "order-42");
        assert_eq!(segment("a/b c%"), "a%2Fb%20c%25");
        assert_eq!(segment("ü"), "%C3%BC");
    }
}
