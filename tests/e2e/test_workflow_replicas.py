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

from taskfan.stack.processes import pid_alive

from .helpers import ingest_auth, lesson_tasks, log_records, outcomes_for, post_batch, stream_events, wait_for

BATCHES, TASKS = 24, 2000


def backlog(port: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return next(float(line.split()[1]) for line in text.splitlines() if line.startswith("taskfan_backlog_tasks "))


def test_three_workflow_processes_share_a_burst_and_one_killed_loses_nothing(stack, settings, redis_client):
    stack.scale(workflows=3, progress=lambda line: print(line, flush=True))
    try:
        token = uuid.uuid4().hex[:6]
        ids = [f"wf3-{token}-{i}" for i in range(BATCHES)]
        for batch_id in ids:
            answer = post_batch(settings, {"batch_id": batch_id, "tasks": lesson_tasks(batch_id, TASKS)})
            assert answer.status_code == 202, answer.text
        # Whichever process the console's call reaches, it answers for every chunk of a running batch (their
        # stages are in the state store): the tasks still waiting only ever go down from one answer to the next.
        api = f"{stack.console_url}/api/batches"

        def running() -> str | None:
            listed = httpx.get(api, headers=ingest_auth(settings), timeout=10).json()["batches"]
            return next((b["batch_id"] for b in listed if b["state"] == "running" and b["batch_id"] in ids), None)

        watched = wait_for(running, "a batch of the burst running", 60)
        waiting = []
        for _ in range(5):
            answer = httpx.get(f"{api}/{watched}", params={"stage": "waiting"}, headers=ingest_auth(settings),
                               timeout=10).json()
            waiting.append(answer["tasks_matching"] if answer["batch"]["state"] == "running" else 0)
            time.sleep(0.2)
        assert waiting == sorted(waiting, reverse=True) and waiting[-1] < TASKS, waiting
        assert not all(outcomes_for(redis_client, b) for b in ids), "the burst ended before the kill: nothing tested"
        state = stack.running()
        killed = [state.find("workflow-2"), state.find("workflow-2-daprd")]
        for process in killed:
            os.killpg(process.pid, signal.SIGKILL)
        wait_for(lambda: not any(pid_alive(p.pid) for p in killed), "workflow-2 to be gone", 10)
        wait_for(lambda: {e["data"]["batch_id"] for e in stream_events(redis_client, "outcomes")} >= set(ids),
                 "an outcome for every batch of the burst", 300)
        for batch_id in ids:
            outcomes = outcomes_for(redis_client, batch_id)
            assert len(outcomes) == 1, (batch_id, len(outcomes))
            assert (outcomes[0]["completed"], outcomes[0]["failed"]) == (TASKS, 0), (batch_id, outcomes[0])
        # Every process ran some of the burst (Dapr placed the batches' workflows and chunks over them) ...
        for name in ("workflow", "workflow-1", "workflow-2"):
            ran = {r.get("batch_id") for r in log_records(stack, name)} & set(ids)
            assert ran, f"{name} ran none of the burst"
        # ... and the two left report the same backlog, nothing once every outcome is out.
        ports = [stack.workflows(2)[i].env["METRICS_PORT"] for i in range(2)]
        wait_for(lambda: [backlog(port) for port in ports] == [0, 0], "no backlog on either process", 60)
    finally:
        stack.scale(workflows=1, progress=lambda line: print(line, flush=True))
    assert [p.name for p in stack.running().processes if p.name.startswith("workflow")] == [
        "workflow", "workflow-daprd"]
