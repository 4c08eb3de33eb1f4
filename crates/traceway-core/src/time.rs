//! Timestamps: Unix nanoseconds inside, RFC 3339 on the wire.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time as nanoseconds since the Unix epoch (UTC).
///
/// Serialised as an RFC 3339 string with nanoseconds (`2026-11-21T10:00:00.123456789Z`).
/// Deserialised from that form or from an integer count of Unix nanoseconds, the form
/// OpenTelemetry uses.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    /// From Unix nanoseconds.
    pub const fn from_unix_nanos(nanos: i64) -> Timestamp {
        Timestamp(nanos)
    }

    /// From Unix milliseconds.
    pub const fn from_unix_millis(ms: i64) -> Timestamp {
        Timestamp(ms.saturating_mul(1_000_000))
    }

    /// Unix nanoseconds.
    pub const fn unix_nanos(self) -> i64 {
        self.0
    }

    /// Unix milliseconds, rounded down.
    pub const fn unix_millis(self) -> i64 {
        self.0.div_euclid(1_000_000)
    }

    /// The wall clock now. Code that must be testable takes a clock instead.
    pub fn now() -> Timestamp {
        Timestamp(chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX))
    }

    /// This time plus a duration, saturating.
    pub fn saturating_add(self, d: Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(d.as_nanos().min(i64::MAX as u128) as i64),
        )
    }

    /// This time minus a duration, saturating.
    pub fn saturating_sub(self, d: Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_sub(d.as_nanos().min(i64::MAX as u128) as i64),
        )
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0).max(0) as u64)
    }

    /// Parses RFC 3339 (`2026-11-21T10:00:00Z`, any offset, any fraction).
    pub fn parse_rfc3339(s: &str) -> Result<Timestamp, String> {
        let dt = chrono::DateTime::parse_from_rfc3339(s)
            .map_err(|e| format!("invalid RFC 3339 time {s:?}: {e}"))?;
        dt.timestamp_nanos_opt()
            .map(Timestamp)
            .ok_or_else(|| format!("time {s:?} is out of range"))
    }

    /// The RFC 3339 form in UTC with nanoseconds.
    pub fn to_rfc3339(self) -> String {
        chrono::DateTime::from_timestamp_nanos(self.0)
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({})", self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 time string or integer Unix nanoseconds")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Timestamp, E> {
                // Digits alone are Unix nanoseconds: a query string carries every value as
                // a string, and the documented schema allows the integer form there too.
                let digits = v.strip_prefix('-').unwrap_or(v);
                if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                    return v
                        .parse::<i64>()
                        .map(Timestamp)
                        .map_err(|_| E::custom("time out of range"));
                }
                Timestamp::parse_rfc3339(v).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Timestamp, E> {
                Ok(Timestamp(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Timestamp, E> {
                i64::try_from(v)
                    .map(Timestamp)
                    .map_err(|_| E::custom("time out of range"))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_string_of_digits_is_unix_nanoseconds_as_in_a_query_string() {
        let t: Timestamp = serde_json::from_str("\"1767261600000000000\"").expect("digits");
        assert_eq!(t, Timestamp::from_unix_nanos(1_767_261_600_000_000_000));
        assert!(serde_json::from_str::<Timestamp>("\"99999999999999999999\"").is_err());
        assert!(serde_json::from_str::<Timestamp>("\"12ab\"").is_err());
    }

    #[test]
    fn rfc3339_round_trip_keeps_nanoseconds() {
        let t = Timestamp::from_unix_nanos(1_763_719_200_123_456_789);
        let s = serde_json::to_string(&t).unwrap();
        assert_eq!(s, "\"2025-11-21T10:00:00.123456789Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&s).unwrap(), t);
    }

    #[test]
    fn accepts_integer_nanos_and_offsets() {
        assert_eq!(
            serde_json::from_str::<Timestamp>("1763719200000000000").unwrap(),
            Timestamp::from_unix_millis(1_763_719_200_000)
        );
        assert_eq!(
            Timestamp::parse_rfc3339("2025-11-21T11:00:00+01:00").unwrap(),
            Timestamp::from_unix_millis(1_763_719_200_000)
        );
        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
    }
}
