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
        if let Some(t) = parse_utc_fast(s.as_bytes()) {
            return Ok(t);
        }
        let dt = chrono::DateTime::parse_from_rfc3339(s)
            .map_err(|e| format!("invalid RFC 3339 time {s:?}: {e}"))?;
        dt.timestamp_nanos_opt()
            .map(Timestamp)
            .ok_or_else(|| format!("time {s:?} is out of range"))
    }

    /// The RFC 3339 form in UTC with nanoseconds.
    pub fn to_rfc3339(self) -> String {
        let mut buf = [0u8; RFC3339_MAX];
        let n = self.write_rfc3339(&mut buf);
        // Only ASCII digits and separators were written.
        std::str::from_utf8(&buf[..n])
            .unwrap_or_default()
            .to_string()
    }

    /// Writes the RFC 3339 form into `buf` and returns its length: `YYYY-MM-DDTHH:MM:SS`,
    /// then `.` and 3, 6 or 9 digits when the fraction needs them (none when it is zero),
    /// then `Z`, the form chrono's `SecondsFormat::AutoSi` gives. Every event and span body
    /// carries several times, so this is written out rather than formatted (ADR 043); the
    /// tests hold it to chrono over the whole range of `i64` nanoseconds.
    fn write_rfc3339(self, buf: &mut [u8; RFC3339_MAX]) -> usize {
        let secs = self.0.div_euclid(1_000_000_000);
        let nanos = self.0.rem_euclid(1_000_000_000) as u32;
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        // i64 nanoseconds span the years 1677 to 2262: always four digits.
        let year = year as u32;
        put_digits(&mut buf[0..4], year);
        buf[4] = b'-';
        put_digits(&mut buf[5..7], month);
        buf[7] = b'-';
        put_digits(&mut buf[8..10], day);
        buf[10] = b'T';
        put_digits(&mut buf[11..13], sod / 3600);
        buf[13] = b':';
        put_digits(&mut buf[14..16], sod / 60 % 60);
        buf[16] = b':';
        put_digits(&mut buf[17..19], sod % 60);
        let mut n = 19;
        let (digits, value) = if nanos == 0 {
            (0, 0)
        } else if nanos % 1_000_000 == 0 {
            (3, nanos / 1_000_000)
        } else if nanos % 1_000 == 0 {
            (6, nanos / 1_000)
        } else {
            (9, nanos)
        };
        if digits > 0 {
            buf[n] = b'.';
            put_digits(&mut buf[n + 1..n + 1 + digits], value);
            n += 1 + digits;
        }
        buf[n] = b'Z';
        n + 1
    }
}

/// The form this module writes (`YYYY-MM-DDTHH:MM:SS`, an optional fraction of 1 to 9
/// digits, `Z`), read without chrono: stored bodies carry several times each, and reads
/// parse them all (ADR 043). Anything else — offsets, lower-case `t`/`z`, leap seconds,
/// years near the ends of `i64` nanoseconds, invalid dates — is `None` and left to
/// chrono, so the answer is always chrono's (the tests compare the two).
fn parse_utc_fast(b: &[u8]) -> Option<Timestamp> {
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || *b.last()? != b'Z'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Inside this range every time fits i64 nanoseconds.
    if !(1678..=2261).contains(&year) || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let nanos = match &b[19..b.len() - 1] {
        [] => 0,
        [b'.', digits @ ..] if (1..=9).contains(&digits.len()) => {
            let v = num(20..20 + digits.len())?;
            v * 10u32.pow(9 - digits.len() as u32)
        }
        _ => return None,
    };
    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    Some(Timestamp(secs * 1_000_000_000 + i64::from(nanos)))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (the inverse of `civil_from_days`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400); // [0, 399]
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 }; // [0, 11], from March
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// The longest RFC 3339 form written: `2262-04-11T23:47:16.854775807Z`.
const RFC3339_MAX: usize = 30;

