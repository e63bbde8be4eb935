"""One round of an A/B: a fresh stack of this checkout on shifted ports, the throughput scenario, its figures.

    PYTHONPATH=<checkout>:<checkout>/src .venv/bin/python -m bench.ab_round --offset 3300 --tasks 10000

Run from the checkout under test (``bench.ab`` runs it in each checkout in turn): the stack's apps import
the code of the checkout on PYTHONPATH, never a default stack's ports (``bench.soak.prepare_stack``).
Prints one JSON line per repetition.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from bench.run import THROUGHPUT_ENV, Sizes, profile_throughput, run_batches, throughput, warm_up_batch
from bench.soak import prepare_stack


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
    stack = prepare_stack(root / ".taskfan" / "ab", args.offset)
    stack.up(1, progress=lambda _: None)
    try:
        run_batches(stack, [warm_up_batch()], 120)
        for _ in range(args.reps):
            print(json.dumps(throughput(stack, Sizes(throughput_tasks=args.tasks))), flush=True)
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
            print(json.dumps(profile_throughput(stack, Sizes(profile_s=20), args.profile)), flush=True)
    finally:
        stack.down(progress=lambda _: None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
