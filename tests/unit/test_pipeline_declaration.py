"""The pipeline's declaration (pipeline.yaml, taskfan.pipeline): what it accepts, what it refuses and why, and
the Dapr resources derived from it (the launcher's and the committed ones alike)."""

import copy
from pathlib import Path

import pytest
import yaml

from taskfan import pipeline
from taskfan.pipeline import PipelineError, Spread
from taskfan.stack import pipeline_resources

ROOT = Path(__file__).resolve().parents[2]


def one(**step):
    return yaml.safe_dump({"steps": [{"name": "check", "app_id": "checker", "method": "check", **step}]})


def test_the_committed_pipeline_is_validate_enrich_score():
    declared = pipeline.load(ROOT / "pipeline.yaml")
    assert declared.names == ("validate", "enrich", "score")
    assert declared.app_ids == ("validator", "enricher", "scorer")
    assert declared.steps[0].may_reject and declared.steps[2].spread is Spread.BY_SLOTS
    assert declared.added_types() == {"tags": "strings", "score": "integer"}


@pytest.mark.parametrize("text, why", [
    ("steps: []", "at least 1 item"),
    ("steps: {}", "valid tuple"),
    ("[", "not YAML"),
    (one(name="a::b"), "steps.0.name: String should match pattern"),
    (one(app_id="scorer||x"), "steps.0.app_id: String should match pattern"),
    (one(method="score/../console-terminate"), "steps.0.method: String should match pattern"),
    (one(name="\udcff"), "steps.0.name"),
    (one(app_id="workflow"), "'workflow' is one of Taskfan's own apps"),
    (one(reads=["tags"]), "reads 'tags', which no earlier step adds"),
    (one(adds={"task_id": "string"}), "adds 'task_id', which the task already has or the outcome reserves"),
    (one(adds={"title": "string"}), "adds 'title'"),
    (one(adds={"score": "string"}), "`score` is the outcome's"),
    (one(adds={"x": "dict"}), "the types are string, strings, integer, number, boolean"),
    (one(name="done"), "names a stage of its own"),
    (one(spread="round-robin"), "steps.0.spread"),
    (one(extra=1), "steps.0.extra: Extra inputs are not permitted"),
    (yaml.safe_dump({"steps": [{"name": "a", "app_id": "x", "method": "m"},
                               {"name": "a", "app_id": "y", "method": "m"}]}),
     "two steps are named 'a'"),
    (yaml.safe_dump({"steps": [{"name": f"s{i}", "app_id": f"a{i}", "method": "m"} for i in range(21)]}),
     "at most 20 items"),
    ("steps: " + "[" * 200 + "]" * 200, "steps"),
])
def test_a_wrong_declaration_is_refused_with_what_is_wrong(text, why):
    with pytest.raises(PipelineError, match=None) as refused:
        pipeline.parse(text, "pipeline.yaml")
    assert why in str(refused.value) and str(refused.value).startswith("pipeline.yaml: ")


def test_a_missing_file_is_a_readable_error(tmp_path, monkeypatch):
    monkeypatch.setenv(pipeline.PIPELINE_FILE_ENV, str(tmp_path / "nowhere.yaml"))
    with pytest.raises(PipelineError, match="cannot read the pipeline's declaration"):
        pipeline.load()


def test_declared_types_are_checked_and_bounded():
    step = pipeline.parse(one(adds={"n": "integer", "x": "number", "ok": "boolean", "tags": "strings"})).steps[0]
    assert step.added({"n": 1, "x": 1.5, "ok": True, "tags": ["a"], "undeclared": 1}) == {
        "n": 1, "x": 1.5, "ok": True, "tags": ["a"]}
    for wrong in ({"n": 2**63}, {"n": True}, {"n": "1"}, {"x": float("inf")}, {"ok": 1}, {"tags": "a"}):
        with pytest.raises(ValueError, match="that is not"):
            step.added({"n": 1, "x": 1.0, "ok": True, "tags": [], **wrong})


def test_the_committed_dapr_resources_are_what_the_pipeline_derives():
    declared = pipeline.load(ROOT / "pipeline.yaml")
    pubsub = yaml.safe_load((ROOT / "components" / "pubsub.yaml").read_text())
    for item in pubsub["spec"]["metadata"]:
        if item["name"] in pipeline_resources.SCOPES:
            assert pipeline_resources.scopes_with_steps(item["value"], declared) == item["value"]
    config = yaml.safe_load((ROOT / "deploy" / "config.yaml").read_text())
    assert pipeline_resources.with_step_operations(copy.deepcopy(config), declared) == config


def test_a_step_of_your_own_gets_its_scopes_and_its_method_allowed():
    declared = pipeline.parse(one())
    assert pipeline_resources.scopes_with_steps("workflow=tasks;scorer=", declared) == "workflow=tasks;scorer=;checker="
    config = {"spec": {"accessControl": {"policies": [{"appId": "workflow", "operations": []},
                                                      {"appId": "console", "operations": [{"name": "/x"}]}]}}}
    policies = pipeline_resources.with_step_operations(config, declared)["spec"]["accessControl"]["policies"]
    assert policies == [{"appId": "workflow", "operations": [{"name": "/check", "action": "allow"}]},
                        {"appId": "console", "operations": [{"name": "/x"}]}]


def test_the_charts_pipeline_is_the_declared_one_and_its_resources_derive_from_it():
    values = yaml.safe_load((ROOT / "deploy" / "helm" / "taskfan" / "values.yaml").read_text())
    assert pipeline.Pipeline.model_validate(values["pipeline"]) == pipeline.load(ROOT / "pipeline.yaml")
    templates = ROOT / "deploy" / "helm" / "taskfan" / "templates"
    resources = (templates / "dapr-resources.yaml").read_text()
    assert "range .Values.pipeline.steps" in resources and "- {name: /{{ . }}, action: allow}" in resources
    for app in pipeline.load(ROOT / "pipeline.yaml").app_ids:  # no step app named by hand
        assert f"{app}=" not in resources
    assert "PIPELINE_FILE" in (templates / "services.yaml").read_text()
