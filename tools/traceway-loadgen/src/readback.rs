//! Reading the traces back over the REST API: every one queryable, one checked whole.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;
use traceway_core::TraceId;

use crate::SPANS_PER_TRACE;

/// Polls the listing until every trace is there, ended, with all its spans counted.
/// Returns (traces, spans) seen.
pub(crate) async fn wait_queryable(
    client: &reqwest::Client,
    base: &str,
    tenant: &str,
    traces: u64,
    spans: u64,
    deadline: Instant,
) -> anyhow::Result<(u64, u64)> {
    loop {
        let (mut seen_traces, mut seen_spans) = (0u64, 0u64);
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!("{base}/api/v1/traces?state=COMPLETED&limit=1000");
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let v: Value = client
                .get(&url)
                .header("x-traceway-tenant", tenant)
                .send()
                .await
                .context("list traces")?
                .error_for_status()?
                .json()
                .await?;
            for t in v["traces"].as_array().context("traces")? {
                seen_traces += 1;
                seen_spans += t["rollups"]["span_count"].as_u64().unwrap_or(0);
            }
            match v["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        if seen_traces >= traces && seen_spans >= spans {
            return Ok((seen_traces, seen_spans));
        }
        if Instant::now() > deadline {
            bail!(
                "timed out: {seen_traces}/{traces} traces and {seen_spans}/{spans} spans queryable"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One trace read back whole: 11 spans under one agent root, tokens and documents kept.
pub(crate) async fn check_sample(
    client: &reqwest::Client,
    base: &str,
    tenant: &str,
    id: TraceId,
) -> anyhow::Result<()> {
    let v: Value = client
        .get(format!("{base}/api/v1/traces/{id}"))
        .header("x-traceway-tenant", tenant)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let t = &v["trace"];
    let ok = t["state"] == "COMPLETED"
        && t["rollups"]["span_count"] == SPANS_PER_TRACE as u64
        && t["rollups"]["input_tokens"] == 850 + 1400 + 1900
        && v["spans"].as_array().map(Vec::len) == Some(1)
        && v["spans"][0]["kind"] == "agent";
    if !ok {
        bail!("trace {id} does not read back as sent: {t}");
    }
    Ok(())
}
