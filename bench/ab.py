"""An interleaved A/B of two checkouts on the throughput scenario and the 5-task batch latency: A, B, A, B, ...
each round a fresh stack on shifted ports (``bench.ab_round``), then each round's figures and the ratios B/A with
their spread.

    .venv/bin/python -m bench.ab /work/wt-a /work/wt-b --rounds 3 --tasks 10000

The machine is shared: absolute figures move by more than a change does, so only the ratios of
neighbouring rounds count.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def one_round(checkout: Path, offset: int, tasks: int, reps: int, tries: int = 3) -> list[dict]:
    """A round, made again if its stack failed to start or stop (a port still held a moment after a stop)."""
    for attempt in range(tries):
        try:
            return _one_round(checkout, offset, tasks, reps)
        except RuntimeError as exc:
            if attempt + 1 == tries:
                raise
            print(f"round failed, again in 20 s: {str(exc)[-300:]}", file=sys.stderr, flush=True)
            time.sleep(20)
    raise AssertionError("unreachable")


def _one_round(checkout: Path, offset: int, tasks: int, reps: int) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": f"{checkout}:{checkout / 'src'}"}
    done = subprocess.run([str(checkout / ".venv/bin/python"), "-m", "bench.ab_round", "--offset", str(offset),
                           "--tasks", str(tasks), "--reps", str(reps)], cwd=checkout, env=env,
                          capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{checkout}: {done.stderr[-3000:]}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def spread(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}"
    return f"{statistics.median(values):.3f} (min {min(values):.3f}, max {max(values):.3f})"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--offset", type=int, default=3300)
    args = parser.parse_args()
    rows: list[tuple[int, str, dict]] = []
    for round_no in range(args.rounds):
        for label, checkout in (("A", args.a), ("B", args.b)):
            for figures in one_round(checkout, args.offset, args.tasks, args.reps):
                rows.append((round_no, label, figures))
                by = figures["cpu_ms_per_task_by_process"]
                print(f"round {round_no} {label}: {figures['tasks_per_s']:.0f} tasks/s, "
                      f"{figures['cpu_ms_per_task']:.3f} cpu ms/task, workflow {by.get('workflow', 0):.3f}, "
                      f"workflow-daprd {by.get('workflow-daprd', 0):.3f}, 5-task batch p50 "
                      f"{figures.get('small_batch_latency_p50_ms', '-')} ms | {json.dumps(by)}", flush=True)
    ratios: dict[str, list[float]] = {"tasks_per_s": [], "cpu_ms_per_task": [], "workflow": [], "workflow-daprd": [],
                                      "small_batch_latency_p50_ms": []}
    for round_no in range(args.rounds):
        a = [f for r, lbl, f in rows if r == round_no and lbl == "A"]
        b = [f for r, lbl, f in rows if r == round_no and lbl == "B"]
        for fa, fb in zip(a, b, strict=False):
            ratios["tasks_per_s"].append(fb["tasks_per_s"] / fa["tasks_per_s"])
            ratios["cpu_ms_per_task"].append(fb["cpu_ms_per_task"] / fa["cpu_ms_per_task"])
            for proc in ("workflow", "workflow-daprd"):
                ratios[proc].append(fb["cpu_ms_per_task_by_process"][proc] / fa["cpu_ms_per_task_by_process"][proc])
            if "small_batch_latency_p50_ms" in fa and "small_batch_latency_p50_ms" in fb:  # an older A has none
                ratios["small_batch_latency_p50_ms"].append(
                    fb["small_batch_latency_p50_ms"] / fa["small_batch_latency_p50_ms"])
    for name, values in ratios.items():
        if values:
            print(f"B/A {name}: {spread(values)}", flush=True)
    for label in ("A", "B"):
        mine = [f for _, lbl, f in rows if lbl == label]
        print(f"{label} median: {statistics.median(f['tasks_per_s'] for f in mine):.0f} tasks/s, "
              f"{statistics.median(f['cpu_ms_per_task'] for f in mine):.3f} cpu ms/task, workflow "
              f"{statistics.median(f['cpu_ms_per_task_by_process']['workflow'] for f in mine):.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
