//! The one-shot commands: `ls`, `show`, `rm`, `cleanup`.

use clap::Args;
use serde_json::Value;
use traceway_core::{StateChange, Trace};

use crate::client::{Client, ClientArgs};
use crate::progress::Progress;
use crate::render::{render_trace, trace_table};

/// Filters of `traceway ls`.
#[derive(Debug, Clone, Args)]
pub struct LsArgs {
    /// How many traces (newest first).
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Only this agent.
    #[arg(long)]
    pub agent: Option<String>,
    /// Only this state (RUNNING, COMPLETED, …).
    #[arg(long)]
    pub state: Option<String>,
    /// Only this user.
    #[arg(long)]
    pub user: Option<String>,
    /// Only this session.
    #[arg(long)]
    pub session: Option<String>,
}

/// `traceway ls`.
pub async fn ls(args: ClientArgs, filter: LsArgs) -> anyhow::Result<String> {
    let c = Client::new(args)?;
    let mut query: Vec<(&str, String)> = vec![("limit", filter.limit.to_string())];
    for (k, v) in [
        ("agent_id", filter.agent),
        ("state", filter.state),
        ("user_id", filter.user),
        ("session_id", filter.session),
    ] {
        if let Some(v) = v {
            query.push((k, v));
        }
    }
    let (_, body) = c
        .send(c.http.get(c.url("/api/v1/traces")).query(&query))
        .await?;
    if c.args.json {
        return Ok(body);
    }
    let v: Value = serde_json::from_str(&body)?;
    let traces: Vec<Trace> = serde_json::from_value(v["traces"].clone())?;
    Ok(trace_table(&traces))
}

/// `traceway show ID`.
pub async fn show(args: ClientArgs, id: &str) -> anyhow::Result<String> {
    let c = Client::new(args)?;
    let (_, body) = c
        .send(c.http.get(c.url(&format!("/api/v1/traces/{id}"))))
        .await?;
    let mut v: Value = serde_json::from_str(&body)?;
    if v.get("span_page").is_some() {
        // Too large for one answer (ADR 031): read every page, then the whole tree.
        v = whole_tree(&c, id, v).await?;
    } else if c.args.json {
        return Ok(body);
    }
    if c.args.json {
        return Ok(v.to_string());
    }
    let trace: Trace = serde_json::from_value(v["trace"].clone())?;
    // The state changes tell a reopened trace's story (orphaned, then resumed: ADR 022).
    let (_, events) = c
        .send(c.http.get(c.url(&format!(
            "/api/v1/traces/{id}/events?type=state_changed&limit={HISTORY_LIMIT}"
        ))))
        .await?;
    let events: Value = serde_json::from_str(&events)?;
    let history: Vec<StateChange> = events["events"]
        .as_array()
        .map(|es| {
            es.iter()
                .filter_map(|e| serde_json::from_value(e["payload"].clone()).ok())
                .collect()
        })
        .unwrap_or_default();
    Ok(render_trace(&trace, &history, &v["spans"]))
}

/// Spans per page when `show` reads a trace page by page (the server's maximum).
const SPAN_PAGE: u32 = 10_000;

/// A trace answered page by page, read to its last page and answered as one tree (a span
/// read while running comes again, ended, on a later page: the later form wins).
async fn whole_tree(c: &Client, id: &str, first: Value) -> anyhow::Result<Value> {
    let mut spans: std::collections::HashMap<String, traceway_core::Span> = Default::default();
    let mut page = first;
    for _ in 0..MAX_SPAN_PAGES {
        for s in page["spans"].as_array().into_iter().flatten() {
            let span: traceway_core::Span = serde_json::from_value(s.clone())?;
            spans.insert(span.span_id.to_string(), span);
        }
        let Some(next) = page["span_page"]["next_cursor"].as_str() else {
            let tree = traceway_core::span_tree(spans.into_values().collect());
            return Ok(serde_json::json!({
                "trace": page["trace"],
                "level": page["level"],
                "spans": tree,
            }));
        };
        let (_, body) = c
            .send(c.http.get(c.url(&format!(
                "/api/v1/traces/{id}?span_limit={SPAN_PAGE}&span_cursor={next}"
            ))))
            .await?;
        page = serde_json::from_str(&body)?;
    }
    anyhow::bail!("trace {id} still had more spans after {MAX_SPAN_PAGES} pages")
}

/// The most pages `show` reads of one trace: a trace holds at most 100,000 spans (10 full
/// pages); the rest is room for spans read again once they ended.
const MAX_SPAN_PAGES: usize = 100;

/// How many state changes `show` reads for its history line (a trace has a handful; one
/// reopened more often than this shows its first ones).
const HISTORY_LIMIT: usize = 50;

/// `traceway rm ID`.
pub async fn rm(args: ClientArgs, id: &str) -> anyhow::Result<String> {
    let c = Client::new(args)?;
    c.send(c.http.delete(c.url(&format!("/api/v1/traces/{id}"))))
        .await?;
    Ok(if c.args.json {
        format!("{{\"deleted\":\"{id}\"}}")
    } else {
        format!("deleted {id}")
    })
}

/// `traceway cleanup --older-than 7d`: deletes the tenant's finished traces that ended
/// longer ago than that, `batch` at a time, showing progress on stderr (a bar on a
/// terminal, a line per batch otherwise) when it takes more than one batch.
pub async fn cleanup(
    args: ClientArgs,
    older_than: std::time::Duration,
    batch: u64,
) -> anyhow::Result<String> {
    use std::io::IsTerminal;
    let c = Client::new(args)?;
    let days = older_than.as_secs_f64() / 86_400.0;
    let batch = batch.max(1);
    let mut progress = Progress::new(std::io::stderr().is_terminal());
    let mut deleted = 0u64;
    loop {
        let body = serde_json::json!({"older_than_days": days, "limit": batch});
        let (_, answer) = c
            .send(c.http.post(c.url("/api/v1/traces/cleanup")).json(&body))
            .await?;
        let v: Value = serde_json::from_str(&answer)?;
        let n = v["deleted"].as_u64().unwrap_or(0);
        let remaining = v["remaining"].as_u64().unwrap_or(0);
        deleted += n;
        if n == 0 || remaining == 0 {
            progress.finish(deleted);
            break;
        }
        progress.show(deleted, deleted + remaining);
    }
    let age = humantime::format_duration(older_than);
    Ok(if c.args.json {
        serde_json::json!({"deleted": deleted}).to_string()
    } else {
        format!("deleted {deleted} finished traces that ended more than {age} ago")
    })
}
