"""Upgrading with batches in flight, on the real stack: the workflow app restarted on new code (a changed
activity, a new version of the workflow; tests/e2e/upgraded_workflow.py) while batches run and wait. The
batches started before finish on the version they started with, and take the changed activity from then
on; the batches started after run the new version. Every batch its one outcome, every task in it. And a
rolling restart of every app while batches keep arriving: nothing lost, nothing failed.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid

import httpx

from taskfan.stack.drill import restart, roll

from .helpers import REPO_ROOT, dapr_auth, lesson_tasks, outcomes_for, post_batch, stream_events, wait_for
from .upgraded_workflow import mark_key

TASKS = 5_000  # each runs for seconds: the upgrade lands while they run and while some wait for admission
BEFORE = 6  # four run at full width under the default cap, two wait in the queue
ROLL_TASKS = 500  # five chunks a batch: chunks in flight at every restart, and the backlog drains in seconds


def test_batches_in_flight_finish_on_their_version_and_new_ones_run_the_new(stack, settings, redis_client):
    token = uuid.uuid4().hex[:6]
    before = [f"up-{token}-before-{i}" for i in range(BEFORE)]
    for batch_id in before:
        assert post_batch(settings, {"batch_id": batch_id, "tasks": lesson_tasks("t", TASKS)}).status_code == 202
    process = next(p for p in stack.running().processes if p.name == "workflow")
    wait_for(lambda: redis_client.exists(f"workflow||taskfan:{before[-1]}:tasks:00000"),
             "the last batch's tasks stored by the intake", 60)
    # A batch whose workflow has run a step (it set its custom status) has the version it started on in its
    # history; one scheduled but not run yet has no history, and starts on the version current when it runs.
    dapr = stack.run_file.dapr_http_url("workflow")

    def has_run(batch_id: str) -> bool:
        state = httpx.get(f"{dapr}/v1.0/workflows/dapr/{batch_id}", headers=dapr_auth(settings, "workflow"), timeout=10)
        return state.status_code == 200 and bool(state.json().get("properties", {}).get(
            "dapr.workflow.custom_status"))

    wait_for(lambda: has_run(before[0]), "the first batch to run", 60)
    started = [b for b in before if has_run(b)]
    upgraded = [sys.executable, str(REPO_ROOT / "tests" / "e2e" / "upgraded_workflow.py")]
    try:
        restart(stack, "workflow", env={**process.env, "PYTHONPATH": str(REPO_ROOT)}, command=upgraded)
        in_flight = [b for b in before if not outcomes_for(redis_client, b)]
        assert set(in_flight) & set(started), "no batch that had run was still running at the upgrade: nothing tested"
        after = [f"up-{token}-after-{i}" for i in range(2)]
        for batch_id in after:
            assert post_batch(settings, {"batch_id": batch_id, "tasks": lesson_tasks("t", 100)}).status_code == 202
        wait_for(lambda: {e["data"]["batch_id"] for e in stream_events(redis_client, "outcomes")}
                 >= {*before, *after}, "every outcome", 300)
        for batch_id in [*before, *after]:
            outcomes = outcomes_for(redis_client, batch_id)
            assert len(outcomes) == 1, (batch_id, len(outcomes))
            assert outcomes[0]["completed"] == outcomes[0]["total"], (batch_id, outcomes[0])

        def marked(batch_id: str, what: str) -> bool:
            return bool(redis_client.exists(f"workflow||{mark_key(batch_id, what)}"))

        # Run before: their version (no v2 call), the changed activity once it ran on the new code.
        for batch_id in started:
            assert not marked(batch_id, "workflow"), f"{batch_id} replayed on the new version"
        assert all(marked(b, "activity") for b in in_flight), in_flight  # 100 chunks: published by publish_outcome
        # Started after: the new version. (A batch of one chunk publishes from run_chunk, not publish_outcome.)
        assert all(marked(b, "workflow") for b in after)
    finally:
        restart(stack, "workflow", env=process.env, command=process.cmd)


def test_a_rolling_restart_of_every_app_while_batches_arrive_loses_nothing(stack, settings, redis_client):
    """Every app and its sidecar stopped gracefully and started again, one after another (``roll``, what
    `taskfan stack restart --all` runs), while a client keeps publishing: each batch ingest accepted gets
    one outcome with every task completed; a request refused while ingest restarts is simply made again."""
    token = uuid.uuid4().hex[:6]
    accepted: list[str] = []
    rolling = threading.Event()
    rolling.set()

    def publish() -> None:
        number = 0
        while rolling.is_set():
            batch_id = f"roll-{token}-{number}"
            try:
                answer = post_batch(settings, {"batch_id": batch_id, "tasks": lesson_tasks(batch_id, ROLL_TASKS)})
            except httpx.TransportError:  # ingest is restarting: the client tries again
                time.sleep(0.2)
                continue
            if answer.status_code == 202:
                accepted.append(batch_id)
                number += 1
            time.sleep(1)

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    try:
        wait_for(lambda: len(accepted) >= 2, "the first batches accepted", 60)
        restarted: list[str] = []
        roll(stack, progress=restarted.append)
        print(restarted)  # each restart with its time, for a run with -s
    finally:
        rolling.clear()
        publisher.join(timeout=70)
    state = stack.running()
    assert len(restarted) == len(stack.topology.instances(state.scorers, state.replicas)), restarted
    assert len(accepted) >= 10, f"only {len(accepted)} batches were published during the restart"
    wait_for(lambda: {e["data"]["batch_id"] for e in stream_events(redis_client, "outcomes")} >= set(accepted),
             "an outcome for every accepted batch", 300)
    for batch_id in accepted:
        # One outcome: a publish the restart cut short is made again as the same event (its id, its data), which
        # a subscriber drops by CloudEvent id (README, "Failures").
        events = [e for e in stream_events(redis_client, "outcomes") if e["data"]["batch_id"] == batch_id]
        assert {e["id"] for e in events} == {f"outcome:{batch_id}"}, (batch_id, [e["id"] for e in events])
        assert all(e["data"] == events[0]["data"] for e in events), f"two different outcomes for {batch_id}"
        assert (events[0]["data"]["completed"], events[0]["data"]["failed"]) == (ROLL_TASKS, 0), (batch_id, events[0])
    assert stack.status() and all(alive for *_, alive in stack.status())
