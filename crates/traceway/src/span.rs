//! Steps: the builder that starts them and the guard that ends them.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;

use serde_json::{Map, Value};
use traceway_core::trace_context::TraceFlags;
use traceway_core::{
    Document, ErrorRecord, EventInput, LlmDetails, LogRecord, Message, RetrievalDetails, Severity,
    SpanId, SpanInput, SpanKind, SpanStatus, StatusCode, Timestamp, ToolDetails, TraceId,
};

use crate::completion::Collector;
use crate::context::{self, SpanContext};
use crate::tracer::Tracer;

/// An attribute value. Static strings are kept borrowed, so setting one costs no
/// allocation on the caller's thread; the JSON is made by the exporter.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// A string.
    Str(Cow<'static, str>),
    /// An integer.
    I64(i64),
    /// A float.
    F64(f64),
    /// A boolean.
    Bool(bool),
    /// Any JSON.
    Json(Value),
}

impl AttrValue {
    pub(crate) fn to_json(&self) -> Value {
        match self {
            AttrValue::Str(s) => Value::String(s.to_string()),
            AttrValue::I64(v) => Value::from(*v),
            AttrValue::F64(v) => Value::from(*v),
            AttrValue::Bool(v) => Value::Bool(*v),
            AttrValue::Json(v) => v.clone(),
        }
    }
}

impl From<&'static str> for AttrValue {
    fn from(v: &'static str) -> Self {
        AttrValue::Str(Cow::Borrowed(v))
    }
}
impl From<String> for AttrValue {
    fn from(v: String) -> Self {
        AttrValue::Str(Cow::Owned(v))
    }
}
impl From<i64> for AttrValue {
    fn from(v: i64) -> Self {
        AttrValue::I64(v)
    }
}
impl From<i32> for AttrValue {
    fn from(v: i32) -> Self {
        AttrValue::I64(v as i64)
    }
}
impl From<u64> for AttrValue {
    fn from(v: u64) -> Self {
        i64::try_from(v).map_or(AttrValue::F64(v as f64), AttrValue::I64)
    }
}
impl From<u16> for AttrValue {
    fn from(v: u16) -> Self {
        AttrValue::I64(v as i64)
    }
}
impl From<f64> for AttrValue {
    fn from(v: f64) -> Self {
        AttrValue::F64(v)
    }
}
impl From<bool> for AttrValue {
    fn from(v: bool) -> Self {
        AttrValue::Bool(v)
    }
}
impl From<Value> for AttrValue {
    fn from(v: Value) -> Self {
        AttrValue::Json(v)
    }
}

/// What the tracer keeps of a step until it is exported.
#[derive(Debug, Clone)]
pub(crate) struct SpanData {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent: Option<SpanId>,
    /// The first span of a trace made in this process (no parent, not continued from a
    /// caller): its end ends the trace.
    pub trace_root: bool,
    pub kind: SpanKind,
    pub name: Cow<'static, str>,
    pub component: Option<String>,
    pub start: Timestamp,
    pub end: Option<Timestamp>,
    pub status: SpanStatus,
    pub input: Option<Value>,
    pub output: Option<Value>,
    pub llm: Option<Box<LlmDetails>>,
    pub tool: Option<Box<ToolDetails>>,
    pub retrieval: Option<Box<RetrievalDetails>>,
    pub attributes: Vec<(Cow<'static, str>, AttrValue)>,
    /// Links to other spans (a resumed workflow's stored parent).
    pub links: Vec<traceway_core::Link>,
}

impl SpanData {
    /// The span as the native API takes it.
    pub fn to_input(&self, service: Option<&str>) -> SpanInput {
        let mut attributes = Map::new();
        for (k, v) in &self.attributes {
            attributes.insert(k.to_string(), v.to_json());
        }
        SpanInput {
            span_id: self.span_id,
            parent_span_id: self.parent,
            kind: Some(self.kind),
            name: Some(self.name.to_string()),
            component_id: self.component.clone(),
            service: service.map(str::to_string),
            start_time: Some(self.start),
            end_time: self.end,
            status: (self.status.code != StatusCode::Unset || self.status.message.is_some())
                .then(|| self.status.clone()),
            input: self.input.clone(),
            output: self.output.clone(),
            llm: self.llm.as_deref().cloned(),
            tool: self.tool.as_deref().cloned(),
            retrieval: self.retrieval.as_deref().cloned(),
            attributes,
            links: self.links.clone(),
        }
    }

