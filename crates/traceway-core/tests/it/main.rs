//! Integration tests of `traceway-core`, one binary for the crate (see STYLE.md §10).

mod analysis;
mod fixtures;
mod format;
mod otlp;
mod pricing;
