"""``taskfan``: publish batches, follow outcomes, inspect a batch, run the local stack.

Exit codes: 0 success, 1 the stack refused or failed, 2 bad input (file, arguments), 3 stack unreachable.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from taskfan.contracts import OUTCOMES_TOPIC, PUBSUB, DeadLetter, Outcome, TaskBatch
from taskfan.settings import REPO_ROOT, Settings, SettingsError

EXIT_REFUSED, EXIT_BAD_INPUT, EXIT_UNREACHABLE = 1, 2, 3


class CliError(Exception):
    def __init__(self, message: str, code: int, transient: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.transient = transient


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from None


# --- publish -------------------------------------------------------------------------------------


def read_batch_file(path: str) -> bytes:
    try:
        raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", EXIT_BAD_INPUT) from None
    try:
        json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CliError(f"{path} is not valid JSON: {exc}", EXIT_BAD_INPUT) from None
    return raw


def cmd_publish(args: argparse.Namespace) -> int:
    settings = _settings()
    body = read_batch_file(args.file)
    if args.batch_id:
        document = json.loads(body)
        document = {"tasks": document} if isinstance(document, list) else document
        if not isinstance(document, dict):
            raise CliError(f"{args.file} must hold a JSON object or a list of tasks", EXIT_BAD_INPUT)
        document["batch_id"] = args.batch_id
        body = json.dumps(document).encode()
    url = f"{args.url or settings.ingest_url}/batches"
    try:
        response = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=30)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach the ingest API at {url}: {exc} (is the stack up? `make up`)",
                       EXIT_UNREACHABLE) from None
    if response.status_code != 202:
        message = _error_text(response)
        code = EXIT_BAD_INPUT if 400 <= response.status_code < 500 else EXIT_REFUSED
        raise CliError(f"batch refused ({response.status_code}): {message}", code)
    accepted = response.json()
    print(f"published batch {accepted['batch_id']} ({accepted['tasks']} tasks)", file=sys.stderr)
    if not args.wait:
        print(accepted["batch_id"])
        return 0
    outcome = wait_for_outcome(accepted["batch_id"], args.timeout)
    print(json.dumps(outcome, indent=2))
    return 0


def _error_text(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text))
    except ValueError:
        return response.text


# --- status --------------------------------------------------------------------------------------


def workflow_state(batch_id: str) -> dict[str, Any] | None:
    """The batch's workflow through Dapr's own workflow HTTP API on the workflow sidecar."""
    from taskfan.stack import WORKFLOW

    url = f"http://127.0.0.1:{WORKFLOW.http_port}/v1.0/workflows/dapr/{batch_id}"
    try:
        response = httpx.get(url, timeout=10)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach the workflow sidecar at {url}: {exc} (is the stack up?)",
                       EXIT_UNREACHABLE) from None
    if response.status_code == 404 or "ERR_INSTANCE_ID_NOT_FOUND" in response.text:
        return None
    if response.status_code != 200:
        # A 5xx can be transient: Dapr reads a running workflow's state while the engine writes it.
        raise CliError(f"workflow API answered {response.status_code}: {response.text}", EXIT_REFUSED,
                       transient=response.status_code >= 500)
    return response.json()


def summarize(batch_id: str, state: dict[str, Any] | None) -> dict[str, Any]:
    if state is None:
        return {"batch_id": batch_id, "state": "UNKNOWN", "detail": "no workflow with this id (yet)"}
    props = state.get("properties", {})
    progress = json.loads(props.get("dapr.workflow.custom_status") or "{}")
    summary: dict[str, Any] = {
        "batch_id": batch_id,
        "state": state.get("runtimeStatus"),
        "done": progress.get("done"),
        "total": progress.get("total"),
        "created_at": state.get("createdAt"),
        "last_updated_at": state.get("lastUpdatedAt"),
    }
    output = props.get("dapr.workflow.output")
    if output:
        outcome = json.loads(output)
        summary.update({k: outcome[k] for k in ("completed", "rejected", "failed", "average_score")})
    if props.get("dapr.workflow.failure.error_message"):
        summary["error"] = props["dapr.workflow.failure.error_message"]
    return summary


def cmd_status(args: argparse.Namespace) -> int:
    summary = summarize(args.batch_id, workflow_state(args.batch_id))
    print(json.dumps(summary, indent=2))
    return 0 if summary["state"] != "UNKNOWN" else EXIT_REFUSED


def wait_for_outcome(batch_id: str, timeout: float) -> dict[str, Any]:
    """Poll the workflow until it completes, showing progress; return the outcome."""
    deadline = time.monotonic() + timeout
    last = None
    transient_errors = 0
    while time.monotonic() < deadline:
        try:
            state = workflow_state(batch_id)
        except CliError as exc:
            transient_errors += 1
            if not exc.transient or transient_errors > 20:
                raise
            time.sleep(0.5)
            continue
        transient_errors = 0
        summary = summarize(batch_id, state)
        line = f"{summary['state']}: {summary.get('done') or 0}/{summary.get('total') or '?'} tasks done"
        if line != last:
            print(line, file=sys.stderr)
            last = line
        if summary["state"] == "COMPLETED":
            outcome = find_outcome(batch_id)
            if outcome is None:
                raise CliError(f"batch {batch_id} completed but its outcome is not on the "
                               f"{OUTCOMES_TOPIC!r} stream", EXIT_REFUSED)
            return outcome
        if summary["state"] in ("FAILED", "TERMINATED"):
            raise CliError(f"batch {batch_id} ended {summary['state']}: {summary.get('error', '')}",
                           EXIT_REFUSED)
        time.sleep(0.25)  # a poll interval under a deadline
    raise CliError(f"batch {batch_id} has no outcome after {timeout:.0f}s", EXIT_REFUSED)


# --- outcomes ------------------------------------------------------------------------------------


def cmd_outcomes(args: argparse.Namespace) -> int:
    if args.follow:
        return follow_outcomes(args.group, args.batch)
    return recent_outcomes(args.count, args.batch)


def stored_outcomes(count: int) -> list[dict[str, Any]]:
    """The latest ``count`` outcomes, oldest first, from the Redis stream where Dapr's pub/sub keeps them."""
    import redis

    from taskfan import events

    settings = _settings()
    client = redis.Redis(host=settings.redis_host, port=settings.redis_port)
    try:
        entries = client.xrevrange(OUTCOMES_TOPIC, count=count)
    except redis.RedisError as exc:
        raise CliError(f"cannot read Redis at {settings.redis_address}: {exc}", EXIT_UNREACHABLE) from None
    outcomes = []
    for _, fields in reversed(entries):
        try:
            outcomes.append(events.decode(fields[b"data"], Outcome).model_dump(mode="json"))
        except events.EventError:
            continue  # something else published on the topic; not ours to show
    return outcomes


