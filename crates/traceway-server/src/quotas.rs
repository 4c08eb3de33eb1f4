//! Per-tenant quotas kept in this process (ADR 025): a token bucket of spans per second
//! for each tenant, and a count of its open live streams. With N replicas behind a
//! balancer a tenant gets up to N times either; the quotas bound what one tenant can make
//! one replica do, so that its flood does not take another tenant's share.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most tenants whose buckets are kept; past it, buckets that are full again (their
/// tenant has been quiet) are dropped, then all.
const MAX_TENANTS: usize = 100_000;

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The buckets. A rate of 0 means no quota.
pub struct IngestQuota {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl IngestQuota {
    /// `rate` spans per second per tenant, with bursts of up to `burst` spans.
    pub fn new(rate: u32, burst: u32) -> IngestQuota {
        IngestQuota {
            rate: f64::from(rate),
            burst: f64::from(burst.max(rate)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `spans` tokens from `tenant`'s bucket, or says how long until they would be
    /// there. A batch larger than the burst is let through when the bucket is full (and
    /// empties it), so that no batch is refused for ever.
    pub fn take(&self, tenant: &str, spans: u64) -> Result<(), Duration> {
        if self.rate <= 0.0 || spans == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let want = (spans as f64).min(self.burst);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_TENANTS && !buckets.contains_key(tenant) {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
            if buckets.len() >= MAX_TENANTS {
                buckets.clear();
            }
        }
        let b = buckets.entry(tenant.to_string()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * self.rate).min(self.burst);
        b.at = now;
        if b.tokens >= want {
            b.tokens -= want;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((want - b.tokens) / self.rate))
        }
    }
}

/// Open live streams (SSE connections) per tenant; 0 means no quota.
pub struct StreamQuota {
    max: u32,
    open: std::sync::Arc<Mutex<HashMap<String, u32>>>,
}

/// One open stream of a tenant; dropping it (when the stream ends) gives the slot back.
pub struct StreamPermit {
    tenant: String,
    open: Option<std::sync::Arc<Mutex<HashMap<String, u32>>>>,
}

impl StreamQuota {
    /// At most `max` open streams per tenant.
    pub fn new(max: u32) -> StreamQuota {
        StreamQuota {
            max,
            open: Default::default(),
        }
    }

    /// A slot for one more stream of `tenant`, or `None` when it holds `max` already.
    pub fn acquire(&self, tenant: &str) -> Option<StreamPermit> {
        if self.max == 0 {
            return Some(StreamPermit {
                tenant: String::new(),
                open: None,
            });
        }
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(tenant.to_string()).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(StreamPermit {
            tenant: tenant.to_string(),
            open: Some(self.open.clone()),
        })
    }

    /// Streams `tenant` holds open now.
    pub fn open(&self, tenant: &str) -> u32 {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(tenant).copied().unwrap_or(0)
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let Some(open) = self.open.take() else { return };
        let mut open = open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.tenant);
            }
        }
    }
}

/// How long a tenant's stored-bytes figure is reused before it is read again.
pub const STORED_BYTES_MAX_AGE: Duration = Duration::from_secs(1);

/// Stored bytes per tenant (ADR 040): the store's counter, read at most once a
/// [`STORED_BYTES_MAX_AGE`] per tenant on this replica, so a write costs no store read
/// most of the time. 0 means no quota.
pub struct StoredQuota {
    max: u64,
    seen: Mutex<HashMap<String, (u64, Instant)>>,
}

