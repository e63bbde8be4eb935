"""Where each task of a running batch is right now, for the console. Plain logic, no Dapr.

One book per workflow process, made by the app and handed to the activities, the console's answers, the
reconciler and the metrics. ``run_chunk`` tells it as a chunk's tasks move (the step being called for them,
the result each one ended with); the console asks for one batch's view through the workflow app. It is
memory of this process only: kept until the batch's outcome is out, lost with the process (a task it does
not know is shown waiting until the outcome says what became of it). Thread-safe: the activities write from
the worker's event loop, the console's calls read from the app's request threads."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable

from services.workflow.models import MovingTask
from taskfan.contracts import TaskResult

WAITING = "waiting"
DONE = "done"  # completed: the stage name the console shows
# Batches forgotten lately: an activity still running when its batch was answered for (a terminated
# workflow cannot stop it) must not bring the batch back.
FORGOTTEN_KEPT = 10_000


def final_stage(result: TaskResult) -> str:
    return DONE if result.status == "completed" else result.status


class LiveBatches:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stages: dict[str, dict[str, str]] = {}  # batch id -> task id -> stage
        self._results: dict[str, dict[str, TaskResult]] = {}  # batch id -> task id -> its final result
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
            mine = self._results.setdefault(batch_id, {})
            stages = self._stages.setdefault(batch_id, {})
            for result in results:
                if result.task_id not in mine:
                    self.finished_tasks += 1
                mine[result.task_id] = result
                stages[result.task_id] = final_stage(result)

    def forget(self, batch_id: str) -> None:
        """The batch's outcome is out: the console reads it from there."""
        with self._lock:
            self._stages.pop(batch_id, None)
            self._results.pop(batch_id, None)
            self._forgotten[batch_id] = None
            while len(self._forgotten) > FORGOTTEN_KEPT:
                self._forgotten.popitem(last=False)

    def known(self) -> set[str]:
        """The batches this process has seen tasks of and not forgotten."""
        with self._lock:
            return set(self._stages)

    def view(self, batch_id: str) -> dict[str, MovingTask]:
        """Each known task's stage, with its result once it has one."""
        with self._lock:
            stages = dict(self._stages.get(batch_id, {}))
            results = dict(self._results.get(batch_id, {}))
        view: dict[str, MovingTask] = {}
        for task_id, stage in stages.items():
            result = results.get(task_id)
            view[task_id] = MovingTask(stage=stage, **(result.model_dump(include={"score", "tags", "issues", "error",
                                                                                 "added"}) if result else {}))
        return view

    def stage_counts(self) -> dict[str, int]:
        """Tasks in each step across running batches (waiting tasks are not known here)."""
        counts: dict[str, int] = {}
        with self._lock:
            for stages in self._stages.values():
                for stage in stages.values():
                    counts[stage] = counts.get(stage, 0) + 1
        return counts

