"""Whether the stack can take another batch, and the streams kept to what they must hold.

Redis holds both the pub/sub streams and the batches' state, with a ceiling (``maxmemory``) and no eviction.
Ingest refuses a new batch with a 503 and ``Retry-After`` while Redis holds 80 % of its ceiling (batches in
progress keep the rest to finish), or while some consumer group of a Taskfan stream has 80 % of the stream's
cap (``STREAM_MAX_ENTRIES``, Dapr's ``maxLenApprox``) not yet acknowledged: Dapr trims a stream to its cap
on every publish, so beyond that a new event could push out one not yet read.

The stream keeper trims what every group has acknowledged once it is ``STREAM_RETENTION_S`` old, so a
stream holds its backlog and the last while, not the last ``maxLenApprox`` events whatever their size.

Both read Redis as the ``taskfan-keeper`` user, which may run only the commands used here, and only on the
streams (the launcher's Redis ACL): ingest never holds the Redis password.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import redis

from taskfan.contracts import TOPICS

log = logging.getLogger(__name__)

FULL_SHARE = 0.8
RETRY_AFTER_S = 10
READ_EVERY_S = 1.0  # a reading serves every request for this long
TRIM_EVERY_S = 30.0


@dataclass(frozen=True)
class Backlog:
    stream: str
    group: str
    events: int  # not yet delivered to the group, or delivered and not acknowledged


@dataclass(frozen=True)
class Reading:
    used_memory: int
    maxmemory: int  # 0: no ceiling
    backlogs: tuple[Backlog, ...]


def refusal(reading: Reading, stream_cap: int) -> str | None:
    """Why a new batch must wait now (the 503's message), or None."""
    if reading.maxmemory and reading.used_memory >= FULL_SHARE * reading.maxmemory:
        return (f"the stack is full: Redis holds {reading.used_memory / 2**20:,.0f} MiB of its "
                f"{reading.maxmemory / 2**20:,.0f} MiB ceiling (REDIS_MAXMEMORY); batches in progress finish "
                f"first, try again in {RETRY_AFTER_S} s")
    worst = max(reading.backlogs, key=lambda b: b.events, default=None)
    if worst is not None and worst.events >= FULL_SHARE * stream_cap:
        return (f"the stack is full: consumer group {worst.group!r} has {worst.events:,} events of {worst.stream!r} "
                f"not yet acknowledged, near the stream's cap of {stream_cap:,} (STREAM_MAX_ENTRIES); it must "
                f"catch up (or be removed: XGROUP DESTROY {worst.stream} {worst.group}); try again in "
                f"{RETRY_AFTER_S} s")
    return None


def read(client: redis.Redis, streams: Iterable[str] = TOPICS) -> Reading:
    memory = client.info("memory")
    backlogs = []
    for stream in streams:
        try:
            groups = client.xinfo_groups(stream)
        except redis.ResponseError:  # no such stream yet
            continue
        length = None
        for group in groups:
            lag = group.get("lag")
            if lag is None:  # Redis cannot tell after a trim: count from the stream's length, an upper bound
                length = client.xlen(stream) if length is None else length
                lag = length
            backlogs.append(Backlog(stream, _text(group["name"]), int(lag) + int(group["pending"])))
    return Reading(int(memory["used_memory"]), int(memory.get("maxmemory", 0)), tuple(backlogs))


def trim_point(client: redis.Redis, stream: str, retention_s: float, now_ms: int) -> str:
    """The id before which every entry of ``stream`` is acknowledged by every group and older than the
    retention: ``XTRIM MINID`` to it removes only what nobody needs."""
    point = (now_ms - int(retention_s * 1000), 0)
    for group in client.xinfo_groups(stream):
        if int(group["pending"]):
            oldest = _id(client.xpending(stream, group["name"])["min"])
        else:
            last = _id(group["last-delivered-id"])
            oldest = (last[0], last[1] + 1)
        point = min(point, oldest)
    return f"{point[0]}-{point[1]}"


def trim(client: redis.Redis, retention_s: float, streams: Iterable[str] = TOPICS) -> dict[str, int]:
    """Trim each stream to its trim point; how many entries each lost."""
    trimmed = {}
    now_ms = int(time.time() * 1000)
    for stream in streams:
        try:
            trimmed[stream] = client.xtrim(stream, minid=trim_point(client, stream, retention_s, now_ms),
                                           approximate=False)
        except redis.ResponseError:  # no such stream yet
            continue
    return trimmed


def _id(value: bytes | str) -> tuple[int, int]:
    ms, _, seq = _text(value).partition("-")
    return int(ms), int(seq or 0)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Gauge:
    """The latest reading (at most ``READ_EVERY_S`` old) for ingest's requests, and the keeper's loop.

    A reading that fails (Redis restarting) refuses nothing: the publish itself then answers."""

    def __init__(self, connect: Callable[[], redis.Redis], stream_cap: int, retention_s: float) -> None:
        self.connect = connect
        self.stream_cap = stream_cap
        self.retention_s = retention_s
        self._client: redis.Redis | None = None
        self._lock = threading.Lock()
        self._reading: tuple[float, Reading] | None = None
        self._stop = threading.Event()

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            self._client = self.connect()
        return self._client

    def refusal(self) -> str | None:
        with self._lock:
            now = time.monotonic()
            if self._reading is None or now - self._reading[0] > READ_EVERY_S:
                try:
                    self._reading = (now, read(self.client))
                except redis.RedisError as exc:
                    log.warning("could not read Redis's memory and backlogs", extra={"error": str(exc)})
                    return None
            return refusal(self._reading[1], self.stream_cap)

    def keep(self) -> None:
        """Trim the streams every ``TRIM_EVERY_S`` until ``stop``."""
        while not self._stop.wait(TRIM_EVERY_S):
            try:
                trimmed = trim(self.client, self.retention_s)
            except redis.RedisError as exc:
                log.warning("could not trim the streams", extra={"error": str(exc)})
                continue
            if any(trimmed.values()):
                log.info("streams trimmed", extra={"trimmed": trimmed})

    def start(self) -> None:
        threading.Thread(target=self.keep, name="stream-keeper", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
