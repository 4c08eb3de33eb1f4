//! The connections of both listeners (HTTP and OTLP/gRPC), served by hyper-util's
//! HTTP/1+HTTP/2 connection builder with three bounds (issue 15, failure 3.6: 700 idle or
//! trickling sockets stayed open for 70 s, and 1,100 silent ones starved `/healthz`). ADR 033.
//!
//! - **Header read timeout** (`--header-read-timeout`): hyper's own HTTP/1 timer, which
//!   runs from when a connection waits for a request head until the head is complete, so a
//!   client trickling its headers is cut off. hyper has no such timer before it knows the
//!   protocol or for HTTP/2, so a connection must also *begin* its first request within it
//!   (a silent socket, an HTTP/2 preface or header block sent byte by byte, is closed).
//! - **Idle timeout** (`--idle-timeout`): a connection on which no request has been in
//!   flight for this long is closed (HTTP/2 gets a GOAWAY). A request is in flight from the
//!   moment its head is complete until its response body has ended, so a `?wait=` long
//!   poll or an SSE stream is never idle, while bytes that begin no request (a trickled
//!   HTTP/2 header block, PING frames) do not keep a connection open. It matters on HTTP/2,
//!   where hyper has no idle timer; on HTTP/1 the header timer starts as soon as a
//!   kept-alive connection waits for its next request, so an idle HTTP/1 connection closes
//!   after the shorter of the two.
//! - **Body read timeout** (`--body-read-timeout`): a request's whole body must arrive
//!   within this time of its head. A request whose body is trickled is in flight (its
//!   handler is reading it), so neither timeout above cuts it; past this one the body
//!   ([`RequestBody`]) ends with a [`BodyTimeout`] error, which the handlers answer with a
//!   408 (the JSON error; a `google.rpc.Status` on `/v1/*`) and gRPC with
//!   `DEADLINE_EXCEEDED`. An HTTP/1 408 carries `connection: close`.
//! - **Connection limit** (`--max-connections`, per listener): past it the listener stops
//!   accepting (new connections wait in the kernel's backlog) and the connections it holds
//!   keep being served; one that closes makes room for the next.
//!
//! hyper answers an HTTP/1 request head it cannot parse (a request target over its fixed
//! 64 KiB, a head over its read buffer or past its header count, a malformed line) itself,
//! with an empty body. [`Tracked`] rewrites those answers on their way to the socket into
//! the JSON error every other refusal carries (issue 15, failure 3.9; ADR 033).
//!
//! A closed connection is first shut down gracefully (in-flight requests finish), then
//! dropped if it has not ended one header-read timeout later.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

/// The bounds of one listener's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Time to send a request's headers (HTTP/1), and to begin the first request.
    pub header_read_timeout: Duration,
    /// A connection with nothing in flight and no traffic this long is closed.
    pub idle_timeout: Duration,
    /// Time from a request's head to the end of its body.
    pub body_read_timeout: Duration,
    /// Connections served at once; past it the listener stops accepting.
    pub max_connections: u32,
}

/// Headers a request may carry before hyper refuses it itself (with a 431 that [`Tracked`]
/// gives the JSON error). Our own limit, [`crate::limits::MAX_HEADERS`], is lower, so a
/// request over it gets the middleware's more precise message.
pub const HYPER_MAX_HEADERS: usize = 4 * crate::limits::MAX_HEADERS;

/// The largest request head hyper reads before refusing it (431): its read buffer, set
/// explicitly so the figure in the error message is the one in force.
pub const HYPER_MAX_HEAD_BYTES: usize = 400 * 1024;

/// The longest request target hyper's HTTP/1 parser accepts (fixed in hyper: 414 past it).
pub const HYPER_MAX_URI_BYTES: usize = u16::MAX as usize - 1;

/// A request body that did not arrive within `--body-read-timeout` of its head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTimeout {
    /// The timeout in force.
    pub limit: Duration,
}

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body was not received within {} of its headers",
            humantime::format_duration(self.limit)
        )
    }
}

impl std::error::Error for BodyTimeout {}

impl BodyTimeout {
    /// The [`BodyTimeout`] in `err`'s chain of sources (axum and tonic wrap body errors).
    pub fn find<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a BodyTimeout> {
        let mut next = Some(err);
        while let Some(e) = next {
            if let Some(t) = e.downcast_ref::<BodyTimeout>() {
                return Some(t);
            }
            next = e.source();
        }
        None
    }
}

/// Boxed errors, as hyper and tower pass them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request's body with its read deadline: once the deadline passes while the body is
/// still awaited, it yields a [`BodyTimeout`] error. The timer is made only when the body
/// first has to be waited for, so a body that is already there costs none.
pub struct RequestBody {
    inner: Incoming,
    deadline: Instant,
    limit: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl RequestBody {
    fn new(inner: Incoming, limit: Duration) -> RequestBody {
        RequestBody {
            inner,
            deadline: Instant::now() + limit,
            limit,
            timer: None,
        }
    }
}

impl http_body::Body for RequestBody {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout { limit: this.limit })))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Which protocols a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocols {
    /// HTTP/1.1 and HTTP/2 (prior knowledge): the REST API and OTLP/HTTP.
    Http1And2,
    /// HTTP/2 only: OTLP/gRPC.
    Http2Only,
}

