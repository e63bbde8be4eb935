"""Where each task of a running batch is right now. Plain logic, no Dapr.

Two views. ``ChunkStages``: one chunk's tasks, kept in the state store by the run of the chunk (shortly after its
tasks enter a step, and when the run ends: ``StagesWrites``), so that whichever workflow process the console's
call reaches answers for every chunk, wherever it ran. ``LiveBatches``: one book per workflow process, of the
tasks its own runs move, for what this process measures (the tasks in each step, the tasks it finished); kept
until the batch leaves the ledger. Thread-safe: the activities write from the worker's event loop, the console's
calls and the metrics read from other threads."""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import pydantic_core

from services.workflow.models import MovingTask
from taskfan.contracts import TaskResult

WAITING = "waiting"
DONE = "done"  # completed: the stage name the console shows
FINAL_STAGES = frozenset({DONE, "rejected", "failed"})
# Batches forgotten lately: an activity still running when its batch was answered for (a terminated
# workflow cannot stop it) must not bring the batch back.
FORGOTTEN_KEPT = 10_000
# How long a chunk's stages wait to be written once its tasks enter a step: a step that answers sooner is never
# written (the next write says more), one that takes longer shows on the console this late at most.
STAGES_WRITE_DELAY_S = 0.25


def final_stage(result: TaskResult) -> str:
    return DONE if result.status == "completed" else result.status


def moved_entry(result: TaskResult) -> dict[str, Any]:
    """A finished task as the console shows it (its final stage and its result's parts), as ``ChunkStages``
    stores it: a ``MovingTask`` without its defaults, in JSON's terms."""
    entry: dict[str, Any] = {"stage": final_stage(result)}
    if result.score is not None:
        entry["score"] = result.score
    for name in ("tags", "issues"):
        if value := getattr(result, name):
            entry[name] = list(value)
    if result.error is not None:
        entry["error"] = result.error
    if result.added:
        entry["added"] = result.added
    return entry


class ChunkStages:
    """Each task of one chunk: the step it is in, or its result; the chunk's value in the state store.

    Kept as the JSON it is saved as (a ``MovingTask`` without its defaults, per task): the chunk's run writes
    it as its tasks enter each step, and a model per task each time cost more than the write."""

    def __init__(self, finished: Iterable[TaskResult] = ()) -> None:
        self.tasks: dict[str, dict[str, Any]] = {}
        self.finished(finished)

    def moving(self, stage: str, task_ids: Iterable[str]) -> None:
        entry = {"stage": stage}  # shared: never changed, only replaced
        self.tasks.update((task_id, entry) for task_id in task_ids)

    def finished(self, results: Iterable[TaskResult]) -> None:
        for result in results:
            self.tasks[result.task_id] = moved_entry(result)

    def encode(self) -> bytes:
        return pydantic_core.to_json(self.tasks)

    @staticmethod
    def decode(data: bytes) -> dict[str, MovingTask]:
        return {task_id: MovingTask.model_validate(task) for task_id, task in pydantic_core.from_json(data).items()}


class StagesWrites:
    """When a run of a chunk writes its stages (``save``, with the encoded stages): its tasks entering a step start
    a write ``delay_s`` later unless one is waiting already (it writes the stages as they are then), and the end of
    the run writes at once (``now``). So a chunk whose steps answer fast is written once per run, not once per step
    and once at its end, and the console still sees a step that takes longer. One write at a time, in order: a
    write in flight is waited for, never cancelled, so an older view cannot land after a newer one."""

    def __init__(self, stages: ChunkStages, save: Callable[[str], Awaitable[None]],
                 delay_s: float | None = None) -> None:
        self.stages, self.save = stages, save
        self.delay_s = STAGES_WRITE_DELAY_S if delay_s is None else delay_s
        self._deferred: asyncio.Task[None] | None = None
        self._writing = False

    async def entering(self, stage: str, task_ids: list[str]) -> None:
        self.stages.moving(stage, task_ids)
        if self._deferred is None or self._deferred.done():
            self._deferred = asyncio.create_task(self._later())

    async def _later(self) -> None:
        await asyncio.sleep(self.delay_s)
        self._writing = True
        try:
            await self.save(self.stages.encode())
        finally:
            self._writing = False

    def drop_deferred(self) -> bool:
        """Drop a deferred write that has not started; whether one was dropped (one in flight runs on)."""
        if self._deferred is not None and not self._deferred.done() and not self._writing:
            self._deferred.cancel()
            self._deferred = None
            return True
        return False

    async def now(self) -> None:
        """Write the stages now, after a write in flight; a deferred write not started yet is dropped."""
        await self.settled()
        await self.save(self.stages.encode())

    async def settled(self) -> None:
        """No write from now on: a deferred write not started yet is dropped, one in flight is waited for (so that
        it cannot land after the stages are deleted)."""
        if not self.drop_deferred() and self._deferred is not None:
            await self._deferred
        self._deferred = None


class LiveBatches:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stages: dict[str, dict[str, str]] = {}  # batch id -> task id -> stage
        self.finished_tasks = 0  # tasks this process finished, ever: the console's throughput counter
        self._forgotten: OrderedDict[str, None] = OrderedDict()

    def moving(self, batch_id: str, stage: str, task_ids: Iterable[str]) -> None:
        """These tasks of the batch are now in ``stage`` (a step being called for them)."""
        with self._lock:
            if batch_id in self._forgotten:
                return
            stages = self._stages.setdefault(batch_id, {})
            for task_id in task_ids:
                stages[task_id] = stage

    def finished(self, batch_id: str, results: Iterable[TaskResult]) -> None:
        with self._lock:
            if batch_id in self._forgotten:
                return
            stages = self._stages.setdefault(batch_id, {})
            for result in results:
                if stages.get(result.task_id) not in FINAL_STAGES:  # a run again counts a task once
                    self.finished_tasks += 1
                stages[result.task_id] = final_stage(result)

    def forget(self, batch_id: str) -> None:
        """The batch's outcome is out: the console reads it from there."""
        with self._lock:
            self._stages.pop(batch_id, None)
            self._forgotten[batch_id] = None
            while len(self._forgotten) > FORGOTTEN_KEPT:
                self._forgotten.popitem(last=False)

    def known(self) -> set[str]:
        """The batches this process has seen tasks of and not forgotten."""
        with self._lock:
            return set(self._stages)

    def stage_counts(self) -> dict[str, int]:
        """Tasks in each step across running batches (waiting tasks are not known here)."""
        counts: dict[str, int] = {}
        with self._lock:
            for stages in self._stages.values():
                for stage in stages.values():
                    counts[stage] = counts.get(stage, 0) + 1
        return counts

