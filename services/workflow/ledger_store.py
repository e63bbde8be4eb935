"""The admission ledger in the state store: read, change, write back with its ETag, again on a conflict.

Activities of many batches change it at once; Dapr's first-write concurrency makes the write fail when
another wrote in between, so no change is lost. Batches admitted by a change are told at once with a
workflow event; a queued batch also re-checks on a timer, so a lost event only delays it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import TypeVar

from dapr.aio.clients import DaprClient
from dapr.clients.grpc._state import Concurrency, StateOptions
from dapr.ext.workflow.aio import DaprWorkflowClient

from services.workflow import admission
from services.workflow.admission import Ledger
from services.workflow.names import ADMITTED_EVENT
from taskfan.contracts import ADMISSION_LEDGER_KEY, STATESTORE

log = logging.getLogger(__name__)

T = TypeVar("T")
WRITE_ATTEMPTS = 100


async def read(client: DaprClient) -> Ledger:
    return (await _read(client))[0]


async def _read(client: DaprClient) -> tuple[Ledger, str | None]:
    """The ledger and its ETag (None while the ledger was never written)."""
    item = await client.get_state(STATESTORE, ADMISSION_LEDGER_KEY)
    return (Ledger.model_validate_json(item.data), item.etag or None) if item.data else (Ledger(), None)


async def update(client: DaprClient, change: Callable[[Ledger], T]) -> T:
    """Apply ``change`` to the ledger and store it; ``change`` may run more than once (conflicts)."""
    for attempt in range(WRITE_ATTEMPTS):
        ledger, etag = await _read(client)
        before = ledger.model_dump_json()
        result = change(ledger)
        if ledger.model_dump_json() == before and etag is not None:
            return result
        try:
            await client.save_state(STATESTORE, ADMISSION_LEDGER_KEY, ledger.model_dump_json(), etag=etag,
                                    options=StateOptions(concurrency=Concurrency.first_write))
            return result
        except Exception:  # noqa: BLE001 - an ETag conflict; a sidecar that is down fails the next read
            await asyncio.sleep(random.uniform(0.005, 0.02) * min(attempt + 1, 10))
    raise RuntimeError(f"the admission ledger changed under every one of {WRITE_ATTEMPTS} attempts")


async def announce(workflows: DaprWorkflowClient, batch_ids: list[str]) -> None:
    """Wake the admitted batches; one that misses the event finds out on its next re-check."""
    for batch_id in batch_ids:
        try:
            await workflows.raise_workflow_event(batch_id, ADMITTED_EVENT)
        except Exception as exc:  # noqa: BLE001
            log.warning("could not wake an admitted batch", extra={"batch_id": batch_id, "error": str(exc)})


async def release(client: DaprClient, workflows: DaprWorkflowClient, batch_id: str) -> None:
    """Give a batch's slots back and wake the batches that now fit (idempotent)."""
    admitted = await update(client, lambda ledger: admission.release(ledger, batch_id))
    await announce(workflows, admitted)