    /// The span as the model (and the formatter) shows it.
    pub fn to_span(&self, service: Option<&str>) -> traceway_core::Span {
        let i = self.to_input(service);
        traceway_core::Span {
            span_id: i.span_id,
            parent_span_id: i.parent_span_id,
            kind: self.kind,
            name: self.name.to_string(),
            component_id: i.component_id,
            service: i.service,
            start_time: self.start,
            end_time: self.end,
            status: self.status.clone(),
            input: i.input,
            output: i.output,
            llm: i.llm,
            tool: i.tool,
            retrieval: i.retrieval,
            attributes: i.attributes,
            links: i.links,
        }
    }
}

/// Starts a step. Made by [`Tracer::span`] or one of its shorthands ([`Tracer::llm`],
/// [`Tracer::tool`], …); nothing is recorded until [`SpanBuilder::start`].
#[must_use = "a step is recorded only once started"]
pub struct SpanBuilder {
    tracer: Tracer,
    data: Box<SpanData>,
    parent: Parent,
}

enum Parent {
    Current,
    Explicit(SpanContext),
    NewTrace,
}

impl SpanBuilder {
    pub(crate) fn new(tracer: Tracer, kind: SpanKind, name: Cow<'static, str>) -> SpanBuilder {
        SpanBuilder {
            tracer,
            data: Box::new(SpanData {
                // Filled at start.
                trace_id: TraceId::from_u128(1).expect("non-zero"),
                span_id: SpanId::from_u64(1).expect("non-zero"),
                parent: None,
                trace_root: false,
                kind,
                name,
                component: None,
                start: Timestamp::from_unix_nanos(0),
                end: None,
                status: SpanStatus::default(),
                input: None,
                output: None,
                llm: None,
                tool: None,
                retrieval: None,
                attributes: Vec::new(),
                links: Vec::new(),
            }),
            parent: Parent::Current,
        }
    }

    /// Makes the step a child of `parent` instead of the current span.
    pub fn parent(mut self, parent: &SpanContext) -> Self {
        self.parent = Parent::Explicit(parent.clone());
        self
    }

    /// Makes the step a child of `parent` (a handle), instead of the current span.
    pub fn child_of(self, parent: &Span) -> Self {
        let ctx = parent.context();
        self.parent(&ctx)
    }

    /// Starts a new trace even inside a current span.
    pub fn new_trace(mut self) -> Self {
        self.parent = Parent::NewTrace;
        self
    }

    /// A link to a span of this or another trace (OpenTelemetry span links).
    pub fn link(mut self, trace_id: TraceId, span_id: Option<SpanId>) -> Self {
        self.data.links.push(traceway_core::Link {
            trace_id,
            span_id,
            attributes: Default::default(),
        });
        self
    }

    /// Makes the step end its trace when it ends, as a trace's first step in a process
    /// does, even though it has a parent (a resumed workflow: the process that started
    /// the trace is gone).
    pub(crate) fn ends_trace(mut self) -> Self {
        self.data.trace_root = true;
        self
    }

    /// The component it belongs to (for filtering).
    pub fn component(mut self, id: impl Into<String>) -> Self {
        self.data.component = Some(id.into());
        self
    }

    /// An attribute, known at start.
    pub fn attribute(
        mut self,
        key: impl Into<Cow<'static, str>>,
        value: impl Into<AttrValue>,
    ) -> Self {
        self.data.attributes.push((key.into(), value.into()));
        self
    }

    /// The step's input.
    pub fn input(mut self, input: impl Into<Value>) -> Self {
        self.data.input = Some(input.into());
        self
    }

    /// The LLM's model.
    pub fn model(mut self, model: impl Into<String>) -> Self {
        llm(&mut self.data).model = Some(model.into());
        self
    }

    /// The LLM's provider (`openai`, `anthropic`, …).
    pub fn provider(mut self, provider: impl Into<String>) -> Self {
        llm(&mut self.data).provider = Some(provider.into());
        self
    }

