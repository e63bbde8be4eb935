"""``process_chunk``: validate -> enrich -> score for one chunk of a batch's tasks.

Each step is one activity for the chunk's remaining tasks. A task that validation rejects stops
there. A task whose call fails is retried on its own, with backoff (durable timers), up to
``STEP_ATTEMPTS`` times, then marked failed with the error: a chunk never fails, so every accepted
task ends up in the outcome. Deterministic: no I/O, no clock but the context's.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from datetime import timedelta
from typing import Any

import dapr.ext.workflow as wf
from pydantic import BaseModel

from services.workflow import aggregate
from services.workflow.models import (
    ChunkRef,
    ChunkSummary,
    FirstValidation,
    SaveResultsInput,
    ScoreInput,
    StepInput,
    StepOutput,
)
from services.workflow.names import ENRICH, SAVE_RESULTS, SCORE, VALIDATE, VALIDATE_CHUNK
from services.workflow.retry import INFRA_RETRY
from taskfan.contracts import ScoreRequest, StepAnswer, TaskResult

STEP_ATTEMPTS = 3
STEP_BACKOFF = (timedelta(milliseconds=500), timedelta(seconds=1))

OnFailed = Callable[[str, str, str], None]


def process_chunk(ctx: wf.DaprWorkflowContext, inp: ChunkRef) -> Generator[Any, Any, ChunkSummary]:
    # One activity loads the chunk's tasks and runs their first validation: a round trip saved per chunk.
    first = FirstValidation.model_validate(
        (yield ctx.call_activity(VALIDATE_CHUNK, input=inp, retry_policy=INFRA_RETRY)))
    results: dict[str, TaskResult] = {}
    tags: dict[str, list[str]] = {}

    def step_failed(task_id: str, step: str, error: str) -> None:
        results[task_id] = aggregate.failed(task_id, step, error, tags.get(task_id))

    def by_ids(task_ids: list[str]) -> StepInput:
        return StepInput(chunk=inp, task_ids=task_ids)

    def with_tags(task_ids: list[str]) -> ScoreInput:
        return ScoreInput(tasks=[ScoreRequest(task_id=t, tags=tags[t]) for t in task_ids])

    valid = []
    for task_id, answer in (yield from _run_step(ctx, VALIDATE, first.task_ids, by_ids, step_failed,
                                                 first.validation)):
        if answer.issues:  # rejected: the task stops here
            results[task_id] = aggregate.rejected(task_id, answer.issues)
        else:
            valid.append(task_id)
    for task_id, answer in (yield from _run_step(ctx, ENRICH, valid, by_ids, step_failed)):
        tags[task_id] = answer.tags
    for task_id, answer in (yield from _run_step(ctx, SCORE, list(tags), with_tags, step_failed)):
        if answer.score is None:
            step_failed(task_id, SCORE, "the scorer answered no score")
        else:
            results[task_id] = aggregate.completed(task_id, answer.score, tags[task_id])

    ordered = [results[task_id] for task_id in first.task_ids]
    summary = yield ctx.call_activity(SAVE_RESULTS, retry_policy=INFRA_RETRY, input=SaveResultsInput(
        batch_id=inp.batch_id, index=inp.index, results=ordered))
    return ChunkSummary.model_validate(summary)


def _run_step(ctx: wf.DaprWorkflowContext, step: str, task_ids: list[str],
              step_input: Callable[[list[str]], BaseModel], on_failed: OnFailed,
              first_answers: list[StepAnswer] | None = None) -> Generator[Any, Any, list[tuple[str, StepAnswer]]]:
    """Run one step for ``task_ids``; retry the tasks whose call failed; return (task id, answer) pairs.

    ``first_answers``, when given, are the answers of a first attempt already made.
    """
    done: list[tuple[str, StepAnswer]] = []
    pending = list(task_ids)
    for attempt in range(STEP_ATTEMPTS):
        if not pending:
            break
        if attempt == 0 and first_answers is not None:
            answers = first_answers
        else:
            if attempt:
                yield ctx.create_timer(STEP_BACKOFF[min(attempt - 1, len(STEP_BACKOFF) - 1)])
            try:
                answers = StepOutput.model_validate((yield ctx.call_activity(step, input=step_input(pending)))).answers
            except wf.TaskFailedError as exc:  # the activity itself failed: every task failed this attempt
                error = exc.details.message if exc.details else str(exc)
                answers = [StepAnswer(task_id=task_id, error=error) for task_id in pending]
        retry = []
        for task_id, answer in zip(pending, answers, strict=True):
            if answer.error is None:
                done.append((task_id, answer))
            elif attempt == STEP_ATTEMPTS - 1:
                on_failed(task_id, step, answer.error)
            else:
                retry.append(task_id)
        pending = retry
    return done
