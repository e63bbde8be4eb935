"""`make bench`: Taskfan on the real stack, side by side with a Celery pipeline and an in-process floor.

Every figure comes from this one run on this machine; compare ratios, not absolute times. The stack is
started with `make up`'s code path (durable workflows, retry policy) and restarted per scenario with the
scenario's scorer settings. A scenario that fails records its reason instead of a number.

One file on purpose (over ~300 lines): each scenario is a short function beside the stack and peer
plumbing it shares, and the whole benchmark reads top to bottom.

    python -m bench.run            # full run, < 20 minutes on 2 cores
    python -m bench.run --quick    # every scenario at a tiny size, < 3 minutes
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis

from bench import workload
from bench.burst import RssSampler, burst
from bench.cpu import CpuMeter
from bench.peers import inprocess, temporal_pipeline
from bench.profile import CpuProfiles
from taskfan import runfile, stack_secrets
from taskfan.contracts import OUTCOMES_TOPIC
from taskfan.settings import Settings, patched_environ
from taskfan.stack import Stack, port_open, port_owner, wait_until
from taskfan.stack.processes import StackState, http_status
from taskfan.versions import DAPR_VERSION

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "bench" / "results"
CELERY_REDIS_PORT = Settings.from_env().bench_celery_redis_port
# The stacks of the benchmark run their own Redis here, never one they did not start (6379 may be a
# user's): the port must be free, and everything on it is thrown away with the run directory.
BENCH_REDIS_PORT = Settings.from_env().bench_redis_port


@dataclass(frozen=True)
class Sizes:
    fanout_tasks: int = 50
    throughput_tasks: int = 2000
    throughput_batch: int = 100
    scaling_tasks: int = 1600
    scaling_replicas: tuple[int, ...] = (1, 2, 4)
    big_batch_tasks: int = 10_000
    noop_workflows: int = 200
    small_batches: int = 30
    security_rounds: int = 3
    workflow_rounds: int = 2
    burst_batches: int = 100
    burst_tasks: int = 1000
    many_batches: int = 10_000  # x 10 tasks, at once: the admission queue 10,000 long
    steady_warmup_s: float = 5
    steady_s: float = 30
    steady_batches_in_flight: int = 8
    spread_tasks_per_replica: int = 8
    profile_s: int = 20  # the throughput work again, under the CPU profilers
    timeout_s: float = 900


QUICK = Sizes(fanout_tasks=10, throughput_tasks=100, throughput_batch=50, scaling_tasks=40,
              big_batch_tasks=300, noop_workflows=10, small_batches=3, security_rounds=1, workflow_rounds=1,
              burst_batches=10,
              burst_tasks=100, many_batches=200, steady_warmup_s=1, steady_s=3, steady_batches_in_flight=2,
              spread_tasks_per_replica=2, profile_s=3, timeout_s=120)
# and the next two (HTTP, metrics) for the Temporal peer's dev server
TEMPORAL_PORT = Settings.from_env().bench_temporal_port


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the Taskfan stack -----------------------------------------------------------------------------


@contextlib.contextmanager
def taskfan_stack(scorers: int = 1, **env: int | str) -> Iterator[Stack]:
    """The real stack, started the way `make up` starts it, with scenario settings in its environment.

    Each stack gets an empty run directory (Redis data, scheduler data, logs), so a figure never
    depends on what earlier runs left in Redis; the logs stay there until the next stack starts.
    """
    run_dir = REPO_ROOT / ".taskfan" / "bench"
    shutil.rmtree(run_dir, ignore_errors=True)
    refuse_busy_port(BENCH_REDIS_PORT, "the benchmark stack's Redis")
    # Tracing off unless a scenario asks (TRACE_SAMPLING): the peers trace nothing either; `python -m
    # bench.compare TRACE_SAMPLING=0 TRACE_SAMPLING=1` measures what it costs.
    with patched_environ({"RUN_DIR": run_dir, "REDIS_PORT": BENCH_REDIS_PORT, "TRACE_SAMPLING": "0", **env}):
        stack = Stack(Settings.from_env(), runfile.load(REPO_ROOT / "dapr.yaml"))
        try:
            stack.up(scorers, progress=lambda _: None)
            run_batches(stack, [warm_up_batch()], 120)
            yield stack
        finally:
            stack.down(progress=lambda _: None)


def warm_up_batch() -> dict[str, Any]:
    """One task through a system just started, before anything is timed: every system gets one (the first
    workflow of a fresh Temporal worker, for one, takes seconds)."""
    return {"batch_id": f"warm-up-{time.time_ns()}", "tasks": workload.tasks(1, prefix="warm-up")}


def stack_pids(stack: Stack) -> dict[str, int]:
    """Every process of the stack by name (redis, placement, workflow, workflow-daprd, scorer-0, ...)."""
    state = StackState.load(stack.state_path)
    return {p.name: p.pid for p in state.processes} if state else {}


class TaskfanClient:
    """Publishes batches through the ingest API and reads outcomes from the stream, as a user does; every
    outcome is checked task by task against the rules (workload.check_outcome) before a figure counts."""

    def __init__(self, stack: Stack) -> None:
        self.redis = redis.Redis(host=stack.settings.redis_host, port=stack.settings.redis_port,
                                 password=stack.secrets.redis_password)
        self.http = httpx.Client(base_url=stack.ingest_url, timeout=60,
                                 headers=stack_secrets.ingest_headers(stack.secrets.ingest_token))
        self.last_id: Any = "$"
        with contextlib.suppress(redis.ResponseError):
            self.last_id = self.redis.xinfo_stream(OUTCOMES_TOPIC)["last-generated-id"]
        self.published: dict[str, tuple[float, dict[str, Any]]] = {}

    def publish(self, batch: dict[str, Any]) -> None:
        self.published[batch["batch_id"]] = (time.perf_counter(), batch)
        self.http.post("/batches", json=batch).raise_for_status()

    def outcomes(self, block_ms: int = 1000) -> list[tuple[str, float]]:
        """(batch id, latency) of the outcomes of our batches that arrived since the last call, checked."""
        arrived = []
        for _, entries in self.redis.xread({OUTCOMES_TOPIC: self.last_id}, block=block_ms, count=1000) or []:
            for entry_id, fields in entries:
                self.last_id = entry_id
                outcome = json.loads(fields[b"data"])["data"]
                sent = self.published.pop(outcome["batch_id"], None)
                if sent is not None:
                    arrived.append((outcome["batch_id"], time.perf_counter() - sent[0]))
                    workload.check_outcome(sent[1], outcome, "Taskfan")
        return arrived

    def drain(self, timeout_s: float, what: str) -> None:
        """Read outcomes until every batch published has one (each still checked); raise naming ``what`` if some
        have none after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while self.published and time.monotonic() < deadline:
            self.outcomes()
        if self.published:
            raise RuntimeError(f"{len(self.published)} {what} batches had no outcome")

    def close(self) -> None:
        self.http.close()
        self.redis.close()


