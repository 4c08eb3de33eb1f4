//! OTLP attribute values as JSON, and a bag of attributes that remembers which ones the
//! mapping moved into typed fields.

use std::borrow::Cow;
use std::collections::HashMap;

use foldhash::fast::RandomState;

use base64::Engine as _;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use serde_json::{Map, Number, Value};

/// An OTLP value as JSON. Doubles JSON cannot hold become `"NaN"`, `"Infinity"` or
/// `"-Infinity"`; bytes become standard base64; an empty value (and a profiles string-table
/// index, which means nothing outside a profile) becomes `null`.
pub(crate) fn to_json(v: Option<&any_value::Value>) -> Value {
    use any_value::Value as V;
    match v {
        None | Some(V::StringValueStrindex(_)) => Value::Null,
        Some(V::StringValue(s)) => Value::String(s.clone()),
        Some(V::BoolValue(b)) => Value::Bool(*b),
        Some(V::IntValue(i)) => Value::Number((*i).into()),
        Some(V::DoubleValue(d)) => match Number::from_f64(*d) {
            Some(n) => Value::Number(n),
            None if d.is_nan() => Value::String("NaN".into()),
            None if *d > 0.0 => Value::String("Infinity".into()),
            None => Value::String("-Infinity".into()),
        },
        Some(V::BytesValue(b)) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        Some(V::ArrayValue(a)) => {
            Value::Array(a.values.iter().map(|v| to_json(v.value.as_ref())).collect())
        }
        Some(V::KvlistValue(kv)) => Value::Object(to_json_map(&kv.values)),
    }
}

/// Key-value pairs as a JSON object; of repeated keys the last wins.
pub(crate) fn to_json_map(kvs: &[KeyValue]) -> Map<String, Value> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), to_json(value_of(kv))))
        .collect()
}

fn value_of(kv: &KeyValue) -> Option<&any_value::Value> {
    kv.value.as_ref().and_then(|v: &AnyValue| v.value.as_ref())
}

/// A string or an integer, as text (ids such as `user.id` come as either).
pub(crate) fn as_text(v: &any_value::Value) -> Option<String> {
    as_text_ref(v).map(Cow::into_owned)
}

/// [`as_text`] borrowing the request's string (a copy only for an integer).
pub(crate) fn as_text_ref(v: &any_value::Value) -> Option<Cow<'_, str>> {
    match v {
        any_value::Value::StringValue(s) if !s.is_empty() => Some(Cow::Borrowed(s)),
        any_value::Value::IntValue(i) => Some(Cow::Owned(i.to_string())),
        _ => None,
    }
}

