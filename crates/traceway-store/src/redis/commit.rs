//! Writes: one pipelined read of what a write needs, the write model, one `EVALSHA` commit.

use super::*;

impl RedisStore {
    /// Loads a trace with the state a batch needs: the spans and client keys it mentions,
    /// the trace's pending-fill totals, and the latest form of the ended spans among
    /// `filled` (the spans the batch's message fills name).
    pub(super) async fn load_for(
        &self,
        tenant: &str,
        id: TraceId,
        span_ids: &[u64],
        client_keys: &[String],
        filled: &[u64],
    ) -> Result<Option<(String, Loaded<Port>)>, BackendError> {
        // One round trip: the three reads share the trace's slot. The empty string is never
        // a client key, so it stands in for an empty list.
        let k = self.trace_keys(tenant, id);
        let mut p = ::redis::pipe();
        p.cmd("HMGET").arg(&k.row).arg("doc").arg("ver").arg("dexp");
        p.cmd("HMGET").arg(&k.spans).arg(FILLS_FIELD).arg(span_ids);
        p.cmd("SMISMEMBER").arg(&k.keys);
        if client_keys.is_empty() {
            p.arg("");
        } else {
            p.arg(client_keys);
        }
        let mut conn = self.conn()?;
        type Row = (Option<String>, Option<String>, Option<i64>);
        let (row, mut vals, flags): (Row, Vec<Option<String>>, Vec<bool>) =
            p.query_async(&mut conn).await.map_err(redis_err)?;
        let (Some(doc), Some(ver)) = (row.0, row.1) else {
            return Ok(None);
        };
        let trace = serde_json::from_str(&doc).map_err(json_err)?;
        let totals = match vals.first_mut().and_then(Option::take) {
            Some(t) => serde_json::from_str(&t).map_err(json_err)?,
            None => PendingTotals::default(),
        };
        let mut spans = HashMap::new();
        let mut pending = HashMap::new();
        for (sid, v) in span_ids.iter().zip(vals.into_iter().skip(1)) {
            if let Some(v) = v {
                let mut stored: StoredSpan = serde_json::from_str(&v).map_err(json_err)?;
                let fills = std::mem::take(&mut stored.pending);
                if let Some(state) = stored.into_state() {
                    spans.insert(*sid, state);
                } else if !fills.is_empty() {
                    pending.insert(*sid, fills);
                }
            }
        }
        let mut bodies = HashMap::new();
        for sid in filled {
            if matches!(spans.get(sid), Some(SpanState::Ended { .. })) {
                if let Some(body) = self.latest_span_body(&k.events, *sid).await? {
                    bodies.insert(*sid, body);
                }
            }
        }
        let mut seen = HashSet::new();
        for (key, f) in client_keys.iter().zip(flags) {
            if f {
                seen.insert(key.clone());
            }
        }
        let loaded = Loaded {
            trace,
            data_expires_at: row.2.unwrap_or(0),
            stored: Port {
                spans,
                seen,
                pending,
                totals,
                bodies,
            },
        };
        Ok(Some((ver, loaded)))
    }

    /// An ended span's latest form, read from the newest stream entries backwards (a fill
    /// usually follows its span closely), at most `MAX_ENTRIES` of them.
    async fn latest_span_body(&self, key: &str, sid: u64) -> Result<Option<Span>, BackendError> {
        const PAGE: usize = 64;
        const MAX_ENTRIES: usize = 4096;
        let mut end = "+".to_string();
        let mut read = 0;
        let mut conn = self.conn()?;
        while read < MAX_ENTRIES {
            let entries: Vec<(String, HashMap<String, Vec<u8>>)> = ::redis::cmd("XREVRANGE")
                .arg(key)
                .arg(&end)
                .arg("-")
                .arg("COUNT")
                .arg(PAGE)
                .query_async(&mut conn)
                .await
                .map_err(redis_err)?;
            read += entries.len();
            let last = entries.len() < PAGE;
            for (entry_id, fields) in entries {
                if let Some(d) = fields.get("d") {
                    let found = entry_events(d)?
                        .into_iter()
                        .rev()
                        .find_map(|e| match e.body {
                            EventBody::SpanStarted(s) | EventBody::SpanEnded(s)
                                if s.span_id.as_u64() == sid =>
                            {
                                Some(s)
                            }
                            _ => None,
                        });
                    if found.is_some() {
                        return Ok(found);
                    }
                }
                // Entry ids are `<last seq>-0`: the next page ends below this one.
                let seq: u64 = entry_id
                    .split('-')
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                if seq <= 1 {
                    return Ok(None);
                }
                end = format!("{}-0", seq - 1);
            }
            if last {
                break;
            }
        }
        Ok(None)
    }

