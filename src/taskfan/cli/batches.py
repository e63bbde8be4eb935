"""``taskfan batches``: list, show, terminate and re-run batches through the console's JSON API (``DESCRIPTION``)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from taskfan.cli.common import EXIT_BAD_INPUT, EXIT_REFUSED, EXIT_UNREACHABLE, CliError, run_file, settings
from taskfan.stack_secrets import ingest_headers

DESCRIPTION = """\
List, show, terminate and re-run batches through the console's JSON API: one API the stack serves, with a
credential in a header. The same commands work against the local stack (the console's address in dapr.yaml,
its credentials in the stack's secrets file) and any other (--console URL or $CONSOLE_URL, and $TASKFAN_TOKEN).
Looking takes the viewer's credential; terminating and re-running take the operator's (the ingest token).

Exit codes: 0 done; 1 refused (a batch not running, a viewer acting); 2 bad input (an unknown batch, a bad
page); 3 the console does not answer."""
STATES = ("queued", "running", "finished", "failed", "dead-lettered", "accepted")
LIST_COLUMNS = ("batch_id", "state", "done", "total", "completed", "rejected", "failed", "started_at")
TASK_COLUMNS = ("task_id", "stage", "score", "issues", "error")


def add_parser(sub: Any) -> None:  # noqa: ANN401 - argparse's private subparsers type
    bat = sub.add_parser("batches", help="list, show, terminate and re-run batches (through the console's API)",
                         description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    bat.add_argument("--console", help="the console's URL (default: $CONSOLE_URL, else the local stack's)")
    bat.add_argument("-o", "--output", choices=("table", "json"), default="table",
                     help="table (default) or json (the API's answer as it is)")
    actions = bat.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="running and queued batches first, then the others, newest first")
    listing.add_argument("--state", choices=STATES, help="only batches in this state")
    listing.add_argument("--page", type=int, default=1, help="page of 100 (default 1)")
    listing.add_argument("--id", dest="q", help="only batches whose id is this or begins with it")
    listing.add_argument("--since", help="only batches started at or after this ISO 8601 time")
    listing.add_argument("--until", help="only batches started before this ISO 8601 time")
    show = actions.add_parser("show", help="one batch: its state, counts and each task's stage (1000 a page)")
    show.add_argument("batch_id")
    show.add_argument("--page", type=int, default=1, help="page of 1000 tasks (default 1)")
    show.add_argument("--stage", help="only its tasks at this stage (waiting, a step, done, rejected, failed)")
    terminate = actions.add_parser("terminate", help="terminate a running batch (its unfinished tasks fail)")
    terminate.add_argument("batch_id")
    rerun = actions.add_parser("rerun", help="publish a finished batch again, as a new batch")
    rerun.add_argument("batch_id")
    rerun.add_argument("--failed", action="store_true", help="only its failed tasks")
    bat.set_defaults(func=cmd_batches)


class Console:
    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.headers = ingest_headers(token)

    def ask(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            answer = httpx.request(method, self.url + path, json=body, headers=self.headers, timeout=30)
        except httpx.HTTPError as exc:
            raise CliError(f"the console at {self.url} does not answer ({exc}); is the stack up? (`make up`)",
                           EXIT_UNREACHABLE) from None
        try:
            said = answer.json()
        except ValueError:
            said = {"error": answer.text[:200]}
        if answer.status_code >= 400:
            code = EXIT_BAD_INPUT if answer.status_code in (400, 404, 422) else EXIT_REFUSED
            raise CliError(f"{said.get('error', said)} ({answer.status_code})", code)
        return dict(said)


def cmd_batches(args: argparse.Namespace) -> int:
    current = settings()
    acting = args.action in ("terminate", "rerun")
    token = current.taskfan_token or (
        current.ingest_token if acting else (current.console_view_token or current.ingest_token))
    console = Console(args.console or current.console_url or run_file().console_url(), token)
    if args.action in ("list", "show") and args.page < 1:
        raise CliError("--page is a whole number from 1", EXIT_BAD_INPUT)
    if args.action == "list":
        asked = {"page": args.page, "state": args.state, "q": args.q, "since": args.since, "until": args.until}
        said = console.ask("GET", "/api/batches?" + urlencode({k: v for k, v in asked.items() if v}))
        rows, note = said["batches"], f"page {said['page']} of {said['pages']}"
        columns = LIST_COLUMNS
    elif args.action == "show":
        asked = {"page": args.page, "stage": args.stage}
        said = console.ask("GET", f"/api/batches/{quote(args.batch_id, safe='')}?" + urlencode(
            {k: v for k, v in asked.items() if v}))
        rows = said["tasks"]
        note = _summary(said["batch"]) + f"; tasks page {said['page']} of {said['pages']}"
        columns = TASK_COLUMNS
    else:
        path = f"/batches/{quote(args.batch_id, safe='')}/{args.action}"
        said = console.ask("POST", path, {"tasks": "failed" if getattr(args, "failed", False) else "all"}
                           if args.action == "rerun" else None)
        rows, note, columns = [], str(said.get("message", "")), ()
    if args.output == "json":
        print(json.dumps(said, indent=2, ensure_ascii=False))
    else:
        if rows:
            print(table(rows, columns))
        print(note, file=sys.stderr if rows else sys.stdout)
    return 0


def _summary(row: dict[str, Any]) -> str:
    return (f"{row['batch_id']}: {row['state']}, {row['done']}/{row['total']} done "
            f"({row['completed']} completed, {row['rejected']} rejected, {row['failed']} failed)")


def table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    """Rows as aligned columns; a list is joined, a missing value is empty, every value on one line."""

    def cell(value: object) -> str:
        if value is None:
            return ""
        text = "; ".join(map(str, value)) if isinstance(value, list) else str(value)
        return text.replace("\n", " ").replace("\t", " ")[:80]

    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)
