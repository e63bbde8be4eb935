"""The console for operators: searching the batches, paging a batch's tasks, the dead letters and their replay
(fakes for the workflow app, the topic and the state store; the real stack: tests/e2e/test_console_ops.py)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient

from services.console.app import ConsoleState, Subscriptions
from services.console.dead_letters import DEAD_HEAD_KEY, MAX_LETTER_BYTES, DeadLetters, letter_key
from services.console.history import STATE_TTL_S, BatchBook
from services.console.routes.signin import ACTION_HEADER
from services.console.watch import Watcher
from services.console.web import create_console
from taskfan import events
from taskfan.contracts import TASK_BATCH_EVENT_TYPE
from tests.unit.fake_state import FakeDaprState, FakeSyncDapr
from tests.unit.test_console import AUTH, HOST, TOKEN, FakeWorkflow, batch, console, new_book, outcome, sign_in


def started(book: BatchBook, batch_id: str, at: str) -> None:
    """A finished batch that started at ``at``."""
    book.accepted(batch(batch_id, 1))
    book.finished(outcome(batch_id, ["completed"]).model_copy(update={"started_at": at}))


def ids(answer: dict) -> list[str]:
    return [row["batch_id"] for row in answer["batches"]]


def test_batches_are_found_by_id_or_its_beginning_by_state_and_by_start_time() -> None:
    book = new_book()
    started(book, "nightly-1", "2026-12-01T01:00:00+00:00")
    started(book, "nightly-2", "2026-12-02T01:00:00+00:00")
    started(book, "nightly-20", "2026-12-02T03:00:00+00:00")
    started(book, "a::b", "2026-12-02T05:00:00+00:00")
    book.accepted(batch("nightly-3", 1))  # accepted only: its start is when the console saw it
    now = {"running": [{"batch_id": "nightly-run", "total": 2, "since": "2026-12-02T02:00:00Z", "done": 1,
                        "completed": 1, "rejected": 0, "failed": 0}]}
    client, _, _ = console(book, now)

    def found(**params: str) -> list[str]:
        answer = client.get("/api/batches", params=params, headers=AUTH)
        assert answer.status_code == 200, answer.text
        return ids(answer.json())

    assert found(q="nightly-2") == ["nightly-20", "nightly-2"]  # the id, and those it begins
    assert found(q="nightly-20") == ["nightly-20"]
    assert found(q="a::b") == ["a::b"]  # ":" is in the batch-id alphabet
    assert found(q="nightly", state="running") == ["nightly-run"]
    assert found(q="nightly", state="finished") == ["nightly-20", "nightly-2", "nightly-1"]
    assert found(q="nope") == []
    assert found(since="2026-12-02T00:00:00Z", until="2026-12-02T03:00:00Z") == ["nightly-run", "nightly-2"]
    assert found(since="2026-12-02T02:30:00+00:00", q="nightly", state="finished") == ["nightly-20"]
    assert found(until="2026-12-01T02:00") == ["nightly-1"]  # no zone: UTC
    assert found(since="2026-12-02", until="2026-12-02T01:00:00.000001Z") == ["nightly-2"]

    page = client.get("/", params={"q": "nightly", "state": "finished", "since": "2026-12-01T00:00:00Z"},
                      headers=AUTH).text
    assert page.count("<tr data-batch=") == 3 and 'value="nightly"' in page
    assert 'data-stream="/events/batches?state=finished&amp;q=nightly&amp;since=2026-12-01T00:00:00Z"' in page
    assert 'href="/?q=nightly&amp;since=2026-12-01T00:00:00Z" class=""' in page  # "all" keeps the search


def test_the_search_pages_and_its_pager_links_keep_it() -> None:
    book = new_book()
    for i in range(150):
        started(book, f"x{i:03d}", "2026-12-02T01:00:00+00:00")
        started(book, f"y{i:03d}", "2026-12-02T01:00:00+00:00")
    client, _, _ = console(book)
    first = client.get("/api/batches", params={"q": "y"}, headers=AUTH).json()
    assert (first["pages"], len(first["batches"])) == (2, 100) and ids(first)[0] == "y149"
    last = client.get("/api/batches", params={"q": "y", "page": "2"}, headers=AUTH).json()
    assert ids(last)[-1] == "y000" and len(last["batches"]) == 50
    html = client.get("/?q=y", headers=AUTH).text
    assert 'href="/?q=y&amp;page=2" rel="next"' in html
    assert client.get("/api/batches", params={"q": "y", "page": "3"}, headers=AUTH).json()["error"].startswith(
        "page is a whole number from 1 to 2")


@pytest.mark.parametrize(("params", "message"), [
    ({"q": "a||b"}, "q is a batch id or its beginning"),
    ({"q": "hx::1||actor"}, "q is a batch id or its beginning"),
    ("q=%ED%A0%80", "q is a batch id or its beginning"),  # a lone surrogate, as UTF-8 would write one
    ("q=%ud800", "q is a batch id or its beginning"),
    ({"q": "a b"}, "q is a batch id or its beginning"),
    ({"q": "../x"}, "q is a batch id or its beginning"),
    ({"q": "x" * 10_000}, "q is a batch id or its beginning"),
    ({"q": "x" * 129}, "q is a batch id or its beginning"),
    ({"since": "yesterday"}, "since is an ISO 8601 time"),
    ({"since": "2026-13-01"}, "since is an ISO 8601 time"),
    ({"until": "2026-12-02T25:00:00Z"}, "until is an ISO 8601 time"),
    ({"until": "\u0662\u0660\u0662\u0666-12-02"}, "until is an ISO 8601 time"),  # Arabic-Indic digits
    ("since=%ED%A0%80", "since is an ISO 8601 time"),
    ("since=2026-12-02T00:00:00%00", "since is an ISO 8601 time"),
    ({"since": "2" * 10_000}, "since is an ISO 8601 time"),
    ({"since": "2026-12-02T00:00:00Z", "until": "2026-12-01T00:00:00Z"}, "since is before until"),
    ({"since": "2026-12-02T00:00:00Z", "until": "2026-12-02T00:00:00Z"}, "since is before until"),
    ({"state": "x||y"}, "state is one of"),
])
def test_a_hostile_search_is_a_400_with_a_message_on_every_door(params: dict[str, str] | str, message: str) -> None:
    book = new_book()
    started(book, "b", "2026-12-02T01:00:00+00:00")
    client, _, _ = console(book)
    for path in ("/api/batches", "/", "/events/batches"):
        asked = params if isinstance(params, str) else urlencode(params)
        refused = client.get(f"{path}?{asked}", headers=AUTH)
        assert refused.status_code == 400, (path, refused.text[:200])
        said = refused.json()["error"]
        assert said.startswith(message), said
        assert len(said) < 400 and "\ud800" not in said  # cut short; what is not Unicode text escaped


def test_a_10000_task_batch_is_browsable_to_its_last_task_a_page_at_a_time() -> None:
    book = new_book(detail_bytes=64 * 2**20)
    statuses = ["completed"] * 9_990 + ["failed"] * 10
    book.accepted(batch("big", len(statuses)))
    book.finished(outcome("big", statuses))
    client, _, _ = console(book)
    first = client.get("/api/batches/big", headers=AUTH).json()
    assert (first["page"], first["pages"], first["tasks_matching"], len(first["tasks"])) == (1, 10, 10_000, 1000)
    assert first["tasks"][0]["task_id"] == "t0" and first["batch"]["total"] == 10_000
    last = client.get("/api/batches/big?page=10", headers=AUTH).json()
    assert [t["task_id"] for t in last["tasks"]][-1] == "t9999" and len(last["tasks"]) == 1000
    failed = client.get("/api/batches/big?stage=failed", headers=AUTH).json()
    assert [t["task_id"] for t in failed["tasks"]] == [f"t{i}" for i in range(9_990, 10_000)] and failed["pages"] == 1

    page = client.get("/batches/big?page=10", headers=AUTH).text
    assert page.count('<tr id="t') == 1000 and 'id="t9999"' in page and 'id="t8999"' not in page
    assert "tasks 9001–10000 of 10000 · page 10 of 10" in page and 'href="?page=9" rel="prev"' in page
    assert 'rel="next"' not in page and 'data-stream="/events/batches/big?page=10"' in page
    second = client.get("/batches/big?page=2", headers=AUTH).text
    assert 'href="?" rel="prev"' in second and 'href="?page=3" rel="next"' in second
    assert 'href="?stage=done&amp;page=2"' in client.get("/batches/big?stage=done", headers=AUTH).text

    with client.stream("GET", "/events/batches/big?page=10", headers=AUTH) as events:
        first_update = json.loads(next(line for line in events.iter_lines() if line.startswith("data: "))[6:])
    assert 'id="t9999"' in first_update["parts"]["tasks"] and "page 10 of 10" in first_update["parts"]["task-pager"]

    for path, bad in (("/api/batches/big", "0"), ("/api/batches/big", "\u0663"), ("/batches/big", "11"),
                      ("/batches/big", "%ED%A0%80"), ("/api/batches/big", "9" * 30)):
        refused = client.get(f"{path}?page={bad}", headers=AUTH)
        assert refused.status_code == 400 and refused.json()["error"].startswith("page is a whole number from 1 to 10")
    for path in ("/api/batches/big", "/batches/big", "/events/batches/big"):  # refused before the batch is read
        assert client.get(f"{path}?stage=x||y", headers=AUTH).json()["error"].startswith("stage is one of")
    assert client.get("/events/batches/big?page=0", headers=AUTH).status_code == 400


# --- dead letters -------------------------------------------------------------------------------------------


class Event:
    """What dapr.ext.grpc hands a subscription: the message's bytes (rawPayload)."""

    def __init__(self, data: bytes) -> None:
        self.data = data


