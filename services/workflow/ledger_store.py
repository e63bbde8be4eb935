"""The admission ledger in the state store (``admission`` decides; this module reads and writes).

Three kinds of keys, all in the workflow app's state store:
- the ledger (``ADMISSION_LEDGER_KEY``): running batches, the queue's head and tail tickets, counts;
- a queued batch's entry under its ticket (``admission_queue_key``), written before the ticket is taken;
- a queued batch's ticket under its id (``admission_ticket_key``), written after.
Every change reads the ledger, applies one rule of ``admission`` and writes the ledger back with its ETag
(Dapr's first-write concurrency: the write fails when another wrote in between, and the change is made
again), so no change is lost; what it costs is the ledger (bounded by the cap) plus the entries it admits.

Each change is written once, as a generator of state operations (``Get``, ``Put``, ...), and run by the
async driver (the activities, the reconciler) or the blocking one (the intake's handler thread, which has
no event loop); the unit tests run the same generators against a fake store, interleaved.
Batches admitted by a change are told at once with a workflow event; a queued batch also re-checks on a
timer, so a lost event only delays it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
import weakref
from collections.abc import Callable, Generator
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeVar

from dapr import clients
from dapr.aio.clients import DaprClient
from dapr.clients.grpc._state import Concurrency, StateOptions
from dapr.ext.workflow import DaprWorkflowClient as SyncWorkflowClient
from dapr.ext.workflow.aio import DaprWorkflowClient
from pydantic import BaseModel

from services.workflow import admission
from services.workflow.admission import Entry, Ledger, Ticket
from services.workflow.names import ADMITTED_EVENT
from services.workflow.state_keys import STATE_TTL_S
from taskfan.contracts import (
    ADMISSION_LEDGER_KEY,
    STATESTORE,
    admission_queue_key,
    admission_ticket_key,
    workflow_instance_id,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
WRITE_ATTEMPTS = 100
# A queue entry whose writer has not taken its ticket this long after writing it died doing so: the next
# batch takes the ticket over.
STALE_ENTRY_S = 10.0
READ_WINDOW = 32  # queue entries read at once when admitting


class LedgerBusy(RuntimeError):
    """Every attempt to change the ledger met another change: a moment of contention, not an error."""


# --- the state operations a change is made of -------------------------------------------------------


@dataclass(frozen=True)
class Get:
    key: str  # answered with the item (``data``, ``etag``)


@dataclass(frozen=True)
class GetMany:
    keys: list[str]  # answered with {key: data or None}


@dataclass(frozen=True)
class Put:
    key: str
    value: str
    etag: str | None = None
    first_write: bool = False  # with no etag: create only if absent
    # A failed write is thrown into the generator as Conflict.


@dataclass(frozen=True)
class Delete:
    keys: list[str]  # best effort: the keys expire anyway


@dataclass(frozen=True)
class Pause:
    seconds: float


class Conflict(Exception):
    """A conditional write failed: another change came first (or the store is unavailable)."""


Steps = Generator[Any, Any, T]


class QueuedEntry(BaseModel):
    entry: Entry
    written_at: float  # epoch seconds, to tell a writer that died from one that is slow


def _ledger(item: Any) -> Ledger:
    return Ledger.model_validate_json(item.data) if item.data else Ledger()


def _ticket(item: Any) -> Ticket | None:
    return Ticket.model_validate_json(item.data) if item.data else None


def ask(entry: Entry, cap: int, now: Callable[[], float] = time.time) -> Steps[tuple[list[str], int]]:
    """Put ``entry`` in the ledger unless it is there: running if nothing is queued and its slots fit,
    else queued; admit what fits. Returns the other batches admitted (to wake) and its position (0: running)."""
    for attempt in range(WRITE_ATTEMPTS):
        ledger_item = yield Get(ADMISSION_LEDGER_KEY)
        ledger = _ledger(ledger_item)
        if ledger.running_entry(entry.batch_id) is not None:
            return [], 0
        # Nothing queued: no ticket can be held, so the batch's is not read (most batches, one sidecar call).
        ticket = None if ledger.head == ledger.tail else _ticket((yield Get(admission_ticket_key(entry.batch_id))))
        if ledger.holds(ticket):
            return [], ledger.position(entry.batch_id, ticket) or 0
        if admission.run_at_once(ledger, entry, cap):
            try:
                yield _write_ledger(ledger, ledger_item)
            except Conflict:
                yield Pause(_pause(attempt))
                continue
            return [], 0
        ticket = Ticket(ticket=ledger.tail, total=entry.total)
        if not (yield from _claim(ticket.ticket, entry, now())):
            yield Pause(_pause(attempt))
            continue
        admission.enqueue(ledger, entry, ticket.ticket, cap)
        admitted = yield from _admit(ledger)
        try:
            yield _write_ledger(ledger, ledger_item)
        except Conflict:
            yield Pause(_pause(attempt))
            continue
        yield Put(admission_ticket_key(entry.batch_id), ticket.model_dump_json())
        yield from _forget(admitted)
        return ([e.batch_id for _, e in admitted if e.batch_id != entry.batch_id],
                ledger.position(entry.batch_id, ticket) or 0)
    raise _gave_up()


def release(batch_id: str) -> Steps[list[str]]:
    """Forget ``batch_id`` (finished or given up), running or queued; admit what now fits; return the batch
    ids admitted (idempotent)."""
    for attempt in range(WRITE_ATTEMPTS):
        ledger_item = yield Get(ADMISSION_LEDGER_KEY)
        ledger = _ledger(ledger_item)
        ticket = None
        if ledger.running_entry(batch_id) is None:
            ticket = _ticket((yield Get(admission_ticket_key(batch_id))))
        if not admission.release(ledger, batch_id, ticket):
            return []
        admitted = yield from _admit(ledger)
        try:
            yield _write_ledger(ledger, ledger_item)
        except Conflict:
            yield Pause(_pause(attempt))
            continue
        if ticket is not None:
            yield Delete([admission_queue_key(ticket.ticket), admission_ticket_key(batch_id)])
        yield from _forget(admitted)
        return [e.batch_id for _, e in admitted]
    raise _gave_up()


def queued(ledger: Ledger, limit: int) -> Steps[list[tuple[int, Entry]]]:
    """The first ``limit`` queued batches, in order, with their places (1 = next)."""
    tickets = ledger.queue_tickets(limit)
    found = yield GetMany([admission_queue_key(t) for t in tickets])
    entries = []
    for place, t in enumerate(tickets, start=1):
        data = found.get(admission_queue_key(t))
        if data:
            entries.append((place, QueuedEntry.model_validate_json(data).entry))
    return entries


def locate(batch_id: str) -> Steps[tuple[Entry | None, int | None]]:
    """A batch's entry and position (0: running, 1..: queued), or (None, None) when the ledger has it not."""
    ledger = _ledger((yield Get(ADMISSION_LEDGER_KEY)))
    if (entry := ledger.running_entry(batch_id)) is not None:
        return entry, 0
    ticket = _ticket((yield Get(admission_ticket_key(batch_id))))
    if ticket is None or not ledger.holds(ticket):
        return None, None
    item = yield Get(admission_queue_key(ticket.ticket))
    return (QueuedEntry.model_validate_json(item.data).entry if item.data else None), ledger.position(batch_id, ticket)


