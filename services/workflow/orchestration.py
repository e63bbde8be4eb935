"""The durable batch workflow: chunked fan-out, a validate -> enrich -> score chain per task, fan-in.

History stays bounded for big batches: the batch workflow only schedules child workflows of at
most ``TASKS_PER_CHUNK`` tasks, and runs just enough of them at once to keep ``max_in_flight``
tasks in progress. Each chunk chains every task on its own (a task moves to its next step as soon
as its previous step returns) and never fails: a step that still fails after the retry policy
marks its task failed, so every accepted task ends up in the outcome.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, timedelta
from typing import Any

import dapr.ext.workflow as wf
from dapr.aio.clients import DaprClient
from dapr.clients.exceptions import DaprHttpError

from taskfan import events
from taskfan.contracts import OUTCOME_EVENT_TYPE, OUTCOMES_TOPIC, PUBSUB, AppId
from taskfan.workflow import aggregate

log = logging.getLogger(__name__)

# Stable registered names: renaming a Python function must not break running instances.
BATCH_WORKFLOW = "process_batch"
CHUNK_WORKFLOW = "process_chunk"
VALIDATE = "validate_task"
ENRICH = "enrich_task"
SCORE = "score_task"
PUBLISH_OUTCOME = "publish_outcome"

TASKS_PER_CHUNK = 50

STEP_RETRY = wf.RetryPolicy(
    first_retry_interval=timedelta(milliseconds=500),
    max_number_of_attempts=3,
    backoff_coefficient=2.0,
    max_retry_interval=timedelta(seconds=5),
)
PUBLISH_RETRY = wf.RetryPolicy(
    first_retry_interval=timedelta(seconds=1),
    max_number_of_attempts=10,
    backoff_coefficient=2.0,
    max_retry_interval=timedelta(seconds=30),
)


def workflow_input(batch: dict[str, Any], max_in_flight: int) -> dict[str, Any]:
    """The batch workflow's input; settings travel in it so replays stay deterministic."""
    return {"batch": batch, "max_in_flight": max_in_flight}


def chunk_instance_id(batch_instance_id: str, index: int) -> str:
    return f"{batch_instance_id}:chunk-{index:05d}"


def _failure_message(task: Any) -> str:
    exc = task.get_exception()
    details = getattr(exc, "details", None)
    return getattr(details, "message", None) or str(exc)


def _now(ctx: wf.DaprWorkflowContext) -> str:
    # The replay-safe clock; the SDK gives it without a zone, it is UTC.
    return ctx.current_utc_datetime.replace(tzinfo=UTC).isoformat()


