"""What a finished batch leaves behind, on the real stack: after Dapr's retention, its batch-id record and
its outcome record, each with a TTL, under 1 KB together; no workflow state, no scheduler job. Once purged,
the outcome record answers for the batch: ``taskfan status``, and a duplicate of it, which does not run again.
"""

from __future__ import annotations

import json
import time
import uuid

import httpx

from bench import residue
from services.workflow.state_keys import STATE_TTL_S, outcome_key
from taskfan.batch_records import RECORD_TTL_S, record_key
from taskfan.contracts import OUTCOMES_TOPIC, AppId, admission_ticket_key, workflow_instance_id

from .helpers import cli, dapr_auth, lesson_tasks, outcomes_for, post_batch, stream_events, wait_for

BATCHES = 30
TASKS = 20


def keys_of(redis_client, batch_id: str) -> list[bytes]:
    """Every Redis key that names the batch (its workflow's state, its records, its data)."""
    names = (f"||{workflow_instance_id(batch_id)}||".encode(), f"taskfan:{batch_id}:".encode(),
             record_key(batch_id).encode() + b"\n", admission_ticket_key(batch_id).encode() + b"\n")
    return [key for key in redis_client.scan_iter(f"*{batch_id}*", count=1000)
            if any(name in key + b"\n" for name in names)]


def test_a_finished_batch_leaves_two_records_under_1_kb_and_nothing_of_its_workflow(stack, settings, redis_client):
    token = uuid.uuid4().hex[:8]
    ids = [f"kept-{token}-{i}" for i in range(BATCHES)]
    scheduler_before = residue.snapshot(redis_client, stack).scheduler_keys
    for batch_id in ids:
        assert post_batch(settings, {"batch_id": batch_id, "tasks": lesson_tasks("t", TASKS)}).status_code == 202
    wait_for(lambda: {e["data"]["batch_id"] for e in stream_events(redis_client, OUTCOMES_TOPIC)} >= set(ids),
             "every outcome", 180)
    # Before the retention: the workflow's state is there (Dapr's own API answers for it).
    dapr = stack.run_file.dapr_http_url(AppId.WORKFLOW)
    state = httpx.get(f"{dapr}/v1.0/workflows/dapr/{workflow_instance_id(ids[-1])}", timeout=10,
                      headers=dapr_auth(settings, AppId.WORKFLOW))
    assert state.json()["runtimeStatus"] == "COMPLETED"
    assert any(b"||dapr.internal." in key for key in keys_of(redis_client, ids[-1]))

    retention = stack.settings.workflow_retention_s
    wait_for(lambda: not any(b"||dapr.internal." in key for batch_id in ids for key in keys_of(redis_client, batch_id)),
             "Dapr's retention to purge every finished workflow", retention + 60)
    total_bytes = 0
    for batch_id in ids:
        kept = sorted(keys_of(redis_client, batch_id))
        expected = sorted([record_key(batch_id).encode(), f"{AppId.WORKFLOW}||{outcome_key(batch_id)}".encode()])
        assert kept == expected, (batch_id, kept)
        ttls = [redis_client.ttl(key) for key in kept]
        assert 0 < ttls[0] <= RECORD_TTL_S and 0 < ttls[1] <= STATE_TTL_S, ttls
        total_bytes += sum(redis_client.memory_usage(key, samples=0) for key in kept)
    assert total_bytes / BATCHES < 1024, f"{total_bytes / BATCHES:.0f} bytes per finished batch"
    # No scheduler job outlives its workflow (the retention reminder included).
    assert residue.snapshot(redis_client, stack).scheduler_keys <= scheduler_before + 2
    assert state.status_code == 200 and httpx.get(
        f"{dapr}/v1.0/workflows/dapr/{workflow_instance_id(ids[-1])}", timeout=10,
        headers=dapr_auth(settings, AppId.WORKFLOW)).status_code != 200

    # Purged, the batch is still known: from its outcome record.
    shown = cli("status", ids[0])
    assert shown.returncode == 0, shown.stderr
    summary = json.loads(shown.stdout)
    assert (summary["state"], summary["done"], summary["completed"]) == ("COMPLETED", TASKS, TASKS), summary
    # The same batch again is a duplicate: accepted by ingest (its content is the recorded one), never run.
    assert post_batch(settings, {"batch_id": ids[0], "tasks": lesson_tasks("t", TASKS)}).status_code == 202
    time.sleep(5)  # long enough for the intake to start a workflow, were it to
    assert not any(b"||dapr.internal." in key for key in keys_of(redis_client, ids[0]))
    assert len(outcomes_for(redis_client, ids[0])) == 1


def test_status_of_text_that_is_not_a_batch_id_is_refused_before_any_dapr_call():
    for text in ("a||b", "a/b", "x" * 129, "a\udcff"):
        shown = cli("status", text)
        assert shown.returncode == 1 and "is not a batch id" in shown.stderr, (text, shown.stderr)
