//! The `traceway` binary end to end: the server it runs (on SQLite and on Redis), the CLI
//! commands against it, and real OpenTelemetry SDKs exporting to it.

mod e2e;
mod hardening;
mod keys_cli;
mod otlp_sdk;
#[path = "../../../traceway-server/tests/support/prom.rs"]
mod prom;
mod redis;
#[path = "../../../traceway-server/tests/support/sse.rs"]
mod sse;
mod webui;
mod workflow_python;
