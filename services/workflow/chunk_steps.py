"""One run of a chunk's tasks through the pipeline's steps (pipeline.yaml), in order. Plain logic, no Dapr.

A run takes the tasks still waiting (all of them, at the first step, on the first run) through the remaining
steps, one call per step for all the tasks at it: a task a step rejects (``may_reject``, an answer with
issues) stops there; a task whose call failed waits at that step for the next run, ``STEP_ATTEMPTS`` runs at
most per step, then fails with the error; a task through every step is completed with what the steps added.
The batch workflow runs the chunk again after a durable backoff (``STEP_BACKOFF``) while tasks wait: a chunk
never fails, so every accepted task ends up in the outcome.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pydantic_core

from services.workflow import aggregate
from services.workflow.models import WaitingTask
from taskfan.contracts import MAX_ADDED_BYTES, StepAnswer, Task, TaskResult
from taskfan.pipeline import TASK_FIELDS, Pipeline, Step

STEP_ATTEMPTS = 3
STEP_BACKOFF = (timedelta(milliseconds=500), timedelta(seconds=1))

# One call of a step for some tasks: the tasks' requests (task_id and what the step reads) in, one answer per
# task out, in order (an ``error`` if it failed for that task).
StepCall = Callable[[Step, list[dict[str, Any]]], Awaitable[list[StepAnswer]]]


@dataclass
class ChainRun:
    finished: list[TaskResult] = field(default_factory=list)
    waiting: list[WaitingTask] = field(default_factory=list)

    def call_failed(self, task: WaitingTask, error: str) -> None:
        if task.attempts + 1 >= STEP_ATTEMPTS:
            self.finished.append(aggregate.failed(task.task_id, task.step, error, task.added))
        else:
            self.waiting.append(task.model_copy(update={"attempts": task.attempts + 1}))


def from_the_start(pipeline: Pipeline, tasks: Sequence[Task]) -> list[WaitingTask]:
    return [WaitingTask(task_id=task.task_id, step=pipeline.steps[0].name) for task in tasks]


def request(step: Step, task: Task, added: dict[str, Any]) -> dict[str, Any]:
    """What ``step`` is sent for ``task``: its id and the fields the step reads."""
    return {"task_id": task.task_id,
            **{name: getattr(task, name) if name in TASK_FIELDS else added[name] for name in step.reads}}


async def run_chain(pipeline: Pipeline, tasks: Sequence[Task], waiting: Sequence[WaitingTask],
                    call: StepCall) -> ChainRun:
    """One run of ``waiting`` (tasks of ``tasks``) through the rest of the chain."""
    by_id = {task.task_id: task for task in tasks}
    run = ChainRun()
    known = set(pipeline.names)
    for task in waiting:
        if task.step not in known:  # saved by a worker whose pipeline had that step
            run.finished.append(aggregate.failed(task.task_id, task.step, "the step is no longer in the pipeline",
                                                 task.added))
    moved_on: list[WaitingTask] = []  # tasks the previous step passed on in this run
    for position, step in enumerate(pipeline.steps):
        here = [task for task in waiting if task.step == step.name] + moved_on
        moved_on = []
        if not here:
            continue
        answers = await call(step, [request(step, by_id[task.task_id], task.added) for task in here])
        following = pipeline.steps[position + 1] if position + 1 < len(pipeline.steps) else None
        for task, answer in zip(here, answers, strict=True):
            if answer.error is not None:
                run.call_failed(task, answer.error)
            elif step.may_reject and answer.issues:  # rejected: the task stops here
                run.finished.append(aggregate.rejected(task.task_id, answer.issues))
            else:
                added, wrong = _with_added(step, task.added, answer)
                if wrong is not None:  # the app's answer, not the call, is wrong: asking again gets the same
                    run.finished.append(aggregate.failed(task.task_id, step.name, wrong, task.added))
                elif following is None:
                    run.finished.append(aggregate.completed(task.task_id, added))
                else:
                    # Built without validation: every field comes from a validated model or the pipeline.
                    moved_on.append(WaitingTask.model_construct(task_id=task.task_id, step=following.name,
                                                                attempts=0, added=added))
    return run


def _with_added(step: Step, before: dict[str, Any], answer: StepAnswer) -> tuple[dict[str, Any], str | None]:
    """What the task holds once ``answer`` added to it; or what is wrong with the answer."""
    if not step.adds:  # nothing added: what the task holds was measured when it was added
        return before, None
    try:
        added = {**before, **step.added(answer.model_extra or {})}
    except ValueError as exc:
        return before, f"{step.app_id}/{step.method} {exc}"
    try:
        size = len(pydantic_core.to_json(added))
    except pydantic_core.PydanticSerializationError:
        return before, f"{step.app_id}/{step.method} answered text that is not Unicode (a lone surrogate)"
    if size > MAX_ADDED_BYTES:
        return before, f"{step.app_id}/{step.method} added more than {MAX_ADDED_BYTES} bytes to the task"
    return added, None


def backoff(waiting: Sequence[WaitingTask]) -> timedelta:
    """The pause before the next run: by the fewest attempts any waiting task has made."""
    attempts = min(task.attempts for task in waiting)
    return STEP_BACKOFF[min(attempts - 1, len(STEP_BACKOFF) - 1)]


def in_task_order(tasks: Sequence[Task], results: Sequence[TaskResult]) -> list[TaskResult]:
    by_id = {result.task_id: result for result in results}
    return [by_id[task.task_id] for task in tasks]
