//! Reads, and the `Traces` contract (its writes go through `commit`).

use super::*;

impl RedisStore {
    pub(super) async fn load(
        &self,
        tenant: &str,
        id: TraceId,
    ) -> Result<Option<Row>, BackendError> {
        let k = self.trace_keys(tenant, id);
        let mut conn = self.conn()?;
        let (doc, ver, dexp): (Option<String>, Option<String>, Option<i64>) = ::redis::cmd("HMGET")
            .arg(&k.row)
            .arg("doc")
            .arg("ver")
            .arg("dexp")
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        let (Some(doc), Some(_)) = (doc, ver) else {
            return Ok(None);
        };
        let trace: Trace = serde_json::from_str(&doc).map_err(json_err)?;
        Ok(Some(Row {
            trace,
            dexp: dexp.unwrap_or(0),
        }))
    }

    /// Loads the traces behind index members (missing ones are `None`).
    pub(super) async fn load_many(
        &self,
        tenant: &str,
        ids: &[TraceId],
    ) -> Result<Vec<Option<Trace>>, BackendError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let cmds = ids
            .iter()
            .map(|id| Cmd::hget(self.trace_keys(tenant, *id).row, "doc"))
            .collect();
        let docs: Vec<Option<String>> = self.exec(cmds).await?;
        docs.into_iter()
            .map(|d| {
                d.map(|d| serde_json::from_str::<Trace>(&d).map_err(json_err))
                    .transpose()
            })
            .collect()
    }

    /// Up to `count` entries of a trace's event stream from seq `from` on, in seq order;
    /// `full` when `count` entries came back (there may be more). An entry is one commit's
    /// events and its id is the last one's seq, so the first entry read may begin before
    /// `from`.
    pub(super) async fn entries(
        &self,
        key: &str,
        from: u64,
        count: usize,
    ) -> Result<(Vec<(u64, Vec<u8>)>, bool), BackendError> {
        let mut conn = self.conn()?;
        let entries: Vec<(String, HashMap<String, Vec<u8>>)> = ::redis::cmd("XRANGE")
            .arg(key)
            .arg(format!("{from}-0"))
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        let full = entries.len() == count;
        let mut out = Vec::with_capacity(entries.len());
        for (id, mut fields) in entries {
            let last = id
                .split('-')
                .next()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| BackendError::internal(format!("event stream entry id {id}")))?;
            if let Some(d) = fields.remove("d") {
                out.push((last, d));
            }
        }
        Ok((out, full))
    }

    /// One page of a trace's event stream from `from` on, in seq order; `more` when the
    /// page was full.
    pub(super) async fn event_page(
        &self,
        key: &str,
        from: u64,
    ) -> Result<(Vec<Event>, bool), BackendError> {
        const PAGE: usize = 100;
        let (entries, more) = self.entries(key, from, PAGE).await?;
        let mut events = Vec::new();
        for (_, d) in entries {
            events.extend(entry_events(&d)?.into_iter().filter(|e| e.seq >= from));
        }
        Ok((events, more))
    }
}

/// What a listing's index holds: every trace of the filter it serves, or (the
/// index-served filters, ADR 042) only errored traces or one duration bucket. An entry
/// whose trace no longer belongs is stale and is removed when read.
#[derive(Clone, Copy)]
pub(super) enum Holds {
    Any,
    Errored,
    Bucket(u32),
}

impl Holds {
    fn holds(self, t: &Trace) -> bool {
        match self {
            Holds::Any => true,
            Holds::Errored => t.rollups.error_count > 0,
            Holds::Bucket(b) => t
                .rollups
                .duration_ms
                .is_some_and(|d| crate::duration_index::bucket_of(d) == b),
        }
    }
}

/// One sorted set a listing reads, newest first, and how far it got.
pub(super) struct Source {
    key: String,
    holds: Holds,
    offset: usize,
    buf: std::collections::VecDeque<(String, f64)>,
    done: bool,
}

