"""``watch_batch``: an answer for a batch whose workflow was terminated, or failed, from outside.

A terminated workflow runs no more code, so the intake starts this small workflow beside each batch
(instance ``<batch>~watch``, not a child: terminating the batch leaves it running). Every
``WATCH_INTERVAL`` it asks Dapr for the batch workflow's status; once the batch is over it stops, and if
it ended TERMINATED or FAILED it publishes the outcome itself: finished chunks' results, every other
task ``failed`` with the reason. Continue-as-new keeps its history to one round.
"""

from __future__ import annotations

from collections.abc import Generator
from datetime import UTC, timedelta
from typing import Any

import dapr.ext.workflow as wf

from services.workflow.models import BatchInput, BatchRef, BatchStatus, PublishInput
from services.workflow.names import CHECK_BATCH, FORGET_BATCH, PUBLISH_OUTCOME
from services.workflow.retry import INFRA_RETRY

WATCH_INTERVAL = timedelta(seconds=15)
UNANSWERED = ("TERMINATED", "FAILED")


def watch_batch(ctx: wf.DaprWorkflowContext, inp: BatchInput) -> Generator[Any, Any, str]:
    yield ctx.create_timer(WATCH_INTERVAL)
    ref = BatchRef(batch_id=inp.batch_id, chunks=inp.chunks)
    status = BatchStatus.model_validate((yield ctx.call_activity(CHECK_BATCH, input=ref, retry_policy=INFRA_RETRY)))
    if status.state in UNANSWERED:
        reason = f"the batch's workflow was {status.state.lower()}" + (f" ({status.error})" if status.error else "")
        finished_at = ctx.current_utc_datetime.replace(tzinfo=UTC).isoformat()
        yield ctx.call_activity(PUBLISH_OUTCOME, retry_policy=INFRA_RETRY, input=PublishInput(
            batch_id=inp.batch_id, chunks=inp.chunks, started_at=status.created_at or finished_at,
            finished_at=finished_at, unfinished_reason=f"{reason} before this task finished"))
        yield ctx.call_activity(FORGET_BATCH, input=ref, retry_policy=INFRA_RETRY)
        return f"answered a {status.state.lower()} batch"
    if status.state in ("RUNNING", "PENDING", "SUSPENDED"):
        ctx.continue_as_new(inp)
        return "watching"
    return f"batch {status.state.lower()}"
