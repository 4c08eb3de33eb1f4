//! W3C `traceparent` and `tracestate` headers: a header that parses prints back to one
//! that parses to the same context. (A `traceparent` is always written as version `00`
//! with the known flags only, as W3C asks of a propagator, so a future version read in is
//! not printed back as itself: the first run of this target found exactly that.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use traceway_core::trace_context::{TraceParent, TraceState};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(tp) = TraceParent::parse(s) {
        let printed = tp.to_header();
        let again = TraceParent::parse(&printed).expect("a printed traceparent parses");
        assert_eq!((again.trace_id, again.parent_id), (tp.trace_id, tp.parent_id));
        assert_eq!(again.version, 0);
        assert_eq!(again.to_header(), printed);
    }
    if let Ok(ts) = TraceState::parse(s) {
        let again = TraceState::parse(&ts.to_header()).expect("a printed tracestate parses");
        assert_eq!(again.to_header(), ts.to_header());
    }
});
