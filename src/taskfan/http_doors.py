"""Who may use Taskfan's HTTP servers (ingest's API, the console): the stack's token, and our own Host only."""

from __future__ import annotations

import hmac
import logging

from fastapi import Request
from fastapi.responses import JSONResponse

log = logging.getLogger(__name__)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class Doors:
    """Who may use a server: a request carries the stack's token (``Authorization: Bearer``), and every request
    names this server in its ``Host`` (a page in a browser that rebinds some DNS name to 127.0.0.1 cannot).
    Refusals are logged once per client and reason. (The console signs browsers in with sessions of its own,
    ``services/console/sessions.py``, and uses only the host check and the refusal log here.)
    """

    def __init__(self, token: str, hosts: set[str]) -> None:
        self.token = token.encode()
        self.hosts = hosts
        self._logged: set[tuple[str, str]] = set()

    def authenticated(self, request: Request) -> bool:
        if not self.token:
            return True
        scheme, _, sent = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(sent.strip().encode(), self.token):
            return True
        self.refused(request, "token")
        return False

    def host_refusal(self, request: Request) -> JSONResponse | None:
        host = request.headers.get("host", "")
        if host in self.hosts:
            return None
        self.refused(request, "host")
        return error(421, f"Host {host!r} is not this server ({' or '.join(sorted(self.hosts))}); refused")

    def token_refusal(self, request: Request) -> JSONResponse | None:
        if self.authenticated(request):
            return None
        response = error(401, "send the stack's ingest token as `Authorization: Bearer <token>` (the CLI does; "
                              "the token is `ingest-token` in .taskfan/secrets/secrets.json)")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    def refused(self, request: Request, reason: str) -> None:
        """Logs a refusal, once per client and reason."""
        client = request.client.host if request.client else "?"
        if (client, reason) not in self._logged:
            self._logged.add((client, reason))
            log.warning("request refused", extra={"client": client, "reason": reason, "path": request.url.path})


def local_hosts(port: int) -> set[str]:
    return {f"127.0.0.1:{port}", f"localhost:{port}"}
