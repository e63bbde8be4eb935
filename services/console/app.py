"""console process: the web console (``web``, on CONSOLE_PORT) and its Dapr app (app id ``console``).

Its sidecar brings it every batch on ``tasks``, every outcome and every dead-letter record (its own
subscriptions, so it sees batches from any publisher: ingest, the Dapr API, a raw Redis client), carries
its questions to the workflow app (service invocation), publishes the re-runs it is asked for, and keeps its
history in the state store (``history``), read back when it starts, and its sessions and one-time sign-in codes
(``sessions``), which every replica of the console shares.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import httpx
import redis
import uvicorn
from dapr.clients import DaprClient
from dapr.clients.grpc._request import TransactionalStateOperation, TransactionOperationType
from dapr.clients.grpc._response import TopicEventResponse
from dapr.clients.grpc._state import Concurrency, StateOptions
from dapr.ext.grpc import App

from services.console import streams, writing
from services.console.dead_letters import DeadLetters
from services.console.history import STATE_TTL_S, BatchBook, HistoryUnreadable, read_back
from services.console.sessions import Sessions, SignInCodes
from services.console.streams import StreamsNow
from services.console.watch import Watcher
from services.console.web import create_console
from services.workflow.models import BatchesNow, BatchNow, Purge, Termination
from taskfan import events
from taskfan.contracts import (
    CONSOLE_BATCH,
    CONSOLE_BATCHES,
    CONSOLE_PUBSUB,
    CONSOLE_PURGE,
    CONSOLE_REDIS_USER,
    CONSOLE_TERMINATE,
    DEADLETTER_TOPIC,
    MAX_MESSAGE_BYTES,
    OUTCOMES_TOPIC,
    PUBSUB,
    STATESTORE,
    TASK_BATCH_EVENT_TYPE,
    TASKS_TOPIC,
    AppId,
    Outcome,
    TaskBatch,
)
from taskfan.dapr_app import replica_name, serve
from taskfan.http_doors import local_hosts
from taskfan.settings import Settings
from taskfan.tracing import trace_id_of, traceparent_in

log = logging.getLogger(__name__)


class WorkflowApp:
    """The workflow app's console methods, through the console's sidecar."""

    def __init__(self, dapr: DaprClient) -> None:
        self.dapr = dapr

    def ask(self, method: str, body: dict[str, Any]) -> bytes:
        answer = self.dapr.invoke_method(AppId.WORKFLOW, method, data=json.dumps(body),
                                         content_type="application/json", timeout=10)
        return bytes(answer.data)

    def batches(self) -> BatchesNow:
        return BatchesNow.model_validate_json(self.ask(CONSOLE_BATCHES, {}))

    def batch(self, batch_id: str) -> BatchNow:
        return BatchNow.model_validate_json(self.ask(CONSOLE_BATCH, {"batch_id": batch_id}))

    def terminate(self, batch_id: str) -> Termination:
        return Termination.model_validate_json(self.ask(CONSOLE_TERMINATE, {"batch_id": batch_id}))

    def purge(self, batch_id: str) -> Purge:
        return Purge.model_validate_json(self.ask(CONSOLE_PURGE, {"batch_id": batch_id}))


class ConsoleState:
    """The console's keys in its sidecar's state store (``statestore``; Dapr prefixes them ``console||``)."""

    def __init__(self, dapr: DaprClient, ttl_s: int = STATE_TTL_S) -> None:
        self.dapr = dapr
        self.ttl = {"ttlInSeconds": str(ttl_s)}  # a backstop: the console deletes what it no longer keeps

    def read(self, keys: list[str]) -> dict[str, bytes]:
        items = self.dapr.get_bulk_state(STATESTORE, keys, parallelism=8).items
        if failed := [item for item in items if item.error]:
            raise RuntimeError(f"the state store did not answer for {failed[0].key}: {failed[0].error}")
        return {item.key: item.data for item in items if item.data}

    def change(self, writes: dict[str, bytes], deletes: list[str]) -> None:
        operations = [TransactionalStateOperation(key, value, metadata=self.ttl) for key, value in writes.items()]
        operations += [TransactionalStateOperation(key, operation_type=TransactionOperationType.delete)
                       for key in deletes]
        self.dapr.execute_state_transaction(STATESTORE, operations)


class SignInKeys:
    """The console's sessions and sign-in codes in its sidecar's state store (``sessions.Keys``; Dapr prefixes the
    keys ``console||``), shared by every replica of the console. Blocking: the web app calls it off its loop."""

    def __init__(self, dapr: DaprClient) -> None:
        self.dapr = dapr

    def get(self, key: str) -> bytes | None:
        return self.dapr.get_state(STATESTORE, key).data or None

    def put(self, key: str, value: bytes, ttl_s: int) -> None:
        self.dapr.save_state(STATESTORE, key, value, state_metadata={"ttlInSeconds": str(ttl_s)})

    def create(self, key: str, value: bytes, ttl_s: int) -> bool:
        try:
            self.dapr.save_state(STATESTORE, key, value, options=_FIRST_WRITE,
                                 state_metadata={"ttlInSeconds": str(ttl_s)})
        except Exception:
            if self.get(key) is None:
                raise  # refused for another reason than an existing key: the store did not answer
            return False
        return True

    def delete(self, key: str) -> None:
        self.dapr.delete_state(STATESTORE, key)


_FIRST_WRITE = StateOptions(concurrency=Concurrency.first_write)


class Jaeger:
    """The stack's Jaeger, through its query API."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def url(self, trace_id: str) -> str:
        return f"{self.base_url}/api/traces/{trace_id}"

    def get(self, trace_id: str) -> dict[str, Any] | None:
        answer = httpx.get(self.url(trace_id), timeout=10)
        if answer.status_code == 404:
            return None
        answer.raise_for_status()
        data = answer.json().get("data") or []
        return data[0] if data else None


