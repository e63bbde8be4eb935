"""The console's replicas page on the real stack, in a real browser: after a batch, every step's replicas (the
validator's, the enricher's, the scorers'); a consumer group's lag as Redis's own XINFO GROUPS says it; and the
console's Redis user, which may read that lag and nothing else."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
import redis
from playwright.sync_api import Page, expect

from taskfan.contracts import CONSOLE_REDIS_USER, OUTCOMES_TOPIC, TASKS_TOPIC
from taskfan.settings import Settings
from taskfan.stack import Stack

from .conftest import E2E_SCORERS
from .helpers import cli, lesson_tasks, post_batch, wait_outcome
from .test_console import shot

pytestmark = pytest.mark.e2e


@pytest.fixture
def viewer_page(console_page: Callable[[str], Page]) -> Page:
    """A viewer's page: the replicas page only looks."""
    return console_page("view")


def test_the_replicas_page_shows_every_steps_replicas_after_a_batch(viewer_page: Page, settings: Settings,
                                                                    redis_client: redis.Redis, batch_id: str) -> None:
    assert post_batch(settings, {"batch_id": batch_id, "tasks": lesson_tasks(batch_id, 300)}).status_code == 202
    wait_outcome(redis_client, batch_id)
    page = viewer_page
    page.locator("header").get_by_role("link", name="replicas", exact=True).click()
    expect(page.locator("h1")).to_have_text("Replicas")
    for step in ("validate", "enrich"):  # one replica each, the launcher's replica 0
        expect(page.locator(f'section[data-step="{step}"] tr[data-step-replica="0"]')).to_be_visible(timeout=30_000)
    scorers = page.locator('section[data-step="score"] tr[data-step-replica]')
    expect(scorers.first).to_be_visible(timeout=30_000)
    assert 1 <= scorers.count() <= E2E_SCORERS
    answered = page.locator('section[data-step="validate"] tr[data-step-replica="0"] td').nth(1).inner_text()
    assert int(answered) >= 300  # this batch's tasks at least, through this workflow process
    shot(page, "replicas")


def test_a_groups_lag_on_the_page_is_what_redis_says(viewer_page: Page, stack: Stack, settings: Settings,
                                                     redis_client: redis.Redis, batch_id: str) -> None:
    group = f"e2e-never-reads-{uuid.uuid4().hex[:8]}"
    # A group that reads nothing, from the stream's end. Its read counter is given: where entries of the stream were
    # deleted (XDEL) Redis could not count its lag otherwise ("unknown" on the page).
    added = redis_client.xinfo_stream(OUTCOMES_TOPIC)["entries-added"] if redis_client.exists(OUTCOMES_TOPIC) else 0
    redis_client.xgroup_create(OUTCOMES_TOPIC, group, id="$", mkstream=True, entries_read=added)
    try:
        assert post_batch(settings, {"batch_id": batch_id, "tasks": lesson_tasks(batch_id, 5)}).status_code == 202
        wait_outcome(redis_client, batch_id)
        said = next(g for g in redis_client.xinfo_groups(OUTCOMES_TOPIC) if g["name"].decode() == group)
        assert said["lag"] >= 1 and said["pending"] == 0
        viewer_page.goto(f"{stack.console_url}/replicas")
        row = viewer_page.locator(f'#streams tr[data-stream="{OUTCOMES_TOPIC}"][data-group="{group}"]')
        expect(row.locator(".lag")).to_have_text(str(said["lag"]), timeout=30_000)
        expect(row.locator(".pending")).to_have_text("0")
        length = redis_client.xlen(OUTCOMES_TOPIC)
        expect(row.locator("td").nth(1)).to_have_text(str(length), timeout=30_000)
    finally:
        redis_client.xgroup_destroy(OUTCOMES_TOPIC, group)
    expect(viewer_page.locator(f'#streams tr[data-group="{group}"]')).to_have_count(0, timeout=30_000)


