"""Emits two agent traces through a real OpenTelemetry SDK and OTLP exporter.

Used by the end-to-end test `real_otel_sdks_export_agent_traces_over_http_and_grpc`
(crates/traceway-server/tests/it/e2e.rs), which reads the traces back over the REST API.

    python emit_agent_traces.py --protocol http --endpoint http://127.0.0.1:4318 --tenant t1
    python emit_agent_traces.py --protocol grpc --endpoint http://127.0.0.1:4317 --tenant t1

1. An OpenInference agent run (the attributes OpenInference instrumentations write):
   agent root -> chain "plan" -> llm; retriever with three documents; tool; a guardrail
   that raises (an error span in a run that still completes). `session.id` and `user.id`
   are on every span, as OpenInference's `using_session`/`using_user` put them. The
   children are flushed before the root ends, so the server sees the trace before its
   root, as it does with a long-running agent.
2. A GenAI-conventions agent run (OTel `gen_ai.*`): invoke_agent root -> chat, retrieval,
   embeddings, execute_tool that times out; the root ends with status error.

Prints {"openinference": "<trace id>", "genai": "<trace id>"} on stdout. Exits non-zero
when any export failed.
"""

import argparse
import json
import sys

import grpc
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Status, StatusCode


class Recording(SpanExporter):
    """Delegates to the real exporter and remembers whether every export succeeded."""

    def __init__(self, inner):
        self.inner = inner
        self.failures = 0
        self.exported = 0

    def export(self, spans):
        result = self.inner.export(spans)
        if result == SpanExportResult.SUCCESS:
            self.exported += len(spans)
        else:
            self.failures += 1
        return result

    def shutdown(self):
        self.inner.shutdown()

    def force_flush(self, timeout_millis=30000):
        return self.inner.force_flush(timeout_millis)


def exporter(protocol, endpoint, tenant):
    headers = {"x-traceway-tenant": tenant}
    if protocol == "http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces", headers=headers, timeout=10)
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(
        endpoint=endpoint,
        insecure=True,
        headers=headers,
        compression=grpc.Compression.Gzip,
        timeout=10,
    )


def hex_id(span):
    return format(span.get_span_context().trace_id, "032x")


def openinference_run(provider, protocol):
    tracer = provider.get_tracer("openinference.instrumentation.test", "1.0.0")
    context = {"session.id": f"sess-{protocol}", "user.id": "user-7"}

    def span(name, **attributes):
        return tracer.start_as_current_span(name, attributes={**context, **attributes})

    with span(
        "support_agent",
        **{
            "openinference.span.kind": "AGENT",
            "agent.name": "support-agent",
            "input.value": "Can I get a refund for order 1234?",
            "customer.tier": "gold",
        },
    ) as root:
        with span("plan", **{"openinference.span.kind": "CHAIN"}):
            with span(
                "ChatCompletion",
                **{
                    "openinference.span.kind": "LLM",
                    "llm.model_name": "gpt-4o-mini",
                    "llm.provider": "openai",
                    "llm.token_count.prompt": 120,
                    "llm.token_count.completion": 35,
                    "llm.token_count.total": 155,
                    "llm.input_messages.0.message.role": "system",
                    "llm.input_messages.0.message.content": "You are a support agent.",
                    "llm.input_messages.1.message.role": "user",
                    "llm.input_messages.1.message.content": "Can I get a refund for order 1234?",
                    "llm.output_messages.0.message.role": "assistant",
                    "llm.output_messages.0.message.content": "Let me check the policy.",
                },
            ):
                pass
        docs = {}
        for i, (doc_id, score, content) in enumerate(
            [
                ("policy-7#2", 0.92, "Refunds are possible within 30 days."),
                ("policy-7#3", 0.81, "Keep the receipt."),
                ("faq-12", 0.40, "Digital goods are not refundable once downloaded."),
            ]
        ):
            docs[f"retrieval.documents.{i}.document.id"] = doc_id
            docs[f"retrieval.documents.{i}.document.score"] = score
            docs[f"retrieval.documents.{i}.document.content"] = content
        with span("search_policies", **{"openinference.span.kind": "RETRIEVER", "input.value": "refund policy"}, **docs):
            pass
        with span(
            "lookup_order",
            **{
                "openinference.span.kind": "TOOL",
                "tool.name": "get_order",
                # OpenInference: the schema in tool.parameters, the call's arguments in input.value.
                "tool.parameters": json.dumps(
                    {"type": "object", "properties": {"order_id": {"type": "string"}}}
                ),
                "input.value": json.dumps({"order_id": "1234"}),
                "input.mime_type": "application/json",
                "output.value": json.dumps({"status": "delivered", "total": 59.9}),
                "output.mime_type": "application/json",
            },
        ):
            pass
        with span("pii_check", **{"openinference.span.kind": "GUARDRAIL"}) as guard:
            guard.record_exception(ValueError("email address in the answer"))
            guard.set_status(Status(StatusCode.ERROR, "email address in the answer"))
        # The children reach the server before the root, as with a long-running agent.
        provider.force_flush()
        root.set_attribute("output.value", "Yes, within 30 days.")
        trace_id = hex_id(root)
    return trace_id


