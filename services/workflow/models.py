"""Typed inputs and outputs of the workflows and activities: one model each, defined once.

The Dapr workflow SDK turns a dict into the model a workflow or activity annotates as its input, and
writes models as plain JSON, so histories stay language-neutral. A workflow reads an activity's
result back with ``Model.model_validate``: the engine hands it plain JSON.
"""

from __future__ import annotations

from pydantic import BaseModel

from taskfan.contracts import ScoreRequest, StepAnswer, TaskResult


class BatchInput(BaseModel):
    """Input of ``process_batch``; settings travel in it so that replays stay deterministic."""

    batch_id: str
    total: int
    chunks: int
    max_in_flight: int
    # The global cap on tasks in progress (admission control); 0: admitted at once.
    max_tasks_in_progress: int = 0


class AdmissionRequest(BaseModel):
    """Input of ``request_admission``: a batch asking for its slots under the global cap."""

    batch_id: str
    slots: int
    total: int
    chunks: int
    cap: int
    since: str


class Admission(BaseModel):
    """Output of ``request_admission``: 0 when admitted, else the place in the queue (1 = next)."""

    position: int


class ChunkRef(BaseModel):
    """One chunk of a batch: input of ``process_chunk`` and ``validate_chunk``."""

    batch_id: str
    index: int


class BatchRef(BaseModel):
    """A batch's state-store footprint: input of ``forget_batch``."""

    batch_id: str
    chunks: int


class PublishInput(BatchRef):
    started_at: str
    finished_at: str


class StepInput(BaseModel):
    """Input of ``validate_tasks`` and ``enrich_tasks``: which of a chunk's tasks are still in the chain.

    Ids only: the activity reads the tasks' text from the state store, so no task text enters workflow
    history, whatever its size or script.
    """

    chunk: ChunkRef
    task_ids: list[str]


class BatchFailure(BaseModel):
    """Input of ``dead_letter_batch``: a batch that cannot get an outcome, and why."""

    batch_id: str
    total: int
    reason: str


class ScoreInput(BaseModel):
    """Input of ``score_tasks``."""

    tasks: list[ScoreRequest]


class StepOutput(BaseModel):
    """Output of the step activities: one answer per task, in input order."""

    answers: list[StepAnswer]


class FirstValidation(BaseModel):
    """Output of ``validate_chunk``: the chunk's task ids, in input order, and their first validation."""

    task_ids: list[str]
    validation: list[StepAnswer]


class SaveResultsInput(BaseModel):
    """Input of ``save_chunk_results``: the results, or why the chunk workflow itself failed."""

    batch_id: str
    index: int
    results: list[TaskResult] | None = None
    failed_chunk_error: str | None = None


class ChunkSummary(BaseModel):
    """Counts of one chunk: output of ``save_chunk_results`` and of ``process_chunk``."""

    done: int = 0
    completed: int = 0
    rejected: int = 0
    failed: int = 0


class BatchProgress(ChunkSummary):
    """The batch workflow's custom status, read by ``taskfan status`` and ``publish --wait``."""

    total: int
    queued: bool = False  # waiting for admission; `taskfan status` reads its place from the ledger

    def add(self, chunk: ChunkSummary) -> None:
        self.done += chunk.done
        self.completed += chunk.completed
        self.rejected += chunk.rejected
        self.failed += chunk.failed


class OutcomeSummary(BaseModel):
    """Output of ``publish_outcome`` and of ``process_batch``: the outcome without its results."""

    batch_id: str
    total: int
    completed: int
    rejected: int
    failed: int
    average_score: float | None
    started_at: str
    finished_at: str