def _claim(ticket: int, entry: Entry, now: float) -> Steps[bool]:
    """Write ``entry`` under ``ticket`` if no other batch has; True when it is ours to take."""
    key = admission_queue_key(ticket)
    mine = QueuedEntry(entry=entry, written_at=now).model_dump_json()
    try:
        yield Put(key, mine, first_write=True)
        return True
    except Conflict:
        pass
    item = yield Get(key)
    if not item.data:
        return False
    held = QueuedEntry.model_validate_json(item.data)
    if held.entry.batch_id == entry.batch_id:
        return True  # written by an earlier attempt of this change
    if now - held.written_at < STALE_ENTRY_S:
        return False  # another batch is taking this ticket now
    try:
        yield Put(key, mine, etag=item.etag)
    except Conflict:
        return False
    return True


def _admit(ledger: Ledger) -> Steps[list[tuple[int, Entry]]]:
    """``admission.admit``, reading the queue entries it needs as it goes."""
    admitted: list[tuple[int, Entry]] = []
    entries: dict[int, Entry | None] = {}
    while True:
        admitted_now, need = admission.admit(ledger, entries)
        admitted += admitted_now
        if need is None:
            return admitted
        window = [t for t in range(need, min(need + READ_WINDOW, ledger.tail)) if t not in ledger.removed]
        found = yield GetMany([admission_queue_key(t) for t in window])
        for t in window:
            data = found.get(admission_queue_key(t))
            entries[t] = QueuedEntry.model_validate_json(data).entry if data else None


