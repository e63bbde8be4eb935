"""console transport: the web console's FastAPI app, put together from its routers (``routes``: one per page or
concern), each handed the console's parts (``parts.Parts``), behind the doors (``routes.signin.guard``).

Pages and their live updates are rendered by ``pages`` from ``templates/``; what they show comes from ``views``
and ``records`` (the book of batches seen on the topics, ``history``, merged with the workflow app's answers).
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI

from services.console.dead_letters import DeadLetters
from services.console.history import BatchBook
from services.console.parts import Parts, Publish, PublishRaw, Traces, Workflow
from services.console.routes import actions, api, batches, dead_letters, live, replicas, signin
from services.console.routes import traces as trace_pages
from services.console.sessions import Credentials, MemoryKeys, Sessions, SignInCodes
from services.console.shield import Receive, Scope, Send, shielded
from services.console.watch import Watcher
from taskfan.http_doors import Doors
from taskfan.settings import Settings


class ConsoleApp(FastAPI):
    """FastAPI inside the console's shield (``shield``): the security headers on every response it sends, its
    500s included, and a bounded body on the routes open before signing in."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await shielded(super().__call__, scope, receive, send, signin.is_open)


def create_console(book: BatchBook, watcher: Watcher, workflow: Workflow, publish: Publish, *, token: str,
                   hosts: set[str], view_token: str = "", port: int = 8090, traces: Traces | None = None,
                   sessions: Sessions | None = None, codes: SignInCodes | None = None,
                   letters: DeadLetters | None = None, replay: PublishRaw | None = None,
                   forget: Callable[[str], bool] | None = None) -> FastAPI:
    """The console's web app. ``token`` is the operator's credential (the stack's ingest token), ``view_token`` the
    viewer's; ``port`` names its session cookie. ``letters``: the dead letters kept, ``replay`` publishes one again.
    ``sessions`` and ``codes``: kept in the console's state store (``app``); without them, in this process's memory
    (one console alone, the tests)."""
    keys = MemoryKeys()
    parts = Parts(book=book, watcher=watcher, workflow=workflow, publish=publish, traces=traces,
                  dead_letters=DeadLetters(None) if letters is None else letters, replay=replay,
                  doors=Doors(token, hosts), credentials=Credentials(token, view_token),
                  sessions=Sessions(keys, Settings.console_session_ttl_s) if sessions is None else sessions,
                  codes=SignInCodes(keys) if codes is None else codes,
                  cookie=signin.cookie_name(port), forget=forget)
    app = ConsoleApp(title="Taskfan console", docs_url=None, redoc_url=None, openapi_url=None)
    app.middleware("http")(signin.guard(parts))
    for area in (signin, batches, actions, trace_pages, replicas, dead_letters, api, live):
        app.include_router(area.router(parts))
    return app
