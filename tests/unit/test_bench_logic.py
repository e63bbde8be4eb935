"""The benchmark's own logic: the outcome check every peer must pass, the CPU meter, the ratios, the profile's
summary."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pytest

from bench import workload
from bench.cpu import CpuMeter
from bench.profile import go_package, go_packages, python_summary, short_path
from bench.residue import CONSOLE, CONSOLE_SIGN_IN, owner
from bench.run import QUICK, keep_in_flight, ratios


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
    assert "vs_celery_steady" not in got
    assert ratios({"steady_tasks_per_s": 900.0, "celery_steady_tasks_per_s": 1800.0})["vs_celery_steady"] == 0.5


def test_the_steady_state_keeps_its_batches_in_flight_and_counts_only_the_window() -> None:
    sizes = dataclasses.replace(QUICK, steady_warmup_s=0.2, steady_s=0.4)
    in_flight: list[dict] = []
    warm_turns = 0

    def finished() -> int:  # one batch done every 10 ms, the oldest
        time.sleep(0.01)
        assert len(in_flight) == sizes.steady_batches_in_flight
        in_flight.pop(0)
        return 1

    def warming() -> None:
        nonlocal warm_turns
        warm_turns += 1

    in_window = keep_in_flight(sizes, "b", in_flight.append, finished, warming)
    assert all(len(batch["tasks"]) == sizes.throughput_batch for batch in in_flight)
    assert len({batch["batch_id"] for batch in in_flight}) == len(in_flight)
    assert in_window % sizes.throughput_batch == 0
    # ~40 batches in the 0.4 s window, none of the ~20 of the warm-up (timing slack for a busy machine)
    assert 10 * sizes.throughput_batch <= in_window <= 41 * sizes.throughput_batch
    assert warm_turns >= 5


def test_the_python_profile_ranks_functions_by_own_and_total_samples_and_names_files_as_a_reader_finds_them() -> None:
    root = Path("/src/taskfan")
    frames = [{"name": "<module>", "file": "/src/taskfan/services/workflow/app.py", "line": 9},
              {"name": "run_chunk", "file": "/src/taskfan/services/workflow/activities.py", "line": 40},
              {"name": "run_chunk", "file": "/src/taskfan/services/workflow/activities.py", "line": 41},
              {"name": "_blocking", "file": "/v/lib/python3.11/site-packages/grpc/_channel.py", "line": 7},
              {"name": "wait", "file": "/usr/lib/python3.11/threading.py", "line": 3}]
    # 3 samples in one thread, 1 in another: run_chunk runs on its own twice (two lines of it), calls grpc once.
    speedscope = {"shared": {"frames": frames},
                  "profiles": [{"samples": [[0, 1], [0, 2], [0, 1, 3]]}, {"samples": [[4], []]}]}
    text = python_summary(speedscope, root, rows=10)
    own, total, files = (section.splitlines() for section in text.split("\n\n")[1:4])
    assert "4 samples" in text
    assert own[2].split() == ["2", "50.0%", "run_chunk", "(services/workflow/activities.py)"]
    assert total[2].split() == ["3", "75.0%", "<module>", "(services/workflow/app.py)"]
    assert total[3].split() == ["3", "75.0%", "run_chunk", "(services/workflow/activities.py)"]
    assert {line.split()[-1] for line in files[2:]} == {"services/workflow/activities.py", "grpc/_channel.py",
                                                         "threading.py"}
    assert short_path("/elsewhere/x.py", root) == "/elsewhere/x.py"


def test_the_sidecar_profile_sums_own_time_by_go_package() -> None:
    assert go_package("github.com/dapr/dapr/pkg/api/grpc.(*server).Call.func1") == "github.com/dapr/dapr/pkg/api/grpc"
    assert go_package("internal/runtime/syscall/linux.Syscall6") == "internal/runtime/syscall/linux"
    assert go_package("runtime.futex") == "runtime"
    top = """Type: cpu
      flat  flat%   sum%        cum   cum%
     140ms 19.72% 19.72%      140ms 19.72%  internal/runtime/syscall/linux.Syscall6
      60ms  8.45% 28.17%       60ms  8.45%  runtime.futex
      30ms  4.23% 32.39%       40ms  5.63%  runtime.newobject (inline)
      10ms  1.41% 33.80%       90ms 12.68%  github.com/dapr/dapr/pkg/api/grpc.(*server).Call
         0     0% 33.80%      190ms 26.76%  google.golang.org/grpc.(*Server).handleStream
"""
    assert go_packages(top).splitlines()[2:] == ["  19.7%  internal/runtime/syscall/linux", "  12.7%  runtime",
                                                 "   1.4%  github.com/dapr/dapr/pkg/api/grpc"]


def test_the_residue_count_tells_the_consoles_sign_in_keys_from_its_history() -> None:
    for kind in ("session", "code", "redeemed"):
        assert owner(f"console||taskfan-console~{kind}~{'0' * 64}") == CONSOLE_SIGN_IN
    for key in ("console||taskfan-console~history", "console||taskfan-console~history~3",
                "console||taskfan-console~tasks~b-1", "console||taskfan-console~dead~7"):
        assert owner(key) == CONSOLE
