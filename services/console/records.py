"""What the console shows, as plain data and functions (no Dapr, no HTTP).

- ``batches_page`` / ``batch_row`` / ``task_rows``: what the console remembers (``history``: a summary of each
  batch, its details on demand) merged with what the workflow app says now (``console_api``): each batch's
  state and counts, a page of them at a time; each task's stage.
- ``Throughput``: tasks finished per second over the last minutes, from samples of a counter.
"""

from __future__ import annotations

import functools
import re
import secrets
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.console.history import Summary
from services.workflow.models import BatchesNow, BatchNow, MovingTask, RunningBatch
from taskfan import pipeline
from taskfan.contracts import Task, TaskResult


@functools.cache
def steps() -> tuple[str, ...]:
    """The pipeline's steps (pipeline.yaml), read once the console first needs them, not at import."""
    return pipeline.load().names


def stages() -> tuple[str, ...]:
    """Where a task can be: waiting between runs, at one of the pipeline's steps, or finished."""
    return ("waiting", *steps(), "done", "rejected", "failed")


STATES = ("queued", "running", "finished", "failed", "dead-lettered", "accepted")
MAX_BATCH_ID = 128
ROWS_PER_PAGE = 100
TASK_ROWS_PER_PAGE = 1000  # a batch's tasks, a page at a time: a 10,000-task batch in ten pages
MAX_TIME_CHARS = 40  # an ISO 8601 time asked for (since=, until=) is at most this long
# Its shape, checked before datetime.fromisoformat, which takes more (any separator, other digits).
ISO_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.,][0-9]{1,6})?)?"
                      r"(Z|[+-][0-9]{2}(:?[0-9]{2})?)?)?")


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


def failed_tasks(tasks: list[Task], results: list[TaskResult]) -> list[Task]:
    """The tasks of a finished batch whose result is ``failed``, for a re-run of them alone."""
    failed = {r.task_id for r in results if r.status == "failed"}
    return [task for task in tasks if task.task_id in failed]


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


def summary_state(summary: Summary) -> str:
    """The state of a batch the book can answer for alone."""
    if summary.published:
        return "failed" if summary.failed else "finished"
    return "accepted" if summary.dead_letter is None else "dead-lettered"


def summary_row(summary: Summary) -> BatchRow:
    """A batch as the book has it: published (its outcome's counts), dead-lettered, or only seen on ``tasks``."""
    if summary.published:
        return BatchRow(batch_id=summary.batch_id, state=summary_state(summary), total=summary.total,
                        done=summary.total, completed=summary.completed, rejected=summary.rejected,
                        failed=summary.failed, started_at=summary.started_at, finished_at=summary.finished_at,
                        average_score=summary.average_score, rerun_of=summary.rerun_of)
    return BatchRow(batch_id=summary.batch_id, state=summary_state(summary), total=summary.total,
                    started_at=summary.seen_at, note=summary.dead_letter, rerun_of=summary.rerun_of)


def running_row(entry: RunningBatch) -> BatchRow:
    return BatchRow(batch_id=entry.batch_id, state="running", total=entry.total, started_at=entry.since,
                    done=entry.done, completed=entry.completed, rejected=entry.rejected, failed=entry.failed)


def parse_time(text: str | None) -> datetime | None:
    """An ISO 8601 time as an aware datetime (one without a zone is UTC); None if it is not one."""
    if not text or len(text) > MAX_TIME_CHARS or not ISO_TIME.fullmatch(text):
        return None
    try:
        found = datetime.fromisoformat(text)
    except ValueError:
        return None
    return found if found.tzinfo is not None else found.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Search:
    """What the batches list is narrowed to, besides its state: a batch id or its beginning (``q``), and a time
    range on the batch's start (``since`` included, ``until`` excluded)."""

    q: str = ""
    since: datetime | None = None
    until: datetime | None = None

    def __bool__(self) -> bool:
        return bool(self.q or self.since or self.until)

    def matches(self, row: BatchRow) -> bool:
        if not row.batch_id.startswith(self.q):
            return False
        if self.since is None and self.until is None:
            return True
        started = parse_time(row.started_at)
        return started is not None and (self.since is None or started >= self.since) and (
            self.until is None or started < self.until)


@dataclass
class BatchesPage:
    rows: list[BatchRow]
    page: int  # from 1
    pages: int  # at least 1, even with no rows


