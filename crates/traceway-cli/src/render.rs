//! How traces and steps are printed: the `ls` table, the `show` tree and the `tail` lines.

use std::fmt::Write as _;

use serde_json::Value;
use traceway_core::{SpanNode, StateChange, StatusCode, Trace};

pub(crate) fn fmt_ms(ms: Option<f64>) -> String {
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

/// What `traceway show` prints: a header (with the trace's state changes, oldest first),
/// then one line per span indented by depth.
pub fn render_trace(t: &Trace, history: &[StateChange], spans: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "trace     {}", t.trace_id);
    let _ = writeln!(out, "state     {}", t.state);
    if let Some(first) = history.first() {
        let mut line = first.from.to_string();
        for c in history {
            let _ = write!(line, " → {}", c.to);
            if let Some(r) = &c.reason {
                let _ = write!(line, " ({r})");
            }
        }
        let _ = writeln!(out, "history   {line}");
    }
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
    let embedded = if r.embedding_tokens > 0 {
        format!("   embedded {}", r.embedding_tokens)
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "spans     {}   errors {}   tokens {} (in {} / out {}){embedded}   duration {}",
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
