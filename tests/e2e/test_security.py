"""Locked doors, tried as an intruder on the same machine would: every door of the stack refuses a caller
without the stack's credentials, says so once in its log, and the pipeline keeps running."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import grpc
import httpx
import psutil
import pytest
import redis

from taskfan import stack_secrets
from taskfan.stack.topology import Instance

from .helpers import lesson_tasks, log_records, post_batch, wait_outcome

pytestmark = pytest.mark.e2e

WRONG = "not-the-token"


def instances(stack) -> list[Instance]:
    return stack.topology.instances(stack.running().scorers)


def stack_pids(stack) -> dict[int, str]:
    return {p.pid: p.name for p in stack.running().processes}


@pytest.mark.parametrize("token", [None, WRONG])
def test_every_sidecars_http_and_grpc_api_refuses_a_caller_without_the_token(stack, token):
    from dapr.proto import api_service_v1, api_v1

    headers = {"dapr-api-token": token} if token else {}
    for instance in instances(stack):
        base = f"http://127.0.0.1:{instance.http_port}/v1.0"
        for method, path in (("GET", "/metadata"), ("POST", "/publish/pubsub/outcomes"),
                             ("GET", "/state/statestore/anything"), ("GET", "/workflows/dapr/anything")):
            response = httpx.request(method, base + path, headers=headers, json={}, timeout=10)
            assert response.status_code == 401, (instance.label, path, response.status_code, response.text)
        assert httpx.get(f"{base}/healthz", timeout=10).status_code == 204  # health stays open
        with grpc.insecure_channel(f"127.0.0.1:{instance.grpc_port}") as channel:
            with pytest.raises(grpc.RpcError) as refused:
                api_service_v1.DaprStub(channel).GetMetadata(api_v1.GetMetadataRequest(), timeout=10,
                                                              metadata=[("dapr-api-token", token)] if token else [])
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, instance.label


@pytest.mark.parametrize("token", [None, WRONG])
def test_every_app_port_refuses_a_caller_that_is_not_its_sidecar(stack, token):
    from dapr.proto import appcallback_service_v1, common_v1

    for instance in instances(stack):
        if not instance.app_port:
            continue
        with grpc.insecure_channel(f"127.0.0.1:{instance.app_port}") as channel:
            with pytest.raises(grpc.RpcError) as refused:
                appcallback_service_v1.AppCallbackStub(channel).OnInvoke(
                    common_v1.InvokeRequest(method="score"), timeout=10,
                    metadata=[("dapr-api-token", token)] if token else [])
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, instance.label


def test_redis_refuses_a_client_without_the_password(settings):
    for password in (None, WRONG):
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host=settings.redis_host, port=settings.redis_port, password=password).xlen("outcomes")


def test_ingest_refuses_a_batch_without_the_token_or_for_another_host(settings, redis_client, batch_id):
    url = f"{settings.ingest_url}/batches"
    body = {"batch_id": batch_id, "tasks": lesson_tasks(batch_id, 1)}
    assert httpx.post(url, json=body, timeout=10).status_code == 401
    assert httpx.post(url, json=body, headers={"Authorization": f"Bearer {WRONG}"}, timeout=10).status_code == 401
    rebound = httpx.post(url, json=body, timeout=10,
                         headers={"Authorization": f"Bearer {settings.ingest_token}", "Host": "rebind.example:8080"})
    assert rebound.status_code == 421
    assert httpx.get(f"{settings.ingest_url}/healthz", timeout=10).status_code == 200
    assert not redis_client.exists(f"batch:{batch_id}"), "a refused batch must leave nothing behind"


def test_after_the_intruders_the_pipeline_runs_and_each_refusal_was_logged_once(stack, settings, redis_client,
                                                                                 batch_id):
    # Runs after the refusals above (file order): ingest logged them, once per client and reason, so more
    # of the same add no line; and the next batch completes.
    def refusals() -> int:
        return sum(r.get("msg") == "request refused" for r in log_records(stack, "ingest"))

    logged = refusals()
    for _ in range(3):
        assert httpx.post(f"{settings.ingest_url}/batches", json={"tasks": []}, timeout=10).status_code == 401
    assert logged >= 2 and refusals() == logged
    assert post_batch(settings, {"batch_id": batch_id, "tasks": lesson_tasks(batch_id, 5)}).status_code == 202
    assert wait_outcome(redis_client, batch_id)["completed"] == 5


def test_every_listener_of_the_stack_is_on_loopback(stack):
    # Dapr 1.18.1's placement and scheduler ignore --healthz-listen-address (pkg/healthz/server/server.go
    # listens on ":<port>"; fixed upstream after 1.18.1, dapr/dapr#10394): their health ports are the only
    # wildcard listeners, and they answer nothing but "ok".
    known_dapr_defect = {stack.topology.placement_ports[1], stack.topology.scheduler_ports[1]}
    wildcard = []
    for pid, name in stack_pids(stack).items():
        for process in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
            for conn in process.net_connections(kind="inet"):
                if conn.status != psutil.CONN_LISTEN:
                    continue
                if conn.laddr.ip not in ("127.0.0.1", "::1", "::ffff:127.0.0.1") and \
                        conn.laddr.port not in known_dapr_defect:
                    wildcard.append((name, conn.laddr.ip, conn.laddr.port))
    assert wildcard == []


def test_no_secret_is_on_a_command_line_or_readable_by_others(stack):
    secrets = stack_secrets.load(stack.run_dir)
    assert secrets is not None
    values = [v.encode() for v in secrets.as_secret_store().values()]
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            assert not any(v in cmdline for v in values), f"a secret is on the command line of pid {pid}"
    path = stack_secrets.path(stack.run_dir)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert not any(v in (stack.run_dir / "stack.json").read_bytes() for v in values)
    for log in (stack.run_dir / "logs").glob("*.log"):
        assert not any(v in log.read_bytes() for v in values), f"a secret is in {log.name}"
    assert json.loads(path.read_text()).keys() == secrets.as_secret_store().keys()
