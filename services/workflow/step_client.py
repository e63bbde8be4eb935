"""Calls from the workflow's activities to the step apps, through Dapr service invocation only.

The calls go to our own sidecar's invocation HTTP API over pooled keep-alive connections: the SDK's
HTTP invocation opens a new connection per call (and its gRPC invocation is deprecated), and on the hot
path a new connection per call costs more than the call (README, Benchmarks).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import aiohttp
import dapr.conf
import pydantic_core
from pydantic import TypeAdapter, ValidationError

from services.workflow import metrics
from services.workflow.replicas import StepReplicas
from taskfan.contracts import SlotsReport, StepAnswer
from taskfan.pipeline import Step

log = logging.getLogger(__name__)

# A call's answers validated in one call of pydantic's core, not one model_validate per task (the hot path).
_ANSWERS = TypeAdapter(list[StepAnswer])

# A step app that cannot be reached (a replica crashed or is restarting, or its one pod is being moved to
# another node by a drain: evicted, then scheduled, started and ready elsewhere) is asked again for about a
# minute before the call counts as a failed attempt: Dapr's resiliency retries do not cover a gRPC app's
# "unavailable" answer. Step calls are pure functions of their input, so repeating is safe.
UNREACHABLE_RETRY_DELAYS_S = (0.25, 0.5, 1.0) + (2.0,) * 29
UNREACHABLE_STATUSES = frozenset({502, 503, 504})
# Every call has a deadline (Settings.step_timeout_s), kept here: the client gives up and closes the
# connection, and the sidecar cancels the call to the app (why not Dapr's resiliency timeout:
# components/resiliency.yaml). A timed-out call is made once more at once: Dapr picks a replica at random
# per call, so with several replicas it most likely lands on a live one. (Dapr 1.18's circuit breaker on an
# app target is per app id, not per replica, measured: it would stop every replica's calls because one
# hangs, so it is not used.)
TIMEOUT_TRIES = 2
# How Dapr words a call cut off at a deadline (both seen from 1.18.1), e.g. the callee's sidecar's own.
DAPR_TIMED_OUT = ("context deadline exceeded", "code = DeadlineExceeded")
# Dapr's name resolution found no live replica: one is restarting, or a busy machine delayed the
# replicas' heartbeats. Transient, like an unreachable replica.
DAPR_NO_HOST = "no host found with the given ID"
# The same on Kubernetes: Dapr's name resolution looks up the app id's headless Service, which has no address
# while the app's only pod is being replaced (evicted by a drain: "no such host"), or DNS itself is moving.
DAPR_UNRESOLVED = "failed to resolve address for"
# The chosen replica's sidecar refused the connection: it is shutting down (a scale-down drains it) or
# crashed, and its registration in name resolution has not gone yet. The call never reached the app.
# Or the caller's sidecar closed its connection to that sidecar while the call was on it ("client connection
# is closing", code Canceled: seen for the replicas `stack scale` removes once the step deadline is the
# client's). The call may have reached the app; step calls are pure, so it is made again elsewhere.
DAPR_UNAVAILABLE = ("code = Unavailable", "grpc: the client connection is closing")


class Failure(Enum):
    FAILED = "failed"
    UNREACHABLE = "unreachable"
    TIMED_OUT = "timed out"


@dataclass(frozen=True)
class Called:
    """One call's end: the answers (one per task), or the error and how the call failed; what the app said
    of its slots (a ``by-slots`` step), a refusal (``report.busy``) with no answers and no error."""

    answers: list[StepAnswer] | None = None
    error: str = ""
    failure: Failure | None = None
    report: SlotsReport = field(default_factory=SlotsReport)


class StepClient:
    """Step calls through the workflow app's own sidecar, over one pool of kept-alive connections; one per
    workflow process, handed to whoever calls steps. ``timeout_s``: a call's deadline. It keeps the step apps'
    replicas its answers named (``replicas``, for the console)."""

    def __init__(self, timeout_s: float, measured: metrics.WorkflowMetrics | None = None,
                 session: aiohttp.ClientSession | None = None) -> None:
        self.timeout_s = timeout_s
        self.metrics = measured or metrics.WorkflowMetrics()
        self.replicas = StepReplicas()  # each step's replicas, as their answers name them (the console's)
        self._session = session

    def sidecar(self) -> aiohttp.ClientSession:
        # Created on first use, inside the worker's event loop that runs async activities.
        if self._session is None:
            sdk = dapr.conf.settings  # the SDK's: its sidecar's address and API token, from the environment
            headers = {"dapr-api-token": sdk.DAPR_API_TOKEN} if sdk.DAPR_API_TOKEN else {}
            self._session = aiohttp.ClientSession(
                base_url=f"http://{sdk.DAPR_RUNTIME_HOST}:{sdk.DAPR_HTTP_PORT}",
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout_s, sock_connect=5),
                connector=aiohttp.TCPConnector(limit=256),
            )
        return self._session

    async def request(self, step: Step, payload: list[dict[str, Any]], may_refuse: bool = False,
                      traceparent: str | None = None) -> tuple[list[StepAnswer] | None, SlotsReport]:
        """One call of ``step`` for the tasks of ``payload``: (answers, what the app said of its slots). A failed
        call gives every task an answer with an ``error``; a call the app refused (``may_refuse``, and it is
        busy) gives none. ``traceparent``: the batch's trace (taskfan.tracing), so that the step apps' sidecars
        put their spans into it."""
        app_id, method = step.app_id, step.method
        extra = {"may_refuse": True} if may_refuse else {}
        delays = iter(UNREACHABLE_RETRY_DELAYS_S)
        timeouts = 0
        while True:
            started = time.perf_counter()
            called = await self.call(app_id, method, payload, extra, traceparent)
            outcome = ("ok" if called.answers is not None else "busy" if called.report.busy
                       else (called.failure or Failure.FAILED).name)
            self.metrics.step_call(step.name, outcome.lower(), time.perf_counter() - started)
            if called.answers is not None or called.report.busy:
                self.replicas.learn(step.name, called.report.replica, time.monotonic(), len(called.answers or ()))
                return called.answers, called.report
            error = called.error
            if called.failure is Failure.TIMED_OUT:
                timeouts += 1
                if timeouts < TIMEOUT_TRIES:
                    log.info("step call timed out; trying again", extra={"app_id": app_id, "method": method,
                                                                         "tasks": len(payload)})
                    continue
                error = f"{error} ({timeouts} tries)"
            elif called.failure is Failure.UNREACHABLE and (delay := next(delays, None)) is not None:
                await asyncio.sleep(delay)
                continue
            break
        log.warning("step call failed", extra={"app_id": app_id, "method": method, "tasks": len(payload),
                                               "error": error})
        return [StepAnswer(task_id=t["task_id"], error=error) for t in payload], SlotsReport()

    async def call(self, app_id: str, method: str, tasks: list[dict[str, object]],
                   extra: dict[str, Any] | None = None, traceparent: str | None = None) -> Called:
        """One call, made once."""
        # UTF-8 as it is (task text of any script costs its own size, not six bytes a character), by
        # pydantic-core: a tenth of the json module's time.
        body = pydantic_core.to_json({"tasks": tasks, **(extra or {})})
        timed_out = Called(error=f"{app_id}/{method} timed out after {self.timeout_s:g}s", failure=Failure.TIMED_OUT)
        try:
            headers = {"content-type": "application/json", **({"traceparent": traceparent} if traceparent else {})}
            async with self.sidecar().post(f"/v1.0/invoke/{app_id}/method/{method}", data=body,
                                           headers=headers) as response:
                answer = await response.read()
        except aiohttp.ClientConnectionError as exc:
            return Called(error=f"{app_id}/{method}: {type(exc).__name__}: {exc}", failure=Failure.UNREACHABLE)
        except TimeoutError:
            return timed_out
        except aiohttp.ClientError as exc:
            return Called(error=f"{app_id}/{method}: {type(exc).__name__}: {exc}", failure=Failure.FAILED)
        if response.status >= 300:
            said = _said(answer)
            if any(words in said for words in DAPR_TIMED_OUT):
                return timed_out
            unreachable = (response.status in UNREACHABLE_STATUSES or DAPR_NO_HOST in said or DAPR_UNRESOLVED in said
                           or any(words in said for words in DAPR_UNAVAILABLE))
            return Called(error=f"{app_id}/{method} answered {response.status}: {said}",
                          failure=Failure.UNREACHABLE if unreachable else Failure.FAILED)
        try:
            # pydantic-core's parser, not json.loads: it refuses a lone surrogate (\udcff), which would
            # otherwise reach the outcome and make it impossible to encode.
            rest = pydantic_core.from_json(answer)
            report = SlotsReport.model_validate(rest)
            if report.busy:
                return Called(report=report)
            answers = _ANSWERS.validate_python(rest["results"])
        except (ValueError, KeyError, TypeError, AttributeError, ValidationError) as exc:
            return Called(error=f"{app_id}/{method}: malformed answer: {type(exc).__name__}: {exc}",
                          failure=Failure.FAILED)
        if len(answers) != len(tasks):
            return Called(error=f"{app_id}/{method} returned {len(answers)} results for {len(tasks)} tasks",
                          failure=Failure.FAILED)
        return Called(answers=answers, report=report)


def _said(raw: bytes) -> str:
    """The service's own error message from Dapr's error body."""
    try:
        body = json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")
    return str(body.get("message") or body.get("error") or body) if isinstance(body, dict) else str(body)
