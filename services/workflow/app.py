"""workflow transport: the ``tasks`` subscription, the workflow worker and the console's questions, in one
Dapr app.

The subscription asks Dapr for the raw message (``rawPayload``) so that every malformed event,
even one that is not JSON, reaches the intake and is answered with a dead-letter record.
"""

from __future__ import annotations

from collections.abc import Callable

from dapr.clients import DaprClient
from dapr.ext.grpc import App
from dapr.ext.workflow import DaprWorkflowClient

from services.workflow import activities, console_api, metrics, reconciler
from services.workflow.console_api import ConsoleAnswers
from services.workflow.intake import BatchIntake
from services.workflow.worker import create_runtime
from taskfan.contracts import MAX_MESSAGE_BYTES, PUBSUB, TASKS_TOPIC, UNDELIVERABLE_TOPIC, AppId
from taskfan.dapr_app import sdk_logger_options, serve
from taskfan.settings import Settings


def configure(app: App, settings: Settings) -> Callable[[], None]:
    runtime = create_runtime()
    runtime.start()
    workflows = DaprWorkflowClient(logger_options=sdk_logger_options())
    dapr = DaprClient(max_grpc_message_length=MAX_MESSAGE_BYTES)
    intake = BatchIntake(workflows, dapr, settings)
    app.subscribe(
        PUBSUB, TASKS_TOPIC,
        metadata={"rawPayload": "true"},
        # Dapr's own safety net: an event it gave up on (the `intake` retries exhausted) goes here...
        dead_letter_topic=UNDELIVERABLE_TOPIC,
    )(intake.on_event)
    # ... and comes back as a dead-letter record in Taskfan's shape.
    app.subscribe(PUBSUB, UNDELIVERABLE_TOPIC, metadata={"rawPayload": "true"})(intake.on_undeliverable)
    steps = activities.step_calls()
    console_api.configure(app, ConsoleAnswers(dapr, workflows, steps.dispatchers.values()))
    stop_reconciler = reconciler.start(settings)
    metrics_server = metrics.serve(settings, steps.pipeline.names)

    def shutdown() -> None:
        stop_reconciler()
        if metrics_server is not None:
            metrics_server.shutdown()
        runtime.shutdown()

    return shutdown


def main() -> None:
    serve(AppId.WORKFLOW, configure, threads=16)


if __name__ == "__main__":
    main()
