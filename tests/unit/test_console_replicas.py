"""Every step's replicas (the step answers name them, the workflow app keeps them per declared step) and the
streams' lag (read as the console's own Redis user), as the console shows them. The real stack and a real browser:
tests/e2e/test_console_replicas.py."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from services.console.streams import GroupLag, StreamLag, StreamsNow, group_lag, read, reader
from services.console.watch import Watcher
from services.console.web import create_console
from services.workflow import step_client
from services.workflow.models import BatchesNow, StepReplica, WorkflowProcess
from services.workflow.replicas import FORGET_S, MAX_NAMES, SEEN_S, StepReplicas
from services.workflow.step_client import StepClient
from taskfan import pipeline, runfile, stack_secrets
from taskfan.contracts import CONSOLE_REDIS_USER, TOPICS, Task
from taskfan.dapr_app import step_method
from taskfan.settings import Settings
from taskfan.stack import Stack
from taskfan.stack.processes import StackError, StackState
from taskfan.stack.topology import MAX_REPLICAS, MAX_SCORERS, REPLICA_PORT_STRIDE, Topology
from tests.unit.test_console import new_book
from tests.unit.test_console_doors import HOST, OPERATOR, FakeWorkflow, sign_in

DECLARED = pipeline.load(pipeline.DEFAULT_FILE)
VALIDATE = DECLARED.step("validate")


def names(view: StepReplicas, step: str, now: float) -> list[str]:
    return [r.replica for s in view.report(DECLARED.steps, now) if s.step == step for r in s.replicas]


# --- the workflow app's view of every step's replicas ----------------------------------------------------------


def test_every_declared_step_is_reported_in_order_with_the_replicas_heard_from_lately() -> None:
    view = StepReplicas()
    view.learn("validate", "0", now=100.0, answered=50)
    view.learn("validate", "1", now=101.0, answered=20)
    view.learn("validate", "0", now=102.0, answered=5)
    view.learn("score", "2", now=102.0)  # a refusal: alive, nothing answered
    view.learn("enrich", None, now=102.0, answered=9)  # an answer naming no replica (a failed call) is no replica
    report = view.report(DECLARED.steps, 103.0)
    assert [(s.step, s.app_id) for s in report] == [("validate", "validator"), ("enrich", "enricher"),
                                                    ("score", "scorer")]
    assert report[0].replicas == [StepReplica(replica="0", seen_s_ago=1.0, answered=55),
                                  StepReplica(replica="1", seen_s_ago=2.0, answered=20)]
    assert report[1].replicas == [] and [r.answered for r in report[2].replicas] == [0]
    assert names(view, "validate", 101.0 + SEEN_S + 0.5) == ["0"]  # replica 1 not heard from lately


def test_names_gone_for_long_are_forgotten_and_a_step_keeps_a_bounded_number() -> None:
    view = StepReplicas()
    for i in range(50):  # pods replaced one after another, each a new name
        view.learn("enrich", f"enricher-{i}", now=i * FORGET_S / 10, answered=1)
    assert len(view.heard["enrich"]) <= 11 and "enricher-49" in view.heard["enrich"]
    for i in range(MAX_NAMES + 40):  # a step app making up a name per answer, all within FORGET_S
        view.learn("validate", f"made-up-{i}", now=1000.0 + i / 1000)
    assert len(view.heard["validate"]) == MAX_NAMES and f"made-up-{MAX_NAMES + 39}" in view.heard["validate"]
    assert "made-up-0" not in view.heard["validate"]  # its own oldest went, not another step's names
    assert "enricher-49" in view.heard["enrich"]


def test_hostile_replica_names_are_kept_as_text_or_make_the_answer_malformed(monkeypatch) -> None:
    learnt = StepReplicas()
    for odd in ("a::b", "a||b", "x" * 253, "<script>x</script>"):
        learnt.learn("validate", odd, now=1.0, answered=1)
    encoded = BatchesNow(steps=learnt.report(DECLARED.steps, 1.0)).model_dump_json()  # the console's answer
    assert {"a::b", "a||b", "x" * 253} <= set(names(learnt, "validate", 1.0)) and "a||b" in encoded

    client = StepClient(timeout_s=5.0)
    for raw in ('"\\ud800"', f'"{"x" * 254}"', "7", '["a"]'):  # a lone surrogate, 254 chars, not text
        answer = ('{"results": [{"task_id": "t1", "issues": []}], "replica": ' + raw + "}").encode()
        called = asyncio.run(answered_with(client, answer))
        assert called.failure is step_client.Failure.FAILED and "malformed answer" in called.error, raw
    assert client.replicas.heard == {}


async def answered_with(client: StepClient, body: bytes) -> step_client.Called:
    class Response:
        status = 200

        async def read(self) -> bytes:
            return body

        async def __aenter__(self) -> Response:
            return self

        async def __aexit__(self, *_: Any) -> None:
            return None

    class Session:
        def post(self, *_: Any, **__: Any) -> Response:
            return Response()

    client._session = Session()  # type: ignore[assignment]
    return await client.call("validator", "validate", [{"task_id": "t1"}])


def test_the_step_client_learns_the_replica_each_answer_names() -> None:
    class Scripted(StepClient):
        async def call(self, app_id, method, tasks, extra=None, traceparent=None):  # noqa: ANN001, ANN202
            report = step_client.SlotsReport(replica="validator-7")
            return step_client.Called(answers=[step_client.StepAnswer(task_id=t["task_id"]) for t in tasks],
                                      report=report)

    client = Scripted(timeout_s=5.0)
    asyncio.run(client.request(VALIDATE, [{"task_id": "t1"}, {"task_id": "t2"}]))
    asyncio.run(client.request(VALIDATE, [{"task_id": "t3"}]))
    assert [(r.replica, r.answered) for s in client.replicas.report(DECLARED.steps, 0.0) for r in s.replicas] == [
        ("validator-7", 3)]


def test_every_step_method_says_which_replica_answered() -> None:
    method = step_method(lambda task: {"issues": []}, Task, "validator-2")
    answer = method({"tasks": [{"task_id": "t1", "title": "a title", "description": "words"}]})
    assert answer == {"results": [{"task_id": "t1", "issues": []}], "replica": "validator-2"}
    assert step_client.SlotsReport.model_validate(answer).replica == "validator-2"  # as the workflow reads it


# --- the streams' lag ----------------------------------------------------------------------------------------


class FakeRedis:
    """``xinfo_groups`` and ``xlen`` as redis-py answers them (keys decoded, the group's name in bytes)."""

    def __init__(self, streams: dict[str, tuple[int, list[dict[str, Any]]]], refuse: bool = False) -> None:
        self.streams, self.refuse = streams, refuse

    def xinfo_groups(self, stream: str) -> list[dict[str, Any]]:
        if self.refuse:
            raise redis.exceptions.NoPermissionError("NOPERM User taskfan-console has no permissions")
        if stream not in self.streams:
            raise redis.ResponseError("no such key")
        return self.streams[stream][1]

    def xlen(self, stream: str) -> int:
        return self.streams[stream][0]


def group(name: bytes, lag: int | None, pending: int, consumers: int = 1) -> dict[str, Any]:
    return {"name": name, "consumers": consumers, "pending": pending, "last-delivered-id": b"1-0",
            "entries-read": None, "lag": lag}


def test_each_stream_has_its_length_and_each_groups_lag_and_pending() -> None:
    fake = FakeRedis({"tasks": (7, [group(b"workflow", 0, 2), group(b"console", 3, 0)]),
                      "outcomes": (4, [group(b"\xff\xfeodd||name::", None, 1, consumers=0)])})
    found = read(fake)  # type: ignore[arg-type]
    assert [s.stream for s in found] == list(TOPICS)  # every Taskfan stream, a missing one too
    assert found[0] == StreamLag(stream="tasks", length=7, groups=[
        GroupLag(group="console", lag=3, pending=0, consumers=1), GroupLag(group="workflow", lag=0, pending=2,
                                                                            consumers=1)])
    assert found[1].groups[0].lag is None and found[1].groups[0].group == "\ufffd\ufffdodd||name::"
    assert found[2] == StreamLag(stream="tasks-deadletter", length=0)
    StreamsNow(streams=found).model_dump_json()  # whatever a group's name holds, it encodes


def test_a_refusal_or_a_redis_down_is_shown_not_raised() -> None:
    with pytest.raises(redis.exceptions.NoPermissionError):  # never taken for a missing stream
        read(FakeRedis({}, refuse=True))  # type: ignore[arg-type]
    refused = reader(lambda: FakeRedis({}, refuse=True))()  # type: ignore[arg-type, return-value]
    assert refused.streams == [] and "NOPERM" in (refused.error or "")

    def down() -> redis.Redis:
        raise redis.ConnectionError("Connection refused")

    assert "Connection refused" in (reader(down)().error or "")


def test_group_lag_reads_redis_numbers_strictly() -> None:
    assert group_lag(group(b"g", 5, 1)) == GroupLag(group="g", lag=5, pending=1, consumers=1)
    with pytest.raises(KeyError):
        group_lag({"name": b"g"})


# --- the console's Redis user: only the console gets its password; only XINFO GROUPS and XLEN -----------------


def test_only_the_console_process_gets_its_redis_password_and_the_user_may_only_read_lag(tmp_path) -> None:
    stack = Stack(Settings(run_dir=str(tmp_path)), runfile.load())
    password = stack.secrets.redis_console_password
    assert len(password) >= 40 and stack.secret_env("console")["REDIS_CONSOLE_PASSWORD"] == password
    for other in ("ingest", "workflow", "validator", "scorer-0", "console-daprd", "redis", "sidecar-my-subscriber"):
        assert password not in stack.secret_env(other).values(), other
    assert "REDIS_CONSOLE_PASSWORD" not in stack_secrets.without_secrets({"REDIS_CONSOLE_PASSWORD": "x"})
    line = next(u for u in stack.redis_acl().splitlines() if u.startswith(f"user {CONSOLE_REDIS_USER} "))
    streams = " ".join(f"~{t}" for t in TOPICS)
    assert line == (f"user {CONSOLE_REDIS_USER} on >{password} resetkeys {streams} resetchannels -@all "
                    "+xinfo|groups +xlen")
    # The chart makes the same user, word for word (its password from the release's Secret).
    chart = (runfile.load().root / "deploy" / "helm" / "taskfan" / "templates" / "redis.yaml").read_text()
    chart_line = re.search(rf"user {CONSOLE_REDIS_USER} on >%s (.*?)\\n", chart)
    assert chart_line is not None and chart_line.group(1) == line.split(" ", 4)[4]


# --- the console's replicas page and its JSON ----------------------------------------------------------------


def console_with(answer: BatchesNow, streams: StreamsNow) -> TestClient:
    workflow = FakeWorkflow()
    watcher = Watcher(lambda: answer, streams=lambda: streams)
    watcher.poll()
    app = create_console(new_book(), watcher, workflow, lambda _: None, token="operator-s3cret-token",
                         view_token="viewer-s3cret-token", hosts={HOST}, port=8090)
    return TestClient(app, base_url=f"http://{HOST}")


def test_the_replicas_page_shows_every_steps_replicas_and_every_streams_groups() -> None:
    learnt = StepReplicas()
    learnt.learn("validate", "0", now=10.0, answered=12)
    learnt.learn("enrich", "<b>x</b>::1", now=10.0, answered=12)
    streams = StreamsNow(streams=[StreamLag(stream="outcomes", length=9, groups=[
        GroupLag(group="lagging", lag=4, pending=1, consumers=0)]), StreamLag(stream="tasks", length=0)])
    processes = [WorkflowProcess(process="taskfan-workflow-<i>", seen_s_ago=1.2, finished_tasks=40, in_steps=7),
                 WorkflowProcess(process="1", seen_s_ago=0.0, finished_tasks=2)]
    client = console_with(BatchesNow(steps=learnt.report(DECLARED.steps, 11.0), processes=processes), streams)
    sign_in(client, "view")
    html = client.get("/replicas").text
    for step in ("validate", "enrich", "score"):
        assert f'data-step="{step}"' in html
    assert 'data-step-replica="0"' in html and "&lt;b&gt;x&lt;/b&gt;::1" in html and "<b>x</b>" not in html
    assert re.search(r'data-stream="outcomes" data-group="lagging">.*?class="lag">4<.*?class="pending">1<', html)
    assert client.get("/scorers", follow_redirects=False).headers["location"] == "/replicas"
    assert client.get("/api/streams").json() == json.loads(streams.model_dump_json())
    steps = client.get("/api/replicas").json()["steps"]
    assert [s["step"] for s in steps] == ["validate", "enrich", "score"] and steps[0]["replicas"][0]["answered"] == 12
    # The workflow app's processes, each with what it alone is doing.
    assert 'data-workflow-process="taskfan-workflow-&lt;i&gt;"' in html and "<i>" not in html
    assert re.search(r'data-workflow-process="1">.*?<td>2</td>', html, re.S)
    assert client.get("/api/replicas").json()["workflow_processes"] == [p.model_dump() for p in processes]
    assert set(client.get("/api/scorers").json()) == {"scorers", "stages", "calls_in_flight", "error", "throughput"}
    with client.stream("GET", "/events/replicas") as events:
        first = json.loads(next(line for line in events.iter_lines() if line.startswith("data: "))[6:])
    assert set(first["parts"]) == {"scorers", "processes", "steps", "streams", "chart"}
    assert "lagging" in first["parts"]["streams"]


def test_the_page_says_why_it_has_no_lag() -> None:
    client = console_with(BatchesNow(), StreamsNow(error="Redis did not answer: NOPERM"))
    assert "Redis did not answer: NOPERM" in client.get("/replicas", headers=OPERATOR).text
    no_user = Watcher(lambda: BatchesNow())
    no_user.poll()
    assert "no Redis user" in (no_user.now().streams.error or "")


# --- replicas of the other step apps in the local stack ------------------------------------------------------


def test_a_step_apps_replicas_add_a_hundred_per_replica_and_no_two_processes_share_a_port(tmp_path) -> None:
    topology = Topology(runfile.load())
    first, *others = [i for i in topology.instances(1, {"validator": 3}) if i.app_id == "validator"]
    assert [first.label, *(i.label for i in others)] == ["validator", "validator-1", "validator-2"]
    assert [i.http_port - first.http_port for i in others] == [REPLICA_PORT_STRIDE, 2 * REPLICA_PORT_STRIDE]
    assert [i.app_port - first.app_port for i in others] == [REPLICA_PORT_STRIDE, 2 * REPLICA_PORT_STRIDE]  # type: ignore[operator]
    assert topology.instance("validator", 0) == first  # replica 0 is the unscaled app: drills name it `validator`
    most = topology.instances(MAX_SCORERS, {app: MAX_REPLICAS for app in (*DECLARED.app_ids, "workflow", "console")})
    assert [topology.console_url(i) for i in most if i.app_id == "console"][:2] == [
        "http://127.0.0.1:8090", "http://127.0.0.1:8190"]
    ports = [*topology.placement_ports, *topology.scheduler_ports, *topology.sentry_ports]
    ports += [p for i in most for p in (*i.ports, *([i.app_port] if i.app_port else []),
                                        *([i.profile_port] if i.profile_port else []), *topology.instance_web_ports(i))]
    assert len(ports) == len(set(ports)), sorted(p for p in ports if ports.count(p) > 1)
    stack = Stack(Settings(run_dir=str(tmp_path)), runfile.load())
    assert stack.app_of("enricher-3-daprd") == "enricher" and stack.app_of("validator-1") == "validator"
    assert stack.secret_env("validator-2")["DAPR_API_TOKEN"] == stack.secrets.sidecar_token("validator")


@pytest.mark.parametrize(("app_id", "replicas", "refusal"), [
    ("scorer", 2, "--scorers N"), ("ingest", 2, "neither the workflow app, the console nor a step app"),
    ("console", 5, "between 1 and 4"), ("console", 2, "no stack is running"), ("workflow", 5, "between 1 and 4"),
    ("validator", 0, "between 1 and 4"), ("enricher", MAX_REPLICAS + 1, "between 1 and 4"),
    ("validator", 2, "no stack is running")])
def test_scaling_an_app_refuses_what_it_cannot_do(tmp_path, app_id: str, replicas: int, refusal: str) -> None:
    stack = Stack(Settings(run_dir=str(tmp_path)), runfile.load())
    with pytest.raises(StackError, match=refusal):
        stack.scale_app(app_id, replicas, progress=lambda _: None)


def test_a_stack_state_from_before_other_apps_replicas_reads_as_one_each(tmp_path) -> None:
    (tmp_path / "stack.json").write_text(json.dumps({"processes": [], "scorers": 2, "redis_started": True}))
    state = StackState.load(tmp_path / "stack.json")
    assert state is not None and state.replicas == {} and state.scorers == 2
