"""The console's logic and routes with fakes for the workflow app, the topic and the state store (the real stack
and a real browser: tests/e2e/test_console.py)."""

from __future__ import annotations

import json
import re
import tracemalloc
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from services.console import pages
from services.console.app import ConsoleState
from services.console.history import (
    HEAD_KEY,
    STATE_TTL_S,
    BatchBook,
    HistoryUnreadable,
    detail_key,
    page_key,
    read_back,
    ring_pages,
)
from services.console.records import (
    Throughput,
    batch_row,
    batches_page,
    per_replica_rates,
    rerun_id,
    stage_counts,
    task_rows,
)
from services.console.routes.signin import ACTION_HEADER
from services.console.watch import Watcher
from services.console.web import create_console
from services.workflow.ledger_store import LedgerStore
from services.workflow.live import ChunkStages, LiveBatches
from services.workflow.models import BatchesNow, BatchNow, MovingTask, ScorerReplica, Termination
from services.workflow.scoring import FORGET_S, ScorerView
from taskfan.contracts import BATCH_ID_PATTERN, Outcome, SlotsReport, Task, TaskBatch, TaskResult
from tests.unit.fake_state import FakeDaprState, FakeSyncDapr

TOKEN = "s3cret"
HOST = "127.0.0.1:8090"
# Every key the console may write, in the state store (Dapr adds `console||`).
CONSOLE_KEY = re.compile(r"taskfan-console~(history(~[0-9]+)?|(tasks|results)~[A-Za-z0-9._:-]{1,128})")


def new_book(state: FakeDaprState | None = None, **limits: int) -> BatchBook:
    """A book over a fake state store, through the console's real adapter (``ConsoleState``)."""
    return BatchBook(ConsoleState(FakeSyncDapr(state or FakeDaprState())), **limits)  # type: ignore[arg-type]


def store_of(book: BatchBook) -> FakeDaprState:
    return book.store.dapr.state  # type: ignore[attr-defined]


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


def test_a_chunks_stages_follow_its_tasks_through_the_steps_and_read_back_as_written() -> None:
    # A task an earlier run finished, then two this run moves.
    stages = ChunkStages([TaskResult(task_id="t9", status="rejected", score=None, issues=["too short"])])
    stages.moving("validate", ["t0", "t1"])
    stages.moving("score", ["t0"])
    stages.finished([TaskResult(task_id="t1", status="completed", score=7, tags=["x"], added={"n": 1})])
    assert ChunkStages.decode(stages.encode()) == {
        "t9": MovingTask(stage="rejected", issues=["too short"]), "t0": MovingTask(stage="score"),
        "t1": MovingTask(stage="done", score=7, tags=["x"], added={"n": 1})}
    hostile = ChunkStages()
    hostile.moving("score", ["a||b::c", "\u00e9\U0001f389"])
    assert set(ChunkStages.decode(hostile.encode())) == {"a||b::c", "\u00e9\U0001f389"}


def test_a_processs_book_counts_tasks_in_each_step_and_forgets_a_batch_that_left() -> None:
    live = LiveBatches()
    live.moving("b", "validate", ["t0", "t1"])
    live.moving("b", "score", ["t0"])
    assert live.stage_counts() == {"score": 1, "validate": 1} and live.known() == {"b"}
    live.finished("b", [TaskResult(task_id="t0", status="completed", score=7, tags=["x"])])
    assert live.finished_tasks == 1 and live.stage_counts() == {"done": 1, "validate": 1}
    live.finished("b", [TaskResult(task_id="t0", status="completed", score=7)])  # a run again counts once
    assert live.finished_tasks == 1
    live.forget("b")
    assert live.known() == set() and live.stage_counts() == {}
    live.moving("b", "score", ["t1"])  # an activity its terminated batch could not stop: not brought back
    assert live.known() == set() and live.stage_counts() == {}


def test_scorer_view_reports_each_replica_heard_from_lately() -> None:
    view = ScorerView()
    view.learn(SlotsReport(replica="0", slots=4, in_progress=3), now=100.0, scored=5)
    view.learn(SlotsReport(replica="1", slots=4, in_progress=0), now=101.0, scored=2)
    view.learn(SlotsReport(replica="0", slots=4, in_progress=1), now=102.0, scored=1)
    assert view.report(103.0) == [
        ScorerReplica(replica="0", slots=4, seen_s_ago=1.0, scored=6, in_progress=1),
        ScorerReplica(replica="1", slots=4, seen_s_ago=2.0, scored=2, in_progress=0)]
    assert [r.replica for r in view.report(131.5)] == ["0"]  # replica 1 not heard from for 30 s


