"""Locked doors, tried as an intruder on the same machine would: every door of the stack refuses a caller
without the stack's credentials, says so once in its log, and the pipeline keeps running."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import psutil
import pytest
import redis

from taskfan import stack_secrets
from taskfan.stack import logkeeper, private_files
from taskfan.stack.processes import wait_until
from taskfan.stack.topology import Instance

from .helpers import dapr_auth, granted_sidecar, lesson_tasks, log_records, post_batch, wait_outcome

pytestmark = pytest.mark.e2e

WRONG = "not-the-token"


def instances(stack) -> list[Instance]:
    return stack.topology.instances(stack.running().scorers, stack.running().replicas)


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


def test_only_ingest_and_workflow_may_touch_the_batch_records(stack, settings):
    # `batches` has no key prefix (the two share its keys): any other sidecar could forge an id's record.
    for app_id in ("validator", "enricher", "scorer", "console"):
        base = f"http://127.0.0.1:{stack.topology.instance(app_id).http_port}/v1.0/state/batches"
        auth = dapr_auth(settings, app_id)
        written = httpx.post(base, json=[{"key": "batch:forged", "value": "x"}], headers=auth)
        read = httpx.get(f"{base}/batch:forged", headers=auth)
        for refused in (written, read):
            assert refused.status_code == 400 and "ERR_STATE_STORE_NOT_FOUND" in refused.text, (app_id,
                                                                                              refused.text)


def test_each_apps_token_opens_its_own_sidecars_only(stack, settings):
    apps = {instance.app_id for instance in instances(stack)}
    for instance in instances(stack):
        base = f"http://127.0.0.1:{instance.http_port}/v1.0"
        assert httpx.get(f"{base}/metadata", headers=dapr_auth(settings, instance.app_id)).status_code == 200
        for other in apps - {instance.app_id}:  # a step app's token cannot terminate a batch on workflow's
            refused = httpx.post(f"{base}/workflows/dapr/anything/terminate", headers=dapr_auth(settings, other))
            assert refused.status_code == 401, (instance.label, other, refused.text)
    assert len({stack_secrets.sidecar_token(settings.dapr_token_key, app) for app in apps}) == len(apps)


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
    # Placement's, scheduler's and Sentry's health ports too: Dapr 1.18.1's healthz server ignores
    # --healthz-listen-address, and the pinned build carries the upstream fix (deploy/dapr/patches).
    health_ports = {stack.topology.placement_ports[1], stack.topology.scheduler_ports[1],
                    *([stack.topology.sentry_ports[1]] if stack.settings.locked else [])}
    listening, wildcard = set(), []
    for pid, name in stack_pids(stack).items():
        for process in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
            for conn in process.net_connections(kind="inet"):
                if conn.status != psutil.CONN_LISTEN:
                    continue
                listening.add(conn.laddr.port)
                if conn.laddr.ip not in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
                    wildcard.append((name, conn.laddr.ip, conn.laddr.port))
    assert health_ports <= listening  # the control plane's health ports were among those checked
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


def test_each_process_holds_only_the_secrets_it_uses(stack):
    secrets = stack_secrets.load(stack.run_dir)
    assert secrets is not None
    named = secrets.as_secret_store()
    sidecar = {"own-sidecar-token", "app-api-token"}
    expected = {"ingest": sidecar | {"ingest-token", "redis-keeper-password"},
                "console": sidecar | {"ingest-token", "console-view-token", "redis-console-password"}}
    seen = set()
    for process in stack.running().processes:
        environ = Path(f"/proc/{process.pid}/environ").read_bytes()
        held = {name for name, value in named.items() if value.encode() in environ}
        app_id = stack.app_of(process.name)
        tokens = {app: secrets.sidecar_token(app) for app in {i.app_id for i in instances(stack)} | {app_id}}
        held |= {"own-sidecar-token" if app == app_id else f"{app}'s sidecar token"
                 for app, token in tokens.items() if token.encode() in environ}
        if process.name in ("redis", "jaeger", "sentry", "placement", "scheduler", logkeeper.NAME):
            wanted: set[str] = set()
        else:
            wanted = expected.get(process.name, sidecar)  # every other app and every sidecar
        assert held == wanted, f"{process.name} holds {sorted(held)}, uses {sorted(wanted)}"
        seen.add(process.name)
    assert {"redis", "placement", "ingest", "ingest-daprd", "console", "workflow", "scorer-0"} <= seen, seen


def test_no_sidecar_hands_out_a_secret_through_daprs_secrets_api(stack, settings):
    secrets = stack_secrets.load(stack.run_dir)
    assert secrets is not None
    for instance in instances(stack):
        url = f"http://127.0.0.1:{instance.http_port}/v1.0/secrets/taskfan-secrets"
        auth = dapr_auth(settings, instance.app_id)
        for name in secrets.as_secret_store():
            refused = httpx.get(f"{url}/{name}", headers=auth, timeout=30)
            assert refused.status_code == 403 and "ERR_PERMISSION_DENIED" in refused.text, (instance.label, name,
                                                                                          refused.text)
        bulk = httpx.get(f"{url}/bulk", headers=auth, timeout=30)  # Dapr leaves out what the scopes deny
        assert bulk.status_code == 200 and bulk.json() == {}, (instance.label, bulk.text)


def test_an_outside_subscriber_may_subscribe_and_nothing_else(stack, settings):
    """The README's grant (`stack env --app`) to a subscriber of its own: refused terminate, state, secrets,
    publishing, and every Redis key but its streams."""
    with granted_sidecar(stack, "e2e-subscriber") as (http, _, env):
        own = f"http://127.0.0.1:{http}/v1.0"
        auth = {"dapr-api-token": env["DAPR_API_TOKEN"]}
        assert env["DAPR_API_TOKEN"] not in stack_secrets.load(stack.run_dir).as_secret_store().values()
        assert not {"INGEST_TOKEN", "REDISCLI_AUTH"} & env.keys()
        workflow = f"http://127.0.0.1:{stack.workflow.http_port}/v1.0"
        # Its token opens its own sidecar only: the stack's are closed to it (terminate, the ledger's state).
        assert httpx.post(f"{workflow}/workflows/dapr/any-batch/terminate", headers=auth).status_code == 401
        assert httpx.get(f"{workflow}/state/statestore/ledger", headers=auth).status_code == 401
        # Through its own sidecar: no state store is loaded, the secrets API is denied, `tasks` and `outcomes`
        # are not its to publish, and the workflow app's methods are not its to call.
        for store in ("statestore", "batches"):
            refused = httpx.get(f"{own}/state/{store}/batch:x", headers=auth)
            assert refused.status_code >= 400 and "ERR_STATE_STORE_NOT_CONFIGURED" in refused.text, refused.text
        refused = httpx.get(f"{own}/secrets/taskfan-secrets/redis-password", headers=auth)
        assert refused.status_code == 403, refused.text
        assert httpx.get(f"{own}/secrets/taskfan-secrets/bulk", headers=auth).json() == {}
        for topic in ("tasks", "outcomes"):
            refused = httpx.post(f"{own}/publish/pubsub/{topic}", json={}, headers=auth)
            assert refused.status_code == 403, refused.text
        for method in ("console-terminate", "console-purge"):
            refused = httpx.post(f"{own}/invoke/workflow/method/{method}", json={"batch_id": "x"}, headers=auth)
            assert refused.status_code == 403, (method, refused.text)
        # Its Redis user, read from its grant: its streams, read and acknowledged; nothing else.
        grant = json.loads((Path(env["TASKFAN_GRANT"]) / "secrets.json").read_text())
        client = redis.Redis(port=settings.redis_port, username="grant-e2e-subscriber",
                             password=grant["redis-password"])
        assert client.xlen("outcomes") >= 0
        for command in (("GET", "batch:x"), ("KEYS", "*"), ("XADD", "outcomes", "*", "k", "v"),
                        ("XRANGE", "tasks", "-", "+"), ("DEL", "outcomes"), ("XTRIM", "outcomes", "MAXLEN", "0"),
                        ("XGROUP", "DESTROY", "outcomes", "workflow"), ("CONFIG", "GET", "*"), ("FLUSHALL",)):
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.execute_command(*command)


def invoke(settings, instance: Instance, app_id: str, method: str) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{instance.http_port}/v1.0/invoke/{app_id}/method/{method}",
                      json={"tasks": []}, headers=dapr_auth(settings, instance.app_id), timeout=30)


def test_only_workflow_may_invoke_the_step_apps_and_only_their_step_methods(stack, settings):
    # Access control on the called sidecar, by the caller's SPIFFE identity from Sentry (mTLS).
    ingest, workflow = stack.topology.instance("ingest"), stack.workflow
    for target, method in (("validator", "validate"), ("enricher", "enrich"), ("scorer", "score")):
        denied = invoke(settings, ingest, target, method)
        assert denied.status_code == 403, denied.text
        assert "spiffe://public/ns/default/ingest" in denied.text
        assert invoke(settings, workflow, target, method).status_code == 200
    assert invoke(settings, workflow, "scorer", "admin").status_code == 403
    for target in ("ingest", "workflow"):  # nothing may invoke these through Dapr
        assert invoke(settings, stack.topology.instance("validator"), target, "anything").status_code >= 400


def test_topics_are_used_only_by_the_apps_granted_them(stack, settings):
    ingest = stack.topology.instance("ingest")
    for topic in ("outcomes", "tasks-deadletter"):
        refused = httpx.post(f"http://127.0.0.1:{ingest.http_port}/v1.0/publish/pubsub/{topic}", json={},
                             headers=dapr_auth(settings, "ingest"), timeout=30)
        assert refused.status_code == 403 and "ERR_PUBSUB_FORBIDDEN" in refused.text, refused.text
    # An app id nobody granted, with the stack's own components and token: no Taskfan topic for it.
    sidecar, daprd = stack.start_sidecar("not-granted")
    try:
        for topic in ("outcomes", "tasks"):
            refused = httpx.post(f"http://127.0.0.1:{sidecar.http_port}/v1.0/publish/pubsub/{topic}", json={},
                                 headers=dapr_auth(settings, "not-granted"), timeout=30)
            assert refused.status_code == 403, refused.text
    finally:
        stack.stop_sidecar(daprd)


def test_a_rogue_sidecar_without_a_certificate_cannot_invoke_a_step_app_nor_publish_outcomes(stack, tmp_path):
    import subprocess

    from taskfan.stack.processes import free_ports, http_status, wait_until

    instance = Instance("rogue", *free_ports(3), None, name="rogue")
    command = [arg for arg in stack.daprd_command(stack.dapr_bin(), instance) if arg != "--enable-mtls"]
    at = command.index("--sentry-address")
    del command[at:at + 2]
    with open(tmp_path / "rogue.log", "wb") as log:
        rogue = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=stack.run_dir,
                                 env={"PATH": os.environ["PATH"], "DAPR_HOST_IP": "127.0.0.1"})
    try:
        # Its API is up (it never becomes healthy: placement and scheduler refuse it too).
        base = f"http://127.0.0.1:{instance.http_port}/v1.0"
        wait_until(lambda: http_status(f"{base}/healthz/outbound") == 204, "rogue daprd",
                   alive=lambda: None if rogue.poll() is None else "the rogue daprd exited")
        answer = httpx.post(f"{base}/invoke/scorer/method/score", json={"tasks": []}, timeout=60)
        assert answer.status_code >= 400 and "results" not in answer.text, answer.text
        assert httpx.post(f"{base}/publish/pubsub/outcomes", json={}, timeout=60).status_code == 403
    finally:
        rogue.terminate()
        rogue.wait(timeout=30)


@pytest.fixture
def outsider() -> Iterator[str]:
    """A system user with nothing to do with the stack, made for this test and removed after (a name of its own,
    so two sessions on one machine do not share one)."""
    # Acting as another user needs root: without it this fails, loudly, as the cluster tests do; never skipped.
    if os.geteuid() != 0:
        pytest.fail("reading the run folder as another user needs root (useradd, runuser)")
    name = f"taskfan-other-{uuid.uuid4().hex[:6]}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], check=True)


def test_the_run_folder_is_readable_by_the_stack_user_only(stack, settings, redis_client, batch_id, outsider):
    # Every task's text and outcome is in Redis's append-only file: after a batch, and after Redis rewrote that
    # file (the rewrite makes new files, as a log rotation or etcd does), nothing in the run folder has a group
    # or other permission bit, and another user on the machine cannot read it.
    assert post_batch(settings, {"batch_id": batch_id, "tasks": lesson_tasks(batch_id, 5)}).status_code == 202
    assert wait_outcome(redis_client, batch_id)["completed"] == 5

    def rewrite_done() -> bool:
        persistence = redis_client.info("persistence")
        return persistence["aof_rewrite_in_progress"] == 0 and persistence["aof_rewrite_scheduled"] == 0

    redis_client.bgrewriteaof()
    wait_until(rewrite_done, "Redis's AOF rewrite", timeout=60)
    assert redis_client.info("persistence")["aof_last_bgrewrite_status"] == "ok"

    assert private_files.exposed(stack.run_dir) == []
    aof_dir = stack.run_dir / "redis" / "appendonlydir"
    aof_files = sorted(aof_dir.iterdir())
    assert any(batch_id.encode() in path.read_bytes() for path in aof_files)  # the batch is in there
    as_outsider = ["runuser", "-u", outsider, "--"]
    # The outsider can read what anyone may (so a refusal below is the run folder's, not runuser's) ...
    assert subprocess.run([*as_outsider, "cat", "/etc/passwd"], capture_output=True).returncode == 0
    # ... and neither the AOF, nor the run folder's listing, nor its logs.
    for target in [*aof_files, stack.run_dir, stack.logs_dir / "redis.log"]:
        command = ["ls", str(target)] if target.is_dir() else ["cat", str(target)]
        refused = subprocess.run([*as_outsider, *command], capture_output=True, text=True)
        assert refused.returncode != 0 and "Permission denied" in refused.stderr, (target, refused)
