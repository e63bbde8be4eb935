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
from bench.peers import inprocess
from taskfan import runfile, stack_secrets
from taskfan.contracts import OUTCOMES_TOPIC
from taskfan.settings import Settings, patched_environ
from taskfan.stack import Stack, port_open, port_owner, wait_until
from taskfan.stack.processes import http_status
from taskfan.versions import DAPR_VERSION

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "bench" / "results"
CELERY_REDIS_PORT = 6390
# The stacks of the benchmark run their own Redis here, never one they did not start (6379 may be a
# user's): the port must be free, and everything on it is thrown away with the run directory.
BENCH_REDIS_PORT = 6391


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
    burst_batches: int = 100
    burst_tasks: int = 1000
    timeout_s: float = 900


QUICK = Sizes(fanout_tasks=10, throughput_tasks=100, throughput_batch=50, scaling_tasks=40,
              big_batch_tasks=300, noop_workflows=10, small_batches=3, security_rounds=1, burst_batches=10,
              burst_tasks=100, timeout_s=120)


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
    with patched_environ({"RUN_DIR": run_dir, "REDIS_PORT": BENCH_REDIS_PORT, **env}):
        stack = Stack(Settings.from_env(), runfile.load(REPO_ROOT / "dapr.yaml"))
        try:
            stack.up(scorers, progress=lambda _: None)
            yield stack
        finally:
            stack.down(progress=lambda _: None)


def run_batches(stack: Stack, batches: list[dict[str, Any]], timeout: float) -> tuple[float, list[float]]:
    """Publish every batch through the ingest API at once; wait for each outcome on the stream.

    Returns the wall time from the first publish to the last outcome, and each batch's latency.
    """
    settings = stack.settings
    client = redis.Redis(host=settings.redis_host, port=settings.redis_port, password=stack.secrets.redis_password)
    last_id = "$"
    with contextlib.suppress(redis.ResponseError):
        last_id = client.xinfo_stream(OUTCOMES_TOPIC)["last-generated-id"]
    published: dict[str, float] = {}
    expected = {b["batch_id"]: len(b["tasks"]) for b in batches}
    start = time.perf_counter()
    with httpx.Client(base_url=stack.ingest_url, timeout=60,
                      headers=stack_secrets.ingest_headers(stack.secrets.ingest_token)) as http:
        for batch in batches:
            published[batch["batch_id"]] = time.perf_counter()
            response = http.post("/batches", json=batch)
            response.raise_for_status()
    latencies: list[float] = []
    deadline = time.monotonic() + timeout
    pending = set(expected)
    while pending:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(pending)} of {len(batches)} batches had no outcome after {timeout:.0f}s")
        for _, entries in client.xread({OUTCOMES_TOPIC: last_id}, block=1000, count=1000) or []:
            for entry_id, fields in entries:
                last_id = entry_id
                outcome = json.loads(fields[b"data"])["data"]
                batch_id = outcome["batch_id"]
                if batch_id in pending:
                    now = time.perf_counter()
                    if outcome["total"] != expected[batch_id] or outcome["failed"]:
                        raise RuntimeError(f"batch {batch_id}: unexpected outcome {outcome['total']} total, "
                                           f"{outcome['failed']} failed")
                    pending.discard(batch_id)
                    latencies.append(now - published[batch_id])
    return time.perf_counter() - start, latencies


# --- scenarios -------------------------------------------------------------------------------------


def scenario_fanout(sizes: Sizes) -> dict[str, Any]:
    delay_ms = 2000
    with taskfan_stack(SCORE_DELAY_MS=delay_ms, SCORER_CONCURRENCY=50) as stack:
        batch = {"batch_id": f"bench-fanout-{time.time_ns()}", "tasks": workload.tasks(sizes.fanout_tasks)}
        elapsed, _ = run_batches(stack, [batch], sizes.timeout_s)
    sequential = sizes.fanout_tasks * delay_ms / 1000
    return {"fanout_batch_s": round(elapsed, 3), "fanout_speedup": round(sequential / elapsed, 2),
            "fanout_sequential_s": sequential}