def run_batches(stack: Stack, batches: list[dict[str, Any]], timeout: float) -> tuple[float, list[float]]:
    """Publish every batch at once; wait for every outcome. Returns the wall time from the first publish to
    the last outcome, and each batch's latency."""
    client = TaskfanClient(stack)
    try:
        start = time.perf_counter()
        for batch in batches:
            client.publish(batch)
        latencies: list[float] = []
        deadline = time.monotonic() + timeout
        while client.published:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(client.published)} of {len(batches)} batches had no outcome after "
                                   f"{timeout:.0f}s")
            latencies += [latency for _, latency in client.outcomes()]
        return time.perf_counter() - start, latencies
    finally:
        client.close()


def quantile_ms(latencies: list[float]) -> tuple[float, float]:
    """(p50, p95) in milliseconds."""
    quantiles = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else latencies * 19
    return round(1000 * statistics.median(latencies), 1), round(1000 * quantiles[18], 1)


# --- scenarios -------------------------------------------------------------------------------------


# A fan-out batch: 2 s tasks, 50 slots on one scorer: the batch takes ~2 s if its tasks run side by side.
FANOUT_ENV = {"SCORE_DELAY_MS": 2000, "SCORER_CONCURRENCY": 50}


def scenario_fanout(sizes: Sizes) -> dict[str, Any]:
    with taskfan_stack(**FANOUT_ENV) as stack:
        batch = {"batch_id": f"bench-fanout-{time.time_ns()}", "tasks": workload.tasks(sizes.fanout_tasks)}
        elapsed, _ = run_batches(stack, [batch], sizes.timeout_s)
    sequential = sizes.fanout_tasks * FANOUT_ENV["SCORE_DELAY_MS"] / 1000
    return {"fanout_batch_s": round(elapsed, 3), "fanout_speedup": round(sequential / elapsed, 2),
            "fanout_sequential_s": sequential}


# Scenarios 2 and 4 (and the peers' throughput run): no delay, one scorer with 8 slots.
THROUGHPUT_ENV = {"SCORE_DELAY_MS": 0, "SCORER_CONCURRENCY": 8}


def scenario_throughput_big_noop(sizes: Sizes, out: Path) -> dict[str, Any]:
    """One stack, no delay, one scorer: throughput, small-batch latency (on the stack idle again), the CPU
    profiles (written to ``out``), the steady state, a big batch, the bare engine's ceiling, then the two bursts
    (last: what they leave in the queue and the streams cannot touch the figures before them)."""
    figures: dict[str, Any] = {}
    # The sidecars serve Go's pprof (an idle listener until it is asked for a profile).
    with taskfan_stack(SIDECAR_PROFILING="on", **THROUGHPUT_ENV) as stack:
        figures.update(guard("throughput", lambda: throughput(stack, sizes)))
        # On an idle stack, before the longer work (Dapr purges finished workflows a minute after they end).
        figures.update(guard("small batch latency", lambda: small_batch_latency(stack, sizes, settle=True)))
        figures.update(guard("profile", lambda: profile_throughput(stack, sizes, out)))
        figures.update(guard("steady state", lambda: steady_state(stack, sizes)))
        figures.update(guard("big batch", lambda: big_batch(stack, sizes)))
        figures.update(guard("engine ceiling", lambda: noop_engine(stack, sizes)))
        figures.update(guard("burst", lambda: scenario_burst(stack, sizes)))
        figures.update(guard("many batches", lambda: scenario_many_batches(stack, sizes)))
    return figures


def throughput(stack: Stack, sizes: Sizes) -> dict[str, Any]:
    """2,000 tasks in batches of 100 published at once, and the CPU each process of the stack spent on them."""
    batches = workload.batches(sizes.throughput_tasks, sizes.throughput_batch, f"bench-tp-{time.time_ns()}")
    with CpuMeter(stack_pids(stack)) as cpu:
        elapsed, latencies = run_batches(stack, batches, sizes.timeout_s)
    rate = sizes.throughput_tasks / elapsed
    p50, p95 = quantile_ms(latencies)
    return {
        "tasks_per_s": round(rate, 2),
        "overhead_ms_per_task": round(1000 / rate, 2),  # no delay configured: all of it is overhead
        "batch_latency_p50_s": round(p50 / 1000, 3),
        "batch_latency_p95_s": round(p95 / 1000, 3),
        "cpu_ms_per_task": cpu.total_ms_per_unit(sizes.throughput_tasks),
        "cpu_ms_per_task_by_process": cpu.ms_per_unit(sizes.throughput_tasks),
    }