def refused(raw: bytes, reason: str) -> bytes:
    """The record the workflow service publishes on tasks-deadletter for a refused event (intake.dead_letter)."""
    return events.dead_letter(reason, events.refused_event(raw), source="workflow")


def letters_over(state: FakeDaprState | None = None, **bound: int) -> DeadLetters:
    return DeadLetters(ConsoleState(FakeSyncDapr(state or FakeDaprState())), **bound)  # type: ignore[arg-type]


def letter_keys(state: FakeDaprState) -> set[str]:
    return {key for key in state.items if key.startswith(DEAD_HEAD_KEY + "~")}


def dead_letter_console(letters: DeadLetters) -> tuple[TestClient, list[bytes]]:
    workflow, replayed = FakeWorkflow(), []
    watcher = Watcher(workflow.batches)
    watcher.poll()
    api = create_console(new_book(), watcher, workflow, lambda batch: None, token=TOKEN, view_token="look",
                         hosts={HOST}, letters=letters, replay=replayed.append)
    return TestClient(api, base_url=f"http://{HOST}"), replayed


def test_dead_letters_are_kept_with_their_reason_time_and_event_and_an_operator_replays_one() -> None:
    letters = letters_over()
    book = new_book()
    topics = Subscriptions(book, letters)
    good = events.encode(TASK_BATCH_EVENT_TYPE, batch("dup-1", 2), source="ingest", subject="dup-1")
    topics.on_dead_letter(Event(refused(good, "batch dup-1 was published before with other content")))
    topics.on_dead_letter(Event(refused(b"not json{", "event is not valid JSON")))
    topics.on_dead_letter(Event(b"\xff\xfe not a record at all"))  # someone else's bytes on the topic: kept too
    client, replayed = dead_letter_console(letters)
    sign_in(client, "act")

    said = client.get("/api/dead-letters").json()
    assert (said["page"], said["pages"]) == (1, 1)
    newest, poison, dup = said["dead_letters"]
    assert (dup["number"], dup["batch_id"], dup["reason"]) == (0, "dup-1", "batch dup-1 was published before with "
                                                                            "other content")
    assert dup["event"]["data"]["batch_id"] == "dup-1" and dup["received_at"].startswith("20")
    assert (poison["event"], poison["batch_id"]) == ("not json{", None)
    assert newest["reason"].startswith("an unreadable dead-letter record") and "\\xff" in newest["event"]

    page = client.get("/dead-letters").text
    assert page.count("<tr data-letter=") == 3 and page.count(">Replay</button>") == 3
    assert 'href="/batches/dup-1"' in page and "published before with other content" in page

    answer = client.post("/dead-letters/0/replay", headers={ACTION_HEADER: "1"})
    assert answer.status_code == 200 and "published again on tasks (batch dup-1)" in answer.json()["message"]
    assert json.loads(replayed[0]) == dup["event"]  # the refused CloudEvent again, as it was
    assert client.post("/dead-letters/1/replay", headers={ACTION_HEADER: "1"}).status_code == 200
    assert replayed[1] == b"not json{"  # a poison event is published as it is: refused again, with its reason
    assert letters.get(0).replays == 1 and "replayed 1×" in client.get("/dead-letters").text  # type: ignore[union-attr]
    for hostile in ("7", "a||b", "1::2", "-1", "9" * 40, "%ED%A0%80", "0x0"):
        refused_post = client.post(f"/dead-letters/{hostile}/replay", headers={ACTION_HEADER: "1"})
        assert refused_post.status_code == 404 and "no dead letter" in refused_post.json()["error"], hostile
    assert client.get("/api/dead-letters?page=2").json()["error"].startswith("page is a whole number from 1 to 1")
    assert client.get("/dead-letters?page=%ED%A0%80").status_code == 400
    assert len(replayed) == 2


