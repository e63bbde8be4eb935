"""Always an answer: a batch whose workflow ended without publishing its outcome still gets one.

Every batch is in the admission ledger from its first step until its outcome is out. A background
loop in the workflow app looks at each of them every few seconds; a batch whose workflow was
terminated or failed is answered from the results its chunks saved, every other task ``failed`` with the
reason, and its slots are released; one whose workflow is missing is started (its start was late), or, if
Dapr refuses that for good (purged), answered likewise. If even that outcome cannot be published, a
dead-letter record names the batch and why.

With several workflow processes, one answers at a time: the one holding the reconciler's lease (a key in the
state store, taken with first-write concurrency and renewed every round; it expires ``LEASE_S`` after its
holder's last round, and another process takes it over). The others only measure (the backlog every replica
reports) and forget the batches that left the ledger (each process's live view holds the chunks it ran).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from dapr.aio.clients import DaprClient
from dapr.clients.grpc._state import Concurrency, StateOptions
from dapr.ext.workflow import WorkflowStatus
from dapr.ext.workflow.aio import DaprWorkflowClient

from services.workflow import faults, ledger_store, live, metrics, outcome
from services.workflow.admission import Entry
from services.workflow.batch_workflow import batch_input
from services.workflow.models import BatchFailure, BatchProgress, PublishInput
from services.workflow.names import BATCH_WORKFLOW
from services.workflow.retry import is_transient
from taskfan.contracts import MAX_MESSAGE_BYTES, RECONCILER_LEASE_KEY, STATESTORE, workflow_instance_id
from taskfan.settings import Settings

log = logging.getLogger(__name__)

INTERVAL_S = 5.0
# A ledger entry whose workflow cannot be found this long after it queued was purged, not just slow.
MISSING_GRACE_S = 60.0
QUEUE_WINDOW = 100
# The lease outlives a few missed rounds of its holder (a pause, a slow store) before another process takes over.
LEASE_S = 3 * INTERVAL_S
STILL_GOING = frozenset({WorkflowStatus.RUNNING, WorkflowStatus.PENDING, WorkflowStatus.SUSPENDED,
                         WorkflowStatus.STALLED})


def unfinished_reason(status: WorkflowStatus | None, failure: str | None) -> str | None:
    """Why the tasks a finished-but-unpublished workflow left behind failed; None: nothing to answer."""
    if status is WorkflowStatus.TERMINATED:
        return "the batch's workflow was terminated before this task finished"
    if status is WorkflowStatus.FAILED:
        return f"the batch's workflow failed before this task finished: {failure or 'no reason given'}"
    if status is None:
        return "the batch's workflow disappeared (purged) before this task finished"
    return None


def start(settings: Settings, book: live.LiveBatches, ledger: ledger_store.LedgerStore,
          measured: metrics.WorkflowMetrics) -> Callable[[], None]:
    """Run the loop in a thread of its own (its own event loop and clients); return a stopper."""
    stop = threading.Event()
    thread = threading.Thread(target=lambda: asyncio.run(_loop(stop, settings, book, ledger, measured)),
                              name="reconciler", daemon=True)
    thread.start()

    def stopper() -> None:
        stop.set()
        thread.join(timeout=INTERVAL_S + 5)

    return stopper


async def _loop(stop: threading.Event, settings: Settings, book: live.LiveBatches, ledger: ledger_store.LedgerStore,
                measured: metrics.WorkflowMetrics) -> None:
    client = DaprClient(max_grpc_message_length=MAX_MESSAGE_BYTES)
    workflows = DaprWorkflowClient()
    me = uuid.uuid4().hex  # this process, as the lease's holder
    while not stop.is_set():
        try:
            acting = await hold_lease(client, me)
            await reconcile(client, workflows, settings, book, ledger, measured, acting=acting)
        except Exception as exc:  # noqa: BLE001 - e.g. the sidecar is restarting: next round
            log.warning("reconcile round failed", extra={"error": str(exc)})
        await asyncio.to_thread(stop.wait, INTERVAL_S)


async def hold_lease(client: DaprClient, me: str) -> bool:
    """Whether this process holds the reconciler's lease for the next ``LEASE_S``: it took it (no one held it)
    or renewed its own. A write that meets another's (first-write: the ETag it read, or none) fails: not ours."""
    item = await client.get_state(STATESTORE, RECONCILER_LEASE_KEY)
    holder = item.data.decode(errors="replace") if item.data else None
    if holder not in (None, me):
        return False
    try:
        await client.save_state(STATESTORE, RECONCILER_LEASE_KEY, me, etag=item.etag or None,
                                options=_FIRST_WRITE, state_metadata={"ttlInSeconds": str(int(LEASE_S))})
    except Exception as exc:  # noqa: BLE001 - another process took it in between, or the store is away
        log.debug("reconciler lease not taken", extra={"error": str(exc)})
        return False
    if holder is None:
        log.info("this process now answers for the ledger's batches (reconciler lease taken)")
    return True