class Subscriptions:
    """What the topics tell the book and the dead letters kept. Every event is acknowledged: one the console cannot
    read is the workflow's to answer (it dead-letters malformed batches), not the console's to retry."""

    def __init__(self, book: BatchBook, letters: DeadLetters | None = None) -> None:
        self.book = book
        self.letters = letters

    def on_tasks(self, event) -> TopicEventResponse:  # noqa: ANN001 - dapr.ext.grpc's v1.Event
        try:
            batch, envelope = events.decode_envelope(event.data, TaskBatch)
        except events.EventError:
            return TopicEventResponse("success")
        # The trace Dapr started at the publish: its id is in the CloudEvent Dapr delivered (traceparent).
        self.book.accepted(batch, trace_id=trace_id_of(traceparent_in(envelope)))
        return TopicEventResponse("success")

    def on_outcome(self, event) -> TopicEventResponse:  # noqa: ANN001
        try:
            self.book.finished(events.decode(event.data, Outcome))
        except events.EventError as exc:
            log.warning("unreadable outcome", extra={"error": str(exc)})
        return TopicEventResponse("success")

    def on_dead_letter(self, event) -> TopicEventResponse:  # noqa: ANN001
        if self.letters is not None:
            try:
                self.letters.add(bytes(event.data))  # whatever it holds: it came on the dead-letter topic
            except Exception:  # a bug here must not make Dapr deliver the record again and again
                log.exception("could not keep a dead letter")
        try:
            record = events.parse_json(event.data)
        except events.EventError:
            return TopicEventResponse("success")
        data = record.get("data") if isinstance(record, dict) else None
        refused = data.get("event") if isinstance(data, dict) else None
        batch_id = _batch_id_in(refused)
        if batch_id is not None and isinstance(data, dict):
            self.book.dead_lettered(batch_id, str(data.get("reason", "dead-lettered")))
        return TopicEventResponse("success")


def _batch_id_in(refused: object) -> str | None:
    """The batch id in a dead-lettered event: the event itself, its CloudEvent data, or a batch record."""
    for candidate in (refused, refused.get("data") if isinstance(refused, dict) else None):
        if isinstance(candidate, dict) and isinstance(candidate.get("batch_id"), str):
            return candidate["batch_id"]
    return None


