"""The console as an intruder on the same machine sees it, in a real browser, on a stack of its own (dapr.yaml's ports
+ 20,000, its own Redis and run directory, started and stopped through the CLI a user has).

A "neighbour" web server on another 127.0.0.1 port records every header it is sent. A browser signs in to the
console through the one-time link `taskfan console --role act` prints, then visits the neighbour, whose page tries
to frame the console, read its JSON and post an action to it. What holds:
- no stack credential ever reaches the neighbour; what a browser does send it (cookies are not kept apart by port
  on one host) is the console's session id, which ingest does not take (no batch can be published with it) and
  which is worth nothing once the user signs out;
- the console will not be framed, and its answers cannot be read or its actions posted from the neighbour's page;
- the pages work under the Content-Security-Policy (live updates, the operator's buttons) and the browser reports
  no violation of it; a viewer's pages have no button;
- the link works once, and no stack credential is on any process's command line after `taskfan console --open`
  (the browser, a fake one here that records its arguments, gets the one-time link only).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
import yaml
from playwright.sync_api import Browser, expect

from bench.soak import shift_run_file
from taskfan import runfile, stack_secrets
from taskfan.settings import Settings
from taskfan.stack import Stack

from .helpers import REPO_ROOT, environ_without_session_settings, wait_for

pytestmark = pytest.mark.e2e

# Away from the default stack, the soak's (10,000, 11,000) and the own-step test's (12,000), and below Linux's
# ephemeral ports (32768-60999): at + 30,000 the stack's own client sockets, in TIME-WAIT, held ports it was about
# to listen on at the next start (measured: 38080, 35502).
PORT_OFFSET = 20_000
RUN_DIR = REPO_ROOT / ".taskfan" / "console-intruder"
TASK = {"task_id": "t1", "title": "Fix the login page", "description": "It answers 500 errors"}
FAIL_PATTERN = "*-fail-me"


def taskfan(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "taskfan.cli", *args], cwd=REPO_ROOT, env=env, timeout=timeout,
                          capture_output=True, text=True)


class OwnStack:
    def __init__(self, env: dict[str, str], document: dict[str, Any]) -> None:
        self.env = env
        app = {a["appID"]: a for a in document["apps"]}
        self.console_url = f"http://127.0.0.1:{app['console']['env']['CONSOLE_PORT']}"
        self.ingest_url = f"http://127.0.0.1:{app['ingest']['env']['INGEST_PORT']}"
        self.cookie = f"taskfan_console_{app['console']['env']['CONSOLE_PORT']}"
        loaded = stack_secrets.load(Path(env["RUN_DIR"]))
        assert loaded is not None
        self.secrets = loaded

    def credentials(self) -> list[str]:
        return [value for value in self.secrets.as_secret_store().values() if value]


@pytest.fixture(scope="module")
def own_stack() -> Iterator[OwnStack]:
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    RUN_DIR.mkdir(parents=True)
    document = yaml.safe_load((REPO_ROOT / runfile.RUN_FILE_NAME).read_text())
    shifted = shift_run_file(document, PORT_OFFSET, REPO_ROOT, runfile.load(REPO_ROOT / "dapr.yaml").ingest_port())
    run_file = RUN_DIR / runfile.RUN_FILE_NAME
    run_file.write_text(yaml.safe_dump(shifted, sort_keys=False))
    env = {**environ_without_session_settings(),
           runfile.RUN_FILE_ENV: str(run_file), "RUN_DIR": str(RUN_DIR / "run"),
           "REDIS_PORT": str(Settings.redis_port + PORT_OFFSET), "TRACE_SAMPLING": "0",
           "SCORER_FAIL_TASKS": FAIL_PATTERN}
    up = taskfan("stack", "up", "--scorers", "1", env=env, timeout=600)
    try:
        assert up.returncode == 0, f"{up.stdout}\n{up.stderr}"
        yield OwnStack(env, shifted)
    finally:
        down = taskfan("stack", "down", env=env, timeout=300)
        assert down.returncode == 0, f"{down.stdout}\n{down.stderr}"


class Neighbour:
    """A web server on another port of 127.0.0.1: it records every request's headers, and its page tries what a
    hostile page can against the console (frame it, read it, post to it) and reports what it got."""

    def __init__(self, console_url: str) -> None:
        self.requests: list[dict[str, str]] = []
        self.reports: dict[str, str] = {}
        neighbour = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                neighbour.requests.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
                if self.path.startswith("/report"):
                    what, _, said = self.path.removeprefix("/report?").partition("=")
                    neighbour.reports[what] = unquote(said)
                    body = b"ok"
                else:
                    body = neighbour.page(console_url).encode()
                self.send_response(200)
                self.send_header("content-type", "text/html" if body != b"ok" else "text/plain")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def page(console: str) -> str:
        return f"""<!doctype html><html><body><h1>neighbour</h1>
