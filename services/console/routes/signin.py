"""Who comes in: the doors in front of every route (the host, the stack's token as a cookie or a bearer token,
actions only from the console's own page), and signing in (``/login``), and ``/healthz``, open to all."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.console import pages
from services.console.parts import Parts
from taskfan.http_doors import error

COOKIE = "taskfan_console"
# Sent by the console's own script with every action; a form on another site cannot send it.
ACTION_HEADER = "x-taskfan-console"
OPEN_PATHS = ("/login", "/healthz")

Guard = Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]


def guard(parts: Parts) -> Guard:
    """The console's HTTP middleware: refuses other hosts, sends a browser without the token to sign in (JSON and
    event streams get a 401), and takes actions (POST) only from the console's page or with the token."""
    doors = parts.doors

    async def doors_middleware(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if (refusal := doors.host_refusal(request)) is not None:
            return refusal
        if request.url.path not in OPEN_PATHS and not doors.authenticated(request):
            if request.method == "GET" and not request.url.path.startswith(("/api/", "/events/")):
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
            return error(401, "sign in first (GET /login), or send the stack's token as `Authorization: Bearer`")
        if request.method == "POST" and request.url.path != "/login" and not (
                request.headers.get(ACTION_HEADER) == "1" or request.headers.get("authorization")):
            return error(403, f"actions come from the console's page (header {ACTION_HEADER}: 1) or carry the "
                              "token as `Authorization: Bearer`")
        return await call_next(request)

    return doors_middleware


def router(parts: Parts) -> APIRouter:
    routes = APIRouter()

    def signed_in(next_url: str) -> Response:
        response = RedirectResponse(local(next_url), status_code=303)
        response.set_cookie(COOKIE, parts.token, httponly=True, samesite="strict", path="/")
        return response

    @routes.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @routes.get("/login")
    async def login_form(next: str = "/", token: str = "") -> Response:  # noqa: A002 - the query's name
        if token:  # the sign-in link `taskfan console` prints
            if parts.doors.token_matches(token):
                return signed_in(next)
            return HTMLResponse(pages.login_page("That link's token is not this stack's.", local(next)), 401)
        return HTMLResponse(pages.login_page(next_url=local(next)))

    @routes.post("/login")
    async def login(request: Request) -> Response:
        form = _form(await request.body())
        if parts.doors.token_matches(form.get("token", "")) and form.get("token"):
            return signed_in(form.get("next", "/"))
        return HTMLResponse(pages.login_page("Wrong token.", local(form.get("next", "/"))), 401)

    return routes


def local(url: str) -> str:
    """Only a path of this server (no open redirect to another site)."""
    return url if url.startswith("/") and not url.startswith("//") else "/"


def _form(body: bytes) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(body.decode(errors="replace")).items()}