def genai_run(provider, protocol):
    tracer = provider.get_tracer("gen_ai.test", "1.0.0")
    with tracer.start_as_current_span(
        "invoke_agent travel-planner",
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "travel-planner",
            "gen_ai.conversation.id": f"conv-{protocol}",
            "gen_ai.provider.name": "anthropic",
        },
    ) as root:
        with tracer.start_as_current_span(
            "chat claude-sonnet-4",
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "anthropic",
                "gen_ai.request.model": "claude-sonnet-4",
                "gen_ai.response.model": "claude-sonnet-4-20250514",
                "gen_ai.usage.input_tokens": 200,
                "gen_ai.usage.output_tokens": 50,
                "gen_ai.input.messages": json.dumps(
                    [{"role": "user", "parts": [{"type": "text", "content": "Weather in Paris?"}]}]
                ),
                "gen_ai.output.messages": json.dumps(
                    [{"role": "assistant", "parts": [{"type": "text", "content": "Checking the weather."}]}]
                ),
            },
        ):
            pass
        with tracer.start_as_current_span(
            "retrieval guides",
            attributes={
                "gen_ai.operation.name": "retrieval",
                "gen_ai.retrieval.query.text": "paris in spring",
                "gen_ai.retrieval.documents": json.dumps(
                    [{"id": "guide-1", "score": 0.88}, {"id": "guide-2", "score": 0.5}]
                ),
            },
        ):
            pass
        with tracer.start_as_current_span(
            "embeddings text-embedding-3-small",
            attributes={
                "gen_ai.operation.name": "embeddings",
                "gen_ai.request.model": "text-embedding-3-small",
                "gen_ai.usage.input_tokens": 8,
            },
        ):
            pass
        with tracer.start_as_current_span(
            "execute_tool get_weather",
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "get_weather",
                "gen_ai.tool.call.arguments": json.dumps({"city": "Paris"}),
            },
        ) as tool:
            tool.record_exception(TimeoutError("weather service timed out"))
            tool.set_status(Status(StatusCode.ERROR, "weather service timed out"))
        root.set_status(Status(StatusCode.ERROR, "agent gave up"))
        trace_id = hex_id(root)
    return trace_id


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--protocol", choices=["http", "grpc"], required=True)
    p.add_argument("--endpoint", required=True)
    p.add_argument("--tenant", default="default")
    args = p.parse_args()

    rec = Recording(exporter(args.protocol, args.endpoint, args.tenant))
    provider = TracerProvider(resource=Resource.create({"service.name": f"agents-{args.protocol}"}))
    provider.add_span_processor(BatchSpanProcessor(rec))
    ids = {
        "openinference": openinference_run(provider, args.protocol),
        "genai": genai_run(provider, args.protocol),
    }
    provider.force_flush()
    provider.shutdown()
    if rec.failures or rec.exported != 11:
        print(f"exports failed: {rec.failures} failures, {rec.exported} spans exported", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(ids))


if __name__ == "__main__":
    main()
