//! The live channel: the listener that feeds this process's hub, and the echo of its own writes.

use super::*;

/// Writers waiting for their own live message to come back through the channel: a write
/// returns only once this process's hub has published its events, so a subscriber that
/// subscribes after a write returns never receives that write's events late.
#[derive(Default)]
pub(super) struct EchoBoard {
    pub(super) waiters: Mutex<HashMap<String, tokio::sync::oneshot::Sender<()>>>,
    /// Whether the live channel is subscribed now; while it is not, writers do not wait.
    pub(super) up: AtomicBool,
}

pub(super) type Echoes = Arc<EchoBoard>;

/// How long a writer waits for its echo before answering anyway (the channel is down; its
/// listener reconnects).
pub(super) const ECHO_WAIT: Duration = Duration::from_secs(1);

/// Feeds this process's hub from the live channel; reconnects with backoff.
pub(super) async fn listen(
    urls: Vec<String>,
    channel: String,
    hub: crate::InProcessHub,
    echoes: Echoes,
    closed: Arc<AtomicBool>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    use futures::StreamExt;
    let mut ready = Some(ready);
    let mut backoff = Duration::from_millis(100);
    let mut next = 0usize;
    while !closed.load(Ordering::Relaxed) {
        let url = &urls[next % urls.len()];
        next += 1;
        let attempt = async {
            let client = ::redis::Client::open(url.as_str())?;
            let mut ps = client.get_async_pubsub().await?;
            ps.subscribe(&channel).await?;
            Ok::<_, RedisError>(ps)
        };
        let ps = match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(Ok(ps)) => ps,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "live channel: subscribe failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
            Err(_) => {
                tracing::warn!("live channel: subscribe timed out; retrying");
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        echoes.up.store(true, Ordering::Relaxed);
        match ready.take() {
            Some(r) => {
                let _ = r.send(());
            }
            // Subscribers that arrived while the channel was down may have missed events
            // committed before the subscription was back: they reconnect and replay too.
            None => hub.close_all(),
        }
        let mut stream = ps.into_on_message();
        while let Some(msg) = stream.next().await {
            // Borrowed, not copied: the message holds every event of the commit.
            let payload = msg.get_payload_bytes();
            let split = payload.iter().position(|b| *b == b'\n');
            let Some((head, body)) = split.map(|i| (&payload[..i], &payload[i + 1..])) else {
                tracing::warn!("live channel: bad message");
                continue;
            };
            let h = match serde_json::from_slice::<LiveHeader>(head) {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(error = %e, "live channel: bad message");
                    continue;
                }
            };
            if hub.subscriber_count() > 0 {
                match serde_json::from_slice::<Vec<Event>>(body) {
                    Ok(events) => {
                        let meta = TraceMeta {
                            agent_id: h.agent_id,
                            state: h.state.parse().ok(),
                        };
                        hub.publish(&h.tenant, &meta, &events);
                    }
                    Err(e) => tracing::warn!(error = %e, "live channel: bad events"),
                }
            }
            let waiter = echoes
                .waiters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&h.v);
            if let Some(w) = waiter {
                let _ = w.send(());
            }
        }
        // Whatever was published while the connection was down never reached this hub.
        echoes.up.store(false, Ordering::Relaxed);
        hub.close_all();
        if !closed.load(Ordering::Relaxed) {
            tracing::warn!("live channel: connection lost; reconnecting");
            tokio::time::sleep(backoff).await;
        }
    }
}

impl LiveFeed for RedisStore {
    fn subscribe(&self, tenant: &str, scope: crate::Scope) -> crate::Subscription {
        self.hub.subscribe(tenant, scope)
    }

    fn subscriber_count(&self) -> usize {
        self.hub.subscriber_count()
    }
}
