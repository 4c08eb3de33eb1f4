//! Snapshots of the analysis of fixture traces (times and the trace id redacted; span ids
//! are the fixtures' own small numbers, kept because they are the evidence), and property
//! tests of the timeline.

use proptest::prelude::*;
use serde_json::{json, Value};
use traceway_core::analysis::{analyze, critical_path, span_timings, AnalysisOptions, Loop};
use traceway_core::{
    Document, ErrorRecord, Event, EventBody, RetrievalDetails, Span, SpanKind, State, Timestamp,
};

use crate::fixtures::*;

/// Replaces every RFC 3339 time by `[time]` and the trace id by `[trace_id]`.
fn redact(v: &mut Value) {
    match v {
        Value::String(s) if Timestamp::parse_rfc3339(s).is_ok() => *s = "[time]".into(),
        Value::Array(a) => a.iter_mut().for_each(redact),
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if k == "trace_id" {
                    *x = json!("[trace_id]");
                } else {
                    redact(x);
                }
            }
        }
        _ => {}
    }
}

fn analysed(state: State, spans: &[Span], events: &[Event], now_ms: i64) -> Value {
    let t = trace(state, spans);
    let a = analyze(&t, spans, events, at(now_ms), &AnalysisOptions::default());
    let mut v = serde_json::to_value(&a).unwrap();
    // The options are the defaults in every fixture; they would only repeat.
    v.as_object_mut().unwrap().remove("options");
    redact(&mut v);
    v
}

