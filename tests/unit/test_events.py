import base64
import json

import pytest

from bench import hostile
from taskfan import events
from taskfan.contracts import TaskBatch

BATCH = {"batch_id": "b1", "tasks": [{"task_id": "t1", "title": "Hello world", "description": "Long enough text"}]}


def envelope(**overrides):
    event = {"specversion": "1.0", "type": "x", "source": "y", "id": "1",
             "datacontenttype": "application/json", "data": BATCH}
    event.update(overrides)
    return json.dumps(event).encode()


def test_roundtrip():
    raw = events.encode("io.taskfan.task-batch.v1", TaskBatch.model_validate(BATCH))
    assert events.decode(raw, TaskBatch).batch_id == "b1"
    assert json.loads(raw)["specversion"] == "1.0"


def test_data_as_json_string_and_base64_are_accepted():
    assert events.decode(envelope(data=json.dumps(BATCH)), TaskBatch).batch_id == "b1"
    raw = envelope(data_base64=base64.b64encode(json.dumps(BATCH).encode()).decode())
    raw = json.dumps({k: v for k, v in json.loads(raw).items() if k != "data"}).encode()
    assert events.decode(raw, TaskBatch).batch_id == "b1"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json at all", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (json.dumps({"batch_id": "b"}).encode(), "not a CloudEvent 1.0"),
        (envelope(type=None), "not a valid CloudEvent"),
        (envelope(data="plain text"), "data is not valid JSON"),
        (envelope(data=[1]), "must be a JSON object"),
        (envelope(data={"batch_id": "b", "tasks": []}), "tasks"),
        (envelope(data={"batch_id": "b c", "tasks": BATCH["tasks"]}), "batch_id"),
    ],
)
def test_malformed_events_say_why(raw, reason):
    with pytest.raises(events.EventError) as err:
        events.decode(raw, TaskBatch)
    assert reason in str(err.value)


@pytest.mark.parametrize("kind", list(hostile.EVENTS))
def test_every_hostile_event_is_refused_with_a_reason_and_gets_a_dead_letter_that_encodes(kind):
    raw = hostile.EVENTS[kind]("marker-1")
    with pytest.raises(events.EventError) as err:
        events.decode(raw, TaskBatch)
    record = events.dead_letter(str(err.value), events.refused_event(raw), source="workflow")
    assert len(record) < events.MAX_REFUSED_EVENT_BYTES + 4 * events.MAX_REASON_CHARS + 1024
    data = json.loads(record)["data"]
    assert data["reason"] == str(err.value)[:events.MAX_REASON_CHARS]
    assert "marker-1" in json.dumps(data["event"])  # the sender can tell which event it was


@pytest.mark.parametrize(("raw", "reason"), [
    (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
    (b"9" * 5000, "4300 digits"),
    (b'"\\ud800"', "lone surrogate"),
    (b'["ok", "\\udfff"]', "lone surrogate"),
    (b'"\xed\xa0\x80"', "not UTF-8"),
    (b'"\xff"', "not UTF-8"),
    (b"{", "Expecting property name"),
])
def test_parse_json_names_what_is_wrong(raw, reason):
    with pytest.raises(events.EventError) as err:
        events.parse_json(raw)
    assert reason in str(err.value)


def test_parse_json_keeps_what_is_valid():
    assert events.parse_json(b'"\\ud83d\\ude00 \\u00e9"') == "\U0001F600 \u00e9"  # an escaped pair is an emoji
    assert events.parse_json("caf\u00e9".join(['"', '"']).encode()) == "caf\u00e9"


def test_a_refused_event_is_repeated_as_json_when_small_and_sound_else_as_cut_text():
    assert events.refused_event(b'{"a": 1}') == {"a": 1}
    assert events.refused_event(b"\xffoops") == "\\xffoops"
    deep = b"[" * 100 + b"]" * 100
    assert events.refused_event(deep) == deep.decode()
    big = b'{"x": "' + b"y" * 200_000 + b'"}'
    text = events.refused_event(big)
    assert text.startswith('{"x": "yyy') and text.endswith(f"[cut: {len(big)} bytes in all]")
    assert len(text) < events.MAX_REFUSED_EVENT_BYTES + 100


def test_a_reason_with_a_lone_surrogate_still_encodes():
    record = json.loads(events.dead_letter("bad \ud800" + "x" * 5000, "e", source="workflow"))
    assert record["data"]["reason"].startswith("bad \\ud800") and len(record["data"]["reason"]) <= 1006
