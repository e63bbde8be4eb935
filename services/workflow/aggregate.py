"""Pure helpers of the batch workflow: task results, chunking and the fan-in aggregate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from taskfan.contracts import Outcome, TaskResult

MAX_ERROR_CHARS = 300  # keeps a 10,000-task outcome far below the 4 MiB workflow payload cap


def completed(task_id: str, score: int, tags: list[str]) -> dict[str, Any]:
    return TaskResult(task_id=task_id, status="completed", score=score, tags=tags).model_dump()


def rejected(task_id: str, issues: list[str]) -> dict[str, Any]:
    return TaskResult(task_id=task_id, status="rejected", score=0, issues=issues).model_dump()


def failed(task_id: str, step: str, error: str, tags: list[str] | None = None) -> dict[str, Any]:
    message = f"{step}: {error}"
    if len(message) > MAX_ERROR_CHARS:
        message = message[: MAX_ERROR_CHARS - 1] + "…"
    return TaskResult(
        task_id=task_id, status="failed", score=None, tags=tags or [], error=message
    ).model_dump()


def chunk(items: Sequence[Any], size: int) -> list[list[Any]]:
    """Split into consecutive chunks of at most ``size`` items, keeping order."""
    if size < 1:
        raise ValueError("chunk size must be >= 1")
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def summary(results: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Counts of one chunk, for the batch's progress."""
    statuses = [r["status"] for r in results]
    return {"done": len(statuses), "completed": statuses.count("completed"),
            "rejected": statuses.count("rejected"), "failed": statuses.count("failed")}


def aggregate(
    batch_id: str, results: Sequence[dict[str, Any]], started_at: str, finished_at: str
) -> dict[str, Any]:
    """Fan-in: one outcome for the batch, results in input order."""
    parsed = [TaskResult.model_validate(r) for r in results]
    scores = [r.score for r in parsed if r.status == "completed" and r.score is not None]
    outcome = Outcome(
        batch_id=batch_id,
        total=len(parsed),
        completed=sum(r.status == "completed" for r in parsed),
        rejected=sum(r.status == "rejected" for r in parsed),
        failed=sum(r.status == "failed" for r in parsed),
        average_score=round(sum(scores) / len(scores), 2) if scores else None,
        results=parsed,
        started_at=started_at,
        finished_at=finished_at,
    )
    return outcome.model_dump()
