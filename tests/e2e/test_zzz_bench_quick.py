"""Runs after `make down` (file order): `make bench-quick`'s code, once, so the benchmark cannot rot.

It asserts that every scenario produced its figures (and the throughput work its CPU profiles), never how fast
anything was.
"""

import json
import re
import subprocess
import sys

import pytest

from .helpers import REPO_ROOT

pytestmark = pytest.mark.e2e

KEYS = ["fanout_batch_s", "fanout_speedup", "tasks_per_s", "overhead_ms_per_task", "batch_latency_p50_s",
        "batch_latency_p95_s", "cpu_ms_per_task", "steady_tasks_per_s", "steady_cpu_ms_per_task", "scaling_ratio_4x",
        "big_batch_s", "big_batch_peak_rss_mib", "dapr_noop_activities_per_s", "dapr_one_activity_workflows_per_s",
        "dapr_one_activity_cpu_ms_per_workflow",
        "small_batch_latency_p50_ms", "small_batch_latency_p95_ms", "spread_speedup_3x", "spread_speedup_4x",
        "security_on_tasks_per_s", "security_off_tasks_per_s", "security_cost_pct", "security_latency_cost_pct",
        "workflows_1_tasks_per_s", "workflows_2_tasks_per_s", "workflows_2_vs_1",
        # the peers, each in every scenario it has, and Taskfan's ratio to it
        "temporal_tasks_per_s", "temporal_cpu_ms_per_task", "temporal_small_batch_latency_p50_ms",
        "temporal_small_batch_latency_p95_ms", "temporal_fanout_batch_s", "temporal_spread_speedup_3x", "vs_temporal",
        "vs_temporal_small_batch_latency", "vs_temporal_fanout", "vs_temporal_scaling_4x", "vs_temporal_spread_3x",
        "celery_tasks_per_s", "celery_per_task_chain_tasks_per_s", "celery_small_batch_latency_p50_ms",
        "celery_spread_speedup_3x", "celery_steady_tasks_per_s", "vs_celery", "vs_celery_steady",
        "vs_celery_small_batch_latency", "vs_celery_scaling_4x",
        "inprocess_tasks_per_s",
        # many small batches at once (200 in the quick run, 10,000 in make bench): the admission queue
        "burst_200_batches_s", "burst_200_healthz_max_ms", "ledger_change_p99_ms"]


@pytest.fixture(scope="module")
def temporal_cli() -> None:
    """The Temporal CLI the peer runs: on a fresh machine `make test` builds it in the background meanwhile
    (deploy/background-build.sh); this waits for that build (its lock), or builds it, failing with the reason."""
    done = subprocess.run(["bash", str(REPO_ROOT / "deploy" / "install-temporal.sh")], capture_output=True,
                          text=True, timeout=3600)
    assert done.returncode == 0, done.stderr[-4000:]


# func_only: the wait for the build above is not the benchmark's time.
@pytest.mark.timeout(960, func_only=True)  # every scenario and both peers, each at a tiny size
def test_bench_quick_produces_every_figure(tmp_path, temporal_cli):
    done = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--out", str(tmp_path)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads((tmp_path / "latest.json").read_text())
    missing = [k for k in KEYS if not isinstance(results.get(k), int | float)]
    assert missing == [], {k: results.get(k) for k in missing}
    for key in ("scaling_tasks_per_s", "temporal_scaling_tasks_per_s", "celery_scaling_tasks_per_s"):
        assert set(results[key]) == {"1", "2", "4"}, key
    # CPU per task, per process of the stack, from the processes' own counters
    assert {"workflow", "workflow-daprd", "scorer-0", "redis", "placement", "scheduler"} <= set(
        results["cpu_ms_per_task_by_process"])
    assert (tmp_path / "latest.png").stat().st_size > 10_000
    assert "| tasks_per_s |" in done.stdout
    # The throughput work's CPU profiles, named by what ran: the workflow app's own code among the Python
    # functions (py-spy), Dapr's packages among the sidecar's (Go's pprof).
    assert results["profile_files"] == ["profile-workflow.txt", "profile-workflow.speedscope.json",
                                        "profile-daprd-workflow.txt", "profile-daprd-workflow.pb.gz"]
    assert all((tmp_path / name).stat().st_size > 0 for name in results["profile_files"])
    python = (tmp_path / "profile-workflow.txt").read_text()
    assert re.search(r"^ +\d+ +[\d.]+%  \S+ +\((services/workflow|src/taskfan)/\S+\.py\)$", python, re.M), python
    assert "speedscope" in json.loads((tmp_path / "profile-workflow.speedscope.json").read_text())["$schema"]
    go = (tmp_path / "profile-daprd-workflow.txt").read_text()
    assert "Type: cpu" in go and re.search(r"%\s+github\.com/dapr/dapr/pkg/\S+", go), go
    assert "profile-workflow.txt, the top lines" in done.stderr
