"""Pure helpers of the batch workflow: task results and the fan-in aggregate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.workflow.models import ChunkSummary
from taskfan.contracts import Outcome, TaskResult
from taskfan.pipeline import RESULT_FIELDS

MAX_ERROR_CHARS = 300  # keeps a 10,000-task outcome far below the 4 MiB workflow payload cap


def completed(task_id: str, added: dict[str, Any]) -> TaskResult:
    """A task through every step: what they added, ``score`` and ``tags`` in the outcome's own fields."""
    return TaskResult(task_id=task_id, status="completed", score=added.get("score"), tags=added.get("tags", []),
                      added=_others(added))


def rejected(task_id: str, issues: list[str]) -> TaskResult:
    return TaskResult(task_id=task_id, status="rejected", score=0, issues=issues)


def failed(task_id: str, step: str, error: str, added: dict[str, Any] | None = None) -> TaskResult:
    """A task that could not finish ``step``, with what earlier steps added."""
    added = added or {}
    message = f"{step}: {error}"
    if len(message) > MAX_ERROR_CHARS:
        message = message[: MAX_ERROR_CHARS - 1] + "…"
    return TaskResult(task_id=task_id, status="failed", score=None, tags=added.get("tags", []), error=message,
                      added=_others(added))


def _others(added: dict[str, Any]) -> dict[str, Any]:
    return {field: value for field, value in added.items() if field not in RESULT_FIELDS}


def summary(results: Sequence[TaskResult]) -> ChunkSummary:
    """Counts of one chunk, for the batch's progress."""
    statuses = [r.status for r in results]
    return ChunkSummary(done=len(statuses), completed=statuses.count("completed"),
                        rejected=statuses.count("rejected"), failed=statuses.count("failed"))


def aggregate(batch_id: str, results: Sequence[TaskResult], started_at: str, finished_at: str) -> Outcome:
    """Fan-in: one outcome for the batch, results in input order."""
    scores = [r.score for r in results if r.status == "completed" and r.score is not None]
    return Outcome(
        batch_id=batch_id,
        total=len(results),
        completed=sum(r.status == "completed" for r in results),
        rejected=sum(r.status == "rejected" for r in results),
        failed=sum(r.status == "failed" for r in results),
        average_score=round(sum(scores) / len(scores), 2) if scores else None,
        results=list(results),
        started_at=started_at,
        finished_at=finished_at,
    )
