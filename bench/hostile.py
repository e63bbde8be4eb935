"""Hostile input, shared by the unit tests (the parsers) and the end-to-end tests (the real stack).

Each kind is raw bytes a client can put on the ``tasks`` stream or post to ingest; each carries a marker
in its first bytes, so a test finds its dead-letter record even when the record repeats it as cut text.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from taskfan.contracts import MAX_BATCH_BYTES

DEPTH = 5_000
DIGITS = 5_000


def _envelope_text(marker: str, data: str) -> str:
    """A CloudEvent 1.0 around ``data`` (JSON text, spliced in as is), the marker as its id."""
    head = json.dumps({"specversion": "1.0", "id": marker, "source": "hostile", "type": "io.taskfan.task-batch.v1",
                       "datacontenttype": "application/json"})
    return head[:-1] + ',"data":' + data + "}"


def _task(title: str = '"Fix the login page"', task_id: str = '"t1"') -> str:
    return '{"task_id":' + task_id + ',"title":' + title + ',"description":"Long enough description"}'


def _batch(marker: str, tasks: str) -> str:
    return '{"batch_id":' + json.dumps(f"hostile-{marker}") + ',"tasks":' + tasks + "}"


def _event(data: Callable[[str], str]) -> Callable[[str], bytes]:
    return lambda marker: _envelope_text(marker, data(marker)).encode()


# kind -> marker -> raw event
EVENTS: dict[str, Callable[[str], bytes]] = {
    "arrays nested 5,000 deep": _event(lambda m: _batch(m, "[" * DEPTH + "]" * DEPTH)),
    "objects nested 5,000 deep": _event(lambda m: _batch(m, '{"a":' * DEPTH + "1" + "}" * DEPTH)),
    "an integer of 5,000 digits": _event(lambda m: _batch(m, "[" + _task(title="9" * DIGITS) + "]")),
    "a float of 5,000 digits": _event(lambda m: _batch(m, "[" + _task(title="1." + "9" * DIGITS + "e999") + "]")),
    "a lone surrogate escaped in a task id": _event(lambda m: _batch(m, "[" + _task(task_id='"\\ud800"') + "]")),
    "a lone low surrogate in a title": _event(lambda m: _batch(m, "[" + _task(title='"ab\\udfffcd"') + "]")),
    "a surrogate encoded as UTF-8 bytes": lambda m: _envelope_text(m, _batch(m, "[" + _task(
        title='"X"') + "]")).encode().replace(b'"X"', b'"\xed\xa0\x80"'),
    "invalid UTF-8": lambda m: _envelope_text(m, _batch(m, "[" + _task(title='"X"') + "]")).encode().replace(
        b'"X"', b'"\xff\xfe"'),
    "NaN for a title": _event(lambda m: _batch(m, "[" + _task(title="NaN") + "]")),
    "tasks as a string": _event(lambda m: _batch(m, '"not a list"')),
    "a task id as a number": _event(lambda m: _batch(m, "[" + _task(task_id="12345678901234567890") + "]")),
    "a title as an object": _event(lambda m: _batch(m, "[" + _task(title='{"x":[1,2]}') + "]")),
    "data as a list": _event(lambda m: "[1,2,3]"),
    "a batch id with Dapr's || separator": _event(lambda m: '{"batch_id":' + json.dumps(f"a||{m}") + ',"tasks":['
                                                              + _task() + "]}"),
    "a batch id with ~": _event(lambda m: '{"batch_id":' + json.dumps(f"a~{m}") + ',"tasks":[' + _task() + "]}"),
    "specversion as an object": lambda m: json.dumps({"specversion": {"v": "1.0"}, "id": m, "source": "s",
                                                      "type": "t", "data": {}}).encode(),
    "an id as a number": lambda m: ('{"specversion":"1.0","id":1e400,"source":"s","type":"t","m":'
                                    + json.dumps(m) + ',"data":{}}').encode(),
    "data_base64 that is not base64": lambda m: json.dumps({"specversion": "1.0", "id": m, "source": "s",
                                                            "type": "t", "data_base64": "%%%"}).encode(),
    "a NUL byte and control characters": lambda m: (m + "\x00\x01\x1b[2J").encode(),
    "past the message limit": lambda m: _envelope_text(m, _batch(m, "[" + _task(
        title=json.dumps("x" * (MAX_BATCH_BYTES + 100_000))) + "]")).encode(),
}

# Bodies for ingest's POST /batches (a batch, not a CloudEvent): each must get a 4xx, never a 5xx.
BODIES: dict[str, bytes] = {
    "arrays nested 5,000 deep": b'{"tasks":' + b"[" * DEPTH + b"]" * DEPTH + b"}",
    "objects nested 5,000 deep": b'{"tasks":[' + b'{"a":' * DEPTH + b"1" + b"}" * DEPTH + b"]}",
    "an integer of 5,000 digits": ("[" + _task(title="9" * DIGITS) + "]").encode(),
    "a lone surrogate escaped in a task id": ("[" + _task(task_id='"\\ud800"') + "]").encode(),
    "a lone surrogate in the batch id": ('{"batch_id":"\\udc00","tasks":[' + _task() + "]}").encode(),
    "a surrogate encoded as UTF-8 bytes": ("[" + _task(title='"X"') + "]").encode().replace(b'"X"', b'"\xed\xa0\x80"'),
    "invalid UTF-8": ("[" + _task(title='"X"') + "]").encode().replace(b'"X"', b'"\xff"'),
    "NaN for a title": ("[" + _task(title="NaN") + "]").encode(),
    "a batch id with Dapr's || separator": ('{"batch_id":"a||b","tasks":[' + _task() + "]}").encode(),
    "a batch id of 129 characters": ('{"batch_id":"' + "a" * 129 + '","tasks":[' + _task() + "]}").encode(),
    "a task id as a huge number": ("[" + _task(task_id="1" * 4000) + "]").encode(),
}
