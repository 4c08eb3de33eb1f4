//! Durable workflow contexts (issue 14, ADR 023): the W3C context of each workflow
//! instance, kept per tenant with a TTL that every write refreshes, so a workflow resumed
//! after a crash or a restart continues its original trace.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use traceway_core::workflow::{validate_context, validate_instance_id, ContextFields};
use traceway_core::Timestamp;

use crate::{Decorates, PageRequest, WorkflowError};

/// The most instance ids one stats page lists.
pub const MAX_WORKFLOW_PAGE: u32 = 1000;

/// A context to store for an instance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewWorkflowContext {
    /// The W3C `traceparent` of the span the workflow's later steps continue from.
    pub traceparent: String,
    /// The W3C `tracestate`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
    /// The agent that runs the workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Free-form metadata (bounded, see [`traceway_core::workflow`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// A stored context.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowContext {
    /// The workflow instance.
    pub instance_id: String,
    /// The `traceparent`, in canonical form.
    pub traceparent: String,
    /// The `tracestate`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
    /// The agent, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// When it was last stored.
    pub stored_at: Timestamp,
    /// When it expires unless stored again.
    pub expires_at: Timestamp,
}

/// What `GET /api/v1/workflows` shows: how many contexts the tenant has, and a page of
/// their instance ids in ascending order.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkflowStats {
    /// Contexts stored and not expired.
    pub count: u64,
    /// Instance ids of this page.
    pub instances: Vec<String>,
    /// Pass as `cursor` for the next page; `None` on the last.
    pub next_cursor: Option<String>,
}

/// Checks an instance id and a context, and returns the context as it is stored (with
/// the canonical `traceparent`). Every backend calls it, so each refuses the same input.
pub fn checked(
    instance: &str,
    ctx: NewWorkflowContext,
    now: Timestamp,
    ttl: Duration,
) -> Result<WorkflowContext, WorkflowError> {
    validate_instance_id(instance).map_err(WorkflowError::Invalid)?;
    let v = validate_context(ContextFields {
        traceparent: &ctx.traceparent,
        tracestate: ctx.tracestate.as_deref(),
        agent: ctx.agent.as_deref(),
        metadata: &ctx.metadata,
    })
    .map_err(WorkflowError::Invalid)?;
    if ttl.is_zero() {
        return Err(WorkflowError::ZeroTtl);
    }
    Ok(WorkflowContext {
        instance_id: instance.to_string(),
        traceparent: v.traceparent,
        tracestate: v.tracestate,
        agent: ctx.agent,
        metadata: ctx.metadata,
        stored_at: now,
        expires_at: now.saturating_add(ttl),
    })
}

/// Checks an instance id given to a read or a delete.
pub fn checked_instance(instance: &str) -> Result<(), WorkflowError> {
    validate_instance_id(instance).map_err(WorkflowError::Invalid)
}

/// The cursor of a stats page: the last instance id listed, hex-encoded so that any
/// printable id is a safe query value.
pub fn encode_instance_cursor(last: &str) -> String {
    last.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The instance id a cursor continues after.
pub fn decode_instance_cursor(c: &str) -> Result<String, WorkflowError> {
    let bad = || WorkflowError::BadCursor(c.to_string());
    if c.len() % 2 != 0 || c.len() > 4 * 256 * 2 {
        return Err(bad());
    }
    let bytes = (0..c.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(c.get(i..i + 2).ok_or_else(bad)?, 16).map_err(|_| bad()))
        .collect::<Result<Vec<u8>, _>>()?;
    String::from_utf8(bytes).map_err(|_| bad())
}

/// Durable workflow contexts, scoped to a tenant: another tenant's instance does not
/// exist. Expired contexts are never returned or counted.
#[async_trait]
pub trait WorkflowContexts: Send + Sync + 'static {
    /// Stores (or replaces) the context of `instance`; it expires `ttl` from now unless
    /// stored again. [`WorkflowError::Invalid`] names the field that is wrong.
    async fn put_workflow_context(
        &self,
        tenant: &str,
        instance: &str,
        ctx: NewWorkflowContext,
        ttl: Duration,
    ) -> Result<WorkflowContext, WorkflowError>;

    /// The stored context of `instance`, if any.
    async fn get_workflow_context(
        &self,
        tenant: &str,
        instance: &str,
    ) -> Result<Option<WorkflowContext>, WorkflowError>;

    /// Deletes the context of `instance`; false when none was stored.
    async fn delete_workflow_context(
        &self,
        tenant: &str,
        instance: &str,
    ) -> Result<bool, WorkflowError>;

    /// How many contexts the tenant has, and one page of their instance ids (ascending,
    /// at most [`MAX_WORKFLOW_PAGE`]; `page.offset` is ignored).
    async fn workflow_stats(
        &self,
        tenant: &str,
        page: &PageRequest,
    ) -> Result<WorkflowStats, WorkflowError>;
}

