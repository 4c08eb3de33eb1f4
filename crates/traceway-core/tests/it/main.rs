//! Integration tests of `traceway-core`, one binary for the crate (see STYLE.md §10).

#[cfg(feature = "otlp")]
mod otlp;
