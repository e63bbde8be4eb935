"""The benchmark's own logic: the outcome check every peer must pass, the CPU meter, the ratios."""

from __future__ import annotations

import os
import time

import pytest

from bench import workload
from bench.cpu import CpuMeter
from bench.residue import CONSOLE, CONSOLE_SIGN_IN, owner
from bench.run import ratios


def good_outcome(batch: dict) -> dict:
    results = []
    for task in batch["tasks"]:
        status, score, tags = workload.expected(task)
        results.append({"task_id": task["task_id"], "status": status, "score": score, "tags": tags})
    return {"batch_id": batch["batch_id"], "total": len(results),
            "completed": sum(r["status"] == "completed" for r in results), "results": results}


def test_a_correct_outcome_passes_the_check() -> None:
    batch = {"batch_id": "b", "tasks": workload.tasks(12) + [{"task_id": "x", "title": "Fix", "description": "short"}]}
    outcome = good_outcome(batch)
    assert outcome["results"][-1]["status"] == "rejected"
    workload.check_outcome(batch, outcome, "peer")


@pytest.mark.parametrize("spoil", ["score", "order", "missing", "count", "status"])
def test_a_wrong_outcome_fails_the_check(spoil: str) -> None:
    batch = {"batch_id": "b", "tasks": workload.tasks(8)}
    outcome = good_outcome(batch)
    if spoil == "score":
        outcome["results"][3]["score"] += 1
    elif spoil == "order":
        outcome["results"][0], outcome["results"][1] = outcome["results"][1], outcome["results"][0]
    elif spoil == "missing":
        outcome["results"].pop()
    elif spoil == "count":
        outcome["completed"] -= 1
    else:
        outcome["results"][2]["status"] = "failed"
    with pytest.raises(RuntimeError, match="peer"):
        workload.check_outcome(batch, outcome, "peer")


def test_the_cpu_meter_counts_what_a_process_burns_not_what_it_waits() -> None:
    with CpuMeter({"me": os.getpid()}) as busy:
        end = time.process_time() + 0.2
        while time.process_time() < end:
            pass
    with CpuMeter({"me": os.getpid()}) as idle:
        time.sleep(0.2)
    assert busy.seconds["me"] >= 0.15
    assert idle.seconds["me"] < 0.1
    assert busy.ms_per_unit(100)["me"] == pytest.approx(1000 * busy.seconds["me"] / 100, abs=0.001)


def test_the_cpu_meter_keeps_a_process_that_is_gone() -> None:
    with CpuMeter({"gone": 2**22 + 12345}) as meter:  # no such pid: read neither time
        pass
    assert meter.seconds == {}


def test_ratios_are_above_one_where_taskfan_is_ahead() -> None:
    results = {"tasks_per_s": 300.0, "temporal_tasks_per_s": 200.0, "celery_tasks_per_s": 600.0,
               "small_batch_latency_p50_ms": 100.0, "temporal_small_batch_latency_p50_ms": 150.0,
               "fanout_batch_s": 2.5, "temporal_fanout_batch_s": 2.0,
               "scaling_tasks_per_s": {"1": 10, "4": 40}, "temporal_scaling_tasks_per_s": {"1": 10, "4": 20}}
    got = ratios(results)
    assert got["vs_temporal"] == 1.5
    assert got["vs_celery"] == 0.5
    assert got["vs_temporal_small_batch_latency"] == 1.5  # Taskfan answers faster
    assert got["vs_temporal_fanout"] == 0.8  # Taskfan's fan-out batch took longer
    assert got["vs_temporal_scaling_4x"] == 2.0
    assert "vs_celery_small_batch_latency" not in got  # no figure, no ratio


def test_the_residue_count_tells_the_consoles_sign_in_keys_from_its_history() -> None:
    for kind in ("session", "code", "redeemed"):
        assert owner(f"console||taskfan-console~{kind}~{'0' * 64}") == CONSOLE_SIGN_IN
    for key in ("console||taskfan-console~history", "console||taskfan-console~history~3",
                "console||taskfan-console~tasks~b-1", "console||taskfan-console~dead~7"):
        assert owner(key) == CONSOLE
