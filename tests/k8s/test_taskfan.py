"""Taskfan on the cluster, used the way the README tells a team to: batches published through the ingest
Service with curl's headers, outcomes read by a Dapr subscriber of its own (examples/k8s-subscriber.yaml),
scorers scaled by KEDA on the backlog and by hand, pods deleted and a node drained mid-batch.

The chart runs with slow scoring (conftest.CHART_VALUES: 100 ms a task, 4 at a time per replica), so one
scorer does 40 tasks/s and a 2,000-task batch lasts long enough for the autoscaler to act on it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.enricher.rules import tags_for
from services.scorer.rules import score_for
from services.validator.rules import validation_issues

from .conftest import CLUSTER_SH, NAMESPACE, RELEASE, REPO, TASKFAN_IMAGE, Cluster, named, run, wait_for

pytestmark = pytest.mark.k8s

INGEST_HOST = f"{named('ingest')}.{NAMESPACE}.svc:8080"  # ingest answers only requests naming it (README)
CONSOLE_HOST = f"{named('console')}.{NAMESPACE}.svc:8090"  # as does the console
TIMELINE = REPO / ".taskfan" / "k8s" / "autoscaling-timeline.json"


@dataclass(frozen=True)
class Taskfan:
    """Taskfan's chart on the cluster, seen from the host as a user sees it."""

    cluster: Cluster
    ingest_url: str
    ingest_token: str
    metrics_url: str

    def kubectl(self, *args: str, timeout: float = 120) -> str:
        return self.cluster.kubectl("-n", NAMESPACE, *args, timeout=timeout)

    def post(self, body: object, token: str | None = None) -> httpx.Response:
        headers = {"Host": INGEST_HOST, "Authorization": f"Bearer {self.ingest_token if token is None else token}"}
        return httpx.post(f"{self.ingest_url}/batches", json=body, headers=headers, timeout=60)

    def publish(self, tasks: list[dict[str, str]]) -> str:
        answer = self.post({"tasks": tasks})
        assert answer.status_code == 202, answer.text
        return str(answer.json()["batch_id"])

    def outcome(self, batch_id: str, timeout: float) -> tuple[int, float | None]:
        """(completed, average score) of the batch, as the subscriber's log prints it."""
        def printed() -> tuple[int, float | None] | None:
            for line in self.kubectl("logs", "deployment/my-subscriber", "-c", "subscriber").splitlines():
                got, completed, average = (line.split() + ["", "", ""])[:3]
                if got == batch_id:
                    return int(completed), None if average == "None" else float(average)
            return None
        return wait_for(printed, f"the outcome of {batch_id} at the subscriber", timeout=timeout, every=2)  # type: ignore[return-value]

    def backlog(self) -> float:
        """``taskfan_backlog_tasks``, read from the taskfan-workflow-metrics Service as KEDA reads it."""
        text = httpx.get(self.metrics_url, timeout=10).text
        return next(float(line.split()[1]) for line in text.splitlines() if line.startswith("taskfan_backlog_tasks "))

    def scorer_replicas(self) -> tuple[int, int]:
        """(wanted, ready) replicas of the scorer Deployment."""
        wanted, _, ready = self.kubectl("get", "deployment", named("scorer"), "-o",
                                        "jsonpath={.spec.replicas} {.status.readyReplicas}").partition(" ")
        return int(wanted or 0), int(ready or 0)

    def pods(self, app: str) -> list[str]:
        return self.kubectl("get", "pods", "-l", f"app.kubernetes.io/name={app}", "--field-selector",
                            "status.phase=Running", "-o", "jsonpath={.items[*].metadata.name}").split()

    def log_records(self, pod: str, container: str) -> list[dict[str, Any]]:
        records = []
        for line in self.kubectl("logs", pod, "-c", container, timeout=60).splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records

    def scored(self, pod: str, prefix: str) -> int:
        """Tasks of one batch that one scorer pod scored, from its own log."""
        return sum(1 for r in self.log_records(pod, "scorer") if r.get("msg") == "scored"
                   for task_id in r.get("task_ids", []) if str(task_id).startswith(prefix))

    def ready_pods(self, app: str) -> list[str]:
        """The app's pods that are ready and not being deleted (a deleted pod stays Running while it stops)."""
        items = json.loads(self.kubectl("get", "pods", "-l", f"app.kubernetes.io/name={app}", "-o", "json"))["items"]
        return [pod["metadata"]["name"] for pod in items if "deletionTimestamp" not in pod["metadata"]
                and {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}.get("Ready") == "True"]

    def outcome_events(self) -> list[dict[str, Any]]:
        """Every CloudEvent Dapr stored on the `outcomes` stream of the chart's Redis (the stream's `data` fields),
        read with redis-cli in the Redis pod: the event ids, which the subscriber does not print."""
        raw = self.kubectl("exec", f"{RELEASE}-redis-0", "-c", "redis", "--", "sh", "-c",
                           'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli --raw XRANGE outcomes - +', timeout=60)
        return [json.loads(line) for line in raw.splitlines() if line.startswith("{")]

    def failed_step_calls(self) -> list[dict[str, Any]]:
        return [r for pod in self.pods("workflow") for r in self.log_records(pod, "workflow")
                if r.get("msg") == "step call failed"]


def tasks(prefix: str, count: int) -> list[dict[str, str]]:
    """Valid tasks: each one is validated, enriched and scored."""
    return [{"task_id": f"{prefix}-{i:05d}", "title": f"Urgent: fix service {i}",
             "description": "The login API returns 500 errors"} for i in range(count)]


