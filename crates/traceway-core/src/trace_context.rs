//! W3C Trace Context: the `traceparent`, `tracestate` and `traceresponse` header values.
//!
//! Parsing and writing follow the W3C Trace Context Recommendation (level 1) and the
//! `traceresponse` header and `random` flag of level 2:
//!
//! - `traceparent` is `version-trace_id-parent_id-flags`, lowercase hex only. Version `00`
//!   is exactly 55 characters. A later version is read forward-compatibly: its first four
//!   fields are parsed as version `00`'s, and anything after them must start with `-`.
//!   Version `ff`, all-zero ids, upper-case hex and wrong lengths are invalid. A context is
//!   always written as version `00`, with only the flags this version knows.
//! - `tracestate` is at most 32 `key=value` members, comma-separated with optional spaces
//!   and tabs around them; empty members are skipped. A key is a simple key (`lcalpha`
//!   then up to 255 of `a-z 0-9 _ - * /`) or a multi-tenant key (`tenant@system`, tenant
//!   up to 241 characters starting with `a-z` or a digit, system up to 14 starting with
//!   `a-z`). A value is 1 to 256 printable ASCII characters other than `,` and `=`, not
//!   ending in a space. A header with an invalid member, a duplicate key or more than 32
//!   members is discarded whole, as the specification allows.
//!
//! Everything here is pure: the HTTP plumbing (`http::HeaderMap`) is in the client crate.

use std::fmt;

use crate::id::{SpanId, TraceId};

/// The `traceparent` header's name.
pub const TRACEPARENT: &str = "traceparent";
/// The `tracestate` header's name.
pub const TRACESTATE: &str = "tracestate";
/// The `traceresponse` header's name (Trace Context level 2).
pub const TRACERESPONSE: &str = "traceresponse";

/// Most members a `tracestate` may hold.
pub const MAX_TRACESTATE_MEMBERS: usize = 32;
/// Most characters of a `tracestate` value.
pub const MAX_TRACESTATE_VALUE_LEN: usize = 256;
/// Most characters of a simple `tracestate` key.
pub const MAX_TRACESTATE_KEY_LEN: usize = 256;
/// The length of a version-`00` `traceparent`.
pub const TRACEPARENT_LEN: usize = 55;

/// Why a `traceparent` (or `traceresponse`) value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceParentError {
    /// Shorter than 55 characters, or version `00` with another length.
    #[error("traceparent must be 55 characters for version 00 (got {0})")]
    Length(usize),
    /// A `-` is missing where the fields meet, or a later version's extra data does not
    /// start with `-`.
    #[error("traceparent fields must be separated by '-'")]
    Separator,
    /// A field holds something other than lowercase hex digits.
    #[error("traceparent {0} is not lowercase hex")]
    NotHex(&'static str),
    /// Version `ff`, which the specification forbids.
    #[error("traceparent version ff is invalid")]
    ForbiddenVersion,
    /// The all-zero trace id.
    #[error("traceparent trace-id is all zeros")]
    ZeroTraceId,
    /// The all-zero parent id.
    #[error("traceparent parent-id is all zeros")]
    ZeroParentId,
}

/// Why a `tracestate` value was discarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceStateError {
    /// More than 32 members.
    #[error("tracestate has more than {MAX_TRACESTATE_MEMBERS} members")]
    TooManyMembers,
    /// A member without `=`.
    #[error("tracestate member {0:?} has no '='")]
    NoEquals(String),
    /// A key outside the key grammar.
    #[error("tracestate key {0:?} is invalid")]
    InvalidKey(String),
    /// A value outside the value grammar.
    #[error("tracestate value of {0:?} is invalid")]
    InvalidValue(String),
    /// The same key twice.
    #[error("tracestate key {0:?} appears twice")]
    DuplicateKey(String),
}

/// The trace flags byte. Bit 0 is `sampled`; bit 1 is `random` (level 2: the right 7
/// bytes of the trace id are random).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TraceFlags(u8);

