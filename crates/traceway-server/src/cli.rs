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

pub(crate) struct Client {
    pub(crate) http: reqwest::Client,
    pub(crate) args: ClientArgs,
}

impl Client {
    pub(crate) fn new(args: ClientArgs) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()?;
        Ok(Client { http, args })
    }

    /// A client for long-lived streams: no overall timeout, only on connecting.
    fn new_streaming(args: ClientArgs) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()?;
        Ok(Client { http, args })
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.args.server.trim_end_matches('/'))
    }

    pub(crate) async fn send(
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
    ms.map_or_else(|| "-".into(), traceway_core::format::human_duration)
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
        let status = traceway_core::format::span_status(s);
        let _ = writeln!(out, "{}", span_line(s, n.depth, &status));
    }
    for c in &n.children {
        render_node(out, c);
    }
}

/// One step as `show` and `tail` print it: indented by depth, what it did (the same
/// summary as `format=streaming`), its duration once ended, and `status`.
fn span_line(s: &traceway_core::Span, depth: usize, status: &str) -> String {
    let mut line = format!(
        "{}{}",
        "  ".repeat(depth),
        traceway_core::format::span_summary(s)
    );
    if let Some(d) = s.duration() {
        let _ = write!(
            line,
            "  {}",
            traceway_core::format::human_duration(d.as_secs_f64() * 1000.0)
        );
    }
    format!("{line}  {status}")
}

// Keep the server's node type and this view in step.
const _: fn(SpanNode) = |_| {};

/// Renders live events as `traceway tail` prints them: one line per step, indented by
/// depth, with kind, name, duration, tokens and status (coloured on a terminal).
pub struct TailPrinter {
    color: bool,
    tenant_wide: bool,
    depth: std::collections::HashMap<traceway_core::SpanId, usize>,
}

impl TailPrinter {
    /// A printer; `tenant_wide` prefixes each line with the trace id.
    pub fn new(color: bool, tenant_wide: bool) -> TailPrinter {
        TailPrinter {
            color,
            tenant_wide,
            depth: Default::default(),
        }
    }

    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    fn status(&self, s: &traceway_core::Span) -> String {
        let word = traceway_core::format::span_status(s);
        let code = match (s.end_time, s.status.code) {
            (None, _) => "33",
            (_, StatusCode::Error) => "31",
            _ => "32",
        };
        self.paint(code, &word)
    }

    /// The line for one event (None for events it does not show).
    pub fn line(&mut self, e: &traceway_core::Event) -> Option<String> {
        use traceway_core::EventBody;
        let body = match &e.body {
            EventBody::SpanStarted(s) | EventBody::SpanEnded(s) => {
                let depth = s
                    .parent_span_id
                    .and_then(|p| self.depth.get(&p).map(|d| d + 1))
                    .unwrap_or(0);
                self.depth.insert(s.span_id, depth);
                span_line(s, depth, &self.status(s))
            }
            EventBody::Log(l) => self.paint(
                "2",
                &format!("log {:?}: {}", l.severity, l.message).to_lowercase(),
            ),
            EventBody::Error(err) => {
                let t = err
                    .error_type
                    .as_deref()
                    .map(|t| format!("{t}: "))
                    .unwrap_or_default();
                self.paint("31", &format!("error {t}{}", err.message))
            }
            EventBody::StateChanged(c) => format!("── {} → {}", c.from, c.to),
            EventBody::TraceStarted(t) => format!(
                "── trace started{}",
                t.name
                    .as_deref()
                    .map(|n| format!(" {n:?}"))
                    .unwrap_or_default()
            ),
            EventBody::TraceEnded(t) => format!(
                "── trace ended {}: {} spans, {} errors, {} tokens",
                t.state, t.rollups.span_count, t.rollups.error_count, t.rollups.total_tokens
            ),
        };
        Some(if self.tenant_wide {
            format!("{} {body}", &e.trace_id.to_string()[..8])
        } else {
            body
        })
    }
}

/// One server-sent event as read off the wire.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SseMessage {
    /// `id:`
    pub id: Option<String>,
    /// `event:`
    pub event: Option<String>,
    /// `data:` lines joined by newlines.
    pub data: String,
}

