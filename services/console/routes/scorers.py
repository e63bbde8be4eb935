"""The scorers page: each replica's slots and pace, the backlog, the throughput."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from services.console import pages
from services.console.parts import Parts
from services.console.routes.signin import role


def router(parts: Parts) -> APIRouter:
    routes = APIRouter()

    @routes.get("/scorers", response_class=HTMLResponse)
    async def scorers_page(request: Request) -> Response:
        return HTMLResponse(pages.scorers_page(parts.watcher.now(), parts.watcher.throughput.rates(),
                                               role=str(role(request) or "")))

    return routes
