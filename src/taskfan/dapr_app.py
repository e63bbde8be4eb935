"""The one piece of Dapr app boilerplate every Taskfan service shares.

A service is a dapr-ext-grpc ``App`` on the port its sidecar calls (``APP_PORT``), with JSON
method handlers that only decode, call a plain function, and encode.
"""

from __future__ import annotations

import gc
import hmac
import logging
import os
import signal
import socket
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
import pydantic_core
from dapr.clients.grpc._request import InvokeMethodRequest
from dapr.clients.grpc._response import InvokeMethodResponse
from dapr.ext.grpc import App
from dapr.ext.workflow.logger import LoggerOptions
from pydantic import BaseModel

from taskfan import logs
from taskfan.contracts import MAX_MESSAGE_BYTES, StepAnswer, Task
from taskfan.settings import Settings

JsonHandler = Callable[[dict[str, Any]], dict[str, Any] | BaseModel]
log = logging.getLogger(__name__)


def json_method(fn: JsonHandler) -> Callable[[InvokeMethodRequest], InvokeMethodResponse]:
    """Adapt ``fn(dict) -> dict or model`` to a service-invocation handler speaking JSON."""

    def handler(request: InvokeMethodRequest) -> InvokeMethodResponse:
        # pydantic-core both ways: a tenth of the json module's time, and a lone surrogate is refused on the way in.
        return InvokeMethodResponse(pydantic_core.to_json(fn(pydantic_core.from_json(request.data or b"{}"))),
                                    "application/json")

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


def step_method(rule: Callable[[Any], dict[str, Any]], model: type[BaseModel], replica: str) -> JsonHandler:
    """``per_task``'s answer, saying which replica gave it (``SlotsReport.replica``): the workflow app keeps each
    step's replicas by it, so every step app, one of your own too, shows on the console without code of its own."""
    handle = per_task(rule, model)

    def answer(body: dict[str, Any]) -> dict[str, Any]:
        return {**handle(body), "replica": replica}

    answer.__name__ = handle.__name__
    return answer


def replica_name() -> str:
    """This process's name among its app's replicas, said in every step answer (the console's replicas page): the
    launcher's replica number, or on Kubernetes the pod's name (``TASKFAN_REPLICA``); else the host's name and pid."""
    return os.environ.get("TASKFAN_REPLICA") or f"{socket.gethostname()}-{os.getpid()}"


def sdk_logger_options() -> LoggerOptions:
    """For the workflow SDK: no plain-text handler of its own; its records reach our JSON root handler."""
    return LoggerOptions(log_level=logging.WARNING, log_handler=logging.NullHandler())


class AppTokenInterceptor(grpc.ServerInterceptor):
    """Only our own sidecar may call the app: it sends APP_API_TOKEN as ``dapr-api-token`` on every call.

    dapr-ext-grpc's App does not check the token itself (1.18.1); any other caller of the app port gets
    UNAUTHENTICATED, logged once per caller address. Two discovery calls stay open: daprd 1.18.1 makes
    them without the token (pkg/runtime/processor/subscriber/subscriber.go:576-584 and
    processor/binding/send.go:457-464 never add it), and they only list the app's subscriptions and
    input bindings.
    """

    SENT_WITHOUT_TOKEN_BY_DAPRD = frozenset({"/dapr.proto.runtime.v1.AppCallback/ListTopicSubscriptions",
                                             "/dapr.proto.runtime.v1.AppCallback/ListInputBindings"})

    def __init__(self, token: str) -> None:
        self._token = token.encode()
        self._refused: set[str] = set()

        def refuse(request: object, context: grpc.ServicerContext) -> None:
            peer = context.peer()
            if peer not in self._refused:
                self._refused.add(peer)
                log.warning("refused a call without our sidecar's app token", extra={"peer": peer})
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong dapr-api-token")

        self._refuse = grpc.unary_unary_rpc_method_handler(refuse)

    def intercept_service(self, continuation, details):  # noqa: ANN001, ANN201 - grpc's signature
        sent = dict(details.invocation_metadata or ()).get("dapr-api-token", "")
        if hmac.compare_digest(str(sent).encode(), self._token) or details.method in self.SENT_WITHOUT_TOKEN_BY_DAPRD:
            return continuation(details)
        return self._refuse


def create_app(threads: int, app_token: str = "") -> App:
    # With any server argument given, App ignores max_grpc_message_length: the limits go in options.
    app = App(thread_pool=futures.ThreadPoolExecutor(max_workers=threads),
              interceptors=[AppTokenInterceptor(app_token)] if app_token else [],
              options=[("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                       ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)])
    # Answered by a thread of the pool, like any call: when all of them are stuck, the probe
    # (taskfan.probe, the chart's liveness probe) gets no answer and the container is restarted.
    app.register_health_check(lambda: None)
    return app


Configure = Callable[[App, Settings], Callable[[], None] | None]


# Python's cyclic collector runs once this many new container objects (dicts, lists, models) outlive their
# statement; its default, 700, made it run for nearly every chunk of work on the hot path.
GC_YOUNG_OBJECTS = 20_000


def collect_less() -> None:
    """Tune Python's cyclic garbage collector for a service, once its startup is done: what startup made (modules,
    pydantic's schemas, the SDKs' clients) is frozen out of the collector's scans, and it runs after
    ``GC_YOUNG_OBJECTS`` new objects. A request's objects are freed by reference counting as it ends; the
    collector only finds cycles, and its scans of the whole heap were a large share of the workflow app's CPU
    (README, "Where the time goes")."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG_OBJECTS, 20, 50)


def serve(app_id: str, configure: Configure, *, threads: int = 16) -> None:
    """Set up logging and settings, let the service register its handlers, serve until SIGTERM.

    ``configure`` may return a shutdown hook, run after the server stops.
    """
    settings = Settings.from_env()
    logs.configure(app_id, settings.log_level)
    app = create_app(threads, settings.app_api_token)
    shutdown = configure(app, settings)
    collect_less()
    port = int(os.environ.get("APP_PORT", "0")) or None
    # SIGTERM drains: no new calls, the ones in progress finish (up to a step call's deadline). On
    # Kubernetes the app and its sidecar get SIGTERM together, so a scorer scaled down mid-batch still
    # answers the calls its sidecar passed on. (App.stop() would cut them: it stops with no grace.)
    drain_s = settings.step_timeout_s
    signal.signal(signal.SIGTERM, lambda *_: app._server.stop(drain_s))
    signal.signal(signal.SIGINT, lambda *_: app.stop())
    log.info("serving", extra={"app_port": port, "threads": threads})
    try:
        app.run(port, listen_address="127.0.0.1")
    finally:
        if shutdown is not None:
            shutdown()


def serve_step(app_id: str, method: str, rule: Callable[[Any], dict[str, Any]], model: type[BaseModel] = Task) -> None:
    """Serve one pure per-task rule as the step method ``method`` of app ``app_id``; each task of a call is
    read as ``model`` (what the step reads, pipeline.yaml) before the rule gets it."""

    def configure(app: App, settings: Settings) -> None:
        app.method(method)(json_method(step_method(rule, model, replica_name())))

    serve(app_id, configure)
