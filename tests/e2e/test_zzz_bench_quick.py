"""Runs after `make down` (file order): `make bench-quick`'s code, once, so the benchmark cannot rot.

It asserts that every scenario produced its figures, never how fast anything was.
"""

import json
import subprocess
import sys

import pytest

from .helpers import REPO_ROOT

pytestmark = pytest.mark.e2e

KEYS = ["fanout_batch_s", "fanout_speedup", "tasks_per_s", "overhead_ms_per_task", "batch_latency_p50_s",
        "batch_latency_p95_s", "scaling_ratio_4x", "big_batch_s", "big_batch_peak_rss_mib",
        "celery_tasks_per_s", "inprocess_tasks_per_s", "vs_celery", "dapr_noop_activities_per_s", "engine_share",
        "small_batch_latency_p50_ms", "security_on_tasks_per_s", "security_off_tasks_per_s", "security_cost_pct",
        "security_latency_cost_pct"]


def test_bench_quick_produces_every_figure(tmp_path):
    done = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--out", str(tmp_path)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads((tmp_path / "latest.json").read_text())
    missing = [k for k in KEYS if not isinstance(results.get(k), int | float)]
    assert missing == [], {k: results.get(k) for k in missing}
    assert set(results["scaling_tasks_per_s"]) == {"1", "2", "4"}
    assert (tmp_path / "latest.png").stat().st_size > 10_000
    assert "| tasks_per_s |" in done.stdout