/// Serves `service` on every connection `listener` accepts, within `limits`, until
/// `shutdown` resolves; then stops accepting, shuts every connection down gracefully and
/// returns when all have ended.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    limits: ConnLimits,
    protocols: Protocols,
    open: Gauge<i64>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()>
where
    S: tower::Service<http::Request<RequestBody>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(HYPER_MAX_HEADERS)
        .max_buf_size(HYPER_MAX_HEAD_BYTES);
    builder.http2().timer(TokioTimer::new());
    if protocols == Protocols::Http2Only {
        builder = builder.http2_only();
    }
    let builder = Arc::new(builder);
    let permits = Arc::new(Semaphore::new(limits.max_connections as usize));
    let (close_tx, close_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // The permit is taken before accepting: at the limit, new connections wait in the
        // backlog instead of being accepted and starved.
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and friends: wait a little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let service = service.clone();
        let close = close_rx.clone();
        let open = open.clone();
        open.inc();
        tokio::spawn(async move {
            connection(stream, service, &builder, limits, close).await;
            open.dec();
            drop(permit);
        });
    }
    drop(listener);
    close_tx.send_replace(true);
    // Every connection holds a permit until it ends.
    let _ = permits.acquire_many(limits.max_connections).await;
    Ok(())
}

/// What a connection did, for the idle and first-request checks.
struct Activity {
    epoch: Instant,
    /// Milliseconds since `epoch` when the last request ended (its response body was done).
    last_end_ms: AtomicU64,
    /// Requests whose response has not ended yet (handler running, or body being sent).
    in_flight: AtomicUsize,
    /// Requests begun on this connection.
    begun: AtomicU64,
    /// Signalled when a request ends, so the idle deadline is computed again.
    changed: tokio::sync::Notify,
}

impl Activity {
    fn ended_now(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_end_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn last_end(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last_end_ms.load(Ordering::Relaxed))
    }
}

/// Counts a request in flight until dropped; it lives in the response body, so a streamed
/// answer (SSE, a page of spans) is in flight until its last byte is handed to hyper.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.ended_now();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.changed.notify_one();
    }
}

async fn connection<S, B>(
    stream: TcpStream,
    service: S,
    builder: &auto::Builder<TokioExecutor>,
    limits: ConnLimits,
    mut close: watch::Receiver<bool>,
) where
    S: tower::Service<http::Request<RequestBody>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let activity = Arc::new(Activity {
        epoch: Instant::now(),
        last_end_ms: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
        begun: AtomicU64::new(0),
        changed: tokio::sync::Notify::new(),
    });
    let io = TokioIo::new(Tracked {
        inner: stream,
        pending: None,
    });
    let counted = activity.clone();
    let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
        counted.begun.fetch_add(1, Ordering::Relaxed);
        counted.in_flight.fetch_add(1, Ordering::Relaxed);
        let guard = InFlight(counted.clone());
        let http1 = req.version() < http::Version::HTTP_2;
        let req = req.map(|body| RequestBody::new(body, limits.body_read_timeout));
        let call = tower::ServiceExt::oneshot(service.clone(), req);
        async move {
            // The guard moves into the body: dropped when hyper has sent it (or the
            // stream was reset), or here if the service failed.
            call.await.map(|mut resp| {
                // Only a body read timeout answers 408. The rest of that body is never
                // read, so the connection cannot carry another request (RFC 9110, 15.5.9).
                if http1 && resp.status() == http::StatusCode::REQUEST_TIMEOUT {
                    resp.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                }
                resp.map(|body| {
                    http_body_util::BodyExt::map_frame(body, move |frame| {
                        let _in_flight = &guard;
                        frame
                    })
                })
            })
        }
    });
    let conn = builder.serve_connection(io, svc);
    let mut conn = std::pin::pin!(conn);
    let first_request_by = activity.epoch + limits.header_read_timeout;
    // Set once the connection is being shut down: it is dropped if still open then.
    let mut drop_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let begun = activity.begun.load(Ordering::Relaxed);
        let busy = activity.in_flight.load(Ordering::Relaxed) > 0;
        let idle_since = activity.last_end();
        match drop_at {
            Some(at) if now >= at => {
                tracing::debug!("connection did not close in time; dropped");
                return;
            }
            None if (begun == 0 && now >= first_request_by)
                || (begun > 0 && !busy && now >= idle_since + limits.idle_timeout) =>
            {
                tracing::debug!(requests = begun, "closing an idle connection");
                conn.as_mut().graceful_shutdown();
                drop_at = Some(now + limits.header_read_timeout);
                continue;
            }
            _ => {}
        }
        let check_at = match drop_at {
            Some(at) => at,
            None if begun == 0 => first_request_by,
            // A request in flight: looked at again when it ends (`changed`).
            None if busy => now + limits.idle_timeout,
            None => idle_since + limits.idle_timeout,
        };
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = close.wait_for(|c| *c), if drop_at.is_none() => {
                conn.as_mut().graceful_shutdown();
                drop_at = Some(Instant::now() + limits.header_read_timeout);
            }
            _ = activity.changed.notified() => {}
            _ = tokio::time::sleep_until(check_at) => {}
        }
    }
}

