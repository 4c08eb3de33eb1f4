//! Duration buckets: how both backends serve `min_duration_ms` from an index (ADR 042).
//!
//! A trace with a duration is indexed under its bucket, newest first. A listing with
//! `min_duration_ms = X` reads, newest first, the buckets from `bucket_of(X)` up and merges
//! them: every trace of a bucket above `bucket_of(X)` matches, so a page costs its own rows
//! plus one look per bucket. Only the lowest bucket read can hold traces below `X`; the
//! bounds are round values (1, 1.5, 2, 2.5, 3, 4, 5, 6, 7.5 per decade, from 1 ms to
//! 75,000 s), so a round threshold (100 ms, 500 ms, 2 s, 30 s, 1 min, 5 min…) is a bound
//! and its lowest bucket holds no trace below it either.

/// The lower bound (ms) of buckets 1 to 72; bucket 0 holds everything under 1 ms. Never
/// change a released entry: SQLite's `traces.duration_bucket` (schema v6) computes the
/// same buckets, and stored indexes hold them.
pub(crate) const BUCKET_FLOORS_MS: [f64; 72] = [
    1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.5, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0,
    75.0, 100.0, 150.0, 200.0, 250.0, 300.0, 400.0, 500.0, 600.0, 750.0, 1000.0, 1500.0, 2000.0,
    2500.0, 3000.0, 4000.0, 5000.0, 6000.0, 7500.0, 10000.0, 15000.0, 20000.0, 25000.0, 30000.0,
    40000.0, 50000.0, 60000.0, 75000.0, 100000.0, 150000.0, 200000.0, 250000.0, 300000.0, 400000.0,
    500000.0, 600000.0, 750000.0, 1000000.0, 1500000.0, 2000000.0, 2500000.0, 3000000.0, 4000000.0,
    5000000.0, 6000000.0, 7500000.0, 10000000.0, 15000000.0, 20000000.0, 25000000.0, 30000000.0,
    40000000.0, 50000000.0, 60000000.0, 75000000.0,
];

/// The highest bucket.
pub(crate) const TOP_BUCKET: u32 = BUCKET_FLOORS_MS.len() as u32;

/// The bucket of a duration: how many bounds it reaches (0 below 1 ms, and for NaN).
pub(crate) fn bucket_of(duration_ms: f64) -> u32 {
    BUCKET_FLOORS_MS.partition_point(|f| duration_ms >= *f) as u32
}

/// The buckets a listing with `min_duration_ms` reads: the one holding the threshold and
/// every one above it. Every trace of them but the first matches.
pub(crate) fn buckets_from(min_ms: f64) -> std::ops::RangeInclusive<u32> {
    bucket_of(min_ms)..=TOP_BUCKET
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_bounds_start_their_bucket() {
        assert!(BUCKET_FLOORS_MS.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(bucket_of(0.0), 0);
        assert_eq!(bucket_of(0.999), 0);
        assert_eq!(bucket_of(-5.0), 0);
        assert_eq!(bucket_of(f64::NAN), 0);
        for (i, f) in BUCKET_FLOORS_MS.iter().enumerate() {
            assert_eq!(bucket_of(*f), i as u32 + 1, "{f}");
            assert_eq!(bucket_of(f * 0.999_999), i as u32, "{f}");
        }
        assert_eq!(bucket_of(1e12), TOP_BUCKET);
        assert_eq!(buckets_from(2000.0), 30..=TOP_BUCKET);
    }
}
