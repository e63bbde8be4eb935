"""Hostile input on the real stack: every id the contract allows finishes, every bad event is answered in
seconds and acknowledged, and none of it delays a good batch.

Events go onto the ``tasks`` stream with a raw Redis client (the README's raw path) and batches through
ingest's HTTP API, as clients that are not ours send them.
"""

from __future__ import annotations

import json
import random
import statistics
import time
import uuid

import httpx
import pytest

from bench import hostile
from taskfan.contracts import OUTCOMES_TOPIC, TASKS_TOPIC, UNDELIVERABLE_TOPIC, AppId, workflow_instance_id

from .helpers import (
    dapr_auth,
    dead_letters,
    ingest_auth,
    lesson_tasks,
    outcomes_for,
    post_batch,
    stream_events,
    wait_for,
    wait_outcome,
)
from .test_pipeline import cloudevent

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-"
TASKS_PER_BATCH = 150  # two chunks: results cross from one activity to the workflow more than once


def allowed_ids(token: str, rng: random.Random) -> list[str]:
    """Ids the contract allows, shaped after every separator below it (Dapr's ``::``, a trailing ``:``,
    a state key's ``:<kind>:<n>``) and the maximum length; each carries ``token`` so a run has its own."""
    shapes = [f"hx::{token}", f"{token}:", f":{token}", f"::{token}::", f"{token}::::", f"{token}:tasks:00000",
              f"{token}.-.:-", f"-.{token}", f"{token}::run_chunk::0"]
    shapes.append(token + ":" * (128 - len(token)))
    shapes.append((token + "".join(rng.choice(ALPHABET) for _ in range(128)))[:128])
    for _ in range(3):
        middle = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 100)))
        shapes.append(f"{middle[: len(middle) // 2]}{token}{middle[len(middle) // 2:]}")
    return shapes


def test_every_batch_id_the_contract_allows_finishes(stack, settings, redis_client):
    rng = random.Random()
    ids = allowed_ids(uuid.uuid4().hex[:8], rng)
    for i, batch_id in enumerate(ids):
        tasks = lesson_tasks(f"t{i}", TASKS_PER_BATCH)
        if i % 2:  # half through ingest, half as raw events on the stream
            assert post_batch(settings, {"batch_id": batch_id, "tasks": tasks}).status_code == 202, batch_id
        else:
            redis_client.xadd(TASKS_TOPIC, {"data": json.dumps(cloudevent(batch_id, tasks))})
    # Dapr's own workflow API answers under the documented instance id, looked at as each outcome arrives
    # (Dapr purges a completed workflow WORKFLOW_RETENTION_S later); one outcome each.
    dapr = stack.run_file.dapr_http_url(AppId.WORKFLOW)
    unchecked, deadline = set(ids), time.monotonic() + 240
    while unchecked and time.monotonic() < deadline:
        arrived = {e["data"]["batch_id"]: e["data"] for e in stream_events(redis_client, OUTCOMES_TOPIC)}
        for batch_id in unchecked & arrived.keys():
            outcome = arrived[batch_id]
            assert (outcome["total"], outcome["completed"]) == (TASKS_PER_BATCH, TASKS_PER_BATCH), batch_id
            state = httpx.get(f"{dapr}/v1.0/workflows/dapr/{workflow_instance_id(batch_id)}", timeout=10,
                              headers=dapr_auth(settings, "workflow")).json()
            assert state["runtimeStatus"] == "COMPLETED", (batch_id, state)
            unchecked.remove(batch_id)
        time.sleep(0.5)
    assert not unchecked, f"no outcome for {sorted(unchecked)}"
    for batch_id in ids:
        assert len(outcomes_for(redis_client, batch_id)) == 1
        assert not [d for d in dead_letters(redis_client) if batch_id in json.dumps(d)], batch_id


@pytest.mark.parametrize("batch_id", ["a||b", "a~b", "a b", "a/b", "a" * 129, ""])
def test_an_id_outside_the_alphabet_is_refused_with_the_reason(settings, batch_id):
    response = post_batch(settings, {"batch_id": batch_id, "tasks": lesson_tasks("t", 1)})
    assert response.status_code == 422 and "batch_id" in response.json()["error"]


@pytest.mark.parametrize("kind", list(hostile.BODIES))
def test_ingest_answers_a_hostile_body_with_a_4xx_and_a_reason(settings, kind):
    response = httpx.post(f"{settings.ingest_url}/batches", content=hostile.BODIES[kind], timeout=30,
                          headers={"content-type": "application/json", **ingest_auth(settings)})
    assert 400 <= response.status_code < 500 and response.json()["error"], (response.status_code, response.text)


HOSTILE_EVENTS = 100
GOOD_BATCHES = 3


def seconds_to_outcome(settings, redis_client, batch_id: str) -> float:
    started = time.monotonic()
    assert post_batch(settings, {"batch_id": batch_id, "tasks": lesson_tasks("t", 5)}).status_code == 202
    wait_outcome(redis_client, batch_id, timeout=120)
    return time.monotonic() - started


def pending(redis_client, group: str) -> int:
    return redis_client.xpending(TASKS_TOPIC, group)["pending"]


def test_hostile_events_are_dead_lettered_in_seconds_and_never_delay_a_good_batch(settings, redis_client, batch_id):
    idle = [seconds_to_outcome(settings, redis_client, f"{batch_id}-idle-{i}") for i in range(GOOD_BATCHES)]

    kinds = list(hostile.EVENTS)
    markers = {f"hostile-{uuid.uuid4().hex}": kinds[i % len(kinds)] for i in range(HOSTILE_EVENTS)}
    pipe = redis_client.pipeline(transaction=False)
    for marker, kind in markers.items():
        pipe.xadd(TASKS_TOPIC, {"data": hostile.EVENTS[kind](marker)})
    sent = time.monotonic()
    pipe.execute()
    behind = [seconds_to_outcome(settings, redis_client, f"{batch_id}-behind-{i}") for i in range(GOOD_BATCHES)]

    def answered() -> dict[str, list[dict]]:
        letters = [(json.dumps(d["event"]), d) for d in dead_letters(redis_client)]
        found = {m: [d for text, d in letters if m in text] for m in markers}
        return found if all(found.values()) else {}

    found = wait_for(answered, "a dead letter for each hostile event", timeout=60)
    all_answered_s = time.monotonic() - sent
    print(f"\nidle 5-task batch: {statistics.median(idle):.2f} s to its outcome; behind {HOSTILE_EVENTS} hostile "
          f"events: {statistics.median(behind):.2f} s (max {max(behind):.2f}); every hostile event dead-lettered "
          f"{all_answered_s:.1f} s after they were added")
    for marker, letters in found.items():
        assert len(letters) == 1, (markers[marker], letters)  # once: no second delivery, no retry loop
        assert letters[0]["reason"], markers[marker]
    # Nothing is left pending in either subscriber's group: every event was acknowledged, none will be retried.
    for group in (AppId.WORKFLOW, AppId.CONSOLE):
        wait_for(lambda group=group: pending(redis_client, group) == 0, f"no pending event for {group}", timeout=30)
    assert max(behind) <= max(idle) + 5, (idle, behind)
    # Each was answered by the intake itself, not after Dapr's retries ran out.
    assert not any(b"hostile-" in fields[b"data"] for _, fields in redis_client.xrange(UNDELIVERABLE_TOPIC))