_FIRST_WRITE = StateOptions(concurrency=Concurrency.first_write)


async def reconcile(client: DaprClient, workflows: DaprWorkflowClient, settings: Settings,
                    book: live.LiveBatches, store: ledger_store.LedgerStore, measured: metrics.WorkflowMetrics,
                    acting: bool = True) -> None:
    """One round: every running batch (at most the cap's worth) and the first QUEUE_WINDOW queued ones, so a
    round costs the same however long the queue; a batch further back is looked at once it moves up.
    ``acting``: answer, start and release batches (the lease's holder); otherwise only measure."""
    known = book.known()  # before the ledger is read: a batch known here and not running in it has left it
    ledger = await ledger_store.read(client)
    done: dict[str, int] = {}  # tasks finished per running batch, for the backlog
    running = {entry.batch_id for entry in ledger.running}
    for batch_id in known - running:
        book.forget(batch_id)
    queued = [entry for _, entry in await store.run(client, ledger_store.queued(ledger, QUEUE_WINDOW))]
    for entry in [*ledger.running, *queued]:
        try:
            # A running batch's progress is its custom status, a payload (small: its inputs are ids and
            # counts); a queued batch has none yet, so its status alone is read.
            state = await workflows.get_workflow_state(workflow_instance_id(entry.batch_id),
                                                       fetch_payloads=entry.batch_id in running)
        except Exception as exc:  # noqa: BLE001 - Dapr read it mid-write: look again next round
            log.debug("workflow state unreadable", extra={"batch_id": entry.batch_id, "error": str(exc)})
            continue
        status = state.runtime_status if state is not None else None
        if status in STILL_GOING:
            done[entry.batch_id] = _done(state.serialized_custom_status if state else None)
            continue
        if not acting:
            continue
        if status is None:
            if _age_s(entry) < MISSING_GRACE_S or not await _answered_or_unstartable(client, workflows, entry,
                                                                                     settings, running):
                continue
        failure = state.failure_details.message if state is not None and state.failure_details else None
        reason = unfinished_reason(status, failure)
        if reason is not None:
            await answer(client, entry, reason, status.name if status is not None else WorkflowStatus.FAILED.name)
            faults.point(faults.IN_TERMINATE)
        await store.release_and_wake(client, workflows, entry.batch_id)
        book.forget(entry.batch_id)
    measured.record(ledger, done)


async def _answered_or_unstartable(client: DaprClient, workflows: DaprWorkflowClient, entry: Entry,
                                   settings: Settings, running: set[str]) -> bool:
    """A batch in the ledger with no workflow: its outcome is out (the workflow was purged after it), or its
    workflow was never started (the intake's start is late: the workflow app or its sidecar died between
    the ledger write and the start, or the scheduler is slow) and is started now, from the tasks the intake
    stored. True only when there is nothing to start: answered, or a start Dapr refuses for good (purged)."""
    if await outcome.record_of(client, entry.batch_id) is not None:
        return True
    inp = batch_input(entry.batch_id, entry.total, settings.max_in_flight, settings.max_tasks_in_progress,
                      admitted=entry.batch_id in running)
    try:
        await workflows.schedule_new_workflow(BATCH_WORKFLOW, input=inp,
                                              instance_id=workflow_instance_id(entry.batch_id))
    except Exception as exc:  # noqa: BLE001 - it exists now (the intake's start came), or Dapr is unavailable
        log.info("could not start a batch whose workflow was missing", extra={
            "batch_id": entry.batch_id, "error": f"{type(exc).__name__}: {exc}"})
        return not is_transient(exc) and "already exists" not in str(exc)
    log.warning("started a batch whose workflow had not started", extra={"batch_id": entry.batch_id})
    return False


def _done(custom_status: str | None) -> int:
    try:
        return BatchProgress.model_validate_json(custom_status or "").done
    except ValueError:
        return 0  # not started yet: nothing done


async def answer(client: DaprClient, entry: Entry, reason: str, ended: str) -> None:
    log.warning("answering for a batch whose workflow ended early", extra={"batch_id": entry.batch_id,
                                                                            "reason": reason})
    inp = PublishInput(batch_id=entry.batch_id, chunks=entry.chunks, started_at=entry.since,
                       finished_at=datetime.now(UTC).isoformat())
    try:
        await outcome.publish_once(client, inp, lambda _: reason, ended)
    except Exception as exc:  # noqa: BLE001 - the last resort: say so on the dead-letter topic
        await outcome.dead_letter(client, BatchFailure(
            batch_id=entry.batch_id, total=entry.total,
            reason=f"batch {entry.batch_id}: {reason}, and no outcome could be published: {exc}"))


def _age_s(entry: Entry) -> float:
    return (datetime.now(UTC) - datetime.fromisoformat(entry.since)).total_seconds()
