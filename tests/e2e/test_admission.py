"""Admission control and "always an answer" on the real stack: queued batches, terminated batches."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from taskfan.cli.status import queue_position
from taskfan.contracts import ADMISSION_LEDGER_KEY

from .helpers import (
    cli,
    dapr_auth,
    frozen,
    ingest_auth,
    lesson_tasks,
    outcomes_for,
    post_batch,
    wait_for,
    wait_outcome,
)

pytestmark = pytest.mark.e2e


def status(batch_id: str) -> dict:
    done = cli("status", batch_id)
    return json.loads(done.stdout) if done.stdout.strip() else {}


def terminate(stack, settings, batch_id: str) -> None:
    """Through Dapr's own workflow HTTP API, as an operator would."""
    url = f"{stack.run_file.dapr_http_url('workflow')}/v1.0/workflows/dapr/{batch_id}/terminate"
    assert httpx.post(url, timeout=30, headers=dapr_auth(settings, "workflow")).status_code == 202


def test_batches_beyond_the_cap_queue_in_arrival_order_and_terminated_ones_still_get_an_outcome(
        stack, settings, redis_client, batch_id):
    per_batch, cap = stack.settings.max_in_flight, stack.settings.max_tasks_in_progress
    running = [f"{batch_id}-run{i}" for i in range(cap // per_batch)]
    queued = [f"{batch_id}-q{i}" for i in range(3)]
    scorers = [p.name for p in stack.running().processes if p.name.startswith("scorer-") and "daprd" not in p.name]
    # Frozen scorers hold the running batches at their score step (for less than a step's deadline).
    with frozen(stack, scorers):
        for b in running:
            assert post_batch(settings, {"batch_id": b, "tasks": lesson_tasks(b, per_batch)}).status_code == 202
        wait_for(lambda: all(status(b).get("state") == "RUNNING" for b in running), "the first batches to run", 60)
        for place, b in enumerate(queued, start=1):
            assert post_batch(settings, {"batch_id": b, "tasks": lesson_tasks(b, per_batch)}).status_code == 202
            wait_for(lambda b=b, place=place: status(b) == {**status(b), "state": "QUEUED", "position": place},
                     f"{b} to be queued at position {place}", 30)

        terminate(stack, settings, queued[1])  # a queued batch: every task failed, with the reason
        outcome = wait_outcome(redis_client, queued[1], timeout=60)
        assert (outcome["total"], outcome["failed"]) == (per_batch, per_batch)
        assert {r["error"] for r in outcome["results"]} == {
            "chunk: the batch's workflow was terminated before this task finished"}
        assert status(queued[2])["position"] == 2  # the queue closed up

        terminate(stack, settings, running[0])  # a running one: its slots go to the head of the queue
        outcome = wait_outcome(redis_client, running[0], timeout=120)
        assert (outcome["total"], outcome["completed"] + outcome["failed"]) == (per_batch, per_batch)
        wait_for(lambda: status(queued[0]).get("state") == "RUNNING", f"{queued[0]} to be admitted", 30)

    for b in [*running[1:], queued[0], queued[2]]:
        outcome = wait_outcome(redis_client, b, timeout=180)
        assert (outcome["total"], outcome["completed"], outcome["failed"]) == (per_batch, per_batch, 0), b
    for b in [*running, *queued]:
        assert len(outcomes_for(redis_client, b)) == 1, f"{b}: exactly one outcome"


def test_a_long_queue_keeps_the_ledger_small_and_every_place_exact(stack, settings, redis_client, batch_id):
    # 300 batches behind 4 running ones (the scorers frozen): the ledger document stays the size of the running
    # batches, each queued batch knows its place, and all of them finish once the scorers wake.
    per_batch, cap = stack.settings.max_in_flight, stack.settings.max_tasks_in_progress
    running = [f"{batch_id}-run{i}" for i in range(cap // per_batch)]
    # Ids with Dapr's separators: each is in a ticket key, an instance id and the CLI's state URL.
    queued = [f"{batch_id}::q{i:03d}:" for i in range(300)]
    scorers = [p.name for p in stack.running().processes if p.name.startswith("scorer-") and "daprd" not in p.name]
    ledger_key = f"workflow||{ADMISSION_LEDGER_KEY}"
    with frozen(stack, scorers):
        for b in running:
            assert post_batch(settings, {"batch_id": b, "tasks": lesson_tasks(b, per_batch)}).status_code == 202
        wait_for(lambda: all(status(b).get("state") == "RUNNING" for b in running), "the first batches to run", 60)
        # Quickly, from 8 threads: the scorers stay frozen for less than a step's deadline.
        with httpx.Client(base_url=settings.ingest_url, headers=ingest_auth(settings), timeout=30) as http, \
                ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda b: http.post("/batches", json={"batch_id": b, "tasks": lesson_tasks(
                b, 1)}).status_code, queued))
        assert answers == [202] * len(queued)
        ledger_of = lambda: json.loads(redis_client.hget(ledger_key, "data") or b"{}")  # noqa: E731
        wait_for(lambda: ledger_of().get("queued") == len(queued), "every batch to be queued", 30)
        # Every place exactly once, as `taskfan status` reads them (Dapr's state API: the ledger and the ticket).
        assert sorted(queue_position(b) for b in queued) == list(range(1, len(queued) + 1))
        ledger = redis_client.hget(ledger_key, "data")
        assert len(ledger) < 4096, len(ledger)  # the running batches and counts, not 300 entries
        assert json.loads(ledger)["queued"] == len(queued)
    for b in [*running, *queued]:
        outcome = wait_outcome(redis_client, b, timeout=300)
        assert outcome["failed"] == 0, b
    assert json.loads(redis_client.hget(ledger_key, "data"))["queued"] == 0
    leftovers = [k for k in redis_client.scan_iter(match=f"workflow||{ADMISSION_LEDGER_KEY}~*", count=1000)]
    assert leftovers == []  # every queue entry and ticket deleted once admitted
