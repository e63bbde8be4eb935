"""Helpers of the end-to-end tests: they read what the stack wrote with a raw Redis client."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from taskfan import stack_secrets
from taskfan.contracts import DEADLETTER_TOPIC, OUTCOMES_TOPIC
from taskfan.settings import Settings
from taskfan.stack import Stack, iter_log_records, private_files

REPO_ROOT = Path(__file__).resolve().parents[2]
# What the session stack runs with besides the defaults (conftest's `stack` puts these in this process's
# environment, for its apps and the CLI the tests run). A stack of its own starts without them.
SESSION_SETTINGS = ("SCORER_FAIL_TASKS", "STEP_TIMEOUT_MS", "WORKFLOW_RETENTION_S", "RUN_DIR", "FAULT_POINTS_DIR")


def environ_without_session_settings() -> dict[str, str]:
    """This process's environment without the session stack's settings: for a stack of its own."""
    return {k: v for k, v in os.environ.items() if k not in SESSION_SETTINGS}


def wait_for(check: Callable[[], Any], what: str, timeout: float = 120) -> Any:
    """Poll until ``check`` returns something truthy; fail with ``what`` after the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def stream_events(client: redis.Redis, topic: str) -> list[dict[str, Any]]:
    """Every CloudEvent Dapr stored on a topic's Redis stream (field ``data``)."""
    return [json.loads(fields[b"data"]) for _, fields in client.xrange(topic)]


def outcomes_for(client: redis.Redis, batch_id: str) -> list[dict[str, Any]]:
    return [e["data"] for e in stream_events(client, OUTCOMES_TOPIC) if e["data"]["batch_id"] == batch_id]


def wait_outcome(client: redis.Redis, batch_id: str, timeout: float = 120) -> dict[str, Any]:
    return wait_for(lambda: outcomes_for(client, batch_id), f"the outcome of {batch_id}", timeout)[0]


def dead_letters(client: redis.Redis) -> list[dict[str, Any]]:
    return [e["data"] for e in stream_events(client, DEADLETTER_TOPIC)]


def post_batch(settings: Settings, body: Any) -> httpx.Response:
    return httpx.post(f"{settings.ingest_url}/batches", json=body, timeout=30, headers=ingest_auth(settings))


def ingest_auth(settings: Settings) -> dict[str, str]:
    """What the CLI sends to ingest: the stack's bearer token."""
    return stack_secrets.ingest_headers(settings.ingest_token)


def dapr_auth(settings: Settings, app_id: str) -> dict[str, str]:
    """What a Dapr client of the stack sends to a sidecar of app ``app_id``: that app's token."""
    return stack_secrets.sidecar_headers(settings.dapr_token_key, app_id)


def log_records(stack: Stack, process: str) -> list[dict[str, Any]]:
    path = Path(stack.logs_dir) / f"{process}.log"
    return list(iter_log_records(path)) if path.exists() else []


def scored_task_ids(stack: Stack, replica: int) -> list[str]:
    """The task ids one scorer replica scored, from its log: one ``scored`` line per call names them."""
    return [task_id for r in log_records(stack, f"scorer-{replica}") if r.get("msg") == "scored"
            for task_id in r.get("task_ids", [])]


@contextlib.contextmanager
def frozen(stack: Stack, names: list[str]) -> Iterator[None]:
    """SIGSTOP the named processes of the stack (hung, not dead); SIGCONT them on the way out, always."""
    state = stack.running()
    assert state is not None, "no stack is running"
    pids = [p.pid for p in state.processes if p.name in names]
    assert len(pids) == len(names), f"not all of {names} are running"
    for pid in pids:
        os.killpg(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.killpg(pid, signal.SIGCONT)


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The taskfan CLI as a user runs it (it finds the stack from dapr.yaml)."""
    return subprocess.run([sys.executable, "-m", "taskfan.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO_ROOT)


def lesson_tasks(prefix: str, count: int) -> list[dict[str, str]]:
    return [{"task_id": f"{prefix}-{i}", "title": "Urgent: fix login API",
             "description": "The login api returns 500 errors"} for i in range(count)]


@contextlib.contextmanager
def granted_sidecar(stack: Stack, app_id: str) -> Iterator[tuple[int, int, dict[str, str]]]:
    """The README's sidecar of your own (Getting outcomes): the grant `taskfan stack env --app` prints, evaluated
    by a shell, then daprd with the README's flags on free ports. Yields its HTTP and gRPC ports and that
    environment (DAPR_API_TOKEN: the grant's own token)."""
    from taskfan.stack.processes import free_ports

    shell = subprocess.run(["bash", "-c", f'eval "$("{sys.executable}" -m taskfan.cli stack env --app {app_id})" '
                            "&& env -0"], cwd=stack.root, capture_output=True, timeout=60)
    assert shell.returncode == 0, shell.stderr.decode()
    env = dict(item.split("=", 1) for item in shell.stdout.decode().split("\0") if "=" in item)
    http, grpc_port, internal = free_ports(3)
    grant = env["TASKFAN_GRANT"]
    # Owner-only, as everything in the run folder (test_security checks it after this test).
    log = open(stack.logs_dir / f"grant-{app_id}.log", "ab",  # noqa: SIM115 - closed below
               opener=private_files.open_private)
    daprd = subprocess.Popen([
        str(stack.dapr_bin() / "daprd"), "--app-id", app_id, "--dapr-grpc-port", str(grpc_port),
        "--dapr-http-port", str(http), "--dapr-internal-grpc-port", str(internal),
        "--dapr-listen-addresses", "127.0.0.1", "--dapr-internal-grpc-listen-address", "127.0.0.1",
        "--enable-mtls", "--sentry-address", env["SENTRY_ADDRESS"], "--enable-metrics=false",
        "--resources-path", f"{grant}/resources", "--config", f"{grant}/config.yaml"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def up() -> bool:
            try:
                return daprd.poll() is not None or httpx.get(f"http://127.0.0.1:{http}/v1.0/healthz",
                                                             timeout=5).status_code == 204
            except httpx.TransportError:
                return False

        wait_for(up, f"{app_id}'s sidecar", 60)
        assert daprd.poll() is None, f"{app_id}'s sidecar exited: see {log.name}"
        yield http, grpc_port, env
    finally:
        daprd.terminate()
        try:
            daprd.wait(timeout=20)
        except subprocess.TimeoutExpired:
            daprd.kill()
            daprd.wait()
        log.close()
