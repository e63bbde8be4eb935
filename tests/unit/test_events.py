import base64
import json

import pytest

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
        (b"not json at all", "not JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (json.dumps({"batch_id": "b"}).encode(), "not a CloudEvent 1.0"),
        (envelope(type=None), "not a valid CloudEvent"),
        (envelope(data="plain text"), "data is not JSON"),
        (envelope(data=[1]), "must be a JSON object"),
        (envelope(data={"batch_id": "b", "tasks": []}), "tasks"),
        (envelope(data={"batch_id": "b c", "tasks": BATCH["tasks"]}), "batch_id"),
    ],
)
def test_malformed_events_say_why(raw, reason):
    with pytest.raises(events.EventError) as err:
        events.decode(raw, TaskBatch)
    assert reason in str(err.value)


def test_loads_lenient():
    assert events.loads_lenient(b'{"a": 1}') == {"a": 1}
    assert events.loads_lenient(b"\xffoops") == "\ufffdoops"
