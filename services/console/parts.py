"""The console's parts, handed to every router (``routes``): what it remembers, what it watches, its ways out.

``Workflow`` and ``publish`` (with ``replay``, the raw form of it) are the ways out (the workflow app's console methods,
and the ``tasks`` topic), all through the console's sidecar in ``app``; tests pass fakes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from services.console.dead_letters import DeadLetters
from services.console.history import BatchBook
from services.console.sessions import Credentials, Sessions, SignInCodes
from services.console.watch import Watcher
from services.workflow.models import BatchNow, Purge, Termination
from taskfan.contracts import TaskBatch
from taskfan.http_doors import Doors


class Workflow(Protocol):
    def batch(self, batch_id: str) -> BatchNow: ...

    def terminate(self, batch_id: str) -> Termination: ...

    def purge(self, batch_id: str) -> Purge: ...


Publish = Callable[[TaskBatch], None]
# Bytes published on ``tasks`` as they are (Dapr's rawPayload): a dead letter's refused event, replayed.
PublishRaw = Callable[[bytes], None]


class Traces(Protocol):
    """The tracing backend's query API (Jaeger's ``/api/traces/<id>``)."""

    def url(self, trace_id: str) -> str: ...

    def get(self, trace_id: str) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class Parts:
    book: BatchBook  # the batches seen on the topics (``history``)
    watcher: Watcher  # the workflow app's last answer, and the throughput
    workflow: Workflow
    publish: Publish
    doors: Doors  # the hosts it answers to, and the refusals' log
    credentials: Credentials  # the operator's and the viewer's
    sessions: Sessions  # the signed-in browsers
    codes: SignInCodes  # the one-time sign-in links not used yet
    cookie: str  # the session cookie's name
    # The newest records on ``tasks-deadletter`` (memory only, unless the console hands its own).
    dead_letters: DeadLetters = field(default_factory=lambda: DeadLetters(None))
    replay: PublishRaw | None = None  # None: no way to publish a dead letter again
    traces: Traces | None = None  # None: tracing is off
    # A purged batch leaves the history: the book's own ``forget``, or with replicas the writer's told too.
    forget: Callable[[str], bool] | None = None
