"""Calls from the workflow's activities to the step apps, through Dapr service invocation only.

The calls go to our own sidecar's invocation HTTP API over pooled keep-alive connections: the SDK's
HTTP invocation opens a new connection per call (and its gRPC invocation is deprecated), and on
the hot path the pool is what matters (~500 -> ~860 tasks/s, measured).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence

import aiohttp
from dapr.conf import settings
from pydantic import BaseModel, ValidationError

from taskfan.contracts import StepAnswer

log = logging.getLogger(__name__)

# A step app that cannot be reached (a replica crashed or is restarting) is asked again for about
# 15 s before the call counts as a failed attempt: Dapr's resiliency retries do not cover a gRPC
# app's "unavailable" answer. Step calls are pure functions of their input, so repeating is safe.
UNREACHABLE_RETRY_DELAYS_S = (0.25, 0.5, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 3.0)
UNREACHABLE_STATUSES = {502, 503, 504}

_session: aiohttp.ClientSession | None = None


def _sidecar() -> aiohttp.ClientSession:
    # Created on first use, inside the worker's event loop that runs async activities.
    global _session
    if _session is None:
        headers = {"dapr-api-token": settings.DAPR_API_TOKEN} if settings.DAPR_API_TOKEN else {}
        _session = aiohttp.ClientSession(
            base_url=f"http://{settings.DAPR_RUNTIME_HOST}:{settings.DAPR_HTTP_PORT}",
            # No total timeout: when scoring is the bottleneck a call legitimately waits in the scorer's
            # queue. Only opening a socket is bounded; waiting for a pooled connection is not.
            headers=headers, timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
            connector=aiohttp.TCPConnector(limit=256),
        )
    return _session


async def invoke(app_id: str, method: str, tasks: Sequence[BaseModel]) -> list[StepAnswer]:
    """One step call for ``tasks``; a failed call gives every task an answer with an ``error``."""
    payload = [task.model_dump(mode="json") for task in tasks]
    for delay in (*UNREACHABLE_RETRY_DELAYS_S, None):
        answers, error, unreachable = await call(app_id, method, payload)
        if answers is not None:
            return answers
        if not unreachable or delay is None:
            break
        await asyncio.sleep(delay)
    log.warning("step call failed", extra={"app_id": app_id, "method": method, "tasks": len(tasks), "error": error})
    return [StepAnswer(task_id=t["task_id"], error=error) for t in payload]


async def call(app_id: str, method: str,
               tasks: list[dict[str, object]]) -> tuple[list[StepAnswer] | None, str, bool]:
    """(answers, "", False), or (None, error, whether the app was unreachable)."""
    # UTF-8 as it is: task text of any script costs its own size, not six bytes a character.
    body = json.dumps({"tasks": tasks}, ensure_ascii=False).encode()
    try:
        async with _sidecar().post(f"/v1.0/invoke/{app_id}/method/{method}", data=body,
                                   headers={"content-type": "application/json"}) as response:
            answer = await response.read()
    except aiohttp.ClientConnectionError as exc:
        return None, f"{app_id}/{method}: {type(exc).__name__}: {exc}", True
    except (aiohttp.ClientError, TimeoutError) as exc:
        return None, f"{app_id}/{method}: {type(exc).__name__}: {exc}", False
    if response.status >= 300:
        return (None, f"{app_id}/{method} answered {response.status}: {_said(answer)}",
                response.status in UNREACHABLE_STATUSES)
    try:
        answers = [StepAnswer.model_validate(a) for a in json.loads(answer)["results"]]
    except (ValueError, KeyError, TypeError, ValidationError) as exc:
        return None, f"{app_id}/{method}: malformed answer: {type(exc).__name__}: {exc}", False
    if len(answers) != len(tasks):
        return None, f"{app_id}/{method} returned {len(answers)} results for {len(tasks)} tasks", False
    return answers, "", False


def _said(raw: bytes) -> str:
    """The service's own error message from Dapr's error body."""
    try:
        body = json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")
    return str(body.get("message") or body.get("error") or body) if isinstance(body, dict) else str(body)
