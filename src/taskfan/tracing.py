"""W3C trace context as Taskfan carries it: one trace per batch, started by Dapr where the batch is published.

The publishing sidecar puts the trace's ``traceparent`` into the CloudEvent; the workflow's intake starts the
batch's workflow under it, the workflow hands it to each chunk, and each step call sends it on, so every
sidecar's spans for the batch (publish, delivery, workflow, activities, each step app) share one trace id.
"""

from __future__ import annotations

import re

_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")


def traceparent_in(event: object) -> str | None:
    """The valid ``traceparent`` of a CloudEvent (a parsed JSON object), else None."""
    value = event.get("traceparent") if isinstance(event, dict) else None
    return value.strip() if isinstance(value, str) and trace_id_of(value) else None


def trace_id_of(traceparent: object) -> str | None:
    """The trace id of a W3C ``traceparent`` (``00-<32 hex>-<16 hex>-<2 hex>``); None if it is not one."""
    found = _TRACEPARENT.fullmatch(traceparent.strip()) if isinstance(traceparent, str) else None
    if found is None or set(found.group(1)) == {"0"} or set(found.group(2)) == {"0"}:
        return None
    return found.group(1)
