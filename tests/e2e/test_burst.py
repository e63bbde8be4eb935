"""Overload: a burst of 100 batches published at once is queued, answered in full, and ingest stays
responsive throughout (admission control across batches). `make bench` runs the same with 1,000 tasks
a batch (`burst_100k_s`); here 250 keep `make test` short while 94 of the 100 batches still queue."""

from __future__ import annotations

import pytest

from bench.burst import burst

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(1200)
def test_a_burst_of_100_batches_is_queued_and_every_task_answered(stack, batch_id):
    # burst() fails unless every batch has exactly one outcome with all its tasks and none failed.
    figures = burst(stack, batches=100, tasks_per_batch=250, prefix=batch_id, timeout=1000)
    print(f"burst: {figures}")
    assert figures["max_queued"] > 0, "no batch ever waited: admission control was not exercised"
    assert figures["healthz_failures"] == 0
    assert figures["healthz_max_ms"] < 1000, "ingest's /healthz took a second or more during the burst"