impl TraceFlags {
    /// The caller may have recorded the trace.
    pub const SAMPLED: TraceFlags = TraceFlags(0x01);
    /// The right-most 7 bytes of the trace id are random (Trace Context level 2).
    pub const RANDOM: TraceFlags = TraceFlags(0x02);
    /// The flags this implementation knows and writes.
    const KNOWN: u8 = 0x03;

    /// From the raw byte (unknown bits are kept on read, dropped on write).
    pub const fn from_u8(bits: u8) -> TraceFlags {
        TraceFlags(bits)
    }

    /// The raw byte.
    pub const fn as_u8(self) -> u8 {
        self.0
    }

    /// Whether `sampled` is set.
    pub const fn is_sampled(self) -> bool {
        self.0 & 0x01 != 0
    }

    /// Whether `random` is set.
    pub const fn is_random(self) -> bool {
        self.0 & 0x02 != 0
    }

    /// These flags with `sampled` set or cleared.
    pub const fn with_sampled(self, sampled: bool) -> TraceFlags {
        if sampled {
            TraceFlags(self.0 | 0x01)
        } else {
            TraceFlags(self.0 & !0x01)
        }
    }
}

/// A parsed `traceparent`: the caller's trace, its span (our parent) and flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// The version read (`0` for `00`); a context is always written as `00`.
    pub version: u8,
    /// The trace.
    pub trace_id: TraceId,
    /// The caller's span: the parent of the span this side starts.
    pub parent_id: SpanId,
    /// The flags.
    pub flags: TraceFlags,
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

fn lower_hex(s: &[u8], field: &'static str) -> Result<u128, TraceParentError> {
    let mut v = 0u128;
    for &b in s {
        let d = hex_value(b).ok_or(TraceParentError::NotHex(field))?;
        v = (v << 4) | d as u128;
    }
    Ok(v)
}

impl TraceParent {
    /// A context for a span of this trace, sampled.
    pub fn new(trace_id: TraceId, parent_id: SpanId) -> TraceParent {
        TraceParent {
            version: 0,
            trace_id,
            parent_id,
            flags: TraceFlags::SAMPLED,
        }
    }

    /// Parses a header value. Leading and trailing spaces and tabs are ignored (HTTP
    /// optional whitespace); nothing else is forgiven.
    pub fn parse(value: &str) -> Result<TraceParent, TraceParentError> {
        let s = value.trim_matches([' ', '\t']).as_bytes();
        if s.len() < TRACEPARENT_LEN {
            return Err(TraceParentError::Length(s.len()));
        }
        if s[2] != b'-' || s[35] != b'-' || s[52] != b'-' {
            return Err(TraceParentError::Separator);
        }
        let version = lower_hex(&s[0..2], "version")? as u8;
        if version == 0xff {
            return Err(TraceParentError::ForbiddenVersion);
        }
        if version == 0 && s.len() != TRACEPARENT_LEN {
            return Err(TraceParentError::Length(s.len()));
        }
        if s.len() > TRACEPARENT_LEN && s[TRACEPARENT_LEN] != b'-' {
            return Err(TraceParentError::Separator);
        }
        let trace_id = lower_hex(&s[3..35], "trace-id")?;
        let parent_id = lower_hex(&s[36..52], "parent-id")? as u64;
        let flags = lower_hex(&s[53..55], "trace-flags")? as u8;
        Ok(TraceParent {
            version,
            trace_id: TraceId::from_u128(trace_id).ok_or(TraceParentError::ZeroTraceId)?,
            parent_id: SpanId::from_u64(parent_id).ok_or(TraceParentError::ZeroParentId)?,
            flags: TraceFlags(flags),
        })
    }

    /// The header value, version `00`, known flags only.
    pub fn to_header(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id,
            self.parent_id,
            self.flags.0 & TraceFlags::KNOWN
        )
    }
}

