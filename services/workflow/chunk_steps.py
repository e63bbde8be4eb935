"""One run of a chunk's tasks through the chain validate -> enrich -> score. Plain logic, no Dapr.

A run takes the tasks still waiting (all of them, from validation, on the first run) through the
remaining steps, one call per step for all of them: a task that validation rejects stops there; a
task whose call failed waits at that step for the next run, ``STEP_ATTEMPTS`` runs at most per step,
then fails with the error. The batch workflow runs the chunk again after a durable backoff
(``STEP_BACKOFF``) while tasks wait: a chunk never fails, so every accepted task ends up in the outcome.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from services.workflow import aggregate
from services.workflow.models import WaitingTask
from taskfan.contracts import ScoreRequest, StepAnswer, Task, TaskResult

VALIDATE, ENRICH, SCORE = "validate", "enrich", "score"
STEP_ATTEMPTS = 3
STEP_BACKOFF = (timedelta(milliseconds=500), timedelta(seconds=1))

TaskStep = Callable[[list[Task]], Awaitable[list[StepAnswer]]]
ScoreStep = Callable[[list[ScoreRequest]], Awaitable[list[StepAnswer]]]


@dataclass(frozen=True)
class Steps:
    """The three step calls; each answers one ``StepAnswer`` per task, in order (an ``error`` if it failed)."""

    validate: TaskStep
    enrich: TaskStep
    score: ScoreStep


@dataclass
class ChainRun:
    finished: list[TaskResult] = field(default_factory=list)
    waiting: list[WaitingTask] = field(default_factory=list)

    def call_failed(self, task: WaitingTask, error: str) -> None:
        if task.attempts + 1 >= STEP_ATTEMPTS:
            self.finished.append(aggregate.failed(task.task_id, task.step, error, task.tags))
        else:
            self.waiting.append(task.model_copy(update={"attempts": task.attempts + 1}))


def from_the_start(tasks: Sequence[Task]) -> list[WaitingTask]:
    return [WaitingTask(task_id=task.task_id, step=VALIDATE) for task in tasks]


async def run_chain(tasks: Sequence[Task], waiting: Sequence[WaitingTask], steps: Steps) -> ChainRun:
    """One run of ``waiting`` (tasks of ``tasks``) through the rest of the chain."""
    by_id = {task.task_id: task for task in tasks}
    run = ChainRun()

    def at(step: str) -> list[WaitingTask]:
        return [task for task in waiting if task.step == step]

    to_enrich = at(ENRICH)
    if to_validate := at(VALIDATE):
        for task, answer in zip(to_validate, await steps.validate([by_id[t.task_id] for t in to_validate]),
                                strict=True):
            if answer.error is not None:
                run.call_failed(task, answer.error)
            elif answer.issues:  # rejected: the task stops here
                run.finished.append(aggregate.rejected(task.task_id, answer.issues))
            else:
                to_enrich.append(WaitingTask(task_id=task.task_id, step=ENRICH))
    to_score = at(SCORE)
    if to_enrich:
        for task, answer in zip(to_enrich, await steps.enrich([by_id[t.task_id] for t in to_enrich]), strict=True):
            if answer.error is not None:
                run.call_failed(task, answer.error)
            else:
                to_score.append(WaitingTask(task_id=task.task_id, step=SCORE, tags=answer.tags))
    if to_score:
        requests = [ScoreRequest(task_id=t.task_id, tags=t.tags or []) for t in to_score]
        for task, answer in zip(to_score, await steps.score(requests), strict=True):
            if answer.error is not None:
                run.call_failed(task, answer.error)
            elif answer.score is None:
                run.finished.append(aggregate.failed(task.task_id, SCORE, "the scorer answered no score", task.tags))
            else:
                run.finished.append(aggregate.completed(task.task_id, answer.score, task.tags or []))
    return run


def backoff(waiting: Sequence[WaitingTask]) -> timedelta:
    """The pause before the next run: by the fewest attempts any waiting task has made."""
    attempts = min(task.attempts for task in waiting)
    return STEP_BACKOFF[min(attempts - 1, len(STEP_BACKOFF) - 1)]


def in_task_order(tasks: Sequence[Task], results: Sequence[TaskResult]) -> list[TaskResult]:
    by_id = {result.task_id: result for result in results}
    return [by_id[task.task_id] for task in tasks]
