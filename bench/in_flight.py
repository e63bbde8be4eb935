"""Tune MAX_IN_FLIGHT: the throughput and big-batch scenarios, side by side, for each value given.

    .venv/bin/python -m bench.in_flight 100 400 800

Prints one JSON line per value; ``big_vs_throughput`` is the big batch's time per task over the
throughput scenario's (1.0 = a 10,000-task batch costs per task what batches of 100 do).
"""

from __future__ import annotations

import argparse
import json

from bench.run import THROUGHPUT_ENV, Sizes, big_batch, say, taskfan_stack, throughput


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.in_flight", description=__doc__.split("\n\n")[0])
    parser.add_argument("values", nargs="+", type=int, help="MAX_IN_FLIGHT values to compare")
    args = parser.parse_args(argv)
    sizes = Sizes()
    for value in args.values:
        say(f"MAX_IN_FLIGHT={value}")
        with taskfan_stack(**THROUGHPUT_ENV, MAX_IN_FLIGHT=value) as stack:
            figures = {**throughput(stack, sizes), **big_batch(stack, sizes)}
        per_task_big = figures["big_batch_s"] / sizes.big_batch_tasks
        figures["big_vs_throughput"] = round(per_task_big * figures["tasks_per_s"], 3)
        print(json.dumps({"max_in_flight": value, **figures}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
