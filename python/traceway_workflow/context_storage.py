"""Workflow context storage backed by the Traceway server.

The same five functions as dapr-agents' ``context_storage.py``, so a dapr-agents user can
swap this module in: ``store_workflow_context``, ``get_workflow_context``,
``cleanup_workflow_context``, ``get_context_storage_stats`` and
``create_resumed_workflow_context``. dapr-agents keeps each instance's W3C context in a
thread-safe in-memory dict, which is empty after a restart; this module keeps it on the
server (``/api/v1/workflows/{instance}/context``), so a workflow resumed in another process
continues its original trace.

Settings come from ``configure(...)`` or the environment: ``TRACEWAY_ENDPOINT`` (default
``http://127.0.0.1:4318``), ``TRACEWAY_TENANT`` and ``TRACEWAY_API_KEY``.
"""

import os
import threading
import urllib.parse
from typing import Any, Dict, Optional

import requests
from opentelemetry import trace
from opentelemetry.trace import Link, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_lock = threading.Lock()
_settings: Dict[str, Optional[str]] = {}
_session = requests.Session()
_propagator = TraceContextTextMapPropagator()
_TIMEOUT = 10

# Context keys that are sent as fields; any other key of a context dict is metadata.
_FIELDS = ("traceparent", "tracestate", "agent")


def configure(endpoint: Optional[str] = None, tenant: Optional[str] = None,
              api_key: Optional[str] = None) -> None:
    """Sets the server, the tenant and the API key (otherwise read from the environment)."""
    with _lock:
        _settings.update({"endpoint": endpoint, "tenant": tenant, "api_key": api_key})


def _setting(name: str, env: str, default: Optional[str] = None) -> Optional[str]:
    with _lock:
        value = _settings.get(name)
    return value or os.environ.get(env) or default


def _request(method: str, path: str, **kwargs) -> requests.Response:
    base = _setting("endpoint", "TRACEWAY_ENDPOINT", "http://127.0.0.1:4318").rstrip("/")
    headers = {}
    tenant = _setting("tenant", "TRACEWAY_TENANT")
    if tenant:
        headers["x-traceway-tenant"] = tenant
    key = _setting("api_key", "TRACEWAY_API_KEY")
    if key:
        headers["authorization"] = f"Bearer {key}"
    return _session.request(method, base + path, headers=headers, timeout=_TIMEOUT, **kwargs)


def _path(instance_id: str) -> str:
    return f"/api/v1/workflows/{urllib.parse.quote(instance_id, safe='')}/context"


def _raise(resp: requests.Response) -> None:
    try:
        message = resp.json()["error"]["message"]
    except Exception:  # noqa: BLE001 - any non-JSON answer
        message = resp.text
    if resp.status_code == 400:
        raise ValueError(message)
    raise RuntimeError(f"traceway answered {resp.status_code}: {message}")


def store_workflow_context(instance_id: str, context: Dict[str, Any]) -> None:
    """Stores the W3C context of a workflow instance (``traceparent``, optional
    ``tracestate``; other string entries are kept as metadata). Raises ``ValueError``
    naming the field when the server refuses it."""
    body: Dict[str, Any] = {"traceparent": context.get("traceparent")}
    if context.get("tracestate"):
        body["tracestate"] = context["tracestate"]
    if context.get("agent"):
        body["agent"] = context["agent"]
    metadata = {k: str(v) for k, v in context.items()
                if k not in _FIELDS and k != "instance_id" and v is not None}
    if metadata:
        body["metadata"] = metadata
    resp = _request("PUT", _path(instance_id), json=body)
    if resp.status_code != 200:
        _raise(resp)


def get_workflow_context(instance_id: str) -> Optional[Dict[str, Any]]:
    """The stored context of an instance, or ``None``."""
    resp = _request("GET", _path(instance_id))
    if resp.status_code == 404:
        return None
    if resp.status_code != 200:
        _raise(resp)
    stored = resp.json()
    context: Dict[str, Any] = dict(stored.get("metadata") or {})
    context.update({k: stored[k] for k in ("instance_id", "traceparent", "tracestate", "agent")
                    if stored.get(k) is not None})
    return context


def cleanup_workflow_context(instance_id: str) -> None:
    """Forgets the context of an instance (nothing happens when none was stored)."""
    resp = _request("DELETE", _path(instance_id))
    if resp.status_code not in (204, 404):
        _raise(resp)


def get_context_storage_stats() -> Dict[str, Any]:
    """``{"total_contexts": n, "instance_ids": [...]}`` (the first page of ids)."""
    resp = _request("GET", "/api/v1/workflows")
    if resp.status_code != 200:
        _raise(resp)
    stats = resp.json()
    return {"total_contexts": stats["count"], "instance_ids": stats["instances"],
            "next_cursor": stats.get("next_cursor")}


def _reopen(trace_id_hex: str) -> None:
    """Asks the server to reopen the trace if its watchdog orphaned it (ADR 022)."""
    resp = _request("PATCH", f"/api/v1/traces/{trace_id_hex}",
                    json={"state": "RUNNING", "reason": "resumed"})
    if resp.status_code not in (200, 404, 409):
        _raise(resp)


def create_resumed_workflow_context(instance_id: str, agent_name: Optional[str] = None,
                                    tracer: Optional[trace.Tracer] = None) -> Dict[str, Any]:
    """Starts and ends the resumed workflow's span, ``{agent}.ToolCallingWorkflow`` with
    ``workflow.instance_id`` and ``workflow.resumed=true``, stores its context as the
    instance's context, and returns that context: the workflow's next steps continue from
    it (``TraceContextTextMapPropagator().extract(context)``).

    With a stored context, the span is a child of the stored span, in the same trace,
    linked to it. Without one, it is the root of a new trace that records that continuity
    was lost (``workflow.context_restored=false`` and an event)."""
    tracer = tracer or trace.get_tracer("traceway_workflow")
    agent = agent_name or "Agent"
    stored = get_workflow_context(instance_id)
    parent_ctx = _propagator.extract(carrier=stored) if stored else None
    parent_span = trace.get_current_span(parent_ctx).get_span_context() if stored else None
    continued = bool(parent_span and parent_span.is_valid)
    attributes = {"workflow.instance_id": instance_id, "workflow.resumed": True,
                  "workflow.context_restored": continued,
                  "openinference.span.kind": "AGENT"}
    if continued:
        _reopen(format(parent_span.trace_id, "032x"))
        span = tracer.start_span(f"{agent}.ToolCallingWorkflow", context=parent_ctx,
                                 links=[Link(parent_span)], attributes=attributes)
    else:
        from opentelemetry.context import Context
        span = tracer.start_span(f"{agent}.ToolCallingWorkflow", context=Context(),
                                 attributes=attributes)
        span.add_event("workflow.context_lost", {
            "message": f"no stored trace context for workflow instance {instance_id!r}: "
                       "resumed in a new trace, continuity with the original run was lost"})
    span.set_status(Status(StatusCode.OK))
    carrier: Dict[str, Any] = {}
    _propagator.inject(carrier, context=trace.set_span_in_context(span))
    span.end()
    carrier.update({"instance_id": instance_id, "agent": agent, "resumed": True,
                    "continued": continued})
    store_workflow_context(instance_id, carrier)
    return carrier