# Scenarios 2 and 4 (and the peers' throughput run): no delay, one scorer with 8 slots.
THROUGHPUT_ENV = {"SCORE_DELAY_MS": 0, "SCORER_CONCURRENCY": 8}


def scenario_throughput_big_noop(sizes: Sizes) -> dict[str, Any]:
    """Scenarios 2, 4 and 6 share one stack: no delay, one scorer."""
    figures: dict[str, Any] = {}
    with taskfan_stack(**THROUGHPUT_ENV) as stack:
        figures.update(guard("throughput", lambda: throughput(stack, sizes)))
        figures.update(guard("small batch latency", lambda: small_batch_latency(stack, sizes)))
        figures.update(guard("big batch", lambda: big_batch(stack, sizes)))
        figures.update(guard("engine ceiling", lambda: noop_engine(stack, sizes)))
    if "tasks_per_s" in figures and "dapr_noop_activities_per_s" in figures:
        figures["engine_share"] = round(3 * figures["tasks_per_s"] / figures["dapr_noop_activities_per_s"], 3)
    return figures


def throughput(stack: Stack, sizes: Sizes) -> dict[str, Any]:
    batches = workload.batches(sizes.throughput_tasks, sizes.throughput_batch, f"bench-tp-{time.time_ns()}")
    elapsed, latencies = run_batches(stack, batches, sizes.timeout_s)
    rate = sizes.throughput_tasks / elapsed
    quantiles = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else latencies * 19
    return {
        "tasks_per_s": round(rate, 2),
        "overhead_ms_per_task": round(1000 / rate, 2),  # no delay configured: all of it is overhead
        "batch_latency_p50_s": round(statistics.median(latencies), 3),
        "batch_latency_p95_s": round(quantiles[18], 3),
    }


def small_batch_latency(stack: Stack, sizes: Sizes) -> dict[str, Any]:
    """A 5-task batch on an idle stack, one after another: publish to outcome, as a user waits for it."""
    latencies = []
    for i in range(sizes.small_batches):
        batch = {"batch_id": f"bench-small-{time.time_ns()}-{i}", "tasks": workload.tasks(5)}
        latencies += run_batches(stack, [batch], sizes.timeout_s)[1]
    quantiles = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else latencies * 19
    return {"small_batch_latency_p50_ms": round(1000 * statistics.median(latencies), 1),
            "small_batch_latency_p95_ms": round(1000 * quantiles[18], 1)}


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


def big_batch(stack: Stack, sizes: Sizes) -> dict[str, Any]:
    batch = {"batch_id": f"bench-big-{time.time_ns()}", "tasks": workload.tasks(sizes.big_batch_tasks)}
    with RssSampler(stack) as rss:
        elapsed, _ = run_batches(stack, [batch], sizes.timeout_s * 2)
    return {"big_batch_s": round(elapsed, 2), "big_batch_tasks_per_s": round(sizes.big_batch_tasks / elapsed, 2),
            "big_batch_peak_rss_mib": round(rss.peak_bytes / 2**20, 1)}


