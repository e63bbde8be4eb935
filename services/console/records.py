"""What the console knows and shows, as plain data and functions (no Dapr, no HTTP).

- ``BatchBook``: every batch the console saw on ``tasks`` (its tasks, for a re-run), its outcome from
  ``outcomes`` (each task's result) or its dead-letter reason; the most recent ``MAX_BATCHES``, in memory.
- ``batch_rows`` / ``task_rows``: the book merged with what the workflow app says now (``console_api``):
  each batch's state and counts, each task's stage.
- ``Throughput``: tasks finished per second over the last minutes, from samples of a counter.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from taskfan.contracts import Outcome, Task, TaskBatch, TaskResult

MAX_BATCHES = 1000
# Task payloads are kept for re-runs; beyond this many tasks held, the oldest batches' payloads are dropped.
MAX_TASKS_HELD = 200_000
STAGES = ("waiting", "validate", "enrich", "score", "done", "rejected", "failed")
STATES = ("queued", "running", "finished", "failed", "dead-lettered", "accepted")
MAX_BATCH_ID = 128


@dataclass
class BatchRecord:
    batch_id: str
    total: int
    seen_at: str  # when the console saw it on `tasks`, or learned of it
    tasks: list[Task] | None = None  # None once dropped (MAX_TASKS_HELD), or never seen
    outcome: Outcome | None = None
    dead_letter: str | None = None
    rerun_of: str | None = None
    trace_id: str | None = None  # of the trace Dapr started when the batch was published (its traceparent)


def utc_now() -> str:
    return datetime.now(UTC).isoformat()


class BatchBook:
    def __init__(self, max_batches: int = MAX_BATCHES, max_tasks_held: int = MAX_TASKS_HELD) -> None:
        self._lock = threading.Lock()
        self._records: OrderedDict[str, BatchRecord] = OrderedDict()  # oldest first
        self.max_batches = max_batches
        self.max_tasks_held = max_tasks_held

    def accepted(self, batch: TaskBatch, rerun_of: str | None = None, trace_id: str | None = None) -> None:
        """A batch on ``tasks``. The first content seen under an id is kept, as the workflow keeps it."""
        with self._lock:
            record = self._records.get(batch.batch_id)
            if record is None:
                record = self._add(batch.batch_id, len(batch.tasks))
            if record.tasks is None and record.outcome is None:
                record.tasks = list(batch.tasks)
                record.total = len(batch.tasks)
            record.rerun_of = record.rerun_of or rerun_of
            record.trace_id = record.trace_id or trace_id
            self._trim()

    def finished(self, outcome: Outcome) -> None:
        with self._lock:
            record = self._records.get(outcome.batch_id) or self._add(outcome.batch_id, outcome.total)
            record.outcome = outcome
            record.total = outcome.total

    def dead_lettered(self, batch_id: str, reason: str) -> None:
        with self._lock:
            record = self._records.get(batch_id)
            if record is not None and record.outcome is None:
                record.dead_letter = reason

    def get(self, batch_id: str) -> BatchRecord | None:
        with self._lock:
            return self._records.get(batch_id)

    def recent(self) -> list[BatchRecord]:
        """Newest first."""
        with self._lock:
            return list(reversed(self._records.values()))

    def _add(self, batch_id: str, total: int) -> BatchRecord:
        record = BatchRecord(batch_id=batch_id, total=total, seen_at=utc_now())
        self._records[batch_id] = record
        while len(self._records) > self.max_batches:
            self._records.popitem(last=False)
        return record

    def _trim(self) -> None:
        held = sum(len(r.tasks) for r in self._records.values() if r.tasks is not None)
        for record in self._records.values():  # oldest first
            if held <= self.max_tasks_held:
                break
            if record.tasks is not None:
                held -= len(record.tasks)
                record.tasks = None


@dataclass
class SpanRow:
    service: str
    operation: str
    start_ms: float  # from the trace's first span
    duration_ms: float
    depth: int
    error: bool


def span_rows(trace: dict[str, Any]) -> list[SpanRow]:
    """A Jaeger trace (its query API's ``data[0]``) as rows in start order, indented under their parents."""
    spans = trace.get("spans") or []
    processes = trace.get("processes") or {}
    if not spans:
        return []
    first = min(span["startTime"] for span in spans)
    ids = {span["spanID"] for span in spans}
    parent = {span["spanID"]: next((ref["spanID"] for ref in span.get("references") or []
                                    if ref.get("refType") == "CHILD_OF" and ref.get("spanID") in ids), None)
              for span in spans}

    def depth(span_id: str) -> int:
        seen = 0
        while (span_id := parent.get(span_id)) is not None and seen < 50:  # type: ignore[assignment]
            seen += 1
        return seen

    rows = []
    for span in sorted(spans, key=lambda s: s["startTime"]):
        tags = {tag.get("key"): tag.get("value") for tag in span.get("tags") or []}
        rows.append(SpanRow(service=str(processes.get(span.get("processID"), {}).get("serviceName", "?")),
                            operation=str(span.get("operationName", "")), start_ms=(span["startTime"] - first) / 1000,
                            duration_ms=span.get("duration", 0) / 1000, depth=depth(span["spanID"]),
                            error=tags.get("error") in (True, "true") or tags.get("otel.status_code") == "ERROR"))
    return rows


def rerun_id(batch_id: str, what: str) -> str:
    """A new batch id for a re-run: never one used before (a random part), within the id's limits."""
    suffix = f".{what}-{secrets.token_hex(3)}"
    base = re.sub(r"\.(rerun|retry)-[0-9a-f]{6}$", "", batch_id)[: MAX_BATCH_ID - len(suffix)]
    return base + suffix


def failed_tasks(record: BatchRecord) -> list[Task]:
    """The tasks of a finished batch whose result is ``failed``, for a re-run of them alone."""
    if record.outcome is None or record.tasks is None:
        return []
    failed = {r.task_id for r in record.outcome.results if r.status == "failed"}
    return [task for task in record.tasks if task.task_id in failed]


# --- merged views ------------------------------------------------------------------------------------------


@dataclass
class BatchRow:
    batch_id: str
    state: str
    total: int
    done: int = 0
    completed: int = 0
    rejected: int = 0
    failed: int = 0
    position: int | None = None  # in the admission queue, 1 = next
    started_at: str | None = None
    finished_at: str | None = None
    average_score: float | None = None
    note: str | None = None  # a dead-letter reason
    rerun_of: str | None = None

    @property
    def percent(self) -> int:
        return 100 if self.total == 0 else int(100 * self.done / self.total)

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "percent": self.percent}


