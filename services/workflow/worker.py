"""The workflow worker: registers the workflows and activities under their stable names.

Changing the code while batches run (README, "Upgrading with batches in flight"): an activity runs the code
of the process that takes it, so a changed activity applies to running batches at their next call (keep its
input and output models readable both ways). The batch workflow is replayed from its history, so a change
to the durable calls it makes goes into a new version: its function registered here under a new name, made
``LATEST``; batches started before it finish on the version they started with, which stays registered
until none of them is left.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dapr.ext.workflow as wf

from services.workflow import activities, names
from services.workflow.batch_workflow import process_batch
from taskfan.dapr_app import sdk_logger_options

ACTIVITIES = {
    names.RUN_CHUNK: activities.run_chunk,
    names.SAVE_RESULTS: activities.save_chunk_results,
    names.PUBLISH_OUTCOME: activities.publish_outcome,
    names.DEAD_LETTER_BATCH: activities.dead_letter_batch,
    names.REQUEST_ADMISSION: activities.request_admission,
}


# Each version of the batch workflow still registered, and the one a new batch starts on.
WORKFLOW_VERSIONS: dict[str, Callable[..., Any]] = {"v1": process_batch}
LATEST = "v1"


def create_runtime() -> wf.WorkflowRuntime:
    runtime = wf.WorkflowRuntime(maximum_thread_pool_workers=16, logger_options=sdk_logger_options())
    for version, fn in WORKFLOW_VERSIONS.items():
        runtime.register_versioned_workflow(fn, name=names.BATCH_WORKFLOW, version_name=version,
                                            is_latest=version == LATEST)
    for name, fn in ACTIVITIES.items():
        runtime.register_activity(fn, name=name)
    return runtime
