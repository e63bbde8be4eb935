"""Who comes in: the doors in front of every route, signing in and out, and what anyone may fetch.

The doors (``guard``): the request names this server in its ``Host``; it carries a console credential as
``Authorization: Bearer`` or the cookie of a session (``sessions``); a POST comes from the console's own page (or a
script with a credential), from no other origin or site (``foreign``), and is an action only for the ``act`` role.

Signing in (``/login``): a one-time code from ``taskfan console``'s link (``GET /login?code=``; the CLI gets it with
``POST /login/code`` and a credential in its header, never in a URL), or a credential typed into the form. Either
gives a session; the browser never holds a credential. ``POST /logout`` ends the session. ``/healthz`` and the
console's script and style (``/static/``) are open to all.

Sessions and codes are in the console's state store (``sessions``): every request with a session cookie costs one
store read (no cache: a sign-out ends a session on every replica at once), made off the event loop. A store that
does not answer is a ``503`` saying so, never a sign-out.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from functools import partial
from types import MappingProxyType
from typing import TypeVar
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from services.console import pages
from services.console.parts import Parts
from services.console.sessions import CODE_TTL_S, Role, SignInUnavailable
from taskfan.http_doors import error

COOKIE = "taskfan_console"  # + "_<port>": two consoles on one host keep their own sessions
# Sent by the console's own script with every action; a form on another site cannot send it.
ACTION_HEADER = "x-taskfan-console"
OPEN_PATHS = ("/login", "/login/code", "/logout", "/healthz")
STATIC = MappingProxyType({"console.js": "text/javascript; charset=utf-8", "console.css": "text/css; charset=utf-8"})
NO_STORE = MappingProxyType({"cache-control": "no-store"})
SIGN_IN_HINT = "run `taskfan console` for a one-time sign-in link"
RETRY = MappingProxyType({"retry-after": "5"})

Guard = Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]
T = TypeVar("T")


def cookie_name(port: int) -> str:
    return f"{COOKIE}_{port}"


def is_open(path: str) -> bool:
    """Paths anyone may call before signing in (and so with a bounded body: ``shield``)."""
    return path in OPEN_PATHS or path.startswith("/static/")


def role(request: Request) -> Role | None:
    """The role the guard found for this request."""
    return getattr(request.state, "role", None)


def may_act(request: Request) -> bool:
    return role(request) is Role.ACT


def guard(parts: Parts) -> Guard:
    """The console's HTTP middleware: refuses other hosts and other origins' POSTs, sends a browser that is not
    signed in to sign in (JSON and event streams get a 401), takes actions (POST) only from the console's page or
    with a credential, and only for the ``act`` role."""
    doors = parts.doors

    async def doors_middleware(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if (refusal := doors.host_refusal(request)) is not None:
            return refusal
        if request.method == "POST" and (elsewhere := foreign(request)) is not None:
            return error(403, f"a POST from another origin or site ({elsewhere[:100]}) is refused")
        path = request.url.path
        if is_open(path):  # they need no session (and read no store): each checks what it takes itself
            return await call_next(request)
        try:
            request.state.role = await who(parts, request)
        except SignInUnavailable as exc:
            return unavailable("your sign-in cannot be checked now", exc)
        if request.state.role is None:
            if request.method == "GET" and not path.startswith(("/api/", "/events/")):
                target = path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
            return error(401, f"sign in first ({SIGN_IN_HINT}; your sign-in may have ended), or send a console "
                              "credential as `Authorization: Bearer`", {"WWW-Authenticate": "Bearer"})
        if request.method == "POST":
            if not (request.headers.get(ACTION_HEADER) == "1" or request.headers.get("authorization")):
                return error(403, f"actions come from the console's page (header {ACTION_HEADER}: 1) or carry a "
                                  "credential as `Authorization: Bearer`")
            if not may_act(request):
                return error(403, "you signed in to look, not to act: terminating, re-running and replaying need the "
                                  "operator's sign-in (`taskfan console --role act`)")
        return await call_next(request)

    return doors_middleware


def foreign(request: Request) -> str | None:
    """Where a request a browser sent from another page comes from, None if from the console's own (or not from a
    browser). The browser's ``Sec-Fetch-Site`` says it (another port of 127.0.0.1 is ``same-site``, not
    ``same-origin``); so does ``Origin`` unless it is ``null``, which is what a browser sends for the console's own
    forms and script under ``Referrer-Policy: no-referrer`` (and for a sandboxed frame, whose ``Sec-Fetch-Site`` is
    ``cross-site``)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return site
    origin = request.headers.get("origin")
    if origin not in (None, "null", f"http://{request.headers.get('host')}"):
        return origin
    return None


