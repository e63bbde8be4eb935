"""Typed inputs and outputs of the workflows and activities: one model each, defined once.

The Dapr workflow SDK turns a dict into the model a workflow or activity annotates as its input, and
writes models as plain JSON, so histories stay language-neutral. A workflow reads an activity's
result back with ``Model.model_validate``: the engine hands it plain JSON.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, JsonValue, model_validator

from taskfan.contracts import TaskResult, empty


class BatchInput(BaseModel):
    """Input of ``process_batch``; settings travel in it so that replays stay deterministic."""

    batch_id: str
    total: int
    chunks: int
    max_in_flight: int
    # The global cap on tasks in progress (admission control); 0: admitted at once.
    max_tasks_in_progress: int = 0
    # The batch's trace (W3C), from its publish: each chunk's step calls carry it (taskfan.tracing).
    traceparent: str | None = None
    # The intake already took its slots in the admission ledger: no admission step.
    admitted: bool = False


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
    """One chunk of a batch."""

    batch_id: str
    index: int


class BatchRef(BaseModel):
    """A batch's state-store footprint."""

    batch_id: str
    chunks: int


class PublishInput(BatchRef):
    started_at: str
    finished_at: str
    reruns: int = 0  # the most runs again of any chunk: the progress keys to delete


class BatchFailure(BaseModel):
    """Input of ``dead_letter_batch``: a batch that cannot get an outcome, and why."""

    batch_id: str
    total: int
    reason: str


class WaitingTask(BaseModel):
    """A task of a chunk still in the chain: the step it is at, the calls of that step already failed, and
    what earlier steps added to it (pipeline.yaml, ``adds``)."""

    task_id: str
    step: str
    attempts: int = 0
    added: dict[str, Any] = empty(dict)

    @model_validator(mode="before")
    @classmethod
    def _from_before_the_declared_pipeline(cls, data: Any) -> Any:
        # Progress saved by a worker of before pipeline.yaml kept the enricher's tags apart.
        if isinstance(data, dict) and "tags" in data:
            data = {**data, "added": {"tags": data["tags"]} if data["tags"] is not None else {}}
            del data["tags"]
        return data


class ChunkRun(BaseModel):
    """Input of ``run_chunk``: a chunk's tasks through the chain, from the start (``run`` 0) or again for
    the tasks run ``run - 1`` left waiting.

    Ids only, in history: the activity reads the tasks' text, and what an earlier run finished or left
    waiting, from the state store, so workflow history stays small whatever the tasks' size or script.
    """

    chunk: ChunkRef
    run: int = 0
    # The batch's only chunk: once it is done, publish the outcome too (started_at of the batch).
    publish_since: str | None = None
    traceparent: str | None = None  # the batch's trace: its step calls carry it


class ChunkRunResult(BaseModel):
    """Output of ``run_chunk``: the chunk's counts once every task finished (its results are saved), and
    the outcome if it published it; else how many tasks wait for another run, and the pause before it."""

    summary: ChunkSummary | None = None
    outcome: OutcomeSummary | None = None
    waiting: int = 0
    pause_ms: int = 0


class ChunkProgress(BaseModel):
    """What a run of a chunk left for the next (in the state store): results so far, tasks still waiting."""

    finished: list[TaskResult]
    waiting: list[WaitingTask]


class SaveResultsInput(BaseModel):
    """Input of ``save_chunk_results``: a chunk whose ``run_chunk`` failed, and why: its tasks are failed."""

    batch_id: str
    index: int
    error: str


class ChunkSummary(BaseModel):
    """Counts of one chunk: in ``run_chunk``'s result and the output of ``save_chunk_results``."""

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


