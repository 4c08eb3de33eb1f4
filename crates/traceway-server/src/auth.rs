//! API-key authentication (ADR 024): which scope each route needs, the verification of a
//! presented key (one indexed read, then a short-lived cache), and the middleware that
//! answers 401 or 403 and otherwise makes the key's tenant the request's tenant.
//!
//! With auth on, the tenant comes from the key alone: the middleware overwrites any
//! valid `X-Traceway-Tenant` the client sent (and OTLP/gRPC ignores a valid
//! `x-traceway-tenant`); a malformed one is refused on both, as it is with auth off.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use traceway_core::apikey::secret_matches;
use traceway_core::{Credentials, KeyScope, KeyScopes, Timestamp};
use traceway_store::{KeyError, Store};

use crate::error::ApiError;
use crate::extract::TENANT_HEADER;
use crate::otlp::{Failure, FailureKind};
use crate::AppState;

/// How long a verified key is trusted without reading the store again: a revocation takes
/// effect on every replica within this time.
pub const CACHE_TTL: Duration = Duration::from_secs(10);
/// The most keys the cache holds; past it, expired entries go, then all.
pub const CACHE_CAPACITY: usize = 10_000;
/// A key's last use is written at most this often (per replica).
pub const TOUCH_INTERVAL: Duration = Duration::from_secs(60);

/// Who a request acts as once its key is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The key's public id.
    pub key_id: String,
    /// The key's tenant: the request's tenant.
    pub tenant: String,
    /// What the key may do.
    pub scopes: KeyScopes,
}

/// Why a request is refused.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// No key, a malformed one, an unknown or revoked one, or a wrong secret (401).
    Unauthenticated(String),
    /// A valid key without the scope the route needs (403).
    Forbidden(String),
    /// The store could not be read (its own status: 503, 429, 500).
    Store(KeyError),
}

impl Refusal {
    /// The REST answer.
    pub fn to_api_error(&self) -> ApiError {
        match self {
            Refusal::Unauthenticated(m) => ApiError {
                status: StatusCode::UNAUTHORIZED,
                code: "unauthenticated",
                message: m.clone(),
            },
            Refusal::Forbidden(m) => ApiError {
                status: StatusCode::FORBIDDEN,
                code: "permission_denied",
                message: m.clone(),
            },
            Refusal::Store(e) => ApiError::from_store(e),
        }
    }

    /// The OTLP answer (HTTP or gRPC).
    pub fn to_failure(&self) -> Failure {
        match self {
            Refusal::Unauthenticated(m) => Failure {
                kind: FailureKind::Unauthenticated,
                message: m.clone(),
            },
            Refusal::Forbidden(m) => Failure {
                kind: FailureKind::Forbidden,
                message: m.clone(),
            },
            Refusal::Store(e) => Failure::from_store(e),
        }
    }
}

/// The admin key given in the configuration (`--admin-key`): verified in memory, never
/// stored, so every replica started with it accepts it, and it is removed by restarting
/// without it.
#[derive(Debug, Clone)]
pub struct BootstrapKey {
    /// The key.
    pub credentials: Credentials,
    /// The tenant it administers.
    pub tenant: String,
}

struct Cached {
    tenant: String,
    scopes: KeyScopes,
    secret_hash: String,
    revoked: bool,
    fetched: Instant,
    touched: Option<Instant>,
}

/// Verifies keys, with a bounded cache of what the store answered.
pub struct Auth {
    bootstrap: Option<(String, String, String)>,
    cache: Mutex<HashMap<String, Cached>>,
}