def cluster_ip(cluster: Cluster, service: str) -> str:
    return cluster.kubectl("-n", NAMESPACE, "get", "service", service, "-o", "jsonpath={.spec.clusterIP}")


@pytest.fixture(scope="module")
def taskfan(cluster: Cluster) -> Iterator[Taskfan]:
    """The chart's Services from the host, and examples/subscriber.py running as the README deploys it."""
    secret = cluster.kubectl("-n", NAMESPACE, "get", "secret", named("secrets"), "-o",
                             "jsonpath={.data.ingest-token}")
    handle = Taskfan(cluster, f"http://{cluster_ip(cluster, named('ingest'))}:8080", base64.b64decode(secret).decode(),
                     f"http://{cluster_ip(cluster, named('workflow-metrics'))}:9101/metrics")
    handle.kubectl("create", "configmap", "my-subscriber", f"--from-file={REPO / 'examples' / 'subscriber.py'}")
    handle.kubectl("apply", "-f", str(REPO / "examples" / "k8s-subscriber.yaml"))
    handle.kubectl("rollout", "status", "deployment/my-subscriber", "--timeout=180s", timeout=200)
    yield handle


def test_everything_is_ready_with_a_sidecar_per_service(cluster: Cluster, taskfan: Taskfan) -> None:
    for namespace in ("dapr-system", "keda", NAMESPACE):
        pods = json.loads(cluster.kubectl("-n", namespace, "get", "pods", "-o", "json"))["items"]
        assert pods, f"no pods in {namespace}"
        for pod in pods:
            ready = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}.get("Ready")
            assert ready == "True", f"{namespace}/{pod['metadata']['name']} is not ready"
    for app in ("ingest", "workflow", "validator", "enricher", "scorer", "console"):
        pod = json.loads(taskfan.kubectl("get", "pods", "-l", f"app.kubernetes.io/name={app}", "-o", "json"))
        containers = {c["name"] for c in pod["items"][0]["spec"]["containers"]}
        assert containers == {app, "daprd"}, f"{app}: {containers}"  # the injector added the sidecar


def test_helm_test_reaches_ingest_and_the_console_through_their_services(taskfan: Taskfan) -> None:
    # The chart's own check (templates/tests/doors.yaml), as a team runs it after an install; its pod is deleted
    # when it passes and kept, with its log, when it fails.
    cluster = taskfan.cluster
    done = run(cluster.bin_dir / "helm", "--kubeconfig", cluster.kubeconfig, "-n", NAMESPACE, "test", RELEASE,
               "--timeout", "3m", timeout=240, check=False)
    log = "" if done.returncode == 0 else taskfan.cluster.kubectl(
        "-n", NAMESPACE, "logs", named("test-doors"), check=False)
    assert done.returncode == 0, f"helm test {RELEASE}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}\n{log}"
    assert f"TEST SUITE:     {named('test-doors')}" in done.stdout and "Phase:          Succeeded" in done.stdout


def test_each_app_ids_sidecar_holds_a_dapr_api_token_of_its_own(taskfan: Taskfan) -> None:
    # One Secret per app id: the sidecar's annotation and the app's DAPR_API_TOKEN name the same one, and no
    # two app ids share a token (the subscriber's too, examples/k8s-subscriber.yaml).
    deployments = json.loads(taskfan.kubectl("get", "deployments", "-o", "json"))["items"]
    tokens = {}
    for deployment in deployments:
        template = deployment["spec"]["template"]
        app_id = template["metadata"]["annotations"]["dapr.io/app-id"]
        secret = template["metadata"]["annotations"]["dapr.io/api-token-secret"]
        assert secret == named(f"dapr-api-token-{app_id}"), (app_id, secret)
        env = {e["name"]: e for e in template["spec"]["containers"][0]["env"]}
        assert env["DAPR_API_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == secret, app_id
        tokens[app_id] = taskfan.kubectl("get", "secret", secret, "-o", "jsonpath={.data.token}")
    assert set(tokens) == {"ingest", "workflow", "validator", "enricher", "scorer", "console", "my-subscriber"}
    assert len(set(tokens.values())) == len(tokens) and all(tokens.values())


def test_a_batch_through_the_ingest_service_reaches_a_subscriber(taskfan: Taskfan) -> None:
    batch = json.loads((REPO / "examples" / "batch.json").read_text())
    batch_id = taskfan.publish(batch["tasks"])
    scores = [score_for(tags_for(t["title"], t["description"])) for t in batch["tasks"]
              if not validation_issues(t["title"], t["description"])]
    assert 0 < len(scores) < len(batch["tasks"])  # the example has a task that validation rejects
    assert taskfan.outcome(batch_id, timeout=120) == (len(scores), sum(scores) / len(scores))


def test_bad_requests_through_the_service_get_a_clear_answer(taskfan: Taskfan) -> None:
    empty = taskfan.post({"tasks": []})
    assert empty.status_code == 422 and "tasks" in empty.text
    assert taskfan.post({"tasks": tasks("x", 1)}, token="wrong").status_code == 401
    foreign = httpx.post(f"{taskfan.ingest_url}/batches", json={"tasks": tasks("x", 1)}, timeout=30,
                         headers={"Host": "evil.example:8080", "Authorization": f"Bearer {taskfan.ingest_token}"})
    assert foreign.status_code == 421



# --- Intruders: the namespace's network, the component scopes, access control and PodSecurity -------------------
INTRUDER_NAMESPACE = "intruder"
# A pod spec that PodSecurity `restricted` admits: the Taskfan image idling, so that tests exec probes in it.
IDLE_POD = {
    "restartPolicy": "Never", "enableServiceLinks": False, "terminationGracePeriodSeconds": 0,
    "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [{"name": "probe", "image": "localhost/taskfan/taskfan:0.1.0", "imagePullPolicy": "IfNotPresent",
                    "command": ["sleep", "600"],
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                        "readOnlyRootFilesystem": True}}],
}
# Run inside a probe pod: TCP connections to each (name, host, port), every one bounded; the first target is the
# control (a door that must open), retried while the enforcer adds the new pod to its sets (about a second).
CONNECT_PROBE = """
import json, socket, sys, time
def connect(host, port):
    try:
        socket.create_connection((host, port), timeout=5).close()
        return "open"
    except OSError as e:
        return type(e).__name__
targets = json.loads(sys.argv[1])
_, host, port = targets[0]
deadline = time.monotonic() + 20
while connect(host, port) != "open" and time.monotonic() < deadline:
    time.sleep(0.5)
print(json.dumps({name: connect(host, port) for name, host, port in targets}))
"""
# Run inside the rogue pod: calls to its own sidecar's HTTP API, each answer's status and error code.
SIDECAR_PROBE = """
import json, urllib.error, urllib.request
def call(path, body):
    request = urllib.request.Request("http://127.0.0.1:3500" + path, data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return [answer.status, ""]
    except urllib.error.HTTPError as e:
        return [e.code, e.read().decode(errors="replace")[:400]]
print(json.dumps({
    "invoke scorer": call("/v1.0/invoke/scorer/method/score", {}),
    "write batches": call("/v1.0/state/batches", [{"key": "rogue", "value": "x"}]),
    "write statestore": call("/v1.0/state/statestore", [{"key": "rogue", "value": "x"}]),
    "publish tasks": call("/v1.0/publish/pubsub/tasks", {}),
}))
"""