def streams_reader(settings: Settings) -> Callable[[], StreamsNow] | None:
    """The streams' lag, read as the console's own Redis user; None when it has no password for it (the page says
    so). Short timeouts: the same loop asks the workflow app, and a Redis that hangs must not hold that up long."""
    if settings.locked and not settings.redis_console_password:
        log.warning("REDIS_CONSOLE_PASSWORD is not set: the console shows no stream lag")
        return None
    return streams.reader(lambda: redis.Redis(
        host=settings.redis_host, port=settings.redis_port, username=CONSOLE_REDIS_USER if settings.locked else None,
        password=settings.redis_console_password or None, socket_timeout=2, socket_connect_timeout=2))


def configure(app: App, settings: Settings) -> Callable[[], None]:
    if not (settings.ingest_token and settings.console_view_token) and settings.locked:
        raise SystemExit("INGEST_TOKEN or CONSOLE_VIEW_TOKEN is not set: the console never runs without "
                         "authentication (`taskfan stack up` generates the stack's credentials)")
    dapr = DaprClient(max_grpc_message_length=MAX_MESSAGE_BYTES)
    book = BatchBook(ConsoleState(dapr), history=settings.console_history, detail_bytes=settings.console_detail_bytes)
    try:
        read_back(book)  # before the subscriptions: their events land on the history read
    except HistoryUnreadable as exc:
        raise SystemExit(str(exc)) from exc
    letters = DeadLetters(ConsoleState(dapr))
    try:
        letters.load()  # the store answered the history's read just now
    except Exception as exc:  # noqa: BLE001 - whatever the sidecar's client raised
        raise SystemExit(f"the console's dead letters could not be read: {exc}") from exc
    # One replica writes the history and subscribes (the lease's holder); the others follow what it writes.
    subscriptions = Subscriptions(book, letters)
    answers = writing.HeldAnswers(book)
    role = writing.HistoryRole(
        # Its name as holder: a replica restarted (the same name) takes its lease back at once.
        writing.Lease(dapr, replica_name()), book, letters,
        writing.Streams(dapr, CONSOLE_PUBSUB,
                        {TASKS_TOPIC: subscriptions.on_tasks, OUTCOMES_TOPIC: subscriptions.on_outcome,
                         DEADLETTER_TOPIC: subscriptions.on_dead_letter},
                        answer=answers.hold, ended=answers.drop),
        writing.Forgets(dapr), answers)
    role.start()
    workflow = WorkflowApp(dapr)
    watcher = Watcher(workflow.batches, streams=streams_reader(settings))
    watcher.start()

    def publish(batch: TaskBatch) -> None:
        dapr.publish_event(PUBSUB, TASKS_TOPIC, events.encode(TASK_BATCH_EVENT_TYPE, batch, source=AppId.CONSOLE,
                                                             subject=batch.batch_id),
                           data_content_type=events.CLOUDEVENT_CONTENT_TYPE)

    def replay(event: bytes) -> None:
        # As it is (rawPayload): the refused event again, a CloudEvent or not, for the workflow service to answer.
        dapr.publish_event(PUBSUB, TASKS_TOPIC, event, data_content_type="application/json",
                           publish_metadata={"rawPayload": "true"})

    hosts = local_hosts(settings.console_port) | set(Settings.comma_list(settings.console_hosts))
    web = create_console(book, watcher, workflow, publish, token=settings.ingest_token,
                         view_token=settings.console_view_token, hosts=hosts, port=settings.console_port,
                         sessions=Sessions(SignInKeys(dapr), settings.console_session_ttl_s),
                         codes=SignInCodes(SignInKeys(dapr)), letters=letters, replay=replay,
                         traces=Jaeger(settings.traces_url) if settings.tracing else None, forget=role.purged)
    server = uvicorn.Server(uvicorn.Config(web, host=settings.console_host, port=settings.console_port,
                                           log_config=None, access_log=False, timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, name="console-web", daemon=True)
    thread.start()
    log.info("console on http", extra={"address": f"{settings.console_host}:{settings.console_port}"})

    def shutdown() -> None:
        server.should_exit = True
        thread.join(timeout=5)
        watcher.stop()
        role.stop()  # a writer writes what changed in the last seconds

    return shutdown


def main() -> None:
    serve(AppId.CONSOLE, configure)


if __name__ == "__main__":
    main()
