// Shared by the two OTLP targets: what the server does with a decoded export request,
// short of the store (crates/traceway-server/src/otlp/mod.rs).

use traceway_core::otlp::{
    map_logs_request, map_request_with, ExportLogsServiceRequest, ExportTraceServiceRequest,
    MapOptions,
};

/// Maps a trace export both ways (with and without raw attributes) and turns every
/// trace into the trace it creates, its root's end and its events.
pub fn map_traces(req: &ExportTraceServiceRequest) {
    for keep_raw in [false, true] {
        let opts = MapOptions {
            keep_mapped_attributes: keep_raw,
        };
        let batch = map_request_with(req, &opts);
        for trace in batch.traces {
            let _ = trace.new_trace();
            let _ = trace.root_end();
            let events = trace.into_events();
            // What the native API would have received for the same data must read back.
            let json = serde_json::to_vec(&events).expect("events serialise");
            let _: Vec<traceway_core::EventInput> =
                serde_json::from_slice(&json).expect("events read back");
        }
    }
}

/// Maps a logs export.
pub fn map_logs(req: &ExportLogsServiceRequest) {
    let logs = map_logs_request(req);
    let _ = format!("{logs:?}");
}