impl Auth {
    /// A verifier; `bootstrap` is accepted as an admin key of its tenant.
    pub fn new(bootstrap: Option<&BootstrapKey>) -> Auth {
        Auth {
            bootstrap: bootstrap.map(|b| {
                (
                    b.credentials.key_id.clone(),
                    traceway_core::apikey::hash_secret(&b.credentials.secret),
                    b.tenant.clone(),
                )
            }),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Drops what the cache holds of a key (after this replica revoked it, so that it stops
    /// working here at once; other replicas take up to [`CACHE_TTL`]).
    pub fn forget(&self, key_id: &str) {
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key_id);
    }

    /// Verifies `value` (an `Authorization` header or gRPC metadata value) and checks that
    /// the key allows `scope`.
    pub async fn authorize(
        &self,
        store: &Arc<dyn Store>,
        value: Option<&[u8]>,
        scope: KeyScope,
        now: Timestamp,
    ) -> Result<Principal, Refusal> {
        let value = value.ok_or_else(|| {
            Refusal::Unauthenticated(
                "an API key is required: send `Authorization: Bearer <key>`".into(),
            )
        })?;
        let creds = Credentials::from_authorization(value)
            .map_err(|e| Refusal::Unauthenticated(e.to_string()))?;
        let principal = self.verify(store, &creds, now).await?;
        if !principal.scopes.allows(scope) {
            return Err(Refusal::Forbidden(format!(
                "key {} lacks the {} scope (it has: {})",
                principal.key_id,
                scope.as_str(),
                principal.scopes.to_csv()
            )));
        }
        Ok(principal)
    }

    async fn verify(
        &self,
        store: &Arc<dyn Store>,
        creds: &Credentials,
        now: Timestamp,
    ) -> Result<Principal, Refusal> {
        let invalid = || Refusal::Unauthenticated("invalid or revoked API key".into());
        if let Some((id, hash, tenant)) = &self.bootstrap {
            if *id == creds.key_id {
                return if secret_matches(&creds.secret, hash) {
                    Ok(Principal {
                        key_id: id.clone(),
                        tenant: tenant.clone(),
                        scopes: KeyScopes::of(&[KeyScope::Admin]),
                    })
                } else {
                    Err(invalid())
                };
            }
        }
        if let Some(r) = self.cached(store, creds, now) {
            return r.ok_or_else(invalid);
        }
        let stored = store
            .get_key(&creds.key_id)
            .await
            .map_err(Refusal::Store)?
            .ok_or_else(invalid)?;
        let entry = Cached {
            tenant: stored.key.tenant,
            scopes: stored.key.scopes,
            secret_hash: stored.secret_hash,
            revoked: stored.key.revoked_at.is_some(),
            fetched: Instant::now(),
            touched: None,
        };
        {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= CACHE_CAPACITY {
                cache.retain(|_, c| c.fetched.elapsed() < CACHE_TTL);
                if cache.len() >= CACHE_CAPACITY {
                    cache.clear();
                }
            }
            cache.insert(creds.key_id.clone(), entry);
        }
        self.cached(store, creds, now).flatten().ok_or_else(invalid)
    }

    /// What the cache says of `creds`: `None` if it has no fresh entry, `Some(None)` if the
    /// key is refused. Records the use when it was last recorded long enough ago.
    fn cached(
        &self,
        store: &Arc<dyn Store>,
        creds: &Credentials,
        now: Timestamp,
    ) -> Option<Option<Principal>> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let c = cache.get_mut(&creds.key_id)?;
        if c.fetched.elapsed() >= CACHE_TTL {
            return None;
        }
        // The hash is compared whatever the cache holds, in constant time.
        if c.revoked || !secret_matches(&creds.secret, &c.secret_hash) {
            return Some(None);
        }
        if c.touched.is_none_or(|t| t.elapsed() >= TOUCH_INTERVAL) {
            c.touched = Some(Instant::now());
            spawn_touch(store, creds.key_id.clone(), now);
        }
        Some(Some(Principal {
            key_id: creds.key_id.clone(),
            tenant: c.tenant.clone(),
            scopes: c.scopes,
        }))
    }
}

/// Records a use without holding up the request; a failure only loses that record.
fn spawn_touch(store: &Arc<dyn Store>, key_id: String, now: Timestamp) {
    let store = store.clone();
    tokio::spawn(async move {
        if let Err(e) = store.touch_key(&key_id, now).await {
            tracing::debug!(key_id, error = %traceway_store::ErrorChain(&e), "key use not recorded");
        }
    });
}

/// The scope a route needs; `None` for routes that are always open.
pub fn required_scope(method: &Method, path: &str) -> Option<KeyScope> {
    match path {
        "/healthz" | "/api/v1/openapi.json" => None,
        // The web page holds no data; the API calls it makes carry the user's key.
        "/" => None,
        p if p.starts_with("/ui/") => None,
        "/metrics" | "/readyz" => Some(KeyScope::Admin),
        // Every OTLP signal writes (logs fill spans; metrics are accepted and dropped).
        "/v1/traces" | "/v1/logs" | "/v1/metrics" => Some(KeyScope::Ingest),
        // A workflow's context is written by the app that ingests its trace.
        p if p.starts_with("/api/v1/workflows/") => match *method {
            Method::PUT | Method::DELETE => Some(KeyScope::Ingest),
            _ => Some(KeyScope::Read),
        },
        p if p == "/api/v1/keys" || p.starts_with("/api/v1/keys/") => Some(KeyScope::Admin),
        "/api/v1/traces/cleanup" => Some(KeyScope::Admin),
        p if p.starts_with("/api/v1/traces") => match *method {
            Method::POST | Method::PATCH | Method::PUT => Some(KeyScope::Ingest),
            Method::DELETE => Some(KeyScope::Admin),
            _ => Some(KeyScope::Read),
        },
        _ => Some(KeyScope::Read),
    }
}

/// The middleware of the HTTP router: when auth is on for the HTTP listener, a route that
/// needs a scope gets the verified key's tenant in `X-Traceway-Tenant` (whatever the
/// client sent) and a [`Principal`] in its extensions, or a 401/403 (the JSON error; a
/// `google.rpc.Status` on `/v1/traces`).
pub async fn middleware(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    if !app.config.auth.http {
        return next.run(req).await;
    }
    let Some(scope) = required_scope(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes().to_vec());
    let verdict = app
        .auth
        .authorize(&app.store, value.as_deref(), scope, app.clock.now())
        .await;
    match verdict {
        Ok(p) => {
            // The key decides the tenant, but a malformed X-Traceway-Tenant is still the
            // 400 it is without keys (and the document says), not silently replaced.
            if let Some(given) = req.headers().get(TENANT_HEADER) {
                if let Err(m) = crate::extract::Tenant::parse(Some(given.as_bytes())) {
                    if req.uri().path().starts_with("/v1/") {
                        return crate::otlp::http::refuse(req.headers(), Failure::bad_data(m));
                    }
                    return ApiError::bad_request(m).into_response();
                }
            }
            match HeaderValue::from_str(&p.tenant) {
                Ok(v) => {
                    req.headers_mut().insert(TENANT_HEADER, v);
                }
                Err(_) => {
                    return ApiError::internal(format!("key {} has an unusable tenant", p.key_id))
                        .into_response()
                }
            }
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        Err(r) => {
            let mut resp = if req.uri().path().starts_with("/v1/") {
                crate::otlp::http::refuse(req.headers(), r.to_failure())
            } else {
                r.to_api_error().into_response()
            };
            if matches!(r, Refusal::Unauthenticated(_)) {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"traceway\""),
                );
            }
            resp
        }
    }
}

