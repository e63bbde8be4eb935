"""workflow transport: the ``tasks`` subscription, the workflow worker and the console's questions, in one
Dapr app.

The subscription asks Dapr for the raw message (``rawPayload``) so that every malformed event,
even one that is not JSON, reaches the intake and is answered with a dead-letter record.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from dapr.clients import DaprClient
from dapr.ext.grpc import App
from dapr.ext.workflow import DaprWorkflowClient

from services.workflow import console_api, ledger_store, live, metrics, reconciler
from services.workflow.activities import BatchActivities, StepCalls
from services.workflow.console_api import ConsoleAnswers
from services.workflow.intake import BatchIntake
from services.workflow.step_client import StepClient
from services.workflow.worker import LATEST, WORKFLOW_VERSIONS, create_runtime
from taskfan import pipeline
from taskfan.contracts import MAX_MESSAGE_BYTES, PUBSUB, TASKS_TOPIC, UNDELIVERABLE_TOPIC, AppId
from taskfan.dapr_app import sdk_logger_options, serve
from taskfan.settings import Settings


def configure(app: App, settings: Settings, activities: type[BatchActivities] = BatchActivities,
              versions: Mapping[str, Callable[..., Any]] = WORKFLOW_VERSIONS, latest: str = LATEST,
              ) -> Callable[[], None]:
    """The app's parts, made once here and handed to whoever uses them: the metrics, the admission ledger's
    store, the live book, the step calls (with their client and the pipeline's declaration), the activities,
    the intake, the console's answers and the reconciler. ``activities``, ``versions``, ``latest``: an upgraded
    app's own (README, "Upgrading with batches in flight")."""
    measured = metrics.WorkflowMetrics()
    ledger = ledger_store.LedgerStore(measured.ledger_changed)
    book = live.LiveBatches()
    steps = StepCalls(pipeline.load(), StepClient(settings.step_timeout_s, measured), book)
    runtime = create_runtime(activities(steps, ledger, measured), versions, latest)
    runtime.start()
    workflows = DaprWorkflowClient(logger_options=sdk_logger_options())
    dapr = DaprClient(max_grpc_message_length=MAX_MESSAGE_BYTES)
    intake = BatchIntake(workflows, dapr, settings, ledger)
    app.subscribe(
        PUBSUB, TASKS_TOPIC,
        metadata={"rawPayload": "true"},
        # Dapr's own safety net: an event it gave up on (the `intake` retries exhausted) goes here...
        dead_letter_topic=UNDELIVERABLE_TOPIC,
    )(intake.on_event)
    # ... and comes back as a dead-letter record in Taskfan's shape.
    app.subscribe(PUBSUB, UNDELIVERABLE_TOPIC, metadata={"rawPayload": "true"})(intake.on_undeliverable)
    answers = ConsoleAnswers(dapr, workflows, book, ledger, steps.dispatchers.values(), steps.pipeline.steps,
                             steps.client.replicas)
    console_api.configure(app, answers)
    answers.processes.start()
    stop_reconciler = reconciler.start(settings, book, ledger, measured)
    measured.watch(book, steps.pipeline.names)
    metrics_server = measured.serve(settings)

    def shutdown() -> None:
        answers.processes.stop()
        stop_reconciler()
        if metrics_server is not None:
            metrics_server.shutdown()
        runtime.shutdown()

    return shutdown


def main(**upgraded: Any) -> None:
    """Serve the workflow app; ``upgraded``: ``configure``'s keywords of an upgraded app."""
    serve(AppId.WORKFLOW, functools.partial(configure, **upgraded), threads=16)


if __name__ == "__main__":
    main()
