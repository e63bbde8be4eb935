"""The console for operators on the real stack, in a real browser: finding a batch by its id and start time,
paging a batch's tasks to the last one, and the dead letters: a poison event shown with its reason and replayed
from the page (refused again, with its reason: a new dead letter), a refused batch replayed with
`taskfan dead-letters replay` (it runs to its outcome).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis
from playwright.sync_api import Page, expect

from services.console.records import TASK_ROWS_PER_PAGE
from taskfan import events
from taskfan.contracts import DEADLETTER_TOPIC, TASK_BATCH_EVENT_TYPE, TASKS_TOPIC
from taskfan.settings import Settings
from taskfan.stack import Stack
from taskfan.stack.drill import restart

from .helpers import cli, ingest_auth, lesson_tasks, post_batch, wait_for, wait_outcome

pytestmark = pytest.mark.e2e


@pytest.fixture
def page(console_page: Callable[[str], Page]) -> Page:
    """An operator's page; the test fails if the browser reports a Content-Security-Policy violation."""
    return console_page("act")


def console_json(stack: Stack, settings: Settings, path: str, **params: str) -> httpx.Response:
    return httpx.get(f"{stack.console_url}{path}", params=params, headers=ingest_auth(settings), timeout=10)


def test_an_operator_finds_a_batch_by_its_id_and_start_and_pages_its_tasks_to_the_last(
        page: Page, stack: Stack, settings: Settings, redis_client: redis.Redis, batch_id: str) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    count = TASK_ROWS_PER_PAGE + 10  # two pages of tasks
    assert post_batch(settings, {"batch_id": batch_id, "tasks": lesson_tasks(batch_id, count)}).status_code == 202
    wait_outcome(redis_client, batch_id, timeout=180)
    # A console restarted a moment ago (an earlier test) gets an event the sidecar was handing its killed process
    # only when the pub/sub hands it out again (console-pubsub's processingTimeout): README, "Several consoles".
    wait_for(lambda: [row for row in console_json(stack, settings, "/api/batches", q=batch_id).json()["batches"]
                      if row["finished_at"]], "the console's history to hold the batch's outcome", 60)
    prefix = batch_id[:-4]  # its beginning finds it

    page.fill('input[name="q"]', prefix)
    page.fill('input[name="since"]', before.isoformat())
    page.get_by_role("button", name="Search").click()
    expect(page.locator("tbody#rows tr[data-batch]")).to_have_count(1)
    expect(page.locator(f'tr[data-batch="{batch_id}"]')).to_be_visible()
    assert "q=" in page.url and "since=" in page.url
    later = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    gone = console_json(stack, settings, "/api/batches", q=prefix, since=later)
    assert gone.status_code == 200 and gone.json()["batches"] == []
    refused = console_json(stack, settings, "/api/batches", q="a||b")
    assert refused.status_code == 400 and refused.json()["error"].startswith("q is a batch id")

    page.locator(f'tr[data-batch="{batch_id}"] a').first.click()
    expect(page.locator("h1")).to_have_text(f"Batch {batch_id}")
    expect(page.locator("#tasks tr")).to_have_count(TASK_ROWS_PER_PAGE)
    page.locator("#task-pager").get_by_role("link", name="next").click()
    expect(page.locator("#tasks tr")).to_have_count(10)
    expect(page.locator(f'#tasks tr[data-task="{batch_id}-{count - 1}"]')).to_be_visible()  # the last task
    expect(page.locator("#task-pager")).to_contain_text(f"of {count} · page 2 of 2")
    last = console_json(stack, settings, f"/api/batches/{batch_id}", page="2").json()
    assert (last["pages"], last["tasks"][-1]["task_id"]) == (2, f"{batch_id}-{count - 1}")


def letters_of(stack: Stack, settings: Settings) -> list[dict[str, Any]]:
    return console_json(stack, settings, "/api/dead-letters").json()["dead_letters"]


def test_a_dead_letter_is_shown_with_its_reason_and_replayed_from_the_page_and_the_cli(
        page: Page, stack: Stack, settings: Settings, redis_client: redis.Redis, batch_id: str) -> None:
    marker = f"poison-{uuid.uuid4().hex[:8]}"
    redis_client.xadd(TASKS_TOPIC, {"data": f"not json {marker}"})
    poison = wait_for(lambda: [x for x in letters_of(stack, settings) if marker in json.dumps(x["event"])],
                      "the poison event's dead letter on the console", 60)[0]
    assert "not valid JSON" in poison["reason"]

    page.goto(f"{stack.console_url}/dead-letters")
    row = page.locator(f'tr[data-letter="{poison["number"]}"]')
    expect(row).to_contain_text("not valid JSON")
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Replay").click()
    expect(page.locator("#message")).to_contain_text("published again on tasks")
    # The defined answer to a poison event: refused again, with its reason.
    again = wait_for(lambda: [x for x in letters_of(stack, settings)
                              if marker in json.dumps(x["event"]) and x["number"] > poison["number"]],
                     "the replayed poison event dead-lettered again", 60)[0]
    assert again["reason"] == poison["reason"]

    # A batch refused once (a record on the dead-letter topic, as the workflow service writes one), replayed from
    # the CLI: it runs to its outcome.
    refused_event = {"specversion": "1.0", "type": TASK_BATCH_EVENT_TYPE, "source": "e2e-test",
                     "id": str(uuid.uuid4()), "datacontenttype": "application/json",
                     "data": {"batch_id": batch_id, "tasks": lesson_tasks(batch_id, 2)}}
    record = events.dead_letter("refused for the drill", refused_event, source="e2e-test")
    redis_client.xadd(DEADLETTER_TOPIC, {"data": record})
    letter = wait_for(lambda: [x for x in letters_of(stack, settings) if x["batch_id"] == batch_id],
                      "the refused batch's dead letter on the console", 60)[0]
    listed = cli("dead-letters", "list")
    assert listed.returncode == 0 and batch_id in listed.stdout, listed
    replayed = cli("dead-letters", "replay", str(letter["number"]))
    assert replayed.returncode == 0 and "published again" in replayed.stdout, replayed
    assert wait_outcome(redis_client, batch_id, timeout=60)["total"] == 2

    # Kept in the console's state store as they come (no flush to wait for): a killed console reads them back.
    kept = [(x["number"], x["reason"], x["replays"]) for x in letters_of(stack, settings)]
    restart(stack, "console")
    back = wait_for(lambda: (r := console_json(stack, settings, "/api/dead-letters")).status_code == 200 and [
        (x["number"], x["reason"], x["replays"]) for x in r.json()["dead_letters"]], "the restarted console", 60)
    assert back == kept