class OutcomeRecord(BaseModel):
    """A batch's outcome in the state store (``outcome_key``), written before it is published: whoever
    publishes it (the workflow, a run again after a crash, the reconciler) publishes this event, so a
    subscriber sees at most a redelivery under the same id, never a second outcome. Once published, only
    the summary is kept, as the record that the batch has had its outcome."""

    summary: OutcomeSummary
    event: str | None = None  # the outcome CloudEvent, until it is published
    published: bool = False
    # How the batch's workflow ended (a Dapr runtime status): what `taskfan status` and the console show once
    # Dapr has purged the workflow's state (its retention policy) and this record answers for it.
    ended: str = "COMPLETED"

    def progress(self) -> BatchProgress:
        done = self.summary
        return BatchProgress(total=done.total, done=done.total, completed=done.completed, rejected=done.rejected,
                             failed=done.failed)



# --- the console's questions: what ``console_api`` answers and ``services/console`` reads -------------------------


class RunningBatch(ChunkSummary):
    batch_id: str
    total: int
    since: str | None = None


class QueuedBatch(BaseModel):
    batch_id: str
    total: int
    since: str | None = None
    position: int  # in the admission queue, 1 = next


class ScorerReplica(BaseModel):
    """One replica of a step spread by slots, as its answers describe it (``scoring.ScorerView``)."""

    replica: str
    slots: int
    seen_s_ago: float
    scored: int  # through this workflow process
    in_progress: int


class StepReplica(BaseModel):
    """One replica of a step app, as its answers name it (``replicas.StepReplicas``)."""

    replica: str
    seen_s_ago: float
    answered: int  # tasks, through this workflow process


class StepReplicasNow(BaseModel):
    """A declared step (pipeline.yaml) and its replicas heard from lately."""

    step: str
    app_id: str
    replicas: list[StepReplica] = empty(list)


class ProcessReport(BaseModel):
    """What one workflow process alone knows (its own calls and runs), as it last wrote it to the state store
    (``processes``): every process reads all of them to answer the console for the whole app."""

    process: str
    at: float  # when written, seconds since the epoch
    finished_tasks: int = 0
    stages: dict[str, int] = empty(dict)
    scorers: list[ScorerReplica] = empty(list)
    calls_in_flight: int = 0
    steps: list[StepReplicasNow] = empty(list)


class WorkflowProcess(BaseModel):
    """A workflow process heard from lately, for the console's replicas page."""

    process: str
    seen_s_ago: float
    finished_tasks: int  # ever, by this process
    in_steps: int = 0  # its tasks being called for now
    calls_in_flight: int = 0


class BatchesNow(BaseModel):
    """``console-batches``: running and queued batches with their counts; the stages, scorers and every step's
    replicas of the stack."""

    running: list[RunningBatch] = empty(list)
    queued: list[QueuedBatch] = empty(list)  # its head; ``queued_*`` count all of it
    queued_batches: int = 0
    queued_tasks: int = 0
    cap: int = 0
    finished_tasks: int = 0  # ever, by the processes heard from lately (``processes`` has each one's)
    stages: dict[str, int] = empty(dict)
    scorers: list[ScorerReplica] = empty(list)
    calls_in_flight: int = 0
    steps: list[StepReplicasNow] = empty(list)
    processes: list[WorkflowProcess] = empty(list)


class MovingTask(BaseModel):
    """A task of a running batch as the workflow process knows it: its stage, and its result's parts once it has
    one (``live.LiveBatches``)."""

    stage: str
    score: int | None = None
    tags: list[str] = empty(list)
    issues: list[str] = empty(list)
    error: str | None = None
    added: dict[str, JsonValue] = empty(dict)


class BatchNow(BaseModel):
    """``console-batch``: one batch as the workflow app knows it now. ``status`` None: no such batch."""

    batch_id: str
    status: str | None = None
    counts: BatchProgress | None = None
    position: int | None = None
    since: str | None = None
    tasks: dict[str, MovingTask] = empty(dict)


class Termination(BaseModel):
    """``console-terminate``'s answer."""

    terminated: bool
    status: str | None = None
    reason: str | None = None


class Purge(BaseModel):
    """``console-purge``'s answer. ``known``: the workflow app had something of the batch (its workflow, its
    outcome record or its batch-id record); ``refused``: why nothing was deleted (the batch has not ended)."""

    purged: bool
    known: bool = False
    status: str | None = None
    refused: str | None = None
