"""Two console replicas on the real stack (`taskfan stack scale --app console --replicas 2`): one writes the history
(the holder of the writer's lease), the other follows what it writes. Batches and dead letters are published while
the writer's app is SIGKILLed with its sidecar kept (a container restart), then while the writer is SIGKILLed with
its sidecar (a pod gone): both consoles list every batch once, with its outcome, and every dead letter once, within a
bounded time. The session's stack is scaled back to one console afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis

from services.console.writing import LEASE_KEY
from taskfan import events
from taskfan.contracts import DEADLETTER_TOPIC, TASK_BATCH_EVENT_TYPE
from taskfan.settings import Settings
from taskfan.stack import Stack
from taskfan.stack.drill import crash_replica, restart

from .helpers import cli, ingest_auth, lesson_tasks, post_batch, wait_for

pytestmark = pytest.mark.e2e

# The lease's lapse (writing.LEASE_S), the redelivery of what a killed writer took (console-pubsub.yaml:
# processingTimeout and redeliverInterval), a flush, and room for a loaded machine.
CAUGHT_UP_S = 90


@pytest.fixture(scope="module")
def consoles(stack: Stack, redis_client: redis.Redis) -> Iterator[dict[str, str]]:
    """The two replicas' process names and web addresses."""
    scaled = cli("stack", "scale", "--app", "console", "--replicas", "2", timeout=300)
    assert scaled.returncode == 0, scaled.stderr
    try:
        state = stack.running()
        assert state is not None
        yield {i.label: stack.topology.console_url(i) for i in stack.consoles(state)}
    finally:
        back = cli("stack", "scale", "--app", "console", "--replicas", "1", timeout=300)
        assert back.returncode == 0, back.stderr
        # The one console left writes again (a stopping writer gives its lease up) before the next tests publish.
        wait_for(lambda: redis_client.hget(f"console||{LEASE_KEY}", "data") == b"0",
                 "the first console to write the history again", 30)


def writer(redis_client: redis.Redis, consoles: dict[str, str]) -> str:
    """The process name of the replica holding the lease (its value: the launcher's replica number)."""
    holder = wait_for(lambda: redis_client.hget(f"console||{LEASE_KEY}", "data"), "a console to hold the lease", 30)
    name = "console" if holder == b"0" else f"console-{holder.decode()}"
    assert name in consoles, (holder, consoles)
    return name


def get(url: str, settings: Settings, path: str, **params: str) -> Any:
    try:
        answer = httpx.get(f"{url}{path}", params=params, headers=ingest_auth(settings), timeout=10)
    except httpx.HTTPError:
        return None  # restarting
    return answer.json() if answer.status_code == 200 else None


def listed(url: str, settings: Settings, prefix: str) -> dict[str, list[dict[str, Any]]]:
    """Every row of the batches whose ids begin with ``prefix``, by id (a batch listed twice has two)."""
    found = get(url, settings, "/api/batches", q=prefix)
    rows: dict[str, list[dict[str, Any]]] = {}
    for row in (found or {}).get("batches", []):
        rows.setdefault(row["batch_id"], []).append(row)
    return rows


def letters(url: str, settings: Settings, marker: str) -> list[dict[str, Any]]:
    found = get(url, settings, "/api/dead-letters")
    return [x for x in (found or {}).get("dead_letters", []) if marker in (x.get("batch_id") or "")]


def publish_some(settings: Settings, redis_client: redis.Redis, prefix: str, round_: str,
                 batches: list[str], refused: list[str]) -> Callable[[], None]:
    def publish() -> None:
        for i in range(3):
            batch_id = f"{prefix}-{round_}-{i}"
            assert post_batch(settings, {"batch_id": batch_id, "tasks": lesson_tasks(batch_id, 3)}).status_code == 202
            batches.append(batch_id)
        batch_id = f"{prefix}-{round_}-refused"
        event = {"specversion": "1.0", "type": TASK_BATCH_EVENT_TYPE, "source": "e2e-test", "id": str(uuid.uuid4()),
                 "datacontenttype": "application/json",
                 "data": {"batch_id": batch_id, "tasks": lesson_tasks(batch_id, 1)}}
        redis_client.xadd(DEADLETTER_TOPIC, {"data": events.dead_letter("refused for the drill", event,
                                                                        source="e2e-test")})
        refused.append(batch_id)
    return publish


def test_two_consoles_show_every_batch_and_dead_letter_once_whichever_is_killed(
        stack: Stack, settings: Settings, redis_client: redis.Redis, consoles: dict[str, str]) -> None:
    prefix = f"e2e-cw-{uuid.uuid4().hex[:8]}"
    batches: list[str] = []
    refused: list[str] = []

    def caught_up(urls: list[str] | None = None) -> bool:
        for url in urls or consoles.values():
            rows = listed(url, settings, prefix)
            if sorted(rows) != sorted(batches) or any(
                    len(rows[b]) != 1 or rows[b][0]["finished_at"] is None or rows[b][0]["completed"] != 3
                    for b in batches):
                return False
            kept = [x["batch_id"] for x in letters(url, settings, prefix)]
            if sorted(kept) != sorted(refused):  # each once
                return False
        return True

    publish_some(settings, redis_client, prefix, "before", batches, refused)()
    wait_for(caught_up, "both consoles to list the first batches and the dead letter", CAUGHT_UP_S)

    # The writer's app killed, its sidecar kept: its stream ends while the sidecar has deliveries in hand.
    restart(stack, writer(redis_client, consoles),
            while_down=publish_some(settings, redis_client, prefix, "app-killed", batches, refused))
    wait_for(caught_up, "both consoles to list what came while the writer's app was down", CAUGHT_UP_S)

    # The writer killed with its sidecar (its pod gone): the other replica takes the lease once it lapses, then
    # gets what the killed one had taken and not answered, and what came meanwhile.
    killed = writer(redis_client, consoles)
    survivor = next(label for label in consoles if label != killed)
    publish = publish_some(settings, redis_client, prefix, "pod-killed", batches, refused)

    def while_gone() -> None:
        publish()
        wait_for(lambda: redis_client.hget(f"console||{LEASE_KEY}", "data") == (
            b"0" if survivor == "console" else survivor.rsplit("-", 1)[-1].encode()),
            "the other console to take the writer's lease", CAUGHT_UP_S)
        wait_for(lambda: caught_up([consoles[survivor]]), "the new writer to list what came meanwhile", CAUGHT_UP_S)

    crash_replica(stack, killed, while_down=while_gone)
    wait_for(caught_up, "the restarted console to follow the new writer", CAUGHT_UP_S)
    assert writer(redis_client, consoles) == survivor  # a replica back does not take the lease from a live writer
    assert len(batches) == 9 and len(refused) == 3
