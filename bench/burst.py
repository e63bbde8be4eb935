"""The burst: many large batches published at once, to show admission control holding the stack steady.

``burst(stack, ...)`` publishes the batches through the ingest API from several threads at once,
probes ingest's ``/healthz`` all along, samples the whole stack's memory and the admission queue, and
waits for one outcome per batch. It raises if any batch is missing, duplicated, short of tasks or has a
failed task. Used by ``make bench`` (100 x 1,000) and by the end-to-end tests.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psutil
import redis

from bench import workload
from services.workflow.admission import Ledger
from taskfan import stack_secrets
from taskfan.contracts import ADMISSION_LEDGER_KEY, OUTCOMES_TOPIC, STATESTORE, AppId
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



def _probe_healthz(url: str, worst_s: Any, failures: Any, stop: Any) -> None:
    with httpx.Client(timeout=5) as http:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                if http.get(url).status_code != 200:
                    failures.value += 1
            except httpx.HTTPError:
                failures.value += 1
            worst_s.value = max(worst_s.value, time.perf_counter() - started)
            stop.wait(0.2)


class Probe:
    """Ingest's /healthz latency, probed from a process of its own (so that the publishers' threads in
    this one do not delay the probe), and the admission queue's length, a few times a second."""

    def __init__(self, stack: Stack) -> None:
        self.ledger_url = f"{stack.run_file.dapr_http_url('workflow')}/v1.0/state/{STATESTORE}/{ADMISSION_LEDGER_KEY}"
        self.ledger_headers = stack_secrets.dapr_headers(stack.secrets.sidecar_token(AppId.WORKFLOW))
        self.max_queued = 0
        self._worst_s = multiprocessing.Value("d", 0.0)
        self._failures = multiprocessing.Value("i", 0)
        self._stop_probe = multiprocessing.Event()
        self._process = multiprocessing.Process(target=_probe_healthz, daemon=True, args=(
            f"{stack.ingest_url}/healthz", self._worst_s, self._failures, self._stop_probe))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_queue, daemon=True)

    @property
    def healthz_max_s(self) -> float:
        return self._worst_s.value

    @property
    def healthz_failures(self) -> int:
        return self._failures.value

    def _sample_queue(self) -> None:
        with httpx.Client(timeout=5) as http:
            while not self._stop.is_set():
                with contextlib.suppress(httpx.HTTPError, ValueError):  # no ledger yet (204), or mid-restart
                    ledger = Ledger.model_validate_json(http.get(self.ledger_url, headers=self.ledger_headers).content)
                    self.max_queued = max(self.max_queued, ledger.queued)
                self._stop.wait(0.5)

    def __enter__(self) -> Probe:
        self._process.start()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._stop_probe.set()
        self._thread.join()
        self._process.join(timeout=10)


def burst(stack: Stack, batches: int, tasks_per_batch: int, prefix: str, timeout: float) -> dict[str, Any]:
    """Publish ``batches`` x ``tasks_per_batch`` at once; return the figures once every outcome is in."""
    documents = [{"batch_id": f"{prefix}-{n:05d}", "tasks": workload.tasks(tasks_per_batch, f"{prefix}-{n:05d}")}
                 for n in range(batches)]
    bodies = [json.dumps(d).encode() for d in documents]
    client = redis.Redis(host=stack.settings.redis_host, port=stack.settings.redis_port,
                         password=stack.secrets.redis_password)
    last_id = "$"
    with contextlib.suppress(redis.ResponseError):
        last_id = client.xinfo_stream(OUTCOMES_TOPIC)["last-generated-id"]

    with RssSampler(stack) as rss, Probe(stack) as probe:
        start = time.perf_counter()
        with httpx.Client(base_url=stack.ingest_url, timeout=120,
                          headers=stack_secrets.ingest_headers(stack.secrets.ingest_token)) as http, \
                ThreadPoolExecutor(PUBLISHERS) as pool:
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
        "healthz_max_ms": round(probe.healthz_max_s * 1000, 1), "healthz_failures": probe.healthz_failures,
        "max_queued": probe.max_queued,
        "ledger_change_p99_ms": ledger_change_p99_ms(stack),
    }


def ledger_change_p99_ms(stack: Stack) -> float | None:
    """The 99th percentile of the admission ledger's changes (queue, admit, release) since the stack started,
    from the workflow app's histogram ``taskfan_ledger_change_seconds``: the upper bound of its bucket."""
    port = stack.run_file.env_for(stack.run_file.app("workflow")).get("METRICS_PORT")
    if not port:
        return None
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    buckets = []
    for line in text.splitlines():
        if line.startswith("taskfan_ledger_change_seconds_bucket{"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(bound), float(line.rsplit(" ", 1)[1])))
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    return next(round(bound * 1000, 1) for bound, count in buckets if count >= 0.99 * total)
