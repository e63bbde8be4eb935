"""The durable-execution peer: Taskfan's batch in Taskfan's shape on Temporal.

- The server: the Temporal CLI's dev server (Temporal Server embedded), built from the Go module proxy by
  deploy/install-temporal.sh, persisted to an SQLite file (not in memory). Documented settings differ
  from its defaults (``DYNAMIC_CONFIG``): `history.transferProcessorMaxPollRPS` (20 by default on the dev
  server's single shard, which makes every workflow step wait for the next 50 ms tick;
  shared/notes/temporal-peer-facts.md) and one partition per task queue.
- The shape: one workflow per batch cuts it into 100-task chunks and keeps at most ``parallel`` chunks in
  flight (Taskfan's MAX_IN_FLIGHT / 100), no child workflow per chunk (as Taskfan); each chunk runs
  validate -> enrich -> score as three activities on three task queues, each served by its own worker
  process (Temporal's way of separate services); a task whose step reports an error is retried on its own
  after a durable timer, up to 3 attempts per step, like Taskfan; the batch workflow's result is the
  outcome. The workflow sandbox is on (the default).
- Scoring: a score worker runs at most ``SCORER_CONCURRENCY`` tasks at once with ``SCORE_DELAY_MS`` each,
  the capacity of one Taskfan scorer replica; N score workers = N replicas. As a Temporal engineer would
  (and as Taskfan's workflow does by what it learns), a chunk's fast tasks are scored in one activity and
  slow ones (a delay is set) one activity per task, so that Temporal's task queue hands each to a free
  worker.

    python -m bench.peers.temporal_pipeline worker --role workflows|validate|enrich|score --address HOST:PORT
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import activity, workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from services.enricher.rules import tags_for
    from services.scorer.rules import score_for
    from services.validator.rules import validation_issues

QUEUES = {"workflows": "bench-batches", "validate": "bench-validate", "enrich": "bench-enrich",
          "score": "bench-score"}
TASKS_PER_CHUNK = 100
STEP_ATTEMPTS = 3
STEP_BACKOFF = (timedelta(milliseconds=500), timedelta(seconds=1))
ACTIVITY_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_attempts=5)
STEP_TIMEOUT = timedelta(seconds=30)
# The dev server's settings that differ from its defaults (README, Benchmarks): the transfer queue's poll
# rate (20/s by default: every step waits for a 50 ms tick on the single shard), and one partition per task
# queue (4 by default, to spread matching over hosts; on one process, tasks and pollers meet in different
# partitions and wait for forwarding: measured here, 1 partition: +18% tasks/s, -15% CPU per task).
DYNAMIC_CONFIG = {"history.transferProcessorMaxPollRPS": 1000, "matching.numTaskqueueReadPartitions": 1,
                  "matching.numTaskqueueWritePartitions": 1}


# --- activities: one per step, each on its own task queue and worker process ---------------------------


@activity.defn(name="validate")
async def validate(tasks: list[dict[str, str]]) -> list[dict[str, Any]]:
    return [{"task_id": t["task_id"], "issues": validation_issues(t["title"], t["description"])} for t in tasks]


@activity.defn(name="enrich")
async def enrich(tasks: list[dict[str, str]]) -> list[dict[str, Any]]:
    return [{"task_id": t["task_id"], "tags": tags_for(t["title"], t["description"])} for t in tasks]


_score_slots: asyncio.Semaphore | None = None


@activity.defn(name="score")
async def score(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    global _score_slots
    if _score_slots is None:
        _score_slots = asyncio.Semaphore(int(os.environ.get("SCORER_CONCURRENCY", "8")))
    delay_s = int(os.environ.get("SCORE_DELAY_MS", "0")) / 1000

    async def one(request: dict[str, Any]) -> dict[str, Any]:
        async with _score_slots:  # type: ignore[union-attr]
            if delay_s:
                await asyncio.sleep(delay_s)
            return {"task_id": request["task_id"], "score": score_for(request["tags"])}

    return list(await asyncio.gather(*(one(r) for r in requests)))


# --- workflows ---------------------------------------------------------------------------------------


class Chunk:
    """One chunk's chain, run inside the batch workflow (as Taskfan's batch workflow runs its chunks)."""

    def __init__(self, score_each: bool) -> None:
        self.score_each = score_each

    async def run(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        by_id = {t["task_id"]: t for t in tasks}
        results: dict[str, dict[str, Any]] = {}
        tags: dict[str, list[str]] = {}

        def failed(task_id: str, step: str, error: str) -> None:
            results[task_id] = {"task_id": task_id, "status": "failed", "score": None,
                                "tags": tags.get(task_id, []), "issues": [], "error": f"{step}: {error}"}

        valid = []
        for answer in await self._step("validate", [by_id[t] for t in by_id], failed):
            if answer["issues"]:
                results[answer["task_id"]] = {"task_id": answer["task_id"], "status": "rejected", "score": 0,
                                              "tags": [], "issues": answer["issues"], "error": None}
            else:
                valid.append(by_id[answer["task_id"]])
        for answer in await self._step("enrich", valid, failed):
            tags[answer["task_id"]] = answer["tags"]
        requests = [{"task_id": t, "tags": tags[t]} for t in tags]
        for answer in await self._step("score", requests, failed):
            task_id = answer["task_id"]
            results[task_id] = {"task_id": task_id, "status": "completed", "score": answer["score"],
                                "tags": tags[task_id], "issues": [], "error": None}
        return [results[t] for t in by_id]

    async def _step(self, step: str, items: list[dict[str, Any]], failed: Any) -> list[dict[str, Any]]:
        """One activity for ``items``; the items whose answer carries an error are retried on their own."""
        done: list[dict[str, Any]] = []
        pending = items
        for attempt in range(STEP_ATTEMPTS):
            if not pending:
                break
            if attempt:
                await workflow.sleep(STEP_BACKOFF[min(attempt - 1, len(STEP_BACKOFF) - 1)])
            pieces = [[item] for item in pending] if step == "score" and self.score_each else [pending]
            calls = [workflow.execute_activity(step, piece, task_queue=QUEUES[step], result_type=list,
                                               start_to_close_timeout=STEP_TIMEOUT, retry_policy=ACTIVITY_RETRY)
                     for piece in pieces]
            answers = [answer for piece_answers in await asyncio.gather(*calls) for answer in piece_answers]
            retry = []
            for item, answer in zip(pending, answers, strict=True):
                if answer.get("error") is None:
                    done.append(answer)
                elif attempt == STEP_ATTEMPTS - 1:
                    failed(item["task_id"], step, answer["error"])
                else:
                    retry.append(item)
            pending = retry
        return done


@workflow.defn(name="batch")
class BatchWorkflow:
    @workflow.run
    async def run(self, batch: dict[str, Any]) -> dict[str, Any]:
        tasks = batch["tasks"]
        chunks = [tasks[i:i + TASKS_PER_CHUNK] for i in range(0, len(tasks), TASKS_PER_CHUNK)]
        parallel = max(1, int(batch.get("parallel", 4)))
        results: list[list[dict[str, Any]]] = [[] for _ in chunks]
        started_at = workflow.now().isoformat()

        async def run_chunk(index: int) -> None:
            results[index] = await Chunk(bool(batch.get("score_each"))).run(chunks[index])

        # A sliding window of `parallel` chunks in flight, as Taskfan's batch workflow keeps.
        running: set[asyncio.Task[None]] = set()
        for index in range(len(chunks)):
            if len(running) >= parallel:
                finished, running = await workflow.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    task.result()
            running.add(asyncio.ensure_future(run_chunk(index)))
        if running:
            await workflow.wait(running)
        flat = [result for chunk in results for result in chunk]
        statuses = [r["status"] for r in flat]
        scores = [r["score"] for r in flat if r["status"] == "completed"]
        return {"batch_id": batch["batch_id"], "total": len(flat), "completed": statuses.count("completed"),
                "rejected": statuses.count("rejected"), "failed": statuses.count("failed"),
                "average_score": sum(scores) / len(scores) if scores else None, "results": flat,
                "started_at": started_at, "finished_at": workflow.now().isoformat()}


# --- worker processes and the client ---------------------------------------------------------------------


async def serve(role: str, address: str) -> None:
    from temporalio.client import Client
    from temporalio.worker import Worker

    client = await Client.connect(address)
    if role == "workflows":
        worker = Worker(client, task_queue=QUEUES[role], workflows=[BatchWorkflow])
    else:
        step = {"validate": validate, "enrich": enrich, "score": score}[role]
        # A score worker takes no more activities than its model has slots: a free one pulls the next.
        slots = int(os.environ.get("SCORER_CONCURRENCY", "8"))
        worker = Worker(client, task_queue=QUEUES[role], activities=[step],
                        max_concurrent_activities=slots if role == "score" else 100,
                        max_concurrent_activity_task_polls=min(slots, 5) if role == "score" else 10)
    print(f"temporal worker {role} ready", flush=True)
    await worker.run()


async def run_batches(address: str, batches: list[dict[str, Any]], parallel: int, score_each: bool,
                      timeout: float) -> tuple[float, list[float], list[dict[str, Any]]]:
    """Start one batch workflow per batch at once; wait for every outcome.

    Returns the wall time from the first start to the last outcome, each batch's latency, and the outcomes.
    """
    from temporalio.client import Client

    client = await Client.connect(address)
    start = time.perf_counter()

    async def one(batch: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        began = time.perf_counter()
        handle = await client.start_workflow("batch", {**batch, "parallel": parallel, "score_each": score_each},
                                             id=f"{batch['batch_id']}-{time.time_ns()}",
                                             task_queue=QUEUES["workflows"], result_type=dict)
        outcome = await handle.result()
        return time.perf_counter() - began, outcome

    done = await asyncio.wait_for(asyncio.gather(*(one(b) for b in batches)), timeout)
    return time.perf_counter() - start, [d[0] for d in done], [d[1] for d in done]


@dataclass
class TemporalPeer:
    """A running dev server and its worker processes, as the benchmark uses them."""

    address: str
    score_each: bool  # slow tasks: one score activity per task
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.processes.items()}

    def run(self, batches: list[dict[str, Any]], parallel: int,
            timeout: float) -> tuple[float, list[float], list[dict[str, Any]]]:
        return asyncio.run(run_batches(self.address, batches, parallel, self.score_each, timeout))


def repo_root() -> Path:
    # A function, not a module constant: the workflow sandbox re-imports this module and forbids the call.
    return Path(__file__).resolve().parents[2]


def cli_version() -> str:
    """The Temporal CLI version the wrapper module pins (deploy/temporal/go.mod)."""
    for line in (repo_root() / "deploy" / "temporal" / "go.mod").read_text().splitlines():
        if line.startswith("require github.com/temporalio/cli "):
            return line.split()[-1]
    return "unknown"


def temporal_bin() -> Path:
    """The Temporal CLI, built once per machine (deploy/install-temporal.sh prints its bin directory)."""
    done = subprocess.run(["bash", str(repo_root() / "deploy" / "install-temporal.sh")], stdout=subprocess.PIPE,
                          text=True, check=True)
    return Path(done.stdout.split()[-1]) / "temporal"


@contextlib.contextmanager
def temporal_peer(port: int, score_replicas: int, concurrency: int, delay_ms: int,
                  ready: Any) -> Iterator[TemporalPeer]:
    """The dev server on ``port`` (and the next two for HTTP and metrics), persisted to a file in a fresh
    directory, one worker process per role and ``score_replicas`` score workers; ``ready(check, what)``
    polls ``check`` until it is true (the benchmark's readiness helper)."""
    work_dir = Path(tempfile.mkdtemp(prefix="bench-temporal-"))
    peer = TemporalPeer(f"127.0.0.1:{port}", score_each=delay_ms > 0)
    log = (work_dir / "server.log").open("wb")
    peer.processes["temporal-server"] = subprocess.Popen(
        [str(temporal_bin()), "server", "start-dev", "--headless", "--ip", "127.0.0.1", "--port", str(port),
         "--http-port", str(port + 1), "--metrics-port", str(port + 2), "--db-filename",
         str(work_dir / "temporal.db"), "--log-level", "error",
         *(arg for key, value in DYNAMIC_CONFIG.items() for arg in ("--dynamic-config-value", f"{key}={value}"))],
        stdout=log, stderr=subprocess.STDOUT, cwd=work_dir)
    env = {**os.environ, "SCORE_DELAY_MS": str(delay_ms), "SCORER_CONCURRENCY": str(concurrency)}
    roles = ["workflows", "validate", "enrich"] + ["score"] * score_replicas
    try:
        ready(lambda: asyncio.run(_pollers(peer.address, "validate")) >= 0, "the Temporal dev server")
        for i, role in enumerate(roles):
            name = f"temporal-{role}" + (f"-{i - 3}" if role == "score" else "")
            peer.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "bench.peers.temporal_pipeline", "worker", "--role", role,
                 "--address", peer.address], env=env, cwd=repo_root(), stdout=subprocess.DEVNULL)
        for role in ("workflows", "validate", "enrich", "score"):
            wanted = score_replicas if role == "score" else 1
            ready(lambda role=role, wanted=wanted: asyncio.run(_pollers(peer.address, role)) >= wanted,
                  f"{wanted} Temporal {role} worker(s) polling")
        yield peer
    finally:
        for proc in reversed(list(peer.processes.values())):
            proc.terminate()
        for proc in peer.processes.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()
        shutil.rmtree(work_dir, ignore_errors=True)


async def _pollers(address: str, role: str) -> int:
    """Workers polling a role's task queue (-1 while the server does not answer)."""
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
    from temporalio.client import Client

    try:
        client = await Client.connect(address)
        answer = await client.workflow_service.describe_task_queue(DescribeTaskQueueRequest(
            namespace="default", task_queue=TaskQueue(name=QUEUES[role]),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW if role == "workflows"
            else TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY))
    except Exception:  # noqa: BLE001 - not up yet
        return -1
    return len({p.identity for p in answer.pollers})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker", help="run one worker process")
    worker.add_argument("--role", choices=sorted(QUEUES), required=True)
    worker.add_argument("--address", default="127.0.0.1:7233")
    args = parser.parse_args()
    asyncio.run(serve(args.role, args.address))


if __name__ == "__main__":
    main()
