"""Turns events on ``tasks`` into workflow instances, at most one per batch id.

Every malformed event is answered on the dead-letter topic with the reason, at once. A handler never
raises: it returns success, or retry when the failure can pass (Dapr, Redis or the scheduler unavailable:
``retry.is_transient``; Dapr then redelivers, within the resiliency policy ``intake``). A failure that would
repeat is dead-lettered at once too, never retried.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import grpc
from dapr.clients import DaprClient
from dapr.clients.grpc._response import TopicEventResponse
from dapr.clients.grpc._state import StateItem
from dapr.ext.workflow import DaprWorkflowClient
from dapr.ext.workflow._durabletask.internal import protos as pb
from dapr.ext.workflow._durabletask.internal import shared
from google.protobuf import wrappers_pb2
from pydantic import BaseModel

from services.workflow import admission, faults, ledger_store
from services.workflow.batch_workflow import batch_input
from services.workflow.chunking import chunks_of, slots_of, split
from services.workflow.names import BATCH_WORKFLOW
from services.workflow.retry import is_transient
from services.workflow.state_keys import STATE_TTL_S, outcome_key, tasks_key
from taskfan import batch_records, events
from taskfan.batch_records import Claim
from taskfan.contracts import DEADLETTER_TOPIC, PUBSUB, STATESTORE, TASK_LIST, AppId, TaskBatch, workflow_instance_id
from taskfan.settings import Settings
from taskfan.tracing import traceparent_in

log = logging.getLogger(__name__)


class BatchIntake:
    def __init__(self, workflows: DaprWorkflowClient, dapr: DaprClient, settings: Settings,
                 ledger: ledger_store.LedgerStore) -> None:
        self.workflows = workflows
        self.dapr = dapr
        self.settings = settings
        self.ledger = ledger
        # The reads on_event makes beside the claim (each delivery runs on a thread of the app's gRPC server).
        self.reads = ThreadPoolExecutor(max_workers=16, thread_name_prefix="intake-reads")

    def on_event(self, event) -> TopicEventResponse:  # noqa: ANN001 - dapr.ext.grpc's v1.Event
        raw: bytes = event.data
        try:
            batch, envelope = events.decode_envelope(raw, TaskBatch)
        except events.EventError as exc:
            return self.dead_letter(raw, str(exc))
        try:
            # The two checks for a duplicate are read while the id is claimed: three reads in the time of one.
            answered = self.reads.submit(self.answered, batch.batch_id)
            started = self.reads.submit(self.started, batch.batch_id)
            claim = batch_records.claim(self.dapr, batch, read_first=True)  # ingest claimed most
            if claim is Claim.CONFLICT:
                return self.dead_letter(raw, batch_records.conflict_message(batch.batch_id))
            if answered.result():
                # Its workflow ran, published the outcome and was purged (retention): the record answers.
                log.info("duplicate batch ignored", extra={"batch_id": batch.batch_id, "why": "its outcome is out"})
                return TopicEventResponse("success")
            if started.result():  # a batch published twice, or redelivered, runs once
                log.info("duplicate batch ignored", extra={"batch_id": batch.batch_id})
                return TopicEventResponse("success")
            return self.start(batch, traceparent_in(envelope))
        except Exception as exc:  # noqa: BLE001 - every failure gets an answer: a retry or a dead letter
            error = f"{type(exc).__name__}: {events.printable(str(exc), 300)}"
            if is_transient(exc):
                log.warning("could not start workflow; Dapr will redeliver",
                            extra={"batch_id": batch.batch_id, "error": error})
                return TopicEventResponse("retry")
            # The same event would fail the same way again: answer now, never retry it.
            log.error("could not start workflow; dead-lettered", extra={"batch_id": batch.batch_id, "error": error})
            self.give_back(batch.batch_id)
            return self.dead_letter(raw, f"the workflow service could not start this batch: {error}")

    def on_undeliverable(self, event) -> TopicEventResponse:  # noqa: ANN001 - dapr.ext.grpc's v1.Event
        try:
            self.unadmit(event.data)
        except Exception as exc:  # noqa: BLE001 - the sidecar is restarting: Dapr redelivers this too
            if is_transient(exc):
                log.warning("could not release an undeliverable batch's slots", extra={"error": str(exc)})
                return TopicEventResponse("retry")
            log.error("could not release an undeliverable batch's slots", extra={"error": str(exc)})
        return self.dead_letter(event.data, "the workflow service could not start this batch: Dapr's retries "
                                            "(resiliency policy 'intake') were exhausted; publish it again")

    def unadmit(self, raw: bytes) -> None:
        """Dapr gave up on this event: a batch ``admit`` took slots for and whose workflow never started gives
        them back (else the reconciler would answer, after a while, for a batch told to be published again)."""
        try:
            batch, _ = events.decode_envelope(raw, TaskBatch)
        except events.EventError:
            return  # never admitted
        self.release_unstarted(batch.batch_id)

    def answered(self, batch_id: str) -> bool:
        return bool(self.dapr.get_state(STATESTORE, outcome_key(batch_id)).data)

    def started(self, batch_id: str) -> bool:
        return self.workflows.get_workflow_state(workflow_instance_id(batch_id), fetch_payloads=False) is not None

    def release_unstarted(self, batch_id: str) -> None:
        if not self.started(batch_id):
            self.ledger.release_and_wake_now(self.dapr, self.workflows, batch_id)

    def give_back(self, batch_id: str) -> None:
        """Best effort, before dead-lettering a batch that cannot start: its slots, if it took any."""
        try:
            self.release_unstarted(batch_id)
        except Exception as exc:  # noqa: BLE001 - the reconciler answers for it if its slots stay taken
            log.warning("could not release a refused batch's slots", extra={"batch_id": batch_id, "error": str(exc)})

    def start(self, batch: TaskBatch, traceparent: str | None = None) -> TopicEventResponse:
        """Store the tasks, admit the batch and start its workflow, instance id = batch id (``on_event`` found
        none: a start that meets one, redelivered meanwhile, is a duplicate)."""
        instance = workflow_instance_id(batch.batch_id)
        self.store_tasks(batch)
        admitted = self.admit(batch)
        faults.point(faults.AFTER_LEDGER_WRITE)
        try:
            schedule(self.workflows, BATCH_WORKFLOW, instance, traceparent, batch_input(
                batch.batch_id, len(batch.tasks), self.settings.max_in_flight, self.settings.max_tasks_in_progress,
                traceparent, admitted))
        except grpc.RpcError as exc:
            if not _already_exists(exc):
                raise
            log.info("duplicate batch ignored", extra={"batch_id": batch.batch_id})
            return TopicEventResponse("success")
        log.info("batch accepted", extra={"batch_id": batch.batch_id, "tasks": len(batch.tasks)})
        return TopicEventResponse("success")

    def admit(self, batch: TaskBatch) -> bool:
        """Put the batch in the admission ledger, running if its slots fit now, else queued. One admitted
        here starts its chunks at once: no admission activity in its workflow, a third of a small batch's
        engine work (a queued one waits in its workflow, as always). Idempotent: the ledger knows a batch once.
        """
        entry = admission.Entry(batch_id=batch.batch_id, total=len(batch.tasks), chunks=chunks_of(len(batch.tasks)),
                                slots=slots_of(len(batch.tasks), self.settings.max_in_flight),
                                since=datetime.now(UTC).isoformat())
        cap = self.settings.max_tasks_in_progress
        others, position = self.ledger.run_now(self.dapr, ledger_store.ask(entry, cap))
        ledger_store.announce_now(self.workflows, others)
        return position == 0

    def store_tasks(self, batch: TaskBatch) -> None:
        """Each chunk's tasks go to the state store before the workflow starts (not into its history)."""
        items = [StateItem(tasks_key(batch.batch_id, i), TASK_LIST.dump_json(part),
                           metadata={"ttlInSeconds": str(STATE_TTL_S)})
                 for i, part in enumerate(split(batch.tasks))]
        self.dapr.save_bulk_state(STATESTORE, items)

    def dead_letter(self, raw: bytes, reason: str) -> TopicEventResponse:
        # The record's encoding cannot fail (events.dead_letter): only the publish can, and that passes.
        record = events.dead_letter(reason, events.refused_event(raw), source=AppId.WORKFLOW)
        try:
            self.dapr.publish_event(PUBSUB, DEADLETTER_TOPIC, record, data_content_type=events.CLOUDEVENT_CONTENT_TYPE)
        except Exception as exc:  # noqa: BLE001 - any publish failure means "try again later"
            log.warning("dead-letter publish failed; Dapr will redeliver", extra={"error": str(exc)})
            return TopicEventResponse("retry")
        log.warning("event dead-lettered", extra={"reason": reason})
        return TopicEventResponse("success")