def finished_row(record: BatchRecord) -> BatchRow | None:
    """A batch the book can answer for alone: published (its outcome), dead-lettered, or only seen."""
    if record.outcome is not None:
        o = record.outcome
        return BatchRow(batch_id=o.batch_id, state="failed" if o.failed else "finished", total=o.total, done=o.total,
                        completed=o.completed, rejected=o.rejected, failed=o.failed, started_at=o.started_at,
                        finished_at=o.finished_at, average_score=o.average_score, rerun_of=record.rerun_of)
    if record.dead_letter is not None:
        return BatchRow(batch_id=record.batch_id, state="dead-lettered", total=record.total, started_at=record.seen_at,
                        note=record.dead_letter, rerun_of=record.rerun_of)
    return None


def running_row(batch_id: str, entry: dict[str, Any], total: int, since: str | None) -> BatchRow:
    return BatchRow(batch_id=batch_id, state="running", total=total, started_at=since,
                    **{k: int(entry.get(k) or 0) for k in ("done", "completed", "rejected", "failed")})


def batch_rows(book: BatchBook, now: dict[str, Any]) -> list[BatchRow]:
    """Every batch: running and queued ones as the workflow app says (``console-batches``), the others as
    the book has them; running, then queued, then the rest newest first."""
    rows: dict[str, BatchRow] = {}
    for entry in now.get("queued", []):
        rows[entry["batch_id"]] = BatchRow(batch_id=entry["batch_id"], state="queued", total=entry["total"],
                                           position=entry["position"], started_at=entry["since"])
    for entry in now.get("running", []):
        rows[entry["batch_id"]] = running_row(entry["batch_id"], entry, entry["total"], entry["since"])
    others: list[BatchRow] = []
    for record in book.recent():
        row = finished_row(record)
        if row is not None and record.outcome is not None:
            rows.pop(record.batch_id, None)  # published: the ledger may not have caught up yet
        if record.batch_id in rows:
            rows[record.batch_id].rerun_of = record.rerun_of
            continue
        # seen on `tasks`, not (yet, or any more) in the ledger, no outcome yet
        others.append(row or BatchRow(batch_id=record.batch_id, state="accepted", total=record.total,
                                      started_at=record.seen_at, rerun_of=record.rerun_of))
    live = sorted(rows.values(), key=lambda r: (r.state != "running", r.position or 0, r.started_at or ""))
    return live + others


