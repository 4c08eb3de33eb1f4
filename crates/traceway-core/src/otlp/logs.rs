//! OTLP log records → Traceway log events and LLM message fills.
//!
//! | record | becomes |
//! |---|---|
//! | with a trace id and a span id | a `log` event of that span |
//! | with a trace id only | a `log` event of the trace |
//! | without a (valid) trace id, or with an invalid span id | rejected, counted for OTLP's partial success |
//! | GenAI `gen_ai.system.message`, `gen_ai.user.message`, `gen_ai.assistant.message`, `gen_ai.tool.message` (with a span id) | instead, a [`MessageFill`] (append) of the span's input messages |
//! | GenAI `gen_ai.choice` (with a span id) | instead, a fill (append) of the span's output messages |
//! | GenAI `gen_ai.client.inference.operation.details` (with a span id) | instead, a fill (replace) from its `gen_ai.input.messages`, `gen_ai.system_instructions` and `gen_ai.output.messages` |
//!
//! A GenAI event that carries no message (an empty body, or no span id) stays a `log`
//! event. The per-message events of one span in one export make one fill; its id is
//! `otlp-fill:<span id>:<hash of its records>`, so a re-exported batch is the same fill.
//!
//! The event name is the record's `event_name`, else its `event.name` attribute (older
//! SDKs). A log event's message is the body when it is a string, else the event name,
//! else `log`; its attributes are the record's, plus `otel.event_name`,
//! `otel.severity_text`, `otel.scope.name` and the body as `body` when it is not a
//! string. Severity: `TRACE`/`DEBUG` → debug, `INFO` → info, `WARN` → warn,
//! `ERROR`/`FATAL` → error; unset → from the severity text, else info. Each event gets the
//! stable id `otlp-log:<span id or ->:<hash of the record>`, so a re-exported record is
//! stored once.

use std::collections::{BTreeMap, HashMap};

use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord as OtlpLogRecord, SeverityNumber};
use prost::Message as _;
use serde_json::{json, Value};

use super::attrs::{as_json, to_json, to_json_map, Attrs};
use super::map::{genai_message, genai_messages_of};
use super::{Encoding, MappedEvent, OtlpError, SERVICE_METADATA_KEY};
use crate::id::{SpanId, TraceId};
use crate::ingest::{EventInput, FillMode, MessageFill, NewTrace};
use crate::model::{LogRecord, Message, Severity, State};
use crate::time::Timestamp;

pub use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;

/// How many rejection reasons the message spells out; the rest are counted.
const MAX_REASONS: usize = 5;

/// The GenAI event that carries a whole call's messages.
pub const OPERATION_DETAILS_EVENT: &str = "gen_ai.client.inference.operation.details";

/// Reads an OTLP/HTTP log export body (already un-gzipped).
pub fn decode_logs_request(
    body: &[u8],
    encoding: Encoding,
) -> Result<ExportLogsServiceRequest, OtlpError> {
    match encoding {
        Encoding::Protobuf => {
            ExportLogsServiceRequest::decode(body).map_err(|e| OtlpError::Protobuf(e.to_string()))
        }
        Encoding::Json => super::json::decode_logs(body).map_err(OtlpError::Json),
    }
}

/// What a batch of OTLP log records became.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MappedLogs {
    /// The records, grouped by trace in the order each trace was first seen.
    pub traces: Vec<MappedLogTrace>,
    /// Records that could not be used (no trace id, invalid ids).
    pub rejected_log_records: u64,
    /// Why, for OTLP's partial-success answer; `None` when nothing was rejected.
    pub rejection_message: Option<String>,
}

/// The records of one trace in a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct MappedLogTrace {
    /// The trace.
    pub trace_id: TraceId,
    /// The first resource's `service.name`.
    pub service: Option<String>,
    /// The log events, in batch order (every record but the GenAI message events).
    pub logs: Vec<MappedEvent<LogRecord>>,
    /// Messages for LLM spans, in batch order: per span, one append fill for the
    /// per-message events and one replace fill per operation-details event. The store
    /// applies them to the span, or keeps them until it arrives.
    pub message_fills: Vec<MessageFill>,
}

impl MappedLogTrace {
    /// The trace to create when a log is the first the server hears of it: `RUNNING`, with
    /// the service in its metadata; its spans fill the rest when they arrive.
    pub fn new_trace(&self) -> NewTrace {
        let mut metadata = BTreeMap::new();
        if let Some(s) = &self.service {
            metadata.insert(SERVICE_METADATA_KEY.to_string(), s.clone());
        }
        NewTrace {
            trace_id: Some(self.trace_id),
            state: Some(State::Running),
            metadata,
            ..NewTrace::default()
        }
    }

    /// The `log` events, with their stable ids. The message fills are not among them: the
    /// store applies those through its own input of the append (see [`MessageFill`]).
    pub fn log_events(&self) -> Vec<EventInput> {
        self.logs
            .iter()
            .map(|e| EventInput::Log {
                id: Some(e.id.clone()),
                time: Some(e.time),
                record: e.record.clone(),
            })
            .collect()
    }
}

