"""``taskfan schemas``: the JSON Schema files of the events, generated from the pydantic models."""

from __future__ import annotations

import json
from pathlib import Path
from types import MappingProxyType

from taskfan.contracts import DeadLetter, Outcome, TaskBatch

SCHEMA_MODELS = MappingProxyType({"task-batch.schema.json": TaskBatch, "outcome.schema.json": Outcome,
                                  "dead-letter.schema.json": DeadLetter})


def schema_documents() -> dict[str, str]:
    return {name: json.dumps(model.model_json_schema(), indent=2) + "\n" for name, model in SCHEMA_MODELS.items()}


def cmd_schemas(out: str = "schemas") -> int:
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    for name, text in schema_documents().items():
        (target / name).write_text(text)
        print(target / name)
    return 0