def test_the_consoles_redis_user_reads_lag_and_nothing_else(settings: Settings) -> None:
    assert settings.redis_console_password, "the stack's secrets file has the console's Redis password"
    console = redis.Redis(host=settings.redis_host, port=settings.redis_port, username=CONSOLE_REDIS_USER,
                          password=settings.redis_console_password, socket_timeout=10)
    with console:
        assert isinstance(console.xinfo_groups(TASKS_TOPIC), list) and console.xlen(TASKS_TOPIC) >= 0
        refused = {
            "GET": lambda: console.get(TASKS_TOPIC),
            "XREAD": lambda: console.xread({OUTCOMES_TOPIC: "0"}, count=1),
            "XADD": lambda: console.xadd(TASKS_TOPIC, {"data": "{}"}),
            "KEYS": lambda: console.keys("*"),
            "CONFIG": lambda: console.config_get("requirepass"),
            "XINFO STREAM": lambda: console.xinfo_stream(OUTCOMES_TOPIC),  # it shows entries' contents
            "XINFO GROUPS of another key": lambda: console.xinfo_groups("workflow||taskfan-admission"),
        }
        for command, call in refused.items():
            try:
                call()
            except redis.exceptions.NoPermissionError:  # Redis's NOPERM answer (redis-py drops the word)
                continue
            else:
                pytest.fail(f"{command} was not refused to {CONSOLE_REDIS_USER}")
    with pytest.raises(redis.AuthenticationError):  # the stack's default password is not its password
        redis.Redis(host=settings.redis_host, port=settings.redis_port, username=CONSOLE_REDIS_USER,
                    password=settings.redis_password, socket_timeout=10).ping()


def test_two_validator_replicas_share_a_batch_and_both_show(viewer_page: Page, stack: Stack, settings: Settings,
                                                            redis_client: redis.Redis, batch_id: str) -> None:
    scaled = cli("stack", "scale", "--app", "validator", "--replicas", "2", timeout=180)  # the README's command
    assert scaled.returncode == 0, scaled.stderr
    try:
        state = stack.running()
        assert state is not None and state.replicas == {"validator": 2} and state.find("validator-1").alive()
        # 20 chunks, one validate call each at least: Dapr picks a replica at random per call.
        assert post_batch(settings, {"batch_id": batch_id, "tasks": lesson_tasks(batch_id, 2000)}).status_code == 202
        wait_outcome(redis_client, batch_id)
        viewer_page.goto(f"{stack.console_url}/replicas")
        for replica in ("0", "1"):
            expect(viewer_page.locator(f'section[data-step="validate"] tr[data-step-replica="{replica}"]')
                   ).to_be_visible(timeout=30_000)
        shot(viewer_page, "replicas-two-validators")
    finally:
        back = cli("stack", "scale", "--app", "validator", "--replicas", "1", timeout=180)
    assert back.returncode == 0, back.stderr
    state = stack.running()
    assert state is not None and state.replicas == {} and "validator-1" not in {p.name for p in state.processes}


def test_the_scorers_still_scale_by_their_own_flag(stack: Stack) -> None:
    # `scale --scorers` and `scale --app` share the launcher's adding and draining (Stack._scale).
    assert cli("stack", "scale", "--scorers", str(E2E_SCORERS + 1), timeout=180).returncode == 0
    try:
        state = stack.running()
        assert state is not None and state.scorers == E2E_SCORERS + 1
        assert state.find(f"scorer-{E2E_SCORERS}").alive() and state.find(f"scorer-{E2E_SCORERS}-daprd").alive()
    finally:
        back = cli("stack", "scale", "--scorers", str(E2E_SCORERS), timeout=180)
    assert back.returncode == 0, back.stderr
    state = stack.running()
    assert state is not None and state.scorers == E2E_SCORERS
    assert f"scorer-{E2E_SCORERS}" not in {p.name for p in state.processes}
    refused = cli("stack", "scale", "--app", "ingest", "--replicas", "2")
    assert refused.returncode != 0 and "neither the workflow app, the console nor a step app" in refused.stderr
