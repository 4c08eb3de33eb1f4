//! What the backend stores and sends, and how: span states, the live message's header, time units.

use super::*;

/// What a write needs to know of a span, in the trace's span hash: whether it ended, its
/// component, and while it runs its stored form (which the end is merged into). An ended
/// span's form is only in the event log, so it is not stored twice.
///
/// A span not stored yet may have message fills waiting for it (ADR 027): then its field
/// holds `{"ended": false, "pending": [fills]}`, which the span's first write replaces.
#[derive(Deserialize)]
pub(super) struct StoredSpan {
    pub(super) ended: bool,
    #[serde(default)]
    pub(super) component: Option<String>,
    #[serde(default)]
    pub(super) span: Option<Box<Span>>,
    #[serde(default)]
    pub(super) pending: Vec<MessageFill>,
}

/// The span hash's field of the trace's pending-fill totals (span ids are numbers).
pub(super) const FILLS_FIELD: &str = "fills";

/// A span hash value that holds only the fills waiting for the span.
#[derive(Serialize)]
pub(super) struct PendingRef<'a> {
    pub(super) ended: bool,
    pub(super) pending: &'a [MessageFill],
}

impl StoredSpan {
    /// The write model's form; `None` for a running span without its body (never written).
    pub(super) fn into_state(self) -> Option<SpanState> {
        match (self.ended, self.span) {
            (true, _) => Some(SpanState::Ended {
                component: self.component,
            }),
            (false, Some(span)) => Some(SpanState::Running(span)),
            (false, None) => None,
        }
    }
}

/// [`StoredSpan`] as a commit writes it, borrowing the write model's span state.
#[derive(Serialize)]
pub(super) struct StoredSpanRef<'a> {
    pub(super) ended: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) component: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) span: Option<&'a Span>,
}

impl<'a> StoredSpanRef<'a> {
    pub(super) fn of(s: &'a SpanState) -> StoredSpanRef<'a> {
        match s {
            SpanState::Ended { component } => StoredSpanRef {
                ended: true,
                component: component.as_deref(),
                span: None,
            },
            SpanState::Running(span) => StoredSpanRef {
                ended: false,
                component: span.component_id.as_deref(),
                span: Some(span),
            },
        }
    }
}

/// The write model's port on Redis: the span states and client ids a batch mentions, read
/// with the trace in one round trip.
pub(super) struct Port {
    pub(super) spans: HashMap<u64, SpanState>,
    pub(super) seen: HashSet<String>,
    /// The fills waiting for the batch's spans not stored yet.
    pub(super) pending: HashMap<u64, Vec<MessageFill>>,
    /// The trace's pending-fill totals.
    pub(super) totals: PendingTotals,
    /// The latest form of the ended spans the batch's fills name, read from the stream.
    pub(super) bodies: HashMap<u64, Span>,
}

impl Stored for Port {
    fn span(&self, id: u64) -> Option<&SpanState> {
        self.spans.get(&id)
    }

    fn client_id_seen(&self, id: &str) -> Result<bool, BackendError> {
        Ok(self.seen.contains(id))
    }

    fn span_body(&self, id: u64) -> Result<Option<Span>, BackendError> {
        Ok(self.bodies.get(&id).cloned())
    }

    fn pending_fills(&self, id: u64) -> Option<&[MessageFill]> {
        self.pending.get(&id).map(Vec::as_slice)
    }

    fn pending_totals(&self) -> PendingTotals {
        self.totals
    }
}

/// What crosses the live channel, and what one event-stream entry holds: a one-line JSON
/// header, a newline, then the commit's events as a JSON array. A process reads the
/// header to answer its own writer's echo and parses the events only when it has live
/// subscribers; stream readers skip the header.
#[derive(Deserialize)]
pub(super) struct LiveHeader {
    /// The commit's version, by which the writer learns its own message went round.
    pub(super) v: String,
    pub(super) tenant: String,
    pub(super) agent_id: Option<String>,
    pub(super) state: String,
}

/// [`LiveHeader`] as the writer builds it, borrowing the draft's fields.
#[derive(Serialize)]
pub(super) struct LiveHeaderRef<'a> {
    pub(super) v: &'a str,
    pub(super) tenant: &'a str,
    pub(super) agent_id: Option<&'a str>,
    pub(super) state: &'a str,
}

/// The events of one stream entry: a commit's batch (`header\n[events]`), or a single
/// event (as entries were written before batches). Compact JSON has no raw newline, so
/// the newline tells them apart.
pub(super) fn entry_events(d: &[u8]) -> Result<Vec<Event>, BackendError> {
    match d.iter().position(|b| *b == b'\n') {
        Some(i) => serde_json::from_slice(&d[i + 1..]).map_err(json_err),
        None => Ok(vec![serde_json::from_slice(d).map_err(json_err)?]),
    }
}

/// The events of one stream entry as raw JSON, in seq order, parsed only as far as
/// finding where each one starts and ends: a reader parses the ones it wants.
pub(super) fn entry_raw_events(
    d: &[u8],
) -> Result<Vec<&serde_json::value::RawValue>, BackendError> {
    match d.iter().position(|b| *b == b'\n') {
        Some(i) => serde_json::from_slice(&d[i + 1..]).map_err(json_err),
        None => Ok(vec![serde_json::from_slice(d).map_err(json_err)?]),
    }
}

pub(super) fn micros(t: Timestamp) -> i64 {
    t.unix_nanos().div_euclid(1000)
}

/// Milliseconds from `now` until `t` plus a margin, at least a second: the physical bound
/// of a key whose logical expiry (which reads check) is `t` on the store's clock.
pub(super) fn ttl_ms(now: Timestamp, t_ns: i64) -> i64 {
    const MARGIN_MS: i64 = 60_000;
    ((t_ns - now.unix_nanos()) / 1_000_000).max(0) + MARGIN_MS
}

/// A writer that counts what passes through it.
pub(super) struct Counting<W> {
    pub(super) inner: W,
    pub(super) n: usize,
}

impl<W: std::io::Write> std::io::Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(seq: u64) -> Event {
        Event {
            trace_id: TraceId::new_v7(),
            seq,
            time: Timestamp::from_unix_nanos(1_700_000_000_000_000_000),
            component_id: Some("c\n\"x\"".into()),
            body: EventBody::Log(Default::default()),
        }
    }

    /// A batch entry reads back whole; an entry of the earlier one-event form still reads.
    #[test]
    fn stream_entries_hold_a_batch_or_one_event() {
        let (a, b) = (log(7), log(8));
        let header = serde_json::to_string(&LiveHeaderRef {
            v: "v1",
            tenant: "t\n",
            agent_id: None,
            state: "RUNNING",
        })
        .expect("header");
        let batch = format!(
            "{header}\n[{},{}]",
            serde_json::to_string(&a).expect("a"),
            serde_json::to_string(&b).expect("b")
        );
        assert_eq!(
            entry_events(batch.as_bytes()).expect("batch"),
            vec![a.clone(), b]
        );
        let single = serde_json::to_string(&a).expect("single");
        assert_eq!(entry_events(single.as_bytes()).expect("single"), vec![a]);
    }
}
