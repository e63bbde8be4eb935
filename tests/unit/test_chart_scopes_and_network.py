"""The chart's locks that only a cluster enforces, read from its templates: each Dapr component is scoped to
the app ids whose code uses it, and the namespace's NetworkPolicies start from a default deny (the cluster
tests, tests/k8s/test_taskfan.py, try them as an intruder)."""

import re
from pathlib import Path

import yaml

from taskfan.contracts import BATCHES_STORE, CONSOLE_PUBSUB, PUBSUB, STATESTORE

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "taskfan"
# How a service's code reaches each component: the constant itself, or the module that holds its calls.
USES = {STATESTORE: "STATESTORE", BATCHES_STORE: "batch_records", PUBSUB: "PUBSUB", CONSOLE_PUBSUB: "CONSOLE_PUBSUB"}


def users_in_code(marker: str) -> set[str]:
    return {app.name for app in (ROOT / "services").iterdir() if app.is_dir()
            and any(marker in source.read_text() for source in app.rglob("*.py"))}


def chart_scopes() -> dict[str, set[str]]:
    """Each component's `scopes:` in dapr-resources.yaml (the pub/sub's own apps, before the values' outside ids)."""
    text = (CHART / "templates" / "dapr-resources.yaml").read_text()
    pubsub_apps = re.search(r'\$pubsubApps := concat \(list ((?:"[\w-]+" ?)+)\)', text).group(1)
    found = {PUBSUB: set(re.findall(r'"([\w-]+)"', pubsub_apps))}
    for name, scopes in re.findall(r"kind: Component\nmetadata:\n  name: ([\w-]+)\n(?:  .*\n)*?scopes: (.*)\n", text):
        if name != PUBSUB:
            found[name] = set(yaml.safe_load(scopes))
    return found


def test_every_component_is_scoped_to_the_apps_whose_code_uses_it():
    text = (CHART / "templates" / "dapr-resources.yaml").read_text()
    assert text.count("kind: Component") == len(chart_scopes()) == len(USES)
    assert "scopes: {{ toJson $pubsubApps }}" in text and ".Values.outcomeSubscribers .Values.tasksPublishers" in text
    for component, marker in USES.items():
        assert chart_scopes()[component] == users_in_code(marker), component


def test_the_namespace_denies_ingress_by_default_and_the_switch_is_on():
    values = yaml.safe_load((CHART / "values.yaml").read_text())["networkPolicy"]
    assert values["enabled"] is True and values["consoleFrom"] == []
    assert values["prometheus"] == {"namespaceSelector": None, "podSelector": None}  # none unless named
    policies = (CHART / "templates" / "network-policies.yaml").read_text()
    assert "{{- if .Values.networkPolicy.enabled }}" in policies
    assert re.search(r"name: \{\{ \.Release\.Name \}\}-default-deny\n(?:  .*\n)*spec:\n  podSelector: \{\}\n"
                     r"  policyTypes: \[Ingress\]\n", policies)
    for port in ("6379", "50002", "9090", ".Values.services.workflow.metricsPort"):
        assert f"port: {port}" in policies or f"port: {{{{ {port} }}}}" in policies, port
