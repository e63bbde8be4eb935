"""The activities: every piece of I/O of a batch, through the sidecar (state store, pub/sub, steps).

Each takes one typed input (``models``) and returns a model; registered names are in ``names``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import dapr.ext.workflow as wf
from dapr.aio.clients import DaprClient
from dapr.clients.grpc._state import Concurrency, StateOptions
from dapr.ext.workflow.aio import DaprWorkflowClient

from services.workflow import (
    admission,
    aggregate,
    chunk_steps,
    faults,
    ledger_store,
    live,
    metrics,
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
    OutcomeRecord,
    OutcomeSummary,
    PublishInput,
    SaveResultsInput,
)
from services.workflow.state_keys import STATE_TTL_S, outcome_key, progress_key, results_key, tasks_key
from taskfan import events, pipeline
from taskfan.contracts import (
    DEADLETTER_TOPIC,
    MAX_MESSAGE_BYTES,
    OUTCOME_EVENT_TYPE,
    OUTCOMES_TOPIC,
    PUBSUB,
    STATESTORE,
    AppId,
    StepAnswer,
    Task,
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
        tasks = await _load_tasks(chunk)
    except LookupError:
        if inp.publish_since is None or (record := await outcome_record(_client(), chunk.batch_id)) is None:
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
    outcome = None
    if inp.publish_since is not None:
        # A batch of one chunk publishes from here: one activity, one engine round trip fewer. If that
        # fails, the workflow's own publish_outcome does it (never twice: publish_results checks first).
        try:
            outcome = await _publish_and_forget(PublishInput(batch_id=chunk.batch_id, chunks=1,
                                                             started_at=inp.publish_since,
                                                             finished_at=datetime.now(UTC).isoformat(),
                                                             reruns=inp.run))
        except Exception as exc:  # noqa: BLE001 - the workflow publishes instead
            log.warning("could not publish from the chunk; the workflow will", extra={
                "batch_id": chunk.batch_id, "error": f"{type(exc).__name__}: {exc}"})
    return ChunkRunResult(summary=summary, outcome=outcome)


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


async def _load_tasks(chunk: ChunkRef, client: DaprClient | None = None) -> list[Task]:
    """A chunk's tasks from the state store."""
    item = await (client or _client()).get_state(STATESTORE, tasks_key(chunk.batch_id, chunk.index))
    if not item.data:
        raise LookupError(f"tasks of chunk {chunk.index} of batch {chunk.batch_id} are not in the state store")
    return [Task.model_validate(t) for t in json.loads(item.data)]


async def save_chunk_results(ctx: wf.WorkflowActivityContext, inp: SaveResultsInput) -> ChunkSummary:
    """``run_chunk`` itself failed (its retries spent): each of the chunk's tasks is reported failed."""
    chunk = ChunkRef(batch_id=inp.batch_id, index=inp.index)
    tasks = await _load_tasks(chunk)
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
    return await _publish_and_forget(inp)


async def _publish_and_forget(inp: PublishInput) -> OutcomeSummary:
    """Publish the outcome, then forget the batch: its slots go to the next batches, its data is deleted.
    Run again after a crash, it publishes nothing twice (``publish_results``) and forgets again. Forgetting
    is best effort: the outcome is out whatever it meets (the reconciler gives back the slots of a finished
    workflow; left keys expire)."""
    summary = await publish_results(_client(), inp, lambda index: f"the results of chunk {index} were lost "
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


async def publish_results(client: DaprClient, inp: PublishInput, missing: Callable[[int], str],
                          ended: str = "COMPLETED") -> OutcomeSummary:
    """Publish the batch's outcome from its saved chunk results; a chunk without results (lost, or never
    finished) reports each of its tasks as failed with ``missing(index)``: every task is accounted for.

    One outcome per batch id, whoever calls this and however often: the outcome is recorded (``OutcomeRecord``,
    first write wins) before it is published, and a caller that finds a record publishes the recorded event if
    it is not marked published yet, nothing otherwise. A crash can make the engine run this again (its history
    lost the first run, measured by the soak), and the reconciler may answer for a workflow terminated while
    it was publishing: both end in the one recorded event. ``ended``: how the workflow ended, for the record.
    """
    key = outcome_key(inp.batch_id)
    record = await outcome_record(client, inp.batch_id)
    if record is None:
        record = await _record_outcome(client, inp, missing, ended)
    if not record.published:
        assert record.event is not None
        await client.publish_event(PUBSUB, OUTCOMES_TOPIC, record.event.encode(),
                                   data_content_type=events.CLOUDEVENT_CONTENT_TYPE)
        faults.point(faults.AFTER_PUBLISH)
        # With its ETag: Dapr's Redis store takes a later write to a key written first-write only so.
        current = await client.get_state(STATESTORE, key)
        published = record.model_copy(update={"event": None, "published": True})
        await client.save_state(STATESTORE, key, published.model_dump_json(), etag=current.etag or None,
                                state_metadata={"ttlInSeconds": str(STATE_TTL_S)})
    return record.summary


async def outcome_record(client: DaprClient, batch_id: str) -> OutcomeRecord | None:
    item = await client.get_state(STATESTORE, outcome_key(batch_id))
    return OutcomeRecord.model_validate_json(item.data) if item.data else None


async def _record_outcome(client: DaprClient, inp: PublishInput, missing: Callable[[int], str],
                          ended: str) -> OutcomeRecord:
    """Aggregate the outcome and record it as intended; if another caller recorded one first, that one."""
    keys = [results_key(inp.batch_id, i) for i in range(inp.chunks)]
    items = {item.key: item.data for item in (await client.get_bulk_state(STATESTORE, keys, parallelism=8)).items}
    results: list[TaskResult] = []
    for index, key in enumerate(keys):
        if items.get(key):
            results += [TaskResult.model_validate(r) for r in json.loads(items[key])]
        else:
            tasks = await _load_tasks(ChunkRef(batch_id=inp.batch_id, index=index), client=client)
            results += [aggregate.failed(t.task_id, "chunk", missing(index)) for t in tasks]
    outcome = aggregate.aggregate(inp.batch_id, results, inp.started_at, inp.finished_at)
    # A stable event id: a subscriber can drop the redelivery of a publish run again.
    data = events.encode(OUTCOME_EVENT_TYPE, outcome, source=AppId.WORKFLOW,
                         event_id=f"outcome:{inp.batch_id}", subject=inp.batch_id)
    record = OutcomeRecord(summary=OutcomeSummary.model_validate(outcome.model_dump(exclude={"results"})),
                           event=data.decode(), ended=ended)
    try:
        await client.save_state(STATESTORE, outcome_key(inp.batch_id), record.model_dump_json(),
                                options=_FIRST_WRITE, state_metadata={"ttlInSeconds": str(STATE_TTL_S)})
    except Exception:
        recorded = await outcome_record(client, inp.batch_id)
        if recorded is None:
            raise  # the write failed for another reason than a record written first
        return recorded
    return record


_FIRST_WRITE = StateOptions(concurrency=Concurrency.first_write)


async def dead_letter_batch(ctx: wf.WorkflowActivityContext, inp: BatchFailure) -> None:
    await dead_letter(_client(), inp)
    await ledger_store.release_and_wake(_client(), _workflow_client(), inp.batch_id)


async def dead_letter(client: DaprClient, inp: BatchFailure) -> None:
    data = events.dead_letter(inp.reason, {"batch_id": inp.batch_id, "total": inp.total}, source=AppId.WORKFLOW)
    await client.publish_event(PUBSUB, DEADLETTER_TOPIC, data, data_content_type=events.CLOUDEVENT_CONTENT_TYPE)
