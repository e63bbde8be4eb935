"""What ``taskfan batches`` and ``taskfan dead-letters`` share: the console's JSON API, which credential and which
address they ask it with, their ``--console``/``-o`` options, and how an answer is printed."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

import click
import httpx

from taskfan.cli.common import EXIT_BAD_INPUT, EXIT_REFUSED, EXIT_UNREACHABLE, CliError, run_file, settings
from taskfan.settings import Settings
from taskfan.stack_secrets import ingest_headers

OUTPUTS = ("table", "json")


class Console:
    """The console's JSON API, asked with one credential in a header."""

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
            error = said.get("error", said) if isinstance(said, dict) else said
            raise CliError(f"{error} ({answer.status_code})", code)
        return dict(said)


def credential(current: Settings, acting: bool) -> str:
    """``TASKFAN_TOKEN`` if set; else the operator's (the ingest token) to act, the viewer's to look (the least
    that does)."""
    if current.taskfan_token:
        return current.taskfan_token
    return current.ingest_token if acting else (current.console_view_token or current.ingest_token)


def console_url(given: str | None, current: Settings) -> str:
    """``--console``, else ``CONSOLE_URL``, else the local stack's console in ``dapr.yaml``."""
    return given or current.console_url or run_file().console_url()


@dataclass(frozen=True)
class ConsoleChoice:
    """What the group's options chose; each command asks with the credential its action needs."""

    url: str | None
    output: str

    def console(self, acting: bool) -> Console:
        current = settings()
        return Console(console_url(self.url, current), credential(current, acting))


def console_group(name: str, description: str, short_help: str) -> click.Group:
    """A group of commands that ask the console: ``--console`` and ``-o`` decoded into a ``ConsoleChoice``, which
    its commands get (``click.pass_obj``)."""

    @click.group(name, help=description, short_help=short_help)
    @click.option("--console", "url", metavar="URL",
                  help="the console's URL (default: $CONSOLE_URL, else the local stack's)")
    @click.option("-o", "--output", type=click.Choice(OUTPUTS), default="table",
                  help="table (default) or json (the API's answer as it is)")
    @click.pass_context
    def group(ctx: click.Context, url: str | None, output: str) -> None:
        ctx.obj = ConsoleChoice(url, output)

    return group


def print_answer(said: dict[str, Any], output: str, rows: list[dict[str, Any]], columns: tuple[str, ...],
                 note: str) -> None:
    """JSON as the API said it, or a table of ``rows`` with ``note`` under it (on stderr, so the table pipes)."""
    if output == "json":
        print(json.dumps(said, indent=2, ensure_ascii=False))
        return
    if rows:
        print(table(rows, columns))
    print(note, file=sys.stderr if rows else sys.stdout)


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