    /// One prompt message.
    pub fn message(mut self, role: impl Into<String>, content: impl Into<String>) -> Self {
        llm(&mut self.data).input_messages.push(Message {
            role: role.into(),
            content: Some(content.into()),
            ..Default::default()
        });
        self
    }

    /// The tool's arguments (the tool's name defaults to the step's).
    pub fn arguments(mut self, arguments: impl Into<Value>) -> Self {
        tool(&mut self.data).arguments = Some(arguments.into());
        self
    }

    /// The retrieval's query.
    pub fn query(mut self, query: impl Into<String>) -> Self {
        retrieval(&mut self.data).query = Some(query.into());
        self
    }

    /// Records the start and returns the guard that ends the step.
    pub fn start(self) -> Span {
        let SpanBuilder {
            tracer,
            mut data,
            parent,
        } = self;
        let parent = match parent {
            Parent::Current => context::current(),
            Parent::Explicit(p) => Some(p),
            Parent::NewTrace => None,
        };
        let ctx = match parent {
            Some(p) => {
                data.trace_id = p.trace_id;
                data.parent = Some(p.span_id);
                SpanContext {
                    trace_id: p.trace_id,
                    span_id: SpanId::new_random(),
                    flags: p.flags,
                    state: p.state,
                    remote: false,
                    collector: p.collector,
                }
            }
            None => {
                data.trace_root = true;
                SpanContext {
                    trace_id: TraceId::new_v7(),
                    span_id: SpanId::new_random(),
                    flags: TraceFlags::SAMPLED,
                    state: None,
                    remote: false,
                    collector: None,
                }
            }
        };
        data.trace_id = ctx.trace_id;
        data.span_id = ctx.span_id;
        if data.kind == SpanKind::Tool {
            let name = data.name.to_string();
            tool(&mut data).name.get_or_insert(name);
        }
        data.start = Timestamp::now();
        tracer.record_start(&data);
        if let Some(c) = &ctx.collector {
            c.on_span(&data, tracer.service());
        }
        Span {
            tracer,
            data: Some(data),
            ctx,
        }
    }

    /// Starts the step with a collector attached (the middleware's root span).
    pub(crate) fn start_collecting(
        mut self,
        parent: Option<SpanContext>,
        collector: Option<Arc<Collector>>,
    ) -> Span {
        match parent {
            Some(p) => {
                self.parent = Parent::Explicit(SpanContext { collector, ..p });
                self.start()
            }
            None => {
                let mut span = self.new_trace().start();
                span.ctx.collector = collector;
                if let (Some(c), Some(d)) = (&span.ctx.collector, &span.data) {
                    c.on_span(d, span.tracer.service());
                }
                span
            }
        }
    }
}

fn llm(d: &mut SpanData) -> &mut LlmDetails {
    d.llm.get_or_insert_with(Default::default)
}
fn tool(d: &mut SpanData) -> &mut ToolDetails {
    d.tool.get_or_insert_with(Default::default)
}
fn retrieval(d: &mut SpanData) -> &mut RetrievalDetails {
    d.retrieval.get_or_insert_with(Default::default)
}

/// A running step. Ends with [`Span::end`]; dropped without it (an early return, a `?`,
/// a panic), it ends as an error that says so.
pub struct Span {
    tracer: Tracer,
    data: Option<Box<SpanData>>,
    ctx: SpanContext,
}

impl std::fmt::Debug for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Span")
            .field("trace_id", &self.ctx.trace_id)
            .field("span_id", &self.ctx.span_id)
            .finish()
    }
}

impl Span {
    /// This step's context: make children with it, hand it to spawned tasks, inject it
    /// into outgoing requests.
    pub fn context(&self) -> SpanContext {
        self.ctx.clone()
    }

    /// The trace id.
    pub fn trace_id(&self) -> TraceId {
        self.ctx.trace_id
    }

    /// The span id.
    pub fn span_id(&self) -> SpanId {
        self.ctx.span_id
    }

    /// Runs `fut` with this step as the current span, so steps started inside are its
    /// children.
    pub fn in_scope<F: Future>(&self, fut: F) -> impl Future<Output = F::Output> {
        self.context().scope(fut)
    }

    /// A child step of this one.
    pub fn child(&self, kind: SpanKind, name: impl Into<Cow<'static, str>>) -> SpanBuilder {
        SpanBuilder::new(self.tracer.clone(), kind, name.into()).parent(&self.ctx)
    }

