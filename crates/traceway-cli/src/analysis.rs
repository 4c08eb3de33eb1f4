//! The CLI's analysis commands: `traceway analyze ID`, `traceway show ID --format …` and
//! `traceway stats`. HTTP clients of the analysis routes; the rendering is plain
//! functions of the JSON the server returns, so it is tested without a server.

use std::fmt::Write as _;

use serde_json::Value;
use traceway_core::format::human_duration;
use traceway_core::Timestamp;

use crate::client::{Client, ClientArgs};

/// Width of the timeline bars.
const BAR: usize = 32;

fn ms(v: &Value) -> String {
    v.as_f64().map(human_duration).unwrap_or_else(|| "-".into())
}

fn ids(v: &Value) -> String {
    let all: Vec<&str> = v
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut s = all.iter().take(4).copied().collect::<Vec<_>>().join(", ");
    if all.len() > 4 {
        let _ = write!(s, " (+{})", all.len() - 4);
    }
    s
}

/// A bar of `BAR` cells: blank up to the offset, filled for the duration.
pub fn timeline_bar(offset_ms: f64, duration_ms: f64, total_ms: f64) -> String {
    if total_ms <= 0.0 {
        return "█".repeat(BAR);
    }
    let start = ((offset_ms / total_ms) * BAR as f64).floor() as usize;
    let start = start.min(BAR - 1);
    let len = ((duration_ms / total_ms) * BAR as f64).round().max(1.0) as usize;
    let len = len.min(BAR - start);
    format!(
        "{}{}{}",
        "·".repeat(start),
        "█".repeat(len),
        "·".repeat(BAR - start - len)
    )
}

/// The text of `traceway analyze`: the critical path as an indented timeline with bars,
/// then bottlenecks, loops, error groups, the cost table and the recommendations.
pub fn render_analysis(a: &Value) -> String {
    let mut out = String::new();
    let s = &a["summary"];
    let _ = writeln!(
        out,
        "trace {}  {}  {}  {} spans, {} errors{}",
        a["trace_id"].as_str().unwrap_or("?"),
        s["state"].as_str().unwrap_or("?"),
        ms(&s["duration_ms"]),
        s["span_count"],
        s["error_count"],
        if a["partial"] == true {
            "  (still running: analysed as far as it goes)"
        } else {
            ""
        }
    );
    let path = &a["critical_path"];
    let total =
        path["duration_ms"].as_f64().unwrap_or(0.0) + path["gap_ms"].as_f64().unwrap_or(0.0);
    let _ = writeln!(out, "\ncritical path ({})", ms(&path["duration_ms"]));
    for seg in path["segments"].as_array().into_iter().flatten() {
        let depth = seg["depth"].as_u64().unwrap_or(0).min(20) as usize;
        let off = seg["offset_ms"].as_f64().unwrap_or(0.0);
        let dur = seg["duration_ms"].as_f64().unwrap_or(0.0);
        let _ = writeln!(
            out,
            "  {:>8} {} {}{} {}{} {}{}",
            human_duration(off),
            timeline_bar(off, dur, total),
            "  ".repeat(depth),
            seg["kind"].as_str().unwrap_or("?"),
            seg["name"].as_str().unwrap_or("?"),
            seg["model"]
                .as_str()
                .map(|m| format!(" model={m}"))
                .unwrap_or_default(),
            human_duration(dur),
            if seg["running"] == true {
                " running"
            } else {
                ""
            }
        );
    }
    for share in path["by_kind"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  {:>5.1}%  {}",
            share["share"].as_f64().unwrap_or(0.0) * 100.0,
            share["key"].as_str().unwrap_or("?")
        );
    }
    let bottlenecks = a["bottlenecks"].as_array().cloned().unwrap_or_default();
    if !bottlenecks.is_empty() {
        let _ = writeln!(
            out,
            "\nbottlenecks\n  {:<28} {:>6} {:>10} {:>7} {:>10} {:>10}",
            "kind name", "calls", "on path", "share", "self", "mean"
        );
        for b in &bottlenecks {
            let _ = writeln!(
                out,
                "  {:<28} {:>6} {:>10} {:>6.1}% {:>10} {:>10}{}",
                format!(
                    "{} {}",
                    b["kind"].as_str().unwrap_or("?"),
                    b["name"].as_str().unwrap_or("?")
                ),
                b["calls"],
                ms(&b["critical_ms"]),
                b["critical_share"].as_f64().unwrap_or(0.0) * 100.0,
                ms(&b["self_ms"]),
                ms(&b["mean_ms"]),
                if b["slow"] == true { "  slow" } else { "" }
            );
        }
    }
    let loops = a["loops"].as_array().cloned().unwrap_or_default();
    if !loops.is_empty() {
        let _ = writeln!(out, "\nloops");
        for l in &loops {
            let what = match l["type"].as_str() {
                Some("alternation") => format!(
                    "{} <-> {} x{}",
                    l["tools"][0].as_str().unwrap_or("?"),
                    l["tools"][1].as_str().unwrap_or("?"),
                    l["cycles"]
                ),
                Some("repeated_prompt") => format!(
                    "prompt to {} x{}",
                    l["model"].as_str().unwrap_or("?"),
                    l["count"]
                ),
                _ => format!("{} x{}", l["tool"].as_str().unwrap_or("?"), l["count"]),
            };
            let _ = writeln!(
                out,
                "  {:<16} {what}  spans {}",
                l["type"].as_str().unwrap_or("?"),
                ids(&l["span_ids"])
            );
        }
    }
    let groups = a["error_groups"].as_array().cloned().unwrap_or_default();
    if !groups.is_empty() {
        let _ = writeln!(out, "\nerror groups");
        for g in &groups {
            let _ = writeln!(
                out,
                "  x{} {} {}: {}{}  spans {}",
                g["count"],
                g["kind"].as_str().unwrap_or("trace"),
                g["name"].as_str().unwrap_or(""),
                g["error_type"]
                    .as_str()
                    .map(|t| format!("{t}: "))
                    .unwrap_or_default(),
                g["message"].as_str().unwrap_or(""),
                ids(&g["span_ids"])
            );
            if let Some(ok) = g["retry_succeeded"].as_str() {
                let _ = writeln!(out, "      retried: span {ok} succeeded");
            }
        }
    }
    let models = s["models"].as_array().cloned().unwrap_or_default();
    if !models.is_empty() {
        let _ = writeln!(
            out,
            "\ncost by model\n  {:<28} {:>6} {:>10} {:>10} {:>10} {:>12}",
            "model", "calls", "input", "output", "cached", "cost (USD)"
        );
        for m in &models {
            let cost = m["cost_usd"].as_f64().unwrap_or(0.0);
            let unknown = m["calls_without_cost"].as_u64().unwrap_or(0);
            let _ = writeln!(
                out,
                "  {:<28} {:>6} {:>10} {:>10} {:>10} {:>12}",
                m["model"].as_str().unwrap_or("?"),
                m["calls"],
                m["input_tokens"],
                m["output_tokens"],
                m["cached_tokens"],
                if unknown > 0 {
                    format!("{cost:.6}+?")
                } else {
                    format!("{cost:.6}")
                }
            );
        }
    }
    let recs = a["recommendations"].as_array().cloned().unwrap_or_default();
    if !recs.is_empty() {
        let _ = writeln!(out, "\nrecommendations");
        for r in &recs {
            let _ = writeln!(out, "  - {}", r["message"].as_str().unwrap_or(""));
        }
    }
    out
}