/// Maps a log export request.
pub fn map_logs_request(req: &ExportLogsServiceRequest) -> MappedLogs {
    let mut traces: Vec<MappedLogTrace> = Vec::new();
    let mut by_id: HashMap<TraceId, usize> = HashMap::new();
    // (trace index, span) → index of its append fill in that trace.
    let mut appends: HashMap<(usize, SpanId), usize> = HashMap::new();
    let mut rejected: u64 = 0;
    let mut reasons: Vec<String> = Vec::new();

    for (ri, rl) in req.resource_logs.iter().enumerate() {
        let resource: &[KeyValue] = rl.resource.as_ref().map_or(&[], |r| &r.attributes);
        let service = Attrs::new(resource).peek_first(&["service.name"], super::attrs::as_text);
        for (si, sl) in rl.scope_logs.iter().enumerate() {
            let scope_name = sl.scope.as_ref().map(|s| s.name.as_str()).unwrap_or("");
            for (li, rec) in sl.log_records.iter().enumerate() {
                let (trace_id, span_id) = match ids_of(rec) {
                    Ok(ids) => ids,
                    Err(reason) => {
                        rejected += 1;
                        if reasons.len() < MAX_REASONS {
                            reasons.push(format!(
                                "resourceLogs[{ri}].scopeLogs[{si}].logRecords[{li}]: {reason}"
                            ));
                        }
                        continue;
                    }
                };
                let ti = *by_id.entry(trace_id).or_insert_with(|| {
                    traces.push(MappedLogTrace {
                        trace_id,
                        service: service.clone(),
                        logs: Vec::new(),
                        message_fills: Vec::new(),
                    });
                    traces.len() - 1
                });
                let trace = &mut traces[ti];
                let event_name = event_name(rec);
                let fill = match (span_id, event_name.as_deref()) {
                    (Some(span_id), Some(name)) => genai_fill(rec, name).map(|f| (span_id, f)),
                    _ => None,
                };
                let Some((span_id, fill)) = fill else {
                    trace
                        .logs
                        .push(log_event(rec, span_id, event_name.as_deref(), scope_name));
                    continue;
                };
                let record_hash = fnv1a(&rec.encode_to_vec());
                match fill {
                    Fill::One { input, message } => {
                        let fi = *appends.entry((ti, span_id)).or_insert_with(|| {
                            trace.message_fills.push(MessageFill {
                                id: String::new(),
                                span_id,
                                mode: FillMode::Append,
                                input_messages: Vec::new(),
                                output_messages: Vec::new(),
                            });
                            trace.message_fills.len() - 1
                        });
                        let f = &mut trace.message_fills[fi];
                        // The id hashes the hashes of the fill's records, in order.
                        let h = match f.id.as_str() {
                            "" => record_hash,
                            _ => fnv1a(format!("{}:{record_hash:016x}", f.id).as_bytes()),
                        };
                        f.id = format!("{h:016x}");
                        if input {
                            f.input_messages.push(message);
                        } else {
                            f.output_messages.push(message);
                        }
                    }
                    Fill::Whole { input, output } => trace.message_fills.push(MessageFill {
                        id: fill_id(span_id, record_hash),
                        span_id,
                        mode: FillMode::Replace,
                        input_messages: input,
                        output_messages: output,
                    }),
                }
            }
        }
    }

    // The append fills carried their running hash; now they get their ids.
    for (&(ti, span_id), &fi) in &appends {
        let f = &mut traces[ti].message_fills[fi];
        let h = u64::from_str_radix(&f.id, 16).unwrap_or_default();
        f.id = fill_id(span_id, h);
    }
    let rejection_message = (rejected > 0).then(|| {
        let mut msg = format!("rejected {rejected} log record(s): {}", reasons.join("; "));
        let unnamed = rejected - reasons.len() as u64;
        if unnamed > 0 {
            msg.push_str(&format!("; and {unnamed} more"));
        }
        msg
    });
    MappedLogs {
        traces,
        rejected_log_records: rejected,
        rejection_message,
    }
}

fn fill_id(span_id: SpanId, hash: u64) -> String {
    format!("otlp-fill:{span_id}:{hash:016x}")
}

fn ids_of(rec: &OtlpLogRecord) -> Result<(TraceId, Option<SpanId>), String> {
    if rec.trace_id.is_empty() {
        return Err("log record has no trace id".into());
    }
    let arr: [u8; 16] = rec
        .trace_id
        .as_slice()
        .try_into()
        .map_err(|_| format!("trace id has {} bytes, expected 16", rec.trace_id.len()))?;
    let trace_id = TraceId::from_bytes(arr).ok_or("trace id is all zeros")?;
    let span_id = if rec.span_id.is_empty() {
        None
    } else {
        let arr: [u8; 8] = rec
            .span_id
            .as_slice()
            .try_into()
            .map_err(|_| format!("span id has {} bytes, expected 8", rec.span_id.len()))?;
        SpanId::from_bytes(arr)
    };
    Ok((trace_id, span_id))
}