fn path_names(v: &Value) -> Vec<String> {
    v["critical_path"]["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn parallel_tool_calls() {
    // plan, then three tools in parallel (the slowest decides), then answer.
    let spans = vec![
        span(1, None, SpanKind::Agent, "run", 0, Some(1000)),
        llm(
            span(2, Some(1), SpanKind::Llm, "plan", 0, Some(200)),
            "gpt-4o",
            300,
            40,
        ),
        tool(
            span(3, Some(1), SpanKind::Tool, "weather", 200, Some(500)),
            json!({"city": "Paris"}),
            json!({"c": 21}),
        ),
        tool(
            span(4, Some(1), SpanKind::Tool, "flights", 200, Some(800)),
            json!({"to": "Paris"}),
            json!([]),
        ),
        tool(
            span(5, Some(1), SpanKind::Tool, "hotels", 210, Some(600)),
            json!({"city": "Paris"}),
            json!([]),
        ),
        llm(
            span(6, Some(1), SpanKind::Llm, "answer", 800, Some(1000)),
            "gpt-4o",
            900,
            120,
        ),
    ];
    let v = analysed(State::Completed, &spans, &[], 1000);
    assert_eq!(path_names(&v), ["plan", "flights", "answer"]);
    assert_eq!(v["critical_path"]["duration_ms"], 1000.0);
    insta::assert_json_snapshot!("parallel_tool_calls", v);
}

#[test]
fn a_loop() {
    let mut spans = vec![span(1, None, SpanKind::Agent, "run", 0, Some(2000))];
    // get_order four times with the same order and a fresh request id: one loop.
    for n in 0..4u64 {
        let start = 100 * n as i64;
        spans.push(tool(
            span(10 + n, Some(1), SpanKind::Tool, "get_order", start, Some(start + 80)),
            json!({"order_id": 42, "request_id": format!("r-{n}"), "at": format!("2026-01-01T00:00:0{n}Z")}),
            json!({"status": "pending"}),
        ));
    }
    // search / read alternating with the same arguments: A-B-A-B.
    for n in 0..4u64 {
        let start = 500 + 100 * n as i64;
        let (name, args) = if n % 2 == 0 {
            ("search", json!({"q": "refund policy"}))
        } else {
            ("read", json!({"doc": "faq.md"}))
        };
        spans.push(tool(
            span(
                20 + n,
                Some(1),
                SpanKind::Tool,
                name,
                start,
                Some(start + 90),
            ),
            args,
            json!({"n": n}),
        ));
    }
    // The same prompt answered twice.
    for n in 0..2u64 {
        let start = 1200 + 300 * n as i64;
        let mut s = llm(
            span(
                30 + n,
                Some(1),
                SpanKind::Llm,
                "decide",
                start,
                Some(start + 250),
            ),
            "gpt-4o-mini",
            100,
            10,
        );
        s.llm.as_mut().unwrap().input_messages = vec![traceway_core::Message {
            role: "user".into(),
            content: Some("Is order 42 shipped?".into()),
            ..Default::default()
        }];
        spans.push(s);
    }
    let v = analysed(State::Completed, &spans, &[], 2000);
    let types: Vec<&str> = v["loops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["repeated_call", "alternation", "repeated_prompt"]);
    assert_eq!(v["loops"][0]["count"], 4);
    assert_eq!(v["loops"][0]["identical_results"], 4);
    assert_eq!(v["loops"][1]["cycles"], 2);
    insta::assert_json_snapshot!("a_loop", v);
}

#[test]
fn the_repeat_threshold_is_configurable_and_fewer_same_results_are_no_progress() {
    let mut spans = vec![span(1, None, SpanKind::Agent, "run", 0, Some(1000))];
    for n in 0..2u64 {
        spans.push(tool(
            span(
                10 + n,
                Some(1),
                SpanKind::Tool,
                "lookup",
                10 * n as i64,
                Some(10 * n as i64 + 5),
            ),
            json!({"k": "v"}),
            json!("same"),
        ));
    }
    let t = trace(State::Completed, &spans);
    let a = analyze(&t, &spans, &[], at(1000), &AnalysisOptions::default());
    assert!(
        matches!(&a.loops[..], [Loop::NoProgress { count: 2, .. }]),
        "{:?}",
        a.loops
    );
    let two = AnalysisOptions {
        repeat_threshold: 2,
        ..Default::default()
    };
    let a = analyze(&t, &spans, &[], at(1000), &two);
    assert!(
        matches!(&a.loops[..], [Loop::RepeatedCall { count: 2, .. }]),
        "{:?}",
        a.loops
    );
}

#[test]
fn a_retry_after_an_error() {
    let spans = vec![
        span(1, None, SpanKind::Agent, "run", 0, Some(5000)),
        failed(
            tool(
                span(2, Some(1), SpanKind::Tool, "charge", 0, Some(3000)),
                json!({"amount": 10}),
                json!(null),
            ),
            "timeout after 3000 ms calling \"payments\"",
        ),
        tool(
            span(3, Some(1), SpanKind::Tool, "charge", 3100, Some(3400)),
            json!({"amount": 10}),
            json!({"ok": true}),
        ),
        failed(
            span(4, Some(1), SpanKind::Tool, "email", 3500, Some(3600)),
            "smtp refused id 7f3a9c21",
        ),
        failed(
            span(5, Some(1), SpanKind::Tool, "email", 3700, Some(3800)),
            "smtp refused id 0b12ffe9",
        ),
    ];
    let events = vec![Event {
        trace_id: trace(State::Completed, &spans).trace_id,
        seq: 4,
        time: at(3000),
        component_id: None,
        body: EventBody::Error(ErrorRecord {
            span_id: Some(spans[1].span_id),
            error_type: Some("TimeoutError".into()),
            message: "timeout".into(),
            stacktrace: None,
        }),
    }];
    let v = analysed(State::Completed, &spans, &events, 5000);
    let groups = v["error_groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0]["name"], "email");
    assert_eq!(groups[0]["count"], 2);
    assert!(groups[0].get("retry_succeeded").is_none());
    assert_eq!(groups[1]["error_type"], "TimeoutError");
    assert_eq!(groups[1]["retry_succeeded"], "0000000000000003");
    insta::assert_json_snapshot!("retry_after_error", v);
}

#[test]
fn a_running_trace() {
    let mut search = span(3, Some(1), SpanKind::Retriever, "search", 100, Some(400));
    search.retrieval = Some(RetrievalDetails {
        query: Some("q".into()),
        documents: vec![],
    });
    let mut search2 = span(5, Some(1), SpanKind::Retriever, "search", 400, Some(500));
    search2.retrieval = Some(RetrievalDetails {
        query: Some("q2".into()),
        documents: vec![Document {
            id: Some("d1".into()),
            score: Some(0.82),
            ..Default::default()
        }],
    });
    let spans = vec![
        span(1, None, SpanKind::Agent, "run", 0, None),
        search,
        search2,
        llm(
            span(4, Some(1), SpanKind::Llm, "answer", 500, None),
            "claude-sonnet-4",
            2000,
            0,
        ),
    ];
    let v = analysed(State::Running, &spans, &[], 3000);
    assert_eq!(v["partial"], true);
    assert_eq!(v["summary"]["running_spans"], 2);
    assert_eq!(v["summary"]["duration_ms"], 3000.0);
    assert_eq!(v["critical_path"]["includes_running"], true);
    assert_eq!(path_names(&v).last().unwrap(), "answer");
    insta::assert_json_snapshot!("running_trace", v);
}

#[test]
fn a_child_outside_its_parent() {
    let spans = vec![
        span(1, None, SpanKind::Agent, "run", 0, Some(1000)),
        // Starts before its parent (clock skew): clamped to the parent.
        span(2, Some(1), SpanKind::Tool, "early", -200, Some(300)),
        // Wholly after its parent ended: dropped from the path, counted on its own.
        span(3, Some(1), SpanKind::Tool, "late", 2000, Some(2500)),
        // Ends after its parent: clamped.
        span(4, Some(1), SpanKind::Llm, "overrun", 700, Some(1300)),
    ];
    let v = analysed(State::Completed, &spans, &[], 3000);
    assert_eq!(v["critical_path"]["dropped"], json!(["0000000000000003"]));
    assert_eq!(v["critical_path"]["duration_ms"], 1000.0);
    let timings = span_timings(&spans, at(3000));
    let early = timings
        .iter()
        .find(|t| t.span_id == spans[1].span_id)
        .unwrap();
    assert_eq!(early.start, at(0));
    let late = timings
        .iter()
        .find(|t| t.span_id == spans[2].span_id)
        .unwrap();
    assert!(late.detached);
    assert_eq!(late.self_ms, 500.0);
    insta::assert_json_snapshot!("child_outside_parent", v);
}

/// 10,000 spans: an agent with 100 turns, each an LLM call followed by 97 tool calls in
/// four parallel lanes, one of them failing every tenth turn.
pub fn big_trace() -> Vec<Span> {
    let mut spans = Vec::with_capacity(10_000);
    spans.push(span(1, None, SpanKind::Agent, "run", 0, Some(100 * 1000)));
    let mut id = 2u64;
    for turn in 0..100i64 {
        let t0 = turn * 1000;
        let turn_id = id;
        spans.push(span(
            turn_id,
            Some(1),
            SpanKind::Chain,
            "turn",
            t0,
            Some(t0 + 1000),
        ));
        id += 1;
        spans.push(llm(
            span(
                id,
                Some(turn_id),
                SpanKind::Llm,
                "think",
                t0,
                Some(t0 + 300),
            ),
            if turn % 2 == 0 {
                "gpt-4o"
            } else {
                "gpt-4o-mini"
            },
            1000,
            100,
        ));
        id += 1;
        for k in 0..97i64 {
            let lane = k % 4;
            let start = t0 + 300 + (k / 4) * 28 + lane;
            let mut s = tool(
                span(
                    id,
                    Some(turn_id),
                    SpanKind::Tool,
                    &format!("tool_{lane}"),
                    start,
                    Some(start + 25 + lane),
                ),
                json!({"turn": turn, "k": k}),
                json!({"ok": k}),
            );
            if turn % 10 == 0 && k == 0 {
                s = failed(s, &format!("upstream 503 on attempt {turn}"));
            }
            spans.push(s);
            id += 1;
        }
    }
    assert_eq!(spans.len(), 9_901);
    // Fill up to 10,000 with short log-like steps under the root.
    while spans.len() < 10_000 {
        let start = (id as i64 % 100) * 1000 + 999;
        spans.push(span(
            id,
            Some(1),
            SpanKind::Other,
            "mark",
            start,
            Some(start),
        ));
        id += 1;
    }
    spans
}

#[test]
fn ten_thousand_spans_summary_figures() {
    let spans = big_trace();
    let t = trace(State::Completed, &spans);
    let a = analyze(&t, &spans, &[], at(200_000), &AnalysisOptions::default());
    let figures = json!({
        "span_count": a.summary.span_count,
        "duration_ms": a.summary.duration_ms,
        "error_count": a.summary.error_count,
        "kinds": a.summary.kinds,
        "models": a.summary.models,
        "tools": a.summary.tools,
        "critical_path_ms": a.critical_path.duration_ms,
        "critical_path_segments": a.critical_path.segments.len(),
        "critical_path_by_kind": a.critical_path.by_kind,
        "top_bottleneck": a.bottlenecks.first().map(|b| (&b.name, b.critical_ms, b.self_ms)),
        "error_groups": a.error_groups.iter().map(|g| (&g.message, g.count)).collect::<Vec<_>>(),
        "loops": a.loops.len(),
        "recommendations": a.recommendations.iter().map(|r| r.kind).collect::<Vec<_>>(),
    });
    insta::assert_json_snapshot!("ten_thousand_spans", figures);
}

prop_compose! {
    /// A random forest: each span's parent is an earlier span (or none), with random,
    /// possibly skewed, possibly open intervals.
    fn forest()(n in 1usize..40)(
        parents in proptest::collection::vec(proptest::option::of(0usize..1000), n),
        starts in proptest::collection::vec(0i64..1000, n),
        lens in proptest::collection::vec(proptest::option::of(0i64..600), n),
    ) -> Vec<Span> {
        (0..parents.len())
            .map(|i| {
                let parent = parents[i].filter(|_| i > 0).map(|p| (p % i) as u64 + 1);
                span(i as u64 + 1, parent, SpanKind::Chain, "s", starts[i], lens[i].map(|l| starts[i] + l))
            })
            .collect()
    }
}

proptest! {
    /// Segments are in order, never overlap, stay inside the roots' window and add up to
    /// no more than it (a single root: exactly its duration).
    #[test]
    fn critical_path_segments_never_overlap_nor_exceed_the_window(spans in forest()) {
        let now = at(1500);
        let path = critical_path(&spans, now);
        let timings = span_timings(&spans, now);
        let roots: Vec<_> = spans.iter().filter(|s| s.parent_span_id.is_none()).collect();
        let w_start = roots.iter().map(|s| s.start_time).min().unwrap();
        let w_end = timings.iter().filter(|t| roots.iter().any(|r| r.span_id == t.span_id)).map(|t| t.end).max().unwrap();
        let mut cursor = w_start;
        for s in &path.segments {
            prop_assert!(s.start >= cursor, "overlap at {:?}", s);
            prop_assert!(s.end >= s.start);
            cursor = s.end;
        }
        prop_assert!(cursor <= w_end);
        let window_ms = (w_end.unix_nanos() - w_start.unix_nanos()) as f64 / 1e6;
        prop_assert!((path.duration_ms + path.gap_ms - window_ms).abs() < 1e-6);
        if roots.len() == 1 {
            prop_assert!(path.gap_ms == 0.0);
        }
    }

    /// Self times add up to the covered time: for every span, its self time plus the time
    /// its (clamped, attached) children cover, measured independently on a 1 ms grid,
    /// is its effective duration.
    #[test]
    fn self_times_add_up_to_the_covered_time(spans in forest()) {
        let now = at(1500);
        let timings = span_timings(&spans, now);
        let ms_of = |t: Timestamp| (t.unix_nanos() / 1_000_000 - T0_MS) as usize;
        for (t, s) in timings.iter().zip(spans.iter()) {
            let (a, b) = (ms_of(t.start), ms_of(t.end));
            let mut grid = vec![false; b.saturating_sub(a)];
            for (ct, c) in timings.iter().zip(spans.iter()) {
                if c.parent_span_id == Some(s.span_id) && !ct.detached {
                    for slot in &mut grid[ms_of(ct.start) - a..ms_of(ct.end) - a] {
                        *slot = true;
                    }
                }
            }
            let covered = grid.iter().filter(|x| **x).count() as f64;
            prop_assert!((t.self_ms + covered - (b - a) as f64).abs() < 1e-6,
                "span {}: self {} + covered {} != {}", s.span_id, t.self_ms, covered, b - a);
        }
        let on_path: f64 = timings.iter().map(|t| t.critical_ms).sum();
        prop_assert!((on_path - critical_path(&spans, now).duration_ms).abs() < 1e-6);
    }
}

/// ADR 028: a digest keeps the analysis' own figures, cut to the top entries, and the
/// merge across traces sums them per component, span name and error group.
#[test]
fn digests_keep_the_top_figures_and_merge_across_traces() {
    use traceway_core::analysis::{digest, Across, DIGEST_TOP};
    let mut spans = vec![span(1, None, SpanKind::Agent, "run", 0, Some(10_000))];
    // Seven tools, each its own component, the later ones longer; two fail alike.
    for i in 0..7u64 {
        let start = i as i64 * 1000;
        let mut s = span(
            i + 2,
            Some(1),
            SpanKind::Tool,
            &format!("t{i}"),
            start,
            Some(start + 100 * (i as i64 + 1)),
        );
        s.component_id = Some(format!("c{i}"));
        if i >= 5 {
            s = failed(s, &format!("timeout after {} ms", 30 + i));
        }
        spans.push(s);
    }
    let t = trace(State::Completed, &spans);
    let a = analyze(&t, &spans, &[], at(10_000), &AnalysisOptions::default());
    let d = digest(&a, 42);
    assert_eq!(d.at_seq, 42);
    let keys: Vec<&str> = d.components.iter().map(|c| c.key.as_str()).collect();
    assert_eq!(
        keys,
        ["c6", "c5", "c4", "c3", "c2"],
        "by self time, top {DIGEST_TOP}"
    );
    assert_eq!(d.components[0].self_ms, 700.0);
    assert_eq!(d.names.len(), DIGEST_TOP);
    assert_eq!(d.names[0].key, "run", "the root's self time is the largest");
    let s6 = a.summary.names.iter().find(|n| n.key == "t6").unwrap();
    let d6 = d.names.iter().find(|n| n.key == "t6").unwrap();
    assert_eq!(
        (d6.self_ms, d6.critical_ms, d6.calls),
        (s6.self_ms, s6.critical_ms, s6.calls)
    );
    // Two groups (different span names), normalised messages.
    assert_eq!(d.error_groups.len(), 2);
    assert!(d
        .error_groups
        .iter()
        .all(|g| g.message == "timeout after <n> ms"));
    // 7 components + 8 names + 2 groups, 5 + 5 + 2 kept.
    assert_eq!(d.left_out, 5);
    let json = serde_json::to_value(&d).unwrap();
    let back: traceway_core::analysis::AnalysisDigest = serde_json::from_value(json).unwrap();
    assert_eq!(back, d, "a digest reads back as it was stored");

    let mut x = Across::default();
    x.add(&d);
    x.add(&d);
    let top = x.top(3);
    assert_eq!(top.digests, 2);
    let c: Vec<(&str, f64, u64)> = top
        .components
        .iter()
        .map(|c| (c.key.as_str(), c.self_ms, c.traces))
        .collect();
    assert_eq!(c, [("c6", 1400.0, 2), ("c5", 1200.0, 2), ("c4", 1000.0, 2)]);
    assert_eq!(top.error_groups.len(), 2);
    assert_eq!(
        (top.error_groups[0].count, top.error_groups[0].traces),
        (2, 2)
    );
}

/// ADR 037: the analysis from the counts of events per type and the `error` events alone
/// (what the HTTP route reads) is the analysis over the whole log.
#[test]
fn the_analysis_from_event_counts_and_error_events_is_the_analysis_of_the_whole_log() {
    use traceway_core::analysis::{analyze_counted, summarize, summarize_counted};
    use traceway_core::{EventType, LogRecord};
    let spans = big_trace();
    let t = trace(State::Completed, &spans);
    let event = |seq: u64, body: EventBody| Event {
        trace_id: t.trace_id,
        seq,
        time: at(seq as i64),
        component_id: None,
        body,
    };
    let mut events = Vec::new();
    for (n, s) in spans.iter().enumerate() {
        events.push(event(n as u64 + 1, EventBody::SpanEnded(s.clone())));
    }
    let error = |seq: u64, span_id, ty: &str, message: &str| {
        event(
            seq,
            EventBody::Error(ErrorRecord {
                span_id,
                error_type: Some(ty.into()),
                message: message.into(),
                stacktrace: None,
            }),
        )
    };
    let failing = spans
        .iter()
        .find(|s| s.status.code == traceway_core::StatusCode::Error)
        .unwrap()
        .span_id;
    events.push(error(
        20_001,
        Some(failing),
        "UpstreamError",
        "upstream 503",
    ));
    events.push(event(
        20_002,
        EventBody::Log(LogRecord {
            span_id: None,
            severity: Default::default(),
            message: "retrying".into(),
            attributes: Default::default(),
        }),
    ));
    events.push(error(20_003, None, "TimeoutError", "gave up after 30 s"));
    let counts: Vec<(EventType, u64)> = EventType::ALL
        .iter()
        .map(|&ty| {
            let n = events.iter().filter(|e| e.body.event_type() == ty).count();
            (ty, n as u64)
        })
        .collect();
    let errors: Vec<Event> = events
        .iter()
        .filter(|e| e.body.event_type() == EventType::Error)
        .cloned()
        .collect();
    let opts = AnalysisOptions::default();
    let whole = analyze(&t, &spans, &events, at(100_000), &opts);
    let counted = analyze_counted(&t, &spans, &counts, &errors, at(100_000), &opts);
    assert_eq!(counted, whole);
    assert_eq!(whole.summary.events["error"], 2);
    assert_eq!(whole.summary.events["span_ended"], 10_000);
    assert!(whole
        .error_groups
        .iter()
        .any(|g| g.error_type.as_deref() == Some("TimeoutError") && g.kind.is_none()));
    assert_eq!(
        summarize_counted(&t, &spans, &counts, &errors, at(100_000)),
        summarize(&t, &spans, &events, at(100_000))
    );
}

/// ADR 028: a digest made from spans cut to what it reads (the stored span events parsed
/// by `digest_span_of_event_json`) is the digest made from the whole spans, and the cut
/// leaves the content behind.
#[test]
fn a_digest_of_cut_spans_is_the_digest_of_whole_spans() {
    use traceway_core::analysis::{digest, digest_span_of_event_json};
    let mut spans = big_trace();
    // Errors typed by each attribute key, by an error event, and untyped; a running span;
    // a tool whose tool name is not its span name; content, retrieval and other
    // attributes that the cut skips; a name and message that need JSON escapes.
    let mut typed = failed(
        span(20_001, Some(1), SpanKind::Tool, "fetch", 10, Some(90)),
        "HTTP 503 \"upstream\"\nretry in 3s",
    );
    typed
        .attributes
        .insert("exception.type".into(), json!("TimeoutError"));
    typed.attributes.insert("http.status".into(), json!(503));
    spans.push(typed);
    let mut typed2 = failed(
        span(
            20_002,
            Some(1),
            SpanKind::Llm,
            "chat \u{e9}t\u{e9}",
            100,
            Some(300),
        ),
        "rate limited",
    );
    typed2
        .attributes
        .insert("error.type".into(), json!("RateLimit"));
    typed2.input = Some(json!({"messages": [{"role": "user", "content": "hi"}]}));
    spans.push(typed2);
    spans.push(failed(
        span(20_003, Some(1), SpanKind::Tool, "fetch", 400, Some(450)),
        "",
    ));
    let mut named = tool(
        span(20_004, Some(1), SpanKind::Tool, "call", 500, Some(650)),
        json!({"q": 1}),
        json!({"ok": true}),
    );
    named.tool.as_mut().unwrap().name = Some("search".into());
    named.component_id = Some("tools \"x\"".into());
    spans.push(named);
    let mut retrieval = span(20_005, Some(1), SpanKind::Retriever, "docs", 700, None);
    retrieval.retrieval = Some(RetrievalDetails::default());
    retrieval.output = Some(json!([1.5, 2.5]));
    spans.push(retrieval);
    let t = trace(State::Errored, &spans);
    let error = |seq: u64, span: Option<u64>, ty: Option<&str>, message: &str| Event {
        trace_id: t.trace_id,
        seq,
        time: at(seq as i64),
        component_id: None,
        body: EventBody::Error(ErrorRecord {
            span_id: span.and_then(traceway_core::SpanId::from_u64),
            error_type: ty.map(str::to_string),
            message: message.into(),
            stacktrace: None,
        }),
    };
    let events = [
        error(1, Some(20_003), Some("ConnectionReset"), "reset by peer"),
        error(2, None, None, "budget exceeded after 12 calls"),
    ];
    let cut: Vec<Span> = spans
        .iter()
        .map(|s| {
            let body = if s.end_time.is_some() {
                EventBody::SpanEnded(s.clone())
            } else {
                EventBody::SpanStarted(s.clone())
            };
            digest_span_of_event_json(&serde_json::to_string(&body).unwrap()).unwrap()
        })
        .collect();
    let now = at(100_000);
    let opts = AnalysisOptions::default();
    let whole = digest(&analyze(&t, &spans, &events, now, &opts), 7);
    let of_cut = digest(&analyze(&t, &cut, &events, now, &opts), 7);
    assert_eq!(of_cut, whole);
    assert!(!whole.error_groups.is_empty() && !whole.components.is_empty());
    let types: Vec<Option<&str>> = whole
        .error_groups
        .iter()
        .map(|g| g.error_type.as_deref())
        .collect();
    for ty in ["TimeoutError", "RateLimit", "ConnectionReset"] {
        assert!(types.contains(&Some(ty)), "{ty} in {types:?}");
    }
    // What the cut keeps, and what it leaves.
    let c = cut.iter().find(|s| s.span_id == typed_id(20_001)).unwrap();
    assert_eq!(
        c.attributes.len(),
        1,
        "only the error type: {:?}",
        c.attributes
    );
    assert_eq!(
        c.status.message.as_deref(),
        Some("HTTP 503 \"upstream\"\nretry in 3s")
    );
    assert!(cut.iter().all(|s| s.input.is_none()
        && s.output.is_none()
        && s.llm.is_none()
        && s.tool.is_none()
        && s.retrieval.is_none()));
    assert!(
        cut.iter().any(|s| s.end_time.is_none()),
        "the running span stays running"
    );
    // A body that is not a span event is an error, not a panic.
    assert!(digest_span_of_event_json("{\"type\":\"log\",\"payload\":{}}").is_err());
    assert!(digest_span_of_event_json("not json").is_err());
}

fn typed_id(n: u64) -> traceway_core::SpanId {
    traceway_core::SpanId::from_u64(n).unwrap()
}