def noop_engine(stack: Stack, sizes: Sizes) -> dict[str, Any]:
    """A bare Dapr workflow fanning out 5 no-op activities, many instances at once (Dapr's benchmark shape)."""
    import dapr.ext.workflow as wf

    def noop(ctx: wf.WorkflowActivityContext, value: int) -> int:
        return value

    def fan_out_five(ctx: wf.DaprWorkflowContext, _: int):
        results = yield wf.when_all([ctx.call_activity("bench_noop", input=i) for i in range(5)])
        return sum(results)

    import dapr.conf

    dapr.conf.settings.DAPR_API_TOKEN = stack.secrets.dapr_api_token  # the SDK reads it at import otherwise
    sidecar, daprd = stack.start_sidecar("bench-noop")
    runtime = wf.WorkflowRuntime(host="127.0.0.1", port=str(sidecar.grpc_port), maximum_thread_pool_workers=16)
    try:
        runtime.register_workflow(fan_out_five, name="bench_fan_out_five")
        runtime.register_activity(noop, name="bench_noop")
        runtime.start()
        runtime.wait_for_worker_ready(timeout=60)
        client = wf.DaprWorkflowClient(host="127.0.0.1", port=str(sidecar.grpc_port))
        prefix = f"noop-{time.time_ns()}"
        start = time.perf_counter()
        ids = [client.schedule_new_workflow("bench_fan_out_five", input=0, instance_id=f"{prefix}-{i}")
               for i in range(sizes.noop_workflows)]
        for instance_id in ids:
            state = client.wait_for_workflow_completion(instance_id, timeout_in_seconds=int(sizes.timeout_s))
            if state is None or state.runtime_status.name != "COMPLETED":
                raise RuntimeError(f"noop workflow {instance_id} ended {state and state.runtime_status.name}")
        elapsed = time.perf_counter() - start
    finally:
        runtime.shutdown()
        stack.stop_sidecar(daprd)
    return {"dapr_noop_activities_per_s": round(5 * sizes.noop_workflows / elapsed, 2),
            "dapr_noop_workflows_per_s": round(sizes.noop_workflows / elapsed, 2)}


def scenario_burst(sizes: Sizes) -> dict[str, Any]:
    """100 batches x 1,000 tasks published at once: admission control queues them, memory stays bounded."""
    with taskfan_stack(**THROUGHPUT_ENV) as stack:
        figures = burst(stack, sizes.burst_batches, sizes.burst_tasks, f"bench-burst-{time.time_ns()}",
                        sizes.timeout_s)
    if figures["healthz_failures"] or figures["healthz_max_ms"] >= 1000:
        raise RuntimeError(f"ingest's /healthz was slow or failed during the burst: {figures}")
    name = f"burst_{figures['tasks'] // 1000}k"
    return {f"{name}_s": figures["elapsed_s"], f"{name}_tasks_per_s": figures["tasks_per_s"],
            "burst_publish_s": figures["publish_s"], "burst_peak_rss_mib": figures["peak_rss_mib"],
            "burst_healthz_max_ms": figures["healthz_max_ms"], "burst_max_queued": figures["max_queued"]}


SCALING_ENV = {"SCORE_DELAY_MS": 200, "SCORER_CONCURRENCY": 4}


def scenario_scaling(sizes: Sizes) -> dict[str, Any]:
    rates: dict[str, float] = {}
    for replicas in sizes.scaling_replicas:
        with taskfan_stack(replicas, **SCALING_ENV) as stack:
            batches = workload.batches(sizes.scaling_tasks, 100, f"bench-scale{replicas}-{time.time_ns()}")
            elapsed, _ = run_batches(stack, batches, sizes.timeout_s)
        rates[str(replicas)] = round(sizes.scaling_tasks / elapsed, 2)
        say(f"scaling: {replicas} scorer(s) -> {rates[str(replicas)]} tasks/s")
    top = str(max(sizes.scaling_replicas))
    return {"scaling_tasks_per_s": rates, f"scaling_ratio_{top}x": round(rates[top] / rates["1"], 2)}


@contextlib.contextmanager
def celery_redis() -> Iterator[None]:
    """A Redis of its own for Celery (broker and results), for the whole peers scenario."""
    refuse_busy_port(CELERY_REDIS_PORT, "the Celery peer's Redis")
    redis_dir = tempfile.mkdtemp(prefix="bench-celery-redis-")
    proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(CELERY_REDIS_PORT),
                             "--bind", "127.0.0.1", "--save", "", "--dir", redis_dir],
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
def celery_workers(replicas: int, concurrency: int, delay_ms: int) -> Iterator[None]:
    """Celery workers: one `steps` worker (a process per core), one `score` worker per replica."""
    from bench.peers.celery_pipeline import app

    env = {**os.environ, "SCORE_DELAY_MS": str(delay_ms)}
    celery = [sys.executable, "-m", "celery", "-A", "bench.peers.celery_pipeline", "worker", "--loglevel", "warning",
              "--without-heartbeat", "--without-gossip", "--without-mingle"]
    workers = [[*celery, "-Q", "steps", "-c", str(os.cpu_count() or 2), "-n", "steps@%h"]]
    workers += [[*celery, "-Q", "score", "-c", str(concurrency), "-n", f"score{i}@%h"] for i in range(replicas)]
    redis.Redis(port=CELERY_REDIS_PORT).flushall()
    procs = [subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for cmd in workers]
    try:
        wait_until(lambda: len(app.control.ping(timeout=0.5) or []) >= len(workers), "celery workers", timeout=60)
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