def find_outcome(batch_id: str, search: int = 10_000) -> dict[str, Any] | None:
    return next((o for o in reversed(stored_outcomes(search)) if o["batch_id"] == batch_id), None)


def recent_outcomes(count: int, batch_id: str | None) -> int:
    if batch_id:
        outcome = find_outcome(batch_id)
        if outcome is None:
            raise CliError(f"no outcome for batch {batch_id} in the last 10,000 outcomes", EXIT_REFUSED)
        print(json.dumps(outcome))
        return 0
    for outcome in stored_outcomes(count):
        print(json.dumps(outcome))
    return 0


def follow_outcomes(group: str, batch_id: str | None) -> int:
    """A real Dapr subscription: a sidecar of our own with app id ``group`` streams ``outcomes``."""
    from taskfan.stack import Stack, StackError

    stack = Stack(_settings())
    try:
        sidecar, process = stack.start_sidecar(group)
    except StackError as exc:
        raise CliError(str(exc), EXIT_UNREACHABLE) from None
    print(f"following {PUBSUB}/{OUTCOMES_TOPIC} as consumer group {group!r} (Ctrl-C to stop)",
          file=sys.stderr)
    try:
        from dapr.clients import DaprClient

        with DaprClient(f"127.0.0.1:{sidecar.grpc_port}") as client:
            subscription = client.subscribe(PUBSUB, OUTCOMES_TOPIC)
            try:
                for message in subscription:
                    if message is None:
                        continue
                    # Acknowledge first: printing is all this subscriber does with an outcome.
                    subscription.respond_success(message)
                    try:
                        outcome = Outcome.model_validate_json(message.raw_data())
                    except ValueError as exc:
                        print(f"skipping an event that is not an outcome: {exc}", file=sys.stderr)
                        continue
                    if batch_id and outcome.batch_id != batch_id:
                        continue
                    print(json.dumps(outcome.model_dump(mode="json")), flush=True)
                    if batch_id:
                        return 0
            finally:
                subscription.close()
    except KeyboardInterrupt:
        return 0
    finally:
        stack.stop_sidecar(process)
    return 0


