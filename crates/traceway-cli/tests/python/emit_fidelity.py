"""Emits, through the real OpenTelemetry Python SDK and its OTLP/HTTP exporters, the two
runs of issue 11 that need a real SDK to be honest:

1. An agent service called with an incoming `traceparent`: its root span is an
   OpenInference AGENT span (kinds and attribute names from the
   `openinference-semantic-conventions` package) whose parent is the caller's span, in
   another process. The SDK exports it with `Span.flags` 0x300 (parent is remote). The
   span sets no `agent.name`, as no OpenInference framework does; a TOOL child carries its
   arguments in `input.value` and its schema in `tool.parameters`, and a PROMPT span
   renders a template. Inside it, the real OpenInference OpenAI instrumentation
   (`openinference-instrumentation-openai`) records two chat calls of the real `openai`
   client to a fake model served by this script on loopback: the first answers with a
   tool call, the second gets the tool's result (a `tool` message with its call id).
2. A GenAI LLM call captured `event_only`: the chat span carries no messages; the prompt
   and completion go out as OTLP log records (`gen_ai.system.message`,
   `gen_ai.user.message`, `gen_ai.choice` and one
   `gen_ai.client.inference.operation.details`) emitted in the span's context, exported by
   the SDK's OTLP/HTTP log exporter to `/v1/logs`. The records are emitted through the SDK's
   logs API as the GenAI instrumentations emit them (no instrumented client library runs).

Prints {"remote": "<trace id>", "caller_span": "<span id>", "events": "<trace id>",
"llm_span": "<span id>"} on stdout. Exits non-zero when any export failed.
"""

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from openinference.semconv.trace import OpenInferenceSpanKindValues, SpanAttributes
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.propagate import extract
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import LogRecordExportResult, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult


class FakeModel(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint: a tool call first, then an answer once the
    request carries the tool's result."""

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))))
        if any(m.get("role") == "tool" for m in request.get("messages", [])):
            message = {"role": "assistant", "content": "It is rainy in Paris."}
            finish, usage = "stop", (40, 6)
        else:
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})}}
                ],
            }
            finish, usage = "tool_calls", (21, 7)
        body = json.dumps({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [{"index": 0, "finish_reason": finish, "message": message}],
            "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)},
        }).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def chat_with_tool(provider):
    """Two chat calls of the real openai client, instrumented by OpenInference."""
    from openinference.instrumentation.openai import OpenAIInstrumentor

    server = HTTPServer(("127.0.0.1", 0), FakeModel)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    OpenAIInstrumentor().instrument(tracer_provider=provider)
    import openai

    client = openai.OpenAI(
        api_key="test", base_url=f"http://127.0.0.1:{server.server_port}/v1", max_retries=0, timeout=10
    )
    tools = [{"type": "function", "function": {"name": "get_weather",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=tools)
    call = first.choices[0].message.tool_calls[0]
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "function", "function": {"name": call.function.name, "arguments": call.function.arguments}}
        ]},
        {"role": "tool", "tool_call_id": call.id, "content": "rainy"},
    ]
    client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=tools)
    server.shutdown()


class Counting:
    """Wraps an exporter and counts failed exports."""

    def __init__(self, inner, ok):
        self.inner, self.ok, self.failures = inner, ok, 0

    def export(self, batch):
        result = self.inner.export(batch)
        if result != self.ok:
            self.failures += 1
        return result

    def __getattr__(self, name):
        return getattr(self.inner, name)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--tenant", required=True)
    args = p.parse_args()
    base = args.endpoint.rstrip("/")
    headers = {"x-traceway-tenant": args.tenant}
    resource = Resource.create(
        {"service.name": "fidelity-agent", "service.version": "2.3.4", "deployment.environment.name": "test"}
    )

    spans = Counting(OTLPSpanExporter(endpoint=base + "/v1/traces", headers=headers, timeout=10), SpanExportResult.SUCCESS)
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracer = provider.get_tracer("openinference.instrumentation.fidelity", "1.0.0")

    logs = Counting(OTLPLogExporter(endpoint=base + "/v1/logs", headers=headers, timeout=10), LogRecordExportResult.SUCCESS)
    log_provider = LoggerProvider(resource=resource)
    log_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    logger = log_provider.get_logger("opentelemetry.instrumentation.genai.fidelity", "1.0.0")

    kind = SpanAttributes.OPENINFERENCE_SPAN_KIND

    # 1. The caller's context arrives as a W3C traceparent header.
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    incoming = extract({"traceparent": f"00-{caller_trace}-{caller_span}-01"})
    with tracer.start_as_current_span(
        "research_agent",
        context=incoming,
        kind=trace.SpanKind.SERVER,
        attributes={kind: OpenInferenceSpanKindValues.AGENT.value, SpanAttributes.INPUT_VALUE: "Find the refund policy."},
    ):
        with tracer.start_as_current_span(
            "render_prompt", attributes={kind: OpenInferenceSpanKindValues.PROMPT.value}
        ):
            pass
        with tracer.start_as_current_span(
            "search_docs",
            attributes={
                kind: OpenInferenceSpanKindValues.TOOL.value,
                SpanAttributes.TOOL_NAME: "search_docs",
                SpanAttributes.TOOL_PARAMETERS: json.dumps(
                    {"type": "object", "properties": {"query": {"type": "string"}}}
                ),
                SpanAttributes.INPUT_VALUE: json.dumps({"query": "refund policy"}),
                SpanAttributes.INPUT_MIME_TYPE: "application/json",
                SpanAttributes.OUTPUT_VALUE: "3 documents",
            },
        ):
            pass
        chat_with_tool(provider)

    # 2. An LLM call captured event_only: messages only in log records.
    with tracer.start_as_current_span(
        "chat gpt-4o-mini",
        kind=trace.SpanKind.CLIENT,
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.input_tokens": 21,
            "gen_ai.usage.output_tokens": 7,
        },
    ) as llm:
        ctx = otel_context.get_current()
        common = {"gen_ai.provider.name": "openai"}
        logger.emit(event_name="gen_ai.system.message", context=ctx, severity_number=SeverityNumber.INFO,
                    body={"content": "You answer briefly."}, attributes=common)
        logger.emit(event_name="gen_ai.user.message", context=ctx, severity_number=SeverityNumber.INFO,
                    body={"content": "What is the refund window?"}, attributes=common)
        logger.emit(event_name="gen_ai.choice", context=ctx, severity_number=SeverityNumber.INFO,
                    body={"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "30 days."}},
                    attributes=common)
        logger.emit(
            event_name="gen_ai.client.inference.operation.details",
            context=ctx,
            severity_number=SeverityNumber.INFO,
            attributes={
                **common,
                "gen_ai.operation.name": "chat",
                "gen_ai.input.messages": json.dumps(
                    [{"role": "user", "parts": [{"type": "text", "content": "What is the refund window?"}]}]
                ),
                "gen_ai.output.messages": json.dumps(
                    [{"role": "assistant", "parts": [{"type": "text", "content": "30 days."}], "finish_reason": "stop"}]
                ),
            },
        )
        events_trace = format(llm.get_span_context().trace_id, "032x")
        llm_span = format(llm.get_span_context().span_id, "016x")

    provider.shutdown()
    log_provider.shutdown()
    if spans.failures or logs.failures:
        print(f"exports failed: spans {spans.failures}, logs {logs.failures}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps({"remote": caller_trace, "caller_span": caller_span, "events": events_trace, "llm_span": llm_span}))


if __name__ == "__main__":
    main()
