"""enricher transport: service invocation method ``enrich`` (a list of tasks in, tags out)."""

from typing import Any

from dapr.ext.grpc import App

from taskfan.contracts import AppId, Task
from taskfan.dapr_app import json_method, per_task, serve
from taskfan.enricher.rules import tags_for
from taskfan.settings import Settings


def enrich(task: Task) -> dict[str, Any]:
    return {"tags": tags_for(task.title, task.description)}


def configure(app: App, settings: Settings) -> None:
    app.method("enrich")(json_method(per_task(enrich)))


def main() -> None:
    serve(AppId.ENRICHER, configure)


if __name__ == "__main__":
    main()
