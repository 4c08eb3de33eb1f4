//! The connections of both listeners (HTTP and OTLP/gRPC), served by hyper-util's
//! HTTP/1+HTTP/2 connection builder with three bounds (issue 15, failure 3.6: 700 idle or
//! trickling sockets stayed open for 70 s, and 1,100 silent ones starved `/healthz`). ADR 033.
//!
//! - **Header read timeout** (`--header-read-timeout`): hyper's own HTTP/1 timer, which
//!   runs from when a connection waits for a request head until the head is complete, so a
//!   client trickling its headers is cut off. hyper has no such timer before it knows the
//!   protocol or for HTTP/2, so a connection must also *begin* its first request within it
//!   (a silent socket, or an HTTP/2 preface sent byte by byte, is closed).
//! - **Idle timeout** (`--idle-timeout`): a connection with no request in flight on which no
//!   byte moved either way for this long is closed (HTTP/2 gets a GOAWAY). It matters on
//!   HTTP/2, where hyper has no idle timer; on HTTP/1 the header timer starts as soon as a
//!   kept-alive connection waits for its next request, so an idle HTTP/1 connection closes
//!   after the shorter of the two. A request in flight (a `?wait=` long poll) or a stream
//!   that writes (SSE keep-alives) is never idle.
//! - **Connection limit** (`--max-connections`, per listener): past it the listener stops
//!   accepting (new connections wait in the kernel's backlog) and the connections it holds
//!   keep being served; one that closes makes room for the next.
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
    /// Connections served at once; past it the listener stops accepting.
    pub max_connections: u32,
}

/// Headers a request may carry before hyper refuses it itself (with an empty 431). Our own
/// limit, [`crate::limits::MAX_HEADERS`], is lower, so a request over it gets the JSON error.
const HYPER_MAX_HEADERS: usize = 4 * crate::limits::MAX_HEADERS;

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
    S: tower::Service<http::Request<Incoming>, Response = http::Response<B>>
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
        .max_headers(HYPER_MAX_HEADERS);
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
    /// Milliseconds since `epoch` of the last byte read or written.
    last_io_ms: AtomicU64,
    /// Requests whose handler has not answered yet.
    in_flight: AtomicUsize,
    /// Requests begun on this connection.
    begun: AtomicU64,
    /// Signalled when a request ends, so the idle deadline is computed again.
    changed: tokio::sync::Notify,
}

impl Activity {
    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_io_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn last_io(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last_io_ms.load(Ordering::Relaxed))
    }
}

/// Counts a request in flight until dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
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
    S: tower::Service<http::Request<Incoming>, Response = http::Response<B>>
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
        last_io_ms: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
        begun: AtomicU64::new(0),
        changed: tokio::sync::Notify::new(),
    });
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: activity.clone(),
    });
    let counted = activity.clone();
    let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
        counted.begun.fetch_add(1, Ordering::Relaxed);
        counted.in_flight.fetch_add(1, Ordering::Relaxed);
        let guard = InFlight(counted.clone());
        let call = tower::ServiceExt::oneshot(service.clone(), req);
        async move {
            let r = call.await;
            drop(guard);
            r
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
        let idle_since = activity.last_io();
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

/// A socket that records when bytes move.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
