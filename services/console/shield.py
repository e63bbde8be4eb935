"""The console's outermost layer, around everything FastAPI answers (error pages and 500s included): the browser
security headers on every response, and a body limit on the routes anyone may call before signing in.

The headers: a Content-Security-Policy that lets a page load only the console's own script and style (no inline
script or style, nothing from elsewhere, no framing, forms posting only to the console), ``nosniff``, no
``Referer`` leaving the console, and no framing for browsers that ignore ``frame-ancestors``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from types import MappingProxyType
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CONTENT_SECURITY_POLICY = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
SECURITY_HEADERS = MappingProxyType({
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
})
OPEN_BODY_LIMIT = 4096  # bytes: a sign-in form, a code request; nothing before signing in needs more


async def shielded(app: ASGIApp, scope: Scope, receive: Receive, send: Send, open_path: Callable[[str], bool],
                   limit: int = OPEN_BODY_LIMIT) -> None:
    """``app`` answering ``scope``, with the security headers on its response; on an open path (``open_path``)
    a body over ``limit`` bytes is refused (413) as soon as it is seen: by its Content-Length, else while it is
    read (a chunked body), never read whole."""
    if scope["type"] != "http":
        await app(scope, receive, send)
        return

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            present = {name.lower() for name, _ in message.get("headers", [])}
            message["headers"] = [*message.get("headers", []), *(
                (name.encode(), value.encode()) for name, value in SECURITY_HEADERS.items()
                if name.encode() not in present)]
        await send(message)

    if not open_path(scope["path"]):
        await app(scope, receive, send_with_headers)
        return
    declared = dict(scope.get("headers", [])).get(b"content-length", b"")
    if declared.isdigit() and int(declared) > limit:
        await _too_large(send_with_headers, limit)
        return
    body = await _bounded_body(receive, limit)
    if body is None:
        await _too_large(send_with_headers, limit)
        return
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: the disconnect, when it comes

    await app(scope, replay, send_with_headers)


async def _bounded_body(receive: Receive, limit: int) -> bytes | None:
    """The request's body, or None as soon as it passes ``limit`` bytes."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            return bytes(body)
        body += message.get("body", b"")
        if len(body) > limit:
            return None
        if not message.get("more_body"):
            return bytes(body)


async def _too_large(send: Send, limit: int) -> None:
    text = json.dumps({"error": f"the body is over {limit} bytes: nothing before signing in takes more"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(text)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": text})
