//! The CLI client: `traceway ls`, `show`, `rm`, `cleanup` against a running server.

use std::fmt::Write as _;

use clap::Args;
use serde_json::Value;
use traceway_core::{SpanNode, StatusCode, Trace};

/// Where the server is, and how to print.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Base URL of the Traceway server.
    #[arg(long, env = "TRACEWAY_SERVER", default_value = "http://127.0.0.1:4318")]
    pub server: String,
    /// Tenant to act for (sent as X-Traceway-Tenant).
    #[arg(long, env = "TRACEWAY_TENANT")]
    pub tenant: Option<String>,
    /// Print the server's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

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

struct Client {
    http: reqwest::Client,
    args: ClientArgs,
}

impl Client {
    fn new(args: ClientArgs) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()?;
        Ok(Client { http, args })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.args.server.trim_end_matches('/'))
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> anyhow::Result<(reqwest::StatusCode, String)> {
        let req = match &self.args.tenant {
            Some(t) => req.header(crate::extract::TENANT_HEADER, t),
            None => req,
        };
        let resp = req
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach {}: {e}", self.args.server))?;
        let status = resp.status();
        let body = resp.text().await?;
        if !status.is_success() {
            let msg = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                .unwrap_or(body);
            anyhow::bail!("{status}: {msg}");
        }
        Ok((status, body))
    }
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
    if c.args.json {
        return Ok(body);
    }
    let v: Value = serde_json::from_str(&body)?;
    let trace: Trace = serde_json::from_value(v["trace"].clone())?;
    Ok(render_trace(&trace, &v["spans"]))
}

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
    let mut progress = Progress {
        tty: std::io::stderr().is_terminal(),
        shown: false,
    };
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

/// `[#####.....] 50/100 traces (50%)`.
pub fn progress_bar(done: u64, total: u64, width: u64) -> String {
    let total = total.max(done).max(1);
    let filled = (done * width / total) as usize;
    format!(
        "[{}{}] {done}/{total} traces ({}%)",
        "#".repeat(filled),
        ".".repeat(width as usize - filled),
        done * 100 / total
    )
}

/// Progress of a long cleanup on stderr.
struct Progress {
    tty: bool,
    shown: bool,
}

impl Progress {
    const WIDTH: u64 = 30;

    fn show(&mut self, done: u64, total: u64) {
        use std::io::Write;
        self.shown = true;
        let total = total.max(done).max(1);
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r{}", progress_bar(done, total, Self::WIDTH));
        } else {
            let _ = writeln!(err, "deleted {done}/{total} traces");
        }
        let _ = err.flush();
    }

    fn finish(&mut self, done: u64) {
        if self.shown {
            self.show(done, done);
            if self.tty {
                eprintln!();
            }
        }
    }
}

fn fmt_ms(ms: Option<f64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) if ms < 1000.0 => format!("{ms:.0}ms"),
        Some(ms) => format!("{:.2}s", ms / 1000.0),
    }
}

/// The table `traceway ls` prints.
pub fn trace_table(traces: &[Trace]) -> String {
    let header = [
        "TRACE ID", "STATE", "NAME", "AGENT", "SPANS", "ERRORS", "TOKENS", "DURATION", "CREATED",
    ];
    let rows: Vec<[String; 9]> = traces
        .iter()
        .map(|t| {
            [
                t.trace_id.to_string(),
                t.state.to_string(),
                t.name.clone().unwrap_or_else(|| "-".into()),
                t.agent_id.clone().unwrap_or_else(|| "-".into()),
                t.rollups.span_count.to_string(),
                t.rollups.error_count.to_string(),
                t.rollups.total_tokens.to_string(),
                fmt_ms(t.rollups.duration_ms),
                t.created_at
                    .to_rfc3339()
                    .chars()
                    .take(19)
                    .collect::<String>()
                    .replace('T', " "),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", parts.join("  ").trim_end());
    };
    line(header.to_vec());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
    if traces.is_empty() {
        out.push_str("(no traces)\n");
    }
    out
}

/// What `traceway show` prints: a header, then one line per span indented by depth.
pub fn render_trace(t: &Trace, spans: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "trace     {}", t.trace_id);
    let _ = writeln!(out, "state     {}", t.state);
    for (k, v) in [
        ("name", &t.name),
        ("agent", &t.agent_id),
        ("session", &t.session_id),
        ("user", &t.user_id),
    ] {
        if let Some(v) = v {
            let _ = writeln!(out, "{k:<9} {v}");
        }
    }
    let r = &t.rollups;
    let _ = writeln!(
        out,
        "spans     {}   errors {}   tokens {} (in {} / out {})   duration {}",
        r.span_count,
        r.error_count,
        r.total_tokens,
        r.input_tokens,
        r.output_tokens,
        fmt_ms(r.duration_ms)
    );
    out.push('\n');
    let nodes: Vec<SpanNodeView> = serde_json::from_value(spans.clone()).unwrap_or_default();
    for n in &nodes {
        render_node(&mut out, n);
    }
    if nodes.is_empty() {
        out.push_str("(no spans)\n");
    }
    out
}

/// A span node as read back from JSON (the server's [`SpanNode`]).
#[derive(serde::Deserialize, Default)]
struct SpanNodeView {
    #[serde(flatten)]
    span: Option<traceway_core::Span>,
    #[serde(default)]
    depth: usize,
    #[serde(default)]
    children: Vec<SpanNodeView>,
}

fn render_node(out: &mut String, n: &SpanNodeView) {
    if let Some(s) = &n.span {
        let mut line = format!("{}{:<9} {}", "  ".repeat(n.depth), s.kind.as_str(), s.name);
        if let Some(llm) = &s.llm {
            if let Some(m) = &llm.model {
                let _ = write!(line, "  {m}");
            }
            if llm.tokens_total() > 0 {
                let _ = write!(line, "  {} tok", llm.tokens_total());
            }
        }
        if let Some(tool) = s.tool.as_ref().and_then(|t| t.name.as_ref()) {
            let _ = write!(line, "  tool={tool}");
        }
        if let Some(r) = &s.retrieval {
            let _ = write!(line, "  {} docs", r.documents.len());
        }
        let duration = s.duration().map(|d| d.as_secs_f64() * 1000.0);
        let status = match (s.end_time, s.status.code) {
            (None, _) => "running".to_string(),
            (_, StatusCode::Error) => {
                format!("error: {}", s.status.message.clone().unwrap_or_default())
            }
            (_, StatusCode::Ok) => "ok".into(),
            (_, StatusCode::Unset) => "done".into(),
        };
        let _ = writeln!(out, "{line}  {}  {status}", fmt_ms(duration));
    }
    for c in &n.children {
        render_node(out, c);
    }
}

// Keep the server's node type and this view in step.
const _: fn(SpanNode) = |_| {};

#[cfg(test)]
mod tests {
    #[test]
    fn the_progress_bar_fills_in_proportion() {
        assert_eq!(
            super::progress_bar(0, 10, 10),
            "[..........] 0/10 traces (0%)"
        );
        assert_eq!(
            super::progress_bar(5, 10, 10),
            "[#####.....] 5/10 traces (50%)"
        );
        assert_eq!(
            super::progress_bar(12, 10, 10),
            "[##########] 12/12 traces (100%)",
            "a total that grew meanwhile"
        );
    }
}
