"""``taskfan batches``: list, show, terminate, re-run and purge batches through the console's JSON API
(``DESCRIPTION``)."""

from __future__ import annotations

import json
import sys
from typing import Any
from urllib.parse import quote, urlencode

import click

from taskfan import events
from taskfan.cli.common import EXIT_BAD_INPUT, CliError
from taskfan.cli.console_client import Console, ConsoleChoice, console_group, print_answer

# "\b": click prints the paragraph as it is written, as argparse's RawDescriptionHelpFormatter did.
DESCRIPTION = """\
\b
List, show, terminate, re-run and purge batches through the console's JSON API: one API the stack serves, with
a credential in a header. The same commands work against the local stack (the console's address in dapr.yaml,
its credentials in the stack's secrets file) and any other (--console URL or $CONSOLE_URL, and $TASKFAN_TOKEN).
Looking takes the viewer's credential; terminating, re-running and purging take the operator's (the ingest
token).

\b
Exit codes: 0 done; 1 refused (a batch not running, a batch not finished, a viewer acting); 2 bad input (an
unknown batch, a bad page); 3 the console does not answer."""
STATES = ("queued", "running", "finished", "failed", "dead-lettered", "accepted")
LIST_COLUMNS = ("batch_id", "state", "done", "total", "completed", "rejected", "failed", "started_at")
TASK_COLUMNS = ("task_id", "stage", "score", "issues", "error")


def batches_command() -> click.Group:
    """The ``batches`` group: its options decoded, each action a plain function below."""

    batches = console_group("batches", DESCRIPTION,
                            "list, show, terminate, re-run and purge batches (through the console's API)")

    @batches.command("list", short_help="running and queued batches first, then the others, newest first",
                     help="Running and queued batches first, then the others, newest first.")
    @click.option("--state", type=click.Choice(STATES), help="only batches in this state")
    @click.option("--page", type=click.IntRange(min=1), default=1, help="page of 100 (default 1)")
    @click.option("--id", "prefix", metavar="TEXT", help="only batches whose id is this or begins with it")
    @click.option("--since", metavar="TIME", help="only batches started at or after this ISO 8601 time")
    @click.option("--until", metavar="TIME", help="only batches started before this ISO 8601 time")
    @click.pass_obj
    def listing(choice: ConsoleChoice, state: str | None, page: int, prefix: str | None, since: str | None,
                until: str | None) -> None:
        said = list_batches(choice.console(acting=False), page, state, prefix, since, until)
        print_answer(said, choice.output, said["batches"], LIST_COLUMNS, f"page {said['page']} of {said['pages']}")

    @batches.command("show", short_help="one batch: its state, counts and each task's stage (1000 a page)",
                     help="One batch: its state, counts and each task's stage (1000 a page).")
    @click.argument("batch_id")
    @click.option("--page", type=click.IntRange(min=1), default=1, help="page of 1000 tasks (default 1)")
    @click.option("--stage", help="only its tasks at this stage (waiting, a step, done, rejected, failed)")
    @click.pass_obj
    def show(choice: ConsoleChoice, batch_id: str, page: int, stage: str | None) -> None:
        said = show_batch(choice.console(acting=False), batch_id, page, stage)
        note = summary_line(said["batch"]) + f"; tasks page {said['page']} of {said['pages']}"
        print_answer(said, choice.output, said["tasks"], TASK_COLUMNS, note)

    @batches.command("terminate", short_help="terminate a running batch (its unfinished tasks fail)",
                     help="Terminate a running batch (its unfinished tasks fail).")
    @click.argument("batch_id")
    @click.pass_obj
    def terminate(choice: ConsoleChoice, batch_id: str) -> None:
        said = act(choice.console(acting=True), batch_id, "terminate")
        print_answer(said, choice.output, [], (), str(said.get("message", "")))

    @batches.command("rerun", short_help="publish a finished batch again, as a new batch",
                     help="Publish a finished batch again, as a new batch.")
    @click.argument("batch_id")
    @click.option("--failed", is_flag=True, help="only its failed tasks")
    @click.pass_obj
    def rerun(choice: ConsoleChoice, batch_id: str, failed: bool) -> None:
        said = act(choice.console(acting=True), batch_id, "rerun", {"tasks": "failed" if failed else "all"})
        print_answer(said, choice.output, [], (), str(said.get("message", "")))

    @batches.command("purge", short_help="delete finished batches' stored records now (not a running one)",
                     help="Delete finished batches' stored records now: what the retention would delete later "
                          "(the batch-id record, the outcome record, the workflow's state, the console's "
                          "details). A running or queued batch is refused. Each id is answered; the exit code is "
                          "the worst of theirs.")
    @click.argument("batch_ids", metavar="BATCH_ID...", nargs=-1, required=True)
    @click.pass_obj
    def purge(choice: ConsoleChoice, batch_ids: tuple[str, ...]) -> int:
        answers = purge_batches(choice.console(acting=True), batch_ids)
        if choice.output == "json":
            print(json.dumps([answer for answer, _ in answers], indent=2, ensure_ascii=False))
        for answer, code in answers:
            if code:
                print(f"taskfan: {answer['error']}", file=sys.stderr)
            elif choice.output != "json":
                print(answer["message"])
        return max(code for _, code in answers)  # the worst: refused 1 < bad input 2 < unreachable 3

    return batches


def list_batches(console: Console, page: int, state: str | None, prefix: str | None, since: str | None,
                 until: str | None) -> dict[str, Any]:
    asked = {"page": page, "state": state, "q": prefix, "since": since, "until": until}
    return console.ask("GET", "/api/batches?" + urlencode({k: v for k, v in asked.items() if v}))


def show_batch(console: Console, batch_id: str, page: int, stage: str | None) -> dict[str, Any]:
    asked = {"page": page, "stage": stage}
    return console.ask("GET", f"/api/batches/{segment(batch_id)}?" + urlencode({k: v for k, v in asked.items() if v}))


def act(console: Console, batch_id: str, action: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    return console.ask("POST", f"/batches/{segment(batch_id)}/{action}", body)


def segment(batch_id: str) -> str:
    """``batch_id`` as one segment of a URL path. The console judges what is a batch id; text that is not Unicode
    (a lone surrogate, from a shell's bytes) cannot even be sent."""
    try:
        return quote(batch_id, safe="")
    except UnicodeEncodeError:
        raise CliError(f"{events.printable(batch_id, 200)!r} is not a batch id (1 to 128 characters: letters, "
                       "digits, '.', '_', '-', ':')", EXIT_BAD_INPUT) from None


def purge_batches(console: Console, batch_ids: tuple[str, ...]) -> list[tuple[dict[str, Any], int]]:
    """Each id's answer (the console's message, or why not: its error names the id) and its exit code (0: purged)."""
    answers: list[tuple[dict[str, Any], int]] = []
    for batch_id in batch_ids:
        shown = events.printable(batch_id, 200)
        try:
            said = act(console, batch_id, "purge")
        except CliError as exc:
            answers.append(({"batch_id": shown, "error": str(exc)}, exc.code))
            continue
        answers.append(({"batch_id": shown, **said}, 0))
    return answers


def summary_line(row: dict[str, Any]) -> str:
    return (f"{row['batch_id']}: {row['state']}, {row['done']}/{row['total']} done "
            f"({row['completed']} completed, {row['rejected']} rejected, {row['failed']} failed)")