/// OTLP/gRPC: the tenant of the call. With auth on for the gRPC listener, it is the
/// verified key's (from the `authorization` metadata) and needs the ingest scope;
/// otherwise it is `x-traceway-tenant`, or `default`. As on HTTP, a malformed
/// `x-traceway-tenant` (empty, over 128 bytes, other characters, non-ASCII bytes) is
/// refused, `INVALID_ARGUMENT`, with auth on too (after the key is checked, as HTTP
/// answers 401 before 400), never silently replaced by the key's tenant.
pub async fn grpc_tenant(
    app: &AppState,
    metadata: &tonic::metadata::MetadataMap,
) -> Result<String, tonic::Status> {
    let given = crate::extract::Tenant::parse(metadata.get(TENANT_HEADER).map(|v| v.as_bytes()))
        .map_err(|m| crate::otlp::grpc::to_status(Failure::bad_data(m)));
    if !app.config.auth.grpc {
        return given.map(|t| t.0);
    }
    let principal = app
        .auth
        .authorize(
            &app.store,
            metadata.get("authorization").map(|v| v.as_bytes()),
            KeyScope::Ingest,
            app.clock.now(),
        )
        .await
        .map_err(|r| crate::otlp::grpc::to_status(r.to_failure()))?;
    given?;
    Ok(principal.tenant)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_the_scope_of_what_they_do() {
        let cases = [
            (Method::GET, "/healthz", None),
            (Method::GET, "/api/v1/openapi.json", None),
            (Method::GET, "/metrics", Some(KeyScope::Admin)),
            (Method::GET, "/readyz", Some(KeyScope::Admin)),
            (Method::POST, "/v1/traces", Some(KeyScope::Ingest)),
            (Method::POST, "/v1/logs", Some(KeyScope::Ingest)),
            (Method::POST, "/v1/metrics", Some(KeyScope::Ingest)),
            (
                Method::PUT,
                "/api/v1/workflows/wf-1/context",
                Some(KeyScope::Ingest),
            ),
            (
                Method::DELETE,
                "/api/v1/workflows/wf-1/context",
                Some(KeyScope::Ingest),
            ),
            (
                Method::GET,
                "/api/v1/workflows/wf-1/context",
                Some(KeyScope::Read),
            ),
            (Method::GET, "/api/v1/workflows", Some(KeyScope::Read)),
            (Method::POST, "/api/v1/traces", Some(KeyScope::Ingest)),
            (Method::GET, "/api/v1/traces", Some(KeyScope::Read)),
            (
                Method::GET,
                "/api/v1/traces/abc/stream",
                Some(KeyScope::Read),
            ),
            (Method::GET, "/api/v1/stream", Some(KeyScope::Read)),
            (
                Method::POST,
                "/api/v1/traces/abc/events",
                Some(KeyScope::Ingest),
            ),
            (Method::PATCH, "/api/v1/traces/abc", Some(KeyScope::Ingest)),
            (Method::DELETE, "/api/v1/traces/abc", Some(KeyScope::Admin)),
            (
                Method::POST,
                "/api/v1/traces/cleanup",
                Some(KeyScope::Admin),
            ),
            (Method::GET, "/api/v1/keys", Some(KeyScope::Admin)),
            (Method::DELETE, "/api/v1/keys/twk_1", Some(KeyScope::Admin)),
            (Method::GET, "/nowhere", Some(KeyScope::Read)),
            (Method::GET, "/", None),
            (Method::GET, "/ui/app.js", None),
            (Method::GET, "/uix", Some(KeyScope::Read)),
        ];
        for (m, p, want) in cases {
            assert_eq!(required_scope(&m, p), want, "{m} {p}");
        }
    }
}