def test_a_viewer_sees_the_dead_letters_but_replays_none() -> None:
    letters = letters_over()
    letters.add(refused(b"{}", "event is not a CloudEvent 1.0"))
    client, replayed = dead_letter_console(letters)
    assert client.post("/dead-letters/0/replay", headers={"authorization": "Bearer look"}).status_code == 403
    assert client.get("/api/dead-letters").status_code == 401  # not signed in
    sign_in(client, "view")
    assert "Replay</button>" not in client.get("/dead-letters").text
    assert client.post("/dead-letters/0/replay", headers={ACTION_HEADER: "1"}).status_code == 403
    assert client.get("/api/dead-letters").json()["dead_letters"][0]["reason"] == "event is not a CloudEvent 1.0"
    assert replayed == []


def test_dead_letters_are_bounded_by_count_and_bytes_in_memory_and_in_the_store_and_survive_a_restart() -> None:
    state = FakeDaprState()
    letters = letters_over(state, keep=30, keep_bytes=10 * MAX_LETTER_BYTES)
    for i in range(100):
        letters.add(refused(json.dumps({"batch_id": f"b{i}", "n": i}).encode(), f"reason {i}"))
    assert [letter.number for letter in letters.newest()] == list(range(99, 69, -1))
    assert letter_keys(state) == {letter_key(n) for n in range(70, 100)}  # the older ones deleted as they left
    assert all(state.ttls[key] == STATE_TTL_S for key in letter_keys(state) | {DEAD_HEAD_KEY})
    big = "x" * (events.MAX_REFUSED_EVENT_BYTES - 100)
    for i in range(20):  # large events: the bytes' bound keeps fewer
        letters.add(refused(json.dumps({"batch_id": f"big{i}", "pad": big}).encode(), "too big"))
    assert 10 <= len(letters.newest()) < 30 and letters.bytes_held <= 10 * MAX_LETTER_BYTES
    assert len(letter_keys(state)) == len(letters.newest())
    stored = sum(len(state.items[key]) for key in letter_keys(state))
    assert stored == letters.bytes_held

    again = letters_over(state, keep=30, keep_bytes=10 * MAX_LETTER_BYTES)
    assert again.load() == len(letters.newest())
    assert [(x.number, x.batch_id) for x in again.newest()] == [(x.number, x.batch_id) for x in letters.newest()]
    assert again.add(refused(b"{}", "after the restart")).number == 120  # numbering goes on

    smaller = letters_over(state, keep=3)  # a smaller bound after a restart: the store shrinks with it
    assert smaller.load() == 3
    assert letter_keys(state) == {letter_key(n) for n in (118, 119, 120)}


