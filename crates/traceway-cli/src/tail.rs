//! `traceway tail`: follows live streams over SSE, decoded by `eventsource-stream`
//! (ADR 014), and reconnects with `Last-Event-ID`.

use std::time::Duration;

use eventsource_stream::{Event as SseEvent, Eventsource as _};
use futures::{Stream, StreamExt as _};
use serde_json::Value;

use crate::client::{error_message, Client, ClientArgs};
use crate::render::TailPrinter;

/// The server-sent events of a byte stream, as the chunks arrive. A chunk may end inside
/// a line, or inside a UTF-8 character: the decoder keeps the partial bytes for the next.
pub fn sse_events<S, B, E>(bytes: S) -> impl Stream<Item = SseEvent>
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
{
    // A decoding error (bytes that are not UTF-8, a broken connection) ends this
    // connection's stream; `tail` then reconnects from the last seq it printed.
    bytes
        .eventsource()
        .take_while(|r| std::future::ready(r.is_ok()))
        .filter_map(|r| std::future::ready(r.ok()))
}

/// Where a tail stands: what it printed up to, and whether the trace ended.
struct TailState {
    printer: TailPrinter,
    /// The last seq printed of the followed trace (its `Last-Event-ID`).
    last_seq: Option<u64>,
    ended: bool,
    json: bool,
}

impl TailState {
    fn handle(&mut self, m: SseEvent, one_trace: bool) -> std::io::Result<()> {
        use std::io::Write;
        if m.event == "lagged" {
            let v: Value = serde_json::from_str(&m.data).unwrap_or(Value::Null);
            if let Some(seq) = v["resume_after_seq"].as_u64() {
                self.last_seq = Some(seq);
            }
            return Ok(());
        }
        let Ok(e) = serde_json::from_str::<traceway_core::Event>(&m.data) else {
            return Ok(());
        };
        if one_trace {
            self.last_seq = Some(e.seq);
        }
        self.ended |= e.body.event_type() == traceway_core::EventType::TraceEnded;
        let line = if self.json {
            Some(m.data)
        } else {
            self.printer.line(&e)
        };
        if let Some(line) = line {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{line}")?;
            out.flush()?;
        }
        Ok(())
    }
}

/// `traceway tail [ID]`: follows one trace (until it ends) or the tenant's traces, and
/// reconnects with `Last-Event-ID` after a dropped connection or a server restart.
pub async fn tail(args: ClientArgs, id: Option<String>) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let c = Client::new_streaming(args)?;
    let color = std::io::stdout().is_terminal();
    let mut state = TailState {
        printer: TailPrinter::new(color, id.is_none()),
        last_seq: None,
        ended: false,
        json: c.args.json,
    };
    let url = match &id {
        Some(id) => c.url(&format!("/api/v1/traces/{id}/stream")),
        None => c.url("/api/v1/stream?all=true"),
    };
    let mut backoff = Duration::from_millis(200);
    loop {
        let mut req = c.http.get(&url);
        if let Some(seq) = state.last_seq {
            req = req.header("last-event-id", seq.to_string());
        }
        req = c.authed(req);
        match req.send().await {
            Ok(resp) if resp.status().is_success() => {
                backoff = Duration::from_millis(200);
                let events = sse_events(resp.bytes_stream());
                let mut events = std::pin::pin!(events);
                while let Some(m) = events.next().await {
                    state.handle(m, id.is_some())?;
                }
            }
            // A trace that does not exist will not appear by retrying.
            Ok(resp) if resp.status().is_client_error() => {
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                anyhow::bail!("{status}: {}", error_message(body));
            }
            // Server errors and network failures: try again.
            Ok(_) | Err(_) => {}
        }
        if state.ended && id.is_some() {
            return Ok(());
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn decode(chunks: Vec<&'static [u8]>) -> Vec<SseEvent> {
        let bytes = futures::stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>));
        sse_events(bytes).collect().await
    }

    #[tokio::test]
    async fn a_character_split_across_two_chunks_arrives_whole() {
        // "é" is C3 A9, "🤖" is F0 9F A4 96: each is cut between two chunks.
        let text = "{\"msg\":\"café 🤖\"}";
        let bytes = format!("id: 1\ndata: {text}\n\n").into_bytes();
        let cut_e = bytes.iter().position(|&b| b == 0xC3).unwrap() + 1;
        let cut_robot = bytes.iter().position(|&b| b == 0xF0).unwrap() + 2;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        let got = decode(vec![
            &bytes[..cut_e],
            &bytes[cut_e..cut_robot],
            &bytes[cut_robot..],
        ])
        .await;
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].data, text);
        assert_eq!(got[0].id, "1");
    }

    #[tokio::test]
    async fn split_lines_comments_and_multiline_data() {
        let got = decode(vec![
            b": keep-alive\n\nid: 3\nevent: log\nda",
            b"ta: {\"a\":1}\ndata: x\n\n",
        ])
        .await;
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(
            (
                got[0].id.as_str(),
                got[0].event.as_str(),
                got[0].data.as_str()
            ),
            ("3", "log", "{\"a\":1}\nx")
        );
    }
}
