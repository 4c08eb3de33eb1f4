//! `TraceLayer`: tower middleware that gives every request its trace at ingress, returns
//! the trace id, and can return the request's steps inside the response.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Request, Response};
use http_body::{Body, Frame};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, BodyStream, Full, StreamBody};
use serde_json::Value;
use tokio::sync::mpsc;
use traceway_core::trace_context::TRACERESPONSE;
use traceway_core::SpanKind;

use crate::completion::{
    Collector, CompletionBounds, ReturnTrace, RETURN_TRACE_HEADER, RETURN_TRACE_PARAM,
};
use crate::context::SpanContext;
use crate::span::Span;
use crate::tracer::Tracer;

/// The header that carries the trace id in every response.
pub const TRACE_ID_HEADER: &str = "x-trace-id";

/// A boxed error, as bodies report them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of responses that went through [`TraceLayer`].
pub type TraceBody = UnsyncBoxBody<Bytes, BoxError>;

/// Tower middleware for servers (axum, hyper, tonic-web…).
///
/// For every request it continues the incoming `traceparent` (or starts a new trace with
/// a UUIDv7 id when there is none or it is malformed), records the request's root step
/// (`METHOD /route`, with `http.method`, `http.route`, `http.status_code`; an error for a
/// 5xx; the route is axum's matched route with the feature `axum`, else the path), runs the handler with that step as the current span, and answers with the trace
/// id in `traceresponse` and `x-trace-id`. A request with `?return_trace=compact|detailed`
/// or the header `x-traceway-return-trace` gets its steps back: inside a JSON object
/// response as `"trace"`, or as `trace` events beside the data of an SSE response.
#[derive(Clone, Debug)]
pub struct TraceLayer {
    tracer: Tracer,
    kind: SpanKind,
    bounds: CompletionBounds,
    return_trace: bool,
}

impl TraceLayer {
    /// Middleware recording with `tracer`.
    pub fn new(tracer: Tracer) -> TraceLayer {
        TraceLayer {
            tracer,
            kind: SpanKind::Chain,
            bounds: CompletionBounds::default(),
            return_trace: true,
        }
    }

    /// Whether a request may ask for its trace back (default yes). The trace shows what
    /// the steps recorded (prompts, tool arguments and results at level `detailed`): turn
    /// it off on an edge that untrusted callers reach, or strip the trace there.
    pub fn allow_return_trace(mut self, allow: bool) -> TraceLayer {
        self.return_trace = allow;
        self
    }

    /// The kind of the request's root step (default `chain`).
    pub fn root_kind(mut self, kind: SpanKind) -> TraceLayer {
        self.kind = kind;
        self
    }

    /// The bounds of completion-with-trace (steps, bytes, body size).
    pub fn bounds(mut self, bounds: CompletionBounds) -> TraceLayer {
        self.bounds = bounds;
        self
    }
}

impl<S> tower::Layer<S> for TraceLayer {
    type Service = TraceService<S>;
    fn layer(&self, inner: S) -> TraceService<S> {
        TraceService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`TraceLayer`] wraps around yours.
#[derive(Clone, Debug)]
pub struct TraceService<S> {
    inner: S,
    layer: TraceLayer,
}

/// What the request asked for: `?return_trace=` first, then the header.
fn return_mode<B>(req: &Request<B>) -> Option<ReturnTrace> {
    let from_query = req.uri().query().and_then(|q| {
        q.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == RETURN_TRACE_PARAM).then(|| ReturnTrace::parse(v))?
        })
    });
    from_query.or_else(|| {
        req.headers()
            .get(RETURN_TRACE_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(ReturnTrace::parse)
    })
}

