"""The Taskfan streams' length and each consumer group's lag, as Redis tells them (``XINFO GROUPS``, ``XLEN``).

The console reads them as the Redis user ``taskfan-console`` (``CONSOLE_REDIS_USER``), which may run those two
commands on Taskfan's streams and nothing else: not read an entry, not add one, not see another key. Its password
is given to the console process alone (the launcher's ``secret_env``, the chart's console Deployment).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import redis
from pydantic import BaseModel

from taskfan.contracts import TOPICS


class GroupLag(BaseModel):
    """One consumer group of a stream."""

    group: str
    # Entries not yet delivered to the group; None: Redis cannot tell (entries were trimmed past the group's
    # last delivered one, or deleted).
    lag: int | None
    pending: int  # delivered to one of its consumers, not acknowledged
    consumers: int


class StreamLag(BaseModel):
    """A stream: its length and its consumer groups (none: no such stream yet, or no group reads it)."""

    stream: str
    length: int
    groups: list[GroupLag] = []


class StreamsNow(BaseModel):
    """``/api/streams``: every Taskfan stream, in ``TOPICS``' order; ``error``: why Redis did not answer."""

    streams: list[StreamLag] = []
    error: str | None = None


def group_lag(said: dict[str, Any]) -> GroupLag:
    """One entry of redis-py's ``xinfo_groups`` answer (its keys decoded, its values as Redis sent them)."""
    lag = said.get("lag")
    return GroupLag(group=_text(said["name"]), lag=None if lag is None else int(lag), pending=int(said["pending"]),
                    consumers=int(said["consumers"]))


def read(client: redis.Redis, streams: Iterable[str] = TOPICS) -> list[StreamLag]:
    """Each stream's length and groups (a stream not made yet: length 0, no group)."""
    found = []
    for stream in streams:
        try:
            groups = client.xinfo_groups(stream)
        except redis.ResponseError as exc:  # a refusal (NOPERM) is not a missing stream: it is raised
            if isinstance(exc, redis.exceptions.NoPermissionError) or "no such key" not in str(exc).lower():
                raise
            found.append(StreamLag(stream=stream, length=0))
            continue
        found.append(StreamLag(stream=stream, length=int(client.xlen(stream)),
                               groups=sorted((group_lag(g) for g in groups), key=lambda g: g.group)))
    return found


def reader(connect: Callable[[], redis.Redis]) -> Callable[[], StreamsNow]:
    """What the console's watcher calls every round: the streams now, or why Redis did not answer (the page shows
    it; the next round asks again, on the same client: redis-py reconnects)."""
    client: redis.Redis | None = None

    def streams_now() -> StreamsNow:
        nonlocal client
        try:
            client = client or connect()
            return StreamsNow(streams=read(client))
        except redis.RedisError as exc:
            return StreamsNow(error=f"the console could not read the streams from Redis: {exc}")

    return streams_now


def _text(value: bytes | str) -> str:
    # A group's name is anybody's (XGROUP CREATE): shown as text whatever its bytes.
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
