"""The admission ledger in the state store: read, change, write back with its ETag, again on a conflict.

Activities of many batches, and the intake, change it at once; Dapr's first-write concurrency makes the
write fail when another wrote in between, so no change is lost. Batches admitted by a change are told at
once with a workflow event; a queued batch also re-checks on a timer, so a lost event only delays it.
The activities use the async client; the intake's handler thread has no event loop, so it has ``update_now``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from dapr import clients
from dapr.aio.clients import DaprClient
from dapr.clients.grpc._state import Concurrency, StateOptions
from dapr.ext.workflow import DaprWorkflowClient as SyncWorkflowClient
from dapr.ext.workflow.aio import DaprWorkflowClient

from services.workflow import admission
from services.workflow.admission import Ledger
from services.workflow.names import ADMITTED_EVENT
from taskfan.contracts import ADMISSION_LEDGER_KEY, STATESTORE, workflow_instance_id

log = logging.getLogger(__name__)

T = TypeVar("T")
WRITE_ATTEMPTS = 100


async def read(client: DaprClient) -> Ledger:
    item = await client.get_state(STATESTORE, ADMISSION_LEDGER_KEY)
    return Ledger.model_validate_json(item.data) if item.data else Ledger()


async def update(client: DaprClient, change: Callable[[Ledger], T]) -> T:
    """Apply ``change`` to the ledger and store it; ``change`` may run more than once (conflicts)."""
    for attempt in range(WRITE_ATTEMPTS):
        item = await client.get_state(STATESTORE, ADMISSION_LEDGER_KEY)
        result, changed = _apply(item.data, item.etag, change)
        if changed is None:
            return result
        try:
            await client.save_state(STATESTORE, ADMISSION_LEDGER_KEY, changed, etag=item.etag or None,
                                    options=_FIRST_WRITE)
            return result
        except Exception:  # noqa: BLE001 - an ETag conflict; a sidecar that is down fails the next read
            await asyncio.sleep(_pause(attempt))
    raise _gave_up()


def update_now(client: clients.DaprClient, change: Callable[[Ledger], T]) -> T:
    """``update`` with the blocking client."""
    for attempt in range(WRITE_ATTEMPTS):
        item = client.get_state(STATESTORE, ADMISSION_LEDGER_KEY)
        result, changed = _apply(item.data, item.etag, change)
        if changed is None:
            return result
        try:
            client.save_state(STATESTORE, ADMISSION_LEDGER_KEY, changed, etag=item.etag or None,
                              options=_FIRST_WRITE)
            return result
        except Exception:  # noqa: BLE001 - as in update
            time.sleep(_pause(attempt))
    raise _gave_up()


_FIRST_WRITE = StateOptions(concurrency=Concurrency.first_write)


def _apply(data: bytes, etag: str | None, change: Callable[[Ledger], T]) -> tuple[T, str | None]:
    """``change``'s result on the stored ledger, and the ledger to write (None: unchanged, nothing to write)."""
    ledger = Ledger.model_validate_json(data) if data else Ledger()
    before = ledger.model_dump_json()
    result = change(ledger)
    after = ledger.model_dump_json()
    return result, (None if after == before and etag else after)


def _pause(attempt: int) -> float:
    return random.uniform(0.005, 0.02) * min(attempt + 1, 10)


class LedgerBusy(RuntimeError):
    """Every attempt to change the ledger met another change: a moment of contention, not an error."""


def _gave_up() -> LedgerBusy:
    return LedgerBusy(f"the admission ledger changed under every one of {WRITE_ATTEMPTS} attempts")


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


async def release(client: DaprClient, workflows: DaprWorkflowClient, batch_id: str) -> None:
    """Give a batch's slots back and wake the batches that now fit (idempotent)."""
    admitted = await update(client, lambda ledger: admission.release(ledger, batch_id))
    await announce(workflows, admitted)


def release_now(client: clients.DaprClient, workflows: SyncWorkflowClient, batch_id: str) -> None:
    """``release`` with the blocking clients."""
    announce_now(workflows, update_now(client, lambda ledger: admission.release(ledger, batch_id)))
