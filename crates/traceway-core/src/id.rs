//! Trace and span identifiers.
//!
//! A [`TraceId`] is 128 bits. Traceway makes new ones as RFC 9562 UUIDv7 values, so ids
//! sort by creation time, and writes them as 32 lowercase hex digits, which is exactly a
//! W3C trace-id. A [`SpanId`] is 64 bits written as 16 lowercase hex digits.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why an id could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The text is not of the expected length or shape.
    #[error("expected {expected}, got {got_len} characters")]
    Length {
        /// What the id should look like.
        expected: &'static str,
        /// How many characters the input had.
        got_len: usize,
    },
    /// A character is not a hex digit.
    #[error("invalid hex digit {0:?}")]
    NotHex(char),
    /// The all-zero id, which W3C Trace Context declares invalid.
    #[error("the all-zero id is invalid")]
    Zero,
}

/// A 128-bit trace id: a UUIDv7 when Traceway makes it, any non-zero value when it comes
/// from elsewhere (an OpenTelemetry SDK makes random ones).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TraceId(u128);

/// A 64-bit span id, never zero.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpanId(u64);

/// Counter bits per millisecond: the 12 bits of `rand_a` and the top 30 bits of `rand_b`.
const COUNTER_BITS: u32 = 42;
const COUNTER_MAX: u64 = (1 << COUNTER_BITS) - 1;

/// State of the process-wide v7 generator: the last millisecond used and its counter.
static V7_STATE: Mutex<(u64, u64)> = Mutex::new((0, 0));

impl TraceId {
    /// Makes a new UUIDv7 trace id from the system clock.
    ///
    /// Ids made one after another in this process are strictly increasing, also within one
    /// millisecond and when the clock steps back: the generator keeps a 42-bit counter per
    /// millisecond (RFC 9562 §6.2, method 1) and, when the clock is behind the last id or
    /// the counter is spent, continues from the last millisecond used.
    pub fn new_v7() -> TraceId {
        let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
        let (ms, counter) = {
            let mut state = V7_STATE.lock().unwrap_or_else(|e| e.into_inner());
            let (last_ms, last_counter) = *state;
            let next = if now_ms > last_ms {
                // A fresh millisecond starts the counter at a random point in its lower
                // half, leaving room for 2^41 more ids in the same millisecond.
                (now_ms, rand::random::<u64>() & (COUNTER_MAX >> 1))
            } else if last_counter < COUNTER_MAX {
                (last_ms, last_counter + 1)
            } else {
                (last_ms + 1, rand::random::<u64>() & (COUNTER_MAX >> 1))
            };
            *state = next;
            next
        };
        TraceId::v7_from_parts(ms, counter, rand::random())
    }

    /// Builds a UUIDv7 from its parts: a 48-bit Unix time in milliseconds, a 42-bit
    /// counter and 32 random bits. Pure; [`TraceId::new_v7`] feeds it.
    pub fn v7_from_parts(unix_ms: u64, counter: u64, random: u32) -> TraceId {
        let ts = (unix_ms as u128 & 0xFFFF_FFFF_FFFF) << 80;
        let version = 0x7u128 << 76;
        let counter_hi = ((counter >> 30) as u128 & 0xFFF) << 64;
        let variant = 0b10u128 << 62;
        let counter_lo = ((counter & 0x3FFF_FFFF) as u128) << 32;
        TraceId(ts | version | counter_hi | variant | counter_lo | random as u128)
    }

    /// Wraps a raw value. Returns `None` for zero.
    pub fn from_u128(value: u128) -> Option<TraceId> {
        (value != 0).then_some(TraceId(value))
    }

    /// Wraps 16 big-endian bytes (the OTLP wire form). Returns `None` for all zeros.
    pub fn from_bytes(bytes: [u8; 16]) -> Option<TraceId> {
        TraceId::from_u128(u128::from_be_bytes(bytes))
    }

    /// The raw value.
    pub fn as_u128(self) -> u128 {
        self.0
    }

    /// The 16 big-endian bytes.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// The UUID version nibble (7 for ids Traceway made).
    pub fn uuid_version(self) -> u8 {
        ((self.0 >> 76) & 0xF) as u8
    }

