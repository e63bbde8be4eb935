"""The peer a Python user would otherwise pick: the same rules as a Celery chord of per-task chains.

Redis is broker and result backend; validate/enrich run on a `steps` worker, scoring on `score`
workers (one per emulated replica, SCORER_CONCURRENCY processes each, SCORE_DELAY_MS per task).
Late acks keep a task on the broker until a worker finished it: Celery's nearest thing to durability.
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery, chain, chord, group

from services.enricher.rules import tags_for
from services.scorer.rules import score_for
from services.validator.rules import validation_issues
from services.workflow import aggregate
from taskfan.contracts import TaskResult

BROKER = os.environ.get("BENCH_CELERY_BROKER", "redis://127.0.0.1:6390/0")

app = Celery("taskfan_bench", broker=BROKER, backend=BROKER)
app.conf.update(
    task_serializer="json", result_serializer="json", accept_content=["json"],
    task_acks_late=True, worker_prefetch_multiplier=1, result_expires=3600,
    task_routes={"bench.score": {"queue": "score"}, "bench.*": {"queue": "steps"}},
    broker_connection_retry_on_startup=True, worker_hijack_root_logger=False,
)


@app.task(name="bench.validate")
def validate(task: dict[str, Any]) -> dict[str, Any]:
    return {**task, "issues": validation_issues(task["title"], task["description"])}


@app.task(name="bench.enrich")
def enrich(task: dict[str, Any]) -> dict[str, Any]:
    if task["issues"]:
        return task
    return {**task, "tags": tags_for(task["title"], task["description"])}


@app.task(name="bench.score")
def score(task: dict[str, Any]) -> dict[str, Any]:
    if task["issues"]:
        return aggregate.rejected(task["task_id"], task["issues"]).model_dump()
    delay_ms = int(os.environ.get("SCORE_DELAY_MS", "0"))
    if delay_ms:
        time.sleep(delay_ms / 1000)
    return aggregate.completed(task["task_id"], score_for(task["tags"]), task["tags"]).model_dump()


@app.task(name="bench.aggregate")
def aggregate_batch(results: list[dict[str, Any]], batch_id: str) -> dict[str, Any]:
    parsed = [TaskResult.model_validate(r) for r in results]
    return aggregate.aggregate(batch_id, parsed, "", "").model_dump(mode="json")


def run(batches: list[dict[str, Any]], timeout: float) -> float:
    """Submit every batch as a chord, wait for every aggregate; return the elapsed seconds."""
    start = time.perf_counter()
    pending = [
        chord(group(chain(validate.s(t), enrich.s(), score.s()) for t in b["tasks"]))(
            aggregate_batch.s(b["batch_id"]))
        for b in batches
    ]
    for result in pending:
        outcome = result.get(timeout=timeout)
        assert outcome["total"] > 0
    return time.perf_counter() - start
