"""Event contracts shared by every Taskfan service: names, limits and pydantic models.

The JSON Schema files under ``schemas/`` are generated from these models (``taskfan schemas``);
a unit test fails when they drift.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    SerializerFunctionWrapHandler,
    StringConstraints,
    TypeAdapter,
    model_serializer,
    model_validator,
)

PUBSUB = "pubsub"
# The console's own pub/sub over the same streams (only its sidecars load it): the one its history writer subscribes
# through, a delivery an ended stream took coming again within seconds (components/console-pubsub.yaml).
CONSOLE_PUBSUB = "console-pubsub"
STATESTORE = "statestore"
BATCHES_STORE = "batches"  # batch id -> content digest, shared by ingest and workflow
# The admission ledger (queued and running batches), in the workflow app's state store; `taskfan status`
# reads a queued batch's place from it. "~" keeps it apart from every batch's own keys.
ADMISSION_LEDGER_KEY = "taskfan~admission"
# Which workflow process answers for the ledger's batches now (services/workflow/reconciler.py).
RECONCILER_LEASE_KEY = "taskfan~reconciler-lease"
# Each workflow process's own figures, for the console (services/workflow/processes.py).
WORKFLOW_PROCESSES_KEY = "taskfan~workflow-processes"


def admission_ticket_key(batch_id: str) -> str:
    """A queued batch's place in the admission queue (``{"ticket", "total"}``), beside the ledger."""
    return f"{ADMISSION_LEDGER_KEY}~batch~{batch_id}"


def admission_queue_key(ticket: int) -> str:
    """The entry of the batch queued under ``ticket``."""
    return f"{ADMISSION_LEDGER_KEY}~queue~{ticket:012d}"


TASKS_TOPIC = "tasks"
OUTCOMES_TOPIC = "outcomes"
DEADLETTER_TOPIC = "tasks-deadletter"
# Where Dapr itself moves an event on `tasks` once its retries are exhausted; the workflow service
# turns each into a record on DEADLETTER_TOPIC in Taskfan's shape.
UNDELIVERABLE_TOPIC = "tasks-undeliverable"
# The Redis user of ingest's stream gauge and trimmer (services/ingest/capacity.py).
KEEPER_USER = "taskfan-keeper"
# The Redis user of the console's stream lag (services/console/streams.py): XINFO GROUPS and XLEN on TOPICS, no more.
CONSOLE_REDIS_USER = "taskfan-console"
CONSOLE_REDIS_COMMANDS = ("+xinfo|groups", "+xlen")
# Taskfan's streams: each bounded by STREAM_MAX_ENTRIES and trimmed by the keeper.
TOPICS = (TASKS_TOPIC, OUTCOMES_TOPIC, DEADLETTER_TOPIC, UNDELIVERABLE_TOPIC)

# The workflow app's methods the console calls (service invocation; only the console may).
CONSOLE_BATCHES, CONSOLE_BATCH, CONSOLE_TERMINATE = "console-batches", "console-batch", "console-terminate"
CONSOLE_PURGE = "console-purge"  # a finished batch's stored records deleted now, not at retention

TASK_BATCH_EVENT_TYPE = "io.taskfan.task-batch.v1"
OUTCOME_EVENT_TYPE = "io.taskfan.batch-outcome.v1"
DEADLETTER_EVENT_TYPE = "io.taskfan.dead-letter.v1"


class AppId(StrEnum):
    INGEST = "ingest"
    WORKFLOW = "workflow"
    VALIDATOR = "validator"
    ENRICHER = "enricher"
    SCORER = "scorer"
    CONSOLE = "console"


# Limits keep one batch (and so one workflow input) well under the 4 MiB gRPC message cap
# between the workflow SDK and its sidecar.
MAX_TASKS_PER_BATCH = 10_000
MAX_BATCH_BYTES = 2 * 1024 * 1024
MAX_TASK_ID_CHARS = 128
MAX_TITLE_CHARS = 200
MAX_DESCRIPTION_CHARS = 2_000
BATCH_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"

# The message limit between every app and its sidecar (gRPC both ways, and daprd's `--max-body-size`,
# `maxBodySize` in dapr.yaml): above the largest outcome the limits allow (10,000 results with 128-character
# ids, 300-character errors and MAX_ADDED_BYTES of what steps added, ~10 MB), so no valid batch meets a
# transport limit.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024

BatchId = Annotated[str, StringConstraints(pattern=BATCH_ID_PATTERN)]


def is_batch_id(text: str) -> bool:
    """Whether ``text`` could name a batch: only such text is ever turned into a Dapr instance id or key."""
    return re.fullmatch(BATCH_ID_PATTERN, text) is not None


def workflow_instance_id(batch_id: str) -> str:
    """The Dapr workflow instance of a batch: its id with every ``:`` written ``~`` (``order:7`` runs as
    ``order~7``). Dapr names an activity's actor ``<instance>::<task>::<generation>`` and reads the instance
    back as everything before the first ``::``, so an instance id holding ``::`` or ending in ``:`` never gets
    its activities' results. ``~`` is outside the batch-id alphabet: no two batch ids share an instance."""
    return batch_id.replace(":", "~")


