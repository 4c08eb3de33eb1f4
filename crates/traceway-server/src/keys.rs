//! `/api/v1/keys`: create, list and revoke the caller's tenant's API keys (admin scope when
//! auth is on; see `auth.rs`). A key's secret is in the create answer only.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use traceway_core::apikey::{hash_secret, is_key_id};
use traceway_core::{Credentials, KeyScope, KeyScopes};
use traceway_store::{ApiKey, StoredKey};

use crate::error::ApiError;
use crate::extract::{JsonBody, Tenant};
use crate::AppState;

/// The body of `POST /api/v1/keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// A label (1 to 128 characters).
    pub name: String,
    /// At least one of `ingest`, `read`, `admin`.
    pub scopes: Vec<String>,
}

fn key_json(k: &ApiKey) -> Value {
    json!({
        "key_id": k.key_id,
        "tenant": k.tenant,
        "name": k.name,
        "scopes": k.scopes.to_vec().iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "created_at": k.created_at,
        "revoked_at": k.revoked_at,
        "last_used_at": k.last_used_at,
    })
}

/// `POST /api/v1/keys`: 201 with the key, whose `key` field (the secret) is shown once.
pub async fn create(
    State(app): State<AppState>,
    tenant: Tenant,
    JsonBody(body): JsonBody<CreateKey>,
) -> Result<Response, ApiError> {
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 128 {
        return Err(ApiError::bad_request("name must be 1 to 128 characters"));
    }
    let mut scopes = Vec::new();
    for s in &body.scopes {
        scopes.push(
            s.parse::<KeyScope>()
                .map_err(|e| ApiError::bad_request(e.to_string()))?,
        );
    }
    let scopes = KeyScopes::of(&scopes);
    if scopes.is_empty() {
        return Err(ApiError::bad_request(
            "scopes must name at least one of ingest, read, admin",
        ));
    }
    let creds = Credentials::generate();
    let key = ApiKey {
        key_id: creds.key_id.clone(),
        tenant: tenant.0,
        name: name.to_string(),
        scopes,
        created_at: app.clock.now(),
        revoked_at: None,
        last_used_at: None,
    };
    app.store
        .create_key(StoredKey {
            key: key.clone(),
            secret_hash: hash_secret(&creds.secret),
        })
        .await?;
    let mut v = key_json(&key);
    v["key"] = Value::String(creds.token());
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

/// `GET /api/v1/keys`: the tenant's keys, oldest first, without secrets.
pub async fn list(State(app): State<AppState>, tenant: Tenant) -> Result<Json<Value>, ApiError> {
    let keys = app.store.list_keys(&tenant.0).await?;
    Ok(Json(
        json!({"keys": keys.iter().map(key_json).collect::<Vec<_>>()}),
    ))
}

/// `DELETE /api/v1/keys/{key_id}`: 204; 404 when the tenant has no such key. The key
/// stops working on every replica within the verification cache's TTL.
pub async fn revoke(
    State(app): State<AppState>,
    tenant: Tenant,
    Path(key_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !is_key_id(&key_id) {
        return Err(ApiError::bad_request(format!(
            "invalid key id {key_id:?}: expected twk_ and 16 hex digits"
        )));
    }
    if app.store.revoke_key(&tenant.0, &key_id).await? {
        app.auth.forget(&key_id);
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("key {key_id} not found")))
    }
}
