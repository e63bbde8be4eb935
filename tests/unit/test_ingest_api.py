import json

import pytest
from fastapi.testclient import TestClient

from services.ingest.api import create_api
from taskfan import events
from taskfan.contracts import MAX_BATCH_BYTES, TaskBatch


class FakePublisher:
    """Stands in for the sidecar client: the API's own logic is what is under test here."""

    def __init__(self, fail: bool = False):
        self.published: list[tuple[str, str, bytes, str]] = []
        self.fail = fail

    async def publish_event(self, pubsub, topic, data, data_content_type=None):
        if self.fail:
            raise RuntimeError("sidecar down")
        self.published.append((pubsub, topic, data, data_content_type))


@pytest.fixture
def publisher():
    return FakePublisher()


@pytest.fixture
def client(publisher):
    with TestClient(create_api(publisher)) as c:
        yield c


TASK = {"task_id": "t1", "title": "Hello world", "description": "Long enough text"}


def test_accepts_and_publishes_a_cloudevent(client, publisher):
    response = client.post("/batches", json={"batch_id": "b-1", "tasks": [TASK]})
    assert response.status_code == 202
    assert response.json() == {"batch_id": "b-1", "tasks": 1}
    pubsub, topic, data, content_type = publisher.published[0]
    assert (pubsub, topic, content_type) == ("pubsub", "tasks", "application/cloudevents+json")
    assert events.decode(data, TaskBatch).batch_id == "b-1"
    assert json.loads(data)["type"] == "io.taskfan.task-batch.v1"


def test_assigns_a_batch_id_and_accepts_a_bare_list(client):
    response = client.post("/batches", json=[TASK])
    assert response.status_code == 202
    assert response.json()["batch_id"].startswith("batch-")


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b'{"tasks": []}', 422, "tasks"),
        (json.dumps({"tasks": [TASK, TASK]}).encode(), 422, "unique"),
        (json.dumps({"tasks": [{"task_id": "t"}]}).encode(), 422, "title"),
        (json.dumps({"batch_id": "bad id", "tasks": [TASK]}).encode(), 422, "batch_id"),
        (b'"just a string"', 422, "valid"),
    ],
)
def test_bad_batches_get_a_4xx_with_the_reason(client, publisher, body, status, words):
    response = client.post("/batches", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status
    assert words in response.json()["error"]
    assert publisher.published == []


def test_oversized_batch_is_413(client):
    body = b'{"tasks": [' + b" " * MAX_BATCH_BYTES + b"]}"
    response = client.post("/batches", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_wrong_content_type_is_415(client):
    response = client.post("/batches", content=b"x", headers={"content-type": "text/plain"})
    assert response.status_code == 415


def test_publish_failure_is_503():
    with TestClient(create_api(FakePublisher(fail=True))) as c:
        response = c.post("/batches", json=[TASK])
    assert response.status_code == 503
    assert "sidecar down" in response.json()["error"]
