"""The pipeline on the real stack, driven the ways the README documents.

Outcomes and dead letters are read straight from the Redis streams Dapr writes, with a raw Redis
client: what a user's own tooling would see.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from taskfan.contracts import TASK_BATCH_EVENT_TYPE, Outcome
from taskfan.stack import restart

from .helpers import (
    REPO_ROOT,
    dapr_auth,
    dead_letters,
    granted_sidecar,
    ingest_auth,
    lesson_tasks,
    log_records,
    outcomes_for,
    post_batch,
    scored_task_ids,
    wait_for,
    wait_outcome,
)

pytestmark = pytest.mark.e2e

LESSON_TASK = {"task_id": "t-1", "title": "Urgent: fix login API", "description": "The login api returns 500 errors"}


def cloudevent(batch_id: str, tasks: list[dict]) -> dict:
    return {
        "specversion": "1.0", "type": TASK_BATCH_EVENT_TYPE, "source": "e2e-test",
        "id": str(uuid.uuid4()), "datacontenttype": "application/json",
        "data": {"batch_id": batch_id, "tasks": tasks},
    }


def test_known_batch_gives_the_exact_outcome(settings, redis_client, batch_id):
    tasks = [
        LESSON_TASK,
        {"task_id": "t-2", "title": "Fix", "description": "short"},
        {"task_id": "t-3", "title": "Update docs", "description": "Refresh the getting-started guide"},
    ]
    response = post_batch(settings, {"batch_id": batch_id, "tasks": tasks})
    assert response.status_code == 202, response.text
    assert response.json() == {"batch_id": batch_id, "tasks": 3}

    outcome = wait_outcome(redis_client, batch_id)
    Outcome.model_validate(outcome)
    assert outcome["results"] == [
        {"task_id": "t-1", "status": "completed", "score": 85, "tags": ["high-priority", "backend"],
         "issues": [], "error": None},
        {"task_id": "t-2", "status": "rejected", "score": 0, "tags": [],
         "issues": ["Title too short (min 5 characters)", "Description too short (min 10 characters)"],
         "error": None},
        {"task_id": "t-3", "status": "completed", "score": 50, "tags": [], "issues": [], "error": None},
    ]
    assert (outcome["total"], outcome["completed"], outcome["rejected"], outcome["failed"]) == (3, 2, 1, 0)
    assert outcome["average_score"] == 67.5
    assert outcome["started_at"] <= outcome["finished_at"]


def test_outcome_is_a_cloudevent(settings, redis_client, batch_id):
    post_batch(settings, {"batch_id": batch_id, "tasks": [LESSON_TASK]})
    wait_outcome(redis_client, batch_id)
    event = next(json.loads(f[b"data"]) for _, f in redis_client.xrange("outcomes")
                 if json.loads(f[b"data"])["data"]["batch_id"] == batch_id)
    assert event["specversion"] == "1.0"
    assert event["type"] == "io.taskfan.batch-outcome.v1"
    assert event["datacontenttype"] == "application/json"
    assert event["id"] == f"outcome:{batch_id}"


def test_partial_failure_still_completes_the_batch(settings, redis_client, batch_id):
    tasks = [LESSON_TASK, {**LESSON_TASK, "task_id": "t-2-fail-me"}]
    post_batch(settings, {"batch_id": batch_id, "tasks": tasks})
    outcome = wait_outcome(redis_client, batch_id)
    assert (outcome["completed"], outcome["failed"]) == (1, 1)
    failed = outcome["results"][1]
    assert failed["status"] == "failed"
    assert failed["score"] is None
    assert failed["tags"] == ["high-priority", "backend"]
    assert failed["error"].startswith("score: ") and "scoring failed" in failed["error"]
    assert outcome["average_score"] == 85


def test_duplicate_batch_gives_one_workflow_and_one_outcome(stack, settings, redis_client, batch_id):
    body = {"batch_id": batch_id, "tasks": [LESSON_TASK]}
    post_batch(settings, body)
    wait_outcome(redis_client, batch_id)
    assert post_batch(settings, body).status_code == 202  # ingest accepts; the workflow ignores it
    wait_for(lambda: any(r.get("msg") == "duplicate batch ignored" and r.get("batch_id") == batch_id
                         for r in log_records(stack, "workflow")), "the duplicate to be ignored")
    assert len(outcomes_for(redis_client, batch_id)) == 1


def test_publish_through_the_dapr_http_api(stack, settings, redis_client, batch_id):
    # Any Dapr client can publish: here Dapr's own HTTP API on the ingest sidecar, plain JSON data.
    url = f"{stack.run_file.dapr_http_url('ingest')}/v1.0/publish/pubsub/tasks"
    response = httpx.post(url, json={"batch_id": batch_id, "tasks": [LESSON_TASK]},
                          headers=dapr_auth(settings, "ingest"))
    assert response.status_code == 204, response.text
    assert wait_outcome(redis_client, batch_id)["completed"] == 1


def test_publish_a_raw_cloudevent_on_the_redis_stream(redis_client, batch_id):
    redis_client.xadd("tasks", {"data": json.dumps(cloudevent(batch_id, [LESSON_TASK]))})
    assert wait_outcome(redis_client, batch_id)["results"][0]["score"] == 85


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("this is not json", "not valid JSON"),
        (json.dumps({"batch_id": "x", "tasks": []}), "not a CloudEvent"),
        ("CE_EMPTY", "tasks"),
    ],
)
def test_malformed_event_goes_to_dead_letter_and_next_batch_completes(redis_client, batch_id, raw, reason):
    marker = str(uuid.uuid4())
    if raw == "CE_EMPTY":
        event = cloudevent(f"{batch_id}-bad", [])
        event["id"] = marker
        raw = json.dumps(event)
    else:
        raw = raw + " " * 1 + marker if raw.startswith("this") else json.dumps({**json.loads(raw), "m": marker})
    redis_client.xadd("tasks", {"data": raw})
    letter = wait_for(lambda: [d for d in dead_letters(redis_client) if marker in json.dumps(d)],
                      "the dead letter")[0]
    assert reason in letter["reason"]
    assert letter["received_at"]

    redis_client.xadd("tasks", {"data": json.dumps(cloudevent(batch_id, [LESSON_TASK]))})
    assert wait_outcome(redis_client, batch_id)["completed"] == 1


def test_three_scorers_share_the_load(stack, settings, redis_client, batch_id):
    # This stack's model is fast, so each chunk is scored in one call (services/workflow/scoring.py) and
    # the calls spread over the replicas: 30 batches, 30 calls, each replica takes some. (Slow tasks spread
    # one by one: tests/e2e/test_zzx_scale.py.)
    batches = [[{**LESSON_TASK, "task_id": f"{batch_id}-{b}-{i}"} for i in range(10)] for b in range(30)]
    for b, tasks in enumerate(batches):
        post_batch(settings, {"batch_id": f"{batch_id}-{b}", "tasks": tasks})
    for b in range(len(batches)):
        assert wait_outcome(redis_client, f"{batch_id}-{b}")["completed"] == 10
    ids = {t["task_id"] for tasks in batches for t in tasks}
    per_replica = {
        replica: sum(1 for task_id in scored_task_ids(stack, replica) if task_id in ids)
        for replica in range(3)
    }
    assert sum(per_replica.values()) == 300
    assert all(count > 0 for count in per_replica.values()), per_replica


def test_cli_publish_wait_and_status(batch_id, tmp_path):
    path = tmp_path / "batch.json"
    path.write_text(json.dumps({"tasks": [LESSON_TASK]}))
    done = subprocess.run([sys.executable, "-m", "taskfan.cli", "publish", str(path), "--batch-id", batch_id,
                           "--wait", "--timeout", "120"], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["average_score"] == 85
    status = subprocess.run([sys.executable, "-m", "taskfan.cli", "status", batch_id],
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    summary = json.loads(status.stdout)
    assert summary["state"] == "COMPLETED"
    assert (summary["done"], summary["total"], summary["completed"]) == (1, 1, 1)


WATCHED = 10_000


def test_status_watch_shows_a_live_bar_on_a_terminal_and_plain_lines_when_piped(settings, batch_id):
    # The watcher starts first (it waits for the batch to appear), then a batch of 10,000 tasks is published:
    # several seconds of RUNNING for the 0.25-s polls to see (1,500 tasks took 0.44 s once step calls had no
    # Dapr timeout, and the watcher saw no RUNNING at all).
    def watch(batch: str, stderr: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "taskfan.cli", "status", batch, "--watch", "--timeout", "300"],
                                stdout=subprocess.PIPE, stderr=stderr, cwd=REPO_ROOT)

    def publish(batch: str) -> None:
        assert post_batch(settings, {"batch_id": batch, "tasks": lesson_tasks(batch, WATCHED)}).status_code == 202

    piped_batch = f"{batch_id}-pipe"
    with watch(piped_batch, subprocess.PIPE) as piped:
        first = piped.stderr.readline().decode()
        assert first.startswith("UNKNOWN: 0/? tasks"), first  # polling for a batch not published yet
        publish(piped_batch)
        out, err = piped.communicate(timeout=300)
    lines = [first.rstrip("\n"), *err.decode().splitlines()]
    assert piped.returncode == 0, lines
    assert not any("\r" in line or "\x1b" in line for line in lines)
    assert any(line.startswith("RUNNING: ") for line in lines), lines
    assert lines[-1] == f"COMPLETED: {WATCHED}/{WATCHED} tasks  {WATCHED} completed", lines
    assert json.loads(out)["completed"] == WATCHED

    tty_batch = f"{batch_id}-tty"
    primary, secondary = pty.openpty()  # a terminal of its own, as a user's shell gives it
    with watch(tty_batch, secondary) as on_terminal:
        os.close(secondary)
        screen = os.read(primary, 4096)
        publish(tty_batch)
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # the watcher exited and closed the terminal
                break
            if not chunk:
                break
            screen += chunk
        assert on_terminal.wait(timeout=30) == 0
    os.close(primary)
    frames = screen.decode().split("\r\x1b[2K")[1:]
    running = [f for f in frames if "RUNNING:" in f]
    bar = re.compile(r"\[[#.]{30}\] +\d+%  RUNNING: \d+/" + str(WATCHED) + " tasks")
    assert running and all(bar.match(f) for f in running), frames
    assert any("tasks/s" in f and " left" in f for f in running), frames
    assert frames[-1].strip().startswith("[" + "#" * 30 + f"] 100%  COMPLETED: {WATCHED}/{WATCHED} tasks"), frames


def test_status_through_the_dapr_workflow_api(stack, settings, redis_client, batch_id):
    post_batch(settings, {"batch_id": batch_id, "tasks": [LESSON_TASK]})
    wait_outcome(redis_client, batch_id)
    state = httpx.get(f"{stack.run_file.dapr_http_url('workflow')}/v1.0/workflows/dapr/{batch_id}",
                      headers=dapr_auth(settings, "workflow")).json()
    assert state["runtimeStatus"] == "COMPLETED"


def test_cli_follow_prints_outcomes_as_they_arrive(settings, batch_id):
    follower = subprocess.Popen(
        [sys.executable, "-m", "taskfan.cli", "outcomes", "--follow", "--group", "e2e-follower",
         "--batch", batch_id], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The subscription is live once the follower says so on stderr.
        line = follower.stderr.readline()
        assert "following" in line, line + follower.stderr.read()
        post_batch(settings, {"batch_id": batch_id, "tasks": [LESSON_TASK]})
        out, err = follower.communicate(timeout=120)
    finally:
        follower.kill()
    assert follower.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1])["batch_id"] == batch_id


def test_ingest_refuses_bad_batches_with_reasons(settings):
    url = f"{settings.ingest_url}/batches"
    auth = ingest_auth(settings)
    bad = httpx.post(url, content=b"{oops", headers={"content-type": "application/json", **auth})
    assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]
    empty = httpx.post(url, json={"tasks": []}, headers=auth)
    assert empty.status_code == 422 and "tasks" in empty.json()["error"]
    dup = httpx.post(url, json={"tasks": [LESSON_TASK, LESSON_TASK]}, headers=auth)
    assert dup.status_code == 422 and "unique" in dup.json()["error"]


def test_the_readme_example_subscriber_receives_outcomes(stack, settings, batch_id):
    # The README's own sidecar for examples/subscriber.py, with its grant, here on free ports.
    with granted_sidecar(stack, "e2e-subscriber") as (http_port, grpc_port, grant_env):
        subscriber = subprocess.Popen([sys.executable, "examples/subscriber.py"], cwd=stack.root,
                                      env={**grant_env, "SIDECAR": f"127.0.0.1:{grpc_port}",
                                           "DAPR_HTTP_PORT": str(http_port)},
                                      text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            read_the_batch(subscriber, settings, batch_id)
        finally:
            subscriber.kill()


def read_the_batch(subscriber: subprocess.Popen[str], settings, batch_id: str) -> None:
    """Publish a batch and wait for the subscriber to print it."""
    post_batch(settings, {"batch_id": batch_id, "tasks": [LESSON_TASK]})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([subscriber.stdout], [], [], 1)
        line = subscriber.stdout.readline() if ready else ""
        if line.startswith(batch_id):
            _, completed, average = line.split()
            assert (int(completed), float(average)) == (1, 85.0)
            return
        if ready and not line:
            pytest.fail("the example subscriber exited without printing the batch")
    pytest.fail("the example subscriber printed nothing for the batch within 120s")


# Large enough to be still running when the process is killed, however fast the pipeline has become.
CRASHED_TASKS = 10_000


@pytest.mark.parametrize("process", ["workflow", "workflow-daprd", "validator", "scorer-1", "scorer-1-daprd",
                                     "redis", "scheduler", "placement"])
def test_a_batch_survives_a_crash_of_one_process(stack, settings, redis_client, batch_id, process):
    from taskfan.cli.common import CliError
    from taskfan.cli.status import workflow_state

    tasks = [{**LESSON_TASK, "task_id": f"{batch_id}-{i}"} for i in range(CRASHED_TASKS)]
    assert post_batch(settings, {"batch_id": batch_id, "tasks": tasks}).status_code == 202

    def progress() -> int:
        try:
            state = workflow_state(batch_id)
        except CliError as exc:
            if exc.transient:  # Dapr read the state while the engine wrote it; ask again
                return 0
            raise
        custom = (state or {}).get("properties", {}).get("dapr.workflow.custom_status")
        return json.loads(custom)["done"] if custom else 0

    wait_for(lambda: progress() >= 200, "the batch to be under way")
    assert not outcomes_for(redis_client, batch_id), "the batch finished before the crash: nothing was tested"
    restart(stack, process)  # SIGKILL it mid-batch, then start it again
    outcome = wait_outcome(redis_client, batch_id, timeout=300)
    assert (outcome["total"], outcome["completed"], outcome["failed"]) == (CRASHED_TASKS, CRASHED_TASKS, 0)
    assert [r["task_id"] for r in outcome["results"]] == [t["task_id"] for t in tasks]


@pytest.mark.parametrize("text", ["Ünïcödé, 漢字とかな, مرحبا", "🎉🚀✨"])
def test_a_batch_near_the_size_limit_in_any_script_completes(settings, redis_client, batch_id, text):
    # Near 2 MiB of UTF-8 JSON; escaped as \uXXXX on the way it would be two to three times that.
    description = (text * 2000)[:2000]
    per_task = len(json.dumps({"task_id": "x" * 12, "title": text, "description": description},
                              ensure_ascii=False).encode())
    count = (2 * 1024 * 1024 - 1024) // (per_task + 2)
    tasks = [{"task_id": f"t-{i:05d}", "title": f"Urgent {text}"[:200], "description": description}
             for i in range(count)]
    body = json.dumps({"batch_id": batch_id, "tasks": tasks}, ensure_ascii=False).encode()
    assert 1_500_000 < len(body) <= 2 * 1024 * 1024
    response = httpx.post(f"{settings.ingest_url}/batches", content=body,
                          headers={"content-type": "application/json", **ingest_auth(settings)}, timeout=60)
    assert response.status_code == 202, response.text
    outcome = wait_outcome(redis_client, batch_id, timeout=300)
    assert (outcome["total"], outcome["completed"]) == (count, count)


def test_a_batch_id_shaped_like_an_internal_id_is_a_batch_of_its_own(settings, redis_client, batch_id):
    lookalike = f"{batch_id}:chunk-00000"
    assert post_batch(settings, {"batch_id": lookalike, "tasks": [LESSON_TASK] * 1}).status_code == 202
    assert post_batch(settings, {"batch_id": batch_id, "tasks": [
        {**LESSON_TASK, "task_id": "a"}, {**LESSON_TASK, "task_id": "b"}]}).status_code == 202
    assert wait_outcome(redis_client, batch_id)["total"] == 2
    assert wait_outcome(redis_client, lookalike)["total"] == 1


def test_the_largest_outcome_the_contracts_allow_is_delivered(settings, redis_client, batch_id):
    # 10,000 tasks with 128-character ids (as much as fits in a 2 MiB batch), every one failing with its
    # error: a ~4 MB outcome, read back in one bulk state read, published in one message. The fault
    # pattern makes the scorer fail each of them.
    tasks = [{"task_id": f"{i:05d}".ljust(128 - len("-fail-me"), "x") + "-fail-me", "title": "Fix a",
              "description": "0123456789"} for i in range(10_000)]
    body = json.dumps({"batch_id": batch_id, "tasks": tasks}, separators=(",", ":")).encode()
    response = httpx.post(f"{settings.ingest_url}/batches", content=body,
                          headers={"content-type": "application/json", **ingest_auth(settings)}, timeout=60)
    assert response.status_code == 202, response.text
    outcome = wait_outcome(redis_client, batch_id, timeout=600)
    assert (outcome["total"], outcome["failed"]) == (10_000, 10_000)
    assert all(len(r["task_id"]) == 128 and "scoring failed" in r["error"] for r in outcome["results"])
    size = len(next(f[b"data"] for _, f in redis_client.xrevrange("outcomes", count=50)
                    if json.loads(f[b"data"])["data"]["batch_id"] == batch_id))
    assert size > 3_900_000


def test_one_batch_id_runs_one_payload_whichever_way_it_comes(stack, settings, redis_client, batch_id):
    from concurrent.futures import ThreadPoolExecutor

    def payload(name: str, count: int) -> dict:
        return {"batch_id": batch_id, "tasks": [{**LESSON_TASK, "task_id": f"{name}-{i}"} for i in range(count)]}

    a, b, c, d = payload("a", 1), payload("b", 2), payload("c", 3), payload("d", 4)
    dapr_publish = f"{stack.run_file.dapr_http_url('ingest')}/v1.0/publish/pubsub/tasks"
    with ThreadPoolExecutor(5) as pool:
        via_ingest = [pool.submit(post_batch, settings, p) for p in (a, b, a)]
        pool.submit(httpx.post, dapr_publish, json=c, headers=dapr_auth(settings, "ingest")).result()
        pool.submit(redis_client.xadd, "tasks", {"data": json.dumps(cloudevent(batch_id, d["tasks"]))}).result()
        codes = [f.result().status_code for f in via_ingest]
    outcome = wait_outcome(redis_client, batch_id)
    winner = next(p for p in (a, b, c, d) if [t["task_id"] for t in p["tasks"]] ==
                  [r["task_id"] for r in outcome["results"]])
    # Ingest: 202 for the winner's content, 409 with the reason for any other.
    assert codes == [202 if p is winner else 409 for p in (a, b, a)]
    # The other ways: a dead-letter record naming the id, for each payload that lost.
    losers = [p for p in (c, d) if p is not winner]
    wait_for(lambda: len([r for r in dead_letters(redis_client)
                          if batch_id in r["reason"] and "already in use with different content" in r["reason"]])
             == len(losers), "a dead letter for each losing payload")
    # After the outcome too: other content is refused, the same content is a silent duplicate.
    assert post_batch(settings, b if winner is not b else a).status_code == 409
    assert post_batch(settings, winner).status_code == 202
    wait_for(lambda: any(r.get("msg") == "duplicate batch ignored" and r.get("batch_id") == batch_id
                         for r in log_records(stack, "workflow")), "the duplicate to be ignored")
    assert len(outcomes_for(redis_client, batch_id)) == 1


def test_an_event_dapr_gave_up_on_comes_back_as_a_dead_letter_in_taskfans_shape(redis_client, batch_id):
    # What Dapr does once the `intake` retries are exhausted: the event moves to `tasks-undeliverable`.
    redis_client.xadd("tasks-undeliverable", {"data": json.dumps(cloudevent(batch_id, [LESSON_TASK]))})
    def refused_batch_id(record: dict) -> object:  # other tests' hostile events are dead letters of any shape
        data = record["event"].get("data") if isinstance(record["event"], dict) else None
        return data.get("batch_id") if isinstance(data, dict) else None

    record = wait_for(lambda: next((r for r in dead_letters(redis_client) if refused_batch_id(r) == batch_id), None),
                      "a dead-letter record for the given-up event")
    assert "retries" in record["reason"] and "were exhausted" in record["reason"]
    assert record["received_at"]
