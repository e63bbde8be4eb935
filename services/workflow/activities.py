"""The activities: every piece of I/O of a batch, through the sidecar (state store, pub/sub, steps).

``BatchActivities`` holds them as methods, with what they use handed in by the app that registers them
(``worker.create_runtime``): the Dapr clients, the step calls and the live book. Each takes one typed input
(``models``) and returns a model; registered names are in ``names``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import dapr.ext.workflow as wf
from dapr.aio.clients import DaprClient
from dapr.ext.workflow.aio import DaprWorkflowClient

from services.workflow import admission, aggregate, chunk_steps, faults, ledger_store, live, metrics, names, outcome
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
from services.workflow.scoring import Dispatcher
from services.workflow.state_keys import (
    STAGES_TTL_S,
    STATE_TTL_S,
    deletions,
    progress_key,
    results_key,
    stages_key,
    tasks_key,
)
from services.workflow.step_client import StepClient
from taskfan.contracts import MAX_MESSAGE_BYTES, RESULT_LIST, STATESTORE, StepAnswer, TaskResult
from taskfan.pipeline import Pipeline, Spread, Step

log = logging.getLogger(__name__)


class StepCalls:
    """The pipeline's steps, reached through Dapr service invocation: one call of a step for the tasks at it,
    each step's calls spread over its app's replicas as the declaration says (``Spread``)."""

    def __init__(self, declared: Pipeline, client: StepClient, book: live.LiveBatches) -> None:
        self.pipeline, self.client, self.book = declared, client, book
        self.dispatchers = {step.name: Dispatcher(step, client) for step in declared.steps
                            if step.spread is Spread.BY_SLOTS}

    def for_batch(self, batch_id: str, traceparent: str | None = None,
                  entering: Callable[[str, list[str]], Awaitable[None]] | None = None) -> chunk_steps.StepCall:
        """The step call for a batch's chunk: it carries the batch's trace, and tells the live book (and
        ``entering``, the chunk's stages) which tasks each call is for as it starts."""

        async def call(step: Step, payload: list[dict[str, Any]]) -> list[StepAnswer]:
            task_ids = [item["task_id"] for item in payload]
            self.book.moving(batch_id, step.name, task_ids)
            if entering is not None:
                await entering(step.name, task_ids)
            if (dispatcher := self.dispatchers.get(step.name)) is not None:
                return await dispatcher.call(payload, traceparent)
            answers, _ = await self.client.request(step, payload, traceparent=traceparent)
            assert answers is not None  # only a call that may be refused is answered without answers
            return answers

        return call


class BatchActivities:
    """The batch workflow's activities, as methods: the step calls (and their live book), the admission
    ledger's store and the metrics handed in. The Dapr clients are made on first use, inside the worker's event
    loop that runs them, unless handed in (a test's fakes)."""

    def __init__(self, steps: StepCalls, ledger: ledger_store.LedgerStore, measured: metrics.WorkflowMetrics,
                 dapr: DaprClient | None = None, workflows: DaprWorkflowClient | None = None) -> None:
        self.steps, self.book, self.ledger, self.metrics = steps, steps.book, ledger, measured
        self._dapr, self._workflows = dapr, workflows

    def registered(self) -> dict[str, Callable[..., Awaitable[Any]]]:
        """Each activity under its registered name (``names``), for the worker."""
        return {names.RUN_CHUNK: self.run_chunk, names.SAVE_RESULTS: self.save_chunk_results,
                names.PUBLISH_OUTCOME: self.publish_outcome, names.DEAD_LETTER_BATCH: self.dead_letter_batch,
                names.REQUEST_ADMISSION: self.request_admission}

    @property
    def dapr(self) -> DaprClient:
        if self._dapr is None:
            self._dapr = DaprClient(max_grpc_message_length=MAX_MESSAGE_BYTES)
        return self._dapr

    @property
    def workflows(self) -> DaprWorkflowClient:
        if self._workflows is None:
            self._workflows = DaprWorkflowClient()
        return self._workflows

    async def request_admission(self, ctx: wf.WorkflowActivityContext, inp: AdmissionRequest) -> Admission:
        entry = admission.Entry(batch_id=inp.batch_id, slots=inp.slots, total=inp.total, chunks=inp.chunks,
                                since=inp.since)
        others, position = await self.ledger.run(self.dapr, ledger_store.ask(entry, inp.cap))
        await ledger_store.announce(self.workflows, others)
        return Admission(position=position)

    async def run_chunk(self, ctx: wf.WorkflowActivityContext, inp: ChunkRun) -> ChunkRunResult:
        """One run of a chunk through the chain (``chunk_steps``), the steps reached through Dapr service
        invocation. Once no task waits, the chunk's results are saved, in task order (a batch's only chunk records
        its outcome, which holds them, instead); until then what the run finished and left waiting is saved for
        the next run. Only counts go back into workflow history.
        Safe to run again: the steps are pure, each run reads its own input key and overwrites its own output."""
        chunk = inp.chunk
        try:
            tasks = await outcome.chunk_tasks(self.dapr, chunk)
        except LookupError:
            if inp.publish_since is None or (record := await outcome.record_of(self.dapr, chunk.batch_id)) is None:
                raise
            # The batch's only chunk ran to its end before, published the outcome and deleted its tasks; the
            # engine runs it again (its completion was lost to a crash): what it did is in the outcome's record.
            return ChunkRunResult(summary=ChunkSummary.model_validate(record.progress().model_dump(include={
                "done", "completed", "rejected", "failed"})), outcome=record.summary)
        if inp.run == 0:
            earlier = ChunkProgress(finished=[], waiting=chunk_steps.from_the_start(self.steps.pipeline, tasks))
        else:
            item = await self.dapr.get_state(STATESTORE, progress_key(chunk.batch_id, chunk.index, inp.run - 1))
            if not item.data:
                raise LookupError(f"run {inp.run - 1} of chunk {chunk.index} of batch {chunk.batch_id} left no "
                                  "progress in the state store")
            earlier = ChunkProgress.model_validate_json(item.data)
        stages = live.ChunkStages(earlier.finished)
        writes = live.StagesWrites(stages, lambda encoded: self._save_stages(chunk, encoded))
        try:
            run = await chunk_steps.run_chain(self.steps.pipeline, tasks, earlier.waiting,
                                              self.steps.for_batch(chunk.batch_id, inp.traceparent, writes.entering))
        except BaseException:
            writes.drop_deferred()
            raise
        self.book.finished(chunk.batch_id, run.finished)
        self.metrics.tasks_finished(run.finished)
        self.book.moving(chunk.batch_id, live.WAITING, (task.task_id for task in run.waiting))
        stages.finished(run.finished)
        stages.moving(live.WAITING, (task.task_id for task in run.waiting))
        publishes = inp.publish_since is not None and not run.waiting
        if publishes:  # the outcome is out in a moment and the stages are deleted with it: not written
            await writes.settled()
        else:
            await writes.now()
        finished = [*earlier.finished, *run.finished]
        if run.waiting:
            await self.dapr.save_state(STATESTORE, progress_key(chunk.batch_id, chunk.index, inp.run),
                                       ChunkProgress(finished=finished, waiting=run.waiting).model_dump_json(),
                                       state_metadata={"ttlInSeconds": str(STATE_TTL_S)})
            pause = chunk_steps.backoff(run.waiting)
            return ChunkRunResult(waiting=len(run.waiting), pause_ms=int(pause.total_seconds() * 1000))
        results = chunk_steps.in_task_order(tasks, finished)
        if inp.publish_since is None:
            return ChunkRunResult(summary=await self._save_results(chunk, results))
        # A batch of one chunk publishes from here: one activity, one engine round trip fewer. Its results are
        # not saved apart: the outcome's record holds them, written before the publish. If that fails, they
        # are saved and the workflow's own publish_outcome does it (never twice: outcome.publish_once checks
        # for a record first, and publishes the recorded event if there is one).
        try:
            published = await self._publish_and_clean_up(PublishInput(
                batch_id=chunk.batch_id, chunks=1, started_at=inp.publish_since,
                finished_at=datetime.now(UTC).isoformat(), reruns=inp.run), saved={chunk.index: results})
        except Exception as exc:  # noqa: BLE001 - the workflow publishes instead
            log.warning("could not publish from the chunk; the workflow will", extra={
                "batch_id": chunk.batch_id, "error": f"{type(exc).__name__}: {exc}"})
            await writes.now()  # the console shows the chunk done meanwhile
            return ChunkRunResult(summary=await self._save_results(chunk, results))
        return ChunkRunResult(summary=aggregate.summary(results), outcome=published)

    async def save_chunk_results(self, ctx: wf.WorkflowActivityContext, inp: SaveResultsInput) -> ChunkSummary:
        """``run_chunk`` itself failed (its retries spent): each of the chunk's tasks is reported failed."""
        chunk = ChunkRef(batch_id=inp.batch_id, index=inp.index)
        tasks = await outcome.chunk_tasks(self.dapr, chunk)
        results = [aggregate.failed(t.task_id, "chunk", inp.error) for t in tasks]
        self.book.finished(inp.batch_id, results)
        await self._save_stages(chunk, live.ChunkStages(results).encode())
        self.metrics.tasks_finished(results)
        return await self._save_results(chunk, results)

    async def _save_stages(self, chunk: ChunkRef, encoded: bytes) -> None:
        """Best effort: the console's view of the chunk; a failed write costs the view, not the batch."""
        try:
            await self.dapr.save_state(STATESTORE, stages_key(chunk.batch_id, chunk.index), encoded,
                                       state_metadata={"ttlInSeconds": str(STAGES_TTL_S)})
        except Exception as exc:  # noqa: BLE001
            log.debug("could not save a chunk's stages", extra={"batch_id": chunk.batch_id, "chunk": chunk.index,
                                                                 "error": f"{type(exc).__name__}: {exc}"})

    async def _save_results(self, chunk: ChunkRef, results: list[TaskResult]) -> ChunkSummary:
        await self.dapr.save_state(STATESTORE, results_key(chunk.batch_id, chunk.index),
                                   RESULT_LIST.dump_json(results),
                                   state_metadata={"ttlInSeconds": str(STATE_TTL_S)})
        return aggregate.summary(results)

    async def publish_outcome(self, ctx: wf.WorkflowActivityContext, inp: PublishInput) -> OutcomeSummary:
        return await self._publish_and_clean_up(inp)

    async def _publish_and_clean_up(self, inp: PublishInput,
                                    saved: dict[int, list[TaskResult]] | None = None) -> OutcomeSummary:
        """Publish the outcome, then forget the batch: its slots go to the next batches, its data is deleted.
        Run again after a crash, it publishes nothing twice (``outcome.publish_once``) and forgets again.
        Forgetting is best effort: the outcome is out whatever it meets (the reconciler gives back the slots of
        a finished workflow; left keys expire). ``saved``: chunks' results just saved, not read back
        (``outcome.publish_once``)."""
        summary = await outcome.publish_once(self.dapr, inp, lambda index: f"the results of chunk {index} were "
                                                                           "lost from the state store", saved=saved)
        faults.point(faults.AFTER_RECORD)
        try:
            await self.ledger.release_and_wake(self.dapr, self.workflows, inp.batch_id)
            self.book.forget(inp.batch_id)
            keys = [key(inp.batch_id, i) for i in range(inp.chunks) for key in (tasks_key, results_key, stages_key)]
            keys += [progress_key(inp.batch_id, i, run) for i in range(inp.chunks) for run in range(inp.reruns)]
            # In transactions: one sidecar call (and one Redis round trip) for a chunk's keys, not one per key.
            for operations in deletions(keys):
                await self.dapr.execute_state_transaction(STATESTORE, operations)
        except Exception as exc:  # noqa: BLE001 - see above
            log.warning("outcome published; cleaning up after it failed", extra={
                "batch_id": inp.batch_id, "error": f"{type(exc).__name__}: {exc}"})
        return summary

    async def dead_letter_batch(self, ctx: wf.WorkflowActivityContext, inp: BatchFailure) -> None:
        await outcome.dead_letter(self.dapr, inp)
        await self.ledger.release_and_wake(self.dapr, self.workflows, inp.batch_id)
