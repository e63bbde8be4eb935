"""``taskfan status``: a batch's workflow state and progress, through Dapr's own workflow HTTP API."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx

from services.workflow.models import BatchProgress, OutcomeRecord
from taskfan import events
from taskfan.cli.common import EXIT_REFUSED, EXIT_UNREACHABLE, CliError, settings, workflow_dapr_url, workflow_headers
from taskfan.cli.progress import Progress
from taskfan.contracts import (
    ADMISSION_LEDGER_KEY,
    STATESTORE,
    admission_ticket_key,
    is_batch_id,
    workflow_instance_id,
)


def workflow_state(batch_id: str) -> dict[str, Any] | None:
    """The batch's workflow as the workflow sidecar's ``/v1.0/workflows/dapr/<id>`` answers it."""
    current = settings()
    url = f"{workflow_dapr_url(current)}/v1.0/workflows/dapr/{workflow_instance_id(batch_id)}"
    try:
        response = httpx.get(url, timeout=10, headers=workflow_headers(current))
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


def queue_position(batch_id: str) -> int | None:
    """A queued batch's place in the admission queue (1 = next), from the ledger the workflow keeps and the
    batch's ticket in it (services/workflow/admission.py), read through the workflow sidecar's state API."""
    from services.workflow.admission import Ledger, Ticket

    current = settings()
    base = f"{workflow_dapr_url(current)}/v1.0/state/{STATESTORE}"
    try:
        with httpx.Client(timeout=10, headers=workflow_headers(current)) as http:
            ledger = http.get(f"{base}/{ADMISSION_LEDGER_KEY}")
            ticket = http.get(f"{base}/{admission_ticket_key(batch_id)}")
        if ledger.status_code != 200 or ticket.status_code != 200:
            return None  # 204: no ledger, or no ticket (not queued)
        position = Ledger.model_validate_json(ledger.content).position(batch_id,
                                                                     Ticket.model_validate_json(ticket.content))
    except (httpx.HTTPError, ValueError):
        return None
    return position or None


def outcome_record(batch_id: str) -> OutcomeRecord | None:
    """The batch's outcome record, through the workflow sidecar's state API: what answers for a batch once
    Dapr has purged its finished workflow."""
    from services.workflow.state_keys import outcome_key

    current = settings()
    url = f"{workflow_dapr_url(current)}/v1.0/state/{STATESTORE}/{outcome_key(batch_id)}"
    try:
        response = httpx.get(url, timeout=10, headers=workflow_headers(current))
        return OutcomeRecord.model_validate_json(response.content) if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def summarize(batch_id: str, state: dict[str, Any] | None,
              position: Callable[[str], int | None] = lambda _: None,
              record: Callable[[str], OutcomeRecord | None] = lambda _: None) -> dict[str, Any]:
    if state is None:
        if (found := record(batch_id)) is not None:
            outcome = found.summary
            return {"batch_id": batch_id, "state": found.ended, "done": outcome.total,
                    **outcome.model_dump(include={"total", "completed", "rejected", "failed", "average_score"}),
                    "created_at": outcome.started_at, "last_updated_at": outcome.finished_at,
                    "detail": "finished, its workflow's state purged: from the batch's outcome record"}
        return {"batch_id": batch_id, "state": "UNKNOWN", "detail": "no workflow with this id (yet)"}
    props = state.get("properties", {})
    custom = props.get("dapr.workflow.custom_status")
    # The workflow's progress (its custom status): none before its first step.
    progress = BatchProgress.model_validate_json(custom) if custom else None
    summary: dict[str, Any] = {
        "batch_id": batch_id,
        "state": state.get("runtimeStatus"),
        "done": progress.done if progress else None,
        "total": progress.total if progress else None,
        **(progress.model_dump(include={"completed", "rejected", "failed"}) if progress else {}),
        "created_at": state.get("createdAt"),
        "last_updated_at": state.get("lastUpdatedAt"),
    }
    if progress and progress.queued and summary["state"] == "RUNNING":
        # Waiting for admission (a global cap on tasks in progress); it starts when its turn comes.
        summary["state"] = "QUEUED"
        summary["position"] = position(batch_id)
    output = props.get("dapr.workflow.output")
    if output:
        outcome = json.loads(output)
        summary.update({k: outcome[k] for k in ("completed", "rejected", "failed", "average_score")})
    if props.get("dapr.workflow.failure.error_message"):
        summary["error"] = props["dapr.workflow.failure.error_message"]
    return summary


def cmd_status(batch_id: str, watch: bool = False, timeout: float = 3600) -> int:
    if not is_batch_id(batch_id):  # no Dapr URL is made of it
        raise CliError(f"{events.printable(batch_id, 200)!r} is not a batch id (1 to 128 characters: letters, "
                       "digits, '.', '_', '-', ':')", EXIT_REFUSED)
    if watch:
        summary = wait_until_done(batch_id, timeout)
        print(json.dumps(summary, indent=2))
        return 0 if summary["state"] == "COMPLETED" else EXIT_REFUSED
    summary = summarize(batch_id, workflow_state(batch_id), queue_position, outcome_record)
    print(json.dumps(summary, indent=2))
    return 0 if summary["state"] != "UNKNOWN" else EXIT_REFUSED


ENDED = ("COMPLETED", "FAILED", "TERMINATED")


def wait_until_done(batch_id: str, timeout: float) -> dict[str, Any]:
    """Poll the workflow until it ends, showing its progress on stderr (a live bar on a terminal, plain
    lines when piped); return its last summary (``summarize``).

    A terminated or failed batch still gets an outcome (the workflow app answers for it).
    """
    deadline = time.monotonic() + timeout
    transient_errors = 0
    progress = Progress(sys.stderr)
    try:
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
            # The ledger is read only for a queued batch, the outcome record only for a purged one.
            summary = summarize(batch_id, state, queue_position, outcome_record)
            progress.update(summary)
            if summary["state"] in ENDED:
                return summary
            time.sleep(0.25)  # a poll interval under a deadline
    finally:
        progress.close()
    raise CliError(f"batch {batch_id} has no outcome after {timeout:.0f}s", EXIT_REFUSED)