def test_a_hostile_dead_letter_is_kept_cut_to_its_bound() -> None:
    state = FakeDaprState()
    letters = letters_over(state, keep=6)
    hostile = [b"x" * 10_000_000, ("\ud800" * 1000).encode("utf-8", "surrogatepass"),
               json.dumps({"data": {"reason": "r" * 100_000, "event": "e" * 5_000_000,
                                    "received_at": "t" * 1000}}).encode(),
               b'{"data": {"reason": "deep", "event": ' + b"[" * 5000 + b"]" * 5000 + b"}}",
               b'{"data": {"reason": "deep", "event": ' + b"[" * 900 + b"]" * 900 + b"}}",
               json.dumps({"data": {"reason": "odd id", "event": {"batch_id": "a||b"}}}).encode()]
    for raw in hostile:
        letters.add(raw)
    kept = letters.newest()
    assert len(kept) == 6 and all(len(state.items[letter_key(x.number)]) <= MAX_LETTER_BYTES for x in kept)
    assert kept[0].batch_id is None  # "a||b" is no batch id: no link, no key
    assert kept[3].reason == "r" * events.MAX_REASON_CHARS and len(kept[3].received_at) <= 40
    assert kept[3].event.endswith("[cut: 5000000 bytes in all]")
    assert kept[5].event.endswith("[cut: 10000000 bytes in all]")
    assert isinstance(kept[2].event, str) and isinstance(kept[1].event, str)  # too deep: its text


