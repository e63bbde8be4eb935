"""CloudEvent 1.0 envelopes for Taskfan's events, built and read with the ``cloudevents`` package."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from typing import Any, TypeVar

from cloudevents.conversion import to_dict
from cloudevents.http import CloudEvent, from_dict
from pydantic import BaseModel, ValidationError

from taskfan.contracts import DEADLETTER_EVENT_TYPE, MAX_BATCH_BYTES, DeadLetter, describe_validation_error

CLOUDEVENT_CONTENT_TYPE = "application/cloudevents+json"
SOURCE = "taskfan"

M = TypeVar("M", bound=BaseModel)


class EventError(ValueError):
    """An event that cannot be used; the message is the reason given to the sender."""


def utc_now() -> str:
    return datetime.now(UTC).isoformat()


def encode(event_type: str, data: BaseModel | dict[str, Any], *, source: str = SOURCE,
           event_id: str | None = None, subject: str | None = None) -> bytes:
    """A structured-mode CloudEvent, UTF-8 JSON ready for ``application/cloudevents+json``.

    No ASCII escaping: text of any script costs its UTF-8 size, not up to six bytes per character.
    """
    attributes = {
        "type": event_type,
        "source": source,
        "id": event_id or str(uuid.uuid4()),
        "datacontenttype": "application/json",
    }
    if subject:
        attributes["subject"] = subject
    payload = data.model_dump(mode="json") if isinstance(data, BaseModel) else data
    return json.dumps(to_dict(CloudEvent(attributes, payload)), ensure_ascii=False,
                      separators=(",", ":")).encode()


def decode(raw: bytes | str, model: type[M]) -> M:
    """Read a structured CloudEvent 1.0 and validate its data; raise EventError with the reason."""
    return decode_envelope(raw, model)[0]


def decode_envelope(raw: bytes | str, model: type[M]) -> tuple[M, dict[str, Any]]:
    """``decode``, and the parsed envelope too (its attributes, e.g. the ``traceparent`` Dapr added)."""
    if isinstance(raw, str):
        raw = raw.encode()
    if len(raw) > MAX_BATCH_BYTES + 64 * 1024:
        raise EventError(f"event is {len(raw)} bytes; the limit is {MAX_BATCH_BYTES} bytes of data")
    try:
        envelope = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EventError(f"event is not JSON: {exc}") from None
    if not isinstance(envelope, dict):
        raise EventError(f"event must be a JSON object (a CloudEvent), got {type(envelope).__name__}")
    if envelope.get("specversion") != "1.0":
        raise EventError(f"event is not a CloudEvent 1.0: specversion is {envelope.get('specversion')!r}")
    missing = [k for k in ("id", "source", "type") if not isinstance(envelope.get(k), str) or not envelope[k]]
    if missing:
        raise EventError(f"event is not a valid CloudEvent: attributes {missing} must be non-empty strings")
    try:
        event = from_dict(envelope)
    except Exception as exc:  # the SDK raises several exception types for malformed envelopes
        raise EventError(f"event is not a valid CloudEvent: {exc}") from None
    data = event.get_data()
    if data is None and isinstance(envelope.get("data_base64"), str):
        try:
            data = base64.b64decode(envelope["data_base64"], validate=True)
        except ValueError:
            raise EventError("event data_base64 is not valid base64") from None
    if isinstance(data, bytes | str):
        try:
            data = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise EventError("event data is not JSON") from None
    if not isinstance(data, dict):
        raise EventError(f"event data must be a JSON object, got {type(data).__name__}")
    try:
        return model.model_validate(data), envelope
    except ValidationError as exc:
        raise EventError(f"event data does not match the {model.__name__} schema: "
                         f"{describe_validation_error(exc)}") from None


def dead_letter(reason: str, event: object, source: str) -> bytes:
    """A dead-letter CloudEvent: why, and the refused event (or what is known of the batch)."""
    return encode(DEADLETTER_EVENT_TYPE, DeadLetter(reason=reason, event=event, received_at=utc_now()), source=source)


def loads_lenient(raw: bytes | str) -> object:
    """The raw event as JSON when it parses, else as text: for dead-letter records."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
