"""CloudEvent 1.0 envelopes for Taskfan's events, built and read with the ``cloudevents`` package."""

from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any, TypeVar

import pydantic_core
from cloudevents.conversion import to_dict
from cloudevents.http import CloudEvent, from_dict
from pydantic import BaseModel, ValidationError

from taskfan.contracts import DEADLETTER_EVENT_TYPE, MAX_BATCH_BYTES, DeadLetter, describe_validation_error

CLOUDEVENT_CONTENT_TYPE = "application/cloudevents+json"
SOURCE = "taskfan"

M = TypeVar("M", bound=BaseModel)


# A dead-letter record carries at most this much of the refused event, and a reason of at most this many
# characters: its own encoding can never fail or outgrow a message, whatever was refused.
MAX_REFUSED_EVENT_BYTES = 64 * 1024
MAX_REASON_CHARS = 1_000
# The deepest JSON a dead-letter record repeats as JSON (a task batch is 4 levels deep); deeper, it is text.
MAX_REFUSED_DEPTH = 32
# The JSON escape of a UTF-16 surrogate: only a text containing one can parse into a lone surrogate.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF][0-9a-fA-F]{2}")


class EventError(ValueError):
    """An event that cannot be used; the message is the reason given to the sender."""


def parse_json(raw: bytes | str) -> Any:
    """Strict JSON: UTF-8 text whose strings are all valid Unicode. Every way it can fail is an EventError
    with the reason, including those ``json.loads`` signals otherwise: nesting deeper than Python recurses
    (RecursionError), integers past Python's 4,300-digit limit (ValueError), and lone surrogates, which
    parse but break every later encoding (UTF-8 text, a hash, the state store)."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw  # strict: no encoded surrogates
    except UnicodeDecodeError as exc:
        raise EventError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EventError(str(exc)) from None
    except RecursionError:
        raise EventError("nested too deeply to read") from None
    except ValueError as exc:  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"
        raise EventError(f"a value cannot be read: {exc}") from None
    if _SURROGATE_ESCAPE.search(text) and not _is_unicode(document):
        raise EventError("a lone surrogate (an unpaired \\ud800-\\udfff escape) is not Unicode text")
    return document


def _is_unicode(document: object) -> bool:
    try:
        json.dumps(document, ensure_ascii=False).encode()
    except (UnicodeEncodeError, RecursionError):
        return False
    return True


def utc_now() -> str:
    return datetime.now(UTC).isoformat()


def encode(event_type: str, data: BaseModel | dict[str, Any], *, source: str = SOURCE,
           event_id: str | None = None, subject: str | None = None) -> bytes:
    """A structured-mode CloudEvent, UTF-8 JSON ready for ``application/cloudevents+json``.

    No ASCII escaping: text of any script costs its UTF-8 size, not up to six bytes per character. Encoded by
    pydantic-core, the model included: a tenth of the time of ``model_dump`` and the json module (a 10,000-task
    outcome is one of these).
    """
    attributes = {
        "type": event_type,
        "source": source,
        "id": event_id or str(uuid.uuid4()),
        "datacontenttype": "application/json",
    }
    if subject:
        attributes["subject"] = subject
    return pydantic_core.to_json(to_dict(CloudEvent(attributes, data)))


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
        envelope = parse_json(raw)
    except EventError as exc:
        raise EventError(f"event is not valid JSON: {exc}") from None
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
            data = parse_json(data)
        except EventError as exc:
            raise EventError(f"event data is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise EventError(f"event data must be a JSON object, got {type(data).__name__}")
    try:
        return model.model_validate(data), envelope
    except ValidationError as exc:
        raise EventError(f"event data does not match the {model.__name__} schema: "
                         f"{describe_validation_error(exc)}") from None


def dead_letter(reason: str, event: object, source: str) -> bytes:
    """A dead-letter CloudEvent: why, and the refused event (``refused_event``) or what is known of the batch.

    Its encoding cannot fail: the reason is cut to MAX_REASON_CHARS with anything that is not Unicode text
    escaped."""
    return encode(DEADLETTER_EVENT_TYPE, DeadLetter(reason=printable(reason, MAX_REASON_CHARS), event=event,
                                                    received_at=utc_now()), source=source)


def refused_event(raw: bytes | str) -> object:
    """A refused event as a dead-letter record repeats it: its JSON when that is small, shallow and valid
    Unicode; else its text, escaped where it is not UTF-8 and cut to MAX_REFUSED_EVENT_BYTES."""
    data = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
    if len(data) <= MAX_REFUSED_EVENT_BYTES:
        try:
            document = parse_json(data)
        except EventError:
            pass
        else:
            if _depth_at_most(document, MAX_REFUSED_DEPTH):
                return document
    text = data[:MAX_REFUSED_EVENT_BYTES].decode("utf-8", "backslashreplace")
    return text if len(data) <= MAX_REFUSED_EVENT_BYTES else f"{text}... [cut: {len(data)} bytes in all]"


def printable(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with whatever is not Unicode text (lone surrogates) escaped."""
    text = text[:limit]
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _depth_at_most(document: object, limit: int) -> bool:
    pending = [(document, 1)]
    while pending:
        node, depth = pending.pop()
        if isinstance(node, dict | list):
            if depth > limit:
                return False
            pending.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return True
