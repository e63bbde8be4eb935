"""The benchmark's work: deterministic tasks that exercise every rule, the same for every system, and the
check every system's outcome must pass, task by task, before its figure counts."""

from __future__ import annotations

from typing import Any

from services.enricher.rules import tags_for
from services.scorer.rules import score_for
from services.validator.rules import validation_issues

TITLES = ["Urgent: fix login API", "Update onboarding docs", "Urgent: rotate keys", "Add search filters"]
DESCRIPTIONS = ["The login api returns 500 errors", "Refresh the getting-started guide",
                "Rotate the signing keys before Friday", "Filter results by the API owner"]


def tasks(count: int, prefix: str = "t") -> list[dict[str, Any]]:
    """Valid tasks (every one goes through all three steps), mixed tags."""
    return [
        {"task_id": f"{prefix}-{i:05d}", "title": TITLES[i % 4], "description": DESCRIPTIONS[(i // 4) % 4]}
        for i in range(count)
    ]


def batches(total: int, size: int, prefix: str) -> list[dict[str, Any]]:
    all_tasks = tasks(total)
    return [{"batch_id": f"{prefix}-{n:04d}", "tasks": all_tasks[i : i + size]}
            for n, i in enumerate(range(0, total, size))]


def expected(task: dict[str, Any]) -> tuple[str, int, list[str]]:
    """(status, score, tags) the rules give a task."""
    if validation_issues(task["title"], task["description"]):
        return "rejected", 0, []
    tags = tags_for(task["title"], task["description"])
    return "completed", score_for(tags), tags


def check_outcome(batch: dict[str, Any], outcome: dict[str, Any], system: str) -> None:
    """Raise unless ``outcome`` has one result per task of ``batch``, in order, each as the rules say."""
    results = outcome.get("results", [])
    got_ids = [r["task_id"] for r in results]
    want_ids = [t["task_id"] for t in batch["tasks"]]
    if got_ids != want_ids:
        raise RuntimeError(f"{system}: batch {batch['batch_id']}: {len(got_ids)} results for {len(want_ids)} "
                           "tasks, or not in input order")
    for task, result in zip(batch["tasks"], results, strict=True):
        status, score, tags = expected(task)
        got = (result["status"], result["score"], sorted(result.get("tags") or []))
        if got != (status, score, sorted(tags)):
            raise RuntimeError(f"{system}: task {task['task_id']}: got {got}, the rules say {(status, score, tags)}")
    completed = sum(1 for r in results if r["status"] == "completed")
    if outcome.get("total") != len(want_ids) or outcome.get("completed") != completed:
        raise RuntimeError(f"{system}: batch {batch['batch_id']}: counts {outcome.get('total')}/"
                           f"{outcome.get('completed')} do not match its {len(want_ids)} results")
