"""The activities: every piece of I/O of a batch, through the sidecar (state store, pub/sub, steps).

Each takes one typed input (``models``) and returns a model; registered names are in ``names``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from typing import Any

import dapr.ext.workflow as wf
from dapr.aio.clients import DaprClient
from dapr.ext.workflow.aio import DaprWorkflowClient

from services.workflow import (
    admission,
    aggregate,
    chunk_steps,
    faults,
    ledger_store,
    live,
    metrics,
    outcome,
    scoring,
    step_client,
)
from services.workflow.models import (
    Admission,
    AdmissionRequest,
    BatchFailure,
    ChunkProgress,
    ChunkRef,
    ChunkRun,
    ChunkRunResult,
    ChunkSummary,
    OutcomeSummary,
    PublishInput,
    SaveResultsInput,
)
from services.workflow.state_keys import STATE_TTL_S, progress_key, results_key, tasks_key
from taskfan import pipeline
from taskfan.contracts import (
    MAX_MESSAGE_BYTES,
    STATESTORE,
    StepAnswer,
    TaskResult,
)
from taskfan.pipeline import Pipeline, Spread, Step

log = logging.getLogger(__name__)

_dapr: DaprClient | None = None
_workflows: DaprWorkflowClient | None = None


def _client() -> DaprClient:
    # Created on first use, inside the worker's event loop that runs async activities.
    global _dapr
    if _dapr is None:
        _dapr = DaprClient(max_grpc_message_length=MAX_MESSAGE_BYTES)
    return _dapr


def _workflow_client() -> DaprWorkflowClient:
    global _workflows
    if _workflows is None:
        _workflows = DaprWorkflowClient()
    return _workflows


async def request_admission(ctx: wf.WorkflowActivityContext, inp: AdmissionRequest) -> Admission:
    entry = admission.Entry(batch_id=inp.batch_id, slots=inp.slots, total=inp.total, chunks=inp.chunks,
                            since=inp.since)

    others, position = await ledger_store.run(_client(), ledger_store.ask(entry, inp.cap))
    await ledger_store.announce(_workflow_client(), others)
    return Admission(position=position)


async def run_chunk(ctx: wf.WorkflowActivityContext, inp: ChunkRun) -> ChunkRunResult:
    """One run of a chunk through the chain (``chunk_steps``), the steps reached through Dapr service
    invocation. Once no task waits, the chunk's results are saved, in task order; until then what the run
    finished and left waiting is saved for the next run. Only counts go back into workflow history.
    Safe to run again: the steps are pure, each run reads its own input key and overwrites its own output."""
    chunk = inp.chunk
    step_client.TRACEPARENT.set(inp.traceparent)
    try:
        tasks = await outcome.chunk_tasks(_client(), chunk)
    except LookupError:
        if inp.publish_since is None or (record := await outcome.record_of(_client(), chunk.batch_id)) is None:
            raise
        # The batch's only chunk ran to its end before, published the outcome and deleted its tasks; the
        # engine runs it again (its completion was lost to a crash): what it did is in the outcome's record.
        return ChunkRunResult(summary=ChunkSummary.model_validate(record.progress().model_dump(include={
            "done", "completed", "rejected", "failed"})), outcome=record.summary)
    if inp.run == 0:
        earlier = ChunkProgress(finished=[], waiting=chunk_steps.from_the_start(step_calls().pipeline, tasks))
    else:
        item = await _client().get_state(STATESTORE, progress_key(chunk.batch_id, chunk.index, inp.run - 1))
        if not item.data:
            raise LookupError(f"run {inp.run - 1} of chunk {chunk.index} of batch {chunk.batch_id} left no "
                              "progress in the state store")
        earlier = ChunkProgress.model_validate_json(item.data)
    steps = step_calls()
    run = await chunk_steps.run_chain(steps.pipeline, tasks, earlier.waiting, steps.for_batch(chunk.batch_id))
    live.batches.finished(chunk.batch_id, run.finished)
    metrics.tasks_finished(run.finished)
    live.batches.moving(chunk.batch_id, live.WAITING, (task.task_id for task in run.waiting))
    finished = [*earlier.finished, *run.finished]
    if run.waiting:
        await _client().save_state(STATESTORE, progress_key(chunk.batch_id, chunk.index, inp.run),
                                   ChunkProgress(finished=finished, waiting=run.waiting).model_dump_json(),
                                   state_metadata={"ttlInSeconds": str(STATE_TTL_S)})
        pause = chunk_steps.backoff(run.waiting)
        return ChunkRunResult(waiting=len(run.waiting), pause_ms=int(pause.total_seconds() * 1000))
    summary = await _save_results(chunk, chunk_steps.in_task_order(tasks, finished))
    published = None
    if inp.publish_since is not None:
        # A batch of one chunk publishes from here: one activity, one engine round trip fewer. If that
        # fails, the workflow's own publish_outcome does it (never twice: outcome.publish_once checks first).
        try:
            published = await _publish_and_clean_up(PublishInput(batch_id=chunk.batch_id, chunks=1,
                                                                 started_at=inp.publish_since,
                                                                 finished_at=datetime.now(UTC).isoformat(),
                                                                 reruns=inp.run))
        except Exception as exc:  # noqa: BLE001 - the workflow publishes instead
            log.warning("could not publish from the chunk; the workflow will", extra={
                "batch_id": chunk.batch_id, "error": f"{type(exc).__name__}: {exc}"})
    return ChunkRunResult(summary=summary, outcome=published)


class StepCalls:
    """The pipeline's steps, reached through Dapr service invocation: one call of a step for the tasks at it,
    each step's calls spread over its app's replicas as the declaration says (``Spread``)."""

    def __init__(self, declared: Pipeline) -> None:
        self.pipeline = declared
        self.dispatchers = {step.name: scoring.Dispatcher(step) for step in declared.steps
                            if step.spread is Spread.BY_SLOTS}

    def for_batch(self, batch_id: str) -> chunk_steps.StepCall:
        """The step call for a batch's chunk, telling the console's live view (``live``) which tasks each call
        is for as it starts."""

        async def call(step: Step, payload: list[dict[str, Any]]) -> list[StepAnswer]:
            live.batches.moving(batch_id, step.name, (item["task_id"] for item in payload))
            if (dispatcher := self.dispatchers.get(step.name)) is not None:
                return await dispatcher.call(payload)
            answers, _ = await step_client.request(step, payload)
            assert answers is not None  # only a call that may be refused is answered without answers
            return answers

        return call


_steps: StepCalls | None = None


def step_calls() -> StepCalls:
    # Read at the first chunk, not at import: an installed wheel imports this with no declaration at hand.
    global _steps
    if _steps is None:
        _steps = StepCalls(pipeline.load())
    return _steps


async def save_chunk_results(ctx: wf.WorkflowActivityContext, inp: SaveResultsInput) -> ChunkSummary:
    """``run_chunk`` itself failed (its retries spent): each of the chunk's tasks is reported failed."""
    chunk = ChunkRef(batch_id=inp.batch_id, index=inp.index)
    tasks = await outcome.chunk_tasks(_client(), chunk)
    results = [aggregate.failed(t.task_id, "chunk", inp.error) for t in tasks]
    live.batches.finished(inp.batch_id, results)
    metrics.tasks_finished(results)
    return await _save_results(chunk, results)


