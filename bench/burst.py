"""The burst: many large batches published at once, to show admission control holding the stack steady.

``burst(stack, ...)`` publishes the batches through the ingest API from several threads at once,
probes ingest's ``/healthz`` all along, samples the whole stack's memory and the admission queue, and
waits for one outcome per batch. It raises if any batch is missing, duplicated, short of tasks or has a
failed task. Used by ``make bench`` (100 x 1,000) and by the end-to-end tests.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psutil
import redis

from bench import workload
from taskfan.contracts import ADMISSION_LEDGER_KEY, OUTCOMES_TOPIC, STATESTORE
from taskfan.stack import Stack, StackState

PUBLISHERS = 8


class RssSampler:
    """Peak of the summed resident memory of every process of the stack, sampled twice a second."""

    def __init__(self, stack: Stack) -> None:
        state = StackState.load(stack.state_path)
        self.pids = [p.pid for p in state.processes] if state else []
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for pid in self.pids:
                with contextlib.suppress(psutil.Error):
                    process = psutil.Process(pid)
                    total += process.memory_info().rss
                    total += sum(c.memory_info().rss for c in process.children(recursive=True))
            self.peak_bytes = max(self.peak_bytes, total)
            self._stop.wait(0.5)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()



class Probe:
    """Samples, a few times a second until stopped: ingest's /healthz latency and the admission queue."""

    def __init__(self, stack: Stack) -> None:
        self.healthz_url = f"{stack.ingest_url}/healthz"
        self.ledger_url = f"{stack.run_file.dapr_http_url('workflow')}/v1.0/state/{STATESTORE}/{ADMISSION_LEDGER_KEY}"
        self.healthz_max_s = 0.0
        self.healthz_failures: list[str] = []
        self.max_queued = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=5) as http:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    if http.get(self.healthz_url).status_code != 200:
                        self.healthz_failures.append("not 200")
                except httpx.HTTPError as exc:
                    self.healthz_failures.append(f"{type(exc).__name__}: {exc}")
                self.healthz_max_s = max(self.healthz_max_s, time.perf_counter() - started)
                with contextlib.suppress(httpx.HTTPError, ValueError, AttributeError):
                    ledger = http.get(self.ledger_url).json()
                    self.max_queued = max(self.max_queued, len(ledger.get("queue", [])))
                self._stop.wait(0.2)

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def burst(stack: Stack, batches: int, tasks_per_batch: int, prefix: str, timeout: float) -> dict[str, Any]:
    """Publish ``batches`` x ``tasks_per_batch`` at once; return the figures once every outcome is in."""
    documents = [{"batch_id": f"{prefix}-{n:04d}", "tasks": workload.tasks(tasks_per_batch, f"{prefix}-{n:04d}")}
                 for n in range(batches)]
    bodies = [json.dumps(d).encode() for d in documents]
    client = redis.Redis(host=stack.settings.redis_host, port=stack.settings.redis_port)
    last_id = "$"
    with contextlib.suppress(redis.ResponseError):
        last_id = client.xinfo_stream(OUTCOMES_TOPIC)["last-generated-id"]

    with RssSampler(stack) as rss, Probe(stack) as probe:
        start = time.perf_counter()
        with httpx.Client(base_url=stack.ingest_url, timeout=120) as http, ThreadPoolExecutor(PUBLISHERS) as pool:
            answers = list(pool.map(lambda body: http.post("/batches", content=body,
                                                           headers={"content-type": "application/json"}), bodies))
        published_s = time.perf_counter() - start
        refused = [(d["batch_id"], a.status_code, a.text) for d, a in zip(documents, answers, strict=True)
                   if a.status_code != 202]
        if refused:
            raise RuntimeError(f"{len(refused)} batches refused, first: {refused[0]}")
        outcomes: dict[str, list[dict[str, Any]]] = {}
        deadline = time.monotonic() + timeout
        while len(outcomes) < batches:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{batches - len(outcomes)} of {batches} batches had no outcome after "
                                   f"{timeout:.0f}s")
            for _, entries in client.xread({OUTCOMES_TOPIC: last_id}, block=1000, count=1000) or []:
                for entry_id, fields in entries:
                    last_id = entry_id
                    outcome = json.loads(fields[b"data"])["data"]
                    if outcome["batch_id"].startswith(f"{prefix}-"):
                        outcomes.setdefault(outcome["batch_id"], []).append(outcome)
        elapsed = time.perf_counter() - start

    wrong = [(b, [(o["total"], o["completed"], o["failed"]) for o in found]) for b, found in outcomes.items()
             if len(found) != 1 or found[0]["total"] != tasks_per_batch or found[0]["failed"]
             or found[0]["completed"] + found[0]["rejected"] != tasks_per_batch]
    if wrong:
        raise RuntimeError(f"{len(wrong)} batches with a wrong outcome (total, completed, failed), first: {wrong[0]}")
    return {
        "batches": batches, "tasks": batches * tasks_per_batch,
        "elapsed_s": round(elapsed, 1), "publish_s": round(published_s, 1),
        "tasks_per_s": round(batches * tasks_per_batch / elapsed, 1),
        "peak_rss_mib": round(rss.peak_bytes / 2**20, 1),
        "healthz_max_ms": round(probe.healthz_max_s * 1000, 1), "healthz_failures": len(probe.healthz_failures),
        "max_queued": probe.max_queued,
    }
