"""console transport: the web console's FastAPI app, put together from its routers (``routes``: one per page or
concern), each handed the console's parts (``parts.Parts``), behind the doors (``routes.signin.guard``).

Pages and their live updates are rendered by ``pages`` from ``templates/``; what they show comes from ``views``
and ``records`` (the book of batches seen on the topics, ``history``, merged with the workflow app's answers).
"""

from __future__ import annotations

from fastapi import FastAPI

from services.console.history import BatchBook
from services.console.parts import Parts, Publish, Traces, Workflow
from services.console.routes import actions, api, batches, live, scorers, signin
from services.console.routes import traces as trace_pages
from services.console.watch import Watcher
from taskfan.http_doors import Doors


def create_console(book: BatchBook, watcher: Watcher, workflow: Workflow, publish: Publish, *, token: str,
                   hosts: set[str], traces: Traces | None = None) -> FastAPI:
    parts = Parts(book=book, watcher=watcher, workflow=workflow, publish=publish, traces=traces, token=token,
                  doors=Doors(token, hosts, cookie=signin.COOKIE))
    app = FastAPI(title="Taskfan console", docs_url=None, redoc_url=None, openapi_url=None)
    app.middleware("http")(signin.guard(parts))
    for area in (signin, batches, actions, trace_pages, scorers, api, live):
        app.include_router(area.router(parts))
    return app