def profile_throughput(stack: Stack, sizes: Sizes, out: Path) -> dict[str, Any]:
    """The throughput work again, batches of ``throughput_batch`` kept ``steady_batches_in_flight`` in flight for
    ``profile_s`` seconds, while py-spy samples the workflow app and Go's profiler its sidecar (bench/profile.py).
    Apart from the timed run: sampling costs the workflow app CPU, and that run is too short for a profile."""
    client = TaskfanClient(stack)
    prefix = f"bench-profile-{time.time_ns()}"
    published = 0

    def publish_next() -> None:
        nonlocal published
        published += 1
        client.publish({"batch_id": f"{prefix}-{published:05d}",
                        "tasks": workload.tasks(sizes.throughput_batch, prefix=f"p{published}")})

    pprof_url = f"http://127.0.0.1:{stack.workflow.profile_port}"
    try:
        with CpuProfiles(stack_pids(stack)["workflow"], pprof_url, sizes.profile_s, out, REPO_ROOT) as profiles:
            for _ in range(sizes.steady_batches_in_flight):
                publish_next()
            done = 0
            ends = time.monotonic() + sizes.profile_s
            while time.monotonic() < ends:
                for _ in client.outcomes(block_ms=200):
                    done += 1
                    publish_next()
        client.drain(sizes.timeout_s, "profiled")
    finally:
        client.close()
    for path in profiles.written:
        if path.suffix == ".txt":
            say(f"{path.name}, the top lines:\n" + "\n".join(path.read_text().splitlines()[:14]))
    return {"profile_s": sizes.profile_s, "profile_tasks": done * sizes.throughput_batch,
            "profile_files": [path.name for path in profiles.written]}


def keep_in_flight(sizes: Sizes, prefix: str, publish: Callable[[dict[str, Any]], None],
                   finished: Callable[[], int], while_warming: Callable[[], None] = lambda: None) -> int:
    """The steady state's loop, the same for Taskfan and its peer: batches of ``throughput_batch`` tasks kept
    ``steady_batches_in_flight`` in flight (one published as each finishes) for ``steady_warmup_s`` + ``steady_s``.

    ``publish(batch)`` publishes one batch; ``finished()`` waits at most ~200 ms and returns how many batches
    finished, each checked, since its last call; ``while_warming()`` runs on each turn of the warm-up. Returns
    the tasks of the batches that finished in the last ``steady_s`` seconds; the caller drains the rest.
    """
    published = 0

    def publish_next() -> None:
        nonlocal published
        published += 1
        publish({"batch_id": f"{prefix}-{published:05d}",
                 "tasks": workload.tasks(sizes.throughput_batch, prefix=f"s{published}")})

    start = time.perf_counter()
    window_start, window_end = start + sizes.steady_warmup_s, start + sizes.steady_warmup_s + sizes.steady_s
    for _ in range(sizes.steady_batches_in_flight):
        publish_next()
    in_window = 0
    while time.perf_counter() < window_end:
        for _ in range(finished()):
            if time.perf_counter() >= window_start:
                in_window += sizes.throughput_batch
            publish_next()
        if time.perf_counter() < window_start:
            while_warming()
    return in_window


def steady_state(stack: Stack, sizes: Sizes) -> dict[str, Any]:
    """Batches of ``throughput_batch`` (100) kept in flight (a new one published as each outcome arrives) for the
    warm-up plus ``steady_s`` seconds; the rate counts the tasks whose outcome arrived in the last ``steady_s``."""
    client = TaskfanClient(stack)
    cpu = CpuMeter(stack_pids(stack))
    try:
        # The window's CPU only: the reading starts again until the warm-up ends.
        in_window = keep_in_flight(sizes, f"bench-steady-{time.time_ns()}", client.publish,
                                   lambda: len(client.outcomes(block_ms=200)), while_warming=cpu.start)
        cpu.stop()
        client.drain(sizes.timeout_s, "steady-state")
    finally:
        client.close()
    return {"steady_tasks_per_s": round(in_window / sizes.steady_s, 2),
            "steady_cpu_ms_per_task": cpu.total_ms_per_unit(max(1, in_window)),
            "steady_publish_s": round(sizes.steady_warmup_s + sizes.steady_s, 1)}


def measure_small_batches(sizes: Sizes, prefix: str, run_one: Callable[[dict[str, Any]], list[float]],
                          ) -> dict[str, Any]:
    """A 5-task batch on an idle system, one after another: publish to outcome, as a user waits for it.
    ``run_one(batch)`` runs one batch and returns its latency (in a list)."""
    latencies = []
    for i in range(sizes.small_batches):
        latencies += run_one({"batch_id": f"bench-small-{time.time_ns()}-{i}", "tasks": workload.tasks(5)})
    p50, p95 = quantile_ms(latencies)
    return {f"{prefix}small_batch_latency_p50_ms": p50, f"{prefix}small_batch_latency_p95_ms": p95}


# A stack is idle once its processes spend less than this share of one core (its own timers, heartbeats and
# the console's refreshes: about 0.08 measured), over IDLE_WINDOW_S.
IDLE_CORES = 0.15
IDLE_WINDOW_S = 2.0


