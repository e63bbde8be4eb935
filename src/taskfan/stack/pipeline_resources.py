"""The Dapr resources that name the pipeline's step apps, derived from its declaration (pipeline.yaml).

The launcher renders them into the stack's copy of components/ and deploy/config.yaml, so a step of your own
needs no edit there: the workflow app may call each step's method (access control; every other caller and
method stays denied), and each step app is listed in the pub/sub scopes with no topic (an app not listed
could use every unprotected topic). The committed files hold what this derives for the committed
pipeline.yaml, and the Helm chart derives the same from its values; a unit test holds all three together.
"""

from __future__ import annotations

from typing import Any

from taskfan.contracts import AppId
from taskfan.pipeline import Pipeline

SCOPES = ("publishingScopes", "subscriptionScopes")


def scopes_with_steps(value: str, pipeline: Pipeline) -> str:
    """A pub/sub scopes value (``app=topic,topic;app=``) with every step app listed, with no topic."""
    entries = [entry for entry in value.split(";") if entry]
    listed = {entry.split("=", 1)[0] for entry in entries}
    return ";".join([*entries, *(f"{app}=" for app in pipeline.app_ids if app not in listed)])


def step_operations(pipeline: Pipeline) -> list[dict[str, str]]:
    """What the workflow app may call: each step's method."""
    methods = dict.fromkeys(step.method for step in pipeline.steps)
    return [{"name": f"/{method}", "action": "allow"} for method in methods]


def with_step_operations(config: dict[str, Any], pipeline: Pipeline) -> dict[str, Any]:
    """The Configuration, its access policy for the workflow app allowing exactly the steps' methods."""
    policies = ((config.get("spec") or {}).get("accessControl") or {}).get("policies") or []
    for policy in policies:
        if policy.get("appId") == AppId.WORKFLOW:
            policy["operations"] = step_operations(pipeline)
    return config
