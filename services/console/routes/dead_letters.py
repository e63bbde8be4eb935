"""The dead-letter page (``/dead-letters``: the newest records on ``tasks-deadletter``, a page at a time) and their
replay (``POST /dead-letters/{number}/replay``, for the operator's sign-in only: ``signin.guard``), which publishes the
refused event again on ``tasks`` as it is. A poison event is refused again, with its reason: a new dead letter."""

from __future__ import annotations

import asyncio
import logging
import re

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from services.console import pages, views
from services.console.dead_letters import Letter, replay_bytes
from services.console.parts import Parts
from services.console.routes.signin import may_act, role
from taskfan.http_doors import error

log = logging.getLogger(__name__)

LETTER_NUMBER = re.compile(r"[0-9]{1,12}")


def letters_page(parts: Parts, page: str) -> tuple[list[Letter], int, int] | Response:
    """The page of dead letters asked for (its letters, its number, the number of pages), or the answer to a bad
    question."""
    number = views.page_number(page)
    found = parts.dead_letters.page(number) if number else None
    if found is None:
        last = parts.dead_letters.page(1)[1]  # type: ignore[index] - page 1 always exists
        return error(400, f"page is a whole number from 1 to {last}, got {views.shown_text(page)}")
    return found[0], number, found[1]


def router(parts: Parts) -> APIRouter:
    routes = APIRouter()

    @routes.get("/dead-letters", response_class=HTMLResponse)
    async def dead_letters(request: Request, page: str = "1") -> Response:
        found = letters_page(parts, page)
        if isinstance(found, Response):
            return found
        letters, number, pages_in_all = found
        return HTMLResponse(pages.dead_letters_page(letters, number, pages_in_all, can_act=may_act(request),
                                                    role=str(role(request) or "")))

    @routes.get("/api/dead-letters")
    async def dead_letters_json(page: str = "1") -> Response:
        found = letters_page(parts, page)
        if isinstance(found, Response):
            return found
        letters, number, pages_in_all = found
        return JSONResponse({"dead_letters": [letter.as_dict() for letter in letters], "page": number,
                             "pages": pages_in_all})

    @routes.post("/dead-letters/{number}/replay")
    async def replay(number: str) -> Response:
        letter = parts.dead_letters.get(int(number)) if LETTER_NUMBER.fullmatch(number) else None
        if letter is None:
            return error(404, f"no dead letter {views.shown_text(number)} is kept (the console keeps the newest)")
        if parts.replay is None:
            return error(503, "this console cannot publish: it has no sidecar")
        try:
            await asyncio.to_thread(parts.replay, replay_bytes(letter))
        except Exception as exc:  # noqa: BLE001
            return error(502, f"could not publish the event again: {exc}")
        parts.dead_letters.replayed(letter.number)
        log.info("dead letter replayed from the console", extra={"number": letter.number,
                                                                  "batch_id": letter.batch_id})
        return JSONResponse({"message": f"Dead letter {letter.number} published again on tasks"
                                        + (f" (batch {letter.batch_id})." if letter.batch_id else ".")
                                        + " If it is refused again, a new dead letter says why.",
                             "number": letter.number, "batch_id": letter.batch_id})

    return routes