def settled(stack: Stack, timeout_s: float = 60) -> float:
    """Wait until the stack is idle (``IDLE_CORES``), at most ``timeout_s``; the seconds waited."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        with CpuMeter(stack_pids(stack)) as cpu:
            time.sleep(IDLE_WINDOW_S)
        if sum(cpu.seconds.values()) / IDLE_WINDOW_S < IDLE_CORES:
            break
    return round(time.perf_counter() - start, 1)


def small_batch_latency(stack: Stack, sizes: Sizes, settle: bool = False) -> dict[str, Any]:
    """5-task batches one after another; ``settle``: on an idle stack (``settled``), the wait in the figures."""
    waited = {"small_batch_settle_s": settled(stack)} if settle else {}
    return {**waited, **measure_small_batches(sizes, "", lambda batch: run_batches(stack, [batch], sizes.timeout_s)[1])}


def scenario_security_cost(sizes: Sizes) -> dict[str, Any]:
    """Throughput and the 5-task batch latency with the locks on (tokens, mTLS, access control, Redis
    password) and off (SECURITY=off), stacks alternating on/off so that drift hits both alike.
    """
    runs: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
    for _ in range(sizes.security_rounds):
        for mode in runs:
            with taskfan_stack(SECURITY=mode, **THROUGHPUT_ENV) as stack:
                # The figure counts only if the mode is what it says: a token-less call is refused (401) or not.
                answer = http_status(f"http://127.0.0.1:{stack.workflow.http_port}/v1.0/metadata")
                if (answer == 401) != (mode == "on"):
                    raise RuntimeError(f"SECURITY={mode}: a token-less call to a sidecar answered {answer}")
                figures = {**throughput(stack, sizes), **small_batch_latency(stack, sizes)}
            say(f"security {mode}: {figures}")
            runs[mode].append(figures)

    def mean(mode: str, key: str) -> float:
        return statistics.fmean(run[key] for run in runs[mode])

    rate = {mode: mean(mode, "tasks_per_s") for mode in runs}
    latency = {mode: mean(mode, "small_batch_latency_p50_ms") for mode in runs}
    return {"security_on_tasks_per_s": round(rate["on"], 2), "security_off_tasks_per_s": round(rate["off"], 2),
            "security_on_small_batch_p50_ms": round(latency["on"], 1),
            "security_off_small_batch_p50_ms": round(latency["off"], 1),
            # What the locks cost: throughput lost, and latency added, in percent of the unlocked figure.
            "security_cost_pct": round(100 * (rate["off"] - rate["on"]) / rate["off"], 1),
            "security_latency_cost_pct": round(100 * (latency["on"] - latency["off"]) / latency["off"], 1)}


def scenario_workflow_processes(sizes: Sizes) -> dict[str, Any]:
    """The throughput scenario with one and with two workflow processes, stacks alternating so that drift hits
    both alike: on 2 cores the point is that the second process does not lower the rate, and what CPU per task
    it costs (README, Scaling the workflow service)."""
    runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    for _ in range(sizes.workflow_rounds):
        for workflows in runs:
            with taskfan_stack(WORKFLOWS=workflows, **THROUGHPUT_ENV) as stack:
                figures = throughput(stack, sizes)
            say(f"{workflows} workflow process(es): {figures['tasks_per_s']} tasks/s, "
                f"{figures['cpu_ms_per_task']} ms CPU per task")
            runs[workflows].append(figures)

    def mean(workflows: int, key: str) -> float:
        return statistics.fmean(run[key] for run in runs[workflows])

    return {"workflows_1_tasks_per_s": round(mean(1, "tasks_per_s"), 2),
            "workflows_2_tasks_per_s": round(mean(2, "tasks_per_s"), 2),
            "workflows_2_vs_1": round(mean(2, "tasks_per_s") / mean(1, "tasks_per_s"), 2),
            "workflows_1_cpu_ms_per_task": round(mean(1, "cpu_ms_per_task"), 3),
            "workflows_2_cpu_ms_per_task": round(mean(2, "cpu_ms_per_task"), 3)}


def big_batch(stack: Stack, sizes: Sizes) -> dict[str, Any]:
    batch = {"batch_id": f"bench-big-{time.time_ns()}", "tasks": workload.tasks(sizes.big_batch_tasks)}
    with RssSampler(stack) as rss:
        elapsed, _ = run_batches(stack, [batch], sizes.timeout_s * 2)
    return {"big_batch_s": round(elapsed, 2), "big_batch_tasks_per_s": round(sizes.big_batch_tasks / elapsed, 2),
            "big_batch_peak_rss_mib": round(rss.peak_bytes / 2**20, 1)}


def noop_engine(stack: Stack, sizes: Sizes) -> dict[str, Any]:
    """The bare Dapr engine, many instances at once: a workflow fanning out 5 no-op activities (Dapr's benchmark
    shape), then a workflow of one no-op activity (Taskfan's shape: one workflow per batch, one activity for its
    one chunk) with the CPU every process spent on it, this process (the bare app) and its sidecar included:
    the engine's own floor per batch."""
    import dapr.conf
    import dapr.ext.workflow as wf

    def noop(ctx: wf.WorkflowActivityContext, value: int) -> int:
        return value

    def fan_out_five(ctx: wf.DaprWorkflowContext, _: int):
        results = yield wf.when_all([ctx.call_activity("bench_noop", input=i) for i in range(5)])
        return sum(results)

    def one_activity(ctx: wf.DaprWorkflowContext, _: int):
        return (yield ctx.call_activity("bench_noop", input=1))

    dapr.conf.settings.DAPR_API_TOKEN = stack.secrets.sidecar_token("bench-noop")  # read at import otherwise
    sidecar, daprd = stack.start_sidecar("bench-noop")
    runtime = wf.WorkflowRuntime(host="127.0.0.1", port=str(sidecar.grpc_port), maximum_thread_pool_workers=16)
    try:
        runtime.register_workflow(fan_out_five, name="bench_fan_out_five")
        runtime.register_workflow(one_activity, name="bench_one_activity")
        runtime.register_activity(noop, name="bench_noop")
        runtime.start()
        runtime.wait_for_worker_ready(timeout=60)
        client = wf.DaprWorkflowClient(host="127.0.0.1", port=str(sidecar.grpc_port))

        def run_all(name: str) -> float:
            prefix = f"noop-{time.time_ns()}"
            start = time.perf_counter()
            ids = [client.schedule_new_workflow(name, input=0, instance_id=f"{prefix}-{i}")
                   for i in range(sizes.noop_workflows)]
            for instance_id in ids:
                state = client.wait_for_workflow_completion(instance_id, timeout_in_seconds=int(sizes.timeout_s))
                if state is None or state.runtime_status.name != "COMPLETED":
                    raise RuntimeError(f"noop workflow {instance_id} ended {state and state.runtime_status.name}")
            return time.perf_counter() - start

        five_s = run_all("bench_fan_out_five")
        with CpuMeter({**stack_pids(stack), "bench-noop-daprd": daprd.pid, "bench-noop-app": os.getpid()}) as cpu:
            one_s = run_all("bench_one_activity")
    finally:
        runtime.shutdown()
        stack.stop_sidecar(daprd)
    return {"dapr_noop_activities_per_s": round(5 * sizes.noop_workflows / five_s, 2),
            "dapr_noop_workflows_per_s": round(sizes.noop_workflows / five_s, 2),
            "dapr_one_activity_workflows_per_s": round(sizes.noop_workflows / one_s, 2),
            "dapr_one_activity_cpu_ms_per_workflow": cpu.total_ms_per_unit(sizes.noop_workflows),
            "dapr_one_activity_cpu_ms_by_process": cpu.ms_per_unit(sizes.noop_workflows)}


