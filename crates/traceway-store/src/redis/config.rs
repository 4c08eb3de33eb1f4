//! Settings of the Redis backend and the URLs it accepts.

use super::*;

/// Settings of the Redis backend.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://host:port/db` (standalone) or `redis+cluster://h1:p1,h2:p2` (Cluster seeds).
    pub url: String,
    /// Prepended to every key and channel, so several stores (or tests) share one Redis.
    pub prefix: String,
    /// How long data is kept.
    pub retention: Retention,
    /// What capture keeps.
    pub capture: CaptureConfig,
    /// Events a live subscriber may have waiting before it is dropped as lagging.
    pub subscriber_buffer: usize,
    /// How long one Redis command may take before the operation fails `Unavailable`.
    pub timeout: Duration,
    /// Index rows one listing examines at most. A filter no index answers (`has_error`,
    /// `min_duration_ms`, or a second field) is checked on each row; when this many rows
    /// did not fill the page, the listing returns what it found with a cursor to go on.
    pub list_scan_rows: usize,
}

impl RedisConfig {
    /// Defaults for a Redis at `url`.
    pub fn new(url: impl Into<String>) -> RedisConfig {
        RedisConfig {
            url: url.into(),
            prefix: "tw".into(),
            retention: Retention::default(),
            capture: CaptureConfig::default(),
            subscriber_buffer: 1024,
            timeout: Duration::from_secs(2),
            list_scan_rows: 5000,
        }
    }
}

/// Where a URL points.
pub(super) enum Target {
    Single(String),
    Cluster(Vec<String>),
}

pub(super) fn parse_url(url: &str) -> Result<Target, OpenError> {
    if let Some(rest) = url.strip_prefix("redis+cluster://") {
        let nodes: Vec<String> = rest
            .trim_end_matches('/')
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| format!("redis://{s}"))
            .collect();
        if nodes.is_empty() {
            return Err(OpenError::Config(format!("no cluster nodes in {url:?}")));
        }
        Ok(Target::Cluster(nodes))
    } else if ["redis://", "rediss://", "redis+unix://", "unix://"]
        .iter()
        .any(|p| url.starts_with(p))
    {
        Ok(Target::Single(url.to_string()))
    } else {
        Err(OpenError::Config(format!(
            "not a Redis URL: {url:?} (redis://host:port/db, redis+unix:///path?db=N or \
             redis+cluster://h1:p1,h2:p2)"
        )))
    }
}
