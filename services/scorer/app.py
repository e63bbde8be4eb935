"""scorer transport: service invocation method ``score``, an emulated slow model.

``SCORE_DELAY_MS`` is spent waiting (no CPU) and at most ``SCORER_CONCURRENCY`` tasks are in
progress per replica, however many calls arrive; the rest queue. That cap is what makes adding
replicas measurable.

Every answer says which replica gave it, how many slots it has and how long the model took per task:
the workflow learns from them how much scoring capacity there is and how big to make its calls
(services/workflow/scoring.py). A call marked ``may_refuse`` that finds the slots busy and as many tasks
already waiting is answered ``busy`` at once instead, so that the caller can take it to another replica.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dapr.ext.grpc import App

from services.scorer.rules import score_for
from taskfan.contracts import AppId, ScoreRequest, SlotsReport
from taskfan.dapr_app import json_method, per_task, replica_name, serve
from taskfan.settings import Settings

log = logging.getLogger(__name__)


class ScoringFault(RuntimeError):
    """Raised for task ids matched by SCORER_FAIL_TASKS (fault injection)."""


class Scorer:
    def __init__(self, settings: Settings) -> None:
        self.delay_s = settings.score_delay_ms / 1000
        self.fail_pattern = settings.scorer_fail_tasks
        # The model's capacity: this many tasks in progress at once, shared by all calls.
        self.slots = settings.scorer_concurrency
        self.model = ThreadPoolExecutor(max_workers=self.slots, thread_name_prefix="model")
        self.replica = replica_name()
        self.accepted = 0  # tasks of accepted calls not answered yet (in progress or queued)
        self.lock = threading.Lock()

    def score_one(self, request: ScoreRequest) -> dict[str, Any]:
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_pattern and fnmatch.fnmatchcase(request.task_id, self.fail_pattern):
            raise ScoringFault(f"scoring failed for {request.task_id} (SCORER_FAIL_TASKS)")
        return {"score": score_for(request.tags)}

    def score(self, body: dict[str, Any]) -> dict[str, Any]:
        """Score a call's tasks concurrently, within the model's capacity; or refuse it, if allowed and full."""
        tasks = body["tasks"]
        with self.lock:
            # Room for the model's slots and as many tasks again waiting, so that a slot that frees up has its
            # next task at hand; a call bigger than that is refused only while other work is here.
            if body.get("may_refuse") and self.accepted and self.accepted + len(tasks) > 2 * self.slots:
                return self.report(busy=True, in_progress=self.accepted)
            self.accepted += len(tasks)
        try:
            futures = [self.model.submit(self._timed, task) for task in tasks]
            done = [f.result() for f in futures]
        finally:
            with self.lock:
                self.accepted -= len(tasks)
                in_progress = self.accepted  # the other calls' tasks, for the console's scorers page
        model_s = sum(seconds for _, seconds in done)
        # One line per call, naming its tasks: operators (and the scaling tests) see how replicas share the
        # load. Not one per task: on a fast model a log line costs more than scoring the task.
        log.info("scored", extra={"tasks": len(done), "replica": self.replica, "task_ids": [
            task["task_id"] for task, (result, _) in zip(tasks, done, strict=True) if "error" not in result]})
        return {"results": [result for result, _ in done],
                **self.report(task_ms=1000 * model_s / max(1, len(done)), in_progress=in_progress)}

    def report(self, **said: Any) -> dict[str, Any]:
        """What this replica says of its slots (``SlotsReport``)."""
        return SlotsReport(replica=self.replica, slots=self.slots, **said).model_dump(exclude_defaults=True)

    def _timed(self, task: dict[str, Any]) -> tuple[dict[str, Any], float]:
        started = time.perf_counter()
        result = per_task(self.score_one, ScoreRequest)({"tasks": [task]})["results"][0]
        return result, time.perf_counter() - started


def configure(app: App, settings: Settings) -> None:
    app.method("score")(json_method(Scorer(settings).score))


def main() -> None:
    # Request threads only wait for the model's slots, so allow many calls at once: a 50-task chunk
    # alone arrives as 25 concurrent calls.
    settings = Settings.from_env()
    serve(AppId.SCORER, configure, threads=max(64, 2 * settings.scorer_concurrency))


if __name__ == "__main__":
    main()
