//! The native API's JSON bodies (`POST /api/v1/traces`, `POST …/events`, `PATCH`), read
//! as the server reads them, then the pure span rules the write model applies to them
//! (sanitising, starting and ending a span, also over the span it started). What is
//! accepted must serialise and read back, as the stores keep it as JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use traceway_core::ingest::{end_span, sanitize, start_span, SpanChange};
use traceway_core::{EventInput, NewTrace, Timestamp, TracePatch};

/// The body of `POST /api/v1/traces/{id}/events` (the server's `api::AppendBody`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppendBody {
    events: Vec<EventInput>,
}

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<NewTrace>(data);
    let _ = serde_json::from_slice::<TracePatch>(data);
    let Ok(body) = serde_json::from_slice::<AppendBody>(data) else {
        return;
    };
    let now = Timestamp::from_unix_millis(1_700_000_000_000);
    for event in body.events {
        let json = serde_json::to_vec(&event).expect("an accepted event serialises");
        let again: EventInput = serde_json::from_slice(&json).expect("and reads back");
        drop(again);
        match event {
            EventInput::SpanStarted { span } => {
                if let SpanChange::New(s) = start_span(None, sanitize(span.clone()), now) {
                    let _ = end_span(Some(&s), sanitize(span), now);
                }
            }
            EventInput::SpanEnded { span } => {
                let _ = end_span(None, sanitize(span), now);
            }
            _ => {}
        }
    }
});
