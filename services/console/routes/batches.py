"""The batches page (``/``: a page of them, filtered by state, id and start time) and a batch's page (its tasks,
by stage, a page at a time)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from services.console import pages, views
from services.console.parts import Parts
from services.console.routes.signin import may_act, role


def router(parts: Parts) -> APIRouter:
    routes = APIRouter()

    @routes.get("/", response_class=HTMLResponse)
    async def batches(request: Request, state: str = "", page: str = "1", q: str = "", since: str = "",
                      until: str = "") -> Response:
        asked = views.chosen(parts, state, page, q, since, until)
        if isinstance(asked, Response):
            return asked
        found, search = asked
        stream = "/events/batches" + pages.query(page=found.page, **pages.asked(state, search))
        return HTMLResponse(pages.batches_page(found, state, parts.watcher.throughput.rates(), stream,
                                               role=str(role(request) or ""), search=search))

    @routes.get("/batches/{batch_id}", response_class=HTMLResponse)
    async def batch_page(request: Request, batch_id: str, stage: str = "", page: str = "1") -> Response:
        if (refusal := views.stage_asked(stage)) is not None:
            return refusal
        view = await views.batch_view(parts, batch_id)
        shown = views.tasks_shown(view.tasks, stage, page)
        if isinstance(shown, Response):
            return shown
        stream = pages.batch_href(batch_id).replace("/batches/", "/events/batches/", 1) + pages.task_query(
            stage, shown.page)
        html = pages.batch_page(batch_id, view.row, shown, view.counts, stage, can_rerun=view.can_rerun,
                                trace_url=views.trace_url(parts, batch_id), stream=stream,
                                rerun=views.rerun_action(batch_id) if view.rerunnable and may_act(request) else None,
                                details_gone=views.details_gone(parts, batch_id), role=str(role(request) or ""))
        return HTMLResponse(html, status_code=200 if view.row is not None else 404)

    return routes