async def off_loop(call: Callable[[], T], wait_s: float) -> T:
    """A sessions' or codes' call (blocking: the state store) on a worker thread, so the event loop serves others
    meanwhile; not answered within ``wait_s``: ``SignInUnavailable`` (a store that hangs is a 503, not a hang)."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(call), wait_s)
    except TimeoutError as exc:
        raise SignInUnavailable(f"the console's state store did not answer within {wait_s:g} s") from exc


def unavailable(what: str, exc: SignInUnavailable) -> Response:
    return error(503, f"{what}: {exc}; try again in a few seconds", dict(RETRY))


async def who(parts: Parts, request: Request) -> Role | None:
    """The role of the request's credential (``Authorization: Bearer``) if it has one, else of its session (one
    state-store read, off the event loop; ``SignInUnavailable`` when the store does not answer)."""
    if parts.credentials.open:
        return Role.ACT
    scheme, _, sent = request.headers.get("authorization", "").partition(" ")
    if scheme:
        found = parts.credentials.role_of(sent) if scheme.lower() == "bearer" else None
        if found is None:
            parts.doors.refused(request, "token")
        return found
    sent = request.cookies.get(parts.cookie, "")
    found = await off_loop(partial(parts.sessions.role_of, sent), parts.sessions.wait_s) if sent else None
    if found is None and parts.cookie in request.cookies:
        parts.doors.refused(request, "session")
    return found


def router(parts: Parts) -> APIRouter:
    routes = APIRouter()

    async def signed_in(granted: Role, next_url: str) -> Response:
        try:
            session = await off_loop(partial(parts.sessions.start, granted), parts.sessions.wait_s)
        except SignInUnavailable as exc:
            return not_now(exc, next_url)
        response = RedirectResponse(local(next_url), status_code=303, headers=NO_STORE)
        response.set_cookie(parts.cookie, session, max_age=int(parts.sessions.ttl_s),
                            httponly=True, samesite="strict", path="/")
        return response

    def sign_in_page(message: str, next_url: str, status: int, headers: dict[str, str] | None = None) -> Response:
        return HTMLResponse(pages.login_page(message, local(next_url)), status, headers={**NO_STORE, **(headers or {})})

    def not_now(exc: SignInUnavailable, next_url: str) -> Response:
        return sign_in_page(f"Signing in is not possible now: {exc}. Try again in a few seconds.", next_url, 503,
                            dict(RETRY))

    @routes.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @routes.get("/static/{name}")
    async def static(name: str) -> Response:
        if name not in STATIC:
            return error(404, "no such file")
        return Response(pages.static_file(name), media_type=STATIC[name])

    @routes.get("/login")
    async def login_form(request: Request, next: str = "/", code: str = "") -> Response:  # noqa: A002 - the query's name
        if "token" in request.query_params:
            return sign_in_page(f"Sign-in links no longer carry a token (a URL is kept in histories and logs): "
                                f"{SIGN_IN_HINT}.", next, 400)
        if code:  # the link `taskfan console` prints: once, within CODE_TTL_S
            try:
                granted = await off_loop(partial(parts.codes.redeem, code), parts.codes.wait_s)
            except SignInUnavailable as exc:
                return not_now(exc, next)  # the code is not spent: it works once the store answers
            if granted is None:
                return sign_in_page(f"This sign-in link was used already or has expired (a link works once, within "
                                    f"{CODE_TTL_S:.0f} s): {SIGN_IN_HINT}.", next, 401)
            return await signed_in(granted, next)
        return sign_in_page("", next, 200)

    @routes.post("/login")
    async def login(request: Request) -> Response:
        form = _form(await request.body())
        granted = parts.credentials.role_of(form.get("token", "")) if form.get("token") else None
        if granted is None:
            parts.doors.refused(request, "token")
            return sign_in_page("Wrong token.", form.get("next", "/"), 401)
        return await signed_in(granted, form.get("next", "/"))

    @routes.post("/login/code")
    async def sign_in_code(request: Request) -> Response:
        """A one-time sign-in link for a role the caller's credential (``Authorization: Bearer``) allows."""
        scheme, _, sent = request.headers.get("authorization", "").partition(" ")
        has = parts.credentials.role_of(sent) if scheme.lower() == "bearer" or parts.credentials.open else None
        if has is None:
            return error(401, "a sign-in link is given for a console credential sent as `Authorization: Bearer`",
                         {"WWW-Authenticate": "Bearer"})
        try:
            asked = json.loads(await request.body() or b"{}").get("role", Role.VIEW)
            wanted = Role(asked)
        except (ValueError, AttributeError):
            return error(400, 'the body is {"role": "view" | "act"}')
        if not has.allows(wanted):
            return error(403, "this credential signs in to look only (the viewer's); acting needs the operator's")
        try:
            code = await off_loop(partial(parts.codes.issue, wanted), parts.codes.wait_s)
        except SignInUnavailable as exc:
            return unavailable("no sign-in link can be given now", exc)
        return JSONResponse({"link": f"/login?code={code}", "role": wanted.value, "expires_in_s": CODE_TTL_S},
                            headers=NO_STORE)

    @routes.post("/logout")
    async def logout(request: Request) -> Response:
        try:
            await off_loop(partial(parts.sessions.end, request.cookies.get(parts.cookie, "")),
                           parts.sessions.wait_s)
        except SignInUnavailable as exc:  # not a silent sign-out that left the session alive
            return unavailable("you are not signed out yet", exc)
        response = RedirectResponse("/login", status_code=303, headers=NO_STORE)
        response.delete_cookie(parts.cookie, path="/", httponly=True, samesite="strict")
        return response

    return routes


def local(url: str) -> str:
    """Only a path of this server (no open redirect to another site)."""
    return url if url.startswith("/") and not url.startswith(("//", "/\\")) else "/"


def _form(body: bytes) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(body.decode(errors="replace")).items()}