def start_idle_pod(cluster: Cluster, namespace: str, name: str, labels: dict[str, str] | None = None,
                   annotations: dict[str, str] | None = None) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "spec": IDLE_POD,
           "metadata": {"name": name, "namespace": namespace, "labels": labels or {},
                        "annotations": annotations or {}}}
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(pod))


def pod_ip(taskfan: Taskfan, app: str) -> str:
    return taskfan.kubectl("get", "pods", "-l", f"app.kubernetes.io/name={app}", "-o",
                           "jsonpath={.items[0].status.podIP}")


def test_another_namespace_reaches_ingest_only_while_taskfans_sidecars_reach_redis(taskfan: Taskfan) -> None:
    # The release's NetworkPolicies, enforced by kube-router: from a namespace of its own a pod opens ingest
    # (values networkPolicy.ingestFrom: the whole cluster) and nothing else; Redis refuses it.
    cluster = taskfan.cluster
    cluster.kubectl("create", "namespace", INTRUDER_NAMESPACE)
    try:
        start_idle_pod(cluster, INTRUDER_NAMESPACE, "intruder")
        cluster.kubectl("-n", INTRUDER_NAMESPACE, "wait", "--for=condition=Ready", "pod/intruder", "--timeout=90s",
                        timeout=100)
        svc = f"{NAMESPACE}.svc.cluster.local"
        scorer = pod_ip(taskfan, "scorer")
        targets = [("ingest", f"{named('ingest')}.{svc}", 8080), ("redis", f"{named('redis')}.{svc}", 6379),
                   ("workflow metrics", f"{named('workflow-metrics')}.{svc}", 9101),
                   ("console", f"{named('console')}.{svc}", 8090),
                   ("scorer sidecar (internal gRPC)", scorer, 50002), ("scorer sidecar metrics", scorer, 9090)]
        seen = json.loads(cluster.kubectl("-n", INTRUDER_NAMESPACE, "exec", "intruder", "--", "python3", "-c",
                                          CONNECT_PROBE, json.dumps(targets), timeout=90))
        assert seen == {"ingest": "open"} | {name: "ConnectionRefusedError" for name, _, _ in targets[1:]}, seen
    finally:
        cluster.kubectl("delete", "namespace", INTRUDER_NAMESPACE, "--wait=false", check=False)
    # ... while Taskfan's own sidecars still use Redis (pub/sub, state): a batch goes through.
    batch_id = taskfan.publish(tasks(f"fenced-{uuid.uuid4().hex[:6]}", 20))
    assert taskfan.outcome(batch_id, timeout=120)[0] == 20


def test_a_rogue_app_id_is_refused_the_scorer_the_stores_and_the_topics(taskfan: Taskfan) -> None:
    # A Dapr app nobody granted anything, in Taskfan's namespace and with the release's labels copied (what
    # anyone allowed to create pods there can do), so that the network lets its sidecar reach the others:
    # the scorer's access control refuses its call (its SPIFFE id is not workflow's), and its sidecar has
    # neither `batches` nor the state store nor the pub/sub (component scopes).
    labels = {"app.kubernetes.io/instance": RELEASE, "app.kubernetes.io/part-of": "taskfan"}
    annotations = {"dapr.io/enabled": "true", "dapr.io/app-id": "rogue",
                   "dapr.io/sidecar-seccomp-profile-type": "RuntimeDefault"}
    start_idle_pod(taskfan.cluster, NAMESPACE, "rogue", labels, annotations)
    try:
        taskfan.kubectl("wait", "--for=condition=Ready", "pod/rogue", "--timeout=120s", timeout=130)
        seen = json.loads(taskfan.kubectl("exec", "rogue", "-c", "probe", "--", "python3", "-c", SIDECAR_PROBE,
                                          timeout=90))
    finally:
        taskfan.kubectl("delete", "pod", "rogue", "--wait=false")
    status, text = seen["invoke scorer"]
    assert status == 403 and "access control policy has denied access" in text, seen
    for store in ("batches", "statestore"):  # none configured for it: "state store batches is not configured"
        status, text = seen[f"write {store}"]
        assert status >= 400 and f"state store {store} is not" in text, seen
    status, text = seen["publish tasks"]
    assert status == 404 and "ERR_PUBSUB_NOT_FOUND" in text, seen


