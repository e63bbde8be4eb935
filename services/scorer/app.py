"""scorer transport: service invocation method ``score``, an emulated slow model.

``SCORE_DELAY_MS`` is spent waiting (no CPU) and at most ``SCORER_CONCURRENCY`` tasks are in
progress per replica, however many calls arrive; the rest queue. That cap is what makes adding
replicas measurable.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dapr.ext.grpc import App

from services.scorer.rules import score_for
from taskfan.contracts import AppId, ScoreRequest
from taskfan.dapr_app import json_method, per_task, serve
from taskfan.settings import Settings

log = logging.getLogger(__name__)


class ScoringFault(RuntimeError):
    """Raised for task ids matched by SCORER_FAIL_TASKS (fault injection)."""


class Scorer:
    def __init__(self, settings: Settings) -> None:
        self.delay_s = settings.score_delay_ms / 1000
        self.fail_pattern = settings.scorer_fail_tasks
        # The model's capacity: this many tasks in progress at once, shared by all calls.
        self.model = ThreadPoolExecutor(max_workers=settings.scorer_concurrency, thread_name_prefix="model")
        self.replica = os.environ.get("TASKFAN_REPLICA", "0")

    def score_one(self, request: ScoreRequest) -> dict[str, Any]:
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_pattern and fnmatch.fnmatchcase(request.task_id, self.fail_pattern):
            raise ScoringFault(f"scoring failed for {request.task_id} (SCORER_FAIL_TASKS)")
        score = score_for(request.tags)
        # One line per task: operators (and the scaling test) see how replicas share the load.
        log.info("scored", extra={"task_id": request.task_id, "score": score, "replica": self.replica})
        return {"score": score}

    def score(self, body: dict[str, Any]) -> dict[str, Any]:
        """Score a call's tasks concurrently, within the model's capacity."""
        futures = [self.model.submit(per_task(self.score_one, ScoreRequest), {"tasks": [task]})
                   for task in body["tasks"]]
        return {"results": [f.result()["results"][0] for f in futures]}


def configure(app: App, settings: Settings) -> None:
    app.method("score")(json_method(Scorer(settings).score))


def main() -> None:
    # Request threads only wait for the model's slots, so allow many calls at once: a 50-task chunk
    # alone arrives as 25 concurrent calls.
    settings = Settings.from_env()
    serve(AppId.SCORER, configure, threads=max(64, 2 * settings.scorer_concurrency))


if __name__ == "__main__":
    main()