def peers(sizes: Sizes) -> dict[str, Any]:
    from bench.peers import celery_pipeline

    figures: dict[str, Any] = {}
    tp_batches = workload.batches(sizes.throughput_tasks, sizes.throughput_batch, "peer-tp")
    concurrency, delay_ms = THROUGHPUT_ENV["SCORER_CONCURRENCY"], THROUGHPUT_ENV["SCORE_DELAY_MS"]
    with celery_workers(1, concurrency, delay_ms):
        elapsed = celery_pipeline.run(tp_batches, sizes.timeout_s)
    figures["celery_tasks_per_s"] = round(sizes.throughput_tasks / elapsed, 2)
    figures["inprocess_tasks_per_s"] = round(
        inprocess.tasks_per_s(tp_batches, concurrency=concurrency, delay_ms=delay_ms), 2)

    celery_rates, floor_rates = {}, {}
    for replicas in sizes.scaling_replicas:
        batches = workload.batches(sizes.scaling_tasks, 100, f"peer-scale{replicas}")
        with celery_workers(replicas, SCALING_ENV["SCORER_CONCURRENCY"], SCALING_ENV["SCORE_DELAY_MS"]):
            elapsed = celery_pipeline.run(batches, sizes.timeout_s)
        celery_rates[str(replicas)] = round(sizes.scaling_tasks / elapsed, 2)
        floor_rates[str(replicas)] = round(inprocess.tasks_per_s(
            batches, replicas=replicas, concurrency=SCALING_ENV["SCORER_CONCURRENCY"],
            delay_ms=SCALING_ENV["SCORE_DELAY_MS"]), 2)
    figures["celery_scaling_tasks_per_s"] = celery_rates
    figures["inprocess_scaling_tasks_per_s"] = floor_rates
    return figures


# --- reporting -------------------------------------------------------------------------------------


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

    return {"cores": os.cpu_count(), "dapr_runtime": DAPR_VERSION, "python": platform.python_version(),
            "celery": celery.__version__, "machine": platform.machine()}


def markdown(results: dict[str, Any]) -> str:
    lines = ["| key | value |", "|---|---|"]
    for key, value in results.items():
        lines.append(f"| {key} | {json.dumps(value) if isinstance(value, dict) else value} |")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    series = [("Taskfan (Dapr)", "scaling_tasks_per_s", "o-"), ("Celery chord", "celery_scaling_tasks_per_s", "s-"),
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
    results.update(scenario_throughput_big_noop(sizes))
    results.update(guard("burst", lambda: scenario_burst(sizes)))
    results.update(guard("security cost", lambda: scenario_security_cost(sizes)))
    results.update(guard("scaling", lambda: scenario_scaling(sizes)))
    results.update(guard("peers", lambda: scenario_peers(sizes)))
    if "tasks_per_s" in results and "celery_tasks_per_s" in results:
        results["vs_celery"] = round(results["tasks_per_s"] / results["celery_tasks_per_s"], 3)
    results["bench_wall_s"] = round(time.perf_counter() - started, 1)

    (out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, out / "latest.png")
    print(markdown(results))
    say(f"wrote {out / 'latest.json'} and {out / 'latest.png'}")
    failed = [k for k in results if k.endswith("_error")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