    /// The creation time in Unix milliseconds, if this is a UUIDv7.
    pub fn v7_unix_ms(self) -> Option<u64> {
        (self.uuid_version() == 7).then_some((self.0 >> 80) as u64)
    }

    /// The hyphenated UUID form, `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    pub fn to_uuid_string(self) -> String {
        let h = self.to_string();
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
}

impl SpanId {
    /// A new random, non-zero span id.
    pub fn new_random() -> SpanId {
        loop {
            let v: u64 = rand::random();
            if v != 0 {
                return SpanId(v);
            }
        }
    }

    /// Wraps a raw value. Returns `None` for zero.
    pub fn from_u64(value: u64) -> Option<SpanId> {
        (value != 0).then_some(SpanId(value))
    }

    /// Wraps 8 big-endian bytes (the OTLP wire form). Returns `None` for all zeros.
    pub fn from_bytes(bytes: [u8; 8]) -> Option<SpanId> {
        SpanId::from_u64(u64::from_be_bytes(bytes))
    }

    /// The raw value.
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// The 8 big-endian bytes.
    pub fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }
}

fn parse_hex_u128(s: &str) -> Result<u128, IdError> {
    let mut v: u128 = 0;
    for c in s.chars() {
        let d = c.to_digit(16).ok_or(IdError::NotHex(c))?;
        v = (v << 4) | d as u128;
    }
    Ok(v)
}

impl FromStr for TraceId {
    type Err = IdError;

    /// Parses 32 hex digits, or the hyphenated UUID form. Upper-case digits are accepted.
    fn from_str(s: &str) -> Result<TraceId, IdError> {
        const EXPECTED: &str = "32 hex digits or a hyphenated UUID";
        let value = match s.len() {
            32 => parse_hex_u128(s)?,
            36 => {
                // Hyphens exactly at the four UUID positions and nowhere else: a hyphen
                // elsewhere would leave fewer than 32 digits once the hyphens are gone.
                const HYPHENS: [usize; 4] = [8, 13, 18, 23];
                let b = s.as_bytes();
                if HYPHENS.iter().any(|&i| b[i] != b'-') {
                    return Err(IdError::Length {
                        expected: EXPECTED,
                        got_len: s.len(),
                    });
                }
                let mut v: u128 = 0;
                for (i, c) in s.char_indices() {
                    if HYPHENS.contains(&i) {
                        continue;
                    }
                    let d = c.to_digit(16).ok_or(IdError::NotHex(c))?;
                    v = (v << 4) | d as u128;
                }
                v
            }
            n => {
                return Err(IdError::Length {
                    expected: EXPECTED,
                    got_len: n,
                })
            }
        };
        TraceId::from_u128(value).ok_or(IdError::Zero)
    }
}

impl FromStr for SpanId {
    type Err = IdError;

    /// Parses 16 hex digits. Upper-case digits are accepted.
    fn from_str(s: &str) -> Result<SpanId, IdError> {
        if s.len() != 16 {
            return Err(IdError::Length {
                expected: "16 hex digits",
                got_len: s.len(),
            });
        }
        let v = parse_hex_u128(s)? as u64;
        SpanId::from_u64(v).ok_or(IdError::Zero)
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

/// `v`'s low `N * 4` bits as `N` lower-case hex digits, the form `Display` writes.
fn hex_digits<const N: usize>(v: u128) -> [u8; N] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; N];
    for (k, d) in out.iter_mut().rev().enumerate() {
        *d = HEX[(v >> (4 * k) & 0xf) as usize];
    }
    out
}

impl TraceId {
    fn hex(self) -> [u8; 32] {
        hex_digits(self.0)
    }
}

impl SpanId {
    fn hex(self) -> [u8; 16] {
        hex_digits(u128::from(self.0))
    }
}

macro_rules! serde_as_string {
    ($t:ty) => {
        impl Serialize for $t {
            /// The `Display` form, written out without `fmt`: the analysis answer of a
            /// 10,000-span trace carries thousands of span ids, and `collect_str` through
            /// the formatter cost ~19 M instructions of it (callgrind, ADR 037).
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let digits = self.hex();
                // Only ASCII hex digits were written; the fallback is never taken.
                s.serialize_str(std::str::from_utf8(&digits).unwrap_or_default())
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                // Parsed from the borrowed text: serde's `Cow<str>` would copy it into a
                // `String` first (two ids per span read back).
                struct Hex;
                impl serde::de::Visitor<'_> for Hex {
                    type Value = $t;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("a hex id string")
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$t, E> {
                        v.parse().map_err(E::custom)
                    }
                }
                d.deserialize_str(Hex)
            }
        }
    };
}

