//! Egress: carry the current context into outgoing `reqwest` calls.

use http::HeaderMap;
use serde_json::Value;

use crate::completion::RETURN_TRACE_HEADER;
use crate::context;

/// Largest response body searched for a called service's steps (8 MiB); a larger one is
/// passed through unchanged.
const MAX_ABSORB_BYTES: u64 = 8 << 20;

/// Adds `traceparent` and `tracestate` of the current span to a request. When the current
/// request asked for its trace back, it also asks the called service for its steps
/// (`x-traceway-return-trace: spans`), so [`send`] can add them to this request's trace.
pub fn inject(rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    let Some(ctx) = context::current() else {
        return rb;
    };
    let mut headers = HeaderMap::new();
    crate::propagation::inject(&ctx, &mut headers);
    if ctx.is_collecting() {
        headers.insert(RETURN_TRACE_HEADER, http::HeaderValue::from_static("spans"));
    }
    rb.headers(headers)
}

/// Sends a request with the current context ([`inject`]). When this request collects its
/// trace and the called service answered with its steps (a JSON object with `"trace":
/// {"spans": [...]}`, as [`crate::TraceLayer`] does when asked), the steps join this
/// request's trace and the `"trace"` key is removed, so the caller sees the answer the
/// called service would give without it.
pub async fn send(rb: reqwest::RequestBuilder) -> reqwest::Result<reqwest::Response> {
    let ctx = context::current();
    let resp = inject(rb).send().await?;
    let Some(collector) = ctx.as_ref().and_then(|c| c.collector.clone()) else {
        return Ok(resp);
    };
    let is_json = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let small = resp.content_length().is_some_and(|n| n <= MAX_ABSORB_BYTES);
    if !is_json || !small {
        return Ok(resp);
    }
    let status = resp.status();
    let version = resp.version();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await?;
    let body = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(mut o)) if o.get("trace").is_some_and(|t| t.get("spans").is_some()) => {
            if let Some(trace) = o.remove("trace") {
                collector.absorb(&trace);
            }
            bytes::Bytes::from(serde_json::to_vec(&o).expect("JSON serialises"))
        }
        _ => bytes,
    };
    let mut out = http::Response::builder().status(status).version(version);
    for (k, v) in headers.iter() {
        if k != http::header::CONTENT_LENGTH && k != http::header::TRANSFER_ENCODING {
            out = out.header(k, v);
        }
    }
    let out = out
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body)
        .expect("a response made of a valid one");
    Ok(reqwest::Response::from(out))
}