def batch_row(record: BatchRecord | None, answer: dict[str, Any] | None) -> BatchRow | None:
    """One batch from the book and the workflow app's answer about it (``console-batch``)."""
    if record is not None and record.outcome is not None:
        return finished_row(record)
    answer = answer or {}
    counts = answer.get("counts") or {}
    total = int(counts.get("total") or (record.total if record else 0))
    batch_id = record.batch_id if record else str(answer.get("batch_id"))
    rerun_of = record.rerun_of if record else None
    if answer.get("position"):
        return BatchRow(batch_id=batch_id, state="queued", total=total, position=answer["position"],
                        started_at=answer.get("since"), rerun_of=rerun_of)
    if answer.get("status") in ("running", "pending", "suspended"):
        row = running_row(batch_id, counts, total, answer.get("since"))
        row.rerun_of = rerun_of
        return row
    if answer.get("status"):  # ended (completed, terminated, failed): the outcome is on its way
        return BatchRow(batch_id=batch_id, state=str(answer["status"]), total=total, started_at=answer.get("since"),
                        rerun_of=rerun_of, **{k: int(counts.get(k) or 0) for k in ("done", "completed", "rejected",
                                                                                      "failed")})
    if record is not None:
        return finished_row(record) or BatchRow(batch_id=batch_id, state="accepted", total=record.total,
                                                started_at=record.seen_at, rerun_of=rerun_of)
    return None


@dataclass
class TaskRow:
    task_id: str
    stage: str
    title: str = ""
    score: int | None = None
    tags: list[str] = field(default_factory=list)
    issues: list[str] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _from_result(result: TaskResult, title: str = "") -> TaskRow:
    stage = "done" if result.status == "completed" else result.status
    return TaskRow(task_id=result.task_id, stage=stage, title=title, score=result.score, tags=list(result.tags),
                   issues=list(result.issues), error=result.error)


def task_rows(record: BatchRecord | None, moving: dict[str, dict[str, Any]]) -> list[TaskRow]:
    """Each task's stage, in the batch's order: its result from the outcome once published; until then where
    the workflow app's live view (``moving``) has it, else waiting."""
    titles = {t.task_id: t.title for t in (record.tasks or [])} if record else {}
    if record is not None and record.outcome is not None:
        return [_from_result(r, titles.get(r.task_id, "")) for r in record.outcome.results]
    order = [t.task_id for t in record.tasks] if record is not None and record.tasks is not None else []
    order += sorted(set(moving) - set(order))
    rows = []
    for task_id in order:
        now = moving.get(task_id, {})
        rows.append(TaskRow(task_id=task_id, stage=str(now.get("stage", "waiting")), title=titles.get(task_id, ""),
                            score=now.get("score"), tags=list(now.get("tags") or []),
                            issues=list(now.get("issues") or []), error=now.get("error")))
    return rows


def stage_counts(rows: list[TaskRow]) -> dict[str, int]:
    counts = dict.fromkeys(STAGES, 0)
    for row in rows:
        counts[row.stage] = counts.get(row.stage, 0) + 1
    return counts


# --- throughput --------------------------------------------------------------------------------------------


class Throughput:
    """Rates from samples of an ever-growing counter (tasks finished), over the last ``window_s``.

    A counter that goes down was reset (its process restarted): the sample after counts from zero.
    """

    def __init__(self, window_s: float = 600.0) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()

    def sample(self, at: float, counter: int) -> None:
        with self._lock:
            self._samples.append((at, counter))
            while self._samples and at - self._samples[0][0] > self.window_s:
                self._samples.popleft()

    def rates(self) -> list[tuple[float, float]]:
        """(time, tasks per second over the interval ending then), oldest first."""
        with self._lock:
            samples = list(self._samples)
        rates = []
        for (t0, c0), (t1, c1) in zip(samples, samples[1:], strict=False):
            if t1 > t0:
                rates.append((t1, (c1 - c0 if c1 >= c0 else c1) / (t1 - t0)))
        return rates


def per_replica_rates(before: dict[str, Any], after: dict[str, Any], seconds: float) -> dict[str, float]:
    """Tasks scored per second by each replica between two ``console-batches`` answers."""
    was = {s["replica"]: s["scored"] for s in before.get("scorers", [])}
    rates = {}
    for scorer in after.get("scorers", []):
        delta = scorer["scored"] - was.get(scorer["replica"], scorer["scored"])
        rates[scorer["replica"]] = max(0.0, delta) / seconds if seconds > 0 else 0.0
    return rates
