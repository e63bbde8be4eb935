"""An example step of your own: the writing system of a task's title and description, added to the task as
``script``. It is wired in by one row of pipeline.yaml and one entry of dapr.yaml (README, "Your own step"):

    - {name: detect-script, app_id: script-detector, method: detect-script, reads: [title, description],
       adds: {script: string}}
"""

from __future__ import annotations

from detect import script_of

from taskfan.contracts import Task
from taskfan.dapr_app import serve_step


def detect(task: Task) -> dict[str, str]:
    return {"script": script_of(f"{task.title} {task.description}")}


if __name__ == "__main__":
    serve_step("script-detector", "detect-script", detect)
