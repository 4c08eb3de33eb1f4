//! The `traceway` command-line client: `ls`, `show`, `analyze`, `stats`, `tail`, `rm`,
//! `cleanup` and `keys` against a running server's HTTP API. It uses only `traceway-core`'s types and
//! HTTP, never the store; the binary (`src/main.rs`) adds `serve` from `traceway-server`.

pub mod analysis;
pub mod client;
pub mod commands;
pub mod keys;
mod progress;
pub mod render;
pub mod tail;

pub use client::ClientArgs;
pub use commands::{cleanup, ls, rm, show, LsArgs};
pub use progress::progress_bar;
pub use tail::tail;
