"""``taskfan dead-letters``: list the dead letters the console keeps and replay one, through the console's JSON API
(the same client and options as ``taskfan batches``: ``console_client``)."""

from __future__ import annotations

from typing import Any

import click

from taskfan.cli.console_client import Console, ConsoleChoice, console_group, print_answer

DESCRIPTION = """\
\b
List the dead letters the console keeps (the newest events the workflow service refused: why, when, and the
event) and replay one: the console publishes its event again on `tasks`, as it is. An event refused again
comes back as a new dead letter, with its reason. Listing takes the viewer's credential; replaying, the
operator's (the ingest token). --console URL or $CONSOLE_URL, and $TASKFAN_TOKEN, as for `taskfan batches`.

\b
Exit codes: 0 done; 1 refused (a viewer replaying); 2 bad input (no such dead letter, a bad page); 3 the
console does not answer."""
LIST_COLUMNS = ("number", "received_at", "batch_id", "replays", "reason")


def dead_letters_command() -> click.Group:
    """The ``dead-letters`` group: its options decoded, each action a plain function below."""

    dead_letters = console_group("dead-letters", DESCRIPTION, "list the dead letters the console keeps, and replay one")

    @dead_letters.command("list", short_help="the newest first, 50 a page", help="The newest first, 50 a page.")
    @click.option("--page", type=click.IntRange(min=1), default=1, help="page of 50 (default 1)")
    @click.pass_obj
    def listing(choice: ConsoleChoice, page: int) -> None:
        said = list_dead_letters(choice.console(acting=False), page)
        rows = said["dead_letters"]
        print_answer(said, choice.output, rows, LIST_COLUMNS,
                     f"page {said['page']} of {said['pages']}" if rows else "no dead letters")

    @dead_letters.command("replay", short_help="publish a dead letter's event again on tasks",
                          help="Publish a dead letter's event again on tasks. NUMBER: the dead letter's number "
                               "(NUMBER in the list).")
    @click.argument("number", type=click.IntRange(min=0))
    @click.pass_obj
    def replay(choice: ConsoleChoice, number: int) -> None:
        said = replay_dead_letter(choice.console(acting=True), number)
        print_answer(said, choice.output, [], (), str(said.get("message", "")))

    return dead_letters


def list_dead_letters(console: Console, page: int) -> dict[str, Any]:
    return console.ask("GET", f"/api/dead-letters?page={page}")


def replay_dead_letter(console: Console, number: int) -> dict[str, Any]:
    """``number``: the dead letter's NUMBER in the list."""
    return console.ask("POST", f"/dead-letters/{number}/replay")
