"""The web console on the real stack, in a real browser: Debian's chromium driven by Playwright.

Signs in with the one-time link `taskfan console --role act` prints; watches a batch published by curl's way
(ingest's API) reach 100 % on the batches page without a reload; opens it and sees each task's final stage as
the outcome on the wire says (1,000 tasks a page); terminates a running batch from its page; re-runs failed tasks;
reads the scorers on the replicas page; follows a batch's trace (Jaeger's API has spans of every app) to its
waterfall page.
Screenshots of every page go to .taskfan/e2e/screenshots/.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from playwright.sync_api import Browser, Page, expect

from services.console.history import FLUSH_INTERVAL_S
from services.console.records import TASK_ROWS_PER_PAGE
from taskfan.settings import Settings
from taskfan.stack import Stack

from .conftest import E2E_RUN_DIR, E2E_SCORERS, FAIL_PATTERN
from .helpers import cli, frozen, ingest_auth, lesson_tasks, post_batch, wait_for, wait_outcome

pytestmark = pytest.mark.e2e

SCREENSHOTS = E2E_RUN_DIR / "screenshots"
STAGE_OF_STATUS = {"completed": "done", "rejected": "rejected", "failed": "failed"}


@pytest.fixture
def page(browser: Browser, stack: Stack) -> Iterator[Page]:
    link = cli("console", "--role", "act")  # these tests terminate and re-run
    assert link.returncode == 0, link.stderr
    assert link.stdout.strip().startswith(f"{stack.console_url}/login?code=")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(link.stdout.strip())
    expect(page.locator("h1")).to_have_text("Batches")  # signed in, and the one-time code left the address bar
    assert "code" not in page.url
    yield page
    context.close()


def shot(page: Page, name: str) -> None:
    # Owner-only, as all of the run folder is (test_security checks it): the pages show the tasks' text.
    SCREENSHOTS.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path))  # the viewport: a 1,500-task page is 67,000 px tall
    path.chmod(0o600)


def mixed_tasks(prefix: str, count: int) -> list[dict[str, str]]:
    """Mostly tasks that complete, every 10th rejected by validation, every 25th failing at the scorer."""
    tasks = lesson_tasks(prefix, count)
    for i, task in enumerate(tasks):
        if i % 10 == 3:
            task["title"] = "x"
        elif i % 25 == 7:
            task["task_id"] += FAIL_PATTERN.lstrip("*")
    return tasks


def test_a_batch_reaches_100_percent_live_and_its_page_shows_each_tasks_final_stage(
        page: Page, settings: Settings, redis_client: redis.Redis, batch_id: str) -> None:
    page.evaluate("window.notReloaded = true")
    assert post_batch(settings, {"batch_id": batch_id, "tasks": mixed_tasks(batch_id, 1500)}).status_code == 202
    row = page.locator(f'tr[data-batch="{batch_id}"]')
    expect(row).to_be_visible(timeout=30_000)  # it appears without a reload (server-sent events)...
    expect(row.locator("[data-percent]")).to_have_attribute("data-percent", "100", timeout=120_000)  # ... and ends
    assert page.evaluate("window.notReloaded") is True
    outcome = wait_outcome(redis_client, batch_id)
    expect(row.locator(".state")).to_have_text("failed")  # some tasks failed, as the outcome says
    shot(page, "batches")

    row.locator("a").first.click()
    expect(page.locator("h1")).to_have_text(f"Batch {batch_id}", timeout=30_000)  # a loaded host
    rows = "rows => rows.map(r => [r.dataset.task, r.dataset.stage])"
    stages = page.locator("#tasks tr").evaluate_all(rows)
    assert len(stages) == TASK_ROWS_PER_PAGE  # 1,000 a page: the others on the next
    page.locator("#task-pager").get_by_role("link", name="next").click()
    expect(page.locator("#tasks tr")).to_have_count(1500 - TASK_ROWS_PER_PAGE)
    stages += page.locator("#tasks tr").evaluate_all(rows)
    assert stages == [[r["task_id"], STAGE_OF_STATUS[r["status"]]] for r in outcome["results"]]
    failed = outcome["failed"]
    assert failed > 0 and outcome["rejected"] > 0
    expect(page.locator("#summary .counts")).to_contain_text(f"failed {failed}")
    shot(page, "batch")

    # Re-run the failed tasks from the page: a new batch of just those, linked to this one.
    page.get_by_role("button", name=f"Re-run the {failed} failed tasks").click()
    page.wait_for_url("**/batches/*.retry-*")
    rerun_id = page.url.rsplit("/", 1)[-1]
    expect(page.locator("#state")).to_have_text("failed", timeout=120_000)  # they fail again (the pattern)
    assert [r["task_id"] for r in wait_outcome(redis_client, rerun_id)["results"]] == [
        r["task_id"] for r in outcome["results"] if r["status"] == "failed"]
    expect(page.locator("#summary")).to_contain_text(f"{failed}/{failed}")


def test_terminate_a_running_batch_from_its_page(page: Page, stack: Stack, settings: Settings,
                                                  redis_client: redis.Redis, batch_id: str) -> None:
    scorers = [f"scorer-{i}" for i in range(E2E_SCORERS)]
    with frozen(stack, scorers):  # hung scorers: the batch stays at the score step
        assert post_batch(settings, {"batch_id": batch_id, "tasks": lesson_tasks(batch_id, 30)}).status_code == 202
        page.goto(f"{stack.console_url}/batches/{batch_id}")
        expect(page.locator("#state")).to_have_text("running", timeout=30_000)
        expect(page.locator('#tasks tr[data-stage="score"]')).to_have_count(30, timeout=30_000)  # live stages
        shot(page, "batch-running")
        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name="Terminate").click()
        expect(page.locator("#message")).to_contain_text("terminated")
        # The reconciler answers for the terminated workflow while the scoring is still hung. (Had the scorers
        # answered first, the chunk's activity, which a terminate cannot stop, would have saved real results,
        # and the outcome would report those.)
        outcome = wait_outcome(redis_client, batch_id, timeout=60)
    assert outcome["failed"] == 30 and all("terminated" in r["error"] for r in outcome["results"])
    expect(page.locator("#state")).to_have_text("failed", timeout=30_000)
    expect(page.locator('#tasks tr[data-stage="failed"]')).to_have_count(30)
    expect(page.get_by_role("button", name="Terminate")).to_have_count(0)


def test_scorers_page_lists_the_replicas_and_the_throughput(page: Page, settings: Settings,
                                                             redis_client: redis.Redis, batch_id: str) -> None:
    assert post_batch(settings, {"batch_id": batch_id, "tasks": lesson_tasks(batch_id, 600)}).status_code == 202
    wait_outcome(redis_client, batch_id)
    page.locator("header").get_by_role("link", name="replicas", exact=True).click()
    expect(page.locator("h1")).to_have_text("Replicas")
    expect(page.locator("tr[data-replica]").first).to_be_visible(timeout=30_000)
    assert 1 <= page.locator("tr[data-replica]").count() <= E2E_SCORERS
    expect(page.locator("#backlog")).to_have_text("0", timeout=30_000)
    expect(page.locator("#throughput-svg")).to_be_visible(timeout=30_000)
    shot(page, "scorers")


def test_a_batch_has_one_trace_with_spans_from_every_app(page: Page, stack: Stack, settings: Settings,
                                                          redis_client: redis.Redis, batch_id: str) -> None:
    assert post_batch(settings, {"batch_id": batch_id, "tasks": lesson_tasks(batch_id, 10)}).status_code == 202
    wait_outcome(redis_client, batch_id)
    # Jaeger's API, as a user would ask it (the console's JSON names the URL of the batch's trace).
    trace_api = httpx.get(f"{stack.console_url}/api/batches/{batch_id}", headers=ingest_auth(settings),
                          timeout=10).json()["trace"]
    assert trace_api and trace_api.startswith(settings.traces_url)

    def services() -> set[str]:
        traces = httpx.get(trace_api, timeout=10).json().get("data") or []
        return {p["serviceName"] for trace in traces for p in trace["processes"].values()}

    every_app = {"ingest", "workflow", "validator", "enricher", "scorer"}
    wait_for(lambda: services() >= every_app, "spans of every app in the batch's trace", 60)
    page.goto(f"{stack.console_url}/batches/{batch_id}")
    page.get_by_role("link", name="trace").click()
    expect(page.locator("h1")).to_contain_text(f"Trace of batch {batch_id}")
    for app in every_app:
        expect(page.locator(f'#spans tr[data-service="{app}"]').first).to_be_visible()
    shot(page, "trace")


def test_metrics_of_the_workflow_app_next_to_each_sidecars_own(stack: Stack, settings: Settings,
                                                               redis_client: redis.Redis, batch_id: str) -> None:
    assert post_batch(settings, {"batch_id": batch_id, "tasks": mixed_tasks(batch_id, 200)}).status_code == 202
    wait_outcome(redis_client, batch_id)
    metrics_port = stack.workflows(stack.running())[0].env["METRICS_PORT"]  # METRICS_PORT in dapr.yaml
    ours = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    for name in ('taskfan_tasks_finished_total{status="rejected"}', 'taskfan_step_call_seconds_bucket{le="0.5"',
                 'taskfan_tasks_in_step{step="score"}', "taskfan_backlog_tasks", 'taskfan_batches{state="running"}'):
        assert name in ours, name
    workflow = stack.topology.instance("workflow")
    sidecar = httpx.get(f"http://127.0.0.1:{workflow.metrics_port}/metrics", timeout=10).text
    assert "dapr_runtime_workflow_" in sidecar and "dapr_http_server_request_count" in sidecar


def test_the_console_refuses_without_the_token(stack: Stack) -> None:
    assert httpx.get(f"{stack.console_url}/api/batches").status_code == 401
    assert httpx.get(f"{stack.console_url}/", follow_redirects=False).status_code == 303
    assert httpx.get(f"{stack.console_url}/", headers={"host": "rebound.example"}).status_code == 421


def test_screenshots_were_saved() -> None:
    saved = sorted(p.name for p in Path(SCREENSHOTS).glob("*.png"))
    assert {"batches.png", "batch.png", "batch-running.png", "scorers.png", "trace.png"} <= set(saved), saved


def test_a_restarted_console_remembers_finished_batches_and_their_tasks(stack, settings, redis_client, batch_id):
    from taskfan.stack.drill import restart

    tasks = [*lesson_tasks("t", 3), {**lesson_tasks("t", 1)[0], "task_id": "t-fail-me"}]  # fails in the scorer
    assert post_batch(settings, {"batch_id": batch_id, "tasks": tasks}).status_code == 202
    outcome = wait_outcome(redis_client, batch_id)
    api = f"{stack.console_url}/api/batches/{batch_id}"
    headers = ingest_auth(settings)
    wait_for(lambda: (r := httpx.get(api, headers=headers, timeout=10)).status_code == 200
             and r.json()["batch"]["state"] == "failed", "the console to see the outcome", 30)
    # Its summaries reach the store every FLUSH_INTERVAL_S: read back at the restart, not handed out again.
    time.sleep(FLUSH_INTERVAL_S + 1)
    restart(stack, "console")  # SIGKILL, then started again: what it knew is read back from the state store
    shown = wait_for(lambda: (r := httpx.get(api, headers=headers, timeout=10)).status_code == 200 and r.json(),
                     "the restarted console to answer for the batch", 60)
    assert shown["batch"]["total"] == 4 and shown["batch"]["completed"] == outcome["completed"]
    assert {t["task_id"]: t["stage"] for t in shown["tasks"]} == {
        r["task_id"]: STAGE_OF_STATUS[r["status"]] for r in outcome["results"]}
    listed = httpx.get(f"{stack.console_url}/api/batches", headers=headers, timeout=10).json()
    assert batch_id in {row["batch_id"] for row in listed["batches"]} and listed["page"] == 1
    assert httpx.get(f"{stack.console_url}/api/batches?page=0", headers=headers, timeout=10).status_code == 400
