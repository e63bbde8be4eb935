"""The console's logic and routes with fakes for the workflow app and the topic (the real stack and a real
browser: tests/e2e/test_console.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.console import pages
from services.console.records import (
    BatchBook,
    Throughput,
    batch_row,
    batch_rows,
    per_replica_rates,
    rerun_id,
    stage_counts,
    task_rows,
)
from services.console.watch import Watcher
from services.console.web import ACTION_HEADER, COOKIE, create_console
from services.workflow.live import LiveBatches
from services.workflow.scoring import ScorerView
from taskfan.contracts import BATCH_ID_PATTERN, Outcome, Task, TaskBatch, TaskResult

TOKEN = "s3cret"
HOST = "127.0.0.1:8090"


def batch(batch_id: str, n: int) -> TaskBatch:
    return TaskBatch(batch_id=batch_id, tasks=[Task(task_id=f"t{i}", title=f"task {i}", description="d")
                                                for i in range(n)])


def outcome(batch_id: str, statuses: list[str]) -> Outcome:
    results = [TaskResult(task_id=f"t{i}", status=s, score=50 if s == "completed" else (0 if s == "rejected" else None),
                          issues=["too short"] if s == "rejected" else [],
                          error="score: boom" if s == "failed" else None)  # type: ignore[arg-type]
               for i, s in enumerate(statuses)]
    return Outcome(batch_id=batch_id, total=len(results), completed=statuses.count("completed"),
                   rejected=statuses.count("rejected"), failed=statuses.count("failed"), average_score=50.0,
                   results=results, started_at="2026-11-30T04:00:00+00:00", finished_at="2026-11-30T04:00:02+00:00")


def test_live_view_follows_tasks_through_the_steps_and_forgets_a_published_batch() -> None:
    live = LiveBatches()
    live.moving("b", "validate", ["t0", "t1"])
    live.moving("b", "score", ["t0"])
    assert live.view("b") == {"t0": {"stage": "score"}, "t1": {"stage": "validate"}}
    live.finished("b", [TaskResult(task_id="t0", status="completed", score=7, tags=["x"])])
    assert live.view("b")["t0"] == {"stage": "done", "score": 7, "tags": ["x"], "issues": [], "error": None}
    assert live.finished_tasks == 1 and live.stage_counts() == {"done": 1, "validate": 1}
    live.finished("b", [TaskResult(task_id="t0", status="completed", score=7)])  # a run again counts once
    assert live.finished_tasks == 1
    live.forget("b")
    assert live.view("b") == {}
    live.moving("b", "score", ["t1"])  # an activity its terminated batch could not stop: not brought back
    assert live.view("b") == {} and live.stage_counts() == {}


def test_scorer_view_reports_each_replica_heard_from_lately() -> None:
    view = ScorerView()
    view.learn({"replica": "0", "slots": 4, "in_progress": 3}, now=100.0, scored=5)
    view.learn({"replica": "1", "slots": 4, "in_progress": 0}, now=101.0, scored=2)
    view.learn({"replica": "0", "slots": 4, "in_progress": 1}, now=102.0, scored=1)
    assert view.report(103.0) == [
        {"replica": "0", "slots": 4, "seen_s_ago": 1.0, "scored": 6, "in_progress": 1},
        {"replica": "1", "slots": 4, "seen_s_ago": 2.0, "scored": 2, "in_progress": 0}]
    assert [r["replica"] for r in view.report(131.5)] == ["0"]  # replica 1 not heard from for 30 s


def test_book_keeps_the_first_content_and_drops_old_payloads_beyond_its_limit() -> None:
    book = BatchBook(max_batches=3, max_tasks_held=5)
    book.accepted(batch("a", 3))
    book.accepted(batch("a", 1))  # same id, other content: the first stays
    assert book.get("a").total == 3  # type: ignore[union-attr]
    book.accepted(batch("b", 3))  # 6 tasks held > 5: a's payload goes
    assert book.get("a").tasks is None and book.get("b").tasks is not None  # type: ignore[union-attr]
    book.accepted(batch("c", 1))
    book.accepted(batch("d", 1))
    assert [r.batch_id for r in book.recent()] == ["d", "c", "b"]


def test_rows_merge_the_ledger_with_the_book() -> None:
    book = BatchBook()
    for batch_id in ("done", "dead", "run", "wait"):
        book.accepted(batch(batch_id, 2))
    book.finished(outcome("done", ["completed", "failed"]))
    book.dead_lettered("dead", "no outcome could be published")
    now = {"running": [{"batch_id": "run", "total": 2, "since": "2026-11-30T04:00:00+00:00", "done": 1,
                        "completed": 1, "rejected": 0, "failed": 0}],
           "queued": [{"batch_id": "wait", "total": 2, "since": "2026-11-30T04:00:01+00:00", "position": 1}]}
    rows = {r.batch_id: r for r in batch_rows(book, now)}
    assert [r.batch_id for r in batch_rows(book, now)][:2] == ["run", "wait"]
    assert (rows["run"].state, rows["run"].percent) == ("running", 50)
    assert (rows["wait"].state, rows["wait"].position) == ("queued", 1)
    assert (rows["done"].state, rows["done"].failed, rows["done"].percent) == ("failed", 1, 100)
    assert rows["dead"].state == "dead-lettered" and rows["dead"].note == "no outcome could be published"


def test_one_batch_row_and_its_tasks_from_the_live_view_then_the_outcome() -> None:
    book = BatchBook()
    book.accepted(batch("b", 3))
    record = book.get("b")
    answer = {"batch_id": "b", "status": "running", "position": 0, "since": "2026-11-30T04:00:00+00:00",
              "counts": {"total": 3, "done": 1, "completed": 1, "rejected": 0, "failed": 0},
              "tasks": {"t0": {"stage": "done", "score": 9, "tags": ["a"]}, "t1": {"stage": "score"}}}
    row = batch_row(record, answer)
    assert row is not None and (row.state, row.done) == ("running", 1)
    tasks = task_rows(record, answer["tasks"])
    assert [(t.task_id, t.stage, t.score) for t in tasks] == [("t0", "done", 9), ("t1", "score", None),
                                                              ("t2", "waiting", None)]
    assert stage_counts(tasks)["waiting"] == 1
    book.finished(outcome("b", ["completed", "rejected", "failed"]))
    tasks = task_rows(book.get("b"), {})
    assert [t.stage for t in tasks] == ["done", "rejected", "failed"]
    assert tasks[1].issues == ["too short"] and tasks[2].error == "score: boom" and tasks[0].title == "task 0"
    assert batch_row(book.get("b"), None).state == "failed"  # type: ignore[union-attr]
    assert batch_row(None, {"batch_id": "x", "status": None, "position": 2, "counts": None}).state == "queued"  # type: ignore[union-attr]
    assert batch_row(None, {"batch_id": "x", "status": None, "position": None}) is None


def test_rerun_ids_are_new_valid_and_do_not_pile_up_suffixes() -> None:
    import re

    first = rerun_id("b" * 128, "rerun")
    assert len(first) <= 128 and re.match(BATCH_ID_PATTERN, first)
    again = rerun_id(rerun_id("batch-1", "retry"), "retry")
    assert again.startswith("batch-1.retry-") and again.count(".retry-") == 1
    assert rerun_id("x", "rerun") != rerun_id("x", "rerun")


def test_throughput_rates_survive_a_counter_reset() -> None:
    rates = Throughput(window_s=100)
    for at, counter in ((0, 0), (1, 10), (2, 30), (3, 5)):
        rates.sample(at, counter)
    assert rates.rates() == [(1, 10.0), (2, 20.0), (3, 5.0)]
    assert per_replica_rates({"scorers": [{"replica": "0", "scored": 10}]},
                            {"scorers": [{"replica": "0", "scored": 30}, {"replica": "1", "scored": 4}]}, 2.0) == {
        "0": 10.0, "1": 0.0}


def test_pages_escape_what_comes_from_outside() -> None:
    book = BatchBook()
    evil = TaskBatch(batch_id="b", tasks=[Task(task_id="<script>x</script>", title="<img src=x onerror=1>",
                                               description="d")])
    book.accepted(evil)
    html = pages.task_row(0, task_rows(book.get("b"), {})[0])
    assert "<script>" not in html and "<img" not in html and "&lt;script&gt;" in html


class FakeWorkflow:
    def __init__(self) -> None:
        self.terminated: list[str] = []
        self.answer: dict[str, Any] = {"running": [], "queued": [], "finished_tasks": 0, "scorers": []}

    def batches(self) -> dict[str, Any]:
        return self.answer

    def batch(self, batch_id: str) -> dict[str, Any]:
        return {"batch_id": batch_id, "status": "running", "position": 0, "since": None,
                "counts": {"total": 2, "done": 0}, "tasks": {"t0": {"stage": "enrich"}}}

    def terminate(self, batch_id: str) -> dict[str, Any]:
        self.terminated.append(batch_id)
        return {"terminated": True, "status": "running"}


def console(book: BatchBook) -> tuple[TestClient, FakeWorkflow, list[TaskBatch]]:
    workflow, published = FakeWorkflow(), []
    watcher = Watcher(workflow.batches)
    watcher.poll()
    api = create_console(book, watcher, workflow, published.append, token=TOKEN, hosts={HOST})
    return TestClient(api, base_url=f"http://{HOST}"), workflow, published


def test_console_pages_need_the_token_and_the_sign_in_link_gives_a_cookie() -> None:
    client, _, _ = console(BatchBook())
    first = client.get("/", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"].startswith("/login?next=")
    assert client.get("/api/batches").status_code == 401
    assert client.get("/", headers={"host": "evil.example:8090"}).status_code == 421
    assert client.get("/login?token=wrong").status_code == 401
    signed = client.get(f"/login?token={TOKEN}&next=/scorers", follow_redirects=False)
    assert signed.status_code == 303 and signed.headers["location"] == "/scorers"
    assert client.cookies.get(COOKIE) == TOKEN
    assert client.get("/").status_code == 200
    assert client.get("/login?token=x&next=//evil.example", follow_redirects=False).status_code == 401
    assert client.post("/login", data={"token": TOKEN, "next": "//evil.example"},
                       follow_redirects=False).headers["location"] == "/"


def test_console_actions_terminate_and_rerun_the_failed_tasks() -> None:
    book = BatchBook()
    book.accepted(batch("b", 3))
    book.finished(outcome("b", ["completed", "failed", "failed"]))
    book.accepted(batch("r", 2))
    client, workflow, published = console(book)
    auth = {"authorization": f"Bearer {TOKEN}"}
    client.cookies.set(COOKIE, TOKEN)
    assert client.post("/batches/r/terminate").status_code == 403  # a cookie alone: not from our page
    assert client.post("/batches/r/terminate", headers={ACTION_HEADER: "1"}).status_code == 200
    assert workflow.terminated == ["r"]
    assert client.post("/batches/r/rerun", headers=auth).status_code == 409  # not finished
    answer = client.post("/batches/b/rerun", headers=auth, content=json.dumps({"tasks": "failed"}))
    assert answer.status_code == 200, answer.text
    assert [t.task_id for t in published[0].tasks] == ["t1", "t2"]
    assert published[0].batch_id.startswith("b.retry-") and book.get(published[0].batch_id).rerun_of == "b"  # type: ignore[union-attr]
    one = client.post("/batches/b/rerun", headers=auth, content=json.dumps({"tasks": ["t2"]}))
    assert one.status_code == 200 and [t.task_id for t in published[1].tasks] == ["t2"]
    assert client.post("/batches/b/rerun", headers=auth, content=json.dumps({"tasks": ["t0"]})).status_code == 409
    page = client.get("/batches/b").text
    assert "Re-run the 2 failed tasks" in page and "Re-run this task" in page
    running = client.get("/api/batches/r", headers=auth).json()
    assert running["batch"]["state"] == "running" and running["tasks"][0]["stage"] == "enrich"


def test_trace_ids_come_from_w3c_traceparents_only() -> None:
    from taskfan.tracing import trace_id_of, traceparent_in

    assert trace_id_of("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01") == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert trace_id_of("00-00000000000000000000000000000000-00f067aa0ba902b7-01") is None
    assert trace_id_of("not a traceparent") is None and trace_id_of(None) is None
    assert traceparent_in({"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}) is not None
    assert traceparent_in({"traceparent": "00-x"}) is None and traceparent_in("text") is None


def test_a_jaeger_trace_becomes_rows_in_start_order_under_their_parents() -> None:
    from services.console.records import span_rows

    trace = {"processes": {"p1": {"serviceName": "ingest"}, "p2": {"serviceName": "workflow"}},
             "spans": [
                 {"spanID": "b", "processID": "p2", "operationName": "activity||run_chunk", "startTime": 1_002_000,
                  "duration": 5_000, "references": [{"refType": "CHILD_OF", "spanID": "a"}],
                  "tags": [{"key": "error", "value": True}]},
                 {"spanID": "a", "processID": "p1", "operationName": "pubsub/tasks", "startTime": 1_000_000,
                  "duration": 10_000, "references": []}]}
    rows = span_rows(trace)
    assert [(r.service, r.operation, r.start_ms, r.duration_ms, r.depth, r.error) for r in rows] == [
        ("ingest", "pubsub/tasks", 0.0, 10.0, 0, False), ("workflow", "activity||run_chunk", 2.0, 5.0, 1, True)]
    page = pages.trace_page("b1", "t" * 32, rows, "http://127.0.0.1:16686/api/traces/" + "t" * 32)
    assert page.count('<tr data-service="') == 2


@pytest.mark.parametrize("batch_id", ["a||b", "hx::1||actor", "\ud800", "x" * 129, "a b", "../state/x"])
def test_the_workflow_app_makes_no_dapr_name_of_what_is_not_a_batch_id(batch_id):
    from services.workflow.console_api import ConsoleAnswers

    class NoDapr:
        def __getattr__(self, name):
            raise AssertionError(f"{name} called for {batch_id!r}")

    answers = ConsoleAnswers(NoDapr(), NoDapr())
    assert answers.batch({"batch_id": batch_id})["status"] is None
    assert answers.terminate({"batch_id": batch_id}) == {"terminated": False, "status": None,
                                                          "reason": "no such batch is running"}
