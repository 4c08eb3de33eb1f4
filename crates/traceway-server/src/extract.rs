//! Extractors that turn bad input into clear JSON errors: bodies name the field that is
//! wrong, bodies over the cap answer 413, other media types 415.

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::StatusCode;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use traceway_core::TraceId;

use crate::error::ApiError;
use crate::objects_only::ObjectsOnly;
use crate::AppState;

/// The header that names the tenant (until API keys exist).
pub const TENANT_HEADER: &str = "x-traceway-tenant";

/// The tenant the request acts for: `X-Traceway-Tenant`, else `default`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant(pub String);

impl Tenant {
    /// The tenant named by a header value (`X-Traceway-Tenant` in HTTP, the
    /// `x-traceway-tenant` metadata in gRPC): 1 to 128 of `[A-Za-z0-9._-]`; `default` when
    /// absent.
    pub fn parse(value: Option<&[u8]>) -> Result<Tenant, String> {
        let Some(v) = value else {
            return Ok(Tenant("default".into()));
        };
        let valid = !v.is_empty()
            && v.len() <= 128
            && v.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
        if !valid {
            return Err(
                "X-Traceway-Tenant must be 1 to 128 characters of letters, digits, '-', '_' or '.'"
                    .into(),
            );
        }
        Ok(Tenant(String::from_utf8_lossy(v).into_owned()))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Tenant, ApiError> {
        Tenant::parse(parts.headers.get(TENANT_HEADER).map(|v| v.as_bytes()))
            .map_err(ApiError::bad_request)
    }
}

/// A trace id from the path, in either the 32-hex or the UUID form.
#[derive(Debug, Clone, Copy)]
pub struct TraceIdPath(pub TraceId);

impl<S: Send + Sync> FromRequestParts<S> for TraceIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<TraceIdPath, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        raw.parse()
            .map(TraceIdPath)
            .map_err(|e| ApiError::bad_request(format!("invalid trace id {raw:?}: {e}")))
    }
}

/// A JSON body, capped at the configured size, decoded with the path of any bad field.
pub struct JsonBody<T>(pub T);

/// Decodes JSON, naming the path of the field that is wrong (`events[2].span.kind: …`).
pub fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Every body is an object; serde would also read a struct from an array.
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        None => return Err(ApiError::bad_request("empty body: expected a JSON object")),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid JSON body: expected a JSON object",
            ))
        }
    }
    // Most bodies are valid: decode them directly, and only a refused one a second time,
    // tracking the path (the tracking costs a few percent of an append's CPU). Structs are
    // read from objects only, as the document says (serde would take an array too).
    let mut de = serde_json::Deserializer::from_slice(bytes);
    if let Ok(value) = T::deserialize(ObjectsOnly(&mut de)) {
        if de.end().is_ok() {
            return Ok(value);
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(ObjectsOnly(&mut de)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ApiError::bad_request(format!("invalid JSON body: {inner}"))
        } else {
            ApiError::bad_request(format!("invalid JSON body at {path}: {inner}"))
        }
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    Ok(value)
}

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<JsonBody<T>, ApiError> {
        if let Some(ct) = req.headers().get(CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
            let essence = ct.split(';').next().unwrap_or("").trim();
            if essence != "application/json" && !essence.ends_with("+json") {
                return Err(ApiError::unsupported_media_type(format!(
                    "expected Content-Type application/json, got {essence:?}"
                )));
            }
        }
        let limit = state.config.max_body_bytes;
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large(limit)
            } else if let Some(t) = crate::transport::BodyTimeout::find(&e) {
                ApiError::request_timeout(t)
            } else {
                ApiError::bad_request(format!("could not read the body: {}", e.body_text()))
            }
        })?;
        decode_json(&bytes).map(JsonBody)
    }
}

/// Query parameters, decoded with the name of any bad parameter.
pub struct QueryArgs<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryArgs<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<QueryArgs<T>, ApiError> {
        let q = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(q.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(QueryArgs)
            .map_err(|e| {
                let path = e.path().to_string();
                ApiError::bad_request(format!(
                    "invalid query parameter {path}: {}",
                    e.into_inner()
                ))
            })
    }
}
