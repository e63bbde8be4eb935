"""ingest transport: the HTTP API (``POST /batches``) in front of the ``tasks`` topic."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from dapr.aio.clients import DaprClient
from dapr.clients import DaprClient as SyncDaprClient
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from services.ingest import capacity, openapi
from services.ingest.capacity import Gauge
from taskfan import batch_records, events
from taskfan.batch_records import Claim
from taskfan.contracts import (
    MAX_BATCH_BYTES,
    MAX_MESSAGE_BYTES,
    PUBSUB,
    TASK_BATCH_EVENT_TYPE,
    TASKS_TOPIC,
    AppId,
    BatchRequest,
    TaskBatch,
    describe_validation_error,
)
from taskfan.http_doors import Doors, error

log = logging.getLogger(__name__)


def new_batch_id() -> str:
    return f"batch-{uuid.uuid4().hex}"


class RejectedBatch(ValueError):
    """A batch refused with an HTTP status and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_batch(body: bytes) -> TaskBatch:
    """Decode a request body into a batch, assigning a batch id when the client gave none."""
    if len(body) > MAX_BATCH_BYTES:
        raise RejectedBatch(413, f"batch is {len(body)} bytes; the limit is {MAX_BATCH_BYTES} bytes")
    try:
        document = events.parse_json(body)
    except events.EventError as exc:  # not UTF-8, not JSON, too deep, a huge number, a lone surrogate
        raise RejectedBatch(400, f"request body is not valid JSON: {exc}") from None
    if isinstance(document, list):  # a bare list of tasks is accepted as a batch
        document = {"tasks": document}
    try:
        request = BatchRequest.model_validate(document)
    except ValidationError as exc:
        raise RejectedBatch(422, describe_validation_error(exc)) from None
    return TaskBatch(batch_id=request.batch_id or new_batch_id(), tasks=request.tasks)


async def read_limited(request: Request) -> bytes:
    """The body, refused (413) from its Content-Length or once it grows past the limit: never read whole."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BATCH_BYTES:
        raise RejectedBatch(413, f"batch is {declared} bytes; the limit is {MAX_BATCH_BYTES} bytes")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > MAX_BATCH_BYTES:
            raise RejectedBatch(413, f"batch is over the limit of {MAX_BATCH_BYTES} bytes")
    return bytes(body)


def first_line(exc: Exception) -> str:
    """A short reason for a client: an RPC error's details, not its whole dump."""
    details = getattr(exc, "details", None)
    text = details() if callable(details) else str(exc)
    return (text or type(exc).__name__).strip().splitlines()[0][:300]


def create_api(publisher: DaprClient | None = None, records: SyncDaprClient | None = None, *,
               token: str, hosts: set[str], gauge: Gauge | None = None) -> FastAPI:
    """The ingest API; pass a publisher and a batch-record client to test it without a sidecar. ``gauge``
    (``capacity``) refuses batches while the stack is full; None: never refused for that.

    An empty ``token`` leaves ``POST /batches`` open: only a stack with SECURITY=off (the benchmark's
    comparison) starts ingest without one (``app.main`` refuses otherwise).
    """
    state: dict[str, Any] = {}
    doors = Doors(token, hosts)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state["dapr"] = publisher or DaprClient(max_grpc_message_length=MAX_MESSAGE_BYTES)
        state["records"] = records or SyncDaprClient()
        yield
        if publisher is None:
            await state["dapr"].close()
        if records is None:
            state["records"].close()

    api = FastAPI(title="Taskfan ingest", lifespan=lifespan)

    @api.middleware("http")
    async def only_our_host(request: Request, call_next):  # noqa: ANN001, ANN202 - Starlette's signature
        return doors.host_refusal(request) or await call_next(request)

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.post("/batches", status_code=202, responses=openapi.responses(), openapi_extra=openapi.request_body())
    async def submit(request: Request) -> JSONResponse:
        if refusal := doors.token_refusal(request):
            return refusal
        if request.headers.get("content-type", "application/json").split(";")[0] not in (
            "application/json", "text/json"
        ):
            return error(415, "send the batch as application/json")
        try:
            # Off the event loop: a 2 MiB batch takes a while to validate, and /healthz must not wait.
            batch = await asyncio.to_thread(parse_batch, await read_limited(request))
        except RejectedBatch as exc:
            return error(exc.status, str(exc))
        if gauge is not None and (full := await asyncio.to_thread(gauge.refusal)):
            return error(503, full, headers={"Retry-After": str(capacity.RETRY_AFTER_S)})
        try:
            claim = await asyncio.to_thread(batch_records.claim, state["records"], batch)
        except Exception as exc:  # noqa: BLE001 - the state store is unavailable: the client may retry
            log.error("batch record failed", extra={"batch_id": batch.batch_id, "error": str(exc)})
            return error(503, f"could not record the batch id, try again: {first_line(exc)}")
        if claim is Claim.CONFLICT:
            return error(409, batch_records.conflict_message(batch.batch_id))
        # A batch whose content was recorded before is published again: its first publish may have failed,
        # and the workflow service starts each batch id once.
        data = events.encode(TASK_BATCH_EVENT_TYPE, batch, source=AppId.INGEST, subject=batch.batch_id)
        try:
            await state["dapr"].publish_event(
                PUBSUB, TASKS_TOPIC, data, data_content_type=events.CLOUDEVENT_CONTENT_TYPE
            )
        except Exception as exc:  # noqa: BLE001 - the sidecar's error is passed on as a 503
            log.error("publish failed", extra={"batch_id": batch.batch_id, "error": str(exc)})
            return error(503, f"could not publish the batch to pub/sub, try again: {first_line(exc)}")
        log.info("batch published", extra={"batch_id": batch.batch_id, "tasks": len(batch.tasks)})
        return JSONResponse({"batch_id": batch.batch_id, "tasks": len(batch.tasks)}, status_code=202)

    openapi.install(api)
    return api