/// The text of `traceway show ID --format compact`: one line per step with its offset.
pub fn render_compact(v: &Value) -> String {
    let mut out = format!(
        "trace {}  {}  {}  {} spans, {} errors, {} tokens, ${:.6}\n",
        v["trace_id"].as_str().unwrap_or("?"),
        v["state"].as_str().unwrap_or("?"),
        ms(&v["duration_ms"]),
        v["span_count"],
        v["error_count"],
        v["tokens"]["total"],
        v["cost_usd"].as_f64().unwrap_or(0.0)
    );
    for s in v["steps"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  +{:>8}  {}",
            s["offset_ms"]
                .as_f64()
                .map(human_duration)
                .unwrap_or_default(),
            s["line"].as_str().unwrap_or("")
        );
    }
    out
}

/// The text of `traceway stats`.
pub fn render_stats(v: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} traces{}, error rate {:.1}%{}",
        v["trace_count"],
        v["agent_id"]
            .as_str()
            .map(|a| format!(" of agent {a}"))
            .unwrap_or_default(),
        v["error_rate"].as_f64().unwrap_or(0.0) * 100.0,
        if v["truncated"] == true {
            format!(" (the newest {} only)", v["max_traces"])
        } else {
            String::new()
        }
    );
    let d = &v["duration_ms"];
    let _ = writeln!(
        out,
        "duration p50 {}  p95 {}  p99 {}",
        ms(&d["p50"]),
        ms(&d["p95"]),
        ms(&d["p99"])
    );
    let _ = writeln!(
        out,
        "tokens {} in, {} out; cost ${:.6}",
        v["tokens"]["input"],
        v["tokens"]["output"],
        v["cost_usd"].as_f64().unwrap_or(0.0)
    );
    if let Some(models) = v["models"].as_object().filter(|m| !m.is_empty()) {
        let _ = writeln!(
            out,
            "  {:<28} {:>6} {:>10} {:>10} {:>12}",
            "model", "calls", "input", "output", "cost (USD)"
        );
        for (name, m) in models {
            let _ = writeln!(
                out,
                "  {:<28} {:>6} {:>10} {:>10} {:>12.6}",
                name,
                m["calls"],
                m["input_tokens"],
                m["output_tokens"],
                m["cost_usd"].as_f64().unwrap_or(0.0)
            );
        }
    }
    let timing = |out: &mut String, title: &str, list: &[Value]| {
        let _ = writeln!(
            out,
            "  {:<28} {:>6} {:>6} {:>10} {:>10} {:>10}",
            title, "traces", "calls", "self", "total", "critical"
        );
        for c in list {
            let key = match c["kind"].as_str() {
                Some(k) => format!("{k} {}", c["key"].as_str().unwrap_or("")),
                None => c["key"].as_str().unwrap_or("").to_string(),
            };
            let _ = writeln!(
                out,
                "  {:<28} {:>6} {:>6} {:>10} {:>10} {:>10}",
                key,
                c["traces"],
                c["calls"],
                ms(&c["self_ms"]),
                ms(&c["total_ms"]),
                ms(&c["critical_ms"])
            );
        }
    };
    if let Some(list) = v["components"].as_array().filter(|l| !l.is_empty()) {
        timing(&mut out, "component (by self time)", list);
    }
    if let Some(list) = v["span_names"].as_array().filter(|l| !l.is_empty()) {
        timing(&mut out, "span (by self time)", list);
    }
    if let Some(list) = v["error_groups"].as_array().filter(|l| !l.is_empty()) {
        let _ = writeln!(out, "errors:");
        for g in list {
            let what = [&g["kind"], &g["name"], &g["error_type"]]
                .iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join(" ");
            let _ = writeln!(
                out,
                "  {}× in {} traces ({} retried) {}: {}",
                g["count"],
                g["traces"],
                g["retried_traces"],
                what,
                g["message"].as_str().unwrap_or("")
            );
        }
    }
    let s = &v["summaries"];
    if let Some(missing) = s["missing"].as_u64().filter(|n| *n > 0) {
        let _ = writeln!(
            out,
            "{missing} traces without an analysis summary ({} still running); \
             components and errors cover the other {}",
            s["missing_running"], s["traces"]
        );
    }
    out
}