impl std::str::FromStr for TraceParent {
    type Err = TraceParentError;
    fn from_str(s: &str) -> Result<TraceParent, TraceParentError> {
        TraceParent::parse(s)
    }
}

/// A parsed `tracestate`: vendor members, most recently updated first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TraceState {
    members: Vec<(String, String)>,
}

fn key_char(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-' | b'*' | b'/')
}

/// Whether `key` follows the `tracestate` key grammar.
pub fn valid_tracestate_key(key: &str) -> bool {
    let b = key.as_bytes();
    match key.split_once('@') {
        None => {
            !b.is_empty()
                && b.len() <= MAX_TRACESTATE_KEY_LEN
                && b[0].is_ascii_lowercase()
                && b.iter().all(|&c| key_char(c))
        }
        Some((tenant, system)) => {
            let (t, s) = (tenant.as_bytes(), system.as_bytes());
            !t.is_empty()
                && t.len() <= 241
                && (t[0].is_ascii_lowercase() || t[0].is_ascii_digit())
                && t.iter().all(|&c| key_char(c))
                && !s.is_empty()
                && s.len() <= 14
                && s[0].is_ascii_lowercase()
                && s.iter().all(|&c| key_char(c))
        }
    }
}

/// Whether `value` follows the `tracestate` value grammar.
pub fn valid_tracestate_value(value: &str) -> bool {
    let b = value.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TRACESTATE_VALUE_LEN
        && b.iter()
            .all(|&c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=')
        && b[b.len() - 1] != b' '
}

impl TraceState {
    /// An empty state.
    pub fn new() -> TraceState {
        TraceState::default()
    }

    /// Parses every `tracestate` header value of a request, in order (several headers
    /// are one comma-separated list).
    pub fn parse_all<'a>(
        values: impl IntoIterator<Item = &'a str>,
    ) -> Result<TraceState, TraceStateError> {
        let mut members: Vec<(String, String)> = Vec::new();
        for value in values {
            for raw in value.split(',') {
                let member = raw.trim_matches([' ', '\t']);
                if member.is_empty() {
                    continue;
                }
                let (key, val) = member
                    .split_once('=')
                    .ok_or_else(|| TraceStateError::NoEquals(member.to_string()))?;
                if !valid_tracestate_key(key) {
                    return Err(TraceStateError::InvalidKey(key.to_string()));
                }
                if !valid_tracestate_value(val) {
                    return Err(TraceStateError::InvalidValue(key.to_string()));
                }
                if members.iter().any(|(k, _)| k == key) {
                    return Err(TraceStateError::DuplicateKey(key.to_string()));
                }
                if members.len() == MAX_TRACESTATE_MEMBERS {
                    return Err(TraceStateError::TooManyMembers);
                }
                members.push((key.to_string(), val.to_string()));
            }
        }
        Ok(TraceState { members })
    }

    /// Parses one header value.
    pub fn parse(value: &str) -> Result<TraceState, TraceStateError> {
        TraceState::parse_all([value])
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Sets `key` and moves it to the front, as the specification says an updated member
    /// goes; when that makes 33 members the right-most is dropped.
    pub fn insert(&mut self, key: &str, value: &str) -> Result<(), TraceStateError> {
        if !valid_tracestate_key(key) {
            return Err(TraceStateError::InvalidKey(key.to_string()));
        }
        if !valid_tracestate_value(value) {
            return Err(TraceStateError::InvalidValue(key.to_string()));
        }
        self.members.retain(|(k, _)| k != key);
        self.members.insert(0, (key.to_string(), value.to_string()));
        self.members.truncate(MAX_TRACESTATE_MEMBERS);
        Ok(())
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let i = self.members.iter().position(|(k, _)| k == key)?;
        Some(self.members.remove(i).1)
    }

    /// The members, front first.
    pub fn members(&self) -> impl Iterator<Item = (&str, &str)> {
        self.members.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there are none (then no header is sent).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The header value: `k1=v1,k2=v2`.
    pub fn to_header(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for TraceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.members.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const PID: &str = "00f067aa0ba902b7";

    #[test]
    fn traceparent_table() {
        let ok = |flags: u8, version: u8| Ok((version, TID.to_string(), PID.to_string(), flags));
        let tp = |s: &str| s.to_string();
        // (input, Ok((version, trace id, parent id, flags)) or the error)
        type Parsed = (u8, String, String, u8);
        let cases: Vec<(String, Result<Parsed, TraceParentError>)> = vec![
            (tp(&format!("00-{TID}-{PID}-01")), ok(1, 0)),
            (tp(&format!("00-{TID}-{PID}-00")), ok(0, 0)),
            (tp(&format!("00-{TID}-{PID}-03")), ok(3, 0)),
            // Unknown flag bits are read (and dropped when written).
            (tp(&format!("00-{TID}-{PID}-09")), ok(9, 0)),
            (tp(&format!("  00-{TID}-{PID}-01\t")), ok(1, 0)),
            // A later version: the four fields of 00, then optional data after '-'.
            (tp(&format!("01-{TID}-{PID}-01")), ok(1, 1)),
            (
                tp(&format!("cc-{TID}-{PID}-01-what-the-future-holds")),
                ok(1, 0xcc),
            ),
            (tp(&format!("fe-{TID}-{PID}-01-")), ok(1, 0xfe)),
            (
                tp(&format!("cc-{TID}-{PID}-01.what")),
                Err(TraceParentError::Separator),
            ),
            // Version 00 is exactly 55 characters.
            (
                tp(&format!("00-{TID}-{PID}-01-extra")),
                Err(TraceParentError::Length(61)),
            ),
            (
                tp(&format!("00-{TID}-{PID}-01-")),
                Err(TraceParentError::Length(56)),
            ),
            (
                tp(&format!("ff-{TID}-{PID}-01")),
                Err(TraceParentError::ForbiddenVersion),
            ),
            (
                tp(&format!("0x-{TID}-{PID}-01")),
                Err(TraceParentError::NotHex("version")),
            ),
            (
                tp(&format!("00-{}-{PID}-01", TID.to_uppercase())),
                Err(TraceParentError::NotHex("trace-id")),
            ),
            (
                tp(&format!("00-{TID}-{}-01", PID.to_uppercase())),
                Err(TraceParentError::NotHex("parent-id")),
            ),
            (
                tp(&format!("00-{TID}-{PID}-0G")),
                Err(TraceParentError::NotHex("trace-flags")),
            ),
            (
                tp(&format!("00-{TID}-{PID}-AB")),
                Err(TraceParentError::NotHex("trace-flags")),
            ),
            (
                tp(&format!("00-{}-{PID}-01", "0".repeat(32))),
                Err(TraceParentError::ZeroTraceId),
            ),
            (
                tp(&format!("00-{TID}-{}-01", "0".repeat(16))),
                Err(TraceParentError::ZeroParentId),
            ),
            // Wrong field lengths shift the separators.
            (
                tp(&format!("00-{}-{PID}-01", &TID[1..])),
                Err(TraceParentError::Length(54)),
            ),
            (
                tp(&format!("00-{TID}a-{PID}-01")),
                Err(TraceParentError::Separator),
            ),
            (
                tp(&format!("00-{TID}-{PID}a-1")),
                Err(TraceParentError::Separator),
            ),
            (
                tp(&format!("000-{TID}-{PID}-1")),
                Err(TraceParentError::Separator),
            ),
            (
                tp(&format!("00_{TID}_{PID}_01")),
                Err(TraceParentError::Separator),
            ),
            (tp(""), Err(TraceParentError::Length(0))),
            (tp("00-1-1-01"), Err(TraceParentError::Length(9))),
            (
                tp(&format!("00-{TID}-{PID}-01 ").replace(' ', "\u{a0}")),
                Err(TraceParentError::Length(57)),
            ),
        ];
        for (input, want) in cases {
            let got = TraceParent::parse(&input).map(|p| {
                (
                    p.version,
                    p.trace_id.to_string(),
                    p.parent_id.to_string(),
                    p.flags.as_u8(),
                )
            });
            assert_eq!(got, want, "input {input:?}");
        }
    }

    #[test]
    fn traceparent_is_written_as_version_00_with_known_flags() {
        let p = TraceParent::parse(&format!("cc-{TID}-{PID}-09-future")).unwrap();
        assert_eq!(p.to_header(), format!("00-{TID}-{PID}-01"));
        let mine = TraceParent::new(TID.parse().unwrap(), PID.parse().unwrap());
        assert_eq!(mine.to_header(), format!("00-{TID}-{PID}-01"));
        assert_eq!(TraceParent::parse(&mine.to_header()).unwrap(), mine);
        let unsampled = TraceParent {
            flags: mine.flags.with_sampled(false),
            ..mine
        };
        assert_eq!(unsampled.to_header(), format!("00-{TID}-{PID}-00"));
    }

    #[test]
    fn tracestate_table() {
        let long_key = format!("a{}", "b".repeat(255));
        let too_long_key = format!("a{}", "b".repeat(256));
        let tenant_key = format!("{}@{}", "t".repeat(241), "s".repeat(14));
        let members32: Vec<String> = (0..32).map(|i| format!("k{i}=v{i}")).collect();
        let members33: Vec<String> = (0..33).map(|i| format!("k{i}=v{i}")).collect();
        let value256 = "v".repeat(256);
        // (header values, Ok(members) or Err(()))
        type Members<'a> = Result<Vec<(&'a str, &'a str)>, ()>;
        let cases: Vec<(Vec<String>, Members)> = vec![
            (
                vec!["rojo=00f067aa0ba902b7".into()],
                Ok(vec![("rojo", "00f067aa0ba902b7")]),
            ),
            (
                vec!["rojo=00f067aa0ba902b7,congo=t61rcWkgMzE".into()],
                Ok(vec![("rojo", "00f067aa0ba902b7"), ("congo", "t61rcWkgMzE")]),
            ),
            (
                vec![" rojo=1 ,\t congo=2\t".into()],
                Ok(vec![("rojo", "1"), ("congo", "2")]),
            ),
            // Empty members are allowed and skipped.
            (
                vec!["rojo=1,,  ,congo=2,".into()],
                Ok(vec![("rojo", "1"), ("congo", "2")]),
            ),
            (vec!["".into()], Ok(vec![])),
            // Two headers are one list.
            (
                vec!["rojo=1".into(), "congo=2".into()],
                Ok(vec![("rojo", "1"), ("congo", "2")]),
            ),
            (
                vec!["fw529a3039@dt=x".into()],
                Ok(vec![("fw529a3039@dt", "x")]),
            ),
            (vec!["0tenant@sys=x".into()], Ok(vec![("0tenant@sys", "x")])),
            (vec!["a_-*/9=x".into()], Ok(vec![("a_-*/9", "x")])),
            (vec!["k=va lue!~".into()], Ok(vec![("k", "va lue!~")])),
            (
                vec![format!("k={value256}")],
                Ok(vec![("k", value256.as_str())]),
            ),
            (
                vec![format!("{long_key}=x")],
                Ok(vec![(long_key.as_str(), "x")]),
            ),
            (
                vec![format!("{tenant_key}=x")],
                Ok(vec![(tenant_key.as_str(), "x")]),
            ),
            (
                vec![members32.join(",")],
                Ok(members32
                    .iter()
                    .map(|m| m.split_once('=').unwrap())
                    .collect()),
            ),
            // Invalid: the whole header is discarded.
            (vec![members33.join(",")], Err(())),
            (vec![members32.join(","), "extra=1".into()], Err(())),
            (vec!["rojo".into()], Err(())),
            (vec!["rojo=1,rojo=2".into()], Err(())),
            (vec!["Rojo=1".into()], Err(())),
            (vec!["1rojo=1".into()], Err(())),
            (vec!["ro.jo=1".into()], Err(())),
            (vec![format!("{too_long_key}=x")], Err(())),
            (vec![format!("{}@s=x", "t".repeat(242))], Err(())),
            (vec![format!("t@{}=x", "s".repeat(15))], Err(())),
            (vec!["t@1sys=x".into()], Err(())),
            (vec!["@sys=x".into()], Err(())),
            (vec!["t@=x".into()], Err(())),
            (vec!["a@b@c=x".into()], Err(())),
            (vec!["k=".into()], Err(())),
            (vec!["k=a=b".into()], Err(())),
            // A trailing space is optional whitespace around the member, not the value's.
            (vec!["k=trailing ".into()], Ok(vec![("k", "trailing")])),
            (vec!["k=tab\tinside".into()], Err(())),
            (vec!["k=caf\u{e9}".into()], Err(())),
            (vec![format!("k={value256}v")], Err(())),
            (vec!["=x".into()], Err(())),
        ];
        for (input, want) in cases {
            let got = TraceState::parse_all(input.iter().map(String::as_str))
                .map(|s| {
                    s.members()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect::<Vec<_>>()
                })
                .map_err(|_| ());
            let want = want.map(|m| {
                m.into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<Vec<_>>()
            });
            assert_eq!(got, want, "input {input:?}");
        }
    }

    #[test]
    fn tracestate_update_moves_the_member_to_the_front_and_keeps_32() {
        let mut s = TraceState::parse("rojo=1,congo=2").unwrap();
        s.insert("congo", "3").unwrap();
        assert_eq!(s.to_header(), "congo=3,rojo=1");
        s.insert("traceway", "x").unwrap();
        assert_eq!(s.to_header(), "traceway=x,congo=3,rojo=1");
        assert_eq!(s.get("rojo"), Some("1"));
        assert_eq!(s.remove("congo").as_deref(), Some("3"));
        assert!(s.insert("Bad", "x").is_err());
        assert!(s.insert("ok", "a,b").is_err());
        assert!(s.insert("ok", "trailing ").is_err());

        let full: Vec<String> = (0..32).map(|i| format!("k{i}=v")).collect();
        let mut s = TraceState::parse(&full.join(",")).unwrap();
        s.insert("new", "v").unwrap();
        assert_eq!(s.len(), 32);
        assert_eq!(s.members().next(), Some(("new", "v")));
        assert_eq!(s.get("k31"), None, "the right-most member is dropped");
        assert_eq!(TraceState::parse(&s.to_header()).unwrap(), s);
    }

    proptest::proptest! {
        /// Every context reads back from the header it writes (known flags only).
        #[test]
        fn traceparent_round_trips(t in 1u128.., p in 1u64.., flags: u8) {
            let tp = TraceParent {
                version: 0,
                trace_id: TraceId::from_u128(t).unwrap(),
                parent_id: SpanId::from_u64(p).unwrap(),
                flags: TraceFlags::from_u8(flags),
            };
            let back = TraceParent::parse(&tp.to_header()).unwrap();
            proptest::prop_assert_eq!(back.trace_id, tp.trace_id);
            proptest::prop_assert_eq!(back.parent_id, tp.parent_id);
            proptest::prop_assert_eq!(back.flags.as_u8(), flags & 0x03);
        }

        /// A parsed tracestate writes back to a header that parses to the same members.
        #[test]
        fn tracestate_round_trips(members in proptest::collection::btree_map("[a-z][a-z0-9_*/-]{0,20}", "[!-+.-<>-~]{1,30}", 0..32)) {
            let header: Vec<String> = members.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let s = TraceState::parse(&header.join(",")).unwrap();
            proptest::prop_assert_eq!(s.len(), members.len());
            proptest::prop_assert_eq!(TraceState::parse(&s.to_header()).unwrap(), s);
        }
    }
}
