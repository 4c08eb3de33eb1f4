//! The tests' own reader of server-sent events, kept apart from the CLI's decoder so a
//! bug in one cannot hide in the other. It buffers bytes and decodes only whole lines, so
//! a UTF-8 character split across chunks arrives whole. Shared by the server's and the
//! CLI's test binaries (`#[path]`).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// One server-sent event.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SseMessage {
    /// `id:`
    pub id: Option<String>,
    /// `event:`
    pub event: Option<String>,
    /// `data:` lines joined by newlines.
    pub data: String,
}

/// Splits bytes into events as they arrive.
#[derive(Default)]
pub struct TestSseReader {
    buf: Vec<u8>,
    current: SseMessage,
    has_data: bool,
}

impl TestSseReader {
    /// Adds bytes; returns the events they complete.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseMessage> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = self.buf.drain(..=pos).collect();
            let line = String::from_utf8(raw).expect("an SSE line is UTF-8");
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if self.has_data || self.current.event.is_some() {
                    out.push(std::mem::take(&mut self.current));
                }
                self.current = SseMessage::default();
                self.has_data = false;
            } else if !line.starts_with(':') {
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "id" => self.current.id = Some(value.to_string()),
                    "event" => self.current.event = Some(value.to_string()),
                    "data" => {
                        if self.has_data {
                            self.current.data.push('\n');
                        }
                        self.current.data.push_str(value);
                        self.has_data = true;
                    }
                    _ => {}
                }
            }
        }
        out
    }
}

/// A `span_ended` event of a tool span numbered `n`.
pub fn tool(n: u64) -> Value {
    json!({"type": "span_ended", "span": {"span_id": format!("{n:016x}"), "kind": "tool", "name": format!("t{n}")}})
}

/// Reads events until `done` says stop or the stream ends; fails if the stream stalls
/// for 20 s (a deadline against a hang, not a measure of speed).
pub async fn read_until(
    resp: &mut reqwest::Response,
    mut done: impl FnMut(&SseMessage) -> bool,
) -> Vec<SseMessage> {
    let mut reader = TestSseReader::default();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, resp.chunk())
            .await
            .expect("stream stalled for 20 s");
        let Some(bytes) = chunk.expect("read") else {
            return out;
        };
        for m in reader.push(&bytes) {
            let stop = done(&m);
            out.push(m);
            if stop {
                return out;
            }
        }
    }
}

/// The event's seq (its SSE id), 0 when absent.
pub fn seq(m: &SseMessage) -> u64 {
    m.id.as_deref().and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[test]
fn the_test_reader_keeps_split_lines_and_characters_whole() {
    let mut r = TestSseReader::default();
    let bytes = "id: 3\nevent: log\ndata: é\n\n".as_bytes();
    let cut = bytes.iter().position(|&b| b == 0xC3).unwrap() + 1;
    assert!(r.push(&bytes[..cut]).is_empty());
    let got = r.push(&bytes[cut..]);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data, "é");
    assert_eq!(got[0].event.as_deref(), Some("log"));
}