<iframe id="framed" src="{console}/" width="600" height="300"></iframe>
<script>
const report = (what, said) => fetch('/report?' + what + '=' + encodeURIComponent(said));
fetch('{console}/api/batches', {{credentials: 'include'}})
  .then(r => r.text()).then(t => report('read', 'READ:' + t.slice(0, 200)), e => report('read', 'refused:' + e));
fetch('{console}/batches/intruder/terminate', {{method: 'POST', credentials: 'include',
      headers: {{'x-taskfan-console': '1'}}}})
  .then(r => r.text()).then(t => report('post', 'POSTED:' + t.slice(0, 200)), e => report('post', 'refused:' + e));
document.getElementById('framed').addEventListener('load', () => {{
  let seen;
  try {{ seen = 'READ:' + document.getElementById('framed').contentDocument.body.innerText.slice(0, 200); }}
  catch (e) {{ seen = 'refused:' + e.name; }}
  report('frame', seen);
}});
</script></body></html>"""

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_neighbour_on_another_port_gets_no_credential_and_cannot_use_what_the_browser_sends_it(
        own_stack: OwnStack, browser: Browser) -> None:
    printed = taskfan("console", "--role", "act", env=own_stack.env)
    assert printed.returncode == 0, printed.stderr
    link = printed.stdout.strip()
    assert link.startswith(f"{own_stack.console_url}/login?code=")
    assert not any(secret in link for secret in own_stack.credentials())
    neighbour = Neighbour(own_stack.console_url)
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(link)
        expect(page.locator("h1")).to_have_text("Batches")
        assert "code" not in page.url
        session = next(c["value"] for c in context.cookies() if c["name"] == own_stack.cookie)
        page.goto(neighbour.url)
        wait_for(lambda: {"read", "post", "frame"} <= set(neighbour.reports), "the neighbour's page to report", 30)

        # Nothing the neighbour was sent holds a stack credential.
        sent = json.dumps(neighbour.requests)
        leaked = [name for name, value in own_stack.secrets.as_secret_store().items() if value and value in sent]
        assert not leaked, f"the neighbour was sent {leaked}"
        assert not any("authorization" in request for request in neighbour.requests)
        # What it was sent: the console's session id (a browser sends one host's cookies to all its ports).
        cookies = {request.get("cookie", "") for request in neighbour.requests}
        assert cookies == {f"{own_stack.cookie}={session}"}, cookies  # measured: chromium sends it with every request

        # Its page could not frame the console, read its answers, or post an action to it.
        assert neighbour.reports["read"].startswith("refused"), neighbour.reports
        assert neighbour.reports["post"].startswith("refused"), neighbour.reports
        framed = [f for f in page.frames if f != page.main_frame]
        assert framed and all("Batches" not in f.content() for f in framed)
        assert not neighbour.reports["frame"].startswith("READ:Batches"), neighbour.reports

        # The session id, replayed by the neighbour as a script would: ingest publishes nothing for it...
        for headers in ({"authorization": f"Bearer {session}"}, {"cookie": f"{own_stack.cookie}={session}"}):
            answer = httpx.post(f"{own_stack.ingest_url}/batches", json={"tasks": [TASK]}, headers=headers, timeout=10)
            assert answer.status_code == 401, headers
        # ... the console takes it until the user signs out, then never again.
        replay = {"cookie": f"{own_stack.cookie}={session}"}
        assert httpx.get(f"{own_stack.console_url}/api/batches", headers=replay, timeout=10).status_code == 200
        page.goto(f"{own_stack.console_url}/")
        page.get_by_role("button", name="Sign out").click()
        expect(page.locator("h1")).to_have_text("Sign in")
        assert httpx.get(f"{own_stack.console_url}/api/batches", headers=replay, timeout=10).status_code == 401
        # The link was spent by the first sign-in.
        again = context.new_page()
        again.goto(link)
        expect(again.locator(".err")).to_contain_text("used already or has expired")
    finally:
        context.close()
        neighbour.close()


FAKE_BROWSER = """#!/bin/sh
# A browser that records its arguments, then stays running with them on its command line (as a browser does).
printf '%s\\n' "$@" > "$RECORD"
setsid "$PYTHON" -c 'import time; time.sleep(30)' "$@" >/dev/null 2>&1 &
echo $! > "$RECORD.pid"
"""


def test_no_credential_is_on_any_command_line_after_taskfan_console_open(own_stack: OwnStack, tmp_path: Path) -> None:
    fake = tmp_path / "fake-browser"
    fake.write_text(FAKE_BROWSER)
    fake.chmod(0o755)
    record = tmp_path / "argv"
    opened = taskfan("console", "--open", env={**own_stack.env, "BROWSER": str(fake), "RECORD": str(record),
                                                   "PYTHON": sys.executable})
    assert opened.returncode == 0, opened.stderr
    link = opened.stdout.strip()
    pid = int(wait_for(lambda: (record.parent / "argv.pid").exists() and (record.parent / "argv.pid").read_text(),
                       "the fake browser to start", 10))
    try:
        assert record.read_text().split() == [link] and "/login?code=" in link  # the one-time link, nothing else
        secrets = [value.encode() for value in own_stack.credentials()]
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    cmdline = (proc / "cmdline").read_bytes()
                except OSError:
                    continue  # gone meanwhile
                assert not any(secret in cmdline for secret in secrets), f"a credential on pid {proc.name}'s cmdline"
        assert httpx.get(link, follow_redirects=False, timeout=10).status_code == 303  # works once...
        assert httpx.get(link, follow_redirects=False, timeout=10).status_code == 401  # ... and only once
    finally:
        os.kill(pid, signal.SIGTERM)


def test_the_pages_work_under_the_policy_for_the_operator_and_show_a_viewer_no_button(
        own_stack: OwnStack, browser: Browser) -> None:
    batch_id = f"csp-{uuid.uuid4().hex[:8]}"
    tasks = [{**TASK, "task_id": f"t{i}"} for i in range(5)] + [{**TASK, "task_id": "t5-fail-me"}]
    operator = browser.new_context()
    violations: list[str] = []
    try:
        page = operator.new_page()
        page.on("console", lambda message: violations.append(message.text)
                if "Content Security Policy" in message.text or "Refused to" in message.text else None)
        page.goto(taskfan("console", "--role", "act", env=own_stack.env).stdout.strip())
        page.evaluate("document.addEventListener('securitypolicyviolation', e => "
                      "(window.violations = window.violations || []).push(e.violatedDirective))")
        page.evaluate("window.notReloaded = true")
        expect(page.locator("#role")).to_have_text("operator")
        published = httpx.post(f"{own_stack.ingest_url}/batches", json={"batch_id": batch_id, "tasks": tasks},
                               headers=stack_secrets.ingest_headers(own_stack.secrets.ingest_token), timeout=10)
        assert published.status_code == 202, published.text
        row = page.locator(f'tr[data-batch="{batch_id}"]')
        expect(row.locator("[data-percent]")).to_have_attribute("data-percent", "100", timeout=60_000)  # live
        assert page.evaluate("window.notReloaded") is True
        expect(row.locator("svg.bar rect.f")).to_have_count(1)  # the bar, drawn without inline style
        assert page.locator(".bar").first.bounding_box()["width"] > 100  # styled by /static/console.css
        row.locator("a").first.click()
        page.get_by_role("button", name="Re-run the 1 failed task").click()
        page.wait_for_url("**/batches/*.retry-*")  # the script's POST, with its header, under the policy
        expect(page.locator("#state")).to_have_text("failed", timeout=60_000)
        assert page.evaluate("window.violations || []") == [] and violations == []

        viewer = browser.new_context()
        look = viewer.new_page()
        look.goto(taskfan("console", env=own_stack.env).stdout.strip())
        look.goto(f"{own_stack.console_url}/batches/{batch_id}")
        expect(look.locator("#role")).to_have_text("viewer")
        expect(look.locator("#summary")).to_contain_text("6/6")
        expect(look.locator("button[data-action]")).to_have_count(0)
        refused = look.evaluate(f"""fetch('/batches/{batch_id}/rerun', {{method: 'POST', body: '{{}}',
            headers: {{'x-taskfan-console': '1'}}}}).then(r => r.status)""")
        assert refused == 403
        viewer.close()
    finally:
        operator.close()


def test_only_the_console_process_holds_the_viewer_credential(own_stack: OwnStack) -> None:
    stack = Stack(Settings.from_env(own_stack.env), runfile.load(Path(own_stack.env[runfile.RUN_FILE_ENV])))
    state = stack.running()
    assert state is not None
    view_token = own_stack.secrets.console_view_token.encode()
    holders = {p.name for p in state.processes if view_token in Path(f"/proc/{p.pid}/environ").read_bytes()}
    assert holders == {"console"}, holders
