"""A real single-node Kubernetes cluster (deploy/k8s/cluster.sh): up, a workload, down, a clean host.

Self-contained: builds a Debian bookworm rootfs with python3 (mmdebstrap, cached per machine), packs
it as an OCI image (deploy/images/oci.py), imports it into the node, runs it as a Deployment behind a
ClusterIP Service, reaches it from the host and from another pod (through the cluster's DNS), checks
`kubectl logs` and `exec`, and ends with `down`, which fails if the host is not as it was before `up`.
Run with `make k8s-test` as root; each run uses its own namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "deploy" / "k8s" / "cluster.sh"
CACHE = Path(os.environ.get("TASKFAN_CACHE", Path.home() / ".cache" / "taskfan"))
IMAGE = "localhost/taskfan-k8s/smoke-python:3.11"
WEB_PORT = 8080

pytestmark = pytest.mark.k8s


def run(*args: str | Path, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, check=check)


def python_image(out_dir: Path) -> Path:
    """An OCI archive of Debian bookworm (minbase) with python3; the rootfs is cached per machine."""
    rootfs = CACHE / "k8s-smoke" / "bookworm-python3"
    if not (rootfs / "usr" / "bin" / "python3").exists():
        shutil.rmtree(rootfs, ignore_errors=True)
        rootfs.parent.mkdir(parents=True, exist_ok=True)
        run("mmdebstrap", "--variant=minbase", "--include=python3", "--mode=root",
            "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
            "bookworm", rootfs, timeout=900)
    archive = out_dir / "smoke-python.tar"
    run("python3", REPO / "deploy" / "images" / "oci.py", rootfs, archive, "--name", IMAGE,
        "--entrypoint", "python3", "--user", "65532:65532", "--owner", "0",
        "--layer-cache", CACHE / "k8s-smoke" / "layers", timeout=900)
    return archive


def manifests(namespace: str) -> str:
    # python3 as PID 1 ignores SIGTERM: a short grace period keeps deletion quick.
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": namespace},
         "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                  "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                      "terminationGracePeriodSeconds": 1,
                      "securityContext": {"runAsNonRoot": True},
                      "containers": [{"name": "web", "image": IMAGE, "imagePullPolicy": "Never",
                                      "args": ["-m", "http.server", str(WEB_PORT), "--directory", "/etc"],
                                      "ports": [{"containerPort": WEB_PORT}],
                                      "readinessProbe": {"httpGet": {"path": "/hostname", "port": WEB_PORT},
                                                         "periodSeconds": 1}}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": namespace},
         "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": WEB_PORT}]}},
    ]})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The cluster, up, with the smoke image imported; yields the admin kubeconfig."""
    archive = python_image(tmp_path_factory.mktemp("image"))
    try:
        up = run("bash", CLUSTER, "up", timeout=1800, check=False)
        assert up.returncode == 0, f"cluster.sh up failed:\n{up.stderr}"
        run("bash", CLUSTER, "import", archive, timeout=300)
        yield Path(run("bash", CLUSTER, "kubeconfig").stdout.strip())
    finally:
        run("bash", CLUSTER, "down", timeout=600, check=False)  # idempotent; the last test checks its result


@pytest.fixture(scope="module")
def kubectl(cluster: Path) -> Iterator[object]:
    bin_dir = run("bash", REPO / "deploy" / "k8s" / "install-k8s.sh").stdout.strip().splitlines()[-1]
    kubectl_bin = Path(bin_dir) / "kubectl"

    def call(*args: str, timeout: float = 120, stdin: str | None = None) -> str:
        done = subprocess.run([str(kubectl_bin), "--kubeconfig", str(cluster), *args], input=stdin,
                              capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
        return done.stdout

    yield call


@pytest.fixture(scope="module")
def web(kubectl) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A two-replica python3 http.server Deployment behind a ClusterIP Service; yields its namespace."""
    namespace = f"smoke-{uuid.uuid4().hex[:8]}"
    kubectl("apply", "-f", "-", stdin=manifests(namespace))
    kubectl("-n", namespace, "rollout", "status", "deployment/web", "--timeout=120s", timeout=150)
    yield namespace


def test_node_is_ready(kubectl) -> None:  # type: ignore[no-untyped-def]
    nodes = json.loads(kubectl("get", "nodes", "-o", "json"))["items"]
    assert len(nodes) == 1
    ready = {c["type"]: c["status"] for c in nodes[0]["status"]["conditions"]}["Ready"]
    assert ready == "True"
    assert nodes[0]["status"]["nodeInfo"]["kubeletVersion"] == "v1.34.4"


def test_service_answers_from_the_host(kubectl, web: str) -> None:  # type: ignore[no-untyped-def]
    cluster_ip = kubectl("-n", web, "get", "service", "web", "-o", "jsonpath={.spec.clusterIP}")
    # kube-proxy programs a new Service within a few seconds: poll, bounded.
    deadline = time.monotonic() + 30
    while True:
        got = run("curl", "-sf", "--max-time", "2", f"http://{cluster_ip}/hostname", check=False)
        if got.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert got.returncode == 0, f"http://{cluster_ip}/hostname from the host: {got.stderr}"
    pods = kubectl("-n", web, "get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].metadata.name}").split()
    assert got.stdout.strip() in pods  # /etc/hostname of one of the two pods


def test_service_answers_from_another_pod_by_name(kubectl, web: str) -> None:  # type: ignore[no-untyped-def]
    url = f"http://web.{web}.svc.cluster.local/hostname"
    probe = (f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=5).read().decode().strip())")
    out = kubectl("-n", web, "run", "client", "--image", IMAGE, "--image-pull-policy", "Never", "--restart", "Never",
                  "--attach", "--rm", "--quiet", "--command", "--", "python3", "-c", probe, timeout=120)
    pods = kubectl("-n", web, "get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].metadata.name}").split()
    assert out.strip() in pods


def test_logs_and_exec(kubectl, web: str) -> None:  # type: ignore[no-untyped-def]
    # Both go from the apiserver to the kubelet at the node's InternalIP.
    assert "GET /hostname" in kubectl("-n", web, "logs", "deployment/web")
    assert kubectl("-n", web, "exec", "deployment/web", "--", "python3", "-c", "print(6 * 7)").strip() == "42"


def test_zz_down_leaves_the_host_as_before(cluster: Path) -> None:
    # Named to run last: the module's tests share the cluster.
    down = run("bash", CLUSTER, "down", timeout=600, check=False)
    assert down.returncode == 0, f"cluster.sh down:\n{down.stderr}"
