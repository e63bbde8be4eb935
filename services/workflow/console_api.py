"""The console's questions to the workflow app, through Dapr service invocation (``services/console`` asks;
the Configuration's access control lets no other app call these methods).

The workflow app is where the answers are: the admission ledger (every running and queued batch), each
batch workflow's custom status (its counts), where each task of a running batch is (its chunk's stages in
the state store, ``live.ChunkStages``: any workflow process answers alike), the scorer replicas as their
answers describe them (``scoring``) and every step's replicas (``replicas``). Handlers only read and encode;
terminating goes through Dapr's workflow API, and the reconciler then publishes the batch's outcome (every
unfinished task failed, "terminated") as for any workflow ended early. Purging deletes now what retention and
the records' TTLs would delete later, for a finished batch only (``purge_refusal``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from dapr.clients import DaprClient
from dapr.ext.grpc import App
from dapr.ext.workflow import DaprWorkflowClient, WorkflowStatus

from services.workflow import ledger_store, live, processes, scoring
from services.workflow.admission import Entry
from services.workflow.models import (
    BatchesNow,
    BatchInput,
    BatchNow,
    BatchProgress,
    MovingTask,
    OutcomeRecord,
    ProcessReport,
    Purge,
    QueuedBatch,
    RunningBatch,
    Termination,
)
from services.workflow.reconciler import STILL_GOING
from services.workflow.replicas import StepReplicas
from services.workflow.state_keys import deletions, outcome_key, results_key, stages_key, tasks_key
from taskfan.batch_records import record_key
from taskfan.contracts import (
    BATCHES_STORE,
    CONSOLE_BATCH,
    CONSOLE_BATCHES,
    CONSOLE_PURGE,
    CONSOLE_TERMINATE,
    STATESTORE,
    is_batch_id,
    workflow_instance_id,
)
from taskfan.dapr_app import json_method, replica_name
from taskfan.pipeline import Step

QUEUE_SHOWN = 200  # the queued batches the console lists (it counts all of them)
STAGE_READS = 8  # chunks' stages read at once for one batch's view


class ConsoleAnswers:
    def __init__(self, dapr: DaprClient, workflows: DaprWorkflowClient, book: live.LiveBatches,
                 ledger: ledger_store.LedgerStore, dispatchers: Iterable[scoring.Dispatcher] = (),
                 steps: Sequence[Step] = (), replicas: StepReplicas | None = None, process: str = "") -> None:
        self.dapr = dapr
        self.workflows = workflows
        self.book = book
        self.ledger = ledger
        self.dispatchers = tuple(dispatchers)  # of the steps spread by slots: their replicas, for the console
        self.steps = tuple(steps)  # the declared ones, in order: a section each on the console
        self.replicas = replicas or StepReplicas()  # every step's, as the step client heard them
        self.processes = processes.Reporter(dapr, process or replica_name(), self.own_report)

    def own_report(self, at: float) -> ProcessReport:
        """What this process alone knows now (``processes``)."""
        now = time.monotonic()
        return ProcessReport(process=self.processes.process, at=at, finished_tasks=self.book.finished_tasks,
                             stages=self.book.stage_counts(),
                             scorers=[replica for d in self.dispatchers for replica in d.view.report(now)],
                             calls_in_flight=sum(d.view.in_flight for d in self.dispatchers),
                             steps=self.replicas.report(self.steps, now))

    def progress(self, batch_id: str) -> tuple[str | None, BatchProgress | None]:
        """The workflow's runtime status (None: no such batch) and its counts, if it reported any; once Dapr
        has purged a finished workflow (its retention policy), as the batch's outcome record tells them."""
        if not is_batch_id(batch_id):  # the console passes on what a URL held: no Dapr name is made of it
            return None, None
        state = self.workflows.get_workflow_state(workflow_instance_id(batch_id), fetch_payloads=True)
        if state is None:
            item = self.dapr.get_state(STATESTORE, outcome_key(batch_id))
            if not item.data:
                return None, None
            record = OutcomeRecord.model_validate_json(item.data)
            return record.ended.lower(), record.progress()
        try:
            counts = BatchProgress.model_validate_json(state.serialized_custom_status or "")
        except ValueError:
            counts = None
        return state.runtime_status.name.lower(), counts

    def batches(self, _: dict[str, Any]) -> BatchesNow:
        """Running and queued batches with their counts; the stages and replicas as every workflow process
        heard from lately tells them (``processes``)."""
        ledger = ledger_store.read_now(self.dapr)
        running = []
        for entry in ledger.running:
            _, counts = self.progress(entry.batch_id)
            running.append(RunningBatch(batch_id=entry.batch_id, total=entry.total, since=entry.since,
                                        **(counts.model_dump(exclude={"total", "queued"}) if counts else {})))
        # The head of the queue: a page of it, however long it is (``queued_batches``/``queued_tasks`` count all).
        queued = [QueuedBatch(batch_id=e.batch_id, total=e.total, since=e.since, position=place)
                  for place, e in self.ledger.run_now(self.dapr, ledger_store.queued(ledger, QUEUE_SHOWN))]
        return BatchesNow(running=running, queued=queued, queued_batches=ledger.queued,
                          queued_tasks=ledger.queued_tasks, cap=ledger.cap,
                          **self.processes.everyone().model_dump())

    def batch(self, body: dict[str, Any]) -> BatchNow:
        """One batch as the workflow app knows it now: status, counts, queue position, each moving task."""
        batch_id = str(body["batch_id"])
        status, counts = self.progress(batch_id)
        entry, position = (self.ledger.run_now(self.dapr, ledger_store.locate(batch_id)) if is_batch_id(batch_id)
                           else (None, None))
        return BatchNow(batch_id=batch_id, status=status, counts=counts, position=position,
                        since=entry.since if entry else None, tasks=self.stages(entry) if entry else {})

    def stages(self, entry: Entry) -> dict[str, MovingTask]:
        """Each task of a batch in the ledger whose chunk has run (whichever workflow process ran it), as its
        chunk's run last wrote it; a task not there has not started (the console shows it waiting)."""
        keys = [stages_key(entry.batch_id, index) for index in range(entry.chunks)]
        tasks: dict[str, MovingTask] = {}
        for item in self.dapr.get_bulk_state(STATESTORE, keys, parallelism=STAGE_READS).items:
            if item.data:
                tasks.update(live.ChunkStages.decode(item.data))
        return tasks

    def terminate(self, body: dict[str, Any]) -> Termination:
        batch_id = str(body["batch_id"])
        status, _ = self.progress(batch_id)
        if status not in {WorkflowStatus.RUNNING.name.lower(), WorkflowStatus.PENDING.name.lower(),
                          WorkflowStatus.SUSPENDED.name.lower()}:
            return Termination(terminated=False, status=status,
                               reason="no such batch is running" if status is None else f"the batch is {status}")
        self.workflows.terminate_workflow(workflow_instance_id(batch_id))
        return Termination(terminated=True, status=status)


    def purge(self, body: dict[str, Any]) -> Purge:
        """Delete a finished batch's records now: its workflow's state, its outcome record, its chunks' data, its
        batch-id record (last: while it is there, the id stays bound to its content)."""
        batch_id = str(body["batch_id"])
        if not is_batch_id(batch_id):  # the console passes on what a URL held: no Dapr name is made of it
            return Purge(purged=False, refused="not a batch id")
        instance = workflow_instance_id(batch_id)
        state = self.workflows.get_workflow_state(instance, fetch_payloads=True)
        recorded = bool(self.dapr.get_state(STATESTORE, outcome_key(batch_id)).data)
        claimed = bool(self.dapr.get_state(BATCHES_STORE, record_key(batch_id)).data)
        status = state.runtime_status if state is not None else None
        shown = status.name.lower() if status is not None else ("ended" if recorded else None)
        if (refusal := purge_refusal(status, recorded)) is not None:
            return Purge(purged=False, known=True, status=shown, refused=refusal)
        if state is None and not recorded and not claimed:
            return Purge(purged=False, known=False)
        keys = [outcome_key(batch_id)]
        if state is not None:
            # The chunks' data is deleted when the outcome is out; a terminated batch may have left some.
            chunks = _chunks_of(state.serialized_input)
            keys += [key(batch_id, i) for i in range(chunks) for key in (tasks_key, results_key, stages_key)]
            self.workflows.purge_workflow(instance)  # its history and inbox: what the retention policy deletes
        for operations in deletions(keys):
            self.dapr.execute_state_transaction(STATESTORE, operations)
        self.dapr.delete_state(BATCHES_STORE, record_key(batch_id))
        self.book.forget(batch_id)
        return Purge(purged=True, known=True, status=shown)


def purge_refusal(status: WorkflowStatus | None, outcome_recorded: bool) -> str | None:
    """Why a batch is not purged now, or None. Only a finished batch is: its workflow ended and its outcome
    published (a terminated one's outcome follows its end by seconds; purged before, it would be left half)."""
    if status in STILL_GOING:
        return f"the batch is {status.name.lower()}: only a finished batch is purged (terminate it first)"
    if status is not None and not outcome_recorded:
        return f"the batch's workflow is {status.name.lower()} but its outcome is not published yet; try again soon"
    return None


def _chunks_of(serialized_input: str | None) -> int:
    try:
        return BatchInput.model_validate_json(serialized_input or "").chunks
    except ValueError:  # an input of another version: its chunks' keys expire with their TTL
        return 0


def configure(app: App, answers: ConsoleAnswers) -> None:
    app.method(CONSOLE_BATCHES)(json_method(answers.batches))
    app.method(CONSOLE_BATCH)(json_method(answers.batch))
    app.method(CONSOLE_TERMINATE)(json_method(answers.terminate))
    app.method(CONSOLE_PURGE)(json_method(answers.purge))
