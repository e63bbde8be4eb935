"""``process_batch``: the durable workflow of one batch, a chunked fan-out and one fan-in.

The batch is cut into chunks (``chunking``). Each chunk is one ``run_chunk`` activity
that takes its tasks through the pipeline's steps (pipeline.yaml), one service call per step for the whole
chunk (``chunk_steps``), and runs again after a durable backoff for tasks whose call failed. This
workflow runs just enough chunks at once to keep ``max_in_flight`` tasks in progress, keeps
``done``/``total`` in its custom status, then publishes one outcome (a batch of one chunk has its
``run_chunk`` publish it, and publishes here only if that failed).

One activity per chunk, not one per step, and no child workflow: each activity and each workflow costs
the engine a reminder, state writes and a history replay, and those were most of the CPU per task
(bench ``cpu_ms_per_task_by_process``). What a crash costs instead: a chunk's steps run again.

Task lists and results travel through the state store, not through workflow history: the intake
stores each chunk's tasks before the workflow starts, a chunk stores its results when done, and
``publish_outcome`` reads them all. Histories stay a few kilobytes per chunk even for a 10,000-task
batch (payloads over 4 MiB break the SDK). Deterministic: no I/O, no clock but the context's.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from datetime import UTC, timedelta
from typing import Any

import dapr.ext.workflow as wf

from services.workflow.chunking import chunks_of, parallel_chunks, slots_of
from services.workflow.models import (
    Admission,
    AdmissionRequest,
    BatchFailure,
    BatchInput,
    BatchProgress,
    ChunkRef,
    ChunkRun,
    ChunkRunResult,
    ChunkSummary,
    OutcomeSummary,
    PublishInput,
    SaveResultsInput,
)
from services.workflow.names import (
    ADMITTED_EVENT,
    DEAD_LETTER_BATCH,
    PUBLISH_OUTCOME,
    REQUEST_ADMISSION,
    RUN_CHUNK,
    SAVE_RESULTS,
)
from services.workflow.retry import INFRA_RETRY

log = logging.getLogger(__name__)

# A queued batch is woken by an event when admitted; it also asks again this often, in case the event
# was lost to a crash.
ADMISSION_RECHECK = timedelta(seconds=20)


def batch_input(batch_id: str, total: int, max_in_flight: int, max_tasks_in_progress: int,
                traceparent: str | None = None, admitted: bool = False) -> BatchInput:
    return BatchInput(batch_id=batch_id, total=total, chunks=chunks_of(total), max_in_flight=max_in_flight,
                      max_tasks_in_progress=max_tasks_in_progress, traceparent=traceparent, admitted=admitted)


def process_batch(ctx: wf.DaprWorkflowContext, inp: BatchInput) -> Generator[Any, Any, OutcomeSummary]:
    parallel = parallel_chunks(inp.max_in_flight)
    if inp.max_tasks_in_progress and not inp.admitted:
        yield from _wait_for_admission(ctx, inp, slots=slots_of(inp.total, inp.max_in_flight))
    started_at = _now(ctx)
    running: dict[Any, tuple[ChunkRun, bool]] = {}  # an activity or a backoff timer: (its run, is timer)
    next_chunk = 0
    reruns = 0
    published: OutcomeSummary | None = None
    progress = BatchProgress(total=inp.total)
    ctx.set_custom_status(progress.model_dump_json())
    while next_chunk < inp.chunks or running:
        while next_chunk < inp.chunks and len(running) < parallel:
            run = ChunkRun(chunk=ChunkRef(batch_id=inp.batch_id, index=next_chunk),
                           publish_since=started_at if inp.chunks == 1 else None, traceparent=inp.traceparent)
            running[ctx.call_activity(RUN_CHUNK, input=run, retry_policy=INFRA_RETRY)] = (run, False)
            next_chunk += 1
        finished = yield wf.when_any(list(running))
        run, backed_off = running.pop(finished)
        if backed_off:  # the pause is over: the waiting tasks run again
            running[ctx.call_activity(RUN_CHUNK, input=run, retry_policy=INFRA_RETRY)] = (run, False)
            continue
        if finished.is_failed:
            # Its retries spent (the state store is gone?): its tasks are still reported, as failed.
            summary = yield ctx.call_activity(SAVE_RESULTS, retry_policy=INFRA_RETRY, input=SaveResultsInput(
                batch_id=inp.batch_id, index=run.chunk.index, error=_failure_message(finished)))
            progress.add(ChunkSummary.model_validate(summary))
        else:
            result = ChunkRunResult.model_validate(finished.get_result())
            if result.summary is None:  # tasks wait for another run, after a pause
                again = run.model_copy(update={"run": run.run + 1})
                reruns = max(reruns, again.run)
                running[ctx.create_timer(timedelta(milliseconds=result.pause_ms))] = (again, True)
                continue
            progress.add(result.summary)
            published = result.outcome
        ctx.set_custom_status(progress.model_dump_json())
    if published is not None:  # the batch's only chunk published it
        return _finished(ctx, inp, published)

    try:
        outcome = yield ctx.call_activity(PUBLISH_OUTCOME, retry_policy=INFRA_RETRY, input=PublishInput(
            batch_id=inp.batch_id, chunks=inp.chunks, started_at=started_at, finished_at=_now(ctx), reruns=reruns))
    except wf.TaskFailedError as exc:  # its retries exhausted: say so on the dead-letter topic, then fail
        reason = f"batch {inp.batch_id}: no outcome could be published: {_failure_message_of(exc)}"
        yield ctx.call_activity(DEAD_LETTER_BATCH, retry_policy=INFRA_RETRY, input=BatchFailure(
            batch_id=inp.batch_id, total=inp.total, reason=reason))
        raise
    return _finished(ctx, inp, OutcomeSummary.model_validate(outcome))


def _finished(ctx: wf.DaprWorkflowContext, inp: BatchInput, outcome: OutcomeSummary) -> OutcomeSummary:
    if not ctx.is_replaying:
        log.info("batch finished", extra={"batch_id": inp.batch_id, "total": inp.total})
    return outcome


def _wait_for_admission(ctx: wf.DaprWorkflowContext, inp: BatchInput, slots: int) -> Generator[Any, Any, None]:
    """Join the admission queue and return once the batch's slots are granted (``admission``)."""
    request = AdmissionRequest(batch_id=inp.batch_id, slots=slots, total=inp.total, chunks=inp.chunks,
                               cap=inp.max_tasks_in_progress, since=_now(ctx))
    admitted = ctx.wait_for_external_event(ADMITTED_EVENT)  # one waiter, reused: an event is never lost to it
    while True:
        answer = yield ctx.call_activity(REQUEST_ADMISSION, input=request, retry_policy=INFRA_RETRY)
        if Admission.model_validate(answer).position == 0:
            return
        ctx.set_custom_status(BatchProgress(total=inp.total, queued=True).model_dump_json())
        if (yield wf.when_any([admitted, ctx.create_timer(ADMISSION_RECHECK)])) is admitted:
            return


def _now(ctx: wf.DaprWorkflowContext) -> str:
    # The replay-safe clock; the SDK gives it without a zone, it is UTC.
    return ctx.current_utc_datetime.replace(tzinfo=UTC).isoformat()


def _failure_message(task: Any) -> str:
    return _failure_message_of(task.get_exception())


def _failure_message_of(exc: BaseException) -> str:
    details = getattr(exc, "details", None)
    return getattr(details, "message", None) or str(exc)