def scenario_burst(stack: Stack, sizes: Sizes) -> dict[str, Any]:
    """100 batches x 1,000 tasks published at once: admission control queues them, memory stays bounded."""
    figures = burst(stack, sizes.burst_batches, sizes.burst_tasks, f"bench-burst-{time.time_ns()}", sizes.timeout_s)
    if figures["healthz_failures"] or figures["healthz_max_ms"] >= 1000:
        raise RuntimeError(f"ingest's /healthz was slow or failed during the burst: {figures}")
    name = f"burst_{figures['tasks'] // 1000}k"
    return {f"{name}_s": figures["elapsed_s"], f"{name}_tasks_per_s": figures["tasks_per_s"],
            "burst_publish_s": figures["publish_s"], "burst_peak_rss_mib": figures["peak_rss_mib"],
            "burst_healthz_max_ms": figures["healthz_max_ms"], "burst_max_queued": figures["max_queued"]}


def scenario_many_batches(stack: Stack, sizes: Sizes) -> dict[str, Any]:
    """10,000 batches x 10 tasks published at once: a queue that long costs each ledger change no more than a
    short one (``ledger_change_p99_ms``), ingest stays responsive, and every batch gets its outcome."""
    figures = burst(stack, sizes.many_batches, 10, f"bench-many-{time.time_ns()}", sizes.timeout_s * 2)
    name = "burst_10k" if sizes.many_batches == 10_000 else f"burst_{sizes.many_batches}"
    return {f"{name}_batches_s": figures["elapsed_s"], f"{name}_healthz_max_ms": figures["healthz_max_ms"],
            f"{name}_max_queued": figures["max_queued"], "ledger_change_p99_ms": figures["ledger_change_p99_ms"],
            f"{name}_tasks_per_s": figures["tasks_per_s"]}


SCALING_ENV = {"SCORE_DELAY_MS": 200, "SCORER_CONCURRENCY": 4}
# Small batches over several scorers: slow tasks, one slot per replica (issue: an even spread).
SPREAD_ENV = {"SCORE_DELAY_MS": 250, "SCORER_CONCURRENCY": 1}
SPREAD_REPLICAS = (3, 4)
# Chunks in flight per batch, the same for every system: Taskfan's MAX_IN_FLIGHT / 100.
PARALLEL_CHUNKS = Settings.from_env().max_in_flight // 100


def scenario_scaling(sizes: Sizes) -> dict[str, Any]:
    """The same slow work on 1, 2 and 4 scorer replicas: one stack, scaled up in place between the runs as
    `taskfan stack scale` does (each run starts once the new replicas are ready)."""
    rates: dict[str, float] = {}
    with taskfan_stack(1, **SCALING_ENV) as stack:
        for replicas in sizes.scaling_replicas:
            stack.scale(replicas, progress=lambda _: None)
            batches = workload.batches(sizes.scaling_tasks, 100, f"bench-scale{replicas}-{time.time_ns()}")
            elapsed, _ = run_batches(stack, batches, sizes.timeout_s)
            rates[str(replicas)] = round(sizes.scaling_tasks / elapsed, 2)
            say(f"scaling: {replicas} scorer(s) -> {rates[str(replicas)]} tasks/s")
    top = str(max(sizes.scaling_replicas))
    return {"scaling_tasks_per_s": rates, f"scaling_ratio_{top}x": round(rates[top] / rates["1"], 2)}


def measure_spread(sizes: Sizes, prefix: str,
                   run_on: Callable[[int, list[dict[str, Any]]], list[float]]) -> dict[str, Any]:
    """For each N of SPREAD_REPLICAS, a batch of ``spread_tasks_per_replica`` x N slow tasks, timed on one
    replica and on N; ``run_on(replicas, batches)`` runs the batches one after another on a system with
    that many scorer replicas (SPREAD_ENV) and returns each one's seconds."""
    batches = [{"batch_id": f"bench-spread{n}-{time.time_ns()}",
                "tasks": workload.tasks(sizes.spread_tasks_per_replica * n)} for n in SPREAD_REPLICAS]
    on_one = dict(zip(SPREAD_REPLICAS, run_on(1, batches), strict=True))
    on_many = {n: run_on(n, [batch])[0] for n, batch in zip(SPREAD_REPLICAS, batches, strict=True)}
    figures: dict[str, Any] = {f"{prefix}spread_batch_s": {
        f"{n * sizes.spread_tasks_per_replica} tasks on {r}": round(t, 3)
        for n in SPREAD_REPLICAS for r, t in ((1, on_one[n]), (n, on_many[n]))}}
    for n in SPREAD_REPLICAS:
        figures[f"{prefix}spread_speedup_{n}x"] = round(on_one[n] / on_many[n], 2)
    return figures