def test_scorer_view_forgets_replicas_gone_for_long_so_pod_names_do_not_pile_up() -> None:
    view = ScorerView()
    for i in range(50):  # pods replaced one after another, each a new name
        view.learn(SlotsReport(replica=f"scorer-{i}", slots=1, in_progress=0), now=i * FORGET_S / 10, scored=1)
    assert len(view.replicas) <= 11 and set(view.scored) == set(view.replicas) >= {"scorer-49"}
    for odd in ("a::b", "a||b", "x" * 253):
        view.learn(SlotsReport(replica=odd, slots=1, in_progress=0), now=50 * FORGET_S / 10, scored=1)
    assert {"a::b", "a||b"} <= {r.replica for r in view.report(50 * FORGET_S / 10)}
    for malformed in ('"\\ud800"', f'"{"x" * 254}"'):  # the answer is malformed, never learnt
        with pytest.raises(ValueError):
            SlotsReport.model_validate_json(f'{{"replica": {malformed}, "slots": 1}}')
    BatchesNow(scorers=view.report(50 * FORGET_S / 10)).model_dump_json()  # the console's answer encodes them


def test_book_keeps_the_first_content_of_an_id_and_its_newest_batches() -> None:
    book = new_book(history=3)
    book.accepted(batch("a", 3))
    book.accepted(batch("a", 1))  # same id, other content: the first stays
    assert book.get("a").total == 3 and len(book.tasks("a")) == 3  # type: ignore[union-attr,arg-type]
    for batch_id in ("b", "c", "d"):
        book.accepted(batch(batch_id, 1))
    assert [s.batch_id for s in book.recent()] == ["d", "c", "b"]
    book.flush()
    assert detail_key("tasks", "a") not in store_of(book).items  # a left the history: its details too


def test_rows_merge_the_ledger_with_the_book() -> None:
    book = new_book()
    for batch_id in ("done", "dead", "run", "wait"):
        book.accepted(batch(batch_id, 2))
    book.finished(outcome("done", ["completed", "failed"]))
    book.dead_lettered("dead", "no outcome could be published " + "x" * 1000)
    now = {"running": [{"batch_id": "run", "total": 2, "since": "2026-11-30T04:00:00+00:00", "done": 1,
                        "completed": 1, "rejected": 0, "failed": 0}],
           "queued": [{"batch_id": "wait", "total": 2, "since": "2026-11-30T04:00:01+00:00", "position": 1}]}
    shown = batches_page(book.recent(), BatchesNow.model_validate(now))
    assert shown is not None and (shown.page, shown.pages) == (1, 1)
    rows = {r.batch_id: r for r in shown.rows}
    assert [r.batch_id for r in shown.rows][:2] == ["run", "wait"]
    assert (rows["run"].state, rows["run"].percent) == ("running", 50)
    assert (rows["wait"].state, rows["wait"].position) == ("queued", 1)
    assert (rows["done"].state, rows["done"].failed, rows["done"].percent) == ("failed", 1, 100)
    assert rows["dead"].state == "dead-lettered" and rows["dead"].note.startswith("no outcome could be published")  # type: ignore[union-attr]
    assert len(rows["dead"].note) == 300  # type: ignore[arg-type] - a reason is kept this long
    assert [r.batch_id for r in batches_page(book.recent(), BatchesNow.model_validate(now),
                                             state="failed").rows] == ["done"]  # type: ignore[union-attr]