impl Source {
    fn new(key: String, holds: Holds) -> Source {
        Source {
            key,
            holds,
            offset: 0,
            buf: Default::default(),
            done: false,
        }
    }
}

impl RedisStore {
    /// The next `take` entries of the merged sources, newest first (score, then member,
    /// both descending, as `ZREVRANGEBYSCORE` orders one set), each with the source it
    /// came from; and how many were read. One source is read `take` at a time, as a single
    /// index always was; several (the duration buckets) a few at a time each, refilled in
    /// one round trip as they run dry, so a page costs its rows plus one look per source.
    async fn merged(
        &self,
        sources: &mut [Source],
        max: &str,
        min: &str,
        take: usize,
    ) -> Result<(Vec<(usize, String)>, usize), BackendError> {
        let mut out: Vec<(usize, String)> = Vec::with_capacity(take);
        while out.len() < take {
            let dry: Vec<usize> = (0..sources.len())
                .filter(|i| sources[*i].buf.is_empty() && !sources[*i].done)
                .collect();
            if !dry.is_empty() {
                let want = take - out.len();
                let count = if sources.len() == 1 {
                    want
                } else {
                    want.clamp(8, 64)
                };
                let cmds = dry
                    .iter()
                    .map(|i| {
                        let mut c = ::redis::cmd("ZREVRANGEBYSCORE");
                        c.arg(&sources[*i].key)
                            .arg(max)
                            .arg(min)
                            .arg("WITHSCORES")
                            .arg("LIMIT")
                            .arg(sources[*i].offset)
                            .arg(count);
                        c
                    })
                    .collect();
                let got: Vec<Vec<(String, f64)>> = self.exec(cmds).await?;
                for (i, entries) in dry.into_iter().zip(got) {
                    let s = &mut sources[i];
                    s.offset += entries.len();
                    s.done = entries.len() < count;
                    s.buf.extend(entries);
                }
            }
            let best = (0..sources.len())
                .filter_map(|i| sources[i].buf.front().map(|e| (i, e)))
                .max_by(|(_, a), (_, b)| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)))
                .map(|(i, _)| i);
            let Some(i) = best else { break };
            let (id, _) = sources[i].buf.pop_front().expect("a head");
            out.push((i, id));
        }
        let n = out.len();
        Ok((out, n))
    }
}

pub(super) fn matches(t: &Trace, f: &TraceFilter) -> bool {
    let eq = |a: &Option<String>, b: &Option<String>| b.is_none() || a == b;
    eq(&t.agent_id, &f.agent_id)
        && eq(&t.user_id, &f.user_id)
        && eq(&t.session_id, &f.session_id)
        && f.state.as_ref().is_none_or(|s| *s == t.state)
        && f.created_after.is_none_or(|a| t.created_at >= a)
        && f.created_before.is_none_or(|b| t.created_at < b)
        && f.has_error.is_none_or(|e| (t.rollups.error_count > 0) == e)
        && f.min_duration_ms
            .is_none_or(|d| t.rollups.duration_ms.is_some_and(|x| x >= d))
}

#[async_trait]
impl Traces for RedisStore {
    async fn create_trace(
        &self,
        tenant: &str,
        new: NewTrace,
    ) -> Result<(Trace, EventCounts), TraceError> {
        let id = new.trace_id.unwrap_or_else(TraceId::new_v7);
        let r = self
            .write_trace::<_, TraceError>(tenant, id, &[], &[], &[], |loaded, model| {
                let w = model.create(tenant, id, new.clone(), loaded)?;
                Ok(Some((w, ())))
            })
            .await?;
        let (t, e, ()) = r.ok_or_else(|| BackendError::internal("create wrote nothing"))?;
        Ok((t, EventCounts::of(&e)))
    }

