"""Durable workflow trace context for Traceway (a drop-in for dapr-agents' context storage)."""

from .context_storage import (  # noqa: F401
    configure,
    store_workflow_context,
    get_workflow_context,
    cleanup_workflow_context,
    get_context_storage_stats,
    create_resumed_workflow_context,
)
