"""The one piece of Dapr app boilerplate every Taskfan service shares.

A service is a dapr-ext-grpc ``App`` on the port its sidecar calls (``APP_PORT``), with JSON
method handlers that only decode, call a plain function, and encode.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from collections.abc import Callable
from concurrent import futures
from typing import Any

from dapr.clients.grpc._request import InvokeMethodRequest
from dapr.clients.grpc._response import InvokeMethodResponse
from dapr.ext.grpc import App
from dapr.ext.workflow.logger import LoggerOptions
from pydantic import BaseModel

from taskfan import logs
from taskfan.contracts import MAX_MESSAGE_BYTES, StepAnswer, Task
from taskfan.settings import Settings

JsonHandler = Callable[[dict[str, Any]], dict[str, Any]]
log = logging.getLogger(__name__)


def json_method(fn: JsonHandler) -> Callable[[InvokeMethodRequest], InvokeMethodResponse]:
    """Adapt ``fn(dict) -> dict`` to a service-invocation handler speaking JSON."""

    def handler(request: InvokeMethodRequest) -> InvokeMethodResponse:
        result = fn(json.loads(request.data or b"{}"))
        return InvokeMethodResponse(json.dumps(result).encode(), "application/json")

    handler.__name__ = getattr(fn, "__name__", "handler")
    return handler


def per_task(rule: Callable[[Any], dict[str, Any]], model: type[BaseModel] = Task) -> JsonHandler:
    """A step method body: ``{"tasks": [...]}`` in, ``{"results": [StepAnswer, ...]}`` out, one per task.

    A task the rule cannot handle gets an ``error`` entry instead of failing the whole call, so the
    workflow retries just that task.
    """

    def handle(body: dict[str, Any]) -> dict[str, Any]:
        results = []
        for raw in body["tasks"]:
            try:
                answer = StepAnswer(task_id=raw["task_id"], **rule(model.model_validate(raw)))
            except Exception as exc:  # noqa: BLE001 - reported per task, the call itself succeeds
                answer = StepAnswer(task_id=str(raw.get("task_id")), error=f"{type(exc).__name__}: {exc}")
            results.append(answer.model_dump(exclude_unset=True))
        return {"results": results}

    handle.__name__ = getattr(rule, "__name__", "handle")
    return handle


def sdk_logger_options() -> LoggerOptions:
    """For the workflow SDK: no plain-text handler of its own; its records reach our JSON root handler."""
    return LoggerOptions(log_level=logging.WARNING, log_handler=logging.NullHandler())


def create_app(threads: int) -> App:
    return App(thread_pool=futures.ThreadPoolExecutor(max_workers=threads), max_grpc_message_length=MAX_MESSAGE_BYTES)


Configure = Callable[[App, Settings], Callable[[], None] | None]


def serve(app_id: str, configure: Configure, *, threads: int = 16) -> None:
    """Set up logging and settings, let the service register its handlers, serve until SIGTERM.

    ``configure`` may return a shutdown hook, run after the server stops.
    """
    settings = Settings.from_env()
    logs.configure(app_id, settings.log_level)
    app = create_app(threads)
    shutdown = configure(app, settings)
    port = int(os.environ.get("APP_PORT", "0")) or None
    signal.signal(signal.SIGTERM, lambda *_: app.stop())
    signal.signal(signal.SIGINT, lambda *_: app.stop())
    log.info("serving", extra={"app_port": port, "threads": threads})
    try:
        app.run(port, listen_address="127.0.0.1")
    finally:
        if shutdown is not None:
            shutdown()


def serve_step(app_id: str, method: str, rule: Callable[[Task], dict[str, Any]]) -> None:
    """Serve one pure per-task rule as the step method ``method`` of app ``app_id``."""

    def configure(app: App, settings: Settings) -> None:
        app.method(method)(json_method(per_task(rule)))

    serve(app_id, configure)
