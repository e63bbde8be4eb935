"""The benchmark's work: deterministic tasks that exercise every rule, the same for every system."""

from __future__ import annotations

from typing import Any

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
