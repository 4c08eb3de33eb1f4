//! The price table: each matching rule, each provider's token accounting, long-context
//! tiers, overrides, and the fill of a span's cost. Figures are the shipped table's
//! (data/prices.json), in dollars per million tokens.

use traceway_core::pricing::{fill_cost, Accounting, CostFill, PriceOverrides, PriceTable};
use traceway_core::{CostSource, LlmDetails, Rollups, SpanKind};

use crate::fixtures::span;

fn table() -> &'static PriceTable {
    PriceTable::builtin()
}

fn key(provider: Option<&str>, model: &str) -> Option<String> {
    table().lookup(provider, model).map(|(k, _)| k.to_string())
}

fn call(provider: &str, model: &str, input: u64, output: u64) -> LlmDetails {
    LlmDetails {
        provider: Some(provider.into()),
        model: Some(model.into()),
        input_tokens: Some(input),
        output_tokens: Some(output),
        ..Default::default()
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn the_shipped_table_says_where_it_comes_from() {
    let json: serde_json::Value =
        serde_json::from_str(traceway_core::pricing::BUILTIN_JSON).unwrap();
    assert!(json["source"].as_str().unwrap().contains("LiteLLM"));
    assert!(json["licence"].as_str().unwrap().starts_with("MIT"));
    assert!(json["fetched"].as_str().is_some());
    assert!(table().version().starts_with("litellm-"));
    assert!(table().len() > 1000);
}

#[test]
fn matching_rules() {
    let cases: &[(Option<&str>, &str, Option<&str>)] = &[
        // The name as given, any case.
        (None, "gpt-4o", Some("gpt-4o")),
        (None, "GPT-4o", Some("gpt-4o")),
        // Provider-qualified: tried whole, then without the provider.
        (None, "openai/gpt-4o", Some("gpt-4o")),
        (None, "azure/gpt-4o", Some("azure/gpt-4o")),
        // A known provider (as OpenTelemetry names it) qualifies a bare name.
        (Some("az.ai.openai"), "gpt-4o", Some("azure/gpt-4o")),
        (
            Some("gcp.vertex_ai"),
            "claude-sonnet-4-5",
            Some("vertex_ai/claude-sonnet-4-5"),
        ),
        (Some("openai"), "gpt-4o", Some("gpt-4o")),
        // Dated versions: listed ones match exactly, others fall back to the undated name.
        (None, "gpt-4o-2024-08-06", Some("gpt-4o-2024-08-06")),
        (None, "gpt-4o-mini-2099-01-01", Some("gpt-4o-mini")),
        (
            Some("anthropic"),
            "claude-sonnet-4-5-20991231",
            Some("claude-sonnet-4-5"),
        ),
        (
            Some("gcp.vertex_ai"),
            "claude-sonnet-4-5@20991231",
            Some("vertex_ai/claude-sonnet-4-5"),
        ),
        (None, "gpt-4-0613", Some("gpt-4-0613")),
        (None, "o3-latest", Some("o3")),
        // Unknown models are not guessed.
        (None, "my-own-model", None),
        (None, "", None),
    ];
    for (provider, model, want) in cases {
        assert_eq!(
            key(*provider, model).as_deref(),
            *want,
            "{provider:?} {model:?}"
        );
    }
}

#[test]
fn openai_cached_tokens_are_part_of_the_prompt() {
    // gpt-4o: input 2.5, cached input 1.25, output 10 per million.
    let mut l = call("openai", "gpt-4o", 1000, 100);
    l.cached_tokens = Some(400);
    let p = table().price(&l).unwrap();
    assert_eq!(p.accounting, Accounting::CachedInInput);
    assert!(
        close(
            p.cost_usd,
            (600.0 * 2.5 + 400.0 * 1.25 + 100.0 * 10.0) / 1e6
        ),
        "{p:?}"
    );
}

#[test]
fn anthropic_cache_tokens_come_on_top_of_the_input() {
    // claude-sonnet-4-5: input 3, cache read 0.3, cache write 3.75, output 15 per million.
    let mut l = call("anthropic", "claude-sonnet-4-5", 1000, 100);
    l.cached_tokens = Some(400);
    l.cache_write_tokens = Some(200);
    let p = table().price(&l).unwrap();
    assert_eq!(p.accounting, Accounting::CacheOnTop);
    assert!(
        close(
            p.cost_usd,
            (1000.0 * 3.0 + 400.0 * 0.3 + 200.0 * 3.75 + 100.0 * 15.0) / 1e6
        ),
        "{p:?}"
    );
}

#[test]
fn a_long_context_tier_prices_the_whole_request() {
    // gemini-2.5-pro: 1.25 / 10 up to 200k prompt tokens, 2.5 / 15 above, for all tokens.
    let small = table()
        .price(&call("gemini", "gemini-2.5-pro", 200_000, 1000))
        .unwrap();
    assert_eq!(small.tier_above, None);
    assert!(close(
        small.cost_usd,
        (200_000.0 * 1.25 + 1000.0 * 10.0) / 1e6
    ));
    let big = table()
        .price(&call("gemini", "gemini-2.5-pro", 200_001, 1000))
        .unwrap();
    assert_eq!(big.tier_above, Some(200_000));
    assert!(close(big.cost_usd, (200_001.0 * 2.5 + 1000.0 * 15.0) / 1e6));
    // Anthropic on Vertex: the prompt that decides the tier counts the cache tokens too.
    let mut l = call("gcp.vertex_ai", "claude-sonnet-4-5", 150_000, 1000);
    l.cached_tokens = Some(60_000);
    let p = table().price(&l).unwrap();
    assert_eq!(
        (p.accounting, p.tier_above),
        (Accounting::CacheOnTop, Some(200_000))
    );
    assert!(close(
        p.cost_usd,
        (150_000.0 * 6.0 + 60_000.0 * 0.6 + 1000.0 * 22.5) / 1e6
    ));
}

#[test]
fn reasoning_tokens_are_output_unless_priced_apart_and_overrides_win() {
    let o: PriceOverrides = toml_like(
        r#"{"label": "acme", "models": {
            "gpt-4o": {"input": 1.0, "output": 2.0},
            "acme-thinker": {"input": 1.0, "output": 4.0, "reasoning": 8.0}
        }}"#,
    );
    let t = table().with_overrides(&o);
    assert_eq!(t.version(), format!("{}+acme", table().version()));
    let p = t
        .price(&call("openai", "gpt-4o", 1_000_000, 1_000_000))
        .unwrap();
    assert!(close(p.cost_usd, 3.0));
    let mut l = call("acme", "acme-thinker", 0, 1000);
    l.reasoning_tokens = Some(600);
    assert!(close(
        t.price(&l).unwrap().cost_usd,
        (400.0 * 4.0 + 600.0 * 8.0) / 1e6
    ));
    // Without a reasoning price, reasoning tokens cost what output tokens cost.
    let mut l = call("openai", "o3", 0, 1000);
    l.reasoning_tokens = Some(600);
    assert!(close(
        table().price(&l).unwrap().cost_usd,
        1000.0 * 8.0 / 1e6
    ));
    // An unknown field in the user's prices is an error, not silently ignored.
    assert!(serde_json::from_str::<PriceOverrides>(r#"{"models": {"m": {"imput": 1}}}"#).is_err());
}

fn toml_like(json: &str) -> PriceOverrides {
    serde_json::from_str(json).unwrap()
}

#[test]
fn fill_cost_computes_only_what_is_not_reported_and_says_so() {
    let mut s = span(1, None, SpanKind::Llm, "chat", 0, Some(10));
    s.llm = Some(call("openai", "gpt-4o", 1_000_000, 0));
    assert_eq!(fill_cost(&mut s, table()), CostFill::Computed);
    let l = s.llm.as_ref().unwrap();
    assert!(close(l.cost_usd.unwrap(), 2.5));
    assert_eq!(l.cost_source, Some(CostSource::Computed));
    assert_eq!(l.price_table.as_deref(), Some(table().version()));
    // Its tokens grew (the end of the call): computed again.
    s.llm.as_mut().unwrap().input_tokens = Some(2_000_000);
    assert_eq!(fill_cost(&mut s, table()), CostFill::Computed);
    assert!(close(s.llm.as_ref().unwrap().cost_usd.unwrap(), 5.0));

    let mut r = span(2, None, SpanKind::Llm, "chat", 0, Some(10));
    r.llm = Some(LlmDetails {
        cost_usd: Some(0.42),
        ..call("openai", "gpt-4o", 1_000_000, 0)
    });
    assert_eq!(fill_cost(&mut r, table()), CostFill::Reported);
    let l = r.llm.as_ref().unwrap();
    assert_eq!(
        (l.cost_usd, l.cost_source),
        (Some(0.42), Some(CostSource::Reported))
    );
    assert_eq!(l.price_table, None);

    let mut u = span(3, None, SpanKind::Llm, "chat", 0, Some(10));
    u.llm = Some(call("acme", "my-own-model", 10, 10));
    assert_eq!(fill_cost(&mut u, table()), CostFill::Unpriced);
    assert_eq!(u.llm.as_ref().unwrap().cost_usd, None);
    let mut t = span(4, None, SpanKind::Tool, "t", 0, Some(1));
    assert_eq!(fill_cost(&mut t, table()), CostFill::NotLlm);

    // The new fields are in the JSON when set, and older JSON without them still reads.
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(v["llm"]["cost_source"], "computed");
    let old = r#"{"span_id":"0000000000000001","name":"x","start_time":"2026-01-01T00:00:00Z","llm":{"model":"gpt-4o","cost_usd":1.0}}"#;
    let back: traceway_core::Span = serde_json::from_str(old).unwrap();
    assert_eq!(back.llm.unwrap().cost_source, None);
}

#[test]
fn rollups_keep_tokens_and_cost_per_model_without_counting_a_span_twice() {
    let mut started = span(1, None, SpanKind::Llm, "chat", 0, None);
    started.llm = Some(LlmDetails {
        model: Some("gpt-4o".into()),
        ..Default::default()
    });
    let mut ended = span(1, None, SpanKind::Llm, "chat", 0, Some(10));
    ended.llm = Some(call("openai", "gpt-4o", 1000, 100));
    fill_cost(&mut ended, table());
    let mut other = span(2, None, SpanKind::Llm, "chat", 0, Some(10));
    other.llm = Some(call("anthropic", "claude-sonnet-4-5", 10, 1));
    let mut r = Rollups::default();
    r.apply_span(None, &started);
    r.apply_span(Some(&started), &ended);
    r.apply_span(Some(&ended), &ended);
    r.apply_span(None, &other);
    let m = &r.models["gpt-4o"];
    assert_eq!((m.calls, m.input_tokens, m.output_tokens), (1, 1000, 100));
    assert!(close(m.cost_usd, (1000.0 * 2.5 + 100.0 * 10.0) / 1e6));
    assert_eq!(r.models["claude-sonnet-4-5"].calls, 1);
    assert!(close(r.cost_usd, m.cost_usd));
    // Rollups stored before this field existed still read.
    let old: Rollups = serde_json::from_str(r#"{"span_count":3}"#).unwrap();
    assert!(old.models.is_empty());
}