    /// Commits a draft; `None` when another writer got there first (read again and retry),
    /// else how much the trace's stored bytes changed (ADR 040).
    ///
    /// The `EVALSHA` command is built by hand rather than with `ScriptInvocation`, which
    /// copies every argument into a vector of its own and then again into the command:
    /// here the JSON is written straight into the command's buffer, once.
    pub(super) async fn commit(
        &self,
        d: &Written<Port>,
        ver: &str,
        reset: bool,
        now: Timestamp,
    ) -> Result<Option<i64>, BackendError> {
        use ::redis::RedisWrite as _;
        use std::io::Write as _;
        let k = self.trace_keys(&d.trace.tenant, d.trace.trace_id);
        let version = self.new_version();
        let per_event = self.event_bytes.load(Ordering::Relaxed);
        // Pending fills (ADR 027) go into the span hash with the span states: a span that
        // arrived replaced its field already.
        let pending: Vec<(&u64, &Vec<MessageFill>)> = d
            .fills
            .get()
            .into_iter()
            .flat_map(|f| &f.pending)
            .filter(|(sid, _)| !d.spans.contains_key(sid))
            .collect();
        let pairs = d.spans.len() + pending.len() + usize::from(d.fills.totals().is_some());
        let mut cmd = Cmd::with_capacity(
            16 + 2 * pairs + d.client_ids.len(),
            2048 + d.events.len() * per_event + d.spans.len() * 64,
        );
        cmd.arg("EVALSHA")
            .arg(self.commit.get_hash())
            .arg(4)
            .arg(&k.row)
            .arg(&k.spans)
            .arg(&k.keys)
            .arg(&k.events)
            .arg(ver)
            .arg(&version)
            .arg(if reset { 1 } else { 0 });
        serde_json::to_writer(cmd.writer_for_next_arg(), &d.trace).map_err(json_err)?;
        cmd.arg(d.data_expires_at)
            .arg(ttl_ms(now, d.trace.expires_at.unix_nanos()))
            .arg(ttl_ms(now, d.data_expires_at))
            .arg(pairs)
            .arg(d.client_ids.len());
        // The events go once: the same argument is the stream entry and the live message.
        match d.events.last() {
            Some(last) => cmd.arg(format!("{}-0", last.seq)),
            None => cmd.arg(""),
        };
        cmd.arg(self.channel());
        if d.events.is_empty() {
            cmd.arg("");
        } else {
            let mut w = Counting {
                inner: cmd.writer_for_next_arg(),
                n: 0,
            };
            let header = LiveHeaderRef {
                v: &version,
                tenant: &d.trace.tenant,
                agent_id: d.trace.agent_id.as_deref(),
                state: d.trace.state.as_str(),
            };
            serde_json::to_writer(&mut w, &header).map_err(json_err)?;
            let mut sep = b"\n[".as_slice();
            for e in &d.events {
                w.write_all(sep)
                    .map_err(|e| BackendError::internal_by("encode events", e))?;
                serde_json::to_writer(&mut w, e).map_err(json_err)?;
                sep = b",";
            }
            w.write_all(b"]")
                .map_err(|e| BackendError::internal_by("encode events", e))?;
            let per_event = w.n / d.events.len();
            self.event_bytes
                .store(per_event + per_event / 4, Ordering::Relaxed);
        }
        for (sid, s) in &d.spans {
            cmd.arg(*sid);
            serde_json::to_writer(cmd.writer_for_next_arg(), &StoredSpanRef::of(s))
                .map_err(json_err)?;
        }
        for (sid, list) in pending {
            cmd.arg(*sid);
            let value = PendingRef {
                ended: false,
                pending: list,
            };
            serde_json::to_writer(cmd.writer_for_next_arg(), &value).map_err(json_err)?;
        }
        if let Some(t) = &d.fills.totals() {
            cmd.arg(FILLS_FIELD);
            serde_json::to_writer(cmd.writer_for_next_arg(), t).map_err(json_err)?;
        }
        for (_, key) in &d.client_ids {
            cmd.arg(key);
        }
        let echo = (!d.events.is_empty() && self.echoes.up.load(Ordering::Relaxed)).then(|| {
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.echoes
                .waiters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(version.clone(), tx);
            rx
        });
        let mut conn = self.conn()?;
        let r = match cmd.query_async::<(i64, i64)>(&mut conn).await {
            Err(e)
                if e.kind() == ::redis::ErrorKind::Server(::redis::ServerErrorKind::NoScript) =>
            {
                // Redis restarted or flushed its scripts: load it and send again.
                match self.commit.load_async(&mut conn).await {
                    Ok(_) => cmd.query_async::<(i64, i64)>(&mut conn).await,
                    Err(e) => Err(e),
                }
            }
            r => r,
        }
        .map_err(redis_err);
        let committed = matches!(r, Ok((1, _)));
        if let Some(rx) = echo {
            if committed && tokio::time::timeout(ECHO_WAIT, rx).await.is_err() {
                tracing::warn!("live channel: own event not echoed in time");
            }
            self.echoes
                .waiters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&version);
        }
        let (ok, delta) = r?;
        Ok((ok == 1).then_some(delta))
    }

    /// Reads, computes and commits until no other writer interferes. `step` runs the
    /// write model on what was read; `Ok(None)` writes nothing.
    ///
    /// The writers of one trace in this process take turns (the trace's shard of
    /// `trace_turns`, held from the read to the end of the index update), so a conflict comes
    /// only from another process; each one is counted in `commit_retries`.
    pub(super) async fn write_trace<T, E: From<BackendError>>(
        &self,
        tenant: &str,
        id: TraceId,
        span_ids: &[u64],
        client_keys: &[String],
        filled: &[u64],
        mut step: impl FnMut(Option<Loaded<Port>>, Model) -> Result<Option<(Written<Port>, T)>, E>,
    ) -> Result<Option<(Trace, Vec<Event>, T)>, E> {
        const ATTEMPTS: u32 = 200;
        // Held to the end, the index update included: this process's index updates of
        // one trace then run in commit order too.
        let _turn = self.trace_turn(tenant, id).lock().await;
        for attempt in 0..ATTEMPTS {
            let (ver, loaded) = match self
                .load_for(tenant, id, span_ids, client_keys, filled)
                .await?
            {
                Some((ver, l)) => (Some(ver), Some(l)),
                None => (None, None),
            };
            let now = self.clock.now();
            let before = loaded.as_ref().map(|l| l.trace.clone());
            let Some((written, extra)) = step(loaded, self.model(now))? else {
                return Ok(None);
            };
            // A new trace over a stale one's keys replaces them.
            let reset = written.created && ver.is_some();
            let ver = ver.unwrap_or_default();
            if let Some(bytes) = self.commit(&written, &ver, reset, now).await? {
                let before = before.filter(|_| !reset);
                self.index(
                    &written.trace,
                    written.data_expires_at,
                    before.as_ref(),
                    bytes,
                )
                .await?;
                return Ok(Some((written.trace, written.events, extra)));
            }
            self.commit_retries.fetch_add(1, Ordering::Relaxed);
            if attempt > 3 {
                tokio::time::sleep(Duration::from_micros(50 * u64::from(attempt.min(40)))).await;
            } else {
                tokio::task::yield_now().await;
            }
        }
        Err(BackendError::overloaded(format!("trace {id}: too many concurrent writers")).into())
    }
}

/// Input ids a batch needs state for: its spans (with the spans its fills name) and its
/// client keys (with its fills' ids).
pub(super) fn needs(events: &[EventInput], fills: &[MessageFill]) -> (Vec<u64>, Vec<String>) {
    let mut spans = Vec::new();
    let mut keys = Vec::new();
    for f in fills {
        if !spans.contains(&f.span_id.as_u64()) {
            spans.push(f.span_id.as_u64());
        }
        if !f.id.is_empty() {
            keys.push(f.id.clone());
        }
    }
    for e in events {
        let (sid, key) = match e {
            EventInput::SpanStarted { span } | EventInput::SpanEnded { span } => {
                (Some(span.span_id), None)
            }
            EventInput::Log { id, record, .. } => (record.span_id, id.clone()),
            EventInput::Error { id, record, .. } => (record.span_id, id.clone()),
        };
        if let Some(s) = sid {
            if !spans.contains(&s.as_u64()) {
                spans.push(s.as_u64());
            }
        }
        if let Some(k) = key {
            keys.push(k);
        }
    }
    (spans, keys)
}