def test_dead_letters_the_store_refused_are_deleted_at_the_next_write() -> None:
    class Refusing(FakeSyncDapr):
        refuse = False

        def execute_state_transaction(self, store: Any, operations: Any, transactional_metadata: Any = None) -> None:
            if self.refuse:
                raise RuntimeError("connection refused")
            super().execute_state_transaction(store, operations, transactional_metadata)

    dapr = Refusing()
    letters = DeadLetters(ConsoleState(dapr), keep=2)  # type: ignore[arg-type]
    letters.add(refused(b"{}", "one"))
    letters.add(refused(b"{}", "two"))
    dapr.refuse = True
    letters.add(refused(b"{}", "three"))  # kept in memory; letter 0 not yet deleted from the store
    assert [x.reason for x in letters.newest()] == ["three", "two"] and letter_key(0) in dapr.state.items
    dapr.refuse = False
    letters.add(refused(b"{}", "four"))
    # Letter 2's write was refused (its key never made); 0 and 1 left the bound: all deleted with this write.
    assert letter_keys(dapr.state) == {letter_key(3)} and [x.reason for x in letters.newest()] == ["four", "three"]


def test_taskfan_dead_letters_lists_and_replays_through_the_console_api(monkeypatch: pytest.MonkeyPatch,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from taskfan.cli import console_client
    from taskfan.cli.main import main

    letters = letters_over()
    letters.add(refused(b"not json{", "event is not valid JSON"))
    letters.add(refused(json.dumps({"batch_id": "b1"}).encode(), "event is not a CloudEvent 1.0"))
    client, replayed = dead_letter_console(letters)

    def request(method: str, url: str, **kwargs: Any) -> Any:  # the CLI's httpx call, answered by the console app
        return client.request(method, url.removeprefix(f"http://{HOST}"), headers=kwargs.get("headers"),
                              json=kwargs.get("json"))

    monkeypatch.setattr(console_client.httpx, "request", request)
    monkeypatch.setenv("CONSOLE_URL", f"http://{HOST}")
    monkeypatch.setenv("TASKFAN_TOKEN", TOKEN)
    assert main(["dead-letters", "list"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0].split() == ["NUMBER", "RECEIVED_AT", "BATCH_ID", "REPLAYS", "REASON"]
    assert out.splitlines()[1].split()[0] == "1" and "b1" in out.splitlines()[1] and "page 1 of 1" in err
    assert main(["dead-letters", "-o", "json", "list"]) == 0
    assert json.loads(capsys.readouterr().out)["dead_letters"][1]["event"] == "not json{"
    assert main(["dead-letters", "replay", "0"]) == 0
    assert "published again on tasks" in capsys.readouterr().out and replayed == [b"not json{"]
    assert main(["dead-letters", "replay", "9"]) == 2 and "no dead letter" in capsys.readouterr().err
    assert main(["dead-letters", "list", "--page", "0"]) == 2
    monkeypatch.setenv("TASKFAN_TOKEN", "look")  # the viewer's credential: looks, replays nothing
    assert main(["dead-letters", "list"]) == 0
    assert main(["dead-letters", "replay", "0"]) == 1 and "act" in capsys.readouterr().err
    assert len(replayed) == 1


def test_a_dead_letter_the_console_cannot_keep_is_still_acknowledged() -> None:
    class Broken(DeadLetters):
        def add(self, raw: bytes) -> Any:
            raise RuntimeError("a bug")

    book = new_book()
    book.accepted(batch("b", 1))
    topics = Subscriptions(book, Broken(None))
    record = refused(json.dumps({"batch_id": "b"}).encode(), "why")
    assert topics.on_dead_letter(Event(record)).status.name == "success"  # not delivered again and again
    assert book.get("b").dead_letter == "why"  # type: ignore[union-attr]