/// [`WorkflowContexts`] for a decorator: every method goes to [`Decorates::inner`] unless
/// the decorator overrides it.
#[async_trait]
pub trait WorkflowContextsLayer: Decorates {
    /// [`WorkflowContexts::put_workflow_context`].
    async fn put_workflow_context(
        &self,
        tenant: &str,
        instance: &str,
        ctx: NewWorkflowContext,
        ttl: Duration,
    ) -> Result<WorkflowContext, WorkflowError> {
        self.inner()
            .put_workflow_context(tenant, instance, ctx, ttl)
            .await
    }

    /// [`WorkflowContexts::get_workflow_context`].
    async fn get_workflow_context(
        &self,
        tenant: &str,
        instance: &str,
    ) -> Result<Option<WorkflowContext>, WorkflowError> {
        self.inner().get_workflow_context(tenant, instance).await
    }

    /// [`WorkflowContexts::delete_workflow_context`].
    async fn delete_workflow_context(
        &self,
        tenant: &str,
        instance: &str,
    ) -> Result<bool, WorkflowError> {
        self.inner().delete_workflow_context(tenant, instance).await
    }

    /// [`WorkflowContexts::workflow_stats`].
    async fn workflow_stats(
        &self,
        tenant: &str,
        page: &PageRequest,
    ) -> Result<WorkflowStats, WorkflowError> {
        self.inner().workflow_stats(tenant, page).await
    }
}

#[async_trait]
impl<T: WorkflowContextsLayer> WorkflowContexts for T {
    async fn put_workflow_context(
        &self,
        tenant: &str,
        instance: &str,
        ctx: NewWorkflowContext,
        ttl: Duration,
    ) -> Result<WorkflowContext, WorkflowError> {
        WorkflowContextsLayer::put_workflow_context(self, tenant, instance, ctx, ttl).await
    }

    async fn get_workflow_context(
        &self,
        tenant: &str,
        instance: &str,
    ) -> Result<Option<WorkflowContext>, WorkflowError> {
        WorkflowContextsLayer::get_workflow_context(self, tenant, instance).await
    }

    async fn delete_workflow_context(
        &self,
        tenant: &str,
        instance: &str,
    ) -> Result<bool, WorkflowError> {
        WorkflowContextsLayer::delete_workflow_context(self, tenant, instance).await
    }

    async fn workflow_stats(
        &self,
        tenant: &str,
        page: &PageRequest,
    ) -> Result<WorkflowStats, WorkflowError> {
        WorkflowContextsLayer::workflow_stats(self, tenant, page).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        for id in ["a", "order/42 ü", &"z".repeat(256)] {
            assert_eq!(
                decode_instance_cursor(&encode_instance_cursor(id)).unwrap(),
                id
            );
        }
        for bad in ["0", "zz", "ff"] {
            assert!(decode_instance_cursor(bad).is_err(), "{bad}");
        }
    }
}
