//! OTLP/HTTP and gRPC protobuf bodies: decoding (traces and logs) and the mapping to
//! Traceway's model. Any input must give an error or a mapped batch, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use traceway_core::otlp::{decode_export_request, decode_logs_request, Encoding};

#[path = "otlp_common.rs"]
mod otlp_common;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = decode_export_request(data, Encoding::Protobuf) {
        otlp_common::map_traces(&req);
    }
    if let Ok(req) = decode_logs_request(data, Encoding::Protobuf) {
        otlp_common::map_logs(&req);
    }
});