/// `value` in decimal, zero-padded to fill `out`.
fn put_digits(out: &mut [u8], mut value: u32) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, in 400-year eras).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], from March
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
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
        let mut buf = [0u8; RFC3339_MAX];
        let n = self.write_rfc3339(&mut buf);
        // Only ASCII was written; the fallback is never taken.
        s.serialize_str(std::str::from_utf8(&buf[..n]).unwrap_or_default())
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

    fn chrono_form(nanos: i64) -> String {
        chrono::DateTime::from_timestamp_nanos(nanos)
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    }

    #[test]
    fn rfc3339_form_is_chronos_at_the_edges() {
        for nanos in [
            i64::MIN,
            i64::MIN + 1,
            -1,
            0,
            1,
            999_999_999,
            1_000_000_000,
            1_500_000_000,
            1_000_001_000,
            951_782_400_000_000_000,    // 2000-02-29
            951_868_799_999_999_999,    // 2000-02-29T23:59:59.999999999
            4_107_542_400_000_000_000,  // 2100-03-01
            -2_203_891_200_000_000_000, // 1900-03-01
            1_763_719_200_123_456_789,
            i64::MAX - 1,
            i64::MAX,
        ] {
            assert_eq!(Timestamp(nanos).to_rfc3339(), chrono_form(nanos), "{nanos}");
        }
    }

    fn chrono_parse(s: &str) -> Option<i64> {
        chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .and_then(|d| d.timestamp_nanos_opt())
    }

    #[test]
    fn rfc3339_parse_is_chronos_at_the_edges() {
        for s in [
            "1970-01-01T00:00:00Z",
            "2000-02-29T23:59:59.999999999Z",
            "1900-02-29T00:00:00Z",
            "2100-02-29T00:00:00Z",
            "2024-02-30T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-00-10T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T23:60:00Z",
            "2016-12-31T23:59:60Z",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00.1234567890Z",
            "2024-01-01T00:00:00.5Z",
            "2024-01-01t00:00:00z",
            "2024-01-01T00:00:00+01:00",
            "1677-09-21T00:12:43.145224192Z",
            "1677-09-21T00:12:43.145224191Z",
            "2262-04-11T23:47:16.854775807Z",
            "2262-04-11T23:47:16.854775808Z",
            "+2024-01-01T00:00:00Z",
            "2024-01-01T00:00:00",
        ] {
            assert_eq!(
                Timestamp::parse_rfc3339(s).ok().map(Timestamp::unix_nanos),
                chrono_parse(s),
                "{s}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn rfc3339_parse_reads_what_it_writes(nanos in proptest::num::i64::ANY) {
            let t = Timestamp(nanos);
            proptest::prop_assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Ok(t));
        }

        #[test]
        fn rfc3339_parse_is_chronos(s in "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,10})?Z") {
            proptest::prop_assert_eq!(
                Timestamp::parse_rfc3339(&s).ok().map(Timestamp::unix_nanos),
                chrono_parse(&s)
            );
        }

        #[test]
        fn rfc3339_parse_is_chronos_for_likely_dates(y in 1600u32..2400, mo in 0u32..14, d in 0u32..33, h in 0u32..25, mi in 0u32..61, sec in 0u32..62, frac in proptest::option::of(0u32..1_000_000_000)) {
            let s = match frac {
                Some(f) => format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{sec:02}.{f:09}Z"),
                None => format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{sec:02}Z"),
            };
            proptest::prop_assert_eq!(
                Timestamp::parse_rfc3339(&s).ok().map(Timestamp::unix_nanos),
                chrono_parse(&s)
            );
        }

        #[test]
        fn rfc3339_form_is_chronos(nanos in proptest::num::i64::ANY) {
            proptest::prop_assert_eq!(Timestamp(nanos).to_rfc3339(), chrono_form(nanos));
        }

        #[test]
        fn rfc3339_form_is_chronos_for_rounded_fractions(secs in -9_223_372_036i64..9_223_372_035, ms in 0i64..1000, us in 0i64..1000) {
            for nanos in [secs * 1_000_000_000, secs * 1_000_000_000 + ms * 1_000_000, secs * 1_000_000_000 + ms * 1_000_000 + us * 1000] {
                proptest::prop_assert_eq!(Timestamp(nanos).to_rfc3339(), chrono_form(nanos));
            }
        }
    }
}
