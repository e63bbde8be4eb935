"""``taskfan``: publish batches, follow outcomes, inspect a batch, run the local stack.

Exit codes: 0 success, 1 the stack refused or failed, 2 bad input (file, arguments, an unknown batch), 3 stack
unreachable.
"""

from __future__ import annotations

import argparse
import sys

from taskfan.cli import batches, dead_letters
from taskfan.cli.common import CliError
from taskfan.cli.console import ROLES, cmd_console
from taskfan.cli.local_stack import cmd_stack
from taskfan.cli.outcomes import cmd_outcomes
from taskfan.cli.publish import cmd_publish
from taskfan.cli.schemas import cmd_schemas
from taskfan.cli.status import cmd_status


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="taskfan",
        description="Taskfan: publish a batch of tasks, get one outcome per batch (Dapr + Redis).",
        epilog="The stack's apps and ports come from dapr.yaml (this folder or above, or $TASKFAN_RUN_FILE); "
               "settings from environment variables (REDIS_PORT, SCORERS, SCORE_DELAY_MS, INGEST_URL, ...); "
               "see README.md.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    pub = sub.add_parser("publish", help="publish a batch file through the ingest HTTP API")
    pub.add_argument("file", help='JSON file: {"batch_id"?, "tasks": [...]} or a list of tasks; - = stdin')
    pub.add_argument("--batch-id", help="use this batch id (default: the file's, else one is assigned)")
    pub.add_argument("--wait", action="store_true",
                     help="wait for the outcome and print it; progress on stderr (a live bar on a terminal)")
    pub.add_argument("--timeout", type=float, default=600, help="seconds to wait with --wait (default 600)")
    pub.add_argument("--url", help="ingest API base URL (default: $INGEST_URL, else from dapr.yaml)")
    pub.set_defaults(func=cmd_publish)

    out = sub.add_parser("outcomes", help="print outcomes: recent ones, or --follow new ones as they arrive")
    out.add_argument("--follow", "-f", action="store_true",
                     help="subscribe through a Dapr sidecar and print outcomes as they arrive")
    out.add_argument("--group", default="taskfan-cli",
                     help="consumer group (Dapr app id) of the subscription (default taskfan-cli); "
                          "followers sharing a group share the outcomes")
    out.add_argument("--batch", help="only this batch; with --follow, exit after printing it")
    out.add_argument("--count", type=int, default=10, help="how many recent outcomes (default 10)")
    out.set_defaults(func=cmd_outcomes)

    st = sub.add_parser("status", help="show a batch's workflow state and progress")
    st.add_argument("batch_id")
    st.add_argument("--watch", "-w", action="store_true",
                    help="follow the batch until it ends: a live progress bar on a terminal (done / total, rate, "
                         "time left), plain lines when piped; exit 0 if it completed")
    st.add_argument("--timeout", type=float, default=3600, help="seconds to watch (default 3600)")
    st.set_defaults(func=cmd_status)

    batches.add_parser(sub)
    dead_letters.add_parser(sub)

    con = sub.add_parser("console", help="print a one-time sign-in link to the web console of the running stack")
    con.add_argument("--open", action="store_true", help="and open it in a browser")
    con.add_argument("--role", choices=ROLES, default="view",
                     help="view (default): look only; act: also terminate and re-run batches (the operator's)")
    con.set_defaults(func=cmd_console)

    stk = sub.add_parser("stack", help="start or stop the local stack (what `make up` / `make down` run)")
    stk.add_argument("action", choices=["up", "down", "status", "scale", "restart", "env"],
                     help="scale --scorers N adds or removes scorer replicas of the running stack (a removed "
                          "one finishes its calls first), scale --app ID --replicas N another step app's; "
                          "restart SIGKILLs one process (--app) and starts it again: a crash drill; env prints "
                          "`export` lines with the stack's tokens and Redis "
                          "password, for a shell of your own; env --app ID prints instead an outside app's grant "
                          "(its own sidecar's token, its resources folder, its mTLS identity) and nothing more")
    stk.add_argument("--app", help="with scale: a step app's id (validator, enricher, ...); "
                                   "with restart: a process name from `stack status` "
                                   "(workflow, scorer-0, workflow-daprd, redis, scheduler, ...); with env: the "
                                   "app id of a sidecar of your own, listed in OUTCOME_SUBSCRIBERS or "
                                   "TASKS_PUBLISHERS")
    stk.add_argument("--scorers", type=int, default=None,
                     help="scorer replicas: for up (default $SCORERS or 1) and scale")
    stk.add_argument("--replicas", type=int, default=None, help="with scale --app: that step app's replicas")
    stk.set_defaults(func=cmd_stack)

    sch = sub.add_parser("schemas", help="write the JSON Schema files of the events")
    sch.add_argument("--out", default="schemas", help="folder to write them to (default ./schemas)")
    sch.set_defaults(func=cmd_schemas)
    return p


def version() -> str:
    """Taskfan's version, and the Dapr runtime it is built for."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    from taskfan.versions import DAPR_VERSION

    try:
        own = installed("taskfan")
    except PackageNotFoundError:  # run from a checkout without installing it
        own = "(not installed)"
    return f"{own} (Dapr {DAPR_VERSION})"


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CliError as exc:
        print(f"taskfan: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