    async fn append(&self, req: AppendRequest) -> Result<AppendOutcome, TraceError> {
        let (span_ids, keys) = needs(&req.events, &req.fills);
        let AppendRequest {
            tenant,
            trace_id,
            create_if_missing,
            events,
            fills,
            end,
        } = req;
        let filled: Vec<u64> = fills.iter().map(|f| f.span_id.as_u64()).collect();
        let r = self
            .write_trace::<_, TraceError>(&tenant, trace_id, &span_ids, &keys, &filled, |loaded, model| {
                let w = model.append(
                    &tenant,
                    trace_id,
                    loaded,
                    create_if_missing.clone(),
                    events.iter().cloned(),
                    end.clone(),
                )?;
                let w = model.fill(w, fills.clone())?;
                if w.fills.dropped() > 0 {
                    tracing::warn!(trace_id = %trace_id, tenant = %tenant, dropped = w.fills.dropped(), "message fills dropped: the trace's pending fills are full");
                }
                let outcome = AppendOutcome {
                    accepted: w.accepted,
                    duplicates: w.duplicates,
                    created: w.created,
                    last_seq: w.trace.last_seq,
                    stored: EventCounts::default(),
                    terminal: w.trace.state.is_terminal(),
                };
                Ok(Some((w, outcome)))
            })
            .await?;
        let (_, events, mut outcome) =
            r.ok_or_else(|| BackendError::internal("append wrote nothing"))?;
        outcome.stored = EventCounts::of(&events);
        Ok(outcome)
    }

    async fn update_trace(
        &self,
        tenant: &str,
        id: TraceId,
        patch: TracePatch,
    ) -> Result<(Trace, EventCounts), TraceError> {
        let r = self
            .write_trace::<_, TraceError>(tenant, id, &[], &[], &[], |loaded, model| {
                let w = model.patch(id, loaded, patch.clone())?;
                Ok(Some((w, ())))
            })
            .await?;
        let (t, e, ()) = r.ok_or_else(|| BackendError::internal("update wrote nothing"))?;
        Ok((t, EventCounts::of(&e)))
    }

    async fn get_trace(&self, tenant: &str, id: TraceId) -> Result<Option<Trace>, TraceError> {
        let now = self.clock.now();
        Ok(self
            .load(tenant, id)
            .await?
            .map(|l| l.trace)
            .filter(|t| t.expires_at > now))
    }

    async fn get_spans(&self, tenant: &str, id: TraceId) -> Result<Option<Vec<Span>>, TraceError> {
        Ok(self.get_trace_with_spans(tenant, id).await?.map(|(_, s)| s))
    }

    async fn get_trace_with_spans(
        &self,
        tenant: &str,
        id: TraceId,
    ) -> Result<Option<(Trace, Vec<Span>)>, TraceError> {
        let now = self.clock.now();
        let Some(l) = self.load(tenant, id).await? else {
            return Ok(None);
        };
        if l.trace.expires_at <= now {
            return Ok(None);
        }
        if l.dexp <= now.unix_nanos() {
            return Ok(Some((l.trace, Vec::new())));
        }
        // A span's current form is its latest span event, as in SQLite.
        let key = self.trace_keys(tenant, id).events;
        let mut latest: HashMap<SpanId, Span> = HashMap::new();
        let mut from = 1u64;
        loop {
            let (events, more) = self.event_page(&key, from).await?;
            for e in events {
                from = e.seq + 1;
                if let EventBody::SpanStarted(s) | EventBody::SpanEnded(s) = e.body {
                    latest.insert(s.span_id, s);
                }
            }
            if !more {
                break;
            }
        }
        let spans = crate::shared::sort_spans(latest.into_values().collect());
        Ok(Some((l.trace, spans)))
    }