/// A non-negative whole count: an integer, a whole double, or a decimal string.
pub(crate) fn as_count(v: &any_value::Value) -> Option<u64> {
    match v {
        any_value::Value::IntValue(i) => u64::try_from(*i).ok(),
        any_value::Value::DoubleValue(d) if *d >= 0.0 && d.fract() == 0.0 && *d < 2f64.powi(64) => {
            Some(*d as u64)
        }
        any_value::Value::StringValue(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A finite number: a double, an integer, or a decimal string.
pub(crate) fn as_number(v: &any_value::Value) -> Option<f64> {
    let f = match v {
        any_value::Value::DoubleValue(d) => *d,
        any_value::Value::IntValue(i) => *i as f64,
        any_value::Value::StringValue(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    f.is_finite().then_some(f)
}

/// A value that may hold JSON: a string is parsed when it is JSON and kept as a string
/// otherwise; arrays and key-value lists convert as they are.
pub(crate) fn as_json(v: &any_value::Value) -> Value {
    match v {
        any_value::Value::StringValue(s) => parse_json_or_string(s),
        other => to_json(Some(other)),
    }
}

/// `s` parsed as JSON, or `s` itself as a JSON string when it is not JSON.
pub(crate) fn parse_json_or_string(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_string()))
}

/// A span's (or resource's) attributes, looked up by key, with a mark on each one the
/// mapping moved into a typed field.
pub(crate) struct Attrs<'a> {
    /// Key and value in arrival order; a repeated key keeps only its last occurrence.
    items: Vec<Item<'a>>,
    /// Keys come from clients, so the hasher is seeded per process (no collisions made in
    /// advance), and it is foldhash rather than SipHash: lookups are most of the mapping's
    /// hashing (ADR 043).
    index: HashMap<&'a str, usize, RandomState>,
}

/// One attribute of an [`Attrs`], with its marks kept beside it (one allocation per span
/// for all of them).
struct Item<'a> {
    key: &'a str,
    value: Option<&'a any_value::Value>,
    /// Moved into a typed field.
    used: bool,
    /// Moved elsewhere and never repeated, even when every attribute is kept.
    dropped: bool,
}

impl<'a> Attrs<'a> {
    pub(crate) fn new(kvs: &'a [KeyValue]) -> Attrs<'a> {
        let mut items: Vec<Item<'a>> = Vec::with_capacity(kvs.len());
        let mut index: HashMap<&'a str, usize, RandomState> =
            HashMap::with_capacity_and_hasher(kvs.len(), RandomState::default());
        for kv in kvs {
            let value = value_of(kv);
            match index.get(kv.key.as_str()) {
                Some(&i) => items[i].value = value,
                None => {
                    index.insert(kv.key.as_str(), items.len());
                    items.push(Item {
                        key: kv.key.as_str(),
                        value,
                        used: false,
                        dropped: false,
                    });
                }
            }
        }
        Attrs { items, index }
    }

    /// The value of `key`, without marking it.
    pub(crate) fn get(&self, key: &str) -> Option<&'a any_value::Value> {
        self.index.get(key).and_then(|&i| self.items[i].value)
    }

    /// Marks `key` as moved into a typed field.
    pub(crate) fn mark(&mut self, key: &str) {
        if let Some(&i) = self.index.get(key) {
            self.items[i].used = true;
        }
    }

    /// Marks `key` as moved and never to be repeated in the attributes (embedding vectors,
    /// stored once).
    pub(crate) fn drop_key(&mut self, key: &str) {
        if let Some(&i) = self.index.get(key) {
            self.items[i].used = true;
            self.items[i].dropped = true;
        }
    }

    /// The value of `key` converted with `conv`, marking the key when the conversion works.
    pub(crate) fn take<T>(
        &mut self,
        key: &str,
        conv: impl Fn(&any_value::Value) -> Option<T>,
    ) -> Option<T> {
        let &i = self.index.get(key)?;
        let v = conv(self.items[i].value?)?;
        self.items[i].used = true;
        Some(v)
    }

    /// The value of `key`, marking it (one lookup for both).
    pub(crate) fn take_value(&mut self, key: &str) -> Option<&'a any_value::Value> {
        let &i = self.index.get(key)?;
        let v = self.items[i].value?;
        self.items[i].used = true;
        Some(v)
    }

    /// The first of `keys` whose value converts. Every key holding that same value is marked;
    /// a key with a different value (a requested model that differs from the one that
    /// answered) is left for the attributes, so nothing is lost. Each key is looked up once,
    /// and a later key is converted only when its value differs from the chosen one's.
    pub(crate) fn take_first<T: PartialEq>(
        &mut self,
        keys: &[&str],
        conv: impl Fn(&any_value::Value) -> Option<T>,
    ) -> Option<T> {
        let mut chosen: Option<(T, &'a any_value::Value)> = None;
        for k in keys {
            let Some(&i) = self.index.get(*k) else {
                continue;
            };
            let Some(v) = self.items[i].value else {
                continue;
            };
            match &chosen {
                None => {
                    if let Some(t) = conv(v) {
                        self.items[i].used = true;
                        chosen = Some((t, v));
                    }
                }
                Some((t, first)) => {
                    if v == *first || conv(v).as_ref() == Some(t) {
                        self.items[i].used = true;
                    }
                }
            }
        }
        chosen.map(|(t, _)| t)
    }

    /// The first of `keys` whose value converts, without marking anything.
    pub(crate) fn peek_first<T>(
        &self,
        keys: &[&str],
        conv: impl Fn(&'a any_value::Value) -> Option<T>,
    ) -> Option<T> {
        keys.iter().find_map(|k| self.get(k).and_then(&conv))
    }

    /// Attributes under `prefix.N.`, grouped by `N` in ascending order, each with the rest of
    /// its key (`llm.input_messages.0.message.role` → `0`, `message.role`).
    pub(crate) fn indexed(&self, prefix: &str) -> Vec<(usize, Vec<(&'a str, &'a str)>)> {
        let mut groups: std::collections::BTreeMap<usize, Vec<(&'a str, &'a str)>> =
            std::collections::BTreeMap::new();
        for &Item { key, .. } in &self.items {
            let Some(rest) = key.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')) else {
                continue;
            };
            let Some((n, suffix)) = rest.split_once('.') else {
                continue;
            };
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(n) = n.parse::<usize>() else { continue };
            groups.entry(n).or_default().push((suffix, key));
        }
        groups.into_iter().collect()
    }

    /// The attributes as JSON: all of them but the dropped ones, or only those not moved
    /// into typed fields.
    pub(crate) fn to_json_map(&self, all: bool) -> Map<String, Value> {
        self.items
            .iter()
            .filter(|it| !it.dropped && (all || !it.used))
            .map(|it| (it.key.to_string(), to_json(it.value)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};
    use serde_json::json;

    fn kv(key: &str, v: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    #[test]
    fn every_value_type_converts_to_json() {
        use any_value::Value as V;
        let nested = V::KvlistValue(KeyValueList {
            values: vec![
                kv("a", V::IntValue(1)),
                kv(
                    "b",
                    V::ArrayValue(ArrayValue {
                        values: vec![
                            AnyValue {
                                value: Some(V::StringValue("x".into())),
                            },
                            AnyValue { value: None },
                        ],
                    }),
                ),
            ],
        });
        let cases: Vec<(V, Value)> = vec![
            (V::StringValue("s".into()), json!("s")),
            (V::BoolValue(true), json!(true)),
            (V::IntValue(i64::MIN), json!(i64::MIN)),
            (V::DoubleValue(0.5), json!(0.5)),
            (V::DoubleValue(f64::NAN), json!("NaN")),
            (V::DoubleValue(f64::INFINITY), json!("Infinity")),
            (V::DoubleValue(f64::NEG_INFINITY), json!("-Infinity")),
            (V::BytesValue(vec![0, 1, 2, 0xff]), json!("AAEC/w==")),
            (nested, json!({"a": 1, "b": ["x", null]})),
            (V::StringValueStrindex(3), Value::Null),
        ];
        for (v, want) in cases {
            assert_eq!(to_json(Some(&v)), want, "{v:?}");
        }
        assert_eq!(to_json(None), Value::Null);
    }

    #[test]
    fn take_first_keeps_a_differing_alternative() {
        use any_value::Value as V;
        let kvs = vec![
            kv("req", V::StringValue("gpt-4o".into())),
            kv("resp", V::StringValue("gpt-4o-2024-08-06".into())),
            kv("alias", V::StringValue("gpt-4o-2024-08-06".into())),
            kv("other", V::IntValue(1)),
        ];
        let mut a = Attrs::new(&kvs);
        let got = a.take_first(&["resp", "alias", "req"], as_text);
        assert_eq!(got.as_deref(), Some("gpt-4o-2024-08-06"));
        let left = a.to_json_map(false);
        assert_eq!(
            left,
            json!({"req": "gpt-4o", "other": 1})
                .as_object()
                .unwrap()
                .clone()
        );
        assert_eq!(a.to_json_map(true).len(), 4);
    }

    #[test]
    fn repeated_keys_keep_the_last_value_and_indexes_group() {
        use any_value::Value as V;
        let kvs = vec![
            kv("k", V::IntValue(1)),
            kv("p.1.x", V::IntValue(2)),
            kv("p.0.x", V::IntValue(3)),
            kv("p.0.y.z", V::IntValue(4)),
            kv("p.a.x", V::IntValue(5)),
            kv("pp.0.x", V::IntValue(6)),
            kv("k", V::IntValue(7)),
        ];
        let a = Attrs::new(&kvs);
        assert_eq!(a.get("k"), Some(&V::IntValue(7)));
        let groups = a.indexed("p");
        assert_eq!(
            groups,
            vec![
                (0, vec![("x", "p.0.x"), ("y.z", "p.0.y.z")]),
                (1, vec![("x", "p.1.x")]),
            ]
        );
    }

    #[test]
    fn counts_and_numbers_accept_their_usual_spellings() {
        use any_value::Value as V;
        assert_eq!(as_count(&V::IntValue(12)), Some(12));
        assert_eq!(as_count(&V::DoubleValue(12.0)), Some(12));
        assert_eq!(as_count(&V::StringValue("12".into())), Some(12));
        assert_eq!(as_count(&V::IntValue(-1)), None);
        assert_eq!(as_count(&V::DoubleValue(1.5)), None);
        assert_eq!(as_number(&V::IntValue(2)), Some(2.0));
        assert_eq!(as_number(&V::DoubleValue(f64::NAN)), None);
        assert_eq!(as_text(&V::IntValue(42)).as_deref(), Some("42"));
        assert_eq!(as_text(&V::StringValue(String::new())), None);
    }
}