def batches_page(recent: list[Summary], now: BatchesNow, state: str = "", page: int = 1,
                 per_page: int = ROWS_PER_PAGE, search: Search | None = None) -> BatchesPage | None:
    """Page ``page`` of every batch, of one state if asked (and those ``search`` finds): running and queued ones
    as the workflow app says (``console-batches``), then the others as the book has them (``recent``: newest
    first). None when there is no such page."""
    search = search or Search()
    live: dict[str, BatchRow] = {}
    for queued in now.queued:
        live[queued.batch_id] = BatchRow(batch_id=queued.batch_id, state="queued", total=queued.total,
                                         position=queued.position, started_at=queued.since)
    for running in now.running:
        live[running.batch_id] = running_row(running)
    others: list[Summary] = []
    for summary in recent:
        if summary.published:
            live.pop(summary.batch_id, None)  # published: the ledger may not have caught up yet
        if summary.batch_id in live:
            live[summary.batch_id].rerun_of = summary.rerun_of
        elif (not state or summary_state(summary) == state) and (not search or search.matches(summary_row(summary))):
            others.append(summary)  # seen on `tasks`, not (yet, or any more) in the ledger
    first = sorted((r for r in live.values() if (not state or r.state == state) and search.matches(r)),
                   key=lambda r: (r.state != "running", r.position or 0, r.started_at or ""))
    pages = max(1, -(-(len(first) + len(others)) // per_page))
    if not 1 <= page <= pages:
        return None
    start = (page - 1) * per_page
    rows = first[start:start + per_page]
    start_others = max(0, start - len(first))
    rows += [summary_row(s) for s in others[start_others:start_others + per_page - len(rows)]]
    return BatchesPage(rows=rows, page=page, pages=pages)


def batch_row(summary: Summary | None, answer: BatchNow | None) -> BatchRow | None:
    """One batch from the book and the workflow app's answer about it (``console-batch``)."""
    if summary is not None and summary.published:
        return summary_row(summary)
    if answer is None or answer.status is None and not answer.position:
        return summary_row(summary) if summary is not None else None
    counts = answer.counts
    total = counts.total if counts and counts.total else (summary.total if summary else 0)
    batch_id = summary.batch_id if summary else answer.batch_id
    rerun_of = summary.rerun_of if summary else None
    if answer.position:
        return BatchRow(batch_id=batch_id, state="queued", total=total, position=answer.position,
                        started_at=answer.since, rerun_of=rerun_of)
    done = {k: getattr(counts, k) if counts else 0 for k in ("done", "completed", "rejected", "failed")}
    # Running (or pending, suspended); else ended (completed, terminated, failed): the outcome is on its way.
    state = "running" if answer.status in ("running", "pending", "suspended") else str(answer.status)
    return BatchRow(batch_id=batch_id, state=state, total=total, started_at=answer.since, rerun_of=rerun_of,
                    **done)


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


def task_rows(summary: Summary | None, tasks: list[Task] | None, results: list[TaskResult] | None,
              moving: dict[str, MovingTask]) -> list[TaskRow]:
    """Each task's stage, in the batch's order: its result from the outcome once published (none when its
    results are no longer kept); until then where the workflow app's live view (``moving``) has it, else
    waiting. ``tasks``: the batch's, when kept (their order and titles)."""
    titles = {t.task_id: t.title for t in tasks or []}
    if summary is not None and summary.published:
        return [_from_result(r, titles.get(r.task_id, "")) for r in results or []]
    order = [t.task_id for t in tasks or []]
    order += sorted(set(moving) - set(order))
    rows = []
    for task_id in order:
        now = moving.get(task_id) or MovingTask(stage="waiting")
        rows.append(TaskRow(task_id=task_id, stage=now.stage, title=titles.get(task_id, ""), score=now.score,
                            tags=list(now.tags), issues=list(now.issues), error=now.error))
    return rows


@dataclass
class TaskPage:
    """A page of a batch's task rows: (index in the batch, task), of one stage if asked."""

    rows: list[tuple[int, TaskRow]]
    page: int  # from 1
    pages: int  # at least 1, even with no rows
    matching: int  # the tasks of the stage asked for (all of them, if none is)
    per_page: int = TASK_ROWS_PER_PAGE


def task_page(tasks: list[TaskRow], stage: str = "", page: int = 1,
              per_page: int = TASK_ROWS_PER_PAGE) -> TaskPage | None:
    """Page ``page`` of a batch's tasks, of one stage if asked; None when there is no such page."""
    matching = [(i, t) for i, t in enumerate(tasks) if not stage or t.stage == stage]
    pages = max(1, -(-len(matching) // per_page))
    if not 1 <= page <= pages:
        return None
    start = (page - 1) * per_page
    return TaskPage(rows=matching[start:start + per_page], page=page, pages=pages, matching=len(matching),
                    per_page=per_page)


def stage_counts(rows: list[TaskRow]) -> dict[str, int]:
    counts = dict.fromkeys(stages(), 0)
    for row in rows:
        counts[row.stage] = counts.get(row.stage, 0) + 1
    return counts


# --- throughput --------------------------------------------------------------------------------------------


class Throughput:
    """Rates from samples of ever-growing counters (tasks finished, one per workflow process), over the last
    ``window_s``.

    A counter that goes down was reset (its process restarted): the sample after counts from zero. A process
    that appears counts from its second sample (what it did before it was seen is not this interval's); one that
    is gone counts nothing.
    """

    def __init__(self, window_s: float = 600.0) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, dict[str, int]]] = deque()
        self._lock = threading.Lock()

    def sample(self, at: float, counters: dict[str, int]) -> None:
        with self._lock:
            self._samples.append((at, dict(counters)))
            while self._samples and at - self._samples[0][0] > self.window_s:
                self._samples.popleft()

    def rates(self) -> list[tuple[float, float]]:
        """(time, tasks per second over the interval ending then), oldest first."""
        with self._lock:
            samples = list(self._samples)
        rates = []
        for (t0, before), (t1, after) in zip(samples, samples[1:], strict=False):
            if t1 > t0:
                done = sum((c1 - before[p] if c1 >= before[p] else c1) for p, c1 in after.items() if p in before)
                rates.append((t1, done / (t1 - t0)))
        return rates


def per_replica_rates(before: BatchesNow, after: BatchesNow, seconds: float) -> dict[str, float]:
    """Tasks scored per second by each replica between two ``console-batches`` answers."""
    was = {s.replica: s.scored for s in before.scorers}
    rates = {}
    for scorer in after.scorers:
        delta = scorer.scored - was.get(scorer.replica, scorer.scored)
        rates[scorer.replica] = max(0.0, delta) / seconds if seconds > 0 else 0.0
    return rates
