"""enricher transport: service invocation method ``enrich`` (a list of tasks in, tags out)."""

from typing import Any

from services.enricher.rules import tags_for
from taskfan.contracts import AppId, Task
from taskfan.dapr_app import serve_step


def enrich(task: Task) -> dict[str, Any]:
    return {"tags": tags_for(task.title, task.description)}


def main() -> None:
    serve_step(AppId.ENRICHER, "enrich", enrich)


if __name__ == "__main__":
    main()
