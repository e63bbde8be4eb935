"""Runs after `make down` (file order): a 60-second soak with faults on a stack of its own.

`python -m bench.soak` starts its own stack on dapr.yaml's ports + 11000 with its own Redis (the session
stack, if one runs, is never touched), publishes through all four ways while it kills and freezes processes,
puts hostile events on the `tasks` stream, and writes its ledger. The test asserts the ledger: every accepted
batch has exactly one outcome, every task is in its outcome, and every failed task and dead letter is explained
by an injected fault or a hostile event.
"""

import json
import signal
import subprocess
import sys

import pytest

from bench.soak_ledger import WAYS

from .helpers import REPO_ROOT, environ_without_session_settings

pytestmark = pytest.mark.e2e

SOAK_SECONDS = 60
# Not `make soak`'s default offset: a developer's `make soak` and `make test` can run side by side.
PORT_OFFSET = 11_000


@pytest.mark.timeout(1200)
def test_soak_with_faults_gives_one_outcome_per_batch(tmp_path):
    output = tmp_path / "soak.json"
    command = [sys.executable, "-m", "bench.soak", "--seconds", str(SOAK_SECONDS), "--output", str(output),
               "--port-offset", str(PORT_OFFSET), "--run-dir", str(REPO_ROOT / ".taskfan" / "soak-e2e")]
    # The soak's stack runs the defaults, not the session stack's test settings (a shorter step deadline,
    # a scorer that fails some task ids), which the session fixture put in this process's environment.
    env = environ_without_session_settings()
    soak = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        stdout, stderr = soak.communicate(timeout=1080)
    except subprocess.TimeoutExpired:
        soak.send_signal(signal.SIGINT)  # the soak stops its stack on SIGINT/SIGTERM
        stdout, stderr = soak.communicate(timeout=120)
        pytest.fail(f"the soak did not finish in time:\n{stderr[-4000:]}")
    report = f"{stdout}\n{stderr[-4000:]}"
    assert soak.returncode == 0, report
    ledger = json.loads(output.read_text())
    assert ledger["ok"] and ledger["problems"] == [], report
    published = ledger["batches_published"]
    assert published >= SOAK_SECONDS / 1.5 * 0.8, report  # one batch every 1.5 s, give or take retries
    assert all(ledger["published_by_way"][way] > 0 for way in WAYS), report
    # A batch whose outcome event came twice (same id, same content: the workflow app killed between the publish
    # and its record) is a redelivery the contract allows; any other second outcome is a duplicate.
    redelivered = ledger["redelivered_outcomes"]
    assert ledger["batches_with_exactly_one_outcome"] + len(redelivered) == published, report
    assert ledger["outcomes_received"] == published + sum(r["outcomes"] - 1 for r in redelivered), report
    assert ledger["missing"] == [] and ledger["duplicates"] == [], report
    assert ledger["tasks_in"] == ledger["tasks_out"] > 0, report
    assert ledger["wrong_results"] == [], report
    # Everything counts: a failed task or a dead letter no fault explains, a hostile event not answered once.
    assert ledger["failed_tasks_without_fault"] == 0 and ledger["dead_letters_without_fault"] == [], report
    assert ledger["hostile_events_sent"] >= 5 and ledger["hostile_events_not_answered_once"] == [], report
    assert ledger["faults_injected"] >= 1, report  # ~20 s apart, after the last one is recovered from
    assert all(fault["error"] is None for fault in ledger["faults"]), report
    assert set(ledger["rss_kib"]["start"]) >= {"redis", "workflow", "workflow-daprd", "scorer-1"}, report
