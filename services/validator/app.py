"""validator transport: service invocation method ``validate`` (a list of tasks in, issues out)."""

from typing import Any

from dapr.ext.grpc import App

from taskfan.contracts import AppId, Task
from taskfan.dapr_app import json_method, per_task, serve
from taskfan.settings import Settings
from taskfan.validator.rules import validation_issues


def validate(task: Task) -> dict[str, Any]:
    return {"issues": validation_issues(task.title, task.description)}


def configure(app: App, settings: Settings) -> None:
    app.method("validate")(json_method(per_task(validate)))


def main() -> None:
    serve(AppId.VALIDATOR, configure)


if __name__ == "__main__":
    main()
