//! Pieces every backend uses the same way.

use base64::Engine;
use traceway_core::{Timestamp, Trace, TraceId};

use crate::TraceError;

/// The opaque listing cursor after `t`: its `(created_at, trace_id)` position.
pub(crate) fn encode_cursor(t: &Trace) -> String {
    encode_position(t.created_at, t.trace_id)
}

/// The opaque listing cursor after the position `(created_at, trace_id)`.
pub(crate) fn encode_position(created_at: Timestamp, id: TraceId) -> String {
    let raw = format!("{}:{}", created_at.unix_nanos(), id);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// The position a cursor stands for; [`TraceError::BadCursor`] for anything else.
pub(crate) fn decode_cursor(c: &str) -> Result<(i64, TraceId), TraceError> {
    let bad = || TraceError::BadCursor(c.to_string());
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    let (t, id) = raw.split_once(':').ok_or_else(bad)?;
    Ok((
        t.parse().map_err(|_| bad())?,
        id.parse().map_err(|_| bad())?,
    ))
}
