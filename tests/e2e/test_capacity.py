"""A full stack says so, on the real stack: ingest answers 503 with Retry-After near Redis's memory ceiling
and near a stream's cap, the CLI says so, batches in progress finish, and nothing accepted is lost. The
stream keeper trims only what every consumer group acknowledged.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
import redis

from services.ingest import capacity
from taskfan.contracts import KEEPER_USER, OUTCOMES_TOPIC, TOPICS
from taskfan.stack.drill import restart

from .helpers import cli, lesson_tasks, outcomes_for, post_batch, stream_events, wait_for, wait_outcome

MiB = 2**20


def fill(redis_client, target: int) -> None:
    """Redis filled to ``target`` bytes in use, a MiB per key (a command's own arguments count too)."""
    n = 0
    while int(redis_client.info("memory")["used_memory"]) < target:
        redis_client.set(f"e2e-filler-{n}", b"x" * MiB)
        n += 1


def unfill(redis_client) -> None:
    for key in redis_client.scan_iter("e2e-filler-*"):
        redis_client.delete(key)


def accepted_until_full(settings, prefix: str, limit: int) -> tuple[list[str], dict]:
    """Publish one-task batches until ingest refuses one; the accepted ids and the refusal."""
    accepted = []
    for i in range(limit):
        batch_id = f"{prefix}-{i}"
        response = post_batch(settings, {"batch_id": batch_id, "tasks": lesson_tasks("t", 1)})
        if response.status_code == 503:
            return accepted, {"body": response.json(), "retry_after": response.headers.get("retry-after")}
        assert response.status_code == 202, response.text
        accepted.append(batch_id)
        time.sleep(0.05)
    pytest.fail(f"ingest accepted {limit} batches and never said the stack is full")


def test_near_the_memory_ceiling_new_batches_wait_and_those_in_progress_finish(settings, redis_client, batch_id):
    ceiling = redis_client.config_get("maxmemory")["maxmemory"]
    assert int(ceiling) > 0 and redis_client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
    used = int(redis_client.info("memory")["used_memory"])
    small = used + 128 * MiB
    assert 0.82 * small > used + MiB, f"Redis already holds {used / MiB:.0f} MiB"
    in_progress = post_batch(settings, {"batch_id": batch_id, "tasks": lesson_tasks("t", 10_000)})
    assert in_progress.status_code == 202
    try:
        redis_client.config_set("maxmemory", small)
        # Filled to 82 % of the small ceiling: over ingest's 80 %, with room left for the batch in progress.
        fill(redis_client, int(0.82 * small))
        # Refused once ingest reads Redis again (every READ_EVERY_S; later on a loaded machine): until then a
        # one-task batch is still accepted.
        refused = wait_for(lambda: (r := post_batch(settings, {"tasks": lesson_tasks("t", 1)})).status_code == 503
                           and r, "ingest to refuse new batches", capacity.READ_EVERY_S + 15)
        assert not outcomes_for(redis_client, batch_id), "the batch finished before the ceiling: nothing tested"
        assert refused.status_code == 503 and refused.headers["retry-after"] == str(capacity.RETRY_AFTER_S)
        assert "the stack is full: Redis holds" in refused.json()["error"], refused.text
        shown = cli("publish", "examples/batch.json")
        assert shown.returncode == 1 and "batch refused (503" in shown.stderr and "REDIS_MAXMEMORY" in shown.stderr
        outcome = wait_outcome(redis_client, batch_id, timeout=180)  # under the small ceiling all along
        assert (outcome["total"], outcome["completed"]) == (10_000, 10_000)
        unfill(redis_client)
        wait_for(lambda: post_batch(settings, {"tasks": lesson_tasks("t", 1)}).status_code == 202,
                 "ingest to accept again once Redis has room", 15)
    finally:
        unfill(redis_client)
        redis_client.config_set("maxmemory", ceiling)


def test_near_a_streams_cap_ingest_waits_for_the_group_furthest_behind(stack, settings, redis_client):
    """A consumer group of ``outcomes`` that has read nothing (the group furthest behind: the whole stream),
    and ingest restarted with a cap whose 80 % that group reaches 40 outcomes from now."""
    group = f"e2e-laggard-{uuid.uuid4().hex[:6]}"
    redis_client.xgroup_create(OUTCOMES_TOPIC, group, id="0")
    cap = int((redis_client.xlen(OUTCOMES_TOPIC) + 40) / capacity.FULL_SHARE) + 1
    process = next(p for p in stack.running().processes if p.name == "ingest")
    restart(stack, "ingest", env={**process.env, "STREAM_MAX_ENTRIES": str(cap)})
    try:
        accepted, refusal = accepted_until_full(settings, f"cap-{uuid.uuid4().hex[:6]}", 100)
        assert refusal["retry_after"] == str(capacity.RETRY_AFTER_S)
        assert f"consumer group {group!r}" in refusal["body"]["error"]
        assert f"XGROUP DESTROY outcomes {group}" in refusal["body"]["error"]
        assert len(accepted) >= 30, len(accepted)  # 40, less what other tests' last outcomes added
        # Nothing accepted is lost: every batch has its outcome, once.
        wait_for(lambda: {e["data"]["batch_id"] for e in stream_events(redis_client, OUTCOMES_TOPIC)}
                 >= set(accepted), "the outcome of every accepted batch", 120)
        assert all(len(outcomes_for(redis_client, b)) == 1 for b in accepted)
        redis_client.xgroup_destroy(OUTCOMES_TOPIC, group)
        wait_for(lambda: post_batch(settings, {"tasks": lesson_tasks("t", 1)}).status_code == 202,
                 "ingest to accept again once the group is gone", 15)
    finally:
        redis_client.xgroup_destroy(OUTCOMES_TOPIC, group)
        restart(stack, "ingest", env=process.env)


def test_the_keeper_trims_only_what_every_group_acknowledged(redis_client):
    stream = f"e2e-keeper-{uuid.uuid4().hex[:6]}"
    ids = [redis_client.xadd(stream, {"data": json.dumps({"n": n})}) for n in range(10)]
    redis_client.xgroup_create(stream, "fast", id="0")
    redis_client.xgroup_create(stream, "slow", id="0")
    try:
        fast = redis_client.xreadgroup("fast", "c", {stream: ">"})[0][1]
        redis_client.xack(stream, "fast", *[entry_id for entry_id, _ in fast])
        redis_client.xreadgroup("slow", "c", {stream: ">"}, count=6)  # six delivered, none acknowledged
        redis_client.xack(stream, "slow", ids[0], ids[1], ids[2])
        # Entries 0-2 are acknowledged by both groups; 3-5 are pending in "slow"; 6-9 not yet delivered to it.
        assert capacity.trim(redis_client, retention_s=0, streams=[stream]) == {stream: 3}
        assert [entry_id for entry_id, _ in redis_client.xrange(stream)] == ids[3:]
        assert capacity.trim(redis_client, retention_s=3600, streams=[stream]) == {stream: 0}  # all too young
        redis_client.xack(stream, "slow", *ids[3:6])
        assert capacity.trim(redis_client, retention_s=0, streams=[stream]) == {stream: 3}
        assert [entry_id for entry_id, _ in redis_client.xrange(stream)] == ids[6:]
    finally:
        redis_client.delete(stream)


def test_the_keeper_user_reads_and_trims_the_streams_and_nothing_else(settings):
    keeper = redis.Redis(host=settings.redis_host, port=settings.redis_port, username=KEEPER_USER,
                         password=settings.redis_keeper_password)
    reading = capacity.read(keeper)
    assert reading.maxmemory > 0 and {b.stream for b in reading.backlogs} >= {"tasks", "outcomes"}
    capacity.trim(keeper, retention_s=3600, streams=TOPICS)
    for forbidden in (lambda: keeper.get("batch:x"), lambda: keeper.xrange(OUTCOMES_TOPIC, count=1),
                      lambda: keeper.xadd(OUTCOMES_TOPIC, {"data": "{}"}), lambda: keeper.config_get("*"),
                      lambda: keeper.xinfo_groups("batch:x")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            forbidden()
