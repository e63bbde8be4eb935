"""Compare settings side by side: the throughput and big-batch scenarios, one fresh stack per setting.

    .venv/bin/python -m bench.compare MAX_IN_FLIGHT=100 MAX_IN_FLIGHT=400 MAX_IN_FLIGHT=100 MAX_IN_FLIGHT=400
    .venv/bin/python -m bench.compare REDIS_APPENDFSYNC=everysec REDIS_APPENDFSYNC=always

Interleave the values (as above): the machine's pace drifts within minutes. Prints one JSON line per
setting; ``big_vs_throughput`` is the big batch's time per task over the throughput scenario's
(1.0 = a 10,000-task batch costs per task what batches of 100 do).
"""

from __future__ import annotations

import argparse
import json

from bench.run import THROUGHPUT_ENV, Sizes, big_batch, say, taskfan_stack, throughput


def setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.isupper():
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE (an environment setting, e.g. MAX_IN_FLIGHT=400)")
    return name, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("settings", nargs="+", type=setting, metavar="NAME=VALUE", help="one stack per setting")
    args = parser.parse_args(argv)
    sizes = Sizes()
    for name, value in args.settings:
        say(f"{name}={value}")
        with taskfan_stack(**{**THROUGHPUT_ENV, name: value}) as stack:
            figures = {**throughput(stack, sizes), **big_batch(stack, sizes)}
        per_task_big = figures["big_batch_s"] / sizes.big_batch_tasks
        figures["big_vs_throughput"] = round(per_task_big * figures["tasks_per_s"], 3)
        print(json.dumps({name: value, **figures}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
