//! Inject and extract W3C Trace Context over `http::HeaderMap`.

use http::{HeaderMap, HeaderValue};
use traceway_core::trace_context::{TraceParent, TraceState, TRACEPARENT, TRACESTATE};

use crate::context::SpanContext;

/// Reads `traceparent` and `tracestate` from incoming headers.
///
/// Returns `None` when there is no `traceparent`, or when it is malformed (more than one
/// `traceparent`, not ASCII, or outside the grammar): the caller then starts a new trace.
/// A malformed value is logged at debug level and never an error. An invalid
/// `tracestate` is dropped and the `traceparent` still used, as the specification says.
pub fn extract(headers: &HeaderMap) -> Option<SpanContext> {
    let mut values = headers.get_all(TRACEPARENT).iter();
    let first = values.next()?;
    if values.next().is_some() {
        tracing::debug!("more than one traceparent header; starting a new trace");
        return None;
    }
    let parent = match first
        .to_str()
        .map_err(|e| e.to_string())
        .and_then(|s| TraceParent::parse(s).map_err(|e| e.to_string()))
    {
        Ok(p) => p,
        Err(error) => {
            tracing::debug!(%error, value = ?first, "malformed traceparent; starting a new trace");
            return None;
        }
    };
    let state_values: Result<Vec<&str>, _> = headers
        .get_all(TRACESTATE)
        .iter()
        .map(|v| v.to_str())
        .collect();
    let state = match state_values {
        Ok(v) if v.is_empty() => None,
        Ok(v) => match TraceState::parse_all(v) {
            Ok(s) => Some(s),
            Err(error) => {
                tracing::debug!(%error, "invalid tracestate dropped");
                None
            }
        },
        Err(_) => {
            tracing::debug!("tracestate is not ASCII; dropped");
            None
        }
    };
    Some(SpanContext::remote(parent, state))
}

/// Writes `traceparent` (and `tracestate`, when the context carries one) for `ctx` into
/// outgoing headers, replacing any already there.
pub fn inject(ctx: &SpanContext, headers: &mut HeaderMap) {
    let tp = ctx.traceparent().to_header();
    headers.insert(
        TRACEPARENT,
        HeaderValue::from_str(&tp).expect("a traceparent is ASCII"),
    );
    headers.remove(TRACESTATE);
    if let Some(state) = ctx.trace_state().filter(|s| !s.is_empty()) {
        if let Ok(v) = HeaderValue::from_str(&state.to_header()) {
            headers.insert(TRACESTATE, v);
        }
    }
}

/// [`inject`] for the current span, if there is one. Returns whether it wrote.
pub fn inject_current(headers: &mut HeaderMap) -> bool {
    match crate::context::current() {
        Some(ctx) => {
            inject(&ctx, headers);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        h
    }

    const TP: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn extract_table() {
        // (headers, Some(tracestate written back) when a context is extracted)
        let cases: Vec<(HeaderMap, Option<&str>)> = vec![
            (headers(&[("traceparent", TP)]), Some("")),
            (
                headers(&[
                    ("traceparent", TP),
                    ("tracestate", b"a=1"),
                    ("tracestate", b"b=2"),
                ]),
                Some("a=1,b=2"),
            ),
            // An invalid tracestate is dropped; the traceparent still counts.
            (
                headers(&[("traceparent", TP), ("tracestate", b"A=1")]),
                Some(""),
            ),
            (
                headers(&[("traceparent", TP), ("tracestate", b"a=\xff")]),
                Some(""),
            ),
            (headers(&[]), None),
            (headers(&[("tracestate", b"a=1")]), None),
            (headers(&[("traceparent", b"garbage")]), None),
            (headers(&[("traceparent", b"00-\xff")]), None),
            (headers(&[("traceparent", TP), ("traceparent", TP)]), None),
        ];
        for (h, want) in cases {
            let got = extract(&h).map(|c| {
                assert_eq!(c.traceparent().to_header().as_bytes(), TP);
                assert!(c.is_remote());
                c.trace_state().map(|s| s.to_header()).unwrap_or_default()
            });
            assert_eq!(got.as_deref(), want, "{h:?}");
        }
    }

    #[test]
    fn inject_round_trips_and_replaces() {
        let ctx = extract(&headers(&[("traceparent", TP), ("tracestate", b"a=1")])).unwrap();
        let mut out = headers(&[("traceparent", b"stale"), ("tracestate", b"stale=1")]);
        inject(&ctx, &mut out);
        assert_eq!(out.get("traceparent").unwrap().as_bytes(), TP);
        assert_eq!(out.get("tracestate").unwrap(), "a=1");
        assert_eq!(out.get_all("traceparent").iter().count(), 1);
    }
}
