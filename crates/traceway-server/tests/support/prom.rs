//! A strict reader of the OpenMetrics text exposition that `/metrics` serves, shared by
//! the server's and the CLI's test binaries (`#[path]`).

use std::collections::{BTreeMap, BTreeSet};

/// Parses an OpenMetrics text exposition into `name{labels}` → value, checking its form:
/// it ends with `# EOF`, every sample belongs to a family declared by `# TYPE` before it
/// (a counter's samples end in `_total`), names and labels are well formed, values are
/// numbers.
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut families = BTreeSet::new();
    let mut counters = BTreeSet::new();
    let mut out = BTreeMap::new();
    let body = text
        .strip_suffix("# EOF\n")
        .unwrap_or_else(|| panic!("no # EOF at the end:\n{text}"));
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(families.insert(name.to_string()), "family twice: {line}");
            if kind == "counter" {
                counters.insert(name.to_string());
            }
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with("# UNIT ") {
            continue;
        }
        assert!(
            !line.is_empty() && !line.starts_with('#'),
            "stray line {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {line}"));
        let name = series.split('{').next().expect("name");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !name.starts_with(|c: char| c.is_ascii_digit()),
            "bad name {line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                let inner = labels
                    .strip_prefix('{')
                    .and_then(|l| l.strip_suffix('}'))
                    .unwrap_or_else(|| panic!("bad labels {line}"));
                for pair in inner.split(',') {
                    let (k, v) = pair.split_once('=').expect("label=value");
                    assert!(k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                    assert!(v.starts_with('"') && v.ends_with('"'), "{line}");
                }
            }
        }
        if let Some(counter) = name.strip_suffix("_total") {
            assert!(counters.contains(counter), "no counter TYPE before {line}");
        } else {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| families.contains(*f)))
                .unwrap_or(name);
            assert!(families.contains(family), "no TYPE before {line}");
            assert!(
                !counters.contains(family),
                "a counter sample without _total: {line}"
            );
        }
        assert!(
            out.insert(series.to_string(), value).is_none(),
            "twice: {line}"
        );
    }
    out
}
