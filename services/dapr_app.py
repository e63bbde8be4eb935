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

from taskfan import logs
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


def create_app(threads: int) -> App:
    return App(thread_pool=futures.ThreadPoolExecutor(max_workers=threads))


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