fn event_name(rec: &OtlpLogRecord) -> Option<String> {
    if !rec.event_name.is_empty() {
        return Some(rec.event_name.clone());
    }
    Attrs::new(&rec.attributes).peek_first(&["event.name"], super::attrs::as_text)
}

fn severity(rec: &OtlpLogRecord) -> Severity {
    match rec.severity_number {
        n if (SeverityNumber::Trace as i32..=SeverityNumber::Debug4 as i32).contains(&n) => {
            Severity::Debug
        }
        n if (SeverityNumber::Info as i32..=SeverityNumber::Info4 as i32).contains(&n) => {
            Severity::Info
        }
        n if (SeverityNumber::Warn as i32..=SeverityNumber::Warn4 as i32).contains(&n) => {
            Severity::Warn
        }
        n if n >= SeverityNumber::Error as i32 => Severity::Error,
        _ => match rec.severity_text.to_ascii_lowercase().as_str() {
            "trace" | "debug" => Severity::Debug,
            "warn" | "warning" => Severity::Warn,
            "error" | "fatal" | "critical" => Severity::Error,
            _ => Severity::Info,
        },
    }
}

/// 64-bit FNV-1a: a stable hash (unlike `std`'s, which may change between releases) for
/// the idempotency key.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn log_event(
    rec: &OtlpLogRecord,
    span_id: Option<SpanId>,
    event_name: Option<&str>,
    scope_name: &str,
) -> MappedEvent<LogRecord> {
    let span_part = span_id.map_or_else(|| "-".to_string(), |s| s.to_string());
    let id = format!("otlp-log:{span_part}:{:016x}", fnv1a(&rec.encode_to_vec()));
    let nanos = match rec.time_unix_nano {
        0 => rec.observed_time_unix_nano,
        t => t,
    };
    let time = Timestamp::from_unix_nanos(i64::try_from(nanos).unwrap_or(i64::MAX));
    let body = rec.body.as_ref().and_then(|b| b.value.as_ref());
    let mut attributes = to_json_map(&rec.attributes);
    let message = match body {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        other => {
            if other.is_some() {
                attributes
                    .entry("body".to_string())
                    .or_insert_with(|| to_json(other));
            }
            event_name.unwrap_or("log").to_string()
        }
    };
    let mut add = |k: &str, v: &str| {
        if !v.is_empty() {
            attributes.entry(k.to_string()).or_insert_with(|| json!(v));
        }
    };
    add("otel.event_name", event_name.unwrap_or(""));
    add("otel.severity_text", &rec.severity_text);
    add("otel.scope.name", scope_name);
    MappedEvent {
        id,
        time,
        record: LogRecord {
            span_id,
            severity: severity(rec),
            message,
            attributes,
        },
    }
}

enum Fill {
    /// One message of a call.
    One { input: bool, message: Message },
    /// A whole call.
    Whole {
        input: Vec<Message>,
        output: Vec<Message>,
    },
}

/// The messages a GenAI event carries, if it is one.
fn genai_fill(rec: &OtlpLogRecord, name: &str) -> Option<Fill> {
    let body = rec
        .body
        .as_ref()
        .and_then(|b| b.value.as_ref())
        .map(as_json)
        .unwrap_or(Value::Null);
    let one = |role: &str, input: bool| {
        let body = match &body {
            Value::Object(_) => body.clone(),
            Value::String(s) => json!({ "content": s }),
            _ => json!({}),
        };
        genai_message(&body, role).map(|message| Fill::One { input, message })
    };
    match name {
        "gen_ai.system.message" => one("system", true),
        "gen_ai.user.message" => one("user", true),
        "gen_ai.assistant.message" => one("assistant", true),
        "gen_ai.tool.message" => one("tool", true),
        "gen_ai.choice" => {
            let message = body.get("message").cloned().unwrap_or(json!({}));
            genai_message(&message, "assistant").map(|message| Fill::One {
                input: false,
                message,
            })
        }
        OPERATION_DETAILS_EVENT => {
            let a = Attrs::new(&rec.attributes);
            let messages = |key: &str, role: &str| {
                a.get(key)
                    .map(as_json)
                    .and_then(|v| genai_messages_of(&v, role))
                    .unwrap_or_default()
            };
            let mut input = messages("gen_ai.input.messages", "user");
            if let Some(system) = a.get("gen_ai.system_instructions").map(as_json) {
                let content = match system {
                    Value::Array(parts) => {
                        genai_message(&json!({"role": "system", "parts": parts}), "system")
                            .and_then(|m| m.content)
                    }
                    Value::String(s) => Some(s),
                    _ => None,
                };
                if content.is_some() {
                    input.insert(
                        0,
                        Message {
                            role: "system".into(),
                            content,
                            ..Message::default()
                        },
                    );
                }
            }
            let output = messages("gen_ai.output.messages", "assistant");
            (!input.is_empty() || !output.is_empty()).then_some(Fill::Whole { input, output })
        }
        _ => None,
    }
}