def _forget(admitted: list[tuple[int, Entry]]) -> Steps[None]:
    """An admitted batch's queue entry and ticket are no longer needed."""
    if admitted:
        yield Delete([key for t, e in admitted for key in (admission_queue_key(t), admission_ticket_key(e.batch_id))])


def _write_ledger(ledger: Ledger, read: Any) -> Put:
    return Put(ADMISSION_LEDGER_KEY, ledger.model_dump_json(), etag=read.etag or None, first_write=True)


def _pause(attempt: int) -> float:
    return random.uniform(0.005, 0.02) * min(attempt + 1, 10)


def _gave_up() -> LedgerBusy:
    return LedgerBusy(f"the admission ledger changed under every one of {WRITE_ATTEMPTS} attempts")


# --- running a change -------------------------------------------------------------------------------

_FIRST_WRITE = StateOptions(concurrency=Concurrency.first_write)
_TTL = MappingProxyType({"ttlInSeconds": str(STATE_TTL_S)})


def _save_args(op: Put) -> dict[str, Any]:
    args: dict[str, Any] = {"etag": op.etag, "options": _FIRST_WRITE if op.first_write else None}
    if op.key != ADMISSION_LEDGER_KEY:
        args["state_metadata"] = dict(_TTL)  # a queue entry or ticket left behind by a crash expires
    return args


class LedgerStore:
    """Where one workflow process makes its changes to the admission ledger: made by the app and handed to the
    intake, the activities, the reconciler and the console's answers. Its changes wait for each other (one
    lock per event loop, one for the blocking callers): made all at once, they would mostly meet each other's
    ETags and start again (README, Benchmarks). The ETag still guards against other processes. ``measured``
    hears how long each change took (the metrics)."""

    def __init__(self, measured: Callable[[float], None] = lambda seconds: None) -> None:
        self.measured = measured
        self._blocking = threading.Lock()
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()

    def _loop_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if (lock := self._loops.get(loop)) is None:
            lock = self._loops[loop] = asyncio.Lock()
        return lock

    async def run(self, client: DaprClient, steps: Steps[T]) -> T:
        """Make a change through the async client."""
        async with self._loop_lock():
            started = time.perf_counter()
            result = await _run(client, steps)
            self.measured(time.perf_counter() - started)
            return result

    def run_now(self, client: clients.DaprClient, steps: Steps[T]) -> T:
        """Make a change through the blocking client."""
        with self._blocking:
            started = time.perf_counter()
            result = _run_now(client, steps)
            self.measured(time.perf_counter() - started)
            return result

    async def release_and_wake(self, client: DaprClient, workflows: DaprWorkflowClient, batch_id: str) -> None:
        """Give a batch's slots back and wake the batches that now fit (idempotent)."""
        await announce(workflows, await self.run(client, release(batch_id)))

    def release_and_wake_now(self, client: clients.DaprClient, workflows: SyncWorkflowClient, batch_id: str) -> None:
        """``release_and_wake`` with the blocking clients."""
        announce_now(workflows, self.run_now(client, release(batch_id)))


