//! Bounds of paging parameters (issue 15, failure 3.3): a `page`, `offset` or `after_seq`
//! past what a store can represent answered 500 on SQLite, wrapped silently, or (with
//! `after_seq` near 2^64) returned every event. They are refused with a 400 that says the
//! bound, never clamped: a client asking for row 10^18 has a bug worth seeing.

use crate::error::ApiError;

/// The largest row offset a listing or an event read may ask for (`page`/`page_size`
/// gives `(page - 1) × page_size`). No tenant pages that far; SQLite's 64-bit signed
/// `OFFSET` and Redis ranges both hold it.
pub const MAX_OFFSET: u64 = 1_000_000_000;

/// The largest `after_seq` (and SSE `Last-Event-ID`): seqs are stored as 64-bit signed
/// integers, so a larger one cannot name an event.
pub const MAX_SEQ: u64 = i64::MAX as u64;

/// The offset of `page` (from 1) of `limit` rows.
pub fn page_offset(page: u64, limit: u32) -> Result<u64, ApiError> {
    (page - 1)
        .checked_mul(u64::from(limit))
        .filter(|o| *o <= MAX_OFFSET)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "page {page} of {limit} is past the largest offset ({MAX_OFFSET} rows)"
            ))
        })
}

/// An `offset` parameter.
pub fn offset(offset: u64) -> Result<u64, ApiError> {
    if offset > MAX_OFFSET {
        return Err(ApiError::bad_request(format!(
            "offset must be at most {MAX_OFFSET}"
        )));
    }
    Ok(offset)
}

/// An `after_seq` parameter or `Last-Event-ID`.
pub fn after_seq(seq: u64) -> Result<u64, ApiError> {
    if seq > MAX_SEQ {
        return Err(ApiError::bad_request(format!(
            "after_seq must be at most {MAX_SEQ}"
        )));
    }
    Ok(seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_past_the_bounds_is_refused_not_wrapped() {
        assert_eq!(page_offset(1, 1000).unwrap(), 0);
        assert_eq!(page_offset(3, 50).unwrap(), 100);
        assert!(page_offset(9_223_372_036_854_775_808, 50).is_err());
        assert!(page_offset(4_294_967_296, 1000).is_err(), "wrapped before");
        assert!(page_offset(u64::MAX, 1000).is_err());
        assert_eq!(offset(MAX_OFFSET).unwrap(), MAX_OFFSET);
        assert!(offset(1 << 63).is_err());
        assert_eq!(after_seq(MAX_SEQ).unwrap(), MAX_SEQ);
        assert!(after_seq(u64::MAX).is_err());
    }
}