def empty(kind: type[list[Any]] | type[dict[str, Any]], **field: Any) -> Any:
    """A field whose default is an empty list or dict, a new one per instance. (A default of ``[]`` or ``{}`` is
    deep-copied for every model made: that was a tenth of the workflow app's CPU, README "Where the time goes".)
    Its JSON Schema still says the default."""
    return Field(default_factory=kind, json_schema_extra={"default": kind()}, **field)


class _Model(BaseModel):
    # Unknown fields are an error: a misspelt "titel" must not silently become an empty title.
    model_config = ConfigDict(extra="forbid")


class Task(_Model):
    task_id: Annotated[str, StringConstraints(min_length=1, max_length=MAX_TASK_ID_CHARS)]
    title: Annotated[str, StringConstraints(max_length=MAX_TITLE_CHARS)]
    description: Annotated[str, StringConstraints(max_length=MAX_DESCRIPTION_CHARS)]


class _TaskList(_Model):
    tasks: list[Task] = Field(min_length=1, max_length=MAX_TASKS_PER_BATCH)

    @model_validator(mode="after")
    def _unique_task_ids(self) -> _TaskList:
        seen: set[str] = set()
        duplicates: list[str] = []
        for task in self.tasks:
            if task.task_id in seen and task.task_id not in duplicates:
                duplicates.append(task.task_id)
            seen.add(task.task_id)
        if duplicates:
            shown = ", ".join(repr(d) for d in duplicates[:5])
            raise ValueError(f"task ids must be unique within a batch; repeated: {shown}")
        return self


class BatchRequest(_TaskList):
    """What a client sends to ingest: the batch id is optional and assigned when missing."""

    batch_id: BatchId | None = None


class TaskBatch(_TaskList):
    """Data of the task-batch CloudEvent on topic ``tasks``."""

    batch_id: BatchId


TaskStatus = Literal["completed", "rejected", "failed"]


class TaskResult(_Model):
    task_id: str
    status: TaskStatus
    score: int | None = Field(description="0 when rejected, null when failed")
    tags: list[str] = empty(list)
    issues: list[str] = empty(list, description="why validation rejected the task")
    error: str | None = Field(default=None, description="why the task failed after retries")
    added: dict[str, JsonValue] = empty(dict, description="what steps of your own added to the task besides "
                                        "tags and score, by field (pipeline.yaml; README, 'Your own step'); "
                                        "left out when they added nothing")

    @model_serializer(mode="wrap")
    def _added_only_when_any(self, write: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = write(self)
        if not data.get("added"):
            data.pop("added", None)
        return data


# A list of tasks or of results read or written in one call of pydantic's core, not a model call per item (the
# workflow app's hot path: README, "Where the time goes").
TASK_LIST: TypeAdapter[list[Task]] = TypeAdapter(list[Task])
RESULT_LIST: TypeAdapter[list[TaskResult]] = TypeAdapter(list[TaskResult])


class Outcome(_Model):
    """Data of the outcome CloudEvent on topic ``outcomes``: one per batch."""

    batch_id: str
    total: int
    completed: int
    rejected: int
    failed: int
    average_score: float | None = Field(description="mean score of completed tasks; null if none")
    results: list[TaskResult] = Field(description="one per task, in input order")
    started_at: str
    finished_at: str


class ScoreRequest(BaseModel):
    """What the workflow sends the scorer for a task: its id and the tags enrichment gave it."""

    task_id: str
    tags: list[str]


# What all the steps together may add to one task (pipeline.yaml, `adds`), as JSON: 10,000 such tasks
# still fit one outcome well under MAX_MESSAGE_BYTES.
MAX_ADDED_BYTES = 512


class StepAnswer(BaseModel):
    """A step app's answer for one task; ``error`` is set when the call or the rule failed for it, ``issues``
    when the step rejects the task (a step that ``may_reject``). The fields the step adds (``adds`` in
    pipeline.yaml: ``tags``, ``score``, a field of your own) come as further fields of the answer."""

    model_config = ConfigDict(extra="allow")

    task_id: str
    error: str | None = None
    issues: list[str] = empty(list)


class SlotsReport(BaseModel):
    """What a step app says beside its results: which replica it is (every step app, ``dapr_app.step_method``;
    the console's replicas page). A replica of a ``by-slots`` step (pipeline.yaml, ``spread``: the scorer) also
    says, and all it says when it refuses a call marked ``may_refuse`` because its slots are busy (``busy``),
    its slots, its tasks accepted and not answered yet, the model's time per task. Fields
    beyond these are ignored; a value of the wrong type (strictly: no "3" for 3) makes the whole answer
    malformed."""

    model_config = ConfigDict(extra="ignore", strict=True)

    replica: Annotated[str, StringConstraints(max_length=253)] | None = None
    slots: int | None = Field(default=None, ge=1, le=1_000_000)
    in_progress: int | None = Field(default=None, ge=0, le=10**9)
    task_ms: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    busy: bool = False


class DeadLetter(_Model):
    """Data of the CloudEvent on ``tasks-deadletter``: an event the workflow service refused."""

    reason: str
    event: object = Field(description="the refused event: parsed JSON where possible, else text")
    received_at: str


def describe_validation_error(error: Exception) -> str:
    """One readable line naming every problem pydantic found, e.g. ``tasks.0.title: ...``."""
    from pydantic import ValidationError

    if not isinstance(error, ValidationError):
        return str(error)
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(p) for p in item["loc"]) or "body"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)
