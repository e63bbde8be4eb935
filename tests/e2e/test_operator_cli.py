"""`taskfan batches` as an operator runs it: through the console's JSON API, with a credential in a header."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from taskfan import stack_secrets

from .conftest import E2E_SCORERS
from .helpers import REPO_ROOT, frozen, lesson_tasks, post_batch, wait_for, wait_outcome

pytestmark = pytest.mark.e2e


def batches(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "taskfan.cli", "batches", *args], capture_output=True, text=True,
                          timeout=60, cwd=REPO_ROOT, env={**os.environ, **(env or {})})


def test_an_operator_lists_shows_reruns_and_terminates_batches_from_the_cli(stack, settings, redis_client, batch_id):
    post_batch(settings, {"batch_id": batch_id, "tasks": lesson_tasks(batch_id, 3)})
    wait_outcome(redis_client, batch_id)
    listed = wait_for(lambda: (answer := batches("-o", "json", "list", "--state", "finished")).returncode == 0 and any(
        b["batch_id"] == batch_id for b in json.loads(answer.stdout)["batches"]) and answer, "the batch listed", 60)
    assert json.loads(listed.stdout)["page"] == 1
    table = batches("list")
    assert table.returncode == 0 and table.stdout.splitlines()[0].split()[:2] == ["BATCH_ID", "STATE"]
    assert any(line.split()[:2] == [batch_id, "finished"] for line in table.stdout.splitlines()), table.stdout
    shown = json.loads(batches("-o", "json", "show", batch_id).stdout)
    assert (shown["batch"]["state"], len(shown["tasks"])) == ("finished", 3)
    assert batches("show", batch_id).stdout.count("done") == 3

    rerun = batches("rerun", batch_id)
    assert rerun.returncode == 0 and "rerun" in rerun.stdout, rerun
    refused = batches("terminate", batch_id)  # finished: nothing to terminate
    assert refused.returncode == 1 and "not terminated" in refused.stderr, refused

    running = f"{batch_id}-big"
    # Hung scorers keep it running while the CLI terminates it (three scorers finish 4,000 tasks in seconds).
    with frozen(stack, [f"scorer-{i}" for i in range(E2E_SCORERS)]):
        post_batch(settings, {"batch_id": running, "tasks": lesson_tasks(running, 4000)})
        viewer = stack_secrets.load(stack.run_dir).console_view_token
        wait_for(lambda: batches("show", running).stdout.startswith("TASK_ID") or None, "the big batch known", 60)
        as_viewer = batches("terminate", running, env={"TASKFAN_TOKEN": viewer})
        assert as_viewer.returncode == 1 and "act" in as_viewer.stderr, as_viewer
        terminated = wait_for(lambda: (t := batches("terminate", running)).returncode == 0 and t, "terminate", 60)
        assert "terminated" in terminated.stdout
        outcome = wait_outcome(redis_client, running, timeout=180)
    assert outcome["failed"] > 0 and outcome["completed"] + outcome["rejected"] + outcome["failed"] == 4000


def test_the_cli_says_what_went_wrong_with_its_exit_code(stack):
    unknown = batches("show", "no-such-batch")
    assert unknown.returncode == 2 and "no batch" in unknown.stderr, unknown
    for hostile in ("a::b", "a||b", "../../api/batches", "x" * 300):
        answer = batches("show", hostile)
        assert answer.returncode == 2 and answer.stderr.startswith("taskfan: "), (hostile, answer)
    assert batches("list", "--page", "0").returncode == 2
    assert batches("--console", "http://127.0.0.1:1", "list").returncode == 3
    wrong = batches("list", env={"TASKFAN_TOKEN": "not-a-credential"})
    assert wrong.returncode == 1 and "401" in wrong.stderr, wrong
    version = subprocess.run([sys.executable, "-m", "taskfan.cli", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and "Dapr 1.18.1" in version.stdout
