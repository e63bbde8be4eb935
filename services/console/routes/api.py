"""The console's JSON API (``/api/...``): what its pages show, for scripts (the token as ``Authorization:
Bearer``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from services.console import views
from services.console.parts import Parts
from taskfan.http_doors import error


def router(parts: Parts) -> APIRouter:
    routes = APIRouter(prefix="/api")
    watcher = parts.watcher

    @routes.get("/batches")
    async def batches_json(state: str = "", page: str = "1", q: str = "", since: str = "", until: str = "") -> Response:
        asked = views.chosen(parts, state, page, q, since, until)
        if isinstance(asked, Response):
            return asked
        found, _ = asked
        return JSONResponse({"batches": [r.as_dict() for r in found.rows], "page": found.page, "pages": found.pages,
                             "error": watcher.error})

    @routes.get("/batches/{batch_id}")
    async def batch_json(batch_id: str, stage: str = "", page: str = "1") -> Response:
        if (refusal := views.stage_asked(stage)) is not None:
            return refusal
        view = await views.batch_view(parts, batch_id)
        if view.row is None:
            return error(404, f"no batch {batch_id!r} is known to the console or the workflow app")
        shown = views.tasks_shown(view.tasks, stage, page)
        if isinstance(shown, Response):
            return shown
        summary = parts.book.get(batch_id)
        traces = parts.traces
        trace = traces.url(summary.trace_id) if traces is not None and summary and summary.trace_id else None
        return JSONResponse({"batch": view.row.as_dict(), "stages": view.counts,
                             "tasks": [t.as_dict() for _, t in shown.rows], "page": shown.page, "pages": shown.pages,
                             "tasks_matching": shown.matching, "trace": trace,
                             "details_kept": not views.details_gone(parts, batch_id)})

    @routes.get("/scorers")
    async def scorers_json() -> dict[str, Any]:
        now = watcher.now()
        return {"scorers": now.scorers(), "stages": now.answer.stages, "calls_in_flight": now.answer.calls_in_flight,
                "error": now.error,
                "throughput": [{"at": at, "per_s": rate} for at, rate in watcher.throughput.rates()]}

    @routes.get("/replicas")
    async def replicas_json() -> dict[str, Any]:
        now = watcher.now()
        return {"steps": [step.model_dump() for step in now.answer.steps],
                "workflow_processes": [process.model_dump() for process in now.answer.processes], "error": now.error}

    @routes.get("/streams")
    async def streams_json() -> dict[str, Any]:
        return watcher.now().streams.model_dump()

    return routes
