"""``taskfan dead-letters``: list the dead letters the console keeps and replay one, through the console's JSON API
(the same client as ``taskfan batches``)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from taskfan.cli.batches import Console, table
from taskfan.cli.common import EXIT_BAD_INPUT, CliError, run_file, settings

DESCRIPTION = """\
List the dead letters the console keeps (the newest events the workflow service refused: why, when, and the
event) and replay one: the console publishes its event again on `tasks`, as it is. An event refused again
comes back as a new dead letter, with its reason. Listing takes the viewer's credential; replaying, the
operator's (the ingest token). --console URL or $CONSOLE_URL, and $TASKFAN_TOKEN, as for `taskfan batches`.

Exit codes: 0 done; 1 refused (a viewer replaying); 2 bad input (no such dead letter, a bad page); 3 the
console does not answer."""
LIST_COLUMNS = ("number", "received_at", "batch_id", "replays", "reason")


def add_parser(sub: Any) -> None:  # noqa: ANN401 - argparse's private subparsers type
    dead = sub.add_parser("dead-letters", help="list the dead letters the console keeps, and replay one",
                          description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    dead.add_argument("--console", help="the console's URL (default: $CONSOLE_URL, else the local stack's)")
    dead.add_argument("-o", "--output", choices=("table", "json"), default="table",
                      help="table (default) or json (the API's answer as it is)")
    actions = dead.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="the newest first, 50 a page")
    listing.add_argument("--page", type=int, default=1, help="page of 50 (default 1)")
    replay = actions.add_parser("replay", help="publish a dead letter's event again on tasks")
    replay.add_argument("number", type=int, help="the dead letter's number (NUMBER in the list)")
    dead.set_defaults(func=cmd_dead_letters)


def cmd_dead_letters(args: argparse.Namespace) -> int:
    current = settings()
    acting = args.action == "replay"
    token = current.taskfan_token or (
        current.ingest_token if acting else (current.console_view_token or current.ingest_token))
    console = Console(args.console or current.console_url or run_file().console_url(), token)
    if args.action == "list":
        if args.page < 1:
            raise CliError("--page is a whole number from 1", EXIT_BAD_INPUT)
        said = console.ask("GET", f"/api/dead-letters?page={args.page}")
        rows, note = said["dead_letters"], f"page {said['page']} of {said['pages']}"
    else:
        if args.number < 0:
            raise CliError("the number is a whole number from 0", EXIT_BAD_INPUT)
        said = console.ask("POST", f"/dead-letters/{args.number}/replay")
        rows, note = [], str(said.get("message", ""))
    if args.output == "json":
        print(json.dumps(said, indent=2, ensure_ascii=False))
    else:
        if rows:
            print(table(rows, LIST_COLUMNS))
        print(note if rows or acting else "no dead letters", file=sys.stderr if rows else sys.stdout)
    return 0
