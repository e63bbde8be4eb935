"""The reconciler with several workflow processes: one lease holder answers, every process measures and forgets
the batches that left the ledger (its live view holds only its own chunks' tasks)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from dapr.ext.workflow import WorkflowStatus

from services.workflow import live, reconciler
from services.workflow.admission import Entry, Ledger
from services.workflow.ledger_store import LedgerStore
from services.workflow.metrics import WorkflowMetrics
from services.workflow.models import BatchProgress
from taskfan.contracts import ADMISSION_LEDGER_KEY, RECONCILER_LEASE_KEY, TaskResult
from taskfan.settings import Settings

from .fake_state import FakeDaprState


def test_one_process_holds_the_lease_until_it_lapses_then_another_takes_it() -> None:
    store = FakeDaprState()
    hold = lambda me: asyncio.run(reconciler.hold_lease(store, me))  # noqa: E731
    assert hold("a") and not hold("b") and hold("a")  # taken, refused to another, renewed
    store.delete(RECONCILER_LEASE_KEY)  # its TTL ran out: a stopped for longer than LEASE_S
    assert hold("b") and not hold("a")


def test_of_two_processes_taking_a_free_lease_at_once_one_wins() -> None:
    store = FakeDaprState()

    class StaleRead(FakeDaprState):
        """b read the lease before a wrote it."""

        async def get_state(self, _store: str, key: str):  # noqa: ANN202
            return SimpleNamespace(key=key, data=b"", etag="")

        async def save_state(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            return await store.save_state(*args, **kwargs)

    assert asyncio.run(reconciler.hold_lease(store, "a"))
    assert not asyncio.run(reconciler.hold_lease(StaleRead(), "b"))  # its first write meets a's
    assert store.items[RECONCILER_LEASE_KEY] == b"a"


class Workflows:
    """The workflow client: every batch ended (terminated) unless running."""

    def __init__(self, running: set[str]) -> None:
        self.running = running

    async def get_workflow_state(self, instance_id: str, fetch_payloads: bool = True):  # noqa: ANN201
        going = any(instance_id.endswith(b) for b in self.running)
        return SimpleNamespace(
            runtime_status=WorkflowStatus.RUNNING if going else WorkflowStatus.TERMINATED, failure_details=None,
            serialized_custom_status=BatchProgress(total=10, done=4, completed=4, rejected=0).model_dump_json())


def entry(batch_id: str) -> Entry:
    return Entry(batch_id=batch_id, slots=10, total=10, chunks=1, since="2026-01-01T00:00:00+00:00")


def test_a_process_without_the_lease_measures_and_forgets_but_answers_for_no_batch() -> None:
    ledger = Ledger(cap=100, running=[entry("going"), entry("ended")])
    store = FakeDaprState({ADMISSION_LEDGER_KEY: ledger.model_dump_json().encode()})
    book = live.LiveBatches()
    for batch_id in ("going", "ended", "left-the-ledger"):
        book.moving(batch_id, "score", [f"{batch_id}-t"])
    book.finished("going", [TaskResult(task_id="going-t", status="completed", score=1)])
    measured = WorkflowMetrics()
    asyncio.run(reconciler.reconcile(store, Workflows({"going"}), Settings(), book, LedgerStore(), measured,
                                     acting=False))
    # The batch that left the ledger is forgotten here too; the ended one is not answered for, nor released.
    assert book.known() == {"going", "ended"}
    assert Ledger.model_validate_json(store.items[ADMISSION_LEDGER_KEY]) == ledger
    assert not [key for key in store.items if key.endswith(":outcome")]
    # ... and it reports the same backlog as the holder would: 10 - 4 of the running one, all of the ended one.
    assert measured.backlog._value.get() == 6 + 10
