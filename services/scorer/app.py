"""scorer transport: service invocation method ``score``, an emulated slow model.

``SCORE_DELAY_MS`` is spent waiting (no CPU) and at most ``SCORER_CONCURRENCY`` tasks are in
progress per replica; the rest queue. That cap is what makes adding replicas measurable.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
import time
from typing import Any

from dapr.ext.grpc import App

from taskfan.contracts import AppId
from taskfan.dapr_app import json_method, serve
from taskfan.scorer.rules import score_for
from taskfan.settings import Settings

log = logging.getLogger(__name__)


class ScoringFault(RuntimeError):
    """Raised for task ids matched by SCORER_FAIL_TASKS (fault injection)."""


class Scorer:
    def __init__(self, settings: Settings) -> None:
        self.delay_s = settings.score_delay_ms / 1000
        self.fail_pattern = settings.scorer_fail_tasks
        self.slots = threading.BoundedSemaphore(settings.scorer_concurrency)
        self.replica = os.environ.get("TASKFAN_REPLICA", "0")

    def score(self, body: dict[str, Any]) -> dict[str, Any]:
        task_id = str(body["task_id"])
        with self.slots:
            if self.delay_s:
                time.sleep(self.delay_s)
            if self.fail_pattern and fnmatch.fnmatchcase(task_id, self.fail_pattern):
                raise ScoringFault(f"scoring failed for {task_id} (SCORER_FAIL_TASKS)")
            score = score_for(body.get("tags", []))
        # One line per task: operators (and the scaling test) see how replicas share the load.
        log.info("scored", extra={"task_id": task_id, "score": score, "replica": self.replica})
        return {"score": score}


def configure(app: App, settings: Settings) -> None:
    app.method("score")(json_method(Scorer(settings).score))


def main() -> None:
    settings = Settings.from_env()
    # Enough threads that SCORER_CONCURRENCY tasks can wait out their delay at once.
    serve(AppId.SCORER, configure, threads=settings.scorer_concurrency + 8)


if __name__ == "__main__":
    main()
