"""workflow transport: the ``tasks`` subscription that starts one durable workflow per batch.

The subscription asks Dapr for the raw message (``rawPayload``) so that every malformed event,
even one that is not JSON, reaches this handler and is answered with a dead-letter record that
says why. A handler never raises: it returns success, or retry when Dapr itself is unavailable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import grpc
from dapr.clients import DaprClient
from dapr.clients.grpc._response import TopicEventResponse
from dapr.ext.grpc import App
from dapr.ext.workflow import DaprWorkflowClient, WorkflowRuntime

from taskfan import events
from taskfan.contracts import (
    DEADLETTER_EVENT_TYPE,
    DEADLETTER_TOPIC,
    PUBSUB,
    TASKS_TOPIC,
    AppId,
    DeadLetter,
    TaskBatch,
)
from taskfan.dapr_app import sdk_logger_options, serve
from taskfan.settings import Settings
from taskfan.workflow import orchestration

log = logging.getLogger(__name__)


class BatchIntake:
    """Turns events on ``tasks`` into workflow instances, at most one per batch id."""

    def __init__(self, workflows: DaprWorkflowClient, dapr: DaprClient, max_in_flight: int) -> None:
        self.workflows = workflows
        self.dapr = dapr
        self.max_in_flight = max_in_flight

    def on_event(self, event) -> TopicEventResponse:  # noqa: ANN001 - dapr.ext.grpc's v1.Event
        raw: bytes = event.data
        try:
            batch = events.decode(raw, TaskBatch)
        except events.EventError as exc:
            return self.dead_letter(raw, str(exc))
        try:
            return self.start(batch)
        except Exception as exc:  # noqa: BLE001 - e.g. the sidecar is restarting
            log.warning("could not start workflow; Dapr will redeliver",
                        extra={"batch_id": batch.batch_id, "error": str(exc)})
            return TopicEventResponse("retry")

    def start(self, batch: TaskBatch) -> TopicEventResponse:
        # Instance id = batch id: a batch published twice, or redelivered, runs once.
        if self.workflows.get_workflow_state(batch.batch_id, fetch_payloads=False) is not None:
            log.info("duplicate batch ignored", extra={"batch_id": batch.batch_id})
            return TopicEventResponse("success")
        tasks = [task.model_dump() for task in batch.tasks]
        orchestration.store_batch(self.dapr, batch.batch_id, tasks)
        try:
            self.workflows.schedule_new_workflow(
                orchestration.BATCH_WORKFLOW,
                input=orchestration.workflow_input(batch.batch_id, len(tasks), self.max_in_flight),
                instance_id=batch.batch_id,
            )
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.ALREADY_EXISTS:  # type: ignore[attr-defined]
                raise
            log.info("duplicate batch ignored", extra={"batch_id": batch.batch_id})
            return TopicEventResponse("success")
        log.info("batch accepted", extra={"batch_id": batch.batch_id, "tasks": len(batch.tasks)})
        return TopicEventResponse("success")

    def dead_letter(self, raw: bytes, reason: str) -> TopicEventResponse:
        record = DeadLetter(reason=reason, event=events.loads_lenient(raw), received_at=events.utc_now())
        try:
            self.dapr.publish_event(
                PUBSUB, DEADLETTER_TOPIC,
                events.encode(DEADLETTER_EVENT_TYPE, record, source=AppId.WORKFLOW),
                data_content_type=events.CLOUDEVENT_CONTENT_TYPE,
            )
        except Exception as exc:  # noqa: BLE001 - any publish failure means "try again later"
            log.warning("dead-letter publish failed; Dapr will redeliver", extra={"error": str(exc)})
            return TopicEventResponse("retry")
        log.warning("event dead-lettered", extra={"reason": reason})
        return TopicEventResponse("success")


def configure(app: App, settings: Settings) -> Callable[[], None]:
    runtime = WorkflowRuntime(maximum_thread_pool_workers=16, logger_options=sdk_logger_options())
    orchestration.register(runtime)
    runtime.start()
    intake = BatchIntake(DaprWorkflowClient(logger_options=sdk_logger_options()), DaprClient(),
                         settings.max_in_flight)
    app.subscribe(
        PUBSUB, TASKS_TOPIC,
        metadata={"rawPayload": "true"},
        # Dapr's own safety net for what never reaches this handler (e.g. retries exhausted).
        dead_letter_topic=DEADLETTER_TOPIC,
    )(intake.on_event)
    return runtime.shutdown


def main() -> None:
    serve(AppId.WORKFLOW, configure, threads=16)


if __name__ == "__main__":
    main()