/// `traceway analyze ID`.
pub async fn analyze(args: ClientArgs, id: &str) -> anyhow::Result<String> {
    let c = Client::new(args)?;
    let (_, body) = c
        .send(c.http.get(c.url(&format!("/api/v1/traces/{id}/analysis"))))
        .await?;
    if c.args.json {
        return Ok(body);
    }
    Ok(render_analysis(&serde_json::from_str(&body)?))
}

/// `traceway show ID --format compact|detailed`.
pub async fn show_format(args: ClientArgs, id: &str, format: &str) -> anyhow::Result<String> {
    let c = Client::new(args)?;
    let (_, body) = c
        .send(
            c.http
                .get(c.url(&format!("/api/v1/traces/{id}")))
                .query(&[("format", format)]),
        )
        .await?;
    if c.args.json {
        return Ok(body);
    }
    let v: Value = serde_json::from_str(&body)?;
    Ok(match format {
        "compact" => render_compact(&v),
        _ => serde_json::to_string_pretty(&v)?,
    })
}

/// `traceway stats [--agent A] [--since 24h]`.
pub async fn stats(
    args: ClientArgs,
    agent: Option<String>,
    since: std::time::Duration,
) -> anyhow::Result<String> {
    let c = Client::new(args)?;
    let from = Timestamp::now().saturating_sub(since);
    let mut query = vec![("from", from.to_rfc3339())];
    if let Some(a) = agent {
        query.push(("agent_id", a));
    }
    let (_, body) = c
        .send(c.http.get(c.url("/api/v1/analysis")).query(&query))
        .await?;
    if c.args.json {
        return Ok(body);
    }
    Ok(render_stats(&serde_json::from_str(&body)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use traceway_core::analysis::{analyze, AnalysisOptions};
    use traceway_core::{
        Level, LlmDetails, Rollups, Span, SpanId, SpanKind, State, StatusCode, Trace, TraceId,
    };

    fn span(id: u64, parent: Option<u64>, kind: SpanKind, name: &str, s: i64, e: i64) -> Span {
        let mut sp = Span::new(
            SpanId::from_u64(id).unwrap(),
            kind,
            name,
            Timestamp::from_unix_millis(s),
        );
        sp.parent_span_id = parent.and_then(SpanId::from_u64);
        sp.end_time = Some(Timestamp::from_unix_millis(e));
        sp.status.code = StatusCode::Ok;
        sp
    }

    #[test]
    fn the_analysis_reads_as_a_timeline_with_bars_then_the_findings() {
        let mut answer = span(3, Some(1), SpanKind::Llm, "answer", 500, 1000);
        answer.llm = Some(LlmDetails {
            model: Some("gpt-4o".into()),
            input_tokens: Some(100),
            output_tokens: Some(10),
            cost_usd: Some(0.01),
            ..Default::default()
        });
        let spans = vec![
            span(1, None, SpanKind::Agent, "run", 0, 1000),
            span(2, Some(1), SpanKind::Tool, "search", 0, 500),
            answer,
        ];
        let trace = Trace {
            trace_id: TraceId::from_u128(7).unwrap(),
            tenant: "default".into(),
            name: None,
            agent_id: None,
            session_id: None,
            user_id: None,
            state: State::Completed,
            level: Level::Detailed,
            created_at: Timestamp::from_unix_millis(0),
            last_activity_at: Timestamp::from_unix_millis(0),
            ended_at: None,
            expires_at: Timestamp::from_unix_millis(0),
            last_seq: 0,
            metadata: Default::default(),
            rollups: Rollups::default(),
        };
        let a = analyze(
            &trace,
            &spans,
            &[],
            Timestamp::from_unix_millis(1000),
            &AnalysisOptions::default(),
        );
        let text = render_analysis(&serde_json::to_value(&a).unwrap());
        let path: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("critical path"))
            .skip(1)
            .take(2)
            .collect();
        assert_eq!(
            path,
            [
                "       0ms ████████████████················   tool search 500ms",
                "     500ms ················████████████████   llm answer model=gpt-4o 500ms",
            ]
        );
        assert!(text.contains("bottlenecks"), "{text}");
        assert!(text.contains("cost by model"), "{text}");
        assert!(text.contains("gpt-4o"), "{text}");
    }

    #[test]
    fn bars_stay_inside_their_width() {
        for (o, d, t) in [
            (0.0, 0.0, 10.0),
            (9.9, 5.0, 10.0),
            (0.0, 10.0, 10.0),
            (3.0, 1.0, 0.0),
        ] {
            assert_eq!(timeline_bar(o, d, t).chars().count(), BAR, "{o} {d} {t}");
        }
    }

    #[test]
    fn stats_say_when_they_were_truncated() {
        let v = json!({"trace_count": 2, "error_rate": 0.5, "truncated": true, "max_traces": 2,
            "duration_ms": {"p50": 1000.0, "p95": 2000.0, "p99": null},
            "tokens": {"input": 1, "output": 2}, "cost_usd": 0.5, "models": {}});
        let text = render_stats(&v);
        assert!(
            text.starts_with("2 traces, error rate 50.0% (the newest 2 only)"),
            "{text}"
        );
        assert!(text.contains("p50 1.00s  p95 2.00s  p99 -"), "{text}");
    }

    #[test]
    fn stats_list_top_components_and_error_groups_and_say_what_is_missing() {
        let v = json!({"trace_count": 3, "error_rate": 0.0,
            "duration_ms": {"p50": 1.0, "p95": 1.0, "p99": 1.0},
            "tokens": {"input": 0, "output": 0}, "cost_usd": 0.0, "models": {},
            "components": [{"key": "writer", "traces": 2, "calls": 4, "self_ms": 800.0,
                "total_ms": 900.0, "critical_ms": 700.0}],
            "span_names": [{"key": "search", "kind": "tool", "traces": 2, "calls": 2,
                "self_ms": 600.0, "total_ms": 600.0, "critical_ms": 0.0}],
            "error_groups": [{"kind": "tool", "name": "search", "error_type": "TimeoutError",
                "message": "timeout after <n> s", "count": 3, "traces": 2, "retried_traces": 1}],
            "summaries": {"traces": 2, "missing": 1, "missing_running": 1, "stale": 0}});
        let text = render_stats(&v);
        assert!(text.contains("component (by self time)"), "{text}");
        assert!(text.contains("writer"), "{text}");
        assert!(text.contains("tool search"), "{text}");
        assert!(
            text.contains(
                "3× in 2 traces (1 retried) tool search TimeoutError: timeout after <n> s"
            ),
            "{text}"
        );
        assert!(
            text.contains("1 traces without an analysis summary (1 still running)"),
            "{text}"
        );
    }
}
