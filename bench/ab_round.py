"""One round of an A/B: a fresh stack of this checkout on shifted ports, the throughput scenario, its figures.

    PYTHONPATH=<checkout>:<checkout>/src .venv/bin/python -m bench.ab_round --offset 3300 --tasks 5000 --reps 2

Run from the checkout under test (``bench.ab`` runs it in each checkout in turn): the stack's apps import
the code of the checkout on PYTHONPATH, never a default stack's ports (``bench.soak.prepare_stack``).
Prints one JSON line per repetition, each with the round's 5-task batch latency (and the profile's, with
``--profile``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from bench.run import (
    THROUGHPUT_ENV,
    Sizes,
    profile_throughput,
    run_batches,
    small_batch_latency,
    throughput,
    warm_up_batch,
)
from bench.soak import SCORERS, prepare_stack, stack_ports
from taskfan.stack import Stack, StackError, port_open
from taskfan.stack.topology import Topology


def ports_free(stack: Stack, timeout_s: float = 120) -> None:
    """Wait until no port of the stack is held: a sidecar may take seconds to let go after its stop."""
    ports = stack_ports(Topology(stack.run_file), SCORERS, stack.settings.redis_port)
    deadline = time.monotonic() + timeout_s
    while (held := [p for p in ports if port_open(p)]) and time.monotonic() < deadline:
        time.sleep(1)
    if held:
        raise StackError(f"ports still held {timeout_s:.0f} s after the stack stopped: {held}")


def fresh_stack(run_dir: Path, offset: int, timeout_s: float = 120) -> Stack:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return prepare_stack(run_dir, offset)
        except StackError:  # the previous round's sidecars still letting go of their ports
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--offset", type=int, default=3300)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--profile", type=Path, help="then profile the throughput work again, the files here")
    args = parser.parse_args()
    os.environ.update({k: str(v) for k, v in THROUGHPUT_ENV.items()})
    if args.profile:
        os.environ["SIDECAR_PROFILING"] = "on"
    root = Path(__file__).resolve().parents[1]
    stack = fresh_stack(root / ".taskfan" / "ab", args.offset)
    try:
        stack.up(1, progress=lambda _: None)
        run_batches(stack, [warm_up_batch()], 120)
        reps = [throughput(stack, Sizes(throughput_tasks=args.tasks)) for _ in range(args.reps)]
        latency = small_batch_latency(stack, Sizes(), settle=True)  # on the stack idle again, as make bench does
        for figures in reps:
            print(json.dumps({**figures, **latency}), flush=True)
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
            print(json.dumps(profile_throughput(stack, Sizes(profile_s=20), args.profile)), flush=True)
    finally:
        try:
            stack.down(progress=lambda _: None)
        finally:
            ports_free(stack)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
