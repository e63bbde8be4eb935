"""The ``taskfan`` command on click: usage errors, exit codes, shell completion through the installed entry point,
the console commands' shared credential choice, and ``batches purge`` answering each id."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from taskfan.cli.batches import purge_batches
from taskfan.cli.common import EXIT_BAD_INPUT, EXIT_REFUSED, EXIT_UNREACHABLE, CliError
from taskfan.cli.console_client import credential
from taskfan.contracts import is_batch_id
from taskfan.settings import Settings

ENTRY_POINT = Path(sys.executable).with_name("taskfan")
# The module (taskfan.cli re-exports its main(), which hides it as an attribute).
cli_main = importlib.import_module("taskfan.cli.main")


def complete(*words: str) -> list[str]:
    """What the real ``taskfan`` answers bash's completion for ``words`` (the last one being typed)."""
    env = {**os.environ, "_TASKFAN_COMPLETE": "bash_complete", "COMP_WORDS": " ".join(words),
           "COMP_CWORD": str(len(words) - 1)}
    done = subprocess.run([ENTRY_POINT], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [line.split(",", 1)[1] for line in done.stdout.splitlines()]


def test_completion_through_the_installed_entry_point_names_commands_and_actions():
    assert complete("taskfan", "bat") == ["batches"]
    assert complete("taskfan", "batches", "") == ["list", "purge", "rerun", "show", "terminate"]
    assert complete("taskfan", "dead-letters", "re") == ["replay"]


def test_the_readmes_eval_line_gives_bash_the_completion():
    # bash runs every install script and the Makefile: a machine without it fails here, never skips.
    assert shutil.which("bash"), "bash is not on PATH"
    script = ('eval "$(taskfan completion bash)"; COMP_WORDS=(taskfan batches p); COMP_CWORD=2; '
              '_taskfan_completion taskfan; echo "${COMPREPLY[@]}"')  # bash calls it with the command's name
    env = {**os.environ, "PATH": f"{ENTRY_POINT.parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.split() == ["purge"], (done.stdout, done.stderr)


@pytest.mark.parametrize("shell,marker", [("bash", "complete -o nosort -F _taskfan_completion taskfan"),
                                          ("zsh", "#compdef taskfan"),
                                          ("fish", "complete --no-files --command taskfan")])
def test_completion_prints_each_shells_script(capsys, shell, marker):
    assert cli_main.main(["completion", shell]) == 0
    assert marker in capsys.readouterr().out


@pytest.mark.parametrize("argv,said", [
    (["batches", "show"], "Missing argument 'BATCH_ID'"),
    (["batches", "purge"], "Missing argument 'BATCH_ID...'"),
    (["batches", "list", "--page", "0"], "--page"),
    (["batches", "-o", "yaml", "list"], "'yaml' is not one of 'table', 'json'"),
    (["dead-letters", "replay", "-1"], "NUMBER"),
    (["completion", "tcsh"], "Invalid value for 'SHELL': 'tcsh' is not one of 'bash', 'zsh', 'fish'"),
    (["stack", "sideways"], "Invalid value for 'ACTION': 'sideways' is not one of"),
    (["no-such-command"], "No such command 'no-such-command'"),
])
def test_bad_arguments_exit_2_with_a_line_saying_what(capsys, argv, said):
    assert cli_main.main(argv) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert said in err and err.startswith("Usage: taskfan"), err


def test_ctrl_c_exits_130(monkeypatch):
    def interrupted(*_: Any) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main, "cmd_status", interrupted)
    assert cli_main.main(["status", "b"]) == 130


def test_looking_takes_the_viewers_credential_acting_the_operators_and_taskfan_token_overrides_both():
    both = Settings(ingest_token="operator", console_view_token="viewer")
    assert (credential(both, acting=False), credential(both, acting=True)) == ("viewer", "operator")
    assert credential(Settings(ingest_token="operator"), acting=False) == "operator"  # no viewer's: the operator's
    given = Settings(ingest_token="operator", console_view_token="viewer", taskfan_token="mine")
    assert (credential(given, acting=False), credential(given, acting=True)) == ("mine", "mine")


class FakeConsole:
    """The console's purge answers: ``done`` purged, ``running`` refused, others unknown or not batch ids (or no
    console at all); an error names the id, cut, as the console's do."""

    def __init__(self, reachable: bool = True) -> None:
        self.asked: list[str] = []
        self.reachable = reachable

    def ask(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        self.asked.append(f"{method} {path}")
        if not self.reachable:
            raise CliError("the console does not answer", EXIT_UNREACHABLE)
        if path == "/batches/done/purge":
            return {"message": "Batch done purged"}
        if path == "/batches/running/purge":
            raise CliError("batch running was not purged: the batch is running (409)", EXIT_REFUSED)
        named = unquote(path.split("/")[2])
        if not is_batch_id(named):
            raise CliError(f"{named[:200]!r} is not a batch id (400)", EXIT_BAD_INPUT)
        raise CliError(f"no batch {named!r} (404)", EXIT_BAD_INPUT)


def test_purge_answers_each_id_and_sends_what_is_not_text_nowhere():
    console = FakeConsole()
    answers = purge_batches(console, ("done", "running", "a||b", "a\udcff", "x" * 10_000, "nobody"))  # type: ignore[arg-type]
    assert [code for _, code in answers] == [0, EXIT_REFUSED, EXIT_BAD_INPUT, EXIT_BAD_INPUT, EXIT_BAD_INPUT,
                                             EXIT_BAD_INPUT]
    # The console judges every id it can be sent; a lone surrogate (a shell's stray byte) cannot be.
    assert console.asked == ["POST /batches/done/purge", "POST /batches/running/purge", "POST /batches/a%7C%7Cb/purge",
                             f"POST /batches/{'x' * 10_000}/purge", "POST /batches/nobody/purge"]
    assert "udcff' is not a batch id" in answers[3][0]["error"]  # the stray byte shown escaped
    assert answers[0][0]["message"] == "Batch done purged" and len(answers[4][0]["batch_id"]) == 200


def test_purge_exits_with_the_worst_code_and_a_line_per_refusal(monkeypatch, capsys):
    from taskfan.cli import console_client

    answered = FakeConsole()
    monkeypatch.setattr(console_client.ConsoleChoice, "console", lambda self, acting: answered)
    assert cli_main.main(["batches", "purge", "done"]) == 0 and "purged" in capsys.readouterr().out
    assert cli_main.main(["batches", "purge", "done", "running"]) == EXIT_REFUSED
    assert cli_main.main(["batches", "purge", "running", "a||b", "done"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.splitlines()
    assert err[-2:] == ["taskfan: batch running was not purged: the batch is running (409)",
                        "taskfan: 'a||b' is not a batch id (400)"]
    answered.reachable = False
    assert cli_main.main(["batches", "-o", "json", "purge", "done", "running"]) == EXIT_UNREACHABLE


def test_show_and_the_actions_refuse_text_that_cannot_be_sent_with_a_line(capsys):
    for argv in (["batches", "show", "a\udcff"], ["batches", "terminate", "\udcff"], ["batches", "rerun", "b\ud800"]):
        assert cli_main.main(argv) == EXIT_BAD_INPUT
        assert "is not a batch id" in capsys.readouterr().err


def test_batches_list_show_and_purge_through_the_console_app(monkeypatch, capsys):
    """Every option decoded into the console's query, against the console app itself (its doors included)."""
    import json

    from taskfan.cli import console_client
    from tests.unit.test_console_doors import HOST, TOKEN, VIEW_TOKEN, new_console
    from tests.unit.test_purge import PurgingWorkflow

    monkeypatch.setattr("tests.unit.test_console_doors.FakeWorkflow", PurgingWorkflow)
    client = new_console()
    monkeypatch.setattr(console_client.httpx, "request", lambda method, url, **kw: client.request(
        method, url.removeprefix(f"http://{HOST}"), headers=kw.get("headers"), json=kw.get("json")))
    monkeypatch.setenv("CONSOLE_URL", f"http://{HOST}")
    monkeypatch.setenv("TASKFAN_TOKEN", VIEW_TOKEN)
    assert cli_main.main(["batches", "-o", "json", "list", "--state", "failed", "--id", "do", "--page", "1"]) == 0
    assert [b["batch_id"] for b in json.loads(capsys.readouterr().out)["batches"]] == ["done"]
    assert cli_main.main(["batches", "show", "done", "--stage", "failed"]) == 0
    out, err = capsys.readouterr()
    assert [line.split()[:2] for line in out.splitlines()[1:]] == [["t1", "failed"], ["t2", "failed"]]
    assert err.startswith("done: failed, 3/3 done (1 completed, 0 rejected, 2 failed)")
    assert cli_main.main(["batches", "purge", "done"]) == EXIT_REFUSED  # the viewer's credential
    monkeypatch.setenv("TASKFAN_TOKEN", TOKEN)
    assert cli_main.main(["batches", "purge", "done", "running"]) == EXIT_REFUSED
    assert "Batch done purged" in capsys.readouterr().out
    assert cli_main.main(["batches", "show", "done"]) == EXIT_BAD_INPUT
