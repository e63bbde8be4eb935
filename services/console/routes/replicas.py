"""The replicas page: the scorers' slots and pace, every step's replicas, the streams' lag, the throughput."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.console import pages
from services.console.parts import Parts
from services.console.routes.signin import role


def router(parts: Parts) -> APIRouter:
    routes = APIRouter()

    @routes.get("/replicas", response_class=HTMLResponse)
    async def replicas_page(request: Request) -> Response:
        return HTMLResponse(pages.replicas_page(parts.watcher.now(), parts.watcher.throughput.rates(),
                                                role=str(role(request) or "")))

    @routes.get("/scorers")
    async def scorers_page() -> Response:
        return RedirectResponse("/replicas", status_code=308)  # its name before it showed every step

    return routes