/// The socket, with hyper's own HTTP/1 error answers (an empty-bodied 400, 414 or 431
/// written when a request head cannot be parsed) rewritten into the JSON error.
///
/// hyper writes such an answer as one whole head with `content-length: 0` and no
/// `content-type`, then closes the connection. Every answer of ours to those statuses has
/// a JSON body, so a head of that shape can only be hyper's. The rewrite keeps hyper's
/// header lines, adds the JSON body, and writes it in place of the head; hyper is told its
/// bytes were written, and the rest of ours is written on the following calls (hyper
/// flushes and shuts down next, both of which finish it first).
struct Tracked {
    inner: TcpStream,
    /// The rewritten answer, and how much of it is written.
    pending: Option<(Vec<u8>, usize)>,
}

impl Tracked {
    /// Writes what is left of a rewritten answer; ready once it is all written.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while let Some((bytes, done)) = &mut self.pending {
            if *done == bytes.len() {
                self.pending = None;
                break;
            }
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*done..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()))
                }
                Poll::Ready(Ok(n)) => *done += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// hyper's error answer rewritten with the JSON error, or `None` if `buf` is not one.
fn rewrite_parse_error(buf: &[u8]) -> Option<Vec<u8>> {
    let status = buf
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| buf.strip_prefix(b"HTTP/1.0 "))?
        .get(..4)?;
    let (code, message) = match status {
        b"400 " => (
            "bad_request",
            "the request head could not be parsed as HTTP/1.1".to_string(),
        ),
        b"414 " => (
            "uri_too_long",
            format!(
                "the request target is over {HYPER_MAX_URI_BYTES} bytes; the limit is {}",
                crate::limits::MAX_URI_BYTES
            ),
        ),
        b"431 " => (
            "headers_too_large",
            format!(
                "the request head is over {HYPER_MAX_HEAD_BYTES} bytes or {HYPER_MAX_HEADERS} \
                 header fields; the limits are {} fields and {} bytes",
                crate::limits::MAX_HEADERS,
                crate::limits::MAX_HEADER_BYTES
            ),
        ),
        _ => return None,
    };
    // One whole head, nothing after it: hyper's answer, never a response with a body.
    let head = std::str::from_utf8(buf).ok()?.strip_suffix("\r\n\r\n")?;
    if head.contains("\r\n\r\n") {
        return None;
    }
    let lines: Vec<&str> = head.split("\r\n").collect();
    let is =
        |l: &&str, name: &str| l.len() >= name.len() && l[..name.len()].eq_ignore_ascii_case(name);
    if lines.iter().any(|l| is(l, "content-type:"))
        || !lines
            .iter()
            .any(|l| is(l, "content-length:") && l["content-length:".len()..].trim() == "0")
    {
        return None;
    }
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    let mut out = String::with_capacity(head.len() + body.len() + 64);
    for l in lines {
        if is(&l, "content-length:") {
            out.push_str("content-type: application/json\r\n");
            out.push_str(&format!("content-length: {}\r\n", body.len()));
        } else {
            out.push_str(l);
            out.push_str("\r\n");
        }
    }
    out.push_str("\r\n");
    out.push_str(&body);
    Some(out.into_bytes())
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        std::task::ready!(self.drain(cx))?;
        if let Some(answer) = rewrite_parse_error(buf) {
            self.pending = Some((answer, 0));
            // Written as far as the socket takes it now; the rest on flush or shutdown.
            if let Poll::Ready(Err(e)) = self.drain(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        std::task::ready!(self.drain(cx))?;
        // hyper's error answer is a head alone, so it is the only slice with bytes.
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (filled.next(), filled.next()) {
            if rewrite_parse_error(only).is_some() {
                return self.poll_write(cx, only);
            }
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::rewrite_parse_error;

    #[test]
    fn only_hypers_empty_error_heads_are_rewritten() {
        let hyper = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\n\
                      content-length: 0\r\ndate: Wed, 02 Dec 2026 14:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(rewrite_parse_error(hyper).expect("rewritten")).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").expect("a head");
        assert!(head.starts_with("HTTP/1.1 431 "), "{head}");
        assert!(
            head.contains("connection: close") && head.contains("date: "),
            "{head}"
        );
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(v["error"]["code"], "headers_too_large");
        // Ours: a body, a content type; other statuses; a head with its body after it.
        for not in [
            &b"HTTP/1.1 431 X\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 414 X\r\ncontent-length: 12\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 X\r\ncontent-length: 0\r\n\r\nHTTP/1.1 400 X\r\n\r\n",
            b"HTTP/1.1 400 X\r\ncontent-length: 0\r\n",
        ] {
            assert!(
                rewrite_parse_error(not).is_none(),
                "{}",
                String::from_utf8_lossy(not)
            );
        }
    }
}
