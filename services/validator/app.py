"""validator transport: service invocation method ``validate`` (a list of tasks in, issues out)."""

from typing import Any

from services.validator.rules import validation_issues
from taskfan.contracts import AppId, Task
from taskfan.dapr_app import serve_step


def validate(task: Task) -> dict[str, Any]:
    return {"issues": validation_issues(task.title, task.description)}


def main() -> None:
    serve_step(AppId.VALIDATOR, "validate", validate)


if __name__ == "__main__":
    main()
