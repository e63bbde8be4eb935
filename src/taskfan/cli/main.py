"""``taskfan``: publish batches, follow outcomes, inspect a batch, run the local stack.

The command tree is click's, built by ``build_cli`` (nothing at import): each command decodes its arguments and
calls a plain function of its module. Exit codes: 0 success, 1 the stack refused or failed, 2 bad input (file,
arguments, an unknown batch), 3 stack unreachable, 130 interrupted.
"""

from __future__ import annotations

import sys

import click
from click.shell_completion import get_completion_class

from taskfan.cli.batches import batches_command
from taskfan.cli.common import EXIT_BAD_INPUT, CliError
from taskfan.cli.console import ROLES, cmd_console
from taskfan.cli.dead_letters import dead_letters_command
from taskfan.cli.local_stack import cmd_stack
from taskfan.cli.outcomes import cmd_outcomes
from taskfan.cli.publish import cmd_publish
from taskfan.cli.schemas import cmd_schemas
from taskfan.cli.status import cmd_status

PROG = "taskfan"
COMPLETE_VAR = "_TASKFAN_COMPLETE"  # click's variable for the entry point's name: the scripts it prints set it
SHELLS = ("bash", "zsh", "fish")
EXIT_INTERRUPTED = 130
STACK_ACTIONS = ("up", "down", "status", "scale", "restart", "env")


