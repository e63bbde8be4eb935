"""What the pages, the JSON API and the streams show, read from the console's parts: a page of batches (or the
answer to a bad question about one), one batch as it stands. The book's details read its state store: those
calls run on a worker thread, not on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass

from fastapi.responses import Response

from services.console import pages
from services.console.history import Summary
from services.console.parts import Parts
from services.console.records import (
    MAX_BATCH_ID,
    MAX_TIME_CHARS,
    STATES,
    BatchesPage,
    BatchRow,
    Search,
    TaskPage,
    TaskRow,
    batch_row,
    batches_page,
    parse_time,
    stage_counts,
    stages,
    task_page,
    task_rows,
)
from taskfan.contracts import Task, TaskResult
from taskfan.http_doors import error

log = logging.getLogger(__name__)

PAGE_NUMBER = re.compile(r"[1-9][0-9]{0,8}")  # ASCII digits only (int() would take "٣" and " 3")
ID_PREFIX = re.compile(rf"[A-Za-z0-9._:-]{{0,{MAX_BATCH_ID}}}")  # what a batch id may begin with (BATCH_ID_PATTERN)
TIME_HINT = "an ISO 8601 time on the batch's start, such as 2026-12-02T15:00:00Z"


def listed(parts: Parts, state: str, page: int, search: Search | None = None) -> BatchesPage | None:
    return batches_page(parts.book.recent(), parts.watcher.now().answer, state, page, search=search)


def page_number(page: str) -> int:
    """The page number asked for; 0 when it is not a whole number from 1."""
    return int(page) if PAGE_NUMBER.fullmatch(page) else 0


def shown_text(text: str) -> str:
    """What was asked, quoted in an error: cut short, whatever is not Unicode text escaped."""
    return repr(text[:40].encode("utf-8", "backslashreplace").decode("utf-8")) + ("..." if len(text) > 40 else "")


def search_of(q: str = "", since: str = "", until: str = "") -> Search | Response:
    """The batches list's search (a batch id or its beginning, a time range on its start), or the answer to a bad
    question about it."""
    if not ID_PREFIX.fullmatch(q):
        return error(400, f"q is a batch id or its beginning: up to {MAX_BATCH_ID} of A-Z a-z 0-9 . _ : -, "
                          f"got {shown_text(q)}")
    times = {}
    for name, text in (("since", since), ("until", until)):
        times[name] = parse_time(text) if text else None
        if text and times[name] is None:
            return error(400, f"{name} is {TIME_HINT} (at most {MAX_TIME_CHARS} characters), got {shown_text(text)}")
    if times["since"] and times["until"] and times["since"] >= times["until"]:
        return error(400, "since is before until: the range holds no time")
    return Search(q=q, since=times["since"], until=times["until"])


def chosen(parts: Parts, state: str, page: str, q: str = "", since: str = "",
           until: str = "") -> tuple[BatchesPage, Search] | Response:
    """The page of batches asked for and the search that found them, or the answer to a bad question."""
    if state and state not in STATES:
        return error(400, f"state is one of {', '.join(STATES)}")
    search = search_of(q, since, until)
    if isinstance(search, Response):
        return search
    number = page_number(page)
    found = listed(parts, state, number, search) if number else None
    if found is None:
        last = listed(parts, state, 1, search).pages  # type: ignore[union-attr] - page 1 always exists
        return error(400, f"page is a whole number from 1 to {last}, got {page[:20]!r}")
    return found, search


def stage_asked(stage: str) -> Response | None:
    """The answer to a stage that is none (None: it is one, or none was asked for)."""
    if stage and stage not in stages():
        return error(400, f"stage is one of {', '.join(stages())}, got {shown_text(stage)}")
    return None


def tasks_shown(tasks: list[TaskRow], stage: str, page: str) -> TaskPage | Response:
    """The page of a batch's tasks asked for (of one stage if asked), or the answer to a bad question."""
    if (refusal := stage_asked(stage)) is not None:
        return refusal
    number = page_number(page)
    found = task_page(tasks, stage, number) if number else None
    if found is None:
        last = task_page(tasks, stage).pages  # type: ignore[union-attr] - page 1 always exists
        return error(400, f"page is a whole number from 1 to {last}, got {shown_text(page)}")
    return found


@dataclass
class BatchView:
    """One batch as the book and the workflow app have it (``row`` None: neither knows it)."""

    row: BatchRow | None
    tasks: list[TaskRow]
    counts: dict[str, int]  # tasks per stage
    can_rerun: bool  # the book still has its tasks

    @property
    def rerunnable(self) -> bool:
        """Finished, with its tasks kept: its failed tasks are offered a re-run one by one."""
        return self.can_rerun and self.row is not None and self.row.finished_at is not None


def _details(parts: Parts, summary: Summary | None) -> tuple[list[Task] | None, list[TaskResult] | None]:
    """The batch's tasks and results, as far as the book still has them (blocking: a state store read)."""
    if summary is None:
        return None, None
    try:
        tasks = parts.book.tasks(summary.batch_id)
        return tasks, parts.book.results(summary.batch_id) if summary.published else None
    except Exception as exc:  # noqa: BLE001 - shown without them; the next update reads again
        log.warning("the state store did not answer", extra={"batch_id": summary.batch_id, "error": str(exc)})
        return None, None


async def batch_view(parts: Parts, batch_id: str) -> BatchView:
    summary = parts.book.get(batch_id)
    answer = None
    if summary is None or not summary.published:  # published: the book has everything
        try:
            answer = await asyncio.to_thread(parts.workflow.batch, batch_id)
        except Exception as exc:  # noqa: BLE001 - shown as "unknown"; the next update asks again
            log.warning("the workflow app did not answer", extra={"batch_id": batch_id, "error": str(exc)})
    tasks, results = await asyncio.to_thread(_details, parts, summary)
    rows = task_rows(summary, tasks, results, answer.tasks if answer else {})
    return BatchView(row=batch_row(summary, answer), tasks=rows, counts=stage_counts(rows), can_rerun=tasks is not None)


def details_gone(parts: Parts, batch_id: str) -> bool:
    summary = parts.book.get(batch_id)
    return summary is not None and summary.details_dropped


def trace_url(parts: Parts, batch_id: str) -> str | None:
    """The console's page of the batch's trace, when there is one to show."""
    summary = parts.book.get(batch_id)
    return f"{pages.batch_href(batch_id)}/trace" if parts.traces is not None and summary and summary.trace_id else None


def rerun_action(batch_id: str) -> str:
    return pages.batch_href(batch_id) + "/rerun"
