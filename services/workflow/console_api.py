"""The console's questions to the workflow app, through Dapr service invocation (``services/console`` asks;
the Configuration's access control lets no other app call these methods).

The workflow app is where the answers are: the admission ledger (every running and queued batch), each
batch workflow's custom status (its counts), the live view of the tasks its activities are moving
(``live``), the scorer replicas as their answers describe them (``scoring``) and every step's replicas
(``replicas``). Handlers only read and encode; terminating goes through Dapr's workflow API, and the
reconciler then publishes the batch's outcome (every unfinished task failed, "terminated") as for any
workflow ended early.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from dapr.clients import DaprClient
from dapr.ext.grpc import App
from dapr.ext.workflow import DaprWorkflowClient, WorkflowStatus

from services.workflow import ledger_store, live, scoring
from services.workflow.models import (
    BatchesNow,
    BatchNow,
    BatchProgress,
    OutcomeRecord,
    QueuedBatch,
    RunningBatch,
    Termination,
)
from services.workflow.replicas import StepReplicas
from services.workflow.state_keys import outcome_key
from taskfan.contracts import (
    CONSOLE_BATCH,
    CONSOLE_BATCHES,
    CONSOLE_TERMINATE,
    STATESTORE,
    is_batch_id,
    workflow_instance_id,
)
from taskfan.dapr_app import json_method
from taskfan.pipeline import Step

QUEUE_SHOWN = 200  # the queued batches the console lists (it counts all of them)


class ConsoleAnswers:
    def __init__(self, dapr: DaprClient, workflows: DaprWorkflowClient, book: live.LiveBatches,
                 ledger: ledger_store.LedgerStore, dispatchers: Iterable[scoring.Dispatcher] = (),
                 steps: Sequence[Step] = (), replicas: StepReplicas | None = None) -> None:
        self.dapr = dapr
        self.workflows = workflows
        self.book = book
        self.ledger = ledger
        self.dispatchers = tuple(dispatchers)  # of the steps spread by slots: their replicas, for the console
        self.steps = tuple(steps)  # the declared ones, in order: a section each on the console
        self.replicas = replicas or StepReplicas()  # every step's, as the step client heard them

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
        """Running and queued batches with their counts; the stages and scorers of the whole stack."""
        ledger = ledger_store.read_now(self.dapr)
        running = []
        for entry in ledger.running:
            _, counts = self.progress(entry.batch_id)
            running.append(RunningBatch(batch_id=entry.batch_id, total=entry.total, since=entry.since,
                                        **(counts.model_dump(exclude={"total", "queued"}) if counts else {})))
        # The head of the queue: a page of it, however long it is (``queued_batches``/``queued_tasks`` count all).
        queued = [QueuedBatch(batch_id=e.batch_id, total=e.total, since=e.since, position=place)
                  for place, e in self.ledger.run_now(self.dapr, ledger_store.queued(ledger, QUEUE_SHOWN))]
        now = time.monotonic()
        return BatchesNow(running=running, queued=queued, queued_batches=ledger.queued,
                          queued_tasks=ledger.queued_tasks, cap=ledger.cap, finished_tasks=self.book.finished_tasks,
                          stages=self.book.stage_counts(),
                          scorers=[replica for d in self.dispatchers for replica in d.view.report(now)],
                          calls_in_flight=sum(d.view.in_flight for d in self.dispatchers),
                          steps=self.replicas.report(self.steps, now))

    def batch(self, body: dict[str, Any]) -> BatchNow:
        """One batch as the workflow app knows it now: status, counts, queue position, each moving task."""
        batch_id = str(body["batch_id"])
        status, counts = self.progress(batch_id)
        entry, position = (self.ledger.run_now(self.dapr, ledger_store.locate(batch_id)) if is_batch_id(batch_id)
                           else (None, None))
        return BatchNow(batch_id=batch_id, status=status, counts=counts, position=position,
                        since=entry.since if entry else None, tasks=self.book.view(batch_id))

    def terminate(self, body: dict[str, Any]) -> Termination:
        batch_id = str(body["batch_id"])
        status, _ = self.progress(batch_id)
        if status not in {WorkflowStatus.RUNNING.name.lower(), WorkflowStatus.PENDING.name.lower(),
                          WorkflowStatus.SUSPENDED.name.lower()}:
            return Termination(terminated=False, status=status,
                               reason="no such batch is running" if status is None else f"the batch is {status}")
        self.workflows.terminate_workflow(workflow_instance_id(batch_id))
        return Termination(terminated=True, status=status)


def configure(app: App, answers: ConsoleAnswers) -> None:
    app.method(CONSOLE_BATCHES)(json_method(answers.batches))
    app.method(CONSOLE_BATCH)(json_method(answers.batch))
    app.method(CONSOLE_TERMINATE)(json_method(answers.terminate))