serde_as_string!(TraceId);
serde_as_string!(SpanId);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn v7_ids_have_version_and_variant_and_current_time() {
        let before = chrono::Utc::now().timestamp_millis() as u64;
        let id = TraceId::new_v7();
        let after = chrono::Utc::now().timestamp_millis() as u64;
        assert_eq!(id.uuid_version(), 7);
        assert_eq!((id.as_u128() >> 62) & 0b11, 0b10, "RFC 9562 variant");
        let ms = id.v7_unix_ms().unwrap();
        // The generator may run ahead of the clock by the ids made in this millisecond.
        assert!(
            ms >= before && ms <= after + 1,
            "{before} <= {ms} <= {after}"
        );
    }

    #[test]
    fn v7_ids_made_in_a_row_strictly_increase_within_a_millisecond() {
        let ids: Vec<TraceId> = (0..100_000).map(|_| TraceId::new_v7()).collect();
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1], "{} !< {}", pair[0], pair[1]);
            assert!(pair[0].to_string() < pair[1].to_string());
        }
        // 100k ids take far less than 100k ms, so many shared a millisecond.
        let first = ids[0].v7_unix_ms().unwrap();
        let last = ids[ids.len() - 1].v7_unix_ms().unwrap();
        assert!(last - first < 100_000);
    }

    #[test]
    fn v7_ids_from_many_threads_are_unique() {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| (0..10_000).map(|_| TraceId::new_v7()).collect::<Vec<_>>())
            })
            .collect();
        let mut all: Vec<TraceId> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
    }

    #[test]
    fn trace_id_parse_table() {
        let good = "0190f1c2a3b47c8d9e0f112233445566";
        let cases: &[(&str, Result<u128, ()>)] = &[
            (good, Ok(0x0190f1c2a3b47c8d9e0f112233445566)),
            (
                "0190F1C2A3B47C8D9E0F112233445566",
                Ok(0x0190f1c2a3b47c8d9e0f112233445566),
            ),
            (
                "0190f1c2-a3b4-7c8d-9e0f-112233445566",
                Ok(0x0190f1c2a3b47c8d9e0f112233445566),
            ),
            (
                "4bf92f3577b34da6a3ce929d0e0e4736",
                Ok(0x4bf92f3577b34da6a3ce929d0e0e4736),
            ),
            ("00000000000000000000000000000000", Err(())),
            ("00000000-0000-0000-0000-000000000000", Err(())),
            ("0190f1c2a3b47c8d9e0f11223344556", Err(())),
            ("0190f1c2a3b47c8d9e0f1122334455667", Err(())),
            ("0190f1c2a3b47c8d9e0f11223344556g", Err(())),
            ("0190f1c2xa3b4-7c8d-9e0f-112233445566", Err(())),
            // 36 characters, the four hyphens in place, and a fifth one among the digits.
            ("0190f1c2-a3b4-7c8d-9e0f-1122334455-6", Err(())),
            ("0190f1c2-a3b4-7c8d-9e0f--12233445566", Err(())),
            ("-190f1c2-a3b4-7c8d-9e0f-112233445566", Err(())),
            // Hyphens misplaced, or one missing and a digit added.
            ("0190f1c2a-3b4-7c8d-9e0f-112233445566", Err(())),
            ("0190f1c2-a3b4-7c8d-9e0f1-12233445566", Err(())),
            ("0190f1c2-a3b4-7c8d-9e0f-11223344556g", Err(())),
            ("0190f1c2-a3b4-7c8d-9e0f-+12233445566", Err(())),
            ("{190f1c2-a3b4-7c8d-9e0f-112233445566}", Err(())),
            ("", Err(())),
        ];
        for (input, want) in cases {
            let got = input
                .parse::<TraceId>()
                .map(TraceId::as_u128)
                .map_err(|_| ());
            assert_eq!(&got, want, "input {input:?}");
        }
    }

    #[test]
    fn span_id_parse_table() {
        let cases: &[(&str, Result<u64, ()>)] = &[
            ("00f067aa0ba902b7", Ok(0x00f067aa0ba902b7)),
            ("00F067AA0BA902B7", Ok(0x00f067aa0ba902b7)),
            ("0000000000000000", Err(())),
            ("00f067aa0ba902b", Err(())),
            ("00f067aa0ba902b7a", Err(())),
            ("00f067aa0ba902bz", Err(())),
        ];
        for (input, want) in cases {
            let got = input.parse::<SpanId>().map(SpanId::as_u64).map_err(|_| ());
            assert_eq!(&got, want, "input {input:?}");
        }
    }

    #[test]
    fn uuid_form_round_trips() {
        let id = TraceId::new_v7();
        let uuid = id.to_uuid_string();
        assert_eq!(uuid.len(), 36);
        assert_eq!(uuid.parse::<TraceId>().unwrap(), id);
    }

    #[test]
    fn serde_uses_the_hex_string() {
        let id: TraceId = "4bf92f3577b34da6a3ce929d0e0e4736".parse().unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"4bf92f3577b34da6a3ce929d0e0e4736\"");
        assert_eq!(serde_json::from_str::<TraceId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<TraceId>("\"00000000000000000000000000000000\"").is_err());
    }

    #[test]
    fn ids_serialize_with_their_leading_zeros() {
        for v in [1u64, 0xf, 1 << 63, u64::MAX] {
            let id = SpanId::from_u64(v).unwrap();
            assert_eq!(
                serde_json::to_value(id).unwrap(),
                serde_json::json!(format!("{v:016x}"))
            );
            let t = TraceId::from_u128(u128::from(v)).unwrap();
            assert_eq!(
                serde_json::to_value(t).unwrap(),
                serde_json::json!(format!("{v:032x}"))
            );
        }
        let t = TraceId::from_u128(u128::MAX).unwrap();
        assert_eq!(
            serde_json::to_value(t).unwrap(),
            serde_json::json!("f".repeat(32))
        );
    }

    proptest! {
        #[test]
        fn trace_id_text_round_trip(v in 1u128..) {
            let id = TraceId::from_u128(v).unwrap();
            let s = id.to_string();
            prop_assert_eq!(s.len(), 32);
            prop_assert_eq!(s.to_lowercase(), s.clone());
            prop_assert_eq!(s.parse::<TraceId>().unwrap(), id);
            prop_assert_eq!(TraceId::from_bytes(id.to_bytes()).unwrap(), id);
        }

        #[test]
        fn ids_serialize_as_their_display_form(t in 1u128.., v in 1u64..) {
            let (t, v) = (TraceId::from_u128(t).unwrap(), SpanId::from_u64(v).unwrap());
            prop_assert_eq!(serde_json::to_value(t).unwrap(), serde_json::json!(t.to_string()));
            prop_assert_eq!(serde_json::to_value(v).unwrap(), serde_json::json!(v.to_string()));
        }

        #[test]
        fn span_id_text_round_trip(v in 1u64..) {
            let id = SpanId::from_u64(v).unwrap();
            prop_assert_eq!(id.to_string().parse::<SpanId>().unwrap(), id);
            prop_assert_eq!(SpanId::from_bytes(id.to_bytes()).unwrap(), id);
        }

        #[test]
        fn v7_parts_order_like_time_then_counter(
            ms_a in 0u64..(1 << 48), ms_b in 0u64..(1 << 48),
            c_a in 0u64..=COUNTER_MAX, c_b in 0u64..=COUNTER_MAX,
            r_a: u32, r_b: u32,
        ) {
            let a = TraceId::v7_from_parts(ms_a, c_a, r_a);
            let b = TraceId::v7_from_parts(ms_b, c_b, r_b);
            prop_assert_eq!(a.uuid_version(), 7);
            prop_assert_eq!(a.v7_unix_ms(), Some(ms_a));
            if (ms_a, c_a) < (ms_b, c_b) {
                prop_assert!(a < b);
            }
        }
    }
}
