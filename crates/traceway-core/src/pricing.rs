//! The cost of an LLM call when its span reports none, from a price table shipped in the
//! repository (`data/prices.json`, derived from LiteLLM's model price list by
//! `scripts/refresh-prices`; source, licence and date are in the file) plus the user's
//! overrides. See ADR 017.
//!
//! Matching: the model name as given, lower-cased (`gpt-4o`,
//! `anthropic.claude-sonnet-4-5-20250929-v1:0`); a provider-qualified name is tried whole
//! (`azure/gpt-4o`) and then without its provider (`openai/gpt-4o` → `gpt-4o`); a known
//! provider is tried as a qualifier first (`azure` + `gpt-4o` → `azure/gpt-4o`); a dated
//! version falls back to its undated name (`gpt-4o-2024-08-06`, `claude-…-20250929`,
//! `…@20240620`, `gpt-4-0613` → the name without the date).
//!
//! Token accounting differs by provider: OpenAI (and most others) count cached prompt
//! tokens inside the prompt tokens; Anthropic (Claude, on any platform) reports cache reads
//! and cache writes on top of the input tokens. Reasoning tokens are part of the output
//! tokens. A long-context tier prices the whole request at its rates once the prompt (all
//! its tokens, cached or not) is above the tier's threshold.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use rustc_hash::FxHashMap as HashMap;
use serde::{Deserialize, Serialize};

use crate::model::{CostSource, LlmDetails, Span};

/// The table shipped with Traceway, as JSON.
pub const BUILTIN_JSON: &str = include_str!("../data/prices.json");

/// Prices of one model in US dollars per million tokens. An absent price falls back: cache
/// reads and writes to the input price, reasoning to the output price.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    /// Uncached prompt tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<f64>,
    /// Completion tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<f64>,
    /// Prompt tokens read from a cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read: Option<f64>,
    /// Prompt tokens written to a cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<f64>,
    /// Reasoning tokens (part of the output tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<f64>,
    /// Long-context tiers, by threshold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<Tier>,
    /// The provider the table lists (`openai`, `anthropic`, `bedrock`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}

/// Prices that apply to the whole request once its prompt is above `above` tokens.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// The prompt size (tokens) above which the tier applies.
    pub above: u64,
    /// Uncached prompt tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<f64>,
    /// Completion tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<f64>,
    /// Cache reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read: Option<f64>,
    /// Cache writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<f64>,
}

/// The user's prices: overrides of models in the table and models it lacks. Read from the
/// config file's `[pricing]` section.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PriceOverrides {
    /// A label for this set of prices; a computed cost records
    /// `<table version>+<label>` (default label `overrides`).
    pub label: Option<String>,
    /// Prices by model name (matched with the same rules as the table). An entry replaces
    /// the table's entry whole.
    pub models: BTreeMap<String, ModelPrice>,
}

impl PriceOverrides {
    /// Refuses prices a table must not hold: a price that is negative, infinite or NaN, an
    /// empty model name or label. The message names the model and the field.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(l) = &self.label {
            if l.trim().is_empty() {
                return Err("pricing.label must not be empty".into());
            }
        }
        let check = |model: &str, field: &str, v: Option<f64>| match v {
            Some(x) if !x.is_finite() || x < 0.0 => Err(format!(
                "pricing.models.\"{model}\".{field} must be a finite number >= 0 \
                 (US dollars per million tokens), not {x}"
            )),
            _ => Ok(()),
        };
        for (name, p) in &self.models {
            if name.trim().is_empty() {
                return Err("pricing.models: a model name must not be empty".into());
            }
            check(name, "input", p.input)?;
            check(name, "output", p.output)?;
            check(name, "cache_read", p.cache_read)?;
            check(name, "cache_write", p.cache_write)?;
            check(name, "reasoning", p.reasoning)?;
            for t in &p.tiers {
                check(name, "tiers.input", t.input)?;
                check(name, "tiers.output", t.output)?;
                check(name, "tiers.cache_read", t.cache_read)?;
                check(name, "tiers.cache_write", t.cache_write)?;
            }
            if p.input.is_none() && p.output.is_none() {
                return Err(format!(
                    "pricing.models.\"{name}\" needs an input or an output price"
                ));
            }
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct TableFile {
    version: String,
    models: HashMap<String, ModelPrice>,
}

/// Why a price table could not be read.
#[derive(Debug, thiserror::Error)]
#[error("invalid price table: {0}")]
pub struct PriceTableError(#[from] serde_json::Error);

/// How a provider counts cached prompt tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Accounting {
    /// Cached (and cache-write) tokens are part of the input tokens (OpenAI, Gemini, …).
    CachedInInput,
    /// Cache reads and writes come on top of the input tokens (Anthropic).
    CacheOnTop,
}

/// A priced call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Priced {
    /// The cost in US dollars.
    pub cost_usd: f64,
    /// The table entry used.
    pub model: String,
    /// How its tokens were counted.
    pub accounting: Accounting,
    /// The long-context tier applied, if any (its threshold).
    pub tier_above: Option<u64>,
}

