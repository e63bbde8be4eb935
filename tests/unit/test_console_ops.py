"""The console for operators: searching the batches, paging a batch's tasks, the dead letters and their replay
(fakes for the workflow app, the topic and the state store; the real stack: tests/e2e/test_console_ops.py)."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest

from services.console.history import BatchBook
from tests.unit.test_console import AUTH, batch, console, new_book, outcome


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
