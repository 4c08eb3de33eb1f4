//! Handlers of the durable workflow context API (ADR 022, ADR 023): the W3C context of
//! each workflow instance, so a workflow resumed after a crash continues its trace.

use std::collections::BTreeMap;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use traceway_store::{
    NewWorkflowContext, PageRequest, WorkflowContext, WorkflowStats, MAX_WORKFLOW_PAGE,
};

use crate::error::ApiError;
use crate::extract::{JsonBody, QueryArgs, Tenant};
use crate::AppState;

/// The body of `PUT /api/v1/workflows/{instance}/context`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutContextBody {
    /// The W3C `traceparent` the workflow's later steps continue from.
    pub traceparent: String,
    /// The W3C `tracestate`.
    #[serde(default)]
    pub tracestate: Option<String>,
    /// The agent that runs the workflow.
    #[serde(default)]
    pub agent: Option<String>,
    /// Free-form metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// Query of `GET /api/v1/workflows`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsParams {
    /// Continue after the page that returned this cursor.
    pub cursor: Option<String>,
    /// Instance ids per page (1 to 1000, default 100).
    pub limit: Option<u32>,
}

fn instance(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    p.map(|Path(i)| i)
        .map_err(|e| ApiError::bad_request(format!("instance id: {}", e.body_text())))
}

fn missing(instance: &str) -> ApiError {
    ApiError::not_found(format!(
        "no context stored for workflow instance {instance:?}"
    ))
}

/// `PUT /api/v1/workflows/{instance}/context`: stores (or replaces) the context and starts
/// its TTL over; 200 with the stored context.
pub async fn put_context(
    AxumState(app): AxumState<AppState>,
    tenant: Tenant,
    path: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<PutContextBody>,
) -> Result<Json<WorkflowContext>, ApiError> {
    let instance = instance(path)?;
    let ctx = NewWorkflowContext {
        traceparent: body.traceparent,
        tracestate: body.tracestate,
        agent: body.agent,
        metadata: body.metadata,
    };
    let stored = app
        .store
        .put_workflow_context(&tenant.0, &instance, ctx, app.config.workflow_context_ttl)
        .await?;
    Ok(Json(stored))
}

/// `GET /api/v1/workflows/{instance}/context`: the stored context, 404 when none.
pub async fn get_context(
    AxumState(app): AxumState<AppState>,
    tenant: Tenant,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<WorkflowContext>, ApiError> {
    let instance = instance(path)?;
    match app.store.get_workflow_context(&tenant.0, &instance).await? {
        Some(c) => Ok(Json(c)),
        None => Err(missing(&instance)),
    }
}

/// `DELETE /api/v1/workflows/{instance}/context`: 204, or 404 when none was stored.
pub async fn delete_context(
    AxumState(app): AxumState<AppState>,
    tenant: Tenant,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let instance = instance(path)?;
    if app
        .store
        .delete_workflow_context(&tenant.0, &instance)
        .await?
    {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(missing(&instance))
    }
}

/// `GET /api/v1/workflows`: the tenant's context count and a page of instance ids.
pub async fn stats(
    AxumState(app): AxumState<AppState>,
    tenant: Tenant,
    QueryArgs(p): QueryArgs<StatsParams>,
) -> Result<Json<WorkflowStats>, ApiError> {
    let limit = p.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_WORKFLOW_PAGE {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_WORKFLOW_PAGE}"
        )));
    }
    let page = PageRequest {
        cursor: p.cursor,
        offset: 0,
        limit,
    };
    Ok(Json(app.store.workflow_stats(&tenant.0, &page).await?))
}
