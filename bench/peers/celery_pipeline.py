"""The peer a Python user would otherwise pick: the same rules on Celery, in two shapes.

- ``run_chunked`` (the same shape as Taskfan): each batch is a chord over 100-task chunks, each chunk a
  chain validate -> enrich -> score of one broker task per step, then one aggregate. The row to compare.
- ``run_per_task`` (Celery's textbook shape): a chord of per-task chains, three broker tasks per task. The
  benchmark uses it for slow scoring too (scaling, spread), as a Celery user would: each slow task is a
  broker task that a free worker process takes.

Redis is broker and result backend, with the persistence Taskfan's own Redis has (the benchmark starts
it); validate/enrich run on a `steps` worker, scoring on `score` workers (one per emulated replica,
SCORER_CONCURRENCY processes each, SCORE_DELAY_MS per task). Late acks keep a task on the broker until a
worker finished it, and a step that raises is retried (autoretry): Celery's nearest thing to durability.
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery, chain, chord, group
from celery.result import AsyncResult

from services.enricher.rules import tags_for
from services.scorer.rules import score_for
from services.validator.rules import validation_issues
from services.workflow import aggregate
from taskfan.contracts import TaskResult

BROKER = os.environ.get("BENCH_CELERY_BROKER", "redis://127.0.0.1:6390/0")
TASKS_PER_CHUNK = 100
RETRY = {"autoretry_for": (Exception,), "max_retries": 2, "retry_backoff": True}

app = Celery("taskfan_bench", broker=BROKER, backend=BROKER)
app.conf.update(
    task_serializer="json", result_serializer="json", accept_content=["json"],
    task_acks_late=True, worker_prefetch_multiplier=1, result_expires=3600,
    task_routes={"bench.score*": {"queue": "score"}, "bench.*": {"queue": "steps"}},
    broker_connection_retry_on_startup=True, worker_hijack_root_logger=False,
)


def _score_one(task: dict[str, Any]) -> dict[str, Any]:
    delay_ms = int(os.environ.get("SCORE_DELAY_MS", "0"))
    if delay_ms:
        time.sleep(delay_ms / 1000)
    return aggregate.completed(task["task_id"], {"score": score_for(task["tags"]), "tags": task["tags"]}).model_dump()


# --- the same shape as Taskfan: one broker task per step per chunk ---------------------------------------


@app.task(name="bench.validate_chunk", **RETRY)
def validate_chunk(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**t, "issues": validation_issues(t["title"], t["description"])} for t in tasks]


@app.task(name="bench.enrich_chunk", **RETRY)
def enrich_chunk(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [t if t["issues"] else {**t, "tags": tags_for(t["title"], t["description"])} for t in tasks]


@app.task(name="bench.score_chunk", **RETRY)
def score_chunk(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [aggregate.rejected(t["task_id"], t["issues"]).model_dump() if t["issues"] else _score_one(t)
            for t in tasks]


@app.task(name="bench.aggregate_chunks")
def aggregate_chunks(chunks: list[list[dict[str, Any]]], batch_id: str) -> dict[str, Any]:
    parsed = [TaskResult.model_validate(r) for chunk in chunks for r in chunk]
    return aggregate.aggregate(batch_id, parsed, "", "").model_dump(mode="json")


def run_chunked(batches: list[dict[str, Any]], timeout: float) -> tuple[float, list[float], list[dict[str, Any]]]:
    """Submit every batch as a chord of chunk chains; wait for every aggregate.

    Returns the elapsed seconds, each batch's latency, and the outcomes in the order of ``batches``.
    """
    start = time.perf_counter()
    pending = [(time.perf_counter(), submit_chunked(b)) for b in batches]
    return _collect(start, pending, timeout)


def submit_chunked(batch: dict[str, Any]) -> AsyncResult:
    """Submit one batch as a chord of chunk chains; its result is the batch's aggregate."""
    tasks = batch["tasks"]
    chunks = [tasks[i:i + TASKS_PER_CHUNK] for i in range(0, len(tasks), TASKS_PER_CHUNK)]
    return chord(group(chain(validate_chunk.s(c), enrich_chunk.s(), score_chunk.s()) for c in chunks))(
        aggregate_chunks.s(batch["batch_id"]))


# --- Celery's textbook shape: a chain of three broker tasks per task -------------------------------------


@app.task(name="bench.validate", **RETRY)
def validate(task: dict[str, Any]) -> dict[str, Any]:
    return {**task, "issues": validation_issues(task["title"], task["description"])}


@app.task(name="bench.enrich", **RETRY)
def enrich(task: dict[str, Any]) -> dict[str, Any]:
    if task["issues"]:
        return task
    return {**task, "tags": tags_for(task["title"], task["description"])}


@app.task(name="bench.score", **RETRY)
def score(task: dict[str, Any]) -> dict[str, Any]:
    if task["issues"]:
        return aggregate.rejected(task["task_id"], task["issues"]).model_dump()
    return _score_one(task)


@app.task(name="bench.aggregate")
def aggregate_batch(results: list[dict[str, Any]], batch_id: str) -> dict[str, Any]:
    parsed = [TaskResult.model_validate(r) for r in results]
    return aggregate.aggregate(batch_id, parsed, "", "").model_dump(mode="json")


def run_per_task(batches: list[dict[str, Any]], timeout: float) -> tuple[float, list[float], list[dict[str, Any]]]:
    """Submit every batch as a chord of per-task chains; wait for every aggregate."""
    start = time.perf_counter()
    pending = [(time.perf_counter(), chord(group(chain(validate.s(t), enrich.s(), score.s()) for t in b["tasks"]))(
        aggregate_batch.s(b["batch_id"]))) for b in batches]
    return _collect(start, pending, timeout)


def _collect(start: float, pending: list[tuple[float, Any]],
             timeout: float) -> tuple[float, list[float], list[dict[str, Any]]]:
    latencies, outcomes = [], []
    for submitted, result in pending:
        outcomes.append(result.get(timeout=timeout))
        latencies.append(time.perf_counter() - submitted)  # an upper bound: results are read in order
    return time.perf_counter() - start, latencies, outcomes
