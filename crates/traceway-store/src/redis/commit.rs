//! Writes: one pipelined read of what a write needs, the write model, one `EVALSHA` commit.

use super::*;

impl RedisStore {
    /// Loads a trace with the state a batch needs: the spans and client keys it mentions.
    pub(super) async fn load_for(
        &self,
        tenant: &str,
        id: TraceId,
        span_ids: &[u64],
        client_keys: &[String],
    ) -> Result<Option<(String, Loaded<Port>)>, StoreError> {
        // One round trip: the three reads share the trace's slot. Span id 0 and the empty
        // string are never stored, so they stand in for an empty list.
        let k = self.trace_keys(tenant, id);
        let mut p = ::redis::pipe();
        p.cmd("HMGET").arg(&k.row).arg("doc").arg("ver").arg("dexp");
        p.cmd("HMGET").arg(&k.spans);
        if span_ids.is_empty() {
            p.arg(0u64);
        } else {
            p.arg(span_ids);
        }
        p.cmd("SMISMEMBER").arg(&k.keys);
        if client_keys.is_empty() {
            p.arg("");
        } else {
            p.arg(client_keys);
        }
        let mut conn = self.conn()?;
        type Row = (Option<String>, Option<String>, Option<i64>);
        let (row, vals, flags): (Row, Vec<Option<String>>, Vec<bool>) =
            p.query_async(&mut conn).await.map_err(redis_err)?;
        let (Some(doc), Some(ver)) = (row.0, row.1) else {
            return Ok(None);
        };
        let trace = serde_json::from_str(&doc).map_err(json_err)?;
        let mut spans = HashMap::new();
        for (sid, v) in span_ids.iter().zip(vals) {
            if let Some(v) = v {
                let stored: StoredSpan = serde_json::from_str(&v).map_err(json_err)?;
                if let Some(state) = stored.into_state() {
                    spans.insert(*sid, state);
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
            stored: Port { spans, seen },
        };
        Ok(Some((ver, loaded)))
    }

    /// Commits a draft; false when another writer got there first (read again and retry).
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
    ) -> Result<bool, StoreError> {
        use ::redis::RedisWrite as _;
        use std::io::Write as _;
        let k = self.trace_keys(&d.trace.tenant, d.trace.trace_id);
        let version = self.new_version();
        let per_event = self.event_bytes.load(Ordering::Relaxed);
        let mut cmd = Cmd::with_capacity(
            16 + 2 * d.spans.len() + d.client_ids.len(),
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
            .arg(d.spans.len())
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
                    .map_err(|e| StoreError::Internal(e.to_string()))?;
                serde_json::to_writer(&mut w, e).map_err(json_err)?;
                sep = b",";
            }
            w.write_all(b"]")
                .map_err(|e| StoreError::Internal(e.to_string()))?;
            let per_event = w.n / d.events.len();
            self.event_bytes
                .store(per_event + per_event / 4, Ordering::Relaxed);
        }
        for (sid, s) in &d.spans {
            cmd.arg(*sid);
            serde_json::to_writer(cmd.writer_for_next_arg(), &StoredSpanRef::of(s))
                .map_err(json_err)?;
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
        let r = match cmd.query_async::<i64>(&mut conn).await {
            Err(e)
                if e.kind() == ::redis::ErrorKind::Server(::redis::ServerErrorKind::NoScript) =>
            {
                // Redis restarted or flushed its scripts: load it and send again.
                match self.commit.load_async(&mut conn).await {
                    Ok(_) => cmd.query_async::<i64>(&mut conn).await,
                    Err(e) => Err(e),
                }
            }
            r => r,
        }
        .map_err(redis_err);
        let committed = matches!(r, Ok(1));
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
        Ok(r? == 1)
    }

    /// Reads, computes and commits until no other writer interferes. `step` runs the
    /// write model on what was read; `Ok(None)` writes nothing.
    pub(super) async fn write_trace<T>(
        &self,
        tenant: &str,
        id: TraceId,
        span_ids: &[u64],
        client_keys: &[String],
        mut step: impl FnMut(
            Option<Loaded<Port>>,
            Model,
        ) -> Result<Option<(Written<Port>, T)>, StoreError>,
    ) -> Result<Option<(Trace, Vec<Event>, T)>, StoreError> {
        const ATTEMPTS: u32 = 200;
        for attempt in 0..ATTEMPTS {
            let (ver, loaded) = match self.load_for(tenant, id, span_ids, client_keys).await? {
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
            if self.commit(&written, &ver, reset, now).await? {
                let before = before.filter(|_| !reset);
                self.index(&written.trace, written.data_expires_at, before.as_ref())
                    .await?;
                return Ok(Some((written.trace, written.events, extra)));
            }
            if attempt > 3 {
                tokio::time::sleep(Duration::from_micros(50 * u64::from(attempt.min(40)))).await;
            } else {
                tokio::task::yield_now().await;
            }
        }
        Err(StoreError::Overloaded(format!(
            "trace {id}: too many concurrent writers"
        )))
    }
}

/// Input ids a batch needs state for.
pub(super) fn needs(events: &[EventInput]) -> (Vec<u64>, Vec<String>) {
    let mut spans = Vec::new();
    let mut keys = Vec::new();
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
