"""Emits an agent run whose LLM call is recorded by the real OTel GenAI OpenAI
instrumentation (`opentelemetry-instrumentation-openai-v2`) in its `event_only` content
mode: the chat span carries no messages, the prompt and completion go out as an OTLP log
record (`gen_ai.client.inference.operation.details`) through the SDK's logs pipeline. The
real `openai` client calls a fake OpenAI-compatible model served by this script on
loopback. Spans and logs are exported over OTLP/HTTP to `--endpoint`.

The caller sets the instrumentation's environment (read when it is instrumented):
`OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental` and
`OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=event_only`.

`--order logs-first` exports each log record as it is emitted and the spans only at the
end (the log reaches the server before its span); `--order spans-first` exports each span
as it ends and the logs only at the end (the log arrives after its span ended).

Prints {"trace": "<trace id>"} on stdout. Exits non-zero when any export failed.
"""

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExportResult


class FakeModel(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint that answers from the last user message."""

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))))
        question = [m for m in request.get("messages", []) if m.get("role") == "user"][-1]["content"]
        body = json.dumps({
            "id": "chatcmpl-genai", "object": "chat.completion", "created": 1,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": f"Answer to: {question}"}}],
            "usage": {"prompt_tokens": 17, "completion_tokens": 5, "total_tokens": 22},
        }).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


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
    p.add_argument("--order", choices=["logs-first", "spans-first"], required=True)
    args = p.parse_args()
    base = args.endpoint.rstrip("/")
    headers = {"x-traceway-tenant": args.tenant}
    resource = Resource.create({"service.name": "genai-events-agent"})
    logs_first = args.order == "logs-first"

    spans = Counting(OTLPSpanExporter(endpoint=base + "/v1/traces", headers=headers, timeout=10), SpanExportResult.SUCCESS)
    provider = TracerProvider(resource=resource)
    # A batch processor with a long delay holds its signal until the flush at the end.
    provider.add_span_processor(
        BatchSpanProcessor(spans, schedule_delay_millis=60_000) if logs_first else SimpleSpanProcessor(spans)
    )
    logs = Counting(OTLPLogExporter(endpoint=base + "/v1/logs", headers=headers, timeout=10), LogRecordExportResult.SUCCESS)
    log_provider = LoggerProvider(resource=resource)
    log_provider.add_log_record_processor(
        SimpleLogRecordProcessor(logs) if logs_first else BatchLogRecordProcessor(logs, schedule_delay_millis=60_000)
    )

    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    OpenAIInstrumentor().instrument(tracer_provider=provider, logger_provider=log_provider)
    import openai

    server = HTTPServer(("127.0.0.1", 0), FakeModel)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = openai.OpenAI(
        api_key="test", base_url=f"http://127.0.0.1:{server.server_port}/v1", max_retries=0, timeout=10
    )
    tracer = provider.get_tracer("genai.events.agent", "1.0.0")
    with tracer.start_as_current_span("support_agent", attributes={"gen_ai.operation.name": "invoke_agent"}) as root:
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[
                {"role": "system", "content": "You answer briefly."},
                {"role": "user", "content": f"What is the refund window ({args.order})?"},
            ],
        )
        trace_id = format(root.get_span_context().trace_id, "032x")
    server.shutdown()

    # Whichever pipeline batches is flushed last, so the order holds.
    if logs_first:
        provider.shutdown()
        log_provider.shutdown()
    else:
        provider.shutdown()
        log_provider.force_flush()
        log_provider.shutdown()
    if spans.failures or logs.failures:
        print(f"exports failed: spans {spans.failures}, logs {logs.failures}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps({"trace": trace_id}))


if __name__ == "__main__":
    main()