/// Splits an SSE byte stream into messages; feed it chunks as they arrive.
#[derive(Default)]
pub struct SseParser {
    buf: String,
    current: SseMessage,
    has_data: bool,
}

impl SseParser {
    /// Adds bytes; returns the messages completed by them.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseMessage> {
        self.buf.push_str(&String::from_utf8_lossy(chunk));
        let mut out = Vec::new();
        while let Some(pos) = self.buf.find('\n') {
            let line: String = self.buf.drain(..=pos).collect();
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if self.has_data || self.current.event.is_some() {
                    out.push(std::mem::take(&mut self.current));
                }
                self.current = SseMessage::default();
                self.has_data = false;
                continue;
            }
            if line.starts_with(':') {
                continue; // keep-alive comment
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => self.current.id = Some(value.to_string()),
                "event" => self.current.event = Some(value.to_string()),
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        out
    }
}

/// Where a tail stands: what it printed up to, and whether the trace ended.
struct TailState {
    printer: TailPrinter,
    /// The last seq printed of the followed trace (its `Last-Event-ID`).
    last_seq: Option<u64>,
    ended: bool,
    json: bool,
}

impl TailState {
    fn handle(&mut self, m: SseMessage, one_trace: bool) -> std::io::Result<()> {
        use std::io::Write;
        if m.event.as_deref() == Some("lagged") {
            let v: Value = serde_json::from_str(&m.data).unwrap_or(Value::Null);
            if let Some(seq) = v["resume_after_seq"].as_u64() {
                self.last_seq = Some(seq);
            }
            return Ok(());
        }
        let Ok(e) = serde_json::from_str::<traceway_core::Event>(&m.data) else {
            return Ok(());
        };
        if one_trace {
            self.last_seq = Some(e.seq);
        }
        self.ended |= e.body.event_type() == traceway_core::EventType::TraceEnded;
        let line = if self.json {
            Some(m.data)
        } else {
            self.printer.line(&e)
        };
        if let Some(line) = line {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{line}")?;
            out.flush()?;
        }
        Ok(())
    }
}

/// `traceway tail [ID]`: follows one trace (until it ends) or the tenant's traces, and
/// reconnects with `Last-Event-ID` after a dropped connection or a server restart.
pub async fn tail(args: ClientArgs, id: Option<String>) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let c = Client::new_streaming(args)?;
    let color = std::io::stdout().is_terminal();
    let mut state = TailState {
        printer: TailPrinter::new(color, id.is_none()),
        last_seq: None,
        ended: false,
        json: c.args.json,
    };
    let url = match &id {
        Some(id) => c.url(&format!("/api/v1/traces/{id}/stream")),
        None => c.url("/api/v1/stream?all=true"),
    };
    let mut backoff = std::time::Duration::from_millis(200);
    loop {
        let mut req = c.http.get(&url);
        if let Some(seq) = state.last_seq {
            req = req.header("last-event-id", seq.to_string());
        }
        if let Some(t) = &c.args.tenant {
            req = req.header(crate::extract::TENANT_HEADER, t);
        }
        match req.send().await {
            Ok(mut resp) if resp.status().is_success() => {
                backoff = std::time::Duration::from_millis(200);
                let mut parser = SseParser::default();
                while let Ok(Some(bytes)) = resp.chunk().await {
                    for m in parser.push(&bytes) {
                        state.handle(m, id.is_some())?;
                    }
                }
            }
            // A trace that does not exist will not appear by retrying.
            Ok(resp) if resp.status().is_client_error() => {
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                let msg = serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                    .unwrap_or(body);
                anyhow::bail!("{status}: {msg}");
            }
            // Server errors and network failures: try again.
            Ok(_) | Err(_) => {}
        }
        if state.ended && id.is_some() {
            return Ok(());
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_parser_handles_split_chunks_comments_and_multiline_data() {
        let mut p = SseParser::default();
        assert!(p.push(b": keep-alive\n\nid: 3\nevent: log\nda").is_empty());
        let got = p.push(b"ta: {\"a\":1}\ndata: x\n\n");
        assert_eq!(
            got,
            vec![SseMessage {
                id: Some("3".into()),
                event: Some("log".into()),
                data: "{\"a\":1}\nx".into()
            }]
        );
    }

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
