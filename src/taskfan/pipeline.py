"""The pipeline's declaration (``pipeline.yaml``): the ordered steps a task goes through, typed.

One declaration, read by whoever needs to know the steps: the workflow service runs the chain from it, the
launcher renders the Dapr resources that name the step apps from it, the console and the metrics label
stages by it. ``PIPELINE_FILE`` points at another declaration (a stack of your own steps: README, "Your own
step"); the Helm chart carries a copy in its values, held to this file by a test.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError, model_validator

PIPELINE_FILE_ENV = "PIPELINE_FILE"
DEFAULT_FILE = Path(__file__).resolve().parents[2] / "pipeline.yaml"  # beside dapr.yaml in a checkout

# A task's own fields, which any step may read.
TASK_FIELDS = ("title", "description")
# Fields a step may not add: the task's own, and the outcome's bookkeeping of a result.
RESERVED = frozenset({"task_id", "status", "issues", "error", "added", *TASK_FIELDS})
# The outcome's own fields of a result that a step may fill (``TaskResult``); what else it adds goes in ``added``.
RESULT_FIELDS = ("score", "tags")
# Each type a step may add, bounded: an answer is input like any other (MAX_ADDED_BYTES bounds the rest).
FIELD_TYPES: Mapping[str, Any] = MappingProxyType({
    "string": str, "strings": list[str], "integer": Annotated[int, Field(ge=-(2**63), lt=2**63)],
    "number": Annotated[float, Field(allow_inf_nan=False)], "boolean": bool})
_ADAPTERS = MappingProxyType({kind: TypeAdapter(python) for kind, python in FIELD_TYPES.items()})

# Step names, app ids and methods: safe in a URL path, a metric label, a Dapr app id and a YAML scalar.
Name = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,39}$")]
FieldName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")]


class PipelineError(ValueError):
    pass


class Spread(StrEnum):
    """How a step's calls are spread over its app's replicas."""

    ONE_CALL = "one-call"  # a run's waiting tasks in one call; Dapr picks a replica at random
    BY_SLOTS = "by-slots"  # one task per call to a replica with a free slot (services/workflow/scoring.py)


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    app_id: Name
    method: Name
    reads: tuple[FieldName, ...] = TASK_FIELDS
    adds: dict[FieldName, str] = Field(default_factory=dict)
    may_reject: bool = False
    spread: Spread = Spread.ONE_CALL

    @model_validator(mode="after")
    def _known_types(self) -> Step:
        for field, kind in self.adds.items():
            if kind not in FIELD_TYPES:
                raise ValueError(f"step {self.name!r} adds {field!r} as {kind!r}: the types are "
                                 f"{', '.join(FIELD_TYPES)}")
        if self.name in {"waiting", "done", "rejected", "failed", "chunk"}:
            raise ValueError(f"{self.name!r} names a stage of its own (the console's, a failed chunk's)")
        return self

    def added(self, answer: dict[str, Any]) -> dict[str, Any]:
        """What an answer adds to its task, each declared field checked against its type (``ValueError``: a
        field missing or of another type, in words); fields not declared are dropped."""
        values = {}
        for field, kind in self.adds.items():
            if field not in answer:
                raise ValueError(f"answered no {field!r}")
            try:
                values[field] = _ADAPTERS[kind].validate_python(answer[field], strict=True)
            except ValidationError:
                raise ValueError(f"answered a {field!r} that is not {_IN_WORDS[kind]}") from None
        return values


_IN_WORDS = MappingProxyType({"string": "a string", "strings": "a list of strings", "integer": "a 64-bit integer",
                              "number": "a finite number", "boolean": "true or false"})


# The apps that are Taskfan's own and cannot serve a step.
OWN_APPS = frozenset({"ingest", "workflow", "console"})


class Pipeline(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: tuple[Step, ...] = Field(min_length=1, max_length=20)

    @model_validator(mode="after")
    def _consistent(self) -> Pipeline:
        names: set[str] = set()
        calls: set[tuple[str, str]] = set()
        known = set(TASK_FIELDS)
        for step in self.steps:
            if step.name in names:
                raise ValueError(f"two steps are named {step.name!r}")
            if (step.app_id, step.method) in calls:
                raise ValueError(f"two steps call {step.app_id}/{step.method}")
            if step.app_id in OWN_APPS:
                raise ValueError(f"step {step.name!r}: {step.app_id!r} is one of Taskfan's own apps")
            if missing := [f for f in step.reads if f not in known]:
                raise ValueError(f"step {step.name!r} reads {', '.join(map(repr, missing))}, which no earlier step "
                                 "adds and a task does not have")
            for field in step.adds:
                if field in RESERVED or field in known:
                    raise ValueError(f"step {step.name!r} adds {field!r}, which the task already has or the "
                                     "outcome reserves")
                known.add(field)
            names.add(step.name)
            calls.add((step.app_id, step.method))
        if "score" in known and self.added_types()["score"] != "integer":
            raise ValueError("`score` is the outcome's: a step adds it as an integer")
        if "tags" in known and self.added_types()["tags"] != "strings":
            raise ValueError("`tags` is the outcome's: a step adds it as strings")
        return self

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(step.name for step in self.steps)

    @property
    def app_ids(self) -> tuple[str, ...]:
        """Each step app once, in the order of the steps."""
        return tuple(dict.fromkeys(step.app_id for step in self.steps))

    def added_types(self) -> dict[str, str]:
        return {field: kind for step in self.steps for field, kind in step.adds.items()}

    def step(self, name: str) -> Step:
        return next(step for step in self.steps if step.name == name)

    def methods_of(self, app_id: str) -> tuple[str, ...]:
        return tuple(step.method for step in self.steps if step.app_id == app_id)


def parse(text: str, where: str = "pipeline") -> Pipeline:
    try:
        raw = yaml.safe_load(text)
        return Pipeline.model_validate(raw)
    except yaml.YAMLError as exc:
        raise PipelineError(f"{where}: not YAML: {exc}") from exc
    except ValueError as exc:
        from taskfan.contracts import describe_validation_error

        raise PipelineError(f"{where}: {describe_validation_error(exc)}") from exc


def path() -> Path:
    from taskfan.settings import Settings

    return Path(Settings.from_env().pipeline_file or DEFAULT_FILE)


def load(file: Path | None = None) -> Pipeline:
    """The declaration in ``file``, else ``PIPELINE_FILE``, else the checkout's ``pipeline.yaml``."""
    file = file or path()
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise PipelineError(f"cannot read the pipeline's declaration ({PIPELINE_FILE_ENV}): {exc}") from exc
    return parse(text, str(file))
