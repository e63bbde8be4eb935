"""The chart's values schema (deploy/helm/taskfan/values.schema.json) describes every value of values.yaml with
its type, and the pipeline's steps as the pipeline's own model does; `helm` applies it (tests/k8s/test_chart.py)."""

import json
from pathlib import Path
from typing import Any

import yaml

from taskfan.pipeline import FIELD_TYPES, Spread, Step

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "taskfan"
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
TYPES = {"object": dict, "array": list, "string": str, "integer": int, "boolean": bool, "null": type(None)}


def undescribed(value: Any, schema: dict[str, Any], path: str) -> list[str]:
    """The paths of values.yaml that the schema does not describe, or whose default has another type."""
    kinds = schema.get("type", [])
    kinds = [kinds] if isinstance(kinds, str) else kinds
    if kinds and not any(isinstance(value, TYPES[k]) and not (k == "integer" and isinstance(value, bool))
                         for k in kinds):
        return [f"{path}: {value!r} is not {kinds}"]
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key in schema.get("properties", {}):
                found += undescribed(item, schema["properties"][key], f"{path}.{key}")
            elif isinstance(schema.get("additionalProperties"), dict):
                found += undescribed(item, schema["additionalProperties"], f"{path}.{key}")
            elif schema.get("additionalProperties") is False or "properties" in schema:
                found.append(f"{path}.{key}: not in the schema")
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            found += undescribed(item, schema["items"], f"{path}[{i}]")
    return found


def test_every_value_in_values_yaml_is_in_the_schema_with_its_type():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert undescribed(values, SCHEMA, "") == []
    assert SCHEMA["additionalProperties"] is False and set(SCHEMA["properties"]) == set(values)


def test_the_schemas_pipeline_step_is_the_pipelines_step():
    step = SCHEMA["properties"]["pipeline"]["properties"]["steps"]["items"]
    assert set(step["properties"]) == set(Step.model_fields) and step["additionalProperties"] is False
    assert set(step["required"]) == {name for name, f in Step.model_fields.items() if f.is_required()}
    assert step["properties"]["spread"]["enum"] == [s.value for s in Spread]
    assert step["properties"]["adds"]["additionalProperties"]["enum"] == list(FIELD_TYPES)