    async fn get_span_page(
        &self,
        tenant: &str,
        id: TraceId,
        page: &crate::SpanPageRequest,
    ) -> Result<Option<(Trace, crate::SpanPage)>, TraceError> {
        let now = self.clock.now();
        let Some(l) = self.load(tenant, id).await? else {
            return Ok(None);
        };
        if l.trace.expires_at <= now {
            return Ok(None);
        }
        if l.dexp <= now.unix_nanos() {
            return Ok(Some((l.trace, crate::SpanPage::default())));
        }
        let key = self.trace_keys(tenant, id).events;
        let limit = page.bounded_limit() as usize;
        let mut from = page.after_seq.saturating_add(1);
        let mut events: Vec<(u64, Span)> = Vec::new();
        // As `read_events`: from the entry holding `from`, a growing number at a time.
        // Once the page is full, the scan goes on to the next span event only to say
        // whether another page follows (a full last page has no cursor).
        let mut count = 1usize;
        let mut more = false;
        'scan: loop {
            let (entries, full) = self.entries(&key, from, count).await?;
            for (last, d) in entries {
                let raw = entry_raw_events(&d)?;
                let first = (last + 1).saturating_sub(raw.len() as u64);
                for (i, r) in raw.iter().enumerate() {
                    let seq = first + i as u64;
                    if seq < from {
                        continue;
                    }
                    from = seq + 1;
                    // Only span events are parsed whole.
                    let text = r.get();
                    if !text.contains("\"span_started\"") && !text.contains("\"span_ended\"") {
                        continue;
                    }
                    let e: Event = serde_json::from_str(text).map_err(json_err)?;
                    if let EventBody::SpanStarted(s) | EventBody::SpanEnded(s) = e.body {
                        if events.len() >= limit {
                            more = true;
                            break 'scan;
                        }
                        events.push((e.seq, s));
                    }
                }
            }
            if !full {
                break;
            }
            count = (count * 2).min(100);
        }
        Ok(Some((l.trace, crate::contract::span_page_of(events, more))))
    }

    async fn list_traces(
        &self,
        tenant: &str,
        filter: &TraceFilter,
        page: &PageRequest,
    ) -> Result<Page<Trace>, TraceError> {
        let after = page.cursor.as_deref().map(decode_cursor).transpose()?;
        let limit = page.bounded_limit() as usize;
        let now = self.clock.now();
        // The index the filter is served by; every other filter is checked on the trace
        // itself. `has_error=true`, then `min_duration_ms` first: their indexes (ADR 042)
        // hold only what matches, so their pages cost what they return (with both, the
        // errored traces are the smaller set, as on SQLite).
        let which = if let Some(a) = &filter.agent_id {
            format!("a:{a}")
        } else if let Some(s) = &filter.session_id {
            format!("s:{s}")
        } else if let Some(u) = &filter.user_id {
            format!("u:{u}")
        } else if let Some(s) = &filter.state {
            format!("st:{}", s.as_str())
        } else {
            "all".to_string()
        };
        let mut sources: Vec<Source> = if filter.has_error == Some(true) {
            vec![Source::new(
                self.tenant_index(tenant, "err"),
                Holds::Errored,
            )]
        } else if let Some(d) = filter.min_duration_ms {
            crate::duration_index::buckets_from(d)
                .map(|b| Source::new(self.duration_index(tenant, b), Holds::Bucket(b)))
                .collect()
        } else {
            vec![Source::new(self.tenant_index(tenant, &which), Holds::Any)]
        };
        let mut max = match filter.created_before {
            Some(b) => micros(b).to_string(),
            None => "+inf".to_string(),
        };
        if let Some((t, _)) = after {
            let c = t.div_euclid(1000);
            if filter.created_before.is_none_or(|b| micros(b) > c) {
                max = c.to_string();
            }
        }
        let min = filter
            .created_after
            .map(|a| micros(a).to_string())
            .unwrap_or_else(|| "-inf".to_string());
        let mut skip = if after.is_none() { page.offset } else { 0 };
        let mut items: Vec<Trace> = Vec::new();
        // A chunk holds a full page, the row past it (which says there is a next page) and
        // the cursor's own row (the score bound is inclusive), so an unfiltered listing
        // reads each row once.
        let chunk = (limit * 2).clamp(64, 1000).max(limit + 2);
        // Bounded: after `list_scan_rows` rows the page ends at the last row examined.
        let mut examined = 0usize;
        let mut last_examined: Option<(Timestamp, TraceId)> = None;
        let mut cut_short = false;
        let mut seen: HashSet<TraceId> = HashSet::new();
        loop {
            let take = chunk.min(self.list_scan_rows.saturating_sub(examined).max(1));
            let (picked, n) = self.merged(&mut sources, &max, &min, take).await?;
            examined += n;
            let parsed: Vec<TraceId> = picked.iter().filter_map(|(_, s)| s.parse().ok()).collect();
            let docs = self.load_many(tenant, &parsed).await?;
            let mut stale: HashMap<usize, Vec<String>> = HashMap::new();
            let mut found: Vec<Trace> = Vec::new();
            let ids = picked.iter().filter(|(_, s)| s.parse::<TraceId>().is_ok());
            for ((from, raw), doc) in ids.zip(docs) {
                match doc {
                    None => stale.entry(*from).or_default().push(raw.clone()),
                    Some(t) => {
                        // An entry the trace has left (a write moved it; its own index
                        // update removes it too): only the index it is in now lists it.
                        if !sources[*from].holds.holds(&t) {
                            stale.entry(*from).or_default().push(raw.clone());
                            continue;
                        }
                        if let Some((ct, cid)) = after {
                            if (t.created_at.unix_nanos(), t.trace_id) >= (ct, cid) {
                                continue;
                            }
                        }
                        let at = (t.created_at, t.trace_id);
                        if last_examined.is_none_or(|l| at < l) {
                            last_examined = Some(at);
                        }
                        if t.expires_at <= now || !matches(&t, filter) {
                            continue;
                        }
                        found.push(t);
                    }
                }
            }
            // Index entries of traces that are gone (their keys expired): cleaned lazily.
            // They were read, so they stood before the source's offset: it moves back by
            // as many, or the next read would pass over as many rows unseen.
            for (from, gone) in stale {
                let removed = self.zrem(sources[from].key.clone(), gone).await?;
                let s = &mut sources[from];
                s.offset = s.offset.saturating_sub(removed);
            }
            found.sort_by_key(|t| std::cmp::Reverse((t.created_at, t.trace_id)));
            for t in found {
                // Writers move entries while a listing reads (an offset may then see a row
                // twice): a page lists a trace once.
                if !seen.insert(t.trace_id) {
                    continue;
                }
                if skip > 0 {
                    skip -= 1;
                    continue;
                }
                items.push(t);
            }
            if items.len() > limit || n < take {
                break;
            }
            // Only a row that still exists can carry the cursor on; rows whose trace is
            // gone were just removed from the index, so they are not examined twice.
            if examined >= self.list_scan_rows && last_examined.is_some() {
                cut_short = true;
                break;
            }
        }
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(encode_cursor)
        } else if cut_short {
            last_examined.map(|(t, id)| encode_position(t, id))
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    async fn read_events(
        &self,
        tenant: &str,
        id: TraceId,
        filter: &EventFilter,
    ) -> Result<Option<Vec<Event>>, TraceError> {
        let now = self.clock.now();
        let Some(l) = self.load(tenant, id).await? else {
            return Ok(None);
        };
        if l.trace.expires_at <= now {
            return Ok(None);
        }
        if l.dexp <= now.unix_nanos() {
            return Ok(Some(Vec::new()));
        }
        let key = self.trace_keys(tenant, id).events;
        let limit = filter.bounded_limit() as usize;
        let unfiltered = filter.types.is_empty() && filter.component_id.is_none();
        let mut skip = filter.offset;
        let mut from = filter.after_seq.saturating_add(1);
        let mut out = Vec::new();
        // The cost follows what is returned (issue 15, failure 3.8): entries are read from
        // the one holding `from` (`XRANGE` from its stream id), a few at a time and more
        // each round, and only the events wanted are parsed; the others of an entry are
        // only scanned past, their seq known from their place in it.
        let mut count = 1usize;
        loop {
            let (entries, full) = self.entries(&key, from, count).await?;
            for (last, d) in entries {
                let raw = entry_raw_events(&d)?;
                let first = (last + 1).saturating_sub(raw.len() as u64);
                for (i, r) in raw.iter().enumerate() {
                    let seq = first + i as u64;
                    if seq < from {
                        continue;
                    }
                    if unfiltered && skip > 0 {
                        skip -= 1;
                        from = seq + 1;
                        continue;
                    }
                    let e: Event = serde_json::from_str(r.get()).map_err(json_err)?;
                    if e.seq != seq {
                        return Err(BackendError::internal(format!(
                            "event stream entry {last} holds seq {} at {seq}",
                            e.seq
                        ))
                        .into());
                    }
                    from = seq + 1;
                    if !filter.types.is_empty() && !filter.types.contains(&e.body.event_type()) {
                        continue;
                    }
                    if filter.component_id.is_some() && e.component_id != filter.component_id {
                        continue;
                    }
                    if skip > 0 {
                        skip -= 1;
                        continue;
                    }
                    out.push(e);
                    if out.len() >= limit {
                        return Ok(Some(out));
                    }
                }
            }
            if !full {
                return Ok(Some(out));
            }
            count = (count * 2).min(100);
        }
    }

    async fn count_events(
        &self,
        tenant: &str,
        id: TraceId,
    ) -> Result<Option<EventCounts>, TraceError> {
        let now = self.clock.now();
        let Some(l) = self.load(tenant, id).await? else {
            return Ok(None);
        };
        if l.trace.expires_at <= now {
            return Ok(None);
        }
        let mut counts = EventCounts::default();
        if l.dexp <= now.unix_nanos() {
            return Ok(Some(counts));
        }
        // The whole stream is read, but of each event only its type is parsed (the rest is
        // skipped over unallocated).
        #[derive(Deserialize)]
        struct Typed<'a> {
            #[serde(rename = "type", borrow)]
            ty: std::borrow::Cow<'a, str>,
        }
        let key = self.trace_keys(tenant, id).events;
        let mut from = 1u64;
        loop {
            let (entries, full) = self.entries(&key, from, 100).await?;
            let before = from;
            for (last, d) in entries {
                for r in entry_raw_events(&d)? {
                    let t: Typed = serde_json::from_str(r.get()).map_err(json_err)?;
                    let t: traceway_core::EventType =
                        t.ty.parse()
                            .map_err(|e| BackendError::internal(format!("stored event: {e}")))?;
                    counts.add(t);
                }
                from = last + 1;
            }
            if !full || from == before {
                return Ok(Some(counts));
            }
        }
    }

    async fn delete_trace(&self, tenant: &str, id: TraceId) -> Result<bool, TraceError> {
        let now = self.clock.now();
        Ok(self
            .delete_one(tenant, id)
            .await?
            .is_some_and(|t| t.expires_at > now))
    }

    async fn delete_ended_before(
        &self,
        tenant: &str,
        cutoff: Timestamp,
        limit: Option<u64>,
    ) -> Result<u64, TraceError> {
        let key = self.tenant_index(tenant, "ended");
        let limit = limit.unwrap_or(u64::MAX);
        let mut total = 0;
        let mut offset = 0u64;
        while total < limit {
            let mut conn = self.conn()?;
            let n = (limit - total).min(200);
            let ids: Vec<String> = ::redis::cmd("ZRANGEBYSCORE")
                .arg(&key)
                .arg("-inf")
                .arg(micros(cutoff))
                .arg("LIMIT")
                .arg(offset)
                .arg(n)
                .query_async(&mut conn)
                .await
                .map_err(redis_err)?;
            if ids.is_empty() {
                break;
            }
            let parsed: Vec<TraceId> = ids.iter().filter_map(|s| s.parse().ok()).collect();
            let docs = self.load_many(tenant, &parsed).await?;
            let mut gone = Vec::new();
            for (id, doc) in parsed.iter().zip(docs) {
                match doc {
                    Some(t) if t.ended_at.is_some_and(|e| e < cutoff) => {
                        self.delete_keys(tenant, *id).await?;
                        self.unindex(&t).await?;
                        total += 1;
                    }
                    Some(_) => offset += 1,
                    None => gone.push(id.to_string()),
                }
            }
            self.zrem(key.clone(), gone).await?;
        }
        Ok(total)
    }

    async fn count_ended_before(&self, tenant: &str, cutoff: Timestamp) -> Result<u64, TraceError> {
        let key = self.tenant_index(tenant, "ended");
        let c = micros(cutoff);
        let mut conn = self.conn()?;
        let below: u64 = ::redis::cmd("ZCOUNT")
            .arg(&key)
            .arg("-inf")
            .arg(format!("({c}"))
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        // Entries in the cutoff's own microsecond are checked exactly.
        let edge: Vec<String> = ::redis::cmd("ZRANGEBYSCORE")
            .arg(&key)
            .arg(c)
            .arg(c)
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        let parsed: Vec<TraceId> = edge.iter().filter_map(|s| s.parse().ok()).collect();
        let docs = self.load_many(tenant, &parsed).await?;
        let edge = docs
            .iter()
            .flatten()
            .filter(|t| t.ended_at.is_some_and(|e| e < cutoff))
            .count() as u64;
        Ok(below + edge)
    }

    async fn stored_bytes(&self, tenant: &str) -> Result<u64, TraceError> {
        let mut conn = self.conn()?;
        let n: Option<i64> = ::redis::cmd("GET")
            .arg(self.tenant_index(tenant, "bytes"))
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        Ok(n.unwrap_or(0).max(0) as u64)
    }

    async fn digest_inputs(
        &self,
        keys: &[(String, TraceId)],
        max_errors: usize,
    ) -> Result<Vec<Option<crate::DigestInput>>, TraceError> {
        // Each trace is its own keys (and Cluster slot): read one at a time.
        crate::analysed::digest_inputs_each(self, keys, max_errors).await
    }

    async fn put_analyses(
        &self,
        digests: Vec<(String, TraceId, traceway_core::analysis::AnalysisDigest)>,
    ) -> Result<Vec<bool>, TraceError> {
        let mut stored = Vec::with_capacity(digests.len());
        for (tenant, id, digest) in digests {
            stored.push(self.put_analysis(&tenant, id, digest).await?);
        }
        Ok(stored)
    }

    async fn put_analysis(
        &self,
        tenant: &str,
        id: TraceId,
        digest: traceway_core::analysis::AnalysisDigest,
    ) -> Result<bool, TraceError> {
        let k = self.trace_keys(tenant, id);
        // The trace's writers in this process wait (see `write_trace`), so a conflict is
        // another process's write since the read: read again; a write that moved
        // `last_seq` makes the digest stale and it is dropped below.
        let _turn = self.trace_turn(tenant, id).lock().await;
        for _ in 0..4 {
            let mut conn = self.conn()?;
            let (doc, ver): (Option<String>, Option<String>) = ::redis::cmd("HMGET")
                .arg(&k.row)
                .arg("doc")
                .arg("ver")
                .query_async(&mut conn)
                .await
                .map_err(redis_err)?;
            let (Some(doc), Some(ver)) = (doc, ver) else {
                return Ok(false);
            };
            let mut trace: Trace = serde_json::from_str(&doc).map_err(json_err)?;
            if trace.expires_at <= self.clock.now() || trace.last_seq != digest.at_seq {
                return Ok(false);
            }
            trace.rollups.analysis = Some(digest.clone());
            let doc = serde_json::to_string(&trace).map_err(json_err)?;
            let n: i64 = self
                .put_doc
                .key(&k.row)
                .arg(&ver)
                .arg(self.new_version())
                .arg(doc)
                .invoke_async(&mut conn)
                .await
                .map_err(redis_err)?;
            if n == 1 {
                return Ok(true);
            }
            self.commit_retries.fetch_add(1, Ordering::Relaxed);
        }
        Ok(false)
    }
}
