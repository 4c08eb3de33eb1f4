//! `/api/v1/keys`: create, list and revoke the caller's tenant's API keys (admin scope when
//! auth is on; see `auth.rs`). A key's secret is in the create answer only.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use traceway_core::apikey::{hash_secret, is_key_id};
use traceway_core::{Credentials, KeyScope, KeyScopes, Timestamp};
use traceway_store::{ApiKey, StoredKey};

use crate::error::ApiError;
use crate::extract::{JsonBody, Tenant};
use crate::openapi::{
    BadRequest, Forbidden, Internal, NotFound, Overloaded, PayloadTooLarge, RequestTimeout,
    TenantHeader, Unauthenticated, Unavailable, UnsupportedMediaType,
};
use crate::AppState;

/// The body of `POST /api/v1/keys`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// A label (1 to 128 characters, leading and trailing spaces not counted).
    #[schema(min_length = 1, max_length = 128, pattern = "\\S")]
    pub name: String,
    /// At least one of `ingest`, `read`, `admin`.
    #[schema(value_type = Vec<ScopeName>, min_items = 1, example = json!(["ingest", "read"]))]
    pub scopes: Vec<String>,
}

// The document's names of the scopes; the body keeps strings, so an unknown one is refused
// with a message naming it. The list was of any string before, and schemathesis found the
// server refusing most of what the document allowed.
/// A key's scope.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum ScopeName {
    /// Export and write traces.
    Ingest,
    /// Read traces and streams.
    Read,
    /// Everything, plus deletes, cleanup, keys, `/metrics`, `/readyz`.
    Admin,
}

/// A key as listed: never its secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyView {
    /// The public id, `twk_` and 16 hex digits.
    #[schema(pattern = "^twk_[0-9a-f]{16}$")]
    pub key_id: String,
    /// The tenant it acts for.
    pub tenant: String,
    /// Its label.
    pub name: String,
    /// `ingest`, `read`, `admin`.
    pub scopes: Vec<&'static str>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was revoked; `null` while it works.
    pub revoked_at: Option<Timestamp>,
    /// When it was last used (recorded at most once a minute per replica).
    pub last_used_at: Option<Timestamp>,
}

impl From<&ApiKey> for KeyView {
    fn from(k: &ApiKey) -> KeyView {
        KeyView {
            key_id: k.key_id.clone(),
            tenant: k.tenant.clone(),
            name: k.name.clone(),
            scopes: k.scopes.to_vec().iter().map(|s| s.as_str()).collect(),
            created_at: k.created_at,
            revoked_at: k.revoked_at,
            last_used_at: k.last_used_at,
        }
    }
}

/// The answer of `POST /api/v1/keys`: the key and, once, its secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    /// The key.
    #[serde(flatten)]
    pub view: KeyView,
    /// The whole key to send (`Authorization: Bearer <key>`); shown only here.
    pub key: String,
}

/// The answer of `GET /api/v1/keys`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyList {
    /// Oldest first.
    pub keys: Vec<KeyView>,
}

/// The key id path parameter.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct KeyIdPath {
    /// The key's public id, `twk_` and 16 hex digits.
    #[param(pattern = "^twk_[0-9a-f]{16}$")]
    key_id: String,
}

/// `POST /api/v1/keys`: 201 with the key, whose `key` field (the secret) is shown once.
#[utoipa::path(
    post,
    path = "/api/v1/keys",
    tag = "keys",
    operation_id = "createKey",
    summary = "Create an API key",
    description = "Creates a key of the caller's tenant. The answer's `key` is the secret, shown only here; the server keeps only its hash.",
    params(TenantHeader),
    request_body = CreateKey,
    responses(
        (status = 201, description = "Created.", body = CreatedKey),
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
    security(("bearer" = ["admin"]), ("basic" = ["admin"])),
)]
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
    let created = CreatedKey {
        view: KeyView::from(&key),
        key: creds.token(),
    };
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// `GET /api/v1/keys`: the tenant's keys, oldest first, without secrets.
#[utoipa::path(
    get,
    path = "/api/v1/keys",
    tag = "keys",
    operation_id = "listKeys",
    summary = "List API keys",
    description = "The tenant's keys, oldest first, revoked ones included, never their secrets.",
    params(TenantHeader),
    responses(
        (status = 200, description = "The keys.", body = KeyList),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthenticated),
        (status = 403, response = Forbidden),
        (status = 429, response = Overloaded),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = ["admin"]), ("basic" = ["admin"])),
)]
pub async fn list(State(app): State<AppState>, tenant: Tenant) -> Result<Json<KeyList>, ApiError> {
    let keys = app.store.list_keys(&tenant.0).await?;
    Ok(Json(KeyList {
        keys: keys.iter().map(KeyView::from).collect(),
    }))
}

/// `DELETE /api/v1/keys/{key_id}`: 204; 404 when the tenant has no such key. The key
/// stops working on every replica within the verification cache's TTL.
#[utoipa::path(
    delete,
    path = "/api/v1/keys/{key_id}",
    tag = "keys",
    operation_id = "revokeKey",
    summary = "Revoke an API key",
    description = "The key stops working at once on this replica and within 10 s on the others.",
    params(KeyIdPath, TenantHeader),
    responses(
        (status = 204, description = "Revoked."),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthenticated),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 429, response = Overloaded),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = ["admin"]), ("basic" = ["admin"])),
)]
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
