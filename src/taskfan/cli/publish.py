"""``taskfan publish``: send a batch file to the ingest HTTP API; ``--wait`` prints its outcome."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import httpx

from taskfan import events
from taskfan.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    CliError,
    ingest_headers,
    ingest_url,
    settings,
)
from taskfan.cli.outcomes import find_outcome
from taskfan.cli.status import wait_until_done
from taskfan.contracts import OUTCOMES_TOPIC

OUTCOME_GRACE_S = 60.0


def read_batch_file(path: str) -> bytes:
    try:
        raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", EXIT_BAD_INPUT) from None
    try:
        events.parse_json(raw)
    except events.EventError as exc:
        raise CliError(f"{path} is not valid JSON: {exc}", EXIT_BAD_INPUT) from None
    return raw


def cmd_publish(file: str, batch_id: str | None = None, wait: bool = False, timeout: float = 600,
                url: str | None = None) -> int:
    body = read_batch_file(file)
    if batch_id:
        document = json.loads(body)
        document = {"tasks": document} if isinstance(document, list) else document
        if not isinstance(document, dict):
            raise CliError(f"{file} must hold a JSON object or a list of tasks", EXIT_BAD_INPUT)
        document["batch_id"] = batch_id
        body = json.dumps(document).encode()
    current = settings()
    url = f"{url or ingest_url(current)}/batches"
    try:
        response = httpx.post(url, content=body, timeout=30,
                              headers={"content-type": "application/json", **ingest_headers(current)})
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach the ingest API at {url}: {exc} (is the stack up? `make up`)",
                       EXIT_UNREACHABLE) from None
    if response.status_code != 202:
        code = EXIT_BAD_INPUT if 400 <= response.status_code < 500 else EXIT_REFUSED
        # A 503 with Retry-After: the stack is full for now (services/ingest/capacity.py); nothing was accepted.
        later = (f"; nothing was accepted, publish it again in {response.headers['retry-after']} s"
                 if "retry-after" in response.headers else "")
        raise CliError(f"batch refused ({response.status_code}): {_error_text(response)}{later}", code)
    accepted = response.json()
    print(f"published batch {accepted['batch_id']} ({accepted['tasks']} tasks)", file=sys.stderr)
    if not wait:
        print(accepted["batch_id"])
        return 0
    ended = wait_until_done(accepted["batch_id"], timeout)["state"]
    # A terminated or failed workflow's outcome comes from the workflow app within seconds, not at once.
    deadline = time.monotonic() + OUTCOME_GRACE_S
    while (outcome := find_outcome(accepted["batch_id"])) is None and time.monotonic() < deadline:
        time.sleep(0.5)
    if outcome is None:
        raise CliError(f"batch {accepted['batch_id']} ended {ended} but no outcome reached the "
                       f"{OUTCOMES_TOPIC!r} stream within {OUTCOME_GRACE_S:.0f}s", EXIT_REFUSED)
    print(json.dumps(outcome, indent=2))
    return 0


def _error_text(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text))
    except ValueError:
        return response.text