def test_one_batch_row_and_its_tasks_from_the_live_view_then_the_outcome() -> None:
    book = new_book()
    book.accepted(batch("b", 3))
    summary = book.get("b")
    answer = BatchNow.model_validate_json(json.dumps({
        "batch_id": "b", "status": "running", "position": 0, "since": "2026-11-30T04:00:00+00:00",
        "counts": {"total": 3, "done": 1, "completed": 1, "rejected": 0, "failed": 0},
        "tasks": {"t0": {"stage": "done", "score": 9, "tags": ["a"]}, "t1": {"stage": "score"}}}))
    row = batch_row(summary, answer)
    assert row is not None and (row.state, row.done) == ("running", 1)
    tasks = task_rows(summary, book.tasks("b"), None, answer.tasks)
    assert [(t.task_id, t.stage, t.score) for t in tasks] == [("t0", "done", 9), ("t1", "score", None),
                                                              ("t2", "waiting", None)]
    assert stage_counts(tasks)["waiting"] == 1
    book.finished(outcome("b", ["completed", "rejected", "failed"]))
    tasks = task_rows(book.get("b"), book.tasks("b"), book.results("b"), {})
    assert [t.stage for t in tasks] == ["done", "rejected", "failed"]
    assert tasks[1].issues == ["too short"] and tasks[2].error == "score: boom" and tasks[0].title == "task 0"
    assert batch_row(book.get("b"), None).state == "failed"  # type: ignore[union-attr]
    assert batch_row(None, BatchNow(batch_id="x", position=2)).state == "queued"  # type: ignore[union-attr]
    assert batch_row(None, BatchNow(batch_id="x")) is None


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
        rates.sample(at, {"workflow": counter})
    assert rates.rates() == [(1, 10.0), (2, 20.0), (3, 5.0)]
    def scored(**by_replica: int) -> BatchesNow:
        return BatchesNow(scorers=[ScorerReplica(replica=r, scored=n, slots=1, seen_s_ago=0, in_progress=0)
                                   for r, n in by_replica.items()])

    assert per_replica_rates(scored(a=10), scored(a=30, b=4), 2.0) == {"a": 10.0, "b": 0.0}


def test_pages_escape_what_comes_from_outside() -> None:
    book = new_book()
    evil = TaskBatch(batch_id="b", tasks=[Task(task_id="<script>x</script>", title="<img src=x onerror=1>",
                                               description="d")])
    book.accepted(evil)
    html = pages.task_row(0, task_rows(book.get("b"), book.tasks("b"), None, {})[0])
    assert "<script>" not in html and "<img" not in html and "&lt;script&gt;" in html


def test_pages_from_the_routes_escape_what_comes_from_outside() -> None:
    book = new_book()
    book.accepted(TaskBatch(batch_id="b", tasks=[Task(task_id="<script>alert(1)</script>",
                                                      title='"><script>alert(2)</script>', description="d")]))
    client, _, _ = console(book)
    pages_shown = {"batch page": client.get("/batches/b", headers=AUTH),
                   "unknown batch": client.get("/batches/" + quote("<script>alert(4)", safe=""), headers=AUTH),
                   "sign-in page": client.get("/login", params={"next": '/"><script>alert(5)</script>'})}
    for name, answer in pages_shown.items():
        assert answer.headers["content-type"].startswith("text/html"), name
        assert answer.text.count("<script") == 1, name  # the console's own script, nothing else
        assert '<script src="/static/console.js"></script>' in answer.text, name
        assert "&lt;script&gt;alert(" in answer.text, name
    assert "&#34;&gt;&lt;script&gt;alert(2)" in pages_shown["batch page"].text  # no way out of an attribute either
    assert 'value="/&#34;&gt;&lt;script&gt;alert(5)&lt;/script&gt;"' in pages_shown["sign-in page"].text


class FakeWorkflow:
    def __init__(self) -> None:
        self.terminated: list[str] = []
        self.answer: dict[str, Any] = {"running": [], "queued": [], "finished_tasks": 0, "scorers": []}

    def batches(self) -> BatchesNow:
        return BatchesNow.model_validate(self.answer)

    def batch(self, batch_id: str) -> BatchNow:
        return BatchNow.model_validate({"batch_id": batch_id, "status": "running", "position": 0, "since": None,
                                        "counts": {"total": 2, "done": 0}, "tasks": {"t0": {"stage": "enrich"}}})

    def terminate(self, batch_id: str) -> Termination:
        self.terminated.append(batch_id)
        return Termination(terminated=True, status="running")


