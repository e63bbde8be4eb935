"""Registered names of the workflows and activities.

Stable on purpose: instances in flight refer to these names in their histories, so renaming a
Python function must never rename what it is registered as.
"""

BATCH_WORKFLOW = "process_batch"
CHUNK_WORKFLOW = "process_chunk"

VALIDATE_CHUNK = "validate_chunk"  # loads a chunk's tasks and runs their first validation
VALIDATE = "validate_tasks"
ENRICH = "enrich_tasks"
SCORE = "score_tasks"
SAVE_RESULTS = "save_chunk_results"
PUBLISH_OUTCOME = "publish_outcome"
FORGET_BATCH = "forget_batch"
DEAD_LETTER_BATCH = "dead_letter_batch"  # the last resort when no outcome can be published
REQUEST_ADMISSION = "request_admission"  # queue the batch, admit what fits under the global cap

ADMITTED_EVENT = "admitted"  # raised to a queued batch when it is admitted
