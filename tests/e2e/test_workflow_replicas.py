"""The workflow app as several processes (`make up WORKFLOWS=N`, `taskfan stack scale --workflows N`): Dapr spreads
the batches over them; one of them SIGKILLed (app and sidecar) mid-burst loses nothing. Each batch its one
outcome, every task in it; the backlog every process reports is the same. The session's stack goes back to one
workflow process afterwards."""

from __future__ import annotations

import os
import signal
import time
import uuid

import httpx

from services.workflow.processes import STALE_S
from taskfan.stack.processes import pid_alive

from .helpers import frozen, ingest_auth, lesson_tasks, log_records, outcomes_for, post_batch, stream_events, wait_for

BATCHES, TASKS = 15, 1500


def backlog(port: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return next(float(line.split()[1]) for line in text.splitlines() if line.startswith("taskfan_backlog_tasks "))


def test_three_workflow_processes_share_a_burst_and_one_killed_loses_nothing(stack, settings, redis_client):
    stack.scale_app("workflow", 3, progress=lambda line: print(line, flush=True))
    try:
        wait_for(lambda: workflow_processes(stack, settings) == {"0", "1", "2"},
                 "the console to list the three workflow processes", 15)
        console_answers_for_every_chunk(stack, settings, redis_client)
        token = uuid.uuid4().hex[:6]
        ids = [f"wf3-{token}-{i}" for i in range(BATCHES)]

        def publish(batch_ids: list[str]) -> None:
            for batch_id in batch_ids:
                answer = post_batch(settings, {"batch_id": batch_id, "tasks": lesson_tasks(batch_id, TASKS)})
                assert answer.status_code == 202, answer.text

        # Killed once the first third of the burst runs (workflow-2 ran some of it), the rest published after.
        publish(ids[:BATCHES // 3])
        wait_for(lambda: {r.get("batch_id") for r in log_records(stack, "workflow-2")} & set(ids),
                 "workflow-2 to run some of the burst", 60)
        assert not all(outcomes_for(redis_client, b) for b in ids[:BATCHES // 3]), "nothing was left to lose"
        state = stack.running()
        killed = [state.find("workflow-2"), state.find("workflow-2-daprd")]
        for process in killed:
            os.killpg(process.pid, signal.SIGKILL)
        wait_for(lambda: not any(pid_alive(p.pid) for p in killed), "workflow-2 to be gone", 10)
        publish(ids[BATCHES // 3:])
        wait_for(lambda: workflow_processes(stack, settings) == {"0", "1"},
                 "the console to drop the killed process once it is silent", STALE_S + 15)
        wait_for(lambda: {e["data"]["batch_id"] for e in stream_events(redis_client, "outcomes")} >= set(ids),
                 "an outcome for every batch of the burst", 300)
        for batch_id in ids:
            outcomes = outcomes_for(redis_client, batch_id)
            assert len(outcomes) == 1, (batch_id, len(outcomes))
            assert (outcomes[0]["completed"], outcomes[0]["failed"]) == (TASKS, 0), (batch_id, outcomes[0])
        # Every process ran some of the burst (Dapr placed the batches' workflows and chunks over them) ...
        for name in ("workflow", "workflow-1"):
            ran = {r.get("batch_id") for r in log_records(stack, name)} & set(ids)
            assert ran, f"{name} ran none of the burst"
        # ... and the two left report the same backlog, nothing once every outcome is out.
        ports = [instance.env["METRICS_PORT"] for instance in stack.workflows(stack.running())[:2]]
        wait_for(lambda: [backlog(port) for port in ports] == [0, 0], "no backlog on either process", 60)
    finally:
        stack.scale_app("workflow", 1, progress=lambda line: print(line, flush=True))
    assert [p.name for p in stack.running().processes if p.name.startswith("workflow")] == [
        "workflow", "workflow-daprd"]


def in_steps(stack, settings) -> dict[str, int]:
    return httpx.get(f"{stack.console_url}/api/scorers", headers=ingest_auth(settings), timeout=10).json()["stages"]


def workflow_processes(stack, settings) -> set[str]:
    answer = httpx.get(f"{stack.console_url}/api/replicas", headers=ingest_auth(settings), timeout=10).json()
    return {process["process"] for process in answer["workflow_processes"]}


def console_answers_for_every_chunk(stack, settings, redis_client) -> None:
    """Whichever workflow process the console's call reaches, it answers for every chunk of a running batch,
    wherever the chunk ran (their stages are in the state store). The scorers are held (SIGSTOP) while the
    batch's first chunks wait at the score step, so that every answer must be the same."""
    batch_id = f"wf3-view-{uuid.uuid4().hex[:6]}"
    api = f"{stack.console_url}/api/batches/{batch_id}"

    def at(stage: str) -> int:
        answer = httpx.get(api, params={"stage": stage}, headers=ingest_auth(settings), timeout=10)
        return answer.json()["tasks_matching"] if answer.status_code == 200 else -1

    scorers = [p.name for p in stack.running().processes if p.name.startswith("scorer-") and "daprd" not in p.name]
    with frozen(stack, scorers):
        assert post_batch(settings, {"batch_id": batch_id, "tasks": lesson_tasks(batch_id, 1000)}).status_code == 202
        # Four chunks of 100 in flight (MAX_IN_FLIGHT), each run by one of the three processes, held at score.
        wait_for(lambda: at("score") == 400, "four chunks' tasks at the score step", 10)
        answers = [(at("score"), at("waiting")) for _ in range(6)]
        # The tasks in each step, as the whole app counts them: every process's report added up (each process
        # counts only the chunks it runs), whichever process the console's watcher asked.
        wait_for(lambda: in_steps(stack, settings).get("score") == 400, "the console to count 400 tasks at score", 15)
        counted = []
        for _ in range(4):
            counted.append(in_steps(stack, settings).get("score"))
            time.sleep(1.1)  # the console asks the workflow app every second
    assert answers == [(400, 600)] * 6, answers
    assert counted == [400] * 4, counted
    outcome = wait_for(lambda: outcomes_for(redis_client, batch_id), "the held batch's outcome", 120)[0]
    assert (outcome["completed"], outcome["failed"]) == (1000, 0)