def test_the_namespace_admits_only_restricted_pods_and_every_taskfan_pod_runs(taskfan: Taskfan) -> None:
    # Dapr's and KEDA's namespaces too (their pods' readiness is the first test's): up.sh labels all three.
    for name in ("dapr-system", "keda", NAMESPACE):
        namespace = json.loads(taskfan.cluster.kubectl("get", "namespace", name, "-o", "json"))
        assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted", name
    pods = json.loads(taskfan.kubectl("get", "pods", "-l", "app.kubernetes.io/part-of=taskfan", "-o", "json"))["items"]
    assert {p["metadata"]["labels"]["app.kubernetes.io/name"] for p in pods} >= {
        "ingest", "workflow", "validator", "enricher", "scorer", "console", "redis"}
    for pod in pods:
        name = pod["metadata"]["name"]
        assert pod["status"]["phase"] == "Running", name
        spec = pod["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in spec["containers"]:  # the app's and the injected daprd's
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False and context["capabilities"]["drop"] == ["ALL"], (
                name, container["name"], context)
    # A pod asking for nothing (root allowed, capabilities kept) is refused at the door.
    bare = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bare", "namespace": NAMESPACE},
            "spec": {"containers": [{"name": "bare", "image": "localhost/taskfan/taskfan:0.1.0", "command": ["true"]}]}}
    with pytest.raises(AssertionError, match='violates PodSecurity "restricted:latest"'):
        taskfan.cluster.kubectl("apply", "--dry-run=server", "-f", "-", stdin=json.dumps(bare))


def test_the_console_service_shows_a_batch_and_its_tasks(taskfan: Taskfan) -> None:
    url = f"http://{cluster_ip(taskfan.cluster, named('console'))}:8090"
    signed_in = {"Host": CONSOLE_HOST, "Authorization": f"Bearer {taskfan.ingest_token}"}
    assert httpx.get(f"{url}/api/batches", headers={"Host": CONSOLE_HOST}, timeout=30).status_code == 401
    batch_id = taskfan.publish(tasks(f"console-{uuid.uuid4().hex[:6]}", 150))

    def finished() -> dict[str, Any] | None:
        answer = httpx.get(f"{url}/api/batches/{batch_id}", headers=signed_in, timeout=30)
        seen = answer.json() if answer.status_code == 200 else None
        return seen if seen and seen["batch"]["state"] == "finished" else None

    seen: dict[str, Any] = wait_for(finished, f"the console to show {batch_id} finished", timeout=180, every=2)  # type: ignore[assignment]
    assert (seen["batch"]["total"], seen["batch"]["completed"]) == (150, 150)
    assert [t["stage"] for t in seen["tasks"]] == ["done"] * 150 and seen["trace"] is None  # no trace store here
    page = httpx.get(f"{url}/batches/{batch_id}", headers=signed_in, timeout=30)
    assert page.status_code == 200 and batch_id in page.text
    # Two console pods (services.console.replicas): each shows it, the one that does not write the history from what
    # the writer wrote.
    pods = taskfan.cluster.kubectl("-n", NAMESPACE, "get", "pods", "-l", "app.kubernetes.io/name=console", "-o",
                                   "jsonpath={.items[*].status.podIP}").split()
    assert len(pods) == 2, pods
    for ip in pods:
        wait_for(lambda ip=ip: (seen := httpx.get(f"http://{ip}:8090/api/batches/{batch_id}", headers=signed_in,
                                                  timeout=30)).status_code == 200
                 and seen.json()["batch"]["state"] == "finished", f"console pod {ip} to show {batch_id}", timeout=60,
                 every=2)
    # Its poll of the workflow app (service invocation, which the access control must let through) answers.
    # Not always at once after an install: a lookup of workflow-dapr made before that headless Service had an
    # address is cached as "no such host" by the cluster's DNS for up to 30 s (seen: ~40 s after `up`).
    wait_for(lambda: httpx.get(f"{url}/api/batches", headers=signed_in, timeout=30).json()["error"] is None,
             "the console's poll of the workflow app to answer", timeout=90, every=2)

    # From a browser on the host, as the README says: port-forward to 127.0.0.1:8090 and the sign-in link.
    with console_on_host(taskfan) as forwarded, httpx.Client(base_url=forwarded, timeout=30,
                                                             follow_redirects=True) as browser:
        # The one-time link `taskfan console` asks for (the token in a header), exchanged for a session.
        link = browser.post("/login/code", json={"role": "view"},
                            headers={"Authorization": f"Bearer {taskfan.ingest_token}"}).json()["link"]
        assert browser.get(link).status_code == 200  # sets the session cookie
        assert browser.get(f"/api/batches/{batch_id}").json()["batch"]["completed"] == 150


