"""The floor: the same rules as one asyncio program, no network and no durability."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from typing import Any

from services.enricher.rules import tags_for
from services.scorer.rules import score_for
from services.validator.rules import validation_issues
from services.workflow import aggregate
from taskfan.contracts import Outcome, TaskResult
from taskfan.settings import Settings


async def _process(task: dict[str, Any], replicas: list[asyncio.Semaphore], delay_s: float) -> TaskResult:
    issues = validation_issues(task["title"], task["description"])
    if issues:
        return aggregate.rejected(task["task_id"], issues)
    tags = tags_for(task["title"], task["description"])
    async with random.choice(replicas):  # a scorer replica with SCORER_CONCURRENCY slots
        if delay_s:
            await asyncio.sleep(delay_s)
        score = score_for(tags)
    return aggregate.completed(task["task_id"], {"score": score, "tags": tags})


async def _run(batches: list[dict[str, Any]], replicas: int, concurrency: int, delay_s: float,
               max_in_flight: int) -> float:
    slots = [asyncio.Semaphore(concurrency) for _ in range(replicas)]

    async def batch(b: dict[str, Any]) -> Outcome:
        in_flight = asyncio.Semaphore(max_in_flight)

        async def one(task: dict[str, Any]) -> TaskResult:
            async with in_flight:
                return await _process(task, slots, delay_s)

        results = await asyncio.gather(*(one(t) for t in b["tasks"]))
        return aggregate.aggregate(b["batch_id"], results, "", "")

    start = time.perf_counter()
    outcomes = await asyncio.gather(*(batch(b) for b in batches))
    elapsed = time.perf_counter() - start
    assert sum(o.total for o in outcomes) == sum(len(b["tasks"]) for b in batches)
    return elapsed


def tasks_per_s(batches: list[dict[str, Any]], *, replicas: int = 1, concurrency: int = 8,
                delay_ms: int = 0, max_in_flight: int = Settings.max_in_flight, rounds: int = 1) -> float:
    """The median of ``rounds`` timed runs, after an untimed one when there are several (the warm-up every
    system gets). Without a delay a run lasts a few hundredths of a second, so one run alone swung 5x between
    full runs."""
    total = sum(len(b["tasks"]) for b in batches)

    def once() -> float:
        return asyncio.run(_run(batches, replicas, concurrency, delay_ms / 1000, max_in_flight))

    if rounds > 1:
        once()
    return total / statistics.median(once() for _ in range(rounds))
