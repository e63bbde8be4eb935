"""Runs after `make down` (file order): `taskfan stack scale` adds and removes scorers mid-batch.

A stack of its own, with slow scorers (20 ms a task, 4 at a time per replica: a 100-task step call takes
0.5 s on one replica) and batches of many calls, so that a batch is still running when the replicas
change, and its own Redis port and run directory. Scaling is done with the
CLI, as a user does it. Nothing may fail because of it: not a task, and not one step call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from bench import workload
from taskfan import runfile, stack_secrets
from taskfan.settings import Settings, patched_environ
from taskfan.stack import Stack, StackState, port_open

from .helpers import (
    REPO_ROOT,
    cli,
    log_records,
    outcomes_for,
    post_batch,
    scored_task_ids,
    wait_for,
    wait_outcome,
)

pytestmark = pytest.mark.e2e

SLOW_SCORERS = {"SCORE_DELAY_MS": "20", "SCORER_CONCURRENCY": "4", "REDIS_PORT": "6392", "STEP_TIMEOUT_MS": "30000"}


@pytest.fixture(scope="module")
def slow_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # In this process's environment for the module: the CLI and the replicas `scale` starts inherit it.
    with patched_environ({**SLOW_SCORERS, "RUN_DIR": tmp_path_factory.mktemp("scale-stack")}):
        stack = Stack(Settings.from_env(), runfile.load(REPO_ROOT / "dapr.yaml"))
        try:
            stack.up(1, progress=lambda line: print(line, flush=True))
            yield stack
        finally:
            stack.down(progress=lambda _: None)


@pytest.fixture(scope="module")
def client_settings(slow_stack: Stack) -> Settings:
    return stack_secrets.for_clients(dataclasses.replace(slow_stack.settings, ingest_url=slow_stack.ingest_url),
                                     slow_stack.run_file)


@pytest.fixture(scope="module")
def outcomes(client_settings: Settings) -> redis.Redis:
    return redis.Redis(port=client_settings.redis_port, password=client_settings.redis_password)


def scored(stack: Stack, replica: int, prefix: str) -> int:
    """Tasks of one batch that one scorer replica scored, from its own log."""
    return sum(1 for task_id in scored_task_ids(stack, replica) if str(task_id).startswith(prefix))


def failed_step_calls(stack: Stack) -> list[dict[str, object]]:
    return [r for r in log_records(stack, "workflow") if r.get("msg") == "step call failed"]


def backlog(stack: Stack) -> float:
    """``taskfan_backlog_tasks`` from the workflow app's Prometheus endpoint, as a scraper reads it."""
    port = stack.run_file.env_for(stack.run_file.app("workflow"))["METRICS_PORT"]
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return next(float(line.split()[1]) for line in text.splitlines() if line.startswith("taskfan_backlog_tasks "))


def publish(settings: Settings, batch_id: str, tasks: int) -> None:
    response = post_batch(settings, {"batch_id": batch_id, "tasks": workload.tasks(tasks, batch_id)})
    assert response.status_code == 202, response.text


def scale(replicas: int) -> None:
    done = cli("stack", "scale", "--scorers", str(replicas), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{replicas} scorer(s) running" in done.stdout


def test_scorers_added_mid_batch_share_its_work(slow_stack, client_settings, outcomes):
    batch_id = "scale-up"
    publish(client_settings, batch_id, 3000)
    wait_for(lambda: scored(slow_stack, 0, batch_id) >= 200, "the first replica to be busy with the batch")

    # The backlog the scorers' autoscaler reads: the batch's tasks not finished yet.
    assert 0 < wait_for(lambda: backlog(slow_stack), "a backlog on /metrics") <= 3000
    scale(3)
    assert outcomes_for(outcomes, batch_id) == [], "the batch ended before the scorers were added"

    outcome = wait_outcome(outcomes, batch_id, timeout=300)
    wait_for(lambda: backlog(slow_stack) == 0, "the backlog to drop to 0 once the batch is done", timeout=30)
    assert (outcome["total"], outcome["completed"], outcome["failed"]) == (3000, 3000, 0)
    shares = [scored(slow_stack, replica, batch_id) for replica in range(3)]
    assert all(share > 0 for share in shares[1:]), f"the added replicas took no work: {shares}"
    assert sum(shares) >= 3000  # a task repeated after a retry would count twice; none lost
    assert failed_step_calls(slow_stack) == []


def test_scorers_removed_mid_batch_finish_their_calls_and_nothing_fails(slow_stack, client_settings, outcomes):
    state = StackState.load(slow_stack.state_path)
    assert state is not None and state.scorers == 3
    removed = [p for p in state.processes if p.name.startswith(("scorer-1", "scorer-2"))]
    batch_id = "scale-down"
    publish(client_settings, batch_id, 4000)
    wait_for(lambda: scored(slow_stack, 2, batch_id) >= 100, "the last replica to be busy with the batch")

    scale(1)
    assert outcomes_for(outcomes, batch_id) == [], "the batch ended before the scorers were removed"

    assert [p.name for p in removed if p.alive()] == []
    assert [port for p in removed for port in p.ports if port_open(port)] == []
    outcome = wait_outcome(outcomes, batch_id, timeout=300)
    assert (outcome["total"], outcome["completed"], outcome["failed"]) == (4000, 4000, 0)
    assert scored(slow_stack, 0, batch_id) > 0
    assert failed_step_calls(slow_stack) == []
    done = cli("stack", "status")
    assert "scorer-0" in done.stdout and "scorer-1" not in done.stdout and "scorer-2" not in done.stdout


def test_scale_refuses_what_it_cannot_do(slow_stack):
    for replicas, words in (("0", "between 1 and"), ("17", "between 1 and")):
        done = cli("stack", "scale", "--scorers", replicas)
        assert done.returncode == 1 and words in done.stderr, done.stderr
    done = cli("stack", "scale")
    assert done.returncode == 2 and "--scorers" in done.stderr


def test_the_stack_down_after_scaling_stops_every_replica(slow_stack):
    scale(2)
    state = StackState.load(slow_stack.state_path)
    assert state is not None and [p.name for p in state.processes if p.name.startswith("scorer-")] == [
        "scorer-0", "scorer-0-daprd", "scorer-1", "scorer-1-daprd"]
    assert Path(slow_stack.logs_dir, "scorer-1.log").exists()