# --- stack and schemas ---------------------------------------------------------------------------


def cmd_stack(args: argparse.Namespace) -> int:
    from taskfan.stack import Stack, StackError

    stack = Stack(_settings())
    try:
        if args.action == "up":
            stack.up(args.scorers)
        elif args.action == "down":
            stack.down()
        elif args.action == "restart":
            if not args.app:
                raise CliError("restart needs --app NAME (a process name from `stack status`, e.g. workflow)",
                               EXIT_BAD_INPUT)
            stack.restart(args.app)
            print(f"{args.app} restarted and ready")
        else:
            rows = stack.status()
            for name, pid, alive in rows:
                print(f"{name:22} pid {pid:<8} {'running' if alive else 'STOPPED'}")
            if not rows:
                print("no stack is running")
            return 0 if rows and all(alive for *_, alive in rows) else EXIT_REFUSED
    except StackError as exc:
        raise CliError(str(exc), EXIT_REFUSED) from None
    return 0


SCHEMA_MODELS = {"task-batch.schema.json": TaskBatch, "outcome.schema.json": Outcome,
                 "dead-letter.schema.json": DeadLetter}


def schema_documents() -> dict[str, str]:
    return {name: json.dumps(model.model_json_schema(), indent=2) + "\n" for name, model in SCHEMA_MODELS.items()}


def cmd_schemas(args: argparse.Namespace) -> int:
    target = REPO_ROOT / "schemas"
    target.mkdir(exist_ok=True)
    for name, text in schema_documents().items():
        (target / name).write_text(text)
        print(target / name)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="taskfan",
        description="Taskfan: publish a batch of tasks, get one outcome per batch (Dapr + Redis).",
        epilog="Settings come from environment variables (REDIS_PORT, SCORERS, SCORE_DELAY_MS, ...); "
               "see README.md.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    pub = sub.add_parser("publish", help="publish a batch file through the ingest HTTP API")
    pub.add_argument("file", help='JSON file: {"batch_id"?, "tasks": [...]} or a list of tasks; - = stdin')
    pub.add_argument("--batch-id", help="use this batch id (default: the file's, else one is assigned)")
    pub.add_argument("--wait", action="store_true", help="wait for the outcome and print it")
    pub.add_argument("--timeout", type=float, default=600, help="seconds to wait with --wait (default 600)")
    pub.add_argument("--url", help="ingest API base URL (default http://127.0.0.1:8080)")
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
    st.set_defaults(func=cmd_status)

    stk = sub.add_parser("stack", help="start or stop the local stack (what `make up` / `make down` run)")
    stk.add_argument("action", choices=["up", "down", "status", "restart"],
                     help="restart SIGKILLs one process (--app) and starts it again: a crash drill")
    stk.add_argument("--app", help="with restart: a process name from `stack status` "
                                   "(workflow, scorer-0, workflow-daprd, redis, scheduler, ...)")
    stk.add_argument("--scorers", type=int, default=None, help="scorer replicas (default $SCORERS or 1)")
    stk.set_defaults(func=cmd_stack)

    sch = sub.add_parser("schemas", help="write the JSON Schema files of the events to schemas/")
    sch.set_defaults(func=cmd_schemas)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CliError as exc:
        print(f"taskfan: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
