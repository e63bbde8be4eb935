"""End-to-end fixtures: one real stack (Dapr runtime + Redis) for the session, three scorers.

A stack that does not start fails the tests that need it, with the launcher's message; nothing is
skipped. Every test uses its own batch ids, so tests never see each other's outcomes.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from taskfan import runfile, stack_secrets
from taskfan.settings import Settings
from taskfan.stack import Stack

from .helpers import REPO_ROOT, cli

E2E_SCORERS = 3
FAIL_PATTERN = "*-fail-me"
STEP_TIMEOUT_MS = 6_000
WORKFLOW_RETENTION_S = 20
E2E_SUBSCRIBERS = ("e2e-follower", "e2e-subscriber")
# Each session starts from an empty run directory of its own: figures and timeouts do not depend on what
# earlier runs left in Redis and the scheduler, and a developer's own stack data (.taskfan) is left alone.
E2E_RUN_DIR = REPO_ROOT / ".taskfan" / "e2e"
FAULT_POINTS_DIR = E2E_RUN_DIR / "fault-points"

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    os.environ["SCORER_FAIL_TASKS"] = FAIL_PATTERN  # inherited by the scorer processes
    # A shorter step deadline than the default 30 s keeps the hung-app drills short; it still exceeds
    # anything a step legitimately takes here (no scorer delay).
    # A shorter workflow retention than the default 60 s keeps the retention test short; every test that reads
    # a finished workflow's state through Dapr's API does so as its outcome arrives.
    # A stack of its own starts without these (helpers.SESSION_SETTINGS).
    for name, value in {"STEP_TIMEOUT_MS": STEP_TIMEOUT_MS, "WORKFLOW_RETENTION_S": WORKFLOW_RETENTION_S}.items():
        os.environ[name] = str(value)
    # The subscribers the tests start, besides the README's (pub/sub scopes admit only listed app ids).
    os.environ["OUTCOME_SUBSCRIBERS"] = ",".join(["taskfan-cli", "my-subscriber", *E2E_SUBSCRIBERS])
    shutil.rmtree(E2E_RUN_DIR, ignore_errors=True)
    os.environ["RUN_DIR"] = str(E2E_RUN_DIR)  # inherited by `make down` and the CLI the tests run
    # The fault points the drills arm (services/workflow/faults.py); none is armed unless a test does.
    FAULT_POINTS_DIR.mkdir(parents=True)
    os.environ["FAULT_POINTS_DIR"] = str(FAULT_POINTS_DIR)
    # TASKFAN_RUN_FILE: a run file of one's own (a developer's shifted ports beside a running stack).
    run_file = Path(os.environ.get(runfile.RUN_FILE_ENV) or REPO_ROOT / "dapr.yaml")
    stack = Stack(Settings.from_env(), runfile.load(run_file))
    stack.up(E2E_SCORERS, progress=lambda line: print(line, flush=True))
    yield stack
    stack.down(progress=lambda _: None)


@pytest.fixture(scope="session")
def settings(stack: Stack) -> Settings:
    # Clients reach the stack at the addresses its run file gives, as the CLI does.
    # ... and with the stack's secrets, as the CLI reads them (stack_secrets).
    return stack_secrets.for_clients(dataclasses.replace(
        stack.settings, ingest_url=stack.ingest_url, workflow_dapr_url=stack.run_file.dapr_http_url("workflow")),
        stack.run_file)


@pytest.fixture(scope="session")
def redis_client(settings: Settings) -> redis.Redis:
    return redis.Redis(host=settings.redis_host, port=settings.redis_port, password=settings.redis_password)


@pytest.fixture
def batch_id(request: pytest.FixtureRequest) -> str:
    return f"e2e-{request.node.name[:40]}-{uuid.uuid4().hex[:8]}".replace("[", "-").replace("]", "")




@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium, installed like redis-server (make test installs it in the background meanwhile)."""
    done = subprocess.run(["bash", str(REPO_ROOT / "deploy" / "install-chromium.sh")], capture_output=True,
                          text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=done.stdout.split()[-1], args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def console_page(browser: Browser, stack: Stack) -> Iterator[Callable[[str], Page]]:
    """Opens the console signed in as a role (``view`` or ``act``, a one-time link from `taskfan console`); the test
    fails if the browser reports a Content-Security-Policy violation on any page it opened."""
    contexts: list[BrowserContext] = []
    violations: list[str] = []

    def signed_in(role: str) -> Page:
        link = cli("console", "--role", role)
        assert link.returncode == 0, link.stderr
        contexts.append(context := browser.new_context(viewport={"width": 1280, "height": 900}))
        page = context.new_page()
        page.on("console", lambda message: violations.append(message.text)
                if "Content Security Policy" in message.text or "Refused to" in message.text else None)
        page.goto(link.stdout.strip())
        expect(page.locator("h1")).to_have_text("Batches")
        return page

    yield signed_in
    for context in contexts:
        context.close()
    assert violations == []
