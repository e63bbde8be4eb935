"""Registered names of the workflows and activities.

Stable on purpose: instances in flight refer to these names in their histories, so renaming a
Python function must never rename what it is registered as.
"""

BATCH_WORKFLOW = "process_batch"

RUN_CHUNK = "run_chunk"  # a chunk's tasks through validate -> enrich -> score, its results saved
SAVE_RESULTS = "save_chunk_results"  # a chunk whose run_chunk failed: its tasks failed, saved
PUBLISH_OUTCOME = "publish_outcome"  # then the batch's data and slots are released
DEAD_LETTER_BATCH = "dead_letter_batch"  # the last resort when no outcome can be published
REQUEST_ADMISSION = "request_admission"  # queue the batch, admit what fits under the global cap

ADMITTED_EVENT = "admitted"  # raised to a queued batch when it is admitted
