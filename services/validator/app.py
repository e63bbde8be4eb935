"""validator transport: service invocation method ``validate``."""

from typing import Any

from dapr.ext.grpc import App

from taskfan.contracts import AppId, Task
from taskfan.dapr_app import json_method, serve
from taskfan.settings import Settings
from taskfan.validator.rules import validation_issues


def validate(body: dict[str, Any]) -> dict[str, Any]:
    task = Task.model_validate(body)
    return {"issues": validation_issues(task.title, task.description)}


def configure(app: App, settings: Settings) -> None:
    app.method("validate")(json_method(validate))


def main() -> None:
    serve(AppId.VALIDATOR, configure)


if __name__ == "__main__":
    main()