impl StoredQuota {
    /// At most `max` bytes of event log per tenant.
    pub fn new(max: u64) -> StoredQuota {
        StoredQuota {
            max,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(stored)` when `tenant` stores `max` bytes or more. A figure that cannot be
    /// read lets the write through (the write then meets the same store, and its error).
    pub async fn check(&self, store: &dyn traceway_store::Store, tenant: &str) -> Result<(), u64> {
        if self.max == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let cached = {
            let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.get(tenant)
                .filter(|(_, at)| now.duration_since(*at) < STORED_BYTES_MAX_AGE)
                .map(|(n, _)| *n)
        };
        let stored = match cached {
            Some(n) => n,
            None => match store.stored_bytes(tenant).await {
                Ok(n) => {
                    let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
                    if seen.len() >= MAX_TENANTS && !seen.contains_key(tenant) {
                        seen.retain(|_, (_, at)| now.duration_since(*at) < STORED_BYTES_MAX_AGE);
                        if seen.len() >= MAX_TENANTS {
                            seen.clear();
                        }
                    }
                    seen.insert(tenant.to_string(), (n, now));
                    n
                }
                Err(e) => {
                    tracing::warn!(tenant, error = %traceway_store::ErrorChain(&e), "stored bytes unreadable; quota not applied");
                    return Ok(());
                }
            },
        };
        if stored >= self.max {
            tracing::debug!(
                tenant,
                stored,
                max = self.max,
                "stored bytes quota exceeded"
            );
            Err(stored)
        } else {
            Ok(())
        }
    }

    fn message(&self, tenant: &str, stored: u64) -> String {
        format!(
            "tenant {tenant} stores {stored} bytes of events, at or over its quota of {} bytes; \
             delete traces or wait for the retention purge, then retry",
            self.max
        )
    }

    /// A REST write past the quota: 429 `quota_exceeded` with `Retry-After`.
    pub fn api_refusal(&self, tenant: &str, stored: u64) -> crate::error::ApiError {
        crate::error::ApiError {
            status: axum::http::StatusCode::TOO_MANY_REQUESTS,
            code: "quota_exceeded",
            message: self.message(tenant, stored),
        }
    }

    /// An OTLP export past the quota: 429 / `RESOURCE_EXHAUSTED` with `RetryInfo`.
    pub fn otlp_refusal(&self, tenant: &str, stored: u64) -> crate::otlp::Failure {
        crate::otlp::Failure {
            kind: crate::otlp::FailureKind::Overloaded,
            message: self.message(tenant, stored),
        }
    }
}

/// A stream past the tenant's quota of live streams: 429 `quota_exceeded` with
/// `Retry-After`.
pub fn stream_refusal(tenant: &str, max: u32) -> crate::error::ApiError {
    tracing::debug!(tenant, max, "live stream quota exceeded");
    crate::error::ApiError {
        status: axum::http::StatusCode::TOO_MANY_REQUESTS,
        code: "quota_exceeded",
        message: format!(
            "tenant {tenant} holds its quota of {max} live streams on this server; close one or retry later"
        ),
    }
}

fn message(tenant: &str, wait: Duration) -> String {
    tracing::debug!(
        tenant,
        wait_ms = wait.as_millis() as u64,
        "ingest quota exceeded"
    );
    format!(
        "tenant {tenant} is over its ingest quota of spans per second; retry in {} ms",
        wait.as_millis().max(1)
    )
}

/// A REST write past the quota: 429 `quota_exceeded` with `Retry-After`.
pub fn api_refusal(tenant: &str, wait: Duration) -> crate::error::ApiError {
    crate::error::ApiError {
        status: axum::http::StatusCode::TOO_MANY_REQUESTS,
        code: "quota_exceeded",
        message: message(tenant, wait),
    }
}

/// An OTLP export past the quota: 429 / `RESOURCE_EXHAUSTED` with `RetryInfo`.
pub fn otlp_refusal(tenant: &str, wait: Duration) -> crate::otlp::Failure {
    crate::otlp::Failure {
        kind: crate::otlp::FailureKind::Overloaded,
        message: message(tenant, wait),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_past_its_rate_waits_and_another_does_not() {
        let q = IngestQuota::new(100, 100);
        assert!(q.take("flood", 100).is_ok(), "a full burst passes");
        let wait = q.take("flood", 50).expect_err("over the quota");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert!(
            q.take("quiet", 100).is_ok(),
            "another tenant has its own bucket"
        );
        assert!(
            IngestQuota::new(0, 0).take("any", u64::MAX).is_ok(),
            "0 is no quota"
        );
    }

    #[test]
    fn stream_slots_are_per_tenant_and_given_back_when_a_stream_ends() {
        let q = StreamQuota::new(2);
        let a = q.acquire("t").expect("one");
        let _b = q.acquire("t").expect("two");
        assert!(q.acquire("t").is_none(), "a third is over the quota");
        assert!(q.acquire("other").is_some(), "another tenant has its own");
        drop(a);
        assert_eq!(q.open("t"), 1);
        assert!(q.acquire("t").is_some(), "a slot came back");
        assert!(StreamQuota::new(0).acquire("t").is_some(), "0 is no quota");
    }

    #[test]
    fn a_batch_larger_than_the_burst_passes_on_a_full_bucket() {
        let q = IngestQuota::new(10, 10);
        assert!(q.take("t", 1000).is_ok());
        assert!(q.take("t", 1).is_err());
    }
}
