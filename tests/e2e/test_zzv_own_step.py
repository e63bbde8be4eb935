"""Runs after `make down` (file order): a step of your own, wired in as the README's "Your own step" says.

The example step (examples/script_detector) goes into a copy of pipeline.yaml as one row, between enrich and
score, and into a copy of dapr.yaml as one entry; nothing else is edited. A stack of its own (dapr.yaml's
ports + 12000, its own Redis) runs from those copies through the CLI a user has: `taskfan stack up`, then
`taskfan publish --wait`. The step runs in the chain, between enrich and score, and what it adds is in the
outcome; a task validation rejects never reaches it.
"""

import json
import shutil
import subprocess
import sys

import httpx
import pytest
import yaml

from bench.soak import shift_run_file
from taskfan import pipeline, runfile
from taskfan.settings import Settings

from .helpers import REPO_ROOT, environ_without_session_settings

pytestmark = pytest.mark.e2e

PORT_OFFSET = 12_000  # not the soak's (10,000 and 11,000): a developer's soak may run beside make test
RUN_DIR = REPO_ROOT / ".taskfan" / "own-step"
# The README's dapr.yaml entry and pipeline.yaml row, as a user adds them.
ENTRY = {"appID": "script-detector", "appDirPath": "examples/script_detector", "command": ["python", "app.py"],
         "appPort": 6020, "daprHTTPPort": 3520, "daprGRPCPort": 4520, "daprInternalGRPCPort": 5520}
ROW = {"name": "detect-script", "app_id": "script-detector", "method": "detect-script",
       "reads": ["title", "description"], "adds": {"script": "string"}}


def taskfan(*args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "taskfan.cli", *args], cwd=REPO_ROOT, env=env, timeout=timeout,
                          capture_output=True, text=True)


@pytest.mark.timeout(900)
def test_a_step_of_your_own_runs_in_the_chain_and_what_it_adds_is_in_the_outcome(tmp_path):
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    RUN_DIR.mkdir(parents=True)
    document = yaml.safe_load((REPO_ROOT / runfile.RUN_FILE_NAME).read_text())
    document["apps"].append(ENTRY)
    shifted = shift_run_file(document, PORT_OFFSET, REPO_ROOT, runfile.load(REPO_ROOT / "dapr.yaml").ingest_port())
    run_file = RUN_DIR / runfile.RUN_FILE_NAME
    run_file.write_text(yaml.safe_dump(shifted, sort_keys=False))
    declared = yaml.safe_load((REPO_ROOT / "pipeline.yaml").read_text())
    declared["steps"].insert([s["name"] for s in declared["steps"]].index("enrich") + 1, ROW)
    pipeline_file = RUN_DIR / "pipeline.yaml"
    pipeline_file.write_text(yaml.safe_dump(declared, sort_keys=False))
    env = {**environ_without_session_settings(),
           runfile.RUN_FILE_ENV: str(run_file), "RUN_DIR": str(RUN_DIR / "run"),
           pipeline.PIPELINE_FILE_ENV: str(pipeline_file),
           "REDIS_PORT": str(Settings.redis_port + PORT_OFFSET), "TRACE_SAMPLING": "0"}
    up = taskfan("stack", "up", "--scorers", "1", env=env, timeout=600)
    try:
        assert up.returncode == 0, f"{up.stdout}\n{up.stderr}"
        batch = tmp_path / "batch.json"
        batch.write_text(json.dumps({"tasks": [
            {"task_id": "latin", "title": "Fix the login page", "description": "It answers 500 errors"},
            {"task_id": "cyrillic", "title": "Исправить вход", "description": "Страница входа отвечает 500"},
            {"task_id": "rejected", "title": "Fix", "description": "short"},
        ]}, ensure_ascii=False))
        published = taskfan("publish", str(batch), "--wait", "--timeout", "240", env=env, timeout=300)
        assert published.returncode == 0, f"{published.stdout}\n{published.stderr}"
        outcome = json.loads(published.stdout)
        results = {r["task_id"]: r for r in outcome["results"]}
        assert (outcome["completed"], outcome["rejected"], outcome["failed"]) == (2, 1, 0), outcome
        assert results["latin"]["added"] == {"script": "Latin"}
        assert results["cyrillic"]["added"] == {"script": "Cyrillic"}
        assert all(isinstance(results[t]["score"], int) for t in ("latin", "cyrillic"))  # score ran after it
        assert "added" not in results["rejected"]  # rejected by validate: the step never saw it
        workflow = next(app for app in shifted["apps"] if app["appID"] == "workflow")
        metrics = httpx.get(f"http://127.0.0.1:{workflow['env']['METRICS_PORT']}/metrics", timeout=10).text
        assert 'taskfan_step_call_seconds_count{result="ok",step="detect-script"}' in metrics
    finally:
        down = taskfan("stack", "down", env=env, timeout=300)
        assert down.returncode == 0, f"{down.stdout}\n{down.stderr}"
