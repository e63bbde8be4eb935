"""The stack's logs keep to a size on the real stack: rotated by the logkeeper, written on by every process."""

from __future__ import annotations

import uuid

from taskfan.stack import iter_log_records
from taskfan.stack.drill import restart

from .helpers import lesson_tasks, post_batch, stream_events, wait_for

MAX_BYTES = 20_000


def test_every_log_is_rotated_past_its_size_and_the_processes_write_on(stack, settings, redis_client):
    keeper = next(p for p in stack.running().processes if p.name == "logkeeper")
    restart(stack, "logkeeper", env={**keeper.env, "LOG_MAX_BYTES": str(MAX_BYTES), "LOG_FILES": "2"})
    workflow_log = stack.logs_dir / "workflow.log"
    try:
        token = uuid.uuid4().hex[:8]
        ids = [f"logs-{token}-{i}" for i in range(150)]  # the workflow app logs a line or two per batch
        for batch_id in ids:
            assert post_batch(settings, {"batch_id": batch_id, "tasks": lesson_tasks("t", 1)}).status_code == 202
        wait_for(lambda: {e["data"]["batch_id"] for e in stream_events(redis_client, "outcomes")} >= set(ids),
                 "every outcome", 120)
        wait_for(lambda: (stack.logs_dir / "workflow.log.2").exists(), "the workflow's log rotated twice", 30)
        wait_for(lambda: all(p.stat().st_size <= MAX_BYTES for p in stack.logs_dir.glob("*.log")),
                 f"every log back under {MAX_BYTES} bytes", 10)
        assert not list(stack.logs_dir.glob("*.log.3")), "more old copies kept than LOG_FILES"
        # The workflow app writes on into its log, whole JSON lines from its start (no hole, no torn line).
        last = f"logs-{token}-last"
        assert post_batch(settings, {"batch_id": last, "tasks": lesson_tasks("t", 1)}).status_code == 202
        wait_for(lambda: any(r.get("batch_id") == last for path in (workflow_log, stack.logs_dir / "workflow.log.1")
                             for r in iter_log_records(path)), "the new batch in the workflow's log", 30)
        assert workflow_log.read_bytes()[:1] in (b"{", b"")
    finally:
        restart(stack, "logkeeper", env=keeper.env)
