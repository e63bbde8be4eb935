"""Taskfan's chart as Helm sees it without a cluster (`helm lint --strict`, `helm template`), with its default
values and with every option on: the schema refuses a wrong value clearly, two releases in one namespace share
no Kubernetes object's name, every Deployment gets the pod settings, each app id its own Dapr API token, and
`helm template` renders the same objects every time but for the generated secrets.

It needs the helm binary the cluster's build makes (`deploy/k8s/install-k8s.sh`, as the cluster fixture finds
it), not the cluster itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import NAMESPACE, REPO, run

pytestmark = pytest.mark.k8s

CHART = REPO / "deploy" / "helm" / "taskfan"
APPS = ("ingest", "workflow", "validator", "enricher", "scorer", "console")
# Dapr's names are the code's constants, the namespace's and not the release's (README: one release per namespace).
DAPR_KINDS = {"Component", "Configuration", "Resiliency"}
# Every option the chart has, switched on.
ALL_ON: dict[str, Any] = {
    "serviceAccount": {"create": True, "annotations": {"example.com/role": "taskfan"}},
    "imagePullSecrets": [{"name": "my-registry"}],
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "taskfan", "effect": "NoSchedule"}],
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]}}},
    "podAnnotations": {"example.com/team": "tasks"},
    "extraEnv": [{"name": "EXTRA_SETTING", "value": "on"}],
    "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    "secrets": {"existingSecret": "my-taskfan-secrets"},
    "tasksPublishers": ["my-publisher"],
    "services": {"ingest": {"hosts": ["tasks.example.com"]}, "console": {"hosts": ["console.example.com"]},
                 "scorer": {"autoscaling": {"enabled": True}}},
    "networkPolicy": {"consoleFrom": [{"namespaceSelector": {"matchLabels": {"name": "ingress"}}}],
                      "prometheus": {"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}},
}


@pytest.fixture(scope="module")
def helm() -> Path:
    # Waits for the build `make test` runs in the background (its lock), or builds, once per machine.
    return Path(run("bash", REPO / "deploy" / "k8s" / "install-k8s.sh", timeout=3600).stdout.split()[-1]) / "helm"


@pytest.fixture(scope="module")
def all_on(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("chart") / "all-on.yaml"
    path.write_text(yaml.safe_dump(ALL_ON))
    return path


def render(helm: Path, release: str, *args: str | Path) -> list[dict[str, Any]]:
    out = run(helm, "template", release, CHART, "--namespace", NAMESPACE, *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def names(objects: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(o["kind"], o["metadata"]["name"]) for o in objects}


def deployments(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["labels"]["app.kubernetes.io/name"]: o for o in objects if o["kind"] == "Deployment"}


def env_of(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_lint_is_clean_in_strict_mode_with_the_defaults_and_with_every_option_on(helm: Path, all_on: Path) -> None:
    for args in ((), ("-f", all_on)):
        done = run(helm, "lint", "--strict", CHART, "--namespace", NAMESPACE, *args)
        assert "1 chart(s) linted, 0 chart(s) failed" in done.stdout, done.stdout


@pytest.mark.parametrize(("value", "message"), [
    ("services.scorer.replicas=abc", "at '/services/scorer/replicas': got string, want integer"),
    ("services.scorer.replicas=-1", "at '/services/scorer/replicas': minimum: got -1, want 1"),
    ("services.scorer.replicaz=2", "at '/services/scorer': additional properties 'replicaz' not allowed"),
    ("dapr.logLevel=loud", "at '/dapr/logLevel': value must be one of"),
    ("image.pullPolicy=Sometimes", "at '/image/pullPolicy': value must be one of"),
])
def test_a_wrong_value_is_refused_naming_it(helm: Path, value: str, message: str) -> None:
    done = run(helm, "template", "taskfan", CHART, "--set", value, check=False)
    assert done.returncode != 0 and message in done.stderr, done.stderr


def test_two_releases_in_one_namespace_share_no_kubernetes_objects_name(helm: Path, all_on: Path) -> None:
    first, second = render(helm, "taskfan"), render(helm, "other", "-f", all_on)
    shared = names(first) & names(second)
    # Only Dapr's, by design: the chart refuses a second release where one holds them (dapr-resources.yaml).
    assert {kind for kind, _ in shared} == DAPR_KINDS, shared
    assert {(k, n) for k, n in names(first) if k not in DAPR_KINDS} and all(
        n.startswith("taskfan-") for k, n in names(first) if k not in DAPR_KINDS)
    assert all(n.startswith("other-") for k, n in names(second) if k not in DAPR_KINDS)
    scaler = next(o for o in second if o["kind"] == "ScaledObject")
    assert scaler["spec"]["scaleTargetRef"]["name"] == "other-scorer"
    assert scaler["spec"]["triggers"][0]["metadata"]["url"].startswith(f"http://other-workflow-metrics.{NAMESPACE}.")


def test_every_option_reaches_every_deployment(helm: Path, all_on: Path) -> None:
    objects = render(helm, "other", "-f", all_on)
    found = deployments(objects)
    assert set(found) == set(APPS)
    for name, deployment in found.items():
        pod = deployment["spec"]["template"]
        assert pod["spec"]["serviceAccountName"] == "other-app", name
        for key in ("imagePullSecrets", "nodeSelector", "tolerations", "affinity"):
            assert pod["spec"][key] == ALL_ON[key], (name, key)
        assert pod["metadata"]["annotations"]["example.com/team"] == "tasks", name
        assert env_of(deployment)["EXTRA_SETTING"]["value"] == "on", name
    assert ("ServiceAccount", "other-app") in names(objects)
    monitor = next(o for o in objects if o["kind"] == "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert "ServiceMonitor" not in {o["kind"] for o in render(helm, "taskfan")}  # off by default
    # The values' Host names, beside the Service's own.
    hosts = env_of(found["ingest"])["INGEST_HOSTS"]["value"].split(",")
    assert hosts[0] == "other-ingest:8080" and "tasks.example.com" in hosts
    assert "console.example.com" in env_of(found["console"])["CONSOLE_HOSTS"]["value"].split(",")


def test_an_existing_secret_replaces_the_charts_own(helm: Path, all_on: Path) -> None:
    objects = render(helm, "other", "-f", all_on)
    assert ("Secret", "other-secrets") not in names(objects)
    refs = [e["valueFrom"]["secretKeyRef"] for d in deployments(objects).values() for e in env_of(d).values()
            if "secretKeyRef" in e.get("valueFrom", {})]
    for key in ("ingest-token", "console-view-token", "redis-keeper-password", "redis-console-password"):
        assert {r["name"] for r in refs if r["key"] == key} == {"my-taskfan-secrets"}, key
    for component in (o for o in objects if o["kind"] == "Component"):
        password = next(m for m in component["spec"]["metadata"] if m["name"] == "redisPassword")
        assert password["secretKeyRef"]["name"] == "my-taskfan-secrets"


def test_each_app_id_gets_a_dapr_api_token_of_its_own(helm: Path, all_on: Path) -> None:
    for args in ((), ("-f", all_on)):
        objects = render(helm, "taskfan", *args)
        secrets = {o["metadata"]["name"]: o["data"]["token"] for o in objects if o["kind"] == "Secret"
                   and o["metadata"]["name"].startswith("taskfan-dapr-api-token-")}
        for name, deployment in deployments(objects).items():
            own = f"taskfan-dapr-api-token-{name}"
            assert deployment["spec"]["template"]["metadata"]["annotations"]["dapr.io/api-token-secret"] == own
            assert env_of(deployment)["DAPR_API_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == own
        # And the outside app ids the values grant a topic (examples/k8s-subscriber.yaml uses its own).
        outside = {"taskfan-cli", "my-subscriber"} | set(ALL_ON["tasksPublishers"] if args else [])
        assert set(secrets) == {f"taskfan-dapr-api-token-{app}" for app in (*APPS, *outside)}
        assert len(set(secrets.values())) == len(secrets)
    assert not any(o["metadata"]["name"] == "taskfan-dapr-api-token" for o in render(helm, "taskfan"))


def test_helm_template_renders_the_same_objects_every_time_but_for_generated_secrets(helm: Path) -> None:
    def without_secret_data(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in o.items() if not (o["kind"] == "Secret" and k == "data")} for o in objects]

    first, second = render(helm, "taskfan"), render(helm, "taskfan")
    assert without_secret_data(first) == without_secret_data(second)  # the Deployments' checksums included
    assert [o for o in first if o["kind"] == "Secret"] != [o for o in second if o["kind"] == "Secret"]
    # Every secret given in values: the whole output is the same (what a GitOps tool diffing renders wants).
    given = ["--set", "secrets.existingSecret=mine", "--set", "secrets.appApiToken=x"]
    for app in (*APPS, "taskfan-cli", "my-subscriber"):
        given += ["--set", f"secrets.daprApiTokens.{app}=token-of-{app}"]
    assert render(helm, "taskfan", *given) == render(helm, "taskfan", *given)


def test_the_helm_test_pod_asks_both_doors_by_their_host_names(helm: Path) -> None:
    objects = run(helm, "template", "taskfan", CHART, "--namespace", NAMESPACE, "--show-only",
                  "templates/tests/doors.yaml").stdout
    by_kind = {o["kind"]: o for o in yaml.safe_load_all(objects) if o}
    assert {kind: o["metadata"]["annotations"]["helm.sh/hook"] for kind, o in by_kind.items()} == {
        "Pod": "test", "NetworkPolicy": "test"}  # the console's door opened for the test's pod alone, meanwhile
    pod = by_kind["Pod"]
    assert pod["spec"]["containers"][0]["command"][-2:] == [
        f"taskfan-ingest.{NAMESPACE}.svc:8080", f"taskfan-console.{NAMESPACE}.svc:8090"]


def test_every_deployment_is_probed_spread_and_has_a_disruption_budget(helm: Path, all_on: Path) -> None:
    for args in ((), ("-f", all_on)):
        objects = render(helm, "taskfan", *args)
        found = deployments(objects)
        budgets = {o["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]: o["spec"] for o in objects
                   if o["kind"] == "PodDisruptionBudget"}
        assert set(budgets) == set(found) == set(APPS)
        assert all(spec == {**spec, "maxUnavailable": 1} for spec in budgets.values())
        for name, deployment in found.items():
            pod = deployment["spec"]["template"]
            container = pod["spec"]["containers"][0]
            startup, liveness = container["startupProbe"], container["livenessProbe"]
            if name in ("ingest", "console"):  # by their /healthz, naming them in Host as clients must
                assert startup["httpGet"] == liveness["httpGet"] == container["readinessProbe"]["httpGet"], name
                assert liveness["httpGet"]["path"] == "/healthz"
            else:  # listening on 127.0.0.1 only: probed from inside the container
                assert startup["exec"] == liveness["exec"] == {"command": ["python3", "-m", "taskfan.probe"]}, name
            assert liveness["failureThreshold"] * liveness["periodSeconds"] == 60, name
            annotations = pod["metadata"]["annotations"]
            assert (annotations["dapr.io/sidecar-cpu-request"], annotations["dapr.io/sidecar-memory-limit"]) == (
                "50m", "512Mi"), name
            spread = pod["spec"]["topologySpreadConstraints"]
            assert spread[0]["topologyKey"] == "kubernetes.io/hostname", name
            assert spread[0]["labelSelector"]["matchLabels"]["app.kubernetes.io/name"] == name
        assert found["ingest"]["spec"]["replicas"] == found["workflow"]["spec"]["replicas"] == 2
        # Two consoles, rolled one at a time: the writer's lease hands the history over (no Recreate).
        assert found["console"]["spec"]["replicas"] == 2 and "strategy" not in found["console"]["spec"]
    off = render(helm, "taskfan", "--set", "podDisruptionBudget.enabled=false", "--set", "topologySpread=false")
    assert "PodDisruptionBudget" not in {o["kind"] for o in off}
    assert not any("topologySpreadConstraints" in d["spec"]["template"]["spec"] for d in deployments(off).values())


def test_the_consoles_own_pubsub_is_loaded_by_the_console_alone_and_hands_out_again_within_seconds(
        helm: Path) -> None:
    components = {o["metadata"]["name"]: o for o in render(helm, "taskfan") if o["kind"] == "Component"}
    own = components["console-pubsub"]
    assert own["scopes"] == ["console"]
    settings = {m["name"]: m.get("value") for m in own["spec"]["metadata"]}
    assert (settings["processingTimeout"], settings["redeliverInterval"]) == ("10s", "2s")
    assert settings["subscriptionScopes"] == "console=tasks,outcomes,tasks-deadletter"
    assert settings["publishingScopes"] == "console="
    shared = {m["name"]: m.get("value") for m in components["pubsub"]["spec"]["metadata"]}
    # The console subscribes through its own component only: through the shared one a second group member would
    # take deliveries for a minute's processingTimeout.
    assert "console=;" in shared["subscriptionScopes"] and "console=tasks;" in shared["publishingScopes"]