async def _save_results(chunk: ChunkRef, results: list[TaskResult]) -> ChunkSummary:
    await _client().save_state(STATESTORE, results_key(chunk.batch_id, chunk.index),
                               json.dumps([r.model_dump(mode="json") for r in results]),
                               state_metadata={"ttlInSeconds": str(STATE_TTL_S)})
    return aggregate.summary(results)


async def publish_outcome(ctx: wf.WorkflowActivityContext, inp: PublishInput) -> OutcomeSummary:
    return await _publish_and_clean_up(inp)


async def _publish_and_clean_up(inp: PublishInput) -> OutcomeSummary:
    """Publish the outcome, then forget the batch: its slots go to the next batches, its data is deleted.
    Run again after a crash, it publishes nothing twice (``outcome.publish_once``) and forgets again. Forgetting
    is best effort: the outcome is out whatever it meets (the reconciler gives back the slots of a finished
    workflow; left keys expire)."""
    summary = await outcome.publish_once(_client(), inp, lambda index: f"the results of chunk {index} were lost "
                                                                       "from the state store")
    faults.point(faults.AFTER_RECORD)
    try:
        await ledger_store.release_and_wake(_client(), _workflow_client(), inp.batch_id)
        live.batches.forget(inp.batch_id)
        keys = [key(inp.batch_id, i) for i in range(inp.chunks) for key in (tasks_key, results_key)]
        keys += [progress_key(inp.batch_id, i, run) for i in range(inp.chunks) for run in range(inp.reruns)]
        await asyncio.gather(*(_client().delete_state(STATESTORE, key) for key in keys))
    except Exception as exc:  # noqa: BLE001 - see above
        log.warning("outcome published; cleaning up after it failed", extra={
            "batch_id": inp.batch_id, "error": f"{type(exc).__name__}: {exc}"})
    return summary


async def dead_letter_batch(ctx: wf.WorkflowActivityContext, inp: BatchFailure) -> None:
    await outcome.dead_letter(_client(), inp)
    await ledger_store.release_and_wake(_client(), _workflow_client(), inp.batch_id)