@contextlib.contextmanager
def console_on_host(taskfan: Taskfan) -> Iterator[str]:
    """The console Service at http://127.0.0.1:8090 through ``kubectl port-forward``, as the README and NOTES.txt
    tell a user to reach it."""
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", 8090)) != 0, "127.0.0.1:8090 is taken: the port-forward cannot run"
    forward = subprocess.Popen([taskfan.cluster.bin_dir / "kubectl", "--kubeconfig", taskfan.cluster.kubeconfig,
                                "-n", NAMESPACE, "port-forward", f"service/{named('console')}", "8090"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def answers() -> bool:
            try:
                return httpx.get("http://127.0.0.1:8090/healthz", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(answers, "the console through kubectl port-forward", timeout=60)
        yield "http://127.0.0.1:8090"
    finally:
        forward.terminate()
        forward.wait(timeout=10)


def operator_cli(*args: str, console: str, token: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``taskfan ARGS`` as an operator runs it on a machine of their own: outside any checkout (no run file, no
    stack secrets to fall back on), with only the console's URL and a credential in the environment."""
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "CONSOLE_URL": console, "TASKFAN_TOKEN": token}
    return subprocess.run([str(REPO / ".venv" / "bin" / "taskfan"), *args], env=env, cwd="/",
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_the_operator_cli_lists_shows_reruns_and_purges_the_clusters_batches(taskfan: Taskfan) -> None:
    viewer = base64.b64decode(taskfan.kubectl("get", "secret", named("secrets"), "-o",
                                              "jsonpath={.data.console-view-token}")).decode()
    prefix = f"cli-{uuid.uuid4().hex[:6]}"
    batch_id = f"{prefix}-batch"
    published = taskfan.post({"batch_id": batch_id, "tasks": tasks(prefix, 40)})
    assert published.status_code == 202, published.text
    with console_on_host(taskfan) as console:
        def listed() -> dict[str, Any] | None:
            done = operator_cli("batches", "-o", "json", "list", "--id", prefix, "--state", "finished",
                                console=console, token=viewer)
            assert done.returncode == 0, done.stderr
            rows = json.loads(done.stdout)["batches"]
            return rows[0] if rows else None

        row: dict[str, Any] = wait_for(listed, f"taskfan batches list to show {batch_id} finished", timeout=180,
                                       every=3)  # type: ignore[assignment]
        assert (row["batch_id"], row["completed"], row["total"]) == (batch_id, 40, 40)
        shown = operator_cli("batches", "show", batch_id, console=console, token=viewer)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.count(f"{prefix}-0") == 40 and f"{batch_id}: finished, 40/40 done" in shown.stderr

        # The viewer's credential looks only; acting takes the operator's.
        refused = operator_cli("batches", "rerun", batch_id, console=console, token=viewer)
        assert refused.returncode == 1 and "taskfan:" in refused.stderr
        rerun = operator_cli("batches", "-o", "json", "rerun", batch_id, console=console,
                             token=taskfan.ingest_token)
        assert rerun.returncode == 0, rerun.stderr
        again = json.loads(rerun.stdout)["batch_id"]
        assert again != batch_id and again.startswith(batch_id)
        assert taskfan.outcome(again, timeout=180) == taskfan.outcome(batch_id, timeout=30)

        unknown = operator_cli("batches", "show", f"{prefix}-no-such-batch", console=console, token=viewer)
        assert unknown.returncode == 2 and "taskfan:" in unknown.stderr
        hostile = operator_cli("batches", "show", "a||b::c", console=console, token=viewer)
        assert hostile.returncode == 2, hostile.stderr
        letters = operator_cli("dead-letters", "-o", "json", "list", console=console, token=viewer)
        assert letters.returncode == 0 and "dead_letters" in json.loads(letters.stdout), letters.stderr
        # Purging a finished batch deletes what it left: afterwards no one knows it.
        assert operator_cli("batches", "purge", batch_id, console=console, token=viewer).returncode == 1
        purged = operator_cli("batches", "purge", batch_id, console=console, token=taskfan.ingest_token)
        assert purged.returncode == 0, purged.stderr
        assert operator_cli("batches", "show", batch_id, console=console, token=viewer).returncode == 2
    gone = operator_cli("batches", "list", console=console, token=viewer)  # the port-forward has stopped
    assert gone.returncode == 3 and "does not answer" in gone.stderr


def test_the_autoscaler_raises_the_scorers_on_the_backlog_and_lowers_them_after(taskfan: Taskfan) -> None:
    # KEDA owns the count (chart: min 1, max 4, one replica per 200 tasks of backlog).
    wait_for(lambda: taskfan.scorer_replicas() == (1, 1), "one scorer before the batch", timeout=180, every=2)
    prefix = f"auto-{uuid.uuid4().hex[:6]}"
    started = time.monotonic()
    batch_id = taskfan.publish(tasks(prefix, 2000))
    timeline: list[dict[str, float | int | str]] = []

    def sample(phase: str) -> tuple[int, int]:
        wanted, ready = taskfan.scorer_replicas()
        timeline.append({"s": round(time.monotonic() - started, 1), "phase": phase, "wanted": wanted,
                         "ready": ready, "backlog": taskfan.backlog()})
        return wanted, ready

    completed = None
    while completed is None and time.monotonic() - started < 300:
        sample("batch running")
        for line in taskfan.kubectl("logs", "deployment/my-subscriber", "-c", "subscriber").splitlines():
            if line.startswith(batch_id + " "):
                completed = int(line.split()[1])
        time.sleep(2)
    while sample("after the outcome") != (1, 1) and time.monotonic() - started < 480:
        time.sleep(2)
    TIMELINE.parent.mkdir(parents=True, exist_ok=True)
    TIMELINE.write_text(json.dumps(timeline, indent=1))
    print(json.dumps(timeline))
    peak = max(int(s["ready"]) for s in timeline if s["phase"] == "batch running")
    assert completed == 2000, f"outcome: {completed} completed; replicas over time in {TIMELINE}"
    assert peak >= 3, f"the scorers peaked at {peak} ready replicas; over time in {TIMELINE}"
    assert timeline[-1]["wanted"] == 1, f"the scorers did not come back down to 1; over time in {TIMELINE}"
    assert timeline[-1]["backlog"] == 0
    assert taskfan.failed_step_calls() == []  # a scale-down drains: no step call failed, none retried


def test_scorers_scaled_by_hand_share_the_work(taskfan: Taskfan) -> None:
    # Pause KEDA where it is (its annotation), so that the count is the one set by hand.
    taskfan.kubectl("annotate", "scaledobject", named("scorer"), "autoscaling.keda.sh/paused=true", "--overwrite")
    wait_for(lambda: taskfan.kubectl("get", "scaledobject", named("scorer"), "-o",
                                     "jsonpath={.status.conditions[?(@.type=='Paused')].status}") == "True",
             "KEDA to pause the scorer's autoscaling")
    taskfan.kubectl("scale", f"deployment/{named('scorer')}", "--replicas=3")
    taskfan.kubectl("rollout", "status", f"deployment/{named('scorer')}", "--timeout=180s", timeout=200)
    # Dapr resolves the app id (not the release's name) through the headless Service scorer-dapr, which Dapr's
    # operator makes: all three must be listed in it.
    wait_for(lambda: len(taskfan.kubectl("get", "endpoints", "scorer-dapr", "-o",
                                         "jsonpath={.subsets[*].addresses[*].ip}").split()) == 3,
             "three scorer addresses behind scorer-dapr")
    prefix = f"hand-{uuid.uuid4().hex[:6]}"
    batch_id = taskfan.publish(tasks(prefix, 900))
    assert taskfan.outcome(batch_id, timeout=240)[0] == 900
    shares = {pod: taskfan.scored(pod, prefix) for pod in taskfan.pods("scorer")}
    assert len(shares) == 3 and all(shares.values()), f"tasks scored per replica: {shares}"
    assert sum(shares.values()) >= 900  # a task repeated after a retry counts twice; none is missing


def test_deleting_a_scorer_pod_and_the_workflow_pod_mid_batch_loses_nothing(taskfan: Taskfan) -> None:
    assert taskfan.scorer_replicas() == (3, 3)  # still paused by hand at three (test above)
    prefix = f"kill-{uuid.uuid4().hex[:6]}"
    batch_id = taskfan.publish(tasks(prefix, 1200))
    wait_for(lambda: 0 < taskfan.backlog() < 1100, "the batch to be under way", timeout=120, every=0.5)
    scorer, workflow = taskfan.pods("scorer")[0], taskfan.pods("workflow")[0]
    taskfan.kubectl("delete", "pod", scorer, workflow, "--wait=false")
    assert taskfan.outcome(batch_id, timeout=420)[0] == 1200
    wait_for(lambda: workflow not in taskfan.pods("workflow") and len(taskfan.ready_pods("workflow")) == 2,
             "the workflow pod to be replaced")
    # The new workflow pod's reconciler (every 5 s) has seen the batch end: nothing left in the backlog.
    wait_for(lambda: taskfan.backlog() == 0, "the backlog to drop to 0", timeout=30)


# 5,000 tasks, about 40 s of the three scorers' 120 tasks/s: the first four batches still run while a loaded
# host finds the pod that holds one.
BURST_BATCHES, BURST_TASKS = 10, 500


def test_a_burst_over_two_workflow_pods_loses_nothing_when_one_is_killed_mid_burst(taskfan: Taskfan) -> None:
    # The chart's two workflow processes (issue 24) share a burst (Dapr places the batches' workflows and chunks
    # over both); one that runs part of it is killed outright, app and sidecar (SIGKILL from the host, then the pod
    # force-deleted: no drain, as when its node is lost), and the rest of the burst is published after.
    wait_for(lambda: len(taskfan.ready_pods("workflow")) == 2, "two ready workflow pods", timeout=180, every=2)
    ids = [f"burst-{uuid.uuid4().hex[:6]}-{i}" for i in range(BURST_BATCHES)]

    def publish(batch_ids: list[str]) -> None:
        for batch_id in batch_ids:
            answer = taskfan.post({"batch_id": batch_id, "tasks": tasks(batch_id, BURST_TASKS)})
            assert answer.status_code == 202, answer.text

    def running_part_of_the_burst() -> str | None:
        return next((pod for pod in taskfan.ready_pods("workflow")
                     if {r.get("batch_id") for r in taskfan.log_records(pod, "workflow")} & set(ids)), None)

    publish(ids[:4])
    victim: str = wait_for(running_part_of_the_burst, "a workflow pod to run part of the burst",
                           timeout=60, every=0.5)  # type: ignore[assignment]
    assert not {e["data"]["batch_id"] for e in taskfan.outcome_events()} >= set(ids[:4]), "nothing was left to lose"
    uid = taskfan.kubectl("get", "pod", victim, "-o", "jsonpath={.metadata.uid}")
    pids = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _in_container(p, f"pod{uid}")]
    assert pids, f"no process of pod {victim} on this host"
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid.name), signal.SIGKILL)
    taskfan.kubectl("delete", "pod", victim, "--grace-period=0", "--force")
    publish(ids[4:])

    def every_outcome() -> list[dict[str, Any]] | None:
        events = [e for e in taskfan.outcome_events() if e["data"]["batch_id"] in ids]
        return events if {e["data"]["batch_id"] for e in events} == set(ids) else None

    events: list[dict[str, Any]] = wait_for(every_outcome, "an outcome for every batch of the burst",
                                            timeout=240, every=2)  # type: ignore[assignment]
    for batch_id in ids:
        outcome = one_outcome_with_every_task(events, batch_id, BURST_TASKS)
        assert sorted(r["task_id"] for r in outcome["results"]) == [t["task_id"] for t in tasks(batch_id, BURST_TASKS)]
    wait_for(lambda: victim not in taskfan.pods("workflow") and len(taskfan.ready_pods("workflow")) == 2,
             "the killed workflow pod to be replaced", timeout=120, every=2)
    wait_for(lambda: taskfan.backlog() == 0, "the backlog to drop to 0", timeout=30)


def one_outcome_with_every_task(events: list[dict[str, Any]], batch_id: str, count: int) -> dict[str, Any]:
    """The batch's one outcome among ``events`` (one event id, one data: a publish cut short may repeat it,
    identical), with every task completed; returns it."""
    mine = [e for e in events if e["data"]["batch_id"] == batch_id]
    assert {e["id"] for e in mine} == {f"outcome:{batch_id}"}, (batch_id, [e["id"] for e in mine])
    assert all(e["data"] == mine[0]["data"] for e in mine), f"two different outcomes for {batch_id}"
    outcome = mine[0]["data"]
    # On failure: the counts, and each distinct reason with how many tasks gave it (what failed them).
    reasons = Counter(r.get("error") for r in outcome["results"] if r["status"] != "completed")
    assert (outcome["total"], outcome["completed"], outcome["failed"]) == (count, count, 0), (
        batch_id, {k: v for k, v in outcome.items() if k != "results"}, reasons.most_common(10))
    return outcome


def pods_by_node(taskfan: Taskfan) -> dict[str, list[str]]:
    """The release's pods on each node: ``{node: [pod, ...]}``."""
    items = json.loads(taskfan.kubectl("get", "pods", "-l", f"app.kubernetes.io/instance={RELEASE}", "-o",
                                       "json"))["items"]
    found: dict[str, list[str]] = {}
    for pod in items:
        found.setdefault(pod["spec"].get("nodeName", ""), []).append(pod["metadata"]["name"])
    return found


def test_draining_a_node_mid_batch_loses_nothing_and_the_node_takes_pods_again(taskfan: Taskfan) -> None:
    # The second node (cluster.sh: its own kubelet and containerd), drained as for its maintenance while a batch
    # runs: its pods are evicted one per service at a time (the chart's PodDisruptionBudgets) and drain their work
    # (graceful shutdown), and start again on the other node. Then it is uncordoned and takes pods again.
    cluster = taskfan.cluster
    nodes = cluster.kubectl("get", "nodes", "-o", "jsonpath={.items[*].metadata.name}").split()
    [drained] = [n for n in nodes if n != socket.gethostname().lower()]
    # The chart's soft topology spread: each two-replica service has a replica on each node.
    for app in ("ingest", "workflow"):
        spread = taskfan.kubectl("get", "pods", "-l", f"app.kubernetes.io/name={app}", "-o",
                                 "jsonpath={.items[*].spec.nodeName}").split()
        assert sorted(spread) == sorted(nodes), f"{app}'s replicas on {spread}"
    assert pods_by_node(taskfan).get(drained), f"no pod of the release on {drained}"
    # The cluster's own services stay on the control-plane node (cluster.sh's label): a drain of the worker never
    # evicts Dapr's sidecar injector (its webhook fails open: pods evicted with it would lose their sidecars).
    system = cluster.kubectl("get", "pods", "-A", "--field-selector", f"spec.nodeName={drained}", "-o",
                             "jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name} {end}").split()
    assert not [p for p in system if p.split("/")[0] in ("dapr-system", "kube-system")], system
    prefix = f"drain-{uuid.uuid4().hex[:6]}"
    batch_id = taskfan.publish(tasks(prefix, 1500))
    wait_for(lambda: 0 < taskfan.backlog() < 1400, "the batch to be under way", timeout=120, every=0.5)
    try:
        cluster.kubectl("drain", drained, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=240s",
                        timeout=270)
        assert not pods_by_node(taskfan).get(drained), f"the release's pods still on {drained}"

        def published() -> list[dict[str, Any]] | None:
            try:
                return [e for e in taskfan.outcome_events() if e["data"]["batch_id"] == batch_id] or None
            except AssertionError:  # Redis's pod is being replaced (evicted by a drain): ask again
                return None

        events: list[dict[str, Any]] = wait_for(published, f"the outcome of {batch_id}", timeout=300,
                                                every=2)  # type: ignore[assignment]
        one_outcome_with_every_task(events, batch_id, 1500)
    finally:
        cluster.kubectl("uncordon", drained)
    assert cluster.kubectl("get", "node", drained, "-o", "jsonpath={.spec.unschedulable}") in ("", "false")
    # It takes pods again: one more workflow replica lands there (soft spread, the other node holding two).
    taskfan.kubectl("scale", f"deployment/{named('workflow')}", "--replicas=3")
    try:
        wait_for(lambda: drained in taskfan.kubectl("get", "pods", "-l", "app.kubernetes.io/name=workflow", "-o",
                                                    "jsonpath={.items[*].spec.nodeName}").split(),
                 f"a workflow pod on {drained} again", timeout=60)
    finally:
        taskfan.kubectl("scale", f"deployment/{named('workflow')}", "--replicas=2")
    # As it found the cluster, for the tests after it: every Deployment of the namespace (the subscriber's too)
    # with all its replicas ready.
    wait_for(lambda: not unready_deployments(taskfan), "every Deployment ready after the drain", timeout=180,
             every=2)


def unready_deployments(taskfan: Taskfan) -> list[str]:
    """The namespace's Deployments with fewer ready (or updated) replicas than wanted."""
    items = json.loads(taskfan.kubectl("get", "deployments", "-o", "json"))["items"]
    return [d["metadata"]["name"] for d in items if not d["spec"]["replicas"] == d["status"].get("readyReplicas", 0)
            == d["status"].get("updatedReplicas", 0)]



def test_a_stopped_app_is_restarted_by_its_liveness_probe_and_work_goes_on(taskfan: Taskfan) -> None:
    # The validator's app process, stopped from the host (SIGSTOP: it holds its port and answers nothing, as a
    # hung process does); its sidecar still looks ready. The probe (python3 -m taskfan.probe) finds it.
    [pod] = taskfan.pods("validator")
    restarts = "jsonpath={.status.containerStatuses[?(@.name=='validator')].restartCount}"
    before = int(taskfan.kubectl("get", "pod", pod, "-o", restarts))
    container = taskfan.kubectl("get", "pod", pod, "-o",
                                "jsonpath={.status.containerStatuses[?(@.name=='validator')].containerID}")
    container_id = container.rpartition("/")[2]
    assert container_id, container
    pids = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _in_container(p, container_id)
            and b"services.validator.app" in _read(p / "cmdline")]
    assert pids, f"no process of container {container_id} on this host"
    for pid in pids:
        os.kill(int(pid.name), signal.SIGSTOP)
    wait_for(lambda: int(taskfan.kubectl("get", "pod", pod, "-o", restarts)) > before,
             "the kubelet to restart the stopped validator", timeout=180, every=3)
    taskfan.kubectl("wait", "--for=condition=Ready", f"pod/{pod}", "--timeout=120s", timeout=150)
    batch_id = taskfan.publish(tasks(f"alive-{uuid.uuid4().hex[:6]}", 30))
    assert taskfan.outcome(batch_id, timeout=120)[0] == 30
    events = taskfan.kubectl("get", "events", "--field-selector", f"involvedObject.name={pod}", "-o",
                             "jsonpath={.items[*].message}")
    assert "Liveness probe failed" in events and "is not healthy" in events, events


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # the process ended meanwhile
        return b""