def scenario_spread(sizes: Sizes) -> dict[str, Any]:
    """A batch of 8 slow tasks per replica, one slot per replica: how much faster N replicas finish it."""
    with taskfan_stack(1, **SPREAD_ENV) as stack:
        def run_on(replicas: int, batches: list[dict[str, Any]]) -> list[float]:
            stack.scale(replicas, progress=lambda _: None)  # in place, up only: 1, then 3, then 4
            # A batch id runs once per stack (a second one is a duplicate): each run gets its own.
            return [run_batches(stack, [{**batch, "batch_id": f"{batch['batch_id']}-on-{replicas}"}],
                                sizes.timeout_s)[0] for batch in batches]

        return measure_spread(sizes, "", run_on)


# --- the Temporal peer ------------------------------------------------------------------------------


@contextlib.contextmanager
def temporal(score_replicas: int, env: dict[str, int]) -> Iterator[temporal_pipeline.TemporalPeer]:
    refuse_busy_port(TEMPORAL_PORT, "the Temporal peer's dev server")
    with temporal_pipeline.temporal_peer(TEMPORAL_PORT, score_replicas, env["SCORER_CONCURRENCY"],
                                         env["SCORE_DELAY_MS"],
                                         ready=lambda check, what: wait_until(check, what, timeout=120)) as peer:
        temporal_run(peer, [warm_up_batch()], 120)
        yield peer


def temporal_run(peer: temporal_pipeline.TemporalPeer, batches: list[dict[str, Any]],
                 timeout: float) -> tuple[float, list[float]]:
    elapsed, latencies, outcomes = peer.run(batches, PARALLEL_CHUNKS, timeout)
    for batch, outcome in zip(batches, outcomes, strict=True):
        workload.check_outcome(batch, outcome, "Temporal")
    return elapsed, latencies


def scenario_temporal(sizes: Sizes) -> dict[str, Any]:
    """Every Taskfan scenario that has a peer, on Temporal (bench/peers/temporal_pipeline.py)."""
    figures: dict[str, Any] = {}
    with temporal(1, THROUGHPUT_ENV) as peer:
        batches = workload.batches(sizes.throughput_tasks, sizes.throughput_batch, f"temporal-tp-{time.time_ns()}")
        with CpuMeter(peer.pids()) as cpu:
            elapsed, _ = temporal_run(peer, batches, sizes.timeout_s)
        figures["temporal_tasks_per_s"] = round(sizes.throughput_tasks / elapsed, 2)
        figures["temporal_cpu_ms_per_task"] = cpu.total_ms_per_unit(sizes.throughput_tasks)
        figures["temporal_cpu_ms_per_task_by_process"] = cpu.ms_per_unit(sizes.throughput_tasks)
        figures.update(measure_small_batches(
            sizes, "temporal_", lambda batch: temporal_run(peer, [batch], sizes.timeout_s)[1]))
    with temporal(1, FANOUT_ENV) as peer:
        batch = {"batch_id": f"temporal-fanout-{time.time_ns()}", "tasks": workload.tasks(sizes.fanout_tasks)}
        figures["temporal_fanout_batch_s"] = round(temporal_run(peer, [batch], sizes.timeout_s)[0], 3)
    rates: dict[str, float] = {}
    for replicas in sizes.scaling_replicas:
        with temporal(replicas, SCALING_ENV) as peer:
            batches = workload.batches(sizes.scaling_tasks, 100, f"temporal-scale{replicas}-{time.time_ns()}")
            rates[str(replicas)] = round(sizes.scaling_tasks / temporal_run(peer, batches, sizes.timeout_s)[0], 2)
    figures["temporal_scaling_tasks_per_s"] = rates
    def run_on(replicas: int, batches: list[dict[str, Any]]) -> list[float]:
        with temporal(replicas, SPREAD_ENV) as peer:
            return [temporal_run(peer, [batch], sizes.timeout_s)[0] for batch in batches]

    figures.update(measure_spread(sizes, "temporal_", run_on))
    return figures


# --- the Celery peer and the in-process floor ----------------------------------------------------------


@contextlib.contextmanager
def celery_redis() -> Iterator[None]:
    """A Redis of its own for Celery (broker and results) with the persistence Taskfan's Redis has (an
    append-only file, fsync as REDIS_APPENDFSYNC), for the whole peers scenario."""
    refuse_busy_port(CELERY_REDIS_PORT, "the Celery peer's Redis")
    redis_dir = tempfile.mkdtemp(prefix="bench-celery-redis-")
    proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(CELERY_REDIS_PORT),
                             "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
                             "--appendfsync", Settings.from_env().redis_appendfsync, "--dir", redis_dir],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: redis_up(CELERY_REDIS_PORT), "celery redis", timeout=30,
                   alive=lambda: None if proc.poll() is None else "redis-server exited")
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        shutil.rmtree(redis_dir, ignore_errors=True)


def refuse_busy_port(port: int, what: str) -> None:
    """The benchmark starts its own servers; it never flushes or reuses one that already listens."""
    if port_open(port):
        raise RuntimeError(f"port {port}, for {what}, is in use by {port_owner(port) or 'another program'}; "
                           "the benchmark only uses servers it starts itself")


def redis_up(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port).ping())
    except redis.RedisError:
        return False


