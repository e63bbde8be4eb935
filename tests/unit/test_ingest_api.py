import json

import pytest
from fastapi.testclient import TestClient

from bench import hostile
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


class FakeRecords:
    """Stands in for the batch-record store: first write wins, as Dapr's first-write concurrency does."""

    def __init__(self):
        self.data: dict[str, bytes] = {}

    def save_state(self, store, key, value, options=None, state_metadata=None):
        if key in self.data:
            raise RuntimeError("failed to set key: possible etag mismatch")
        self.data[key] = value.encode()

    def get_state(self, store, key):
        return type("Item", (), {"data": self.data.get(key, b"")})()


@pytest.fixture
def publisher():
    return FakePublisher()


@pytest.fixture
def records():
    return FakeRecords()


TOKEN = "unit-test-token"


def api_client(publisher, records, **kwargs) -> TestClient:
    """A client the way the CLI is one: the stack's token, the server's own Host."""
    api = create_api(publisher, records, token=TOKEN, hosts={"testserver"})
    return TestClient(api, headers={"Authorization": f"Bearer {TOKEN}", **kwargs.pop("headers", {})}, **kwargs)


@pytest.fixture
def client(publisher, records):
    with api_client(publisher, records) as c:
        yield c


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Basic {TOKEN}", TOKEN])
def test_a_batch_without_the_stacks_token_is_refused_401_and_not_published(publisher, records, authorization):
    with TestClient(create_api(publisher, records, token=TOKEN, hosts={"testserver"})) as c:
        headers = {"Authorization": authorization} if authorization else {}
        response = c.post("/batches", json={"tasks": [TASK]}, headers=headers)
        assert c.get("/healthz").status_code == 200  # health stays open
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in response.json()["error"]
    assert publisher.published == []


def test_a_request_for_another_host_is_refused_421(publisher, records):
    with api_client(publisher, records, headers={"Host": "attacker.example:8080"}) as c:
        for response in (c.post("/batches", json={"tasks": [TASK]}), c.get("/healthz")):
            assert response.status_code == 421
            assert "attacker.example" in response.json()["error"]
    assert publisher.published == []


def test_ingest_will_not_run_without_a_token(monkeypatch):
    from services.ingest import app

    monkeypatch.delenv("INGEST_TOKEN", raising=False)
    monkeypatch.delenv("SECURITY", raising=False)
    with pytest.raises(SystemExit, match="INGEST_TOKEN"):
        app.main()


def test_only_a_stack_with_security_off_leaves_the_api_open(publisher, records):
    with TestClient(create_api(publisher, records, token="", hosts={"testserver"})) as c:
        assert c.post("/batches", json={"tasks": [TASK]}).status_code == 202


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
    with api_client(FakePublisher(fail=True), FakeRecords()) as c:
        response = c.post("/batches", json=[TASK])
    assert response.status_code == 503
    assert "sidecar down" in response.json()["error"]


TEXTS = ["Ünïcödé accents", "漢字とかなのテキスト", "emoji 🎉🚀✨ everywhere", "مرحبا بالعالم",
         "control \u0001\t chars"]


def test_a_batch_of_any_script_within_the_limit_is_published_at_its_utf8_size(client, publisher):
    # ~1.6 MB of UTF-8 JSON: escaped as \\uXXXX it would be ~5 MB, past the sidecar's 4 MiB gRPC limit.
    tasks = [{"task_id": f"t{i}", "title": TEXTS[i % 5][:200],
              "description": ((TEXTS[i % 5] + " ") * 150)[:2000]} for i in range(400)]
    body = json.dumps({"batch_id": "b-utf8", "tasks": tasks}, ensure_ascii=False).encode()
    assert 1_000_000 < len(body) < MAX_BATCH_BYTES
    response = client.post("/batches", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 202, response.text
    data = publisher.published[0][2]
    assert b"\\u" not in data.replace(b"\\u0001", b"")  # only the control character stays escaped
    assert len(data) < len(body) + 1024
    assert events.decode(data, TaskBatch).tasks[2].title == TEXTS[2]


def test_an_oversized_body_is_refused_from_its_content_length_without_reading_it(client):
    def never_sent():
        raise AssertionError("the body was read")
        yield b""

    response = client.post("/batches", content=never_sent(),
                           headers={"content-type": "application/json", "content-length": str(MAX_BATCH_BYTES + 1)})
    assert response.status_code == 413 and "limit" in response.json()["error"]


def test_a_chunked_body_is_cut_off_at_the_limit(client):
    def chunks():  # no Content-Length: 4 MiB offered in 64 KiB pieces
        for _ in range(64):
            yield b" " * 65536

    response = client.post("/batches", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and "over the limit" in response.json()["error"]


def test_a_publish_failure_is_one_readable_line(publisher):
    publisher.fail = True
    with api_client(publisher, FakeRecords()) as c:
        response = c.post("/batches", json={"tasks": [TASK]})
    assert response.status_code == 503
    assert response.json()["error"] == "could not publish the batch to pub/sub, try again: sidecar down"


def test_one_batch_id_one_content(client, publisher):
    first = {"batch_id": "b-same", "tasks": [TASK]}
    assert client.post("/batches", json=first).status_code == 202
    # The same content again (a client retry) is accepted and published again; the workflow runs it once.
    assert client.post("/batches", json={"tasks": [TASK], "batch_id": "b-same"}).status_code == 202
    other = client.post("/batches", json={"batch_id": "b-same", "tasks": [{**TASK, "title": "Other title"}]})
    assert other.status_code == 409
    assert "already in use with different content" in other.json()["error"]
    assert len(publisher.published) == 2


@pytest.mark.parametrize("kind", list(hostile.BODIES))
def test_a_hostile_body_gets_a_4xx_with_a_reason_never_a_5xx(client, publisher, kind):
    response = client.post("/batches", content=hostile.BODIES[kind], headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    assert response.json()["error"]
    assert publisher.published == []
