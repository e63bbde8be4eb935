"""A batch's trace page: its spans from the tracing backend (Jaeger), as a waterfall."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from services.console import pages
from services.console.parts import Parts
from services.console.records import span_rows
from services.console.routes.signin import role
from taskfan.http_doors import error


def router(parts: Parts) -> APIRouter:
    routes = APIRouter()

    @routes.get("/batches/{batch_id}/trace", response_class=HTMLResponse)
    async def trace_page(request: Request, batch_id: str) -> Response:
        summary = parts.book.get(batch_id)
        traces = parts.traces
        if traces is None or summary is None or summary.trace_id is None:
            return error(404, "no trace is known for this batch (tracing off, or the console did not see it "
                              "published)")
        try:
            found = await asyncio.to_thread(traces.get, summary.trace_id)
        except Exception as exc:  # noqa: BLE001
            return error(502, f"the tracing backend did not answer: {exc}")
        return HTMLResponse(pages.trace_page(batch_id, summary.trace_id, span_rows(found or {}),
                                             traces.url(summary.trace_id), waiting=not found,
                                             role=str(role(request) or "")))

    return routes