/// Model prices by lower-case name, with the version of the table they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceTable {
    version: String,
    /// Keyed by the table's own names, so FxHash (no seed) is safe here: a client's model
    /// name only probes it (ADR 043).
    models: HashMap<String, ModelPrice>,
}

/// Provider names as instrumentations send them (OpenTelemetry `gen_ai.system` values,
/// OpenInference's) to the qualifiers the table uses.
fn provider_alias(p: &str) -> String {
    let p = p.trim().to_ascii_lowercase();
    match p.as_str() {
        "aws.bedrock" | "aws_bedrock" | "amazon_bedrock" => "bedrock".into(),
        "az.ai.openai" | "azure.ai.openai" | "azure_openai" => "azure".into(),
        "az.ai.inference" | "azure.ai.inference" => "azure_ai".into(),
        "gcp.vertex_ai" | "vertexai" | "vertex" => "vertex_ai".into(),
        "gcp.gemini" | "google" | "google_genai" => "gemini".into(),
        "mistral_ai" | "mistralai" => "mistral".into(),
        "x_ai" | "xai" => "xai".into(),
        _ => p,
    }
}

/// The name without a trailing date or `-latest`: `gpt-4o-2024-08-06`, `…-20250929`,
/// `…@20240620`, `gpt-4-0613`. `None` when there is none.
fn undated(name: &str) -> Option<&str> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = name.strip_suffix("-latest") {
        return Some(rest);
    }
    let b = name.as_bytes();
    let n = b.len();
    // -YYYY-MM-DD
    if n > 11 && b[n - 11] == b'-' && b[n - 6] == b'-' && b[n - 3] == b'-' {
        let (y, m, d) = (&name[n - 10..n - 6], &name[n - 5..n - 3], &name[n - 2..]);
        if digits(y) && digits(m) && digits(d) {
            return Some(&name[..n - 11]);
        }
    }
    // -YYYYMMDD or @YYYYMMDD
    if n > 9 && (b[n - 9] == b'-' || b[n - 9] == b'@') && digits(&name[n - 8..]) {
        return Some(&name[..n - 9]);
    }
    // -MMDD (gpt-4-0613, gpt-3.5-turbo-0125)
    if n > 5 && b[n - 5] == b'-' && digits(&name[n - 4..]) {
        return Some(&name[..n - 5]);
    }
    None
}

fn price_per(tokens: u64, per_million: f64) -> f64 {
    tokens as f64 * per_million / 1e6
}

