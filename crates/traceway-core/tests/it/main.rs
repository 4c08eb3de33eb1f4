//! Integration tests of `traceway-core`, one binary for the crate (see STYLE.md §10).

mod analysis;
mod fixtures;
mod format;
#[cfg(feature = "otlp")]
mod otlp;
mod otlp_fidelity;
mod pricing;
