"""One process of a durable workflow with the real OpenTelemetry Python SDK, for the
restart tests: ``start`` (or ``start-open``, which leaves the workflow's span open) records a workflow and two steps, stores the context, prints
``READY <trace_id> <span_id>`` and waits to be killed; ``resume`` resumes it with
``create_resumed_workflow_context``, records two steps and prints
``RESUMED <trace_id> <span_id> <continued>``.

    python workflow_process.py start|resume ENDPOINT TENANT INSTANCE AGENT
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from opentelemetry import trace  # noqa: E402
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator  # noqa: E402

from traceway_workflow import context_storage as cs  # noqa: E402


def main() -> None:
    mode, endpoint, tenant, instance, agent = sys.argv[1:6]
    cs.configure(endpoint=endpoint, tenant=tenant)
    provider = TracerProvider(resource=Resource.create({"service.name": f"{agent}-py"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(
        endpoint=f"{endpoint}/v1/traces", headers={"x-traceway-tenant": tenant})))
    tracer = provider.get_tracer("workflow_process")
    if mode in ("start", "start-open"):
        run = tracer.start_span(f"{agent}.ToolCallingWorkflow",
                                attributes={"workflow.instance_id": instance,
                                            "openinference.span.kind": "AGENT"})
        ctx = trace.set_span_in_context(run)
        for step in ("plan", "fetch_order"):
            tracer.start_span(step, context=ctx,
                              attributes={"openinference.span.kind": "TOOL"}).end()
        carrier = {}
        TraceContextTextMapPropagator().inject(carrier, context=ctx)
        carrier["agent"] = agent
        cs.store_workflow_context(instance, carrier)
        # The OpenTelemetry SDK exports a span only once it ends: the first run's span
        # ends here (as a workflow task's does), so the stored parent is on the server
        # when the process dies.
        # (`start-open` leaves it open: the trace then goes idle and the watchdog orphans it.)
        if mode == "start":
            run.end()
        provider.force_flush()
        sc = run.get_span_context()
        print(f"READY {sc.trace_id:032x} {sc.span_id:016x}", flush=True)
        while True:
            time.sleep(3600)
    elif mode == "resume":
        resumed = cs.create_resumed_workflow_context(instance, agent, tracer=tracer)
        ctx = TraceContextTextMapPropagator().extract(carrier=resumed)
        for step in ("refund", "notify_customer"):
            tracer.start_span(step, context=ctx,
                              attributes={"openinference.span.kind": "TOOL"}).end()
        provider.force_flush()
        parent = trace.get_current_span(ctx).get_span_context()
        print(f"RESUMED {parent.trace_id:032x} {parent.span_id:016x} "
              f"{str(resumed['continued']).lower()}", flush=True)
        stats = cs.get_context_storage_stats()
        assert stats["total_contexts"] >= 1 and instance in stats["instance_ids"], stats
        cs.cleanup_workflow_context(instance)
        assert cs.get_workflow_context(instance) is None
        provider.shutdown()
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