def _in_container(proc: Path, container_id: str) -> bool:
    return container_id.encode() in _read(proc / "cgroup")


def test_a_helm_upgrade_to_a_new_tag_and_setting_while_a_batch_runs_loses_nothing(taskfan: Taskfan) -> None:
    # A new tag of the image (the same content under a new name: what matters to Kubernetes is the name) and a
    # changed setting: every Deployment rolls, while a 2,000-task batch runs.
    new_image = f"{TASKFAN_IMAGE.rpartition(':')[0]}:0.1.0-upgraded"
    run("bash", CLUSTER_SH, "tag", TASKFAN_IMAGE, new_image)
    prefix = f"upgrade-{uuid.uuid4().hex[:6]}"
    batch_id = taskfan.publish(tasks(prefix, 2000))
    wait_for(lambda: taskfan.backlog() > 0, "the batch to be under way", timeout=60)
    helm = run(taskfan.cluster.bin_dir / "helm", "--kubeconfig", taskfan.cluster.kubeconfig, "upgrade", RELEASE,
               REPO / "deploy" / "helm" / "taskfan", "--namespace", NAMESPACE, "--reuse-values",
               "--set", f"image.tag={new_image.rpartition(':')[2]}", "--set", "services.scorer.concurrency=5",
               "--wait", "--timeout", "10m", timeout=700)
    assert "has been upgraded" in helm.stdout, helm.stdout
    completed, _ = taskfan.outcome(batch_id, timeout=300)
    assert completed == 2000
    lines = [line for line in taskfan.kubectl("logs", "deployment/my-subscriber", "-c", "subscriber").splitlines()
             if line.split()[:1] == [batch_id]]
    assert len(lines) == 1, lines  # one outcome
    rolled = taskfan.kubectl("get", "deployments", "-l", f"app.kubernetes.io/instance={RELEASE}", "-o",
                             "jsonpath={range .items[*]}{.metadata.name} {.spec.template.spec.containers[0].image} "
                             "{.status.updatedReplicas}/{.status.replicas}{'\\n'}{end}")
    assert sorted(rolled.split()[1::3]) == [new_image] * 6, rolled  # every Deployment on the new tag ...
    assert all(done.split("/")[0] == done.split("/")[1] for done in rolled.split()[2::3]), rolled  # ... rolled out
    scorer_env = taskfan.kubectl("get", "deployment", named("scorer"), "-o",
                                 "jsonpath={.spec.template.spec.containers[0].env[?(@.name=='SCORER_CONCURRENCY')].value}")
    assert scorer_env == "5"
