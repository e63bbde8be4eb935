"""The console's two credentials: where they come from (the stack's secrets), who gets them (the console alone has
the viewer's; ingest takes neither the viewer's nor a session id), and how ``taskfan console`` turns one into a
one-time link without putting it in a URL or on a command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from services.console.routes.signin import cookie_name
from services.ingest.api import create_api
from taskfan import runfile, stack_secrets
from taskfan.cli import console as console_cli
from taskfan.cli import local_stack as stack_cli
from taskfan.settings import Settings, SettingsError
from taskfan.stack import Stack
from tests.unit.test_console_doors import HOST, TOKEN, VIEW_TOKEN, new_console
from tests.unit.test_ingest_api import TASK, FakePublisher, FakeRecords


def test_a_stack_has_a_viewer_credential_of_its_own_and_an_older_secrets_file_gets_one(tmp_path):
    created = stack_secrets.ensure(tmp_path)
    assert len(created.console_view_token) >= 40 and created.console_view_token != created.ingest_token
    assert created.as_secret_store()["console-view-token"] == created.console_view_token
    file = stack_secrets.path(tmp_path)
    stored = json.loads(file.read_text())
    del stored["console-view-token"]
    file.write_text(json.dumps(stored))
    again = stack_secrets.ensure(tmp_path)
    assert again.ingest_token == created.ingest_token and len(again.console_view_token) >= 40
    assert stack_secrets.for_clients(Settings(run_dir=str(tmp_path)), runfile.load()).console_view_token == (
        again.console_view_token)


def test_only_the_console_process_gets_the_viewer_credential(tmp_path):
    stack = Stack(Settings(run_dir=str(tmp_path)), runfile.load())
    assert stack.secret_env("console")["CONSOLE_VIEW_TOKEN"] == stack.secrets.console_view_token
    for other in ("ingest", "workflow", "scorer-0", "console-daprd", "redis"):
        assert stack.secrets.console_view_token not in stack.secret_env(other).values(), other
    assert "CONSOLE_VIEW_TOKEN" not in stack_secrets.without_secrets({"CONSOLE_VIEW_TOKEN": "x"})  # not inherited


def test_a_console_session_lasts_eight_hours_unless_set():
    assert Settings.from_env({}).console_session_ttl_s == 8 * 3600
    assert Settings.from_env({"CONSOLE_SESSION_TTL_S": "900"}).console_session_ttl_s == 900
    with pytest.raises(SettingsError):
        Settings.from_env({"CONSOLE_SESSION_TTL_S": "0"})
    assert "console_view_token" not in repr(Settings(console_view_token="x" * 40))


def test_ingest_publishes_for_the_operators_token_only_not_the_viewers_or_a_session():
    publisher = FakePublisher()
    console = new_console()
    session = console.get(console.post("/login/code", headers={"authorization": f"Bearer {TOKEN}"},
                                       json={"role": "act"}).json()["link"], follow_redirects=False).cookies[
        cookie_name(8090)]
    with TestClient(create_api(publisher, FakeRecords(), token=TOKEN, hosts={"testserver"})) as ingest:
        for refused in ({"authorization": f"Bearer {VIEW_TOKEN}"}, {"authorization": f"Bearer {session}"},
                        {"cookie": f"{cookie_name(8090)}={session}"}):
            assert ingest.post("/batches", json={"tasks": [TASK]}, headers=refused).status_code == 401, refused
        assert publisher.published == []
        assert ingest.post("/batches", json={"tasks": [TASK]},
                           headers={"authorization": f"Bearer {TOKEN}"}).status_code == 202


class ConsoleOverHttpx:
    """``httpx.post`` as the CLI calls it, answered by a console app (TestClient); what was sent is kept."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.sent: list[dict[str, Any]] = []

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        self.sent.append({"url": url, **kwargs})
        kwargs.pop("timeout", None)
        return self.client.post(url.removeprefix(f"http://{HOST}"), **kwargs)


@pytest.mark.parametrize("role,credential", [("view", VIEW_TOKEN), ("act", TOKEN)])
def test_taskfan_console_prints_a_one_time_link_asked_for_with_the_credential_in_a_header(
        monkeypatch, capsys, role, credential):
    client = new_console()
    fake = ConsoleOverHttpx(client)
    opened: list[str] = []
    monkeypatch.setattr(console_cli, "settings", lambda: Settings(ingest_token=TOKEN, console_view_token=VIEW_TOKEN))
    monkeypatch.setattr(console_cli, "run_file", lambda: type("RunFile", (), {"console_url": lambda _: f"http://{HOST}"})())
    monkeypatch.setattr(console_cli.httpx, "post", fake.post)
    monkeypatch.setattr(console_cli.webbrowser, "open", opened.append)
    assert console_cli.cmd_console(open_browser=True, role=role) == 0
    link = capsys.readouterr().out.strip()
    assert link.startswith(f"http://{HOST}/login?code=") and opened == [link]  # the browser gets the link only
    assert TOKEN not in link and VIEW_TOKEN not in link
    assert fake.sent[0]["headers"] == {"Authorization": f"Bearer {credential}"}  # the least that does
    assert fake.sent[0]["json"] == {"role": role} and credential not in fake.sent[0]["url"]
    assert client.get(link, follow_redirects=False).status_code == 303
    assert client.get(link, follow_redirects=False).status_code == 401  # once


def test_taskfan_console_says_why_the_console_refused(monkeypatch, capsys):
    fake = ConsoleOverHttpx(new_console())
    monkeypatch.setattr(console_cli, "settings", lambda: Settings(ingest_token="wrong", console_view_token="wrong"))
    monkeypatch.setattr(console_cli, "run_file", lambda: type("RunFile", (), {"console_url": lambda _: f"http://{HOST}"})())
    monkeypatch.setattr(console_cli.httpx, "post", fake.post)
    with pytest.raises(console_cli.CliError, match="refused a sign-in link .401"):
        console_cli.cmd_console(open_browser=False, role="view")


def test_stack_env_prints_both_console_credentials(monkeypatch, capsys, tmp_path):
    from taskfan import runfile
    from taskfan.settings import Settings
    from taskfan.stack import Stack

    stack = Stack(Settings(run_dir=str(tmp_path)), runfile.load(Path(__file__).resolve().parents[2] / "dapr.yaml"))
    secrets = stack.secrets
    monkeypatch.setattr(stack_cli, "local_stack", lambda: stack)
    assert stack_cli.cmd_stack("env") == 0
    printed = capsys.readouterr().out
    assert f"DAPR_TOKEN_WORKFLOW={secrets.sidecar_token('workflow')}" in printed
    assert secrets.dapr_token_key not in printed  # the key the tokens derive from stays in the file
    assert f"INGEST_TOKEN={secrets.ingest_token}" in printed
    assert f"CONSOLE_VIEW_TOKEN={secrets.console_view_token}" in printed