def console(book: BatchBook, now: dict[str, Any] | None = None) -> tuple[TestClient, FakeWorkflow, list[TaskBatch]]:
    workflow, published = FakeWorkflow(), []
    workflow.answer.update(now or {})
    watcher = Watcher(workflow.batches)
    watcher.poll()
    api = create_console(book, watcher, workflow, published.append, token=TOKEN, hosts={HOST})
    return TestClient(api, base_url=f"http://{HOST}"), workflow, published


def sign_in(client: TestClient, role: str = "act", next_url: str = "/") -> None:
    """Signs ``client`` in as ``taskfan console --role ROLE`` does: a one-time link, asked for with the token."""
    link = client.post("/login/code", headers={"authorization": f"Bearer {TOKEN}"}, json={"role": role}).json()["link"]
    assert client.get(f"{link}&next={quote(next_url, safe='')}", follow_redirects=False).status_code == 303


def test_console_pages_need_a_sign_in_and_the_sign_in_link_gives_a_session() -> None:
    client, _, _ = console(new_book())
    first = client.get("/", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"].startswith("/login?next=")
    assert client.get("/api/batches").status_code == 401
    assert client.get("/", headers={"host": "evil.example:8090"}).status_code == 421
    link = client.post("/login/code", headers=AUTH, json={"role": "view"}).json()["link"]
    signed = client.get(f"{link}&next=/scorers", follow_redirects=False)
    assert signed.status_code == 303 and signed.headers["location"] == "/scorers"
    assert client.get("/").status_code == 200
    link = client.post("/login/code", headers=AUTH, json={}).json()["link"]
    assert client.get(f"{link}&next=//evil.example", follow_redirects=False).headers["location"] == "/"
    assert client.post("/login", data={"token": TOKEN, "next": "//evil.example"},
                       follow_redirects=False).headers["location"] == "/"


def test_console_actions_terminate_and_rerun_the_failed_tasks() -> None:
    book = new_book()
    book.accepted(batch("b", 3))
    book.finished(outcome("b", ["completed", "failed", "failed"]))
    book.accepted(batch("r", 2))
    client, workflow, published = console(book)
    auth = {"authorization": f"Bearer {TOKEN}"}
    sign_in(client, "act")
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

    answers = ConsoleAnswers(NoDapr(), NoDapr(), LiveBatches(), LedgerStore())
    assert answers.batch({"batch_id": batch_id}).status is None
    assert answers.terminate({"batch_id": batch_id}) == Termination(terminated=False,
                                                                    reason="no such batch is running")


# --- what the console remembers: its history in the state store ------------------------------------------

AUTH = {"authorization": f"Bearer {TOKEN}"}
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def finish(book: BatchBook, batch_id: str, statuses: list[str]) -> None:
    book.accepted(batch(batch_id, len(statuses)))
    book.finished(outcome(batch_id, statuses))


def detail_keys(state: FakeDaprState) -> set[str]:
    return {key for key in state.items if "~tasks~" in key or "~results~" in key}


def test_the_history_survives_a_restart_in_order_with_its_counts_and_details() -> None:
    state = FakeDaprState()
    book = new_book(state)
    for i in range(250):
        book.accepted(batch(f"b{i}", 3))
        if i % 2 == 0:
            book.finished(outcome(f"b{i}", ["completed", "rejected", "failed"]))
    book.dead_lettered("b1", "no outcome could be published")
    book.accepted(batch("b2.rerun-abcdef", 1), rerun_of="b2", trace_id=TRACE)
    assert not any(key.startswith(HEAD_KEY) for key in state.items)  # summaries wait for the flush...
    transactions = book.store.dapr.transactions  # type: ignore[attr-defined]
    book.flush()  # ... which the writing console does every 2 s and once more when it stops
    assert book.store.dapr.transactions == transactions + 1  # type: ignore[attr-defined] - 3 pages, one write

    again = new_book(state)  # the console restarted
    assert again.load() == 251
    assert again.recent() == book.recent()  # every summary, newest first, as before
    assert [s.batch_id for s in again.recent()][:3] == ["b2.rerun-abcdef", "b249", "b248"]
    b0 = again.get("b0")
    assert b0 is not None and b0.published and (b0.total, b0.completed, b0.rejected, b0.failed) == (3, 1, 1, 1)
    assert again.get("b1").dead_letter == "no outcome could be published"  # type: ignore[union-attr]
    rerun = again.get("b2.rerun-abcdef")
    assert rerun is not None and (rerun.rerun_of, rerun.trace_id) == ("b2", TRACE)
    assert [t.title for t in again.tasks("b2")] == ["task 0", "task 1", "task 2"]  # type: ignore[union-attr]
    assert [r.status for r in again.results("b2")] == ["completed", "rejected", "failed"]  # type: ignore[union-attr]
    assert again.detail_bytes_held == book.detail_bytes_held
    again.accepted(batch("next", 1))  # numbered after them
    assert again.recent()[0].batch_id == "next" and again.recent()[0].number == 251
    # Every key is one of the console's, with a TTL.
    assert all(CONSOLE_KEY.fullmatch(key) for key in state.items)
    assert all(state.ttls.get(key) == STATE_TTL_S for key in state.items)


def test_a_restarted_console_shows_its_history_on_its_pages() -> None:
    state = FakeDaprState()
    book = new_book(state)
    finish(book, "old-1", ["completed", "failed"])
    book.flush()
    again = new_book(state)
    again.load()
    client, _, published = console(again)
    shown = client.get("/api/batches", headers=AUTH).json()
    assert [(r["batch_id"], r["state"], r["failed"]) for r in shown["batches"]] == [("old-1", "failed", 1)]
    answer = client.get("/api/batches/old-1", headers=AUTH).json()
    assert [t["stage"] for t in answer["tasks"]] == ["done", "failed"] and answer["details_kept"] is True
    assert client.post("/batches/old-1/rerun", headers=AUTH, content='{"tasks": "failed"}').status_code == 200
    assert [t.task_id for t in published[0].tasks] == ["t1"]


def test_the_history_is_read_again_while_the_store_does_not_answer_then_the_start_fails() -> None:
    class Flaky:
        def __init__(self, failures: int) -> None:
            self.failures = failures

        def read(self, keys: list[str]) -> dict[str, bytes]:
            if self.failures:
                self.failures -= 1
                raise RuntimeError("connection refused")
            return {}

        def change(self, writes: dict[str, bytes], deletes: list[str]) -> None:
            raise AssertionError("nothing to write")

    waits: list[float] = []
    assert read_back(BatchBook(Flaky(2)), attempts=3, sleep=waits.append) == 0 and len(waits) == 2
    with pytest.raises(HistoryUnreadable, match="connection refused"):
        read_back(BatchBook(Flaky(3)), attempts=3, sleep=waits.append)


def test_the_ring_is_bounded_whatever_the_number_of_batches() -> None:
    state = FakeDaprState()
    book = new_book(state, history=250)
    for i in range(1000):
        finish(book, f"b{i}", ["completed"])
        if i % 37 == 0:
            book.flush()
    book.flush()
    assert len(book.recent()) == 250
    slots = ring_pages(250)
    assert {key for key in state.items if key.startswith(HEAD_KEY + "~")} == {page_key(n) for n in range(slots)}
    assert json.loads(state.items[page_key(0)])["block"] == 8  # slot 0 overwritten: batches 800-899 now
    assert len(state.items) <= 1 + slots + 2 * 250
    assert detail_key("tasks", "b749") not in state.items and detail_key("results", "b750") in state.items

    again = new_book(state, history=250)
    assert again.load() == 250
    assert [s.batch_id for s in again.recent()] == [f"b{i}" for i in range(999, 749, -1)]

    smaller = new_book(state, history=120)  # CONSOLE_HISTORY lowered: the ring shrinks on the next flush
    assert smaller.load() == 120
    smaller.flush()
    assert {key for key in state.items if key.startswith(HEAD_KEY + "~")} == {page_key(n) for n in
                                                                               range(ring_pages(120))}
    assert len(detail_keys(state)) == 2 * 120  # those of the batches beyond the newest 120 deleted
    shrunk = new_book(state, history=120)
    assert shrunk.load() == 120 and [s.batch_id for s in shrunk.recent()][::119] == ["b999", "b880"]


def test_memory_holds_a_summary_not_the_tasks_of_a_big_batch() -> None:
    book = new_book(cache_bytes=2**16)
    big = batch("big", 10_000)
    statuses = ["completed"] * 10_000
    ignored = [tracemalloc.Filter(False, "*fake_state.py"), tracemalloc.Filter(False, tracemalloc.__file__)]
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot().filter_traces(ignored)
        book.accepted(big)
        book.finished(outcome("big", statuses))
        after = tracemalloc.take_snapshot().filter_traces(ignored)
    finally:
        tracemalloc.stop()
    held = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    summary = book.get("big")
    assert summary is not None and summary.tasks_bytes > 500_000 and summary.results_bytes > 500_000
    assert held < 20_000, f"{held} bytes held in memory for a 10,000-task batch"
    assert len(book.tasks("big")) == 10_000  # type: ignore[arg-type] - read back from the store
    assert detail_key("tasks", "big") in store_of(book).items


def test_details_beyond_their_budget_go_oldest_first_and_the_console_says_so() -> None:
    state = FakeDaprState()
    book = new_book(state, detail_bytes=20_000)
    for i in range(40):
        finish(book, f"b{i}", ["completed", "failed", "rejected", "completed", "failed"])
    book.flush()
    stored = sum(len(state.items[key]) for key in detail_keys(state))
    assert stored == book.detail_bytes_held <= 20_000
    kept = [i for i in range(40) if detail_key("tasks", f"b{i}") in state.items]
    assert kept == list(range(kept[0], 40)) and 10 < kept[0] < 30  # the oldest batches' went, first
    gone = book.get("b0")
    assert gone is not None and gone.details_dropped and (gone.published, gone.completed, gone.failed) == (True, 2, 2)

    client, _, _ = console(book)
    answer = client.get("/api/batches/b0", headers=AUTH).json()
    assert answer["details_kept"] is False and answer["tasks"] == [] and answer["batch"]["state"] == "failed"
    assert "no longer kept" in client.get("/batches/b0", headers=AUTH).text
    assert client.post("/batches/b0/rerun", headers=AUTH).status_code == 410
    assert client.get("/api/batches/b39", headers=AUTH).json()["details_kept"] is True
    assert "no longer kept" not in client.get("/batches/b39", headers=AUTH).text

    too_big = new_book(detail_bytes=1000)  # a batch bigger than the whole budget is never written
    too_big.accepted(batch("huge", 50))
    assert too_big.get("huge").details_dropped and not detail_keys(store_of(too_big))  # type: ignore[union-attr]

    again = new_book(state, detail_bytes=20_000)  # and after a restart
    again.load()
    assert again.get("b0").details_dropped and again.detail_bytes_held == stored  # type: ignore[union-attr]
    state.delete(detail_key("tasks", "b39"))  # its TTL ran out
    assert again.tasks("b39") is None and again.get("b39").details_dropped  # type: ignore[union-attr]


def test_batches_come_a_page_at_a_time_running_and_queued_first() -> None:
    book = new_book()
    for i in range(250):
        finish(book, f"b{i:03d}", ["completed"])
    now = {"running": [{"batch_id": "run", "total": 2, "since": "2026-11-30T04:00:00+00:00", "done": 1,
                        "completed": 1, "rejected": 0, "failed": 0}],
           "queued": [{"batch_id": "wait", "total": 2, "since": "2026-11-30T04:00:01+00:00", "position": 1}]}
    client, _, _ = console(book, now)
    first = client.get("/api/batches", headers=AUTH).json()
    assert (first["page"], first["pages"]) == (1, 3)
    assert [r["batch_id"] for r in first["batches"]] == ["run", "wait"] + [f"b{i:03d}" for i in range(249, 151, -1)]
    last = client.get("/api/batches?page=3", headers=AUTH).json()
    assert [r["batch_id"] for r in last["batches"]] == [f"b{i:03d}" for i in range(51, -1, -1)]
    finished = client.get("/api/batches?state=finished&page=3", headers=AUTH).json()
    assert (finished["pages"], len(finished["batches"]), finished["batches"][-1]["batch_id"]) == (3, 50, "b000")
    running = client.get("/api/batches?state=running", headers=AUTH).json()
    assert [r["batch_id"] for r in running["batches"]] == ["run"] and running["pages"] == 1

    for bad in ("0", "-1", "x", "4", "1.5", "\u0663", " 1", "1e2", "9" * 30):
        for path in ("/api/batches", "/", "/events/batches"):
            refused = client.get(path, params={"page": bad}, headers=AUTH)
            assert refused.status_code == 400, (path, bad)
            assert refused.json()["error"].startswith("page is a whole number from 1 to 3"), (path, bad)

    html = client.get("/?page=2", headers=AUTH).text
    assert 'href="/" rel="prev">previous</a><span>page 2 of 3</span><a href="/?page=3" rel="next">next' in html
    assert html.count("<tr data-batch=") == 100 and 'data-stream="/events/batches?page=2"' in html
    filtered = client.get("/?state=finished", headers=AUTH).text
    assert 'href="/?state=finished&amp;page=2" rel="next"' in filtered and 'rel="prev"' not in filtered


@pytest.mark.parametrize("batch_id", ["a||b", "hx::1||actor", "\ud800", "x" * 129, "a b", "../state/x"])
def test_no_key_is_made_of_what_is_not_a_batch_id(batch_id: str) -> None:
    with pytest.raises(ValueError):
        detail_key("tasks", batch_id)
    state = FakeDaprState()
    book = new_book(state)
    finish(book, "fine", ["completed"])
    book.accepted(TaskBatch.model_construct(batch_id=batch_id, tasks=[Task(task_id="t", title="t", description="")]))
    book.finished(Outcome.model_construct(batch_id=batch_id, total=1, completed=1, rejected=0, failed=0,
                                          average_score=1.0, results=[], started_at="x", finished_at="y"))
    book.dead_lettered(batch_id, "refused")
    book.accepted(batch("later", 1), rerun_of=batch_id)
    book.flush()
    assert book.get(batch_id) is None and book.get("later").rerun_of is None  # type: ignore[union-attr]
    assert all(CONSOLE_KEY.fullmatch(key) for key in state.items), sorted(state.items)
    client, _, _ = console(book)
    quoted = quote(batch_id, safe="", errors="surrogatepass")  # as a browser would send it
    for path in (f"/api/batches/{quoted}", f"/batches/{quoted}"):
        client.get(path, headers=AUTH)
    client.post(f"/batches/{quoted}/rerun", headers=AUTH)
    assert all(CONSOLE_KEY.fullmatch(key) for key in state.items)


def test_writes_the_store_refused_are_made_at_the_next_flush_and_pages_are_written_again_before_their_ttl() -> None:
    class Refusing(FakeSyncDapr):
        refuse = False

        def execute_state_transaction(self, store, operations, transactional_metadata=None):
            if self.refuse:
                raise RuntimeError("connection refused")
            super().execute_state_transaction(store, operations, transactional_metadata)

    dapr = Refusing()
    clock = [1_000_000.0]
    book = BatchBook(ConsoleState(dapr), history=250, clock=lambda: clock[0])  # type: ignore[arg-type]
    finish(book, "kept", ["completed"])
    book.accepted(batch("unkept", 1))
    dapr.refuse = True
    book.finished(outcome("unkept", ["failed"]))  # its results could not be written: shown as no longer kept
    book.flush()
    assert not any(key.startswith(HEAD_KEY) for key in dapr.state.items)
    unkept = book.get("unkept")
    assert unkept is not None and unkept.details_dropped and unkept.published and book.tasks("unkept") is None
    dapr.refuse = False
    book.flush()  # what the last flush could not write, and the delete of the tasks it did write
    assert detail_keys(dapr.state) == {detail_key("tasks", "kept"), detail_key("results", "kept")}
    again = new_book(dapr.state, history=250)
    assert again.load() == 2 and again.get("unkept").failed == 1  # type: ignore[union-attr]

    transactions = dapr.transactions
    book.flush()
    assert dapr.transactions == transactions  # nothing changed: nothing written
    clock[0] += 2 * 24 * 3600  # two days on: the page is written again, its TTL starts over
    book.flush()
    assert dapr.transactions == transactions + 1 and json.loads(dapr.state.items[page_key(0)])["written_at"] == clock[0]


def test_a_batch_still_running_is_written_and_a_restarted_console_shows_it() -> None:
    state = FakeDaprState()
    book = new_book(state)
    book.accepted(batch("running", 3))  # no outcome yet: nothing else changes its page
    book.flush()
    again = new_book(state)
    assert again.load() == 1
    assert not again.get("running").published and again.tasks("running") is not None  # type: ignore[union-attr]
