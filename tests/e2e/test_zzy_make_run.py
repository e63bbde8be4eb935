"""Runs after `make down` (file order): the README's first command, as a newcomer types it."""

import json
import os
import subprocess

import pytest

from taskfan import runfile
from taskfan.stack import Stack, port_open

from .helpers import REPO_ROOT

pytestmark = pytest.mark.e2e


def test_make_run_prints_the_sample_outcome_and_stops_the_stack():
    # As typed in a fresh shell: the default run directory, not the e2e session's.
    env = {k: v for k, v in os.environ.items() if k != "RUN_DIR"}
    done = subprocess.run(["make", "run"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    start = done.stdout.index("{\n")
    outcome, _ = json.JSONDecoder().raw_decode(done.stdout[start:])
    assert (outcome["total"], outcome["completed"], outcome["rejected"], outcome["failed"]) == (5, 4, 1, 0)
    assert outcome["results"][0]["score"] == 85
    assert "stack stopped" in done.stdout
    assert Stack(run_file=runfile.load(REPO_ROOT / "dapr.yaml")).running() is None
    assert not port_open(8080)
