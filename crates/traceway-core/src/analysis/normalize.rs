//! Normal forms for comparing calls: tool arguments and results, prompts and error
//! messages. See ADR 016.

use std::hash::BuildHasher;

use serde_json::Value;

/// Keys whose values change on every call and say nothing about what was asked: ignored
/// when arguments are compared (matched case-insensitively, `-` and `_` ignored).
pub const DEFAULT_VOLATILE_KEYS: &[&str] = &[
    "request_id",
    "requestid",
    "idempotency_key",
    "nonce",
    "trace_id",
    "span_id",
    "traceparent",
    "timestamp",
    "ts",
    "time",
    "now",
    "created_at",
    "updated_at",
    "sent_at",
];

fn key_form(k: &str) -> String {
    k.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Keys prepared for [`canonical`], with the set of their lengths (bit `n` for length
/// `n` < 64), so that most keys are told apart by their length alone.
pub(crate) struct Volatile(Vec<String>, u64);

impl Volatile {
    pub fn new(keys: &[String]) -> Volatile {
        let forms: Vec<String> = keys.iter().map(|k| key_form(k)).collect();
        let lengths = forms
            .iter()
            .filter(|f| f.len() < 64)
            .fold(0u64, |m, f| m | 1 << f.len());
        Volatile(forms, lengths)
    }
    fn contains(&self, k: &str) -> bool {
        // This runs for every key of every argument object: the normal form is built on
        // the stack, once per key. Volatile keys are ASCII and short; a key that is not
        // (or longer than 64 bytes) is never one.
        let mut buf = [0u8; 64];
        let mut n = 0;
        for b in k.bytes() {
            if b == b'_' || b == b'-' {
                continue;
            }
            if n == buf.len() || !b.is_ascii() {
                return false;
            }
            buf[n] = b.to_ascii_lowercase();
            n += 1;
        }
        if n < 64 && self.1 & (1 << n) == 0 {
            return false;
        }
        self.0.iter().any(|v| v.as_bytes() == &buf[..n])
    }
}

/// Whether a string is an RFC 3339 / ISO 8601 date-time (volatile by nature).
fn looks_like_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 19
        && b[4] == b'-'
        && b[7] == b'-'
        && (b[10] == b'T' || b[10] == b' ')
        && b[13] == b':'
        && b[..4].iter().all(u8::is_ascii_digit)
}

/// A string as a JSON literal, escaped, appended without an intermediate allocation.
fn push_str_lit(out: &mut String, s: &str) {
    out.push('"');
    // Most strings need no escape: copied in one piece.
    if !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push_str(s);
        out.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = std::fmt::Write::write_fmt(out, format_args!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Writes the canonical form of a JSON value: object keys sorted, volatile keys dropped,
/// date-time strings replaced by `<time>`, strings trimmed. Two calls with the same
/// canonical arguments asked for the same thing.
pub(crate) fn canonical(v: &Value, volatile: &Volatile, out: &mut String) {
    match v {
        Value::Object(m) => {
            out.push('{');
            let mut n = 0;
            let mut entry = |k: &str, v: &Value, out: &mut String| {
                if volatile.contains(k) {
                    return;
                }
                if n > 0 {
                    out.push(',');
                }
                n += 1;
                push_str_lit(out, k);
                out.push(':');
                canonical(v, volatile, out);
            };
            // serde_json's map iterates in key order unless its `preserve_order` feature
            // is on somewhere in the build; sort only when it is not in order.
            if m.keys().is_sorted() {
                for (k, v) in m {
                    entry(k, v, out);
                }
            } else {
                let mut pairs: Vec<(&String, &Value)> = m.iter().collect();
                pairs.sort_unstable_by(|a, b| a.0.cmp(b.0));
                for (k, v) in pairs {
                    entry(k, v, out);
                }
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (n, x) in a.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                canonical(x, volatile, out);
            }
            out.push(']');
        }
        Value::String(s) if looks_like_time(s.trim()) => out.push_str("\"<time>\""),
        Value::String(s) => {
            // A JSON string holding JSON (arguments as OpenAI sends them) is compared as
            // the JSON it holds.
            let t = s.trim();
            if (t.starts_with('{') && t.ends_with('}')) || (t.starts_with('[') && t.ends_with(']'))
            {
                if let Ok(inner) = serde_json::from_str::<Value>(t) {
                    return canonical(&inner, volatile, out);
                }
            }
            push_str_lit(out, t);
        }
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => out.push_str(itoa::Buffer::new().format(u)),
            (None, Some(i)) => out.push_str(itoa::Buffer::new().format(i)),
            _ => {
                let _ = std::fmt::Write::write_fmt(out, format_args!("{n}"));
            }
        },
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Null => out.push_str("null"),
    }
}

/// The 64-bit fingerprints of canonical forms within one analysis: foldhash, seeded per
/// process and per analysis, so equal forms get equal fingerprints in the analysis and a
/// client cannot prepare two forms that collide (SipHash with fixed keys, used before, was
/// unseeded and ~2 M instructions of the bench trace's analysis; ADR 037). Fingerprints
/// are never stored.
pub(crate) struct Fingerprints(foldhash::fast::RandomState);

impl Fingerprints {
    pub fn new() -> Fingerprints {
        Fingerprints(foldhash::fast::RandomState::default())
    }
    pub fn of(&self, s: &str) -> u64 {
        self.0.hash_one(s)
    }
}

/// At most `max` characters of `s`, with `…` when cut.
pub(crate) fn preview(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}

/// An error message with what varies between occurrences of the same error replaced:
/// numbers by `<n>`, hexadecimal ids and UUIDs by `<id>`, quoted text by `<s>`; whitespace
/// collapsed; at most 200 characters.
pub fn normalize_message(m: &str) -> String {
    let mut out = String::with_capacity(m.len().min(256));
    let chars: Vec<char> = m.chars().collect();
    let mut i = 0;
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    while i < chars.len() && out.chars().count() < 200 {
        let c = chars[i];
        if c == '"' || c == '\'' {
            if let Some(close) = chars[i + 1..].iter().position(|&x| x == c) {
                out.push_str("<s>");
                i += close + 2;
                continue;
            }
        }
        if is_word(c) {
            let j = chars[i..]
                .iter()
                .position(|&x| !is_word(x))
                .map_or(chars.len(), |p| i + p);
            let word: String = chars[i..j].iter().collect();
            let digits = word.chars().filter(char::is_ascii_digit).count();
            let hex = word.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
            if word.chars().all(|c| c.is_ascii_digit()) {
                out.push_str("<n>");
            } else if digits > 0 && hex && word.len() >= 8 {
                out.push_str("<id>");
            } else if digits * 2 > word.len() {
                out.push_str("<n>");
            } else {
                out.push_str(&word);
            }
            i = j;
            continue;
        }
        if c.is_whitespace() {
            if !out.ends_with(' ') {
                out.push(' ');
            }
        } else {
            out.push(c);
        }
        i += 1;
    }
    out.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canon(v: Value) -> String {
        let keys: Vec<String> = DEFAULT_VOLATILE_KEYS
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut s = String::new();
        canonical(&v, &Volatile::new(&keys), &mut s);
        s
    }

    #[test]
    fn arguments_compare_without_order_volatile_keys_or_times() {
        assert_eq!(
            canon(json!({"b": 1, "a": " x ", "requestId": "r-1", "at": "2026-01-01T00:00:00Z"})),
            canon(json!({"a": "x", "b": 1, "request_id": "r-2", "at": "2026-02-03T04:05:06.7Z"}))
        );
        assert_ne!(canon(json!({"order": 42})), canon(json!({"order": 43})));
        assert_eq!(canon(json!("{\"q\": 1}")), canon(json!({"q": 1})));
    }

    #[test]
    fn messages_lose_what_varies() {
        assert_eq!(
            normalize_message("timeout after 3000 ms calling \"orders\" id 9f8e7d6c-1a2b"),
            "timeout after <n> ms calling <s> id <id>"
        );
        assert_eq!(
            normalize_message("rate  limited (429)"),
            normalize_message("rate limited (503)")
        );
        assert_eq!(normalize_message("KeyError: user"), "KeyError: user");
    }

    /// What `Volatile::contains` must answer: the key's normal form is one of the forms.
    fn contains_by_definition(keys: &[String], k: &str) -> bool {
        k.is_ascii() && keys.iter().any(|v| key_form(v) == key_form(k))
    }

    #[test]
    fn volatile_keys_match_by_their_normal_form() {
        let keys: Vec<String> = DEFAULT_VOLATILE_KEYS
            .iter()
            .map(|s| s.to_string())
            .collect();
        let v = Volatile::new(&keys);
        for k in [
            "Request-ID",
            "request_id",
            "TS",
            "_ts_",
            "created-At",
            "nonce",
        ] {
            assert!(v.contains(k), "{k}");
        }
        for k in [
            "",
            "_",
            "turn",
            "ok",
            "k",
            "tss",
            "requestidx",
            "tïme",
            "ſs",
        ] {
            assert!(!v.contains(k), "{k}");
        }
        // A normal form of 64 bytes is compared; a longer one never matches.
        let long = format!("{}x", "a".repeat(63));
        let longer = format!("{}x", "a".repeat(64));
        let v = Volatile::new(&[long.clone(), longer.clone(), "_".into()]);
        assert!(v.contains(&long.to_uppercase()) && v.contains("") && v.contains("-"));
        assert!(!v.contains(&long[1..]) && !v.contains(&longer));
    }

    proptest::proptest! {
        #[test]
        fn volatile_contains_is_the_normal_form_test(
            keys in proptest::collection::vec("[a-zA-Z_\\-é]{0,6}", 0..6),
            k in "[a-zA-Z_\\-é]{0,7}",
        ) {
            let v = Volatile::new(&keys);
            proptest::prop_assert_eq!(v.contains(&k), contains_by_definition(&keys, &k));
            let known = keys.first().cloned().unwrap_or_default();
            proptest::prop_assert_eq!(v.contains(&known), contains_by_definition(&keys, &known));
        }
    }
}