    fn data(&mut self) -> &mut SpanData {
        self.data
            .as_mut()
            .expect("a span is only ended once, by value")
    }

    /// Sets an attribute.
    pub fn set_attribute(
        &mut self,
        key: impl Into<Cow<'static, str>>,
        value: impl Into<AttrValue>,
    ) {
        self.data().attributes.push((key.into(), value.into()));
    }

    /// Sets the output.
    pub fn set_output(&mut self, output: impl Into<Value>) {
        self.data().output = Some(output.into());
    }

    /// Marks the step as failed.
    pub fn set_error(&mut self, message: impl Into<String>) {
        self.data().status = SpanStatus {
            code: StatusCode::Error,
            message: Some(message.into()),
        };
    }

    /// Marks the step as succeeded (the default at [`Span::end`]).
    pub fn set_ok(&mut self) {
        self.data().status.code = StatusCode::Ok;
    }

    /// LLM token counts.
    pub fn set_tokens(&mut self, input: u64, output: u64) {
        let l = llm(self.data());
        l.input_tokens = Some(input);
        l.output_tokens = Some(output);
    }

    /// LLM cost in US dollars.
    pub fn set_cost_usd(&mut self, cost: f64) {
        llm(self.data()).cost_usd = Some(cost);
    }

    /// The LLM model (when known only from the answer).
    pub fn set_model(&mut self, model: impl Into<String>) {
        llm(self.data()).model = Some(model.into());
    }

    /// One completion message.
    pub fn add_output_message(&mut self, role: impl Into<String>, content: impl Into<String>) {
        llm(self.data()).output_messages.push(Message {
            role: role.into(),
            content: Some(content.into()),
            ..Default::default()
        });
    }

    /// The tool's result.
    pub fn set_result(&mut self, result: impl Into<Value>) {
        tool(self.data()).result = Some(result.into());
    }

    /// One retrieved document, in rank order.
    pub fn add_document(&mut self, id: impl Into<String>, score: f64, content: Option<String>) {
        retrieval(self.data()).documents.push(Document {
            id: Some(id.into()),
            score: Some(score),
            content,
            metadata: None,
        });
    }

    /// A log line attached to this step.
    pub fn log(&self, severity: Severity, message: impl Into<String>) {
        self.tracer.record_event(
            self.ctx.trace_id,
            EventInput::Log {
                id: Some(self.tracer.event_id()),
                time: Some(Timestamp::now()),
                record: LogRecord {
                    span_id: Some(self.ctx.span_id),
                    severity,
                    message: message.into(),
                    attributes: Map::new(),
                },
            },
        );
    }

    /// An error event attached to this step (the step's status is not changed; see
    /// [`Span::set_error`]).
    pub fn error(&self, error_type: Option<&str>, message: impl Into<String>) {
        self.tracer.record_event(
            self.ctx.trace_id,
            EventInput::Error {
                id: Some(self.tracer.event_id()),
                time: Some(Timestamp::now()),
                record: ErrorRecord {
                    span_id: Some(self.ctx.span_id),
                    error_type: error_type.map(str::to_string),
                    message: message.into(),
                    stacktrace: None,
                },
            },
        );
    }

    /// Ends the step now (status `ok` unless set otherwise).
    pub fn end(mut self) {
        self.finish(None);
    }

    fn finish(&mut self, dropped: Option<&'static str>) {
        let Some(mut data) = self.data.take() else {
            return;
        };
        data.end = Some(Timestamp::now());
        match dropped {
            Some(why) if data.status.code != StatusCode::Error => {
                data.status = SpanStatus {
                    code: StatusCode::Error,
                    message: Some(why.to_string()),
                }
            }
            None if data.status.code == StatusCode::Unset => data.status.code = StatusCode::Ok,
            _ => {}
        }
        if let Some(c) = &self.ctx.collector {
            c.on_span(&data, self.tracer.service());
        }
        self.tracer.record_end(data);
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        if self.data.is_some() {
            let why = if std::thread::panicking() {
                "panicked before the step ended"
            } else {
                "dropped without end() (an early return or an error)"
            };
            self.finish(Some(why));
        }
    }
}
