"""Exactly one outcome through every window between two writes: the workflow app is held at a named point
(services/workflow/faults.py) and SIGKILLed there, then started again, on the real stack.

"Exactly one": every outcome event of the batch carries the id ``outcome:<batch>`` and the same content (a
subscriber may see a redelivery of the one outcome, README, Contracts), no dead letter names the batch,
every task is in it, and the batch's slots are given back.
"""

from __future__ import annotations

import json

import pytest

from services.workflow import faults
from taskfan.stack import restart

from .conftest import FAULT_POINTS_DIR
from .helpers import dead_letters, frozen, lesson_tasks, post_batch, wait_for, wait_outcome
from .test_admission import status, terminate

pytestmark = pytest.mark.e2e


def one_outcome(redis_client, batch_id: str, total: int) -> dict:
    outcome = wait_outcome(redis_client, batch_id, timeout=240)
    # Settled: the ledger let it go (released after the outcome, by the workflow or the reconciler).
    wait_for(lambda: status(batch_id).get("position") is None and status(batch_id).get("state") in (
        "COMPLETED", "TERMINATED"), f"{batch_id} to be finished and out of the ledger", 60)
    events = [e for e in _outcome_events(redis_client) if e["data"]["batch_id"] == batch_id]
    assert {e["id"] for e in events} == {f"outcome:{batch_id}"}
    assert all(e["data"] == events[0]["data"] for e in events), "two different outcomes for one batch"
    assert outcome["total"] == total and len(outcome["results"]) == total
    assert not [d for d in dead_letters(redis_client) if batch_id in json.dumps(d)]
    return outcome


def _outcome_events(redis_client) -> list[dict]:
    return [json.loads(fields[b"data"]) for _, fields in redis_client.xrange("outcomes")]


@pytest.mark.parametrize(("point", "tasks"), [
    (faults.AFTER_LEDGER_WRITE, 5),
    (faults.AFTER_PUBLISH, 5),  # a batch of one chunk publishes from its run_chunk
    (faults.AFTER_PUBLISH, 150),  # a larger one from publish_outcome
    (faults.AFTER_RECORD, 5),
    (faults.AFTER_RECORD, 150),
])
def test_a_crash_at_a_fault_point_still_ends_in_exactly_one_outcome(stack, settings, redis_client, batch_id,
                                                                     point, tasks):
    faults.arm(FAULT_POINTS_DIR, point)
    try:
        assert post_batch(settings, {"batch_id": batch_id, "tasks": lesson_tasks(batch_id, tasks)}).status_code == 202
        wait_for(lambda: faults.reached(FAULT_POINTS_DIR, point), f"the workflow app to reach {point}", 60)
        restart(stack, "workflow")  # SIGKILL while held there, then start it again
    finally:
        faults.disarm(FAULT_POINTS_DIR, point)
    outcome = one_outcome(redis_client, batch_id, tasks)
    assert outcome["completed"] == tasks


def test_a_crash_in_the_middle_of_answering_for_a_terminated_batch_ends_in_exactly_one_outcome(
        stack, settings, redis_client, batch_id):
    total = 300
    scorers = [p.name for p in stack.running().processes if p.name.startswith("scorer-") and "daprd" not in p.name]
    faults.arm(FAULT_POINTS_DIR, faults.IN_TERMINATE)
    try:
        with frozen(stack, scorers):  # the batch waits at its score step: still running when terminated
            assert post_batch(settings, {"batch_id": batch_id, "tasks": lesson_tasks(batch_id, total)}).status_code \
                == 202
            wait_for(lambda: status(batch_id).get("state") == "RUNNING", "the batch to run", 60)
            terminate(stack, settings, batch_id)
            wait_for(lambda: faults.reached(FAULT_POINTS_DIR, faults.IN_TERMINATE),
                     "the reconciler to answer for the terminated batch", 60)
            restart(stack, "workflow")
    finally:
        faults.disarm(FAULT_POINTS_DIR, faults.IN_TERMINATE)
    outcome = one_outcome(redis_client, batch_id, total)
    assert outcome["failed"] == total  # none got past the frozen scorers
    assert {r["error"] for r in outcome["results"]} == {
        "chunk: the batch's workflow was terminated before this task finished"}