def advance(steps: Steps[T], reply: Any, error: Exception | None) -> tuple[bool, Any]:
    """Hand a change the answer to its last operation (or the error it met): (False, its next operation),
    or (True, its result) once it is done."""
    try:
        return False, steps.throw(error) if error is not None else steps.send(reply)
    except StopIteration as stop:
        return True, stop.value


async def _run(client: DaprClient, steps: Steps[T]) -> T:
    reply: Any = None
    error: Exception | None = None
    while True:
        done, op = advance(steps, reply, error)
        if done:
            return op
        reply, error = None, None
        if isinstance(op, Get):
            reply = await client.get_state(STATESTORE, op.key)
        elif isinstance(op, GetMany):
            reply = {i.key: i.data or None for i in (await client.get_bulk_state(STATESTORE, op.keys, parallelism=8)
                                                     ).items} if op.keys else {}
        elif isinstance(op, Put):
            try:
                await client.save_state(STATESTORE, op.key, op.value, **_save_args(op))
            except Exception as exc:  # noqa: BLE001 - an ETag conflict; a sidecar that is down fails the next read
                error = Conflict(str(exc))
        elif isinstance(op, Delete):
            await asyncio.gather(*(client.delete_state(STATESTORE, key) for key in op.keys), return_exceptions=True)
        elif isinstance(op, Pause):
            await asyncio.sleep(op.seconds)


def _run_now(client: clients.DaprClient, steps: Steps[T]) -> T:
    reply: Any = None
    error: Exception | None = None
    while True:
        done, op = advance(steps, reply, error)
        if done:
            return op
        reply, error = None, None
        if isinstance(op, Get):
            reply = client.get_state(STATESTORE, op.key)
        elif isinstance(op, GetMany):
            reply = {i.key: i.data or None for i in client.get_bulk_state(STATESTORE, op.keys, parallelism=8).items
                     } if op.keys else {}
        elif isinstance(op, Put):
            try:
                client.save_state(STATESTORE, op.key, op.value, **_save_args(op))
            except Exception as exc:  # noqa: BLE001 - as in run
                error = Conflict(str(exc))
        elif isinstance(op, Delete):
            for key in op.keys:
                try:
                    client.delete_state(STATESTORE, key)
                except Exception:  # noqa: BLE001, S112 - best effort, see Delete
                    continue
        elif isinstance(op, Pause):
            time.sleep(op.seconds)


async def read(client: DaprClient) -> Ledger:
    return _ledger(await client.get_state(STATESTORE, ADMISSION_LEDGER_KEY))


def read_now(client: clients.DaprClient) -> Ledger:
    return _ledger(client.get_state(STATESTORE, ADMISSION_LEDGER_KEY))


# --- waking admitted batches -----------------------------------------------------------------------


async def announce(workflows: DaprWorkflowClient, batch_ids: list[str]) -> None:
    """Wake the admitted batches; one that misses the event finds out on its next re-check."""
    for batch_id in batch_ids:
        try:
            await workflows.raise_workflow_event(workflow_instance_id(batch_id), ADMITTED_EVENT)
        except Exception as exc:  # noqa: BLE001
            log.warning("could not wake an admitted batch", extra={"batch_id": batch_id, "error": str(exc)})


def announce_now(workflows: SyncWorkflowClient, batch_ids: list[str]) -> None:
    """``announce`` with the blocking client."""
    for batch_id in batch_ids:
        try:
            workflows.raise_workflow_event(workflow_instance_id(batch_id), ADMITTED_EVENT)
        except Exception as exc:  # noqa: BLE001
            log.warning("could not wake an admitted batch", extra={"batch_id": batch_id, "error": str(exc)})
