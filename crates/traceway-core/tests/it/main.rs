//! Integration tests of `traceway-core`, one binary for the crate (see STYLE.md §10).

mod otlp;
mod otlp_fidelity;