fn media_type(headers: &http::HeaderMap) -> String {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

impl<S, ReqB, ResB> tower::Service<Request<ReqB>> for TraceService<S>
where
    S: tower::Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<TraceBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        // The clone that was made ready is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        let remote = crate::propagation::extract(req.headers());
        let mode = layer.return_trace.then(|| return_mode(&req)).flatten();
        let collector = mode.map(|_| Arc::new(Collector::new(layer.bounds, None)));
        #[cfg(feature = "axum")]
        let route = req
            .extensions()
            .get::<axum::extract::MatchedPath>()
            .map(|m| m.as_str().to_string());
        #[cfg(not(feature = "axum"))]
        let route: Option<String> = None;
        let path = route.unwrap_or_else(|| req.uri().path().to_string());
        let method = req.method().as_str().to_string();
        let span = layer
            .tracer
            .span(layer.kind, format!("{method} {path}"))
            .attribute("http.method", method)
            .attribute("http.route", path)
            .start_collecting(remote, collector.clone());
        let ctx = span.context();
        Box::pin(async move {
            let mut span = span;
            // `call` itself may do work (routing, a sync prologue): it runs in the scope
            // too, not only the future it returns.
            let fut = ctx.clone().sync_scope(|| inner.call(req));
            let resp = match ctx.clone().scope(fut).await {
                Ok(r) => r,
                Err(e) => {
                    span.set_error("the service failed");
                    span.end();
                    return Err(e);
                }
            };
            let status = resp.status();
            span.set_attribute("http.status_code", status.as_u16());
            if status.is_server_error() {
                span.set_error(format!("HTTP {}", status.as_u16()));
            }
            let (mut parts, body) = resp.into_parts();
            let tp = ctx.traceparent().to_header();
            parts
                .headers
                .insert(TRACERESPONSE, HeaderValue::from_str(&tp).expect("ASCII"));
            parts.headers.insert(
                TRACE_ID_HEADER,
                HeaderValue::from_str(&ctx.trace_id().to_string()).expect("ASCII"),
            );
            let body = body.map_err(Into::into);
            let (Some(mode), Some(collector)) = (mode, collector) else {
                span.end();
                return Ok(Response::from_parts(parts, body.boxed_unsync()));
            };
            match media_type(&parts.headers).as_str() {
                "application/json" => {
                    span.end();
                    let body = add_trace(&mut parts, body, &collector, mode, &ctx, &layer).await;
                    Ok(Response::from_parts(parts, body))
                }
                "text/event-stream" => {
                    let (tx, rx) = mpsc::channel(layer.bounds.max_steps.max(1));
                    // What was recorded before the stream began goes first.
                    let (earlier, _) = collector.snapshot();
                    for s in earlier {
                        let _ = tx.try_send(serde_json::to_value(&s).unwrap_or(Value::Null));
                    }
                    collector.set_live(tx);
                    let body = SseBody {
                        inner: body.boxed_unsync(),
                        ctx,
                        rx,
                        span: Some(span),
                        inner_done: false,
                        held: None,
                    };
                    Ok(Response::from_parts(parts, body.boxed_unsync()))
                }
                _ => {
                    span.end();
                    Ok(Response::from_parts(parts, body.boxed_unsync()))
                }
            }
        })
    }
}

/// Reads a JSON body (bounded), adds `"trace"` to it when it is an object, and returns
/// the new body. A body over the bound, or not a JSON object, goes out unchanged.
async fn add_trace<B>(
    parts: &mut http::response::Parts,
    body: B,
    collector: &Collector,
    mode: ReturnTrace,
    ctx: &SpanContext,
    layer: &TraceLayer,
) -> TraceBody
where
    B: Body<Data = Bytes, Error = BoxError> + Send + 'static,
{
    let max = layer.bounds.max_body_bytes;
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return body.boxed_unsync();
    }
    let mut body = Box::pin(body);
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Ok(data) = f.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
            Err(e) => {
                // The body failed: pass on what came and the error.
                let prefix = futures_util::stream::iter([Ok(Frame::data(buf.freeze())), Err(e)]);
                return StreamBody::new(prefix).boxed_unsync();
            }
        }
        if buf.len() > max {
            let prefix = futures_util::stream::iter([Ok(Frame::data(buf.freeze()))]);
            let rest = BodyStream::new(body);
            return StreamBody::new(prefix.chain(rest)).boxed_unsync();
        }
    }
    let bytes = buf.freeze();
    let out = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(mut o)) => {
            o.insert(
                "trace".into(),
                collector.render(
                    mode,
                    ctx.trace_id(),
                    layer.tracer.tenant(),
                    layer.tracer.level(),
                ),
            );
            Bytes::from(serde_json::to_vec(&o).expect("JSON serialises"))
        }
        _ => bytes,
    };
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(out.len()));
    Full::new(out).map_err(|e| match e {}).boxed_unsync()
}

pin_project_lite::pin_project! {
    /// An SSE response with the request's steps interleaved as `trace` events.
    struct SseBody {
        #[pin]
        inner: TraceBody,
        ctx: SpanContext,
        rx: mpsc::Receiver<Value>,
        span: Option<Span>,
        inner_done: bool,
        // A frame of the stream held back while the steps recorded making it go first.
        held: Option<Frame<Bytes>>,
    }
}

fn sse_trace_event(step: &Value) -> Frame<Bytes> {
    let mut s = String::from("event: trace\ndata: ");
    s.push_str(&step.to_string());
    s.push_str("\n\n");
    Frame::data(Bytes::from(s))
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if let Poll::Ready(Some(step)) = this.rx.poll_recv(cx) {
            return Poll::Ready(Some(Ok(sse_trace_event(&step))));
        }
        if let Some(frame) = this.held.take() {
            return Poll::Ready(Some(Ok(frame)));
        }
        if !*this.inner_done {
            // The stream's own code runs with the request's step as the current span.
            let inner = this.inner;
            match this.ctx.clone().sync_scope(|| inner.poll_frame(cx)) {
                Poll::Ready(None) => {
                    *this.inner_done = true;
                    if let Some(span) = this.span.take() {
                        span.end();
                    }
                }
                Poll::Ready(Some(Ok(frame))) => {
                    // Steps recorded while making this frame go out before it.
                    return match this.rx.try_recv() {
                        Ok(step) => {
                            *this.held = Some(frame);
                            Poll::Ready(Some(Ok(sse_trace_event(&step))))
                        }
                        Err(_) => Poll::Ready(Some(Ok(frame))),
                    };
                }
                other => return other,
            }
        }
        match this.rx.try_recv() {
            Ok(step) => Poll::Ready(Some(Ok(sse_trace_event(&step)))),
            Err(_) => Poll::Ready(None),
        }
    }
}
