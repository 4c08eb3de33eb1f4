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
use crate::openapi::{
    BadRequest, Forbidden, Internal, NotFound, Overloaded, PayloadTooLarge, RequestTimeout,
    TenantHeader, Unauthenticated, Unavailable, UnsupportedMediaType,
};
use crate::AppState;

/// The body of `PUT /api/v1/workflows/{instance}/context`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutContextBody {
    /// The W3C `traceparent` the workflow's later steps continue from.
    #[schema(example = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]
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
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatsParams {
    /// Continue after the page that returned this cursor.
    pub cursor: Option<String>,
    /// Instance ids per page (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// The workflow instance path parameter, as `{instance}` in
/// `/api/v1/workflows/{instance}/context`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct InstancePath {
    /// The workflow instance id: 1 to 256 printable characters.
    #[param(min_length = 1, max_length = 256)]
    instance: String,
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
#[utoipa::path(
    put,
    path = "/api/v1/workflows/{instance}/context",
    tag = "workflows",
    operation_id = "putWorkflowContext",
    summary = "Store a workflow's trace context",
    description = "Stores (or replaces) the instance's W3C context and starts its TTL over (default 24 h, `--workflow-context-ttl`).",
    params(InstancePath, TenantHeader),
    request_body = PutContextBody,
    responses(
        (status = 200, description = "Stored.", body = WorkflowContext),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthenticated),
        (status = 403, response = Forbidden),
        (status = 408, response = RequestTimeout),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, response = Overloaded),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = ["ingest"]), ("basic" = ["ingest"])),
)]
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
#[utoipa::path(
    get,
    path = "/api/v1/workflows/{instance}/context",
    tag = "workflows",
    operation_id = "getWorkflowContext",
    summary = "Get a workflow's trace context",
    params(InstancePath, TenantHeader),
    responses(
        (status = 200, description = "The stored context.", body = WorkflowContext),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthenticated),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 429, response = Overloaded),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = ["read"]), ("basic" = ["read"])),
)]
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
#[utoipa::path(
    delete,
    path = "/api/v1/workflows/{instance}/context",
    tag = "workflows",
    operation_id = "deleteWorkflowContext",
    summary = "Delete a workflow's trace context",
    params(InstancePath, TenantHeader),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthenticated),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 429, response = Overloaded),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = ["ingest"]), ("basic" = ["ingest"])),
)]
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
#[utoipa::path(
    get,
    path = "/api/v1/workflows",
    tag = "workflows",
    operation_id = "workflowStats",
    summary = "Count the stored workflow contexts",
    description = "How many contexts the tenant has, and a page of their instance ids in ascending order.",
    params(StatsParams, TenantHeader),
    responses(
        (status = 200, description = "The count and a page.", body = WorkflowStats),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthenticated),
        (status = 403, response = Forbidden),
        (status = 429, response = Overloaded),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = ["read"]), ("basic" = ["read"])),
)]
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
