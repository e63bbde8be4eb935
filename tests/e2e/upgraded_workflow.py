"""The workflow app, upgraded as the README's "Upgrading with batches in flight" says, for test_upgrade.py.

Two changes, one of each kind:
- a changed activity: ``publish_outcome`` also leaves a mark (``taskfan:<batch>:mark:activity``), for every
  batch it publishes from now on, whichever version of the workflow the batch runs;
- a changed workflow: version ``v2`` makes one more durable call first (``mark_workflow``: a mark
  ``taskfan:<batch>:mark:workflow``), then runs as ``v1``. ``v2`` is ``LATEST``; ``v1`` stays registered.

    PYTHONPATH=<checkout> python tests/e2e/upgraded_workflow.py
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import dapr.ext.workflow as wf

from services.workflow import app, worker
from services.workflow.activities import BatchActivities
from services.workflow.batch_workflow import process_batch
from services.workflow.models import BatchInput, OutcomeSummary, PublishInput
from taskfan.contracts import STATESTORE

MARK_WORKFLOW = "mark_workflow"


def mark_key(batch_id: str, what: str) -> str:
    return f"taskfan:{batch_id}:mark:{what}"


class UpgradedActivities(BatchActivities):
    async def mark_workflow(self, ctx: wf.WorkflowActivityContext, batch_id: str) -> None:
        await self._mark(batch_id, "workflow")

    async def publish_outcome(self, ctx: wf.WorkflowActivityContext, inp: PublishInput) -> OutcomeSummary:
        summary = await super().publish_outcome(ctx, inp)
        await self._mark(inp.batch_id, "activity")
        return summary

    def registered(self) -> dict[str, Any]:
        return {**super().registered(), MARK_WORKFLOW: self.mark_workflow}

    async def _mark(self, batch_id: str, what: str) -> None:
        await self.dapr.save_state(STATESTORE, mark_key(batch_id, what), what, state_metadata={"ttlInSeconds": "3600"})


def process_batch_v2(ctx: wf.DaprWorkflowContext, inp: BatchInput) -> Generator[Any, Any, OutcomeSummary]:
    yield ctx.call_activity(MARK_WORKFLOW, input=inp.batch_id)
    return (yield from process_batch(ctx, inp))


def main() -> None:
    app.main(activities=UpgradedActivities, versions={**worker.WORKFLOW_VERSIONS, "v2": process_batch_v2},
             latest="v2")


if __name__ == "__main__":
    main()