impl PriceTable {
    /// The table shipped with this build (parsed once).
    pub fn builtin() -> &'static PriceTable {
        static TABLE: OnceLock<PriceTable> = OnceLock::new();
        TABLE.get_or_init(|| {
            PriceTable::from_json(BUILTIN_JSON).expect("the shipped price table is valid JSON")
        })
    }

    /// A table from the JSON form of `data/prices.json`.
    pub fn from_json(json: &str) -> Result<PriceTable, PriceTableError> {
        let f: TableFile = serde_json::from_str(json)?;
        Ok(PriceTable {
            version: f.version,
            models: f
                .models
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
        })
    }

    /// This table with the user's prices on top; its version says so.
    pub fn with_overrides(&self, o: &PriceOverrides) -> PriceTable {
        if o.models.is_empty() {
            return self.clone();
        }
        let mut t = self.clone();
        for (k, v) in &o.models {
            t.models.insert(k.trim().to_ascii_lowercase(), v.clone());
        }
        t.version = format!(
            "{}+{}",
            self.version,
            o.label.as_deref().unwrap_or("overrides")
        );
        t
    }

    /// The table's version, recorded on the spans it prices.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Models in the table.
    pub fn len(&self) -> usize {
        self.models.len()
    }

    /// Whether the table has no model.
    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// The entry for a model, by the matching rules of the module: its key and prices.
    pub fn lookup(&self, provider: Option<&str>, model: &str) -> Option<(&str, &ModelPrice)> {
        let model = model.trim().to_ascii_lowercase();
        if model.is_empty() {
            return None;
        }
        let mut provider = provider.map(provider_alias).filter(|p| !p.is_empty());
        let mut names = vec![model.clone()];
        if let Some((prefix, rest)) = model.split_once('/') {
            names.push(rest.to_string());
            provider.get_or_insert_with(|| provider_alias(prefix));
        }
        for name in &names {
            let variants = std::iter::once(name.as_str()).chain(undated(name));
            for v in variants {
                if let Some(p) = &provider {
                    let q = format!("{p}/{v}");
                    if let Some((k, e)) = self.models.get_key_value(&q) {
                        return Some((k, e));
                    }
                }
                if let Some((k, e)) = self.models.get_key_value(v) {
                    return Some((k, e));
                }
            }
        }
        None
    }

    /// The cost of an LLM call from its tokens, or `None` when the model is unknown or
    /// the call has no token counts.
    pub fn price(&self, llm: &LlmDetails) -> Option<Priced> {
        let (key, p) = self.lookup(llm.provider.as_deref(), llm.model.as_deref()?)?;
        if llm.input_tokens.is_none() && llm.output_tokens.is_none() {
            return None;
        }
        let anthropic = p.provider.as_deref() == Some("anthropic")
            || key.contains("claude")
            || llm
                .provider
                .as_deref()
                .is_some_and(|x| x.eq_ignore_ascii_case("anthropic"));
        let accounting = if anthropic {
            Accounting::CacheOnTop
        } else {
            Accounting::CachedInInput
        };
        let input = llm.input_tokens.unwrap_or(0);
        let output = llm.output_tokens.unwrap_or(0);
        let cached = llm.cached_tokens.unwrap_or(0);
        let written = llm.cache_write_tokens.unwrap_or(0);
        let reasoning = llm.reasoning_tokens.unwrap_or(0).min(output);
        let (uncached, prompt) = match accounting {
            Accounting::CachedInInput => (input.saturating_sub(cached + written), input),
            Accounting::CacheOnTop => (input, input + cached + written),
        };
        let tier = p
            .tiers
            .iter()
            .filter(|t| prompt > t.above)
            .max_by_key(|t| t.above);
        let pick = |tiered: Option<f64>, base: Option<f64>| tiered.or(base);
        let in_rate = pick(tier.and_then(|t| t.input), p.input).unwrap_or(0.0);
        let out_rate = pick(tier.and_then(|t| t.output), p.output).unwrap_or(0.0);
        let read_rate = pick(tier.and_then(|t| t.cache_read), p.cache_read).unwrap_or(in_rate);
        let write_rate = pick(tier.and_then(|t| t.cache_write), p.cache_write).unwrap_or(in_rate);
        let reasoning_rate = p.reasoning.unwrap_or(out_rate);
        let cost = price_per(uncached, in_rate)
            + price_per(cached, read_rate)
            + price_per(written, write_rate)
            + price_per(output - reasoning, out_rate)
            + price_per(reasoning, reasoning_rate);
        Some(Priced {
            cost_usd: cost,
            model: key.to_string(),
            accounting,
            tier_above: tier.map(|t| t.above),
        })
    }
}

/// What [`fill_cost`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CostFill {
    /// Not an LLM span: nothing to do.
    NotLlm,
    /// The span reported its cost; it is marked `reported`.
    Reported,
    /// The cost was computed from the table; it is marked `computed` with the version.
    Computed,
    /// No cost reported and none could be computed (unknown model, no tokens).
    Unpriced,
}

/// Fills an LLM span's cost when it reports none, and records where the cost came from:
/// `cost_source = reported` for a cost the client sent, `computed` with the table's
/// `price_table` version for one computed here. A span already `computed` is priced
/// again (its tokens may have grown since it started). Call it on every span before it
/// is folded into the rollups, so that rollups and listings include the cost.
pub fn fill_cost(span: &mut Span, table: &PriceTable) -> CostFill {
    let Some(llm) = span.llm.as_mut() else {
        return CostFill::NotLlm;
    };
    if llm.cost_usd.is_some() && llm.cost_source != Some(CostSource::Computed) {
        llm.cost_source = Some(CostSource::Reported);
        llm.price_table = None;
        return CostFill::Reported;
    }
    match table.price(llm) {
        Some(p) => {
            llm.cost_usd = Some(p.cost_usd);
            llm.cost_source = Some(CostSource::Computed);
            llm.price_table = Some(table.version.clone());
            CostFill::Computed
        }
        None => {
            if llm.cost_source == Some(CostSource::Computed) {
                llm.cost_usd = None;
                llm.cost_source = None;
                llm.price_table = None;
            }
            CostFill::Unpriced
        }
    }
}