def process_batch(ctx: wf.DaprWorkflowContext, inp: dict[str, Any]):
    batch = inp["batch"]
    tasks = batch["tasks"]
    started_at = _now(ctx)
    chunk_size = min(TASKS_PER_CHUNK, inp["max_in_flight"])
    parallel_chunks = max(1, inp["max_in_flight"] // chunk_size)
    chunks = aggregate.chunk(tasks, chunk_size)
    chunk_results: list[list[dict[str, Any]]] = [[] for _ in chunks]
    running: dict[Any, int] = {}
    next_chunk = done_tasks = 0
    ctx.set_custom_status(json.dumps({"done": 0, "total": len(tasks)}))
    while next_chunk < len(chunks) or running:
        while next_chunk < len(chunks) and len(running) < parallel_chunks:
            child = ctx.call_child_workflow(
                CHUNK_WORKFLOW,
                input={"tasks": chunks[next_chunk]},
                instance_id=chunk_instance_id(ctx.instance_id, next_chunk),
            )
            running[child] = next_chunk
            next_chunk += 1
        finished = yield wf.when_any(list(running))
        index = running.pop(finished)
        if finished.is_failed:  # a chunk never fails by design; if it does, its tasks still count
            error = _failure_message(finished)
            chunk_results[index] = [aggregate.failed(t["task_id"], "chunk", error) for t in chunks[index]]
        else:
            chunk_results[index] = finished.get_result()
        done_tasks += len(chunks[index])
        ctx.set_custom_status(json.dumps({"done": done_tasks, "total": len(tasks)}))

    results = [result for chunk_result in chunk_results for result in chunk_result]
    outcome = aggregate.aggregate(
        batch["batch_id"], results, started_at, _now(ctx)
    )
    yield ctx.call_activity(PUBLISH_OUTCOME, input=outcome, retry_policy=PUBLISH_RETRY)
    if not ctx.is_replaying:
        log.info("batch finished", extra={"batch_id": batch["batch_id"], "total": len(tasks)})
    return outcome


def process_chunk(ctx: wf.DaprWorkflowContext, inp: dict[str, Any]):
    tasks = inp["tasks"]
    results: list[dict[str, Any] | None] = [None] * len(tasks)
    # pending step -> (task index, step name, tags found so far)
    pending: dict[Any, tuple[int, str, list[str]]] = {}
    for index, task in enumerate(tasks):
        pending[ctx.call_activity(VALIDATE, input=task, retry_policy=STEP_RETRY)] = (index, VALIDATE, [])
    while pending:
        step = yield wf.when_any(list(pending))
        index, name, tags = pending.pop(step)
        task = tasks[index]
        if step.is_failed:
            results[index] = aggregate.failed(task["task_id"], name, _failure_message(step), tags)
            continue
        output = step.get_result()
        if name == VALIDATE:
            if output["issues"]:
                results[index] = aggregate.rejected(task["task_id"], output["issues"])
            else:
                pending[ctx.call_activity(ENRICH, input=task, retry_policy=STEP_RETRY)] = (index, ENRICH, [])
        elif name == ENRICH:
            scoring = {"task_id": task["task_id"], "tags": output["tags"]}
            nxt = ctx.call_activity(SCORE, input=scoring, retry_policy=STEP_RETRY)
            pending[nxt] = (index, SCORE, output["tags"])
        else:
            results[index] = aggregate.completed(task["task_id"], output["score"], tags)
    return results


_dapr: DaprClient | None = None


def _client() -> DaprClient:
    # Created on first use, inside the worker's event loop that runs async activities.
    global _dapr
    if _dapr is None:
        _dapr = DaprClient()
    return _dapr


class StepError(RuntimeError):
    """A step service answered with an error; the message is what the service said."""


async def _invoke(app_id: str, method: str, body: dict[str, Any]) -> dict[str, Any]:
    """Dapr service invocation through our own sidecar; never a direct call between services."""
    try:
        response = await _client().invoke_method(
            app_id, method, json.dumps(body).encode(), content_type="application/json"
        )
    except DaprHttpError as exc:
        raise StepError(f"{app_id}/{method} answered {exc.status_code}: {_said(exc)}") from None
    return json.loads(response.data)


def _said(exc: DaprHttpError) -> str:
    """The service's own error message from Dapr's error body, which the SDK does not surface."""
    raw = exc.as_dict().get("raw_response_bytes") or b""
    try:
        body = json.loads(raw)
    except (TypeError, ValueError):
        return raw.decode(errors="replace") if isinstance(raw, bytes) and raw else str(exc)
    return str(body.get("message") or body.get("error") or body) if isinstance(body, dict) else str(body)


async def validate_task(ctx: wf.WorkflowActivityContext, task: dict[str, Any]) -> dict[str, Any]:
    return await _invoke(AppId.VALIDATOR, "validate", task)


async def enrich_task(ctx: wf.WorkflowActivityContext, task: dict[str, Any]) -> dict[str, Any]:
    return await _invoke(AppId.ENRICHER, "enrich", task)


async def score_task(ctx: wf.WorkflowActivityContext, body: dict[str, Any]) -> dict[str, Any]:
    return await _invoke(AppId.SCORER, "score", body)


async def publish_outcome(ctx: wf.WorkflowActivityContext, outcome: dict[str, Any]) -> None:
    # A stable event id lets subscribers drop the rare redelivery of a retried publish.
    data = events.encode(
        OUTCOME_EVENT_TYPE, outcome, source=AppId.WORKFLOW,
        event_id=f"outcome:{outcome['batch_id']}", subject=outcome["batch_id"],
    )
    await _client().publish_event(
        PUBSUB, OUTCOMES_TOPIC, data, data_content_type=events.CLOUDEVENT_CONTENT_TYPE
    )


def register(runtime: wf.WorkflowRuntime) -> None:
    runtime.register_workflow(process_batch, name=BATCH_WORKFLOW)
    runtime.register_workflow(process_chunk, name=CHUNK_WORKFLOW)
    runtime.register_activity(validate_task, name=VALIDATE)
    runtime.register_activity(enrich_task, name=ENRICH)
    runtime.register_activity(score_task, name=SCORE)
    runtime.register_activity(publish_outcome, name=PUBLISH_OUTCOME)
