"""``process_chunk``: validate -> enrich -> score for one chunk of a batch's tasks.

Each step is one activity for the chunk's remaining tasks. A task that validation rejects stops
there. A task whose call fails is retried on its own, with backoff (durable timers), up to
``STEP_ATTEMPTS`` times, then marked failed with the error: a chunk never fails, so every accepted
task ends up in the outcome. Deterministic: no I/O, no clock but the context's.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import dapr.ext.workflow as wf
from pydantic import BaseModel

from services.workflow import aggregate
from services.workflow.models import (
    ChunkRef,
    ChunkSummary,
    LoadedChunk,
    SaveResultsInput,
    ScoreInput,
    StepInput,
    StepOutput,
)
from services.workflow.names import ENRICH, SAVE_RESULTS, SCORE, VALIDATE, VALIDATE_CHUNK
from services.workflow.retry import INFRA_RETRY
from taskfan.contracts import ScoreRequest, StepAnswer, Task, TaskResult

STEP_ATTEMPTS = 3
STEP_BACKOFF = (timedelta(milliseconds=500), timedelta(seconds=1))

Item = TypeVar("Item", Task, ScoreRequest)
OnFailed = Callable[[str, str, str], None]


def process_chunk(ctx: wf.DaprWorkflowContext, inp: ChunkRef) -> Generator[Any, Any, ChunkSummary]:
    # One activity loads the chunk's tasks and runs their first validation: a round trip saved per chunk.
    first = LoadedChunk.model_validate((yield ctx.call_activity(VALIDATE_CHUNK, input=inp, retry_policy=INFRA_RETRY)))
    results: dict[str, TaskResult] = {}
    tags: dict[str, list[str]] = {}

    def step_failed(task_id: str, step: str, error: str) -> None:
        results[task_id] = aggregate.failed(task_id, step, error, tags.get(task_id))

    valid = []
    for task, answer in (yield from _run_step(ctx, VALIDATE, first.tasks, step_failed, first.validation)):
        if answer.issues:  # rejected: the task stops here
            results[task.task_id] = aggregate.rejected(task.task_id, answer.issues)
        else:
            valid.append(task)
    to_score = []
    for task, answer in (yield from _run_step(ctx, ENRICH, valid, step_failed)):
        tags[task.task_id] = answer.tags
        to_score.append(ScoreRequest(task_id=task.task_id, tags=answer.tags))
    for request, answer in (yield from _run_step(ctx, SCORE, to_score, step_failed)):
        if answer.score is None:
            step_failed(request.task_id, SCORE, "the scorer answered no score")
        else:
            results[request.task_id] = aggregate.completed(request.task_id, answer.score, request.tags)

    ordered = [results[task.task_id] for task in first.tasks]
    summary = yield ctx.call_activity(SAVE_RESULTS, retry_policy=INFRA_RETRY, input=SaveResultsInput(
        batch_id=inp.batch_id, index=inp.index, results=ordered))
    return ChunkSummary.model_validate(summary)


def _step_input(step: str, items: Sequence[Item]) -> BaseModel:
    return ScoreInput(tasks=list(items)) if step == SCORE else StepInput(tasks=list(items))


def _run_step(ctx: wf.DaprWorkflowContext, step: str, items: Sequence[Item], on_failed: OnFailed,
              first_answers: list[StepAnswer] | None = None) -> Generator[Any, Any, list[tuple[Item, StepAnswer]]]:
    """Run one step for ``items``; retry the items whose call failed; return (item, answer) pairs.

    ``first_answers``, when given, are the answers of a first attempt already made.
    """
    done: list[tuple[Item, StepAnswer]] = []
    pending = list(items)
    for attempt in range(STEP_ATTEMPTS):
        if not pending:
            break
        if attempt == 0 and first_answers is not None:
            answers = first_answers
        else:
            if attempt:
                yield ctx.create_timer(STEP_BACKOFF[min(attempt - 1, len(STEP_BACKOFF) - 1)])
            try:
                answers = StepOutput.model_validate(
                    (yield ctx.call_activity(step, input=_step_input(step, pending)))).answers
            except wf.TaskFailedError as exc:  # the activity itself failed: every item failed this attempt
                error = exc.details.message if exc.details else str(exc)
                answers = [StepAnswer(task_id=item.task_id, error=error) for item in pending]
        retry = []
        for item, answer in zip(pending, answers, strict=True):
            if answer.error is None:
                done.append((item, answer))
            elif attempt == STEP_ATTEMPTS - 1:
                on_failed(item.task_id, step, answer.error)
            else:
                retry.append(item)
        pending = retry
    return done