def build_cli() -> click.Group:
    """The whole ``taskfan`` command tree."""

    @click.group(PROG, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120},
                 help="Taskfan: publish a batch of tasks, get one outcome per batch (Dapr + Redis).",
                 epilog="The stack's apps and ports come from dapr.yaml (this folder or above, or "
                        "$TASKFAN_RUN_FILE); settings from environment variables (REDIS_PORT, SCORERS, "
                        "SCORE_DELAY_MS, INGEST_URL, ...); see README.md.")
    @click.version_option(version(), "--version", prog_name=PROG, message="%(prog)s %(version)s")
    def cli() -> None:
        pass

    @cli.command("publish", short_help="publish a batch file through the ingest HTTP API",
                 help='Publish a batch file through the ingest HTTP API. FILE: JSON file: {"batch_id"?, '
                      '"tasks": [...]} or a list of tasks; - = stdin.')
    @click.argument("file")
    @click.option("--batch-id", help="use this batch id (default: the file's, else one is assigned)")
    @click.option("--wait", is_flag=True,
                  help="wait for the outcome and print it; progress on stderr (a live bar on a terminal)")
    @click.option("--timeout", type=float, default=600, help="seconds to wait with --wait (default 600)")
    @click.option("--url", help="ingest API base URL (default: $INGEST_URL, else from dapr.yaml)")
    def publish(file: str, batch_id: str | None, wait: bool, timeout: float, url: str | None) -> int:
        return cmd_publish(file, batch_id, wait, timeout, url)

    @cli.command("outcomes", short_help="print outcomes: recent ones, or --follow new ones as they arrive",
                 help="Print outcomes: recent ones, or --follow new ones as they arrive.")
    @click.option("--follow", "-f", is_flag=True,
                  help="subscribe through a Dapr sidecar and print outcomes as they arrive")
    @click.option("--group", default="taskfan-cli",
                  help="consumer group (Dapr app id) of the subscription (default taskfan-cli); followers sharing "
                       "a group share the outcomes")
    @click.option("--batch", help="only this batch; with --follow, exit after printing it")
    @click.option("--count", type=int, default=10, help="how many recent outcomes (default 10)")
    def outcomes(follow: bool, group: str, batch: str | None, count: int) -> int:
        return cmd_outcomes(follow, group, batch, count)

    @cli.command("status", short_help="show a batch's workflow state and progress",
                 help="Show a batch's workflow state and progress.")
    @click.argument("batch_id")
    @click.option("--watch", "-w", is_flag=True,
                  help="follow the batch until it ends: a live progress bar on a terminal (done / total, rate, "
                       "time left), plain lines when piped; exit 0 if it completed")
    @click.option("--timeout", type=float, default=3600, help="seconds to watch (default 3600)")
    def status(batch_id: str, watch: bool, timeout: float) -> int:
        return cmd_status(batch_id, watch, timeout)

    cli.add_command(batches_command())
    cli.add_command(dead_letters_command())

    @cli.command("console", short_help="print a one-time sign-in link to the web console of the running stack",
                 help="Print a one-time sign-in link to the web console of the running stack.")
    @click.option("--open", "open_browser", is_flag=True, help="and open it in a browser")
    @click.option("--role", type=click.Choice(ROLES), default="view",
                  help="view (default): look only; act: also terminate, re-run and purge batches (the operator's)")
    def console(open_browser: bool, role: str) -> int:
        return cmd_console(open_browser, role)

    @cli.command("stack", short_help="start or stop the local stack (what `make up` / `make down` run)",
                 help="Start or stop the local stack (what `make up` / `make down` run). ACTION: up, down, status, "
                      "scale, restart or env. scale --scorers N / --workflows N / --app ID --replicas N adds or "
                      "removes scorer replicas, workflow processes or another step app's replicas of the running "
                      "stack (a removed one finishes its calls first); "
                      "restart SIGKILLs one process (--app) and starts it again: a crash drill; restart --all "
                      "restarts every app and its sidecar gracefully, one after another: a rolling restart; "
                      "env prints `export` lines with the stack's tokens and Redis "
                      "password, for a shell of your own; env --app ID prints instead an outside app's grant (its "
                      "own sidecar's token, its resources folder, its mTLS identity) and nothing more.")
    @click.argument("action", type=click.Choice(STACK_ACTIONS), metavar="ACTION")
    @click.option("--app", help="with scale: a step app's id (validator, enricher, ...); "
                                "with restart: a process name from `stack status` (workflow, scorer-0, "
                                "workflow-daprd, redis, scheduler, ...); with env: the app id of a sidecar of your "
                                "own, listed in OUTCOME_SUBSCRIBERS or TASKS_PUBLISHERS")
    @click.option("--scorers", type=int, default=None, help="scorer replicas: for up (default $SCORERS or 1) and scale")
    @click.option("--workflows", type=int, default=None,
                  help="workflow processes: for up (default $WORKFLOWS or 1) and scale, 1 to 4")
    @click.option("--replicas", type=int, default=None, help="with scale --app: that step app's replicas, 1 to 4")
    @click.option("--all", "every_app", is_flag=True, help="with restart: every app and its sidecar, one after another")
    def stack(action: str, app: str | None, scorers: int | None, workflows: int | None, replicas: int | None,
              every_app: bool) -> int:
        return cmd_stack(action, app, scorers, workflows, replicas, every_app)

    @cli.command("schemas", short_help="write the JSON Schema files of the events",
                 help="Write the JSON Schema files of the events.")
    @click.option("--out", default="schemas", help="folder to write them to (default ./schemas)")
    def schemas(out: str) -> int:
        return cmd_schemas(out)

    @cli.command("completion", short_help="print the shell completion script (bash, zsh or fish)",
                 help='Print the shell completion script for SHELL: `eval "$(taskfan completion bash)"` in '
                      "~/.bashrc (zsh: the same with zsh in ~/.zshrc; fish: `taskfan completion fish | source`).")
    @click.argument("shell", type=click.Choice(SHELLS), metavar="SHELL")
    @click.pass_context
    def completion(ctx: click.Context, shell: str) -> None:
        print(completion_script(ctx.find_root().command, shell))

    return cli


def completion_script(root: click.Command, shell: str) -> str:
    """click's completion script for ``shell``: it calls ``taskfan`` back with ``_TASKFAN_COMPLETE`` set."""
    kind = get_completion_class(shell)
    if kind is None:  # click.Choice let only SHELLS through
        raise CliError(f"no completion for {shell}", EXIT_BAD_INPUT)
    return kind(root, {}, PROG, COMPLETE_VAR).source()


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
    """Run ``taskfan`` with ``argv`` (default: the process's arguments); the exit code."""
    try:
        # standalone_mode=False: click returns the command's code (or --help's 0) instead of exiting, and raises
        # what went wrong; a completion request (COMPLETE_VAR set) still exits at once, its answer printed.
        code = build_cli().main(args=argv, prog_name=PROG, complete_var=COMPLETE_VAR, standalone_mode=False)
    except click.ClickException as exc:  # a usage error (exit 2), with click's line saying what and where
        exc.show()
        return exc.exit_code
    except CliError as exc:
        print(f"taskfan: {exc}", file=sys.stderr)
        return exc.code
    except (click.Abort, KeyboardInterrupt):  # click turns ctrl-c into Abort
        return EXIT_INTERRUPTED
    return int(code or 0)
