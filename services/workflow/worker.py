"""The workflow worker: registers the workflows and activities under their stable names."""

from __future__ import annotations

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


def create_runtime() -> wf.WorkflowRuntime:
    runtime = wf.WorkflowRuntime(maximum_thread_pool_workers=16, logger_options=sdk_logger_options())
    runtime.register_workflow(process_batch, name=names.BATCH_WORKFLOW)
    for name, fn in ACTIVITIES.items():
        runtime.register_activity(fn, name=name)
    return runtime