@contextlib.contextmanager
def celery_workers(replicas: int, env: dict[str, int]) -> Iterator[None]:
    """Celery workers: one `steps` worker (a process per core), one `score` worker per replica."""
    from bench.peers.celery_pipeline import app, run_chunked

    worker_env = {**os.environ, "SCORE_DELAY_MS": str(env["SCORE_DELAY_MS"])}
    celery = [sys.executable, "-m", "celery", "-A", "bench.peers.celery_pipeline", "worker", "--loglevel", "warning",
              "--without-heartbeat", "--without-gossip", "--without-mingle"]
    workers = [[*celery, "-Q", "steps", "-c", str(os.cpu_count() or 2), "-n", "steps@%h"]]
    workers += [[*celery, "-Q", "score", "-c", str(env["SCORER_CONCURRENCY"]), "-n", f"score{i}@%h"]
                for i in range(replicas)]
    redis.Redis(port=CELERY_REDIS_PORT).flushall()
    procs = [subprocess.Popen(cmd, env=worker_env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for cmd in workers]
    try:
        wait_until(lambda: len(app.control.ping(timeout=0.5) or []) >= len(workers), "celery workers", timeout=60)
        celery_run(run_chunked, [warm_up_batch()], 120)
        yield
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def scenario_peers(sizes: Sizes) -> dict[str, Any]:
    os.environ["BENCH_CELERY_BROKER"] = f"redis://127.0.0.1:{CELERY_REDIS_PORT}/0"
    with celery_redis():
        return peers(sizes)


def celery_run(run: Callable[..., tuple[float, list[float], list[dict[str, Any]]]],
               batches: list[dict[str, Any]], timeout: float) -> tuple[float, list[float]]:
    elapsed, latencies, outcomes = run(batches, timeout)
    for batch, outcome in zip(batches, outcomes, strict=True):
        workload.check_outcome(batch, outcome, "Celery")
    return elapsed, latencies


def celery_steady_state(sizes: Sizes) -> dict[str, Any]:
    """Taskfan's steady state (keep_in_flight) on the Celery workers running, each batch a chord of chunk
    chains as in run_chunked; every aggregate is checked as it arrives, and those still in flight after."""
    from celery.exceptions import TimeoutError as ResultTimeout

    from bench.peers.celery_pipeline import submit_chunked

    in_flight: dict[str, tuple[dict[str, Any], Any]] = {}  # batch id -> (batch, its AsyncResult), oldest first

    def publish(batch: dict[str, Any]) -> None:
        in_flight[batch["batch_id"]] = (batch, submit_chunked(batch))

    def finished() -> int:
        # Celery has no "wait for any": wait on the oldest (the queues are FIFO), then take all that are done.
        with contextlib.suppress(ResultTimeout):
            next(iter(in_flight.values()))[1].get(timeout=0.2)
        done = [batch_id for batch_id, (_, result) in in_flight.items() if result.ready()]
        for batch_id in done:
            batch, result = in_flight.pop(batch_id)
            workload.check_outcome(batch, result.get(timeout=sizes.timeout_s), "Celery")
        return len(done)

    in_window = keep_in_flight(sizes, f"peer-steady-{time.time_ns()}", publish, finished)
    for batch, result in in_flight.values():
        workload.check_outcome(batch, result.get(timeout=sizes.timeout_s), "Celery")
    return {"celery_steady_tasks_per_s": round(in_window / sizes.steady_s, 2)}


def peers(sizes: Sizes) -> dict[str, Any]:
    from bench.peers.celery_pipeline import run_chunked, run_per_task

    figures: dict[str, Any] = {}
    tp_batches = workload.batches(sizes.throughput_tasks, sizes.throughput_batch, "peer-tp")
    with celery_workers(1, THROUGHPUT_ENV):
        figures["celery_tasks_per_s"] = round(
            sizes.throughput_tasks / celery_run(run_chunked, tp_batches, sizes.timeout_s)[0], 2)
        figures["celery_per_task_chain_tasks_per_s"] = round(
            sizes.throughput_tasks / celery_run(run_per_task, tp_batches, sizes.timeout_s)[0], 2)
        figures.update(celery_steady_state(sizes))
        figures.update(measure_small_batches(
            sizes, "celery_", lambda batch: celery_run(run_chunked, [batch], sizes.timeout_s)[1]))
    concurrency, delay_ms = THROUGHPUT_ENV["SCORER_CONCURRENCY"], THROUGHPUT_ENV["SCORE_DELAY_MS"]
    figures["inprocess_tasks_per_s"] = round(
        inprocess.tasks_per_s(tp_batches, concurrency=concurrency, delay_ms=delay_ms, rounds=9), 2)

    celery_rates, floor_rates = {}, {}
    for replicas in sizes.scaling_replicas:
        batches = workload.batches(sizes.scaling_tasks, 100, f"peer-scale{replicas}")
        with celery_workers(replicas, SCALING_ENV):  # slow tasks: one broker task each (run_per_task)
            celery_rates[str(replicas)] = round(
                sizes.scaling_tasks / celery_run(run_per_task, batches, sizes.timeout_s)[0], 2)
        floor_rates[str(replicas)] = round(inprocess.tasks_per_s(
            batches, replicas=replicas, concurrency=SCALING_ENV["SCORER_CONCURRENCY"],
            delay_ms=SCALING_ENV["SCORE_DELAY_MS"]), 2)
    figures["celery_scaling_tasks_per_s"] = celery_rates
    figures["inprocess_scaling_tasks_per_s"] = floor_rates

    def run_on(replicas: int, batches: list[dict[str, Any]]) -> list[float]:
        with celery_workers(replicas, SPREAD_ENV):
            return [celery_run(run_per_task, [batch], sizes.timeout_s)[0] for batch in batches]

    figures.update(measure_spread(sizes, "celery_", run_on))
    return figures


# --- reporting -------------------------------------------------------------------------------------


def ratios(results: dict[str, Any]) -> dict[str, float]:
    """Taskfan against each peer, > 1 where Taskfan is ahead (a rate over a rate, a time under a time)."""
    out: dict[str, float] = {}

    def ratio(name: str, numerator: str | float | None, denominator: str | float | None) -> None:
        top = results.get(numerator) if isinstance(numerator, str) else numerator
        bottom = results.get(denominator) if isinstance(denominator, str) else denominator
        if isinstance(top, int | float) and isinstance(bottom, int | float) and bottom:
            out[name] = round(top / bottom, 3)

    top = str(max(Sizes().scaling_replicas))
    for peer in ("temporal", "celery"):
        ratio(f"vs_{peer}", "tasks_per_s", f"{peer}_tasks_per_s")
        ratio(f"vs_{peer}_small_batch_latency", f"{peer}_small_batch_latency_p50_ms", "small_batch_latency_p50_ms")
        scaling, peer_scaling = results.get("scaling_tasks_per_s"), results.get(f"{peer}_scaling_tasks_per_s")
        if isinstance(scaling, dict) and isinstance(peer_scaling, dict):
            ratio(f"vs_{peer}_scaling_{top}x", scaling.get(top), peer_scaling.get(top))
        for n in SPREAD_REPLICAS:
            ratio(f"vs_{peer}_spread_{n}x", f"spread_speedup_{n}x", f"{peer}_spread_speedup_{n}x")
    ratio("vs_temporal_fanout", "temporal_fanout_batch_s", "fanout_batch_s")
    ratio("vs_celery_steady", "steady_tasks_per_s", "celery_steady_tasks_per_s")
    return out


def guard(name: str, scenario: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one scenario; a failure is recorded with its reason, and the run goes on."""
    say(f"{name}: running")
    started = time.perf_counter()
    try:
        figures = scenario()
    except Exception as exc:  # noqa: BLE001 - any failure becomes a reported figure
        traceback.print_exc()
        say(f"{name}: FAILED: {exc}")
        return {f"{name.replace(' ', '_')}_error": f"{type(exc).__name__}: {exc}"}
    say(f"{name}: done in {time.perf_counter() - started:.0f}s: {figures}")
    return figures


def environment() -> dict[str, Any]:
    import celery
    import temporalio

    return {"cores": os.cpu_count(), "dapr_runtime": DAPR_VERSION, "python": platform.python_version(),
            "celery": celery.__version__, "temporalio": temporalio.__version__,
            "temporal_cli": temporal_pipeline.cli_version(), "machine": platform.machine()}


def markdown(results: dict[str, Any]) -> str:
    lines = ["| key | value |", "|---|---|"]
    for key, value in results.items():
        lines.append(f"| {key} | {json.dumps(value) if isinstance(value, dict | list) else value} |")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (bars, ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    # Left: the throughput work (2,000 fast tasks in batches of 100), each system measured in this run.
    systems = [("Taskfan\n(Dapr)", "tasks_per_s"), ("Temporal", "temporal_tasks_per_s"),
               ("Celery\nsame shape", "celery_tasks_per_s"),
               ("Celery\nper-task chain", "celery_per_task_chain_tasks_per_s"),
               ("in-process\nfloor", "inprocess_tasks_per_s")]
    shown = [(label, results[key]) for label, key in systems if isinstance(results.get(key), int | float)]
    if shown:
        drawn = bars.bar([label for label, _ in shown], [rate for _, rate in shown],
                         color=["tab:blue", "tab:purple", "tab:green", "tab:olive", "tab:grey"][:len(shown)])
        bars.bar_label(drawn, fmt="%.0f")
        bars.set_yscale("log")
    bars.set_ylabel("tasks / s (log scale)")
    bars.set_title("Throughput: 2,000 fast tasks in batches of 100")
    bars.grid(alpha=0.3, axis="y")
    series = [("Taskfan (Dapr)", "scaling_tasks_per_s", "o-"), ("Temporal", "temporal_scaling_tasks_per_s", "D-"),
              ("Celery (same shape)", "celery_scaling_tasks_per_s", "s-"),
              ("in-process floor", "inprocess_scaling_tasks_per_s", "^--")]
    for label, key, style in series:
        rates = results.get(key)
        if isinstance(rates, dict) and rates:
            xs = sorted(int(k) for k in rates)
            ax.plot(xs, [rates[str(x)] for x in xs], style, label=label)
    rates = results.get("scaling_tasks_per_s")
    if isinstance(rates, dict) and "1" in rates:
        xs = sorted(int(k) for k in rates)
        ax.plot(xs, [rates["1"] * x for x in xs], ":", color="grey", label="Taskfan, linear")
    ax.set_xticks(list(Sizes().scaling_replicas))
    ax.set_xlabel("scorer replicas")
    ax.set_ylabel("tasks / s")
    ax.set_title(f"Scorer scaling ({SCALING_ENV['SCORE_DELAY_MS']} ms/task, "
                 f"{SCALING_ENV['SCORER_CONCURRENCY']} per replica), {results.get('cores')} cores")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="every scenario at a tiny size (< 3 minutes)")
    parser.add_argument("--out", type=Path, default=None, help="results directory (default bench/results)")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else Sizes()
    out = args.out or (RESULTS if not args.quick else Path(tempfile.mkdtemp(prefix="bench-quick-")))
    out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    results: dict[str, Any] = {"mode": "quick" if args.quick else "full", **environment()}
    results.update(guard("fan-out", lambda: scenario_fanout(sizes)))
    results.update(scenario_throughput_big_noop(sizes, out))
    results.update(guard("security cost", lambda: scenario_security_cost(sizes)))
    results.update(guard("workflow processes", lambda: scenario_workflow_processes(sizes)))
    results.update(guard("scaling", lambda: scenario_scaling(sizes)))
    results.update(guard("spread", lambda: scenario_spread(sizes)))
    peers = [("temporal", lambda: scenario_temporal(sizes)), ("celery", lambda: scenario_peers(sizes))]
    if args.quick:  # figures too small to compare: the two peers side by side, each on ports of its own
        with concurrent.futures.ThreadPoolExecutor(len(peers)) as pool:
            for figures in pool.map(lambda peer: guard(*peer), peers):
                results.update(figures)
    else:
        for name, scenario in peers:
            results.update(guard(name, scenario))
    results.update(ratios(results))
    results["bench_wall_s"] = round(time.perf_counter() - started, 1)

    (out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, out / "latest.png")
    print(markdown(results))
    say(f"wrote {out / 'latest.json'} and {out / 'latest.png'}")
    failed = [k for k in results if k.endswith("_error")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