def schedule(workflows: DaprWorkflowClient, name: str, instance_id: str, traceparent: str | None,
             inp: BaseModel) -> None:
    """``schedule_new_workflow``, under the batch's trace: the engine's spans for the workflow and its
    activities join the trace the publish started. dapr-ext-workflow 1.18.1 cannot pass a trace context, so
    the request is the one it makes (``TaskHubGrpcClient.schedule_new_orchestration``) plus
    ``parentTraceContext``, sent through the client's own stub (tests/unit/test_batch_workflow.py checks that
    the SDK still has it)."""
    if traceparent is None:
        workflows.schedule_new_workflow(name, input=inp, instance_id=instance_id)
        return
    hub = workflows._DaprWorkflowClient__obj  # type: ignore[attr-defined]  # noqa: SLF001 - see above
    hub._stub.StartInstance(pb.CreateInstanceRequest(  # noqa: SLF001
        name=name, instanceId=instance_id, input=wrappers_pb2.StringValue(value=shared.to_json(inp)),
        version=wrappers_pb2.StringValue(value=""), parentTraceContext=pb.TraceContext(traceParent=traceparent)))


def _already_exists(exc: grpc.RpcError) -> bool:
    # Dapr 1.18 answers UNKNOWN "an active workflow with ID '...' already exists", not ALREADY_EXISTS.
    return (exc.code() == grpc.StatusCode.ALREADY_EXISTS  # type: ignore[attr-defined]
            or "already exists" in (exc.details() or ""))  # type: ignore[attr-defined]
