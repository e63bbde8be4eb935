"""The bare cluster under Taskfan (deploy/k8s/cluster.sh): two Nodes, Services, DNS, logs and exec.

A plain workload in its own namespace, from the Taskfan image (it has python3): a two-replica
`python3 -m http.server` Deployment, one pod on each node, behind a ClusterIP Service, reached from the host
and from another pod through the cluster's DNS, each pod from the other by its address, then `kubectl logs`
and `exec`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from .conftest import TASKFAN_IMAGE, Cluster, run, wait_for

WEB_PORT = 8080

pytestmark = pytest.mark.k8s


def manifests(namespace: str) -> str:
    # python3 as PID 1 ignores SIGTERM: a short grace period keeps deletion quick.
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": namespace},
         "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                  "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                      "terminationGracePeriodSeconds": 1,
                      # One on each node: the tests below reach a pod on the other node.
                      "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                                     "whenUnsatisfiable": "DoNotSchedule",
                                                     "labelSelector": {"matchLabels": {"app": "web"}}}],
                      "securityContext": {"runAsNonRoot": True},
                      "containers": [{"name": "web", "image": TASKFAN_IMAGE, "imagePullPolicy": "Never",
                                      "command": ["python3", "-m", "http.server", str(WEB_PORT),
                                                  "--directory", "/etc"],
                                      "ports": [{"containerPort": WEB_PORT}],
                                      "readinessProbe": {"httpGet": {"path": "/hostname", "port": WEB_PORT},
                                                         "periodSeconds": 1}}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": namespace},
         "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": WEB_PORT}]}},
    ]})


@pytest.fixture(scope="module")
def web(cluster: Cluster) -> Iterator[str]:
    """A two-replica python3 http.server Deployment behind a ClusterIP Service; yields its namespace."""
    namespace = f"smoke-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("apply", "-f", "-", stdin=manifests(namespace))
    cluster.kubectl("-n", namespace, "rollout", "status", "deployment/web", "--timeout=120s", timeout=150)
    yield namespace
    cluster.kubectl("delete", "namespace", namespace, "--wait=false")


def web_pods(cluster: Cluster, namespace: str) -> list[str]:
    return cluster.kubectl("-n", namespace, "get", "pods", "-l", "app=web",
                           "-o", "jsonpath={.items[*].metadata.name}").split()


# func_only: the first test sets the cluster up, and on a fresh machine that waits for its binaries and images,
# built in the background meanwhile (deploy/background-build.sh); the fixture's own steps have their timeouts.
@pytest.mark.timeout(600, func_only=True)
def test_both_nodes_are_ready(cluster: Cluster) -> None:
    # The host's node and the second one (cluster.sh: its own kubelet and containerd in a network namespace).
    nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json"))["items"]
    assert len(nodes) == 2
    for node in nodes:
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
        assert ready == "True", node["metadata"]["name"]
        assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.34.4"
    addresses = {a["address"] for node in nodes for a in node["status"]["addresses"] if a["type"] == "InternalIP"}
    assert len(addresses) == 2  # a node IP each


def test_no_kubelet_collects_the_imported_images(cluster: Cluster) -> None:
    # The images are imported, with no registry to pull them again: each kubelet's running configuration (its
    # configz) has image garbage collection off, and evicts pods only on a nearly full disk.
    for node in cluster.kubectl("get", "nodes", "-o", "jsonpath={.items[*].metadata.name}").split():
        config = json.loads(cluster.kubectl("get", "--raw", f"/api/v1/nodes/{node}/proxy/configz"))["kubeletconfig"]
        assert config["imageGCHighThresholdPercent"] == 100, node
        wanted = {"memory.available": "100Mi", "nodefs.available": "1Gi", "imagefs.available": "1Gi"}
        assert {k: config["evictionHard"].get(k) for k in wanted} == wanted, (node, config["evictionHard"])


def test_service_answers_from_the_host(cluster: Cluster, web: str) -> None:
    cluster_ip = cluster.kubectl("-n", web, "get", "service", "web", "-o", "jsonpath={.spec.clusterIP}")
    # kube-proxy programs a new Service within a few seconds: poll, bounded.
    def answer() -> str:
        got = run("curl", "-sf", "--max-time", "2", f"http://{cluster_ip}/hostname", check=False)
        return got.stdout.strip() if got.returncode == 0 else ""

    hostname = wait_for(answer, f"http://{cluster_ip}/hostname from the host", timeout=30, every=0.5)
    assert hostname in web_pods(cluster, web)  # /etc/hostname of one of the two pods


def test_service_answers_from_another_pod_by_name(cluster: Cluster, web: str) -> None:
    url = f"http://web.{web}.svc.cluster.local/hostname"
    probe = (f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=5).read().decode().strip())")
    cluster.kubectl("-n", web, "run", "client", "--image", TASKFAN_IMAGE, "--image-pull-policy", "Never",
                    "--restart", "Never", "--command", "--", "python3", "-c", probe)
    # Its log once it has ended, not `run --attach`: an attach that comes after a quick container has ended prints
    # nothing and still exits 0 (seen once under load).
    def ended() -> str:
        phase = cluster.kubectl("-n", web, "get", "pod", "client", "-o", "jsonpath={.status.phase}")
        return phase if phase in ("Succeeded", "Failed") else ""

    phase = wait_for(ended, "the client pod to end", timeout=120)
    out = cluster.kubectl("-n", web, "logs", "client")
    cluster.kubectl("-n", web, "delete", "pod", "client", "--wait=false")
    assert phase == "Succeeded", out
    assert out.strip() in web_pods(cluster, web)


def test_each_pod_reaches_the_pod_on_the_other_node_by_its_address(cluster: Cluster, web: str) -> None:
    pods = json.loads(cluster.kubectl("-n", web, "get", "pods", "-l", "app=web", "-o", "json"))["items"]
    assert len({pod["spec"]["nodeName"] for pod in pods}) == 2
    for pod, other in ((pods[0], pods[1]), (pods[1], pods[0])):
        url = f"http://{other['status']['podIP']}:{WEB_PORT}/hostname"
        fetch = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=5).read().decode())"
        got = cluster.kubectl("-n", web, "exec", pod["metadata"]["name"], "--", "python3", "-c", fetch)
        assert got.strip() == other["metadata"]["name"]
        # Its address, not its node's: pod to pod is not masqueraded (NetworkPolicy selects pods by address).
        log = cluster.kubectl("-n", web, "logs", other["metadata"]["name"])
        assert f"{pod['status']['podIP']} - - " in log, log[-500:]


def test_a_network_policy_holds_on_each_node_and_lets_the_host_in(cluster: Cluster, web: str) -> None:
    # kube-router runs on each node: a policy denying every pod's ingress refuses the pod on the other node, on
    # both nodes, while the host (a node) is still let in, as into its own pods.
    pods = json.loads(cluster.kubectl("-n", web, "get", "pods", "-l", "app=web", "-o", "json"))["items"]
    deny = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "deny-ingress"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    cluster.kubectl("-n", web, "apply", "-f", "-", stdin=json.dumps(deny))
    try:
        for pod, other in ((pods[0], pods[1]), (pods[1], pods[0])):
            url = f"http://{other['status']['podIP']}:{WEB_PORT}/hostname"
            fetch = (f"import urllib.request\ntry: urllib.request.urlopen({url!r}, timeout=3); print('answered')\n"
                     f"except OSError as e: print('refused', e)")

            def refused(name: str = pod["metadata"]["name"], fetch: str = fetch) -> bool:
                return cluster.kubectl("-n", web, "exec", name, "--", "python3", "-c", fetch).startswith("refused")

            wait_for(refused, f"{other['spec']['nodeName']}'s kube-router to refuse {pod['metadata']['name']}",
                     timeout=20, every=0.5)
            assert run("curl", "-sf", "--max-time", "3", url, check=False).returncode == 0, f"the host refused {url}"
    finally:
        cluster.kubectl("-n", web, "delete", "networkpolicy", "deny-ingress")


def test_logs_and_exec(cluster: Cluster, web: str) -> None:
    # Both go from the apiserver to the kubelet at the node's InternalIP.
    assert "GET /hostname" in cluster.kubectl("-n", web, "logs", "deployment/web")
    assert cluster.kubectl("-n", web, "exec", "deployment/web", "--", "python3", "-c", "print(6 * 7)").strip() == "42"
