//! The compact and detailed formatters over a small agent trace.

use serde_json::json;
use traceway_core::format::{compact, detailed};
use traceway_core::{Message, SpanKind, State};

use crate::fixtures::*;

fn agent() -> Vec<traceway_core::Span> {
    let mut answer = llm(
        span(3, Some(1), SpanKind::Llm, "answer", 300, Some(1500)),
        "gpt-4o-mini",
        400,
        70,
    );
    answer.llm.as_mut().unwrap().input_messages = vec![Message {
        role: "user".into(),
        content: Some("where is order 42?".into()),
        ..Default::default()
    }];
    vec![
        answer,
        span(1, None, SpanKind::Agent, "run", 0, Some(1600)),
        tool(
            span(2, Some(1), SpanKind::Tool, "get_order", 10, Some(290)),
            json!({"id": 42}),
            json!({"status": "shipped"}),
        ),
        failed(
            span(4, Some(1), SpanKind::Tool, "notify", 1500, Some(1550)),
            "smtp timeout",
        ),
        span(5, Some(1), SpanKind::Retriever, "search", 1550, None),
    ]
}

#[test]
fn compact_is_one_entry_per_step_in_tree_order_with_timing_tokens_and_status() {
    let spans = agent();
    let v = compact(&trace(State::Running, &spans), &spans);
    let lines: Vec<&str> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["line"].as_str().unwrap())
        .collect();
    assert_eq!(
        lines,
        [
            "agent run 1.60s ok",
            "  tool get_order tool=get_order 280ms ok",
            "  llm answer model=gpt-4o-mini tokens=470 1.20s ok",
            "  tool notify 50ms error: smtp timeout",
            "  retriever search running",
        ]
    );
    let answer = &v["steps"][2];
    assert_eq!(answer["offset_ms"], 300.0);
    assert_eq!(answer["duration_ms"], 1200.0);
    assert_eq!(
        answer["tokens"],
        json!({"input": 400, "output": 70, "total": 470})
    );
    // The compact form leaves the content out even when the level kept it.
    assert!(answer.get("input_messages").is_none());
    assert_eq!(v["steps"][3]["status"], "error");
    assert_eq!(v["steps"][3]["error"], "smtp timeout");
    assert_eq!(v["steps"][4]["duration_ms"], serde_json::Value::Null);
    assert_eq!(v["steps"][4]["status"], "running");
    assert_eq!(v["span_count"], 5);
    assert_eq!(v["error_count"], 1);
    assert_eq!(v["tokens"]["total"], 470);
}

#[test]
fn detailed_keeps_every_field_of_every_step() {
    let spans = agent();
    let v = detailed(&trace(State::Completed, &spans), &spans);
    assert_eq!(v["trace"]["state"], "COMPLETED");
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 5);
    assert_eq!(steps[1]["tool"]["arguments"], json!({"id": 42}));
    assert_eq!(steps[1]["tool"]["result"], json!({"status": "shipped"}));
    assert_eq!(steps[1]["depth"], 1);
    assert_eq!(
        steps[2]["llm"]["input_messages"][0]["content"],
        "where is order 42?"
    );
    assert_eq!(steps[3]["status"]["message"], "smtp timeout");
}

#[test]
fn spans_in_a_parent_cycle_are_still_listed() {
    let spans = vec![
        span(1, Some(2), SpanKind::Chain, "a", 0, Some(10)),
        span(2, Some(1), SpanKind::Chain, "b", 5, Some(10)),
        span(3, None, SpanKind::Chain, "c", 1, Some(2)),
    ];
    let v = compact(&trace(State::Completed, &spans), &spans);
    let names: Vec<&str> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["c", "a", "b"]);
}
