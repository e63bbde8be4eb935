"""`taskfan batches` as an operator runs it: through the console's JSON API, with a credential in a header."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest

from taskfan import stack_secrets
from taskfan.stack_secrets import ingest_headers

from .conftest import E2E_SCORERS
from .helpers import REPO_ROOT, frozen, lesson_tasks, outcomes_for, post_batch, wait_for, wait_outcome

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


def keys_naming(redis_client, batch_id: str) -> list[bytes]:
    """Every Redis key with the batch id in it: the workflow's state, the records, the console's details."""
    return list(redis_client.scan_iter(f"*{batch_id}*", count=1000))


def test_an_operator_purges_a_finished_batch_and_no_key_of_it_is_left(stack, settings, redis_client, batch_id):
    post_batch(settings, {"batch_id": batch_id, "tasks": lesson_tasks(batch_id, 3)})
    wait_outcome(redis_client, batch_id)
    wait_for(lambda: batches("show", batch_id).returncode == 0, "the console to know the batch", 60)
    assert keys_naming(redis_client, batch_id)  # its records are there to purge (and the scan finds them)
    viewer = stack_secrets.load(stack.run_dir).console_view_token
    as_viewer = batches("purge", batch_id, env={"TASKFAN_TOKEN": viewer})
    assert as_viewer.returncode == 1 and "act" in as_viewer.stderr, as_viewer
    assert batches("show", batch_id).returncode == 0  # the viewer purged nothing

    purged = batches("purge", batch_id)
    assert purged.returncode == 0 and f"Batch {batch_id} purged" in purged.stdout, purged
    shown = batches("show", batch_id)
    assert shown.returncode == 2 and "no batch" in shown.stderr, shown
    # The console deletes its details' keys at its next flush (every 2 s).
    wait_for(lambda: not keys_naming(redis_client, batch_id), "no key naming the purged batch", 30)
    again = batches("purge", batch_id)
    assert again.returncode == 2 and "no batch" in again.stderr, again


def test_purging_a_running_batch_is_refused_and_it_still_completes_once(stack, settings, redis_client, batch_id):
    running = f"{batch_id}-running"
    # Hung scorers keep it running while the CLI tries to purge it.
    with frozen(stack, [f"scorer-{i}" for i in range(E2E_SCORERS)]):
        post_batch(settings, {"batch_id": running, "tasks": lesson_tasks(running, 50)})
        wait_for(lambda: batches("show", running).stdout.startswith("TASK_ID"), "the running batch known", 60)
        refused = batches("purge", running)
        assert refused.returncode == 1 and "not purged" in refused.stderr, refused
        both = batches("purge", running, "no-such-batch")  # each answered; the worst code
        assert both.returncode == 2 and len(both.stderr.strip().splitlines()) == 2, both
    outcome = wait_outcome(redis_client, running, timeout=180)
    assert outcome["completed"] + outcome["rejected"] + outcome["failed"] == 50
    assert len(outcomes_for(redis_client, running)) == 1


def test_hostile_ids_are_refused_with_a_line_and_the_pipeline_keeps_running(stack, settings, redis_client,
                                                                            batch_id):
    for hostile in ("a||b", "a::b", "a\udcff", "x" * 10_000):
        answer = batches("purge", hostile)
        assert answer.returncode == 2, (hostile[:20], answer)
        line = answer.stderr.strip()
        assert line.startswith("taskfan: ") and "\n" not in line and len(line) < 600, (hostile[:20], line[:200])
    # Past the CLI, straight at the console with the operator's credential: refused, never a Dapr name.
    console = stack.run_file.console_url()
    operator = ingest_headers(settings.ingest_token)
    for path in ("a%7C%7Cb", "a%3A%3Ab", "a%ED%A0%80", "x" * 10_000):
        said = httpx.post(f"{console}/batches/{path}/purge", headers=operator, timeout=30)
        assert said.status_code in (400, 404) and "batch" in said.json()["error"], (path[:20], said.text[:200])
    assert httpx.post(f"{console}/batches/..%2F..%2Fapi/purge", headers=operator, timeout=30).status_code == 404
    post_batch(settings, {"batch_id": batch_id, "tasks": lesson_tasks(batch_id, 3)})
    assert wait_outcome(redis_client, batch_id)["completed"] == 3
