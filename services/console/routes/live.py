"""Live updates: server-sent event streams (``/events/...``) that keep an open page current. Each one asks again
every STREAM_INTERVAL_S (what it reads, the watcher's last answer and the book, costs the workflow app nothing
more per page; a batch's page asks the workflow app about its batch) and sends the page's parts that changed,
rendered by the same partials as the page (``pages``); the page's script swaps them in.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from services.console import pages, views
from services.console.parts import Parts
from services.console.records import BatchesPage, TaskPage, task_page
from services.console.routes.signin import may_act
from taskfan.http_doors import error

STREAM_INTERVAL_S = 1.0
KEEPALIVE_S = 15.0

Update = Callable[[], Awaitable[dict[str, Any]]]


def stream(request: Request, update: Update) -> StreamingResponse:
    """Server-sent events: ``update()`` every STREAM_INTERVAL_S, sent when it changed; a comment keeps the
    connection open otherwise."""

    async def events() -> AsyncIterator[str]:
        last, quiet = "", 0.0
        while not await request.is_disconnected():
            data = json.dumps(await update())
            if data != last:
                last, quiet = data, 0.0
                yield f"data: {data}\n\n"
            elif (quiet := quiet + STREAM_INTERVAL_S) >= KEEPALIVE_S:
                quiet = 0.0
                yield ": still here\n\n"
            await asyncio.sleep(STREAM_INTERVAL_S)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"cache-control": "no-store", "x-accel-buffering": "no"})


class TaskRowsSent:
    """A batch page's task rows as its stream last sent them: the next update sends only the rows that changed,
    or all of them when the rows themselves changed (the tasks became known, others reached the stage shown)."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.rows: dict[int, str] = {}

    def changes(self, order: list[str], rows: dict[int, str]) -> str | dict[int, str]:
        """Every row's HTML, in one string, when the rows changed (``order``: their task ids); else the rows
        whose HTML changed, by their index in the batch."""
        if order != self.order:
            self.order, self.rows = order, dict(rows)
            return "".join(rows.values())
        changed = {i: html for i, html in rows.items() if self.rows.get(i) != html}
        self.rows.update(changed)
        return changed


def router(parts: Parts) -> APIRouter:
    routes = APIRouter(prefix="/events")

    def chart() -> str:
        return pages.throughput_chart(parts.watcher.throughput.rates())

    @routes.get("/batches")
    async def batches_events(request: Request, state: str = "", page: str = "1", q: str = "", since: str = "",
                             until: str = "") -> Response:
        asked = views.chosen(parts, state, page, q, since, until)
        if isinstance(asked, Response):
            return asked
        first, search = asked

        async def update() -> dict[str, Any]:
            # The page asked for may since have gone (batches left the history, a filter's rows ended): empty.
            now = views.listed(parts, state, first.page, search) or BatchesPage(rows=[], page=first.page,
                                                                                 pages=first.pages)
            return {"parts": {"rows": pages.batch_table_body(now.rows), "pager": pages.pager(now, state, search),
                              "chart": chart()}}

        return stream(request, update)

    @routes.get("/batches/{batch_id}")
    async def batch_events(request: Request, batch_id: str, stage: str = "", page: str = "1") -> Response:
        if (refusal := views.stage_asked(stage)) is not None:
            return refusal
        number = views.page_number(page)
        if not number:
            return error(400, f"page is a whole number from 1, got {views.shown_text(page)}")
        sent = TaskRowsSent()
        can_act = may_act(request)  # a viewer's page gets no buttons

        async def update() -> dict[str, Any]:
            view = await views.batch_view(parts, batch_id)
            rerun = views.rerun_action(batch_id) if view.rerunnable and can_act else None
            # The page asked for may have no rows (yet: the batch's tasks are not known; or no more).
            shown = task_page(view.tasks, stage, number) or TaskPage(rows=[], page=number, pages=number, matching=0)
            summary = pages.batch_summary(view.row, view.counts, views.trace_url(parts, batch_id),
                                          views.details_gone(parts, batch_id))
            page_parts = {"summary": summary, "actions": pages.batch_actions(view.row, view.can_rerun, can_act),
                          "task-pager": pages.task_pager(shown, stage)}
            rows = sent.changes([task.task_id for _, task in shown.rows],
                                {i: pages.task_row(i, task, rerun) for i, task in shown.rows})
            if isinstance(rows, str):  # the table's body, whole
                return {"parts": {**page_parts, "tasks": rows}}
            return {"parts": page_parts, "tasks": rows}

        return stream(request, update)

    @routes.get("/replicas")
    async def replicas_events(request: Request) -> StreamingResponse:
        async def update() -> dict[str, Any]:
            return {"parts": {**pages.replicas_parts(parts.watcher.now()), "chart": chart()}}

        return stream(request, update)

    return routes
