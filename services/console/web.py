"""console transport: the web console's HTTP routes (pages, JSON, server-sent events, actions).

Pages and their live updates are rendered by ``pages``; what they show comes from ``records`` (the book of
batches seen on the topics, ``history``, merged with the workflow app's answers). ``Workflow`` and ``publish``
are the two ways out (the workflow app's console methods, and the ``tasks`` topic), both through the console's
sidecar in ``app``; tests pass fakes. The book's details and its re-run bookkeeping read and write its state
store: those calls run on a worker thread, not on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol
from urllib.parse import parse_qs, quote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from pydantic import ValidationError

from services.console import pages, records
from services.console.history import BatchBook, Summary
from services.console.records import (
    STATES,
    BatchesPage,
    BatchRow,
    TaskRow,
    batch_row,
    batches_page,
    failed_tasks,
    rerun_id,
    span_rows,
    stage_counts,
    task_rows,
)
from services.console.watch import Watcher
from taskfan.contracts import Task, TaskBatch, TaskResult
from taskfan.http_doors import Doors, error

log = logging.getLogger(__name__)

COOKIE = "taskfan_console"
STREAM_INTERVAL_S = 1.0
KEEPALIVE_S = 15.0
# Sent by the console's own script with every action; a form on another site cannot send it.
ACTION_HEADER = "x-taskfan-console"
PAGE_NUMBER = re.compile(r"[1-9][0-9]{0,8}")  # ASCII digits only (int() would take "٣" and " 3")


class Workflow(Protocol):
    def batch(self, batch_id: str) -> dict[str, Any]: ...

    def terminate(self, batch_id: str) -> dict[str, Any]: ...


Publish = Callable[[TaskBatch], None]


class Traces(Protocol):
    """The tracing backend's query API (Jaeger's ``/api/traces/<id>``)."""

    def url(self, trace_id: str) -> str: ...

    def get(self, trace_id: str) -> dict[str, Any] | None: ...


def create_console(book: BatchBook, watcher: Watcher, workflow: Workflow, publish: Publish, *, token: str,
                   hosts: set[str], traces: Traces | None = None) -> FastAPI:
    api = FastAPI(title="Taskfan console", docs_url=None, redoc_url=None, openapi_url=None)
    doors = Doors(token, hosts, cookie=COOKIE)

    def trace_url(batch_id: str) -> str | None:
        summary = book.get(batch_id)
        return f"{pages.batch_href(batch_id)}/trace" if traces is not None and summary and summary.trace_id else None

    @api.middleware("http")
    async def doors_middleware(request: Request, call_next):  # noqa: ANN001, ANN202 - Starlette's signature
        if (refusal := doors.host_refusal(request)) is not None:
            return refusal
        open_paths = ("/login", "/healthz")
        if request.url.path not in open_paths and not doors.authenticated(request):
            if request.method == "GET" and not request.url.path.startswith(("/api/", "/events/")):
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/login?next={_quote(target)}", status_code=303)
            return error(401, "sign in first (GET /login), or send the stack's token as `Authorization: Bearer`")
        if request.method == "POST" and request.url.path != "/login" and not (
                request.headers.get(ACTION_HEADER) == "1" or request.headers.get("authorization")):
            return error(403, f"actions come from the console's page (header {ACTION_HEADER}: 1) or carry the "
                              "token as `Authorization: Bearer`")
        return await call_next(request)

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    # --- signing in -------------------------------------------------------------------------------------

    def signed_in(next_url: str) -> Response:
        response = RedirectResponse(_local(next_url), status_code=303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
        return response

    @api.get("/login")
    async def login_form(next: str = "/", token: str = "") -> Response:  # noqa: A002 - the query's name
        if token:  # the sign-in link `taskfan console` prints
            if doors.token_matches(token):
                return signed_in(next)
            return HTMLResponse(pages.login_page("That link's token is not this stack's.", _local(next)), 401)
        return HTMLResponse(pages.login_page(next_url=_local(next)))

    @api.post("/login")
    async def login(request: Request) -> Response:
        form = _form(await request.body())
        if doors.token_matches(form.get("token", "")) and form.get("token"):
            return signed_in(form.get("next", "/"))
        return HTMLResponse(pages.login_page("Wrong token.", _local(form.get("next", "/"))), 401)

    # --- batches ----------------------------------------------------------------------------------------

    def listed(state: str, page: int) -> BatchesPage | None:
        return batches_page(book.recent(), watcher.now(), state, page)

    def chart() -> str:
        return pages.throughput_chart(watcher.throughput.rates())

    def chosen(state: str, page: str) -> BatchesPage | Response:
        """The page of batches asked for, or the answer to a bad question."""
        if state and state not in STATES:
            return error(400, f"state is one of {', '.join(STATES)}")
        number = int(page) if PAGE_NUMBER.fullmatch(page) else 0
        found = listed(state, number) if number else None
        if found is None:
            last = listed(state, 1).pages  # type: ignore[union-attr] - page 1 always exists
            return error(400, f"page is a whole number from 1 to {last}, got {page[:20]!r}")
        return found

    @api.get("/", response_class=HTMLResponse)
    async def batches(state: str = "", page: str = "1") -> Response:
        found = chosen(state, page)
        if isinstance(found, Response):
            return found
        stream = "/events/batches" + pages.query(state=state, page=found.page)
        return HTMLResponse(pages.batches_page(found, state, chart(), stream))

    @api.get("/api/batches")
    async def batches_json(state: str = "", page: str = "1") -> Response:
        found = chosen(state, page)
        if isinstance(found, Response):
            return found
        return JSONResponse({"batches": [r.as_dict() for r in found.rows], "page": found.page, "pages": found.pages,
                             "error": watcher.error})

    @api.get("/events/batches")
    async def batches_events(request: Request, state: str = "", page: str = "1") -> Response:
        found = chosen(state, page)
        if isinstance(found, Response):
            return found
        asked = found

        async def update() -> dict[str, Any]:
            # The page asked for may since have gone (batches left the history, a filter's rows ended): empty.
            now = listed(state, asked.page) or BatchesPage(rows=[], page=asked.page, pages=asked.pages)
            return {"parts": {"rows": pages.batch_table_body(now.rows), "pager": pages.pager(now, state),
                              "chart": chart()}}

        return _stream(request, update)

    # --- one batch --------------------------------------------------------------------------------------

    def details(summary: Summary | None) -> tuple[list[Task] | None, list[TaskResult] | None]:
        """The batch's tasks and results, as far as the book still has them (blocking: a state store read)."""
        if summary is None:
            return None, None
        try:
            tasks = book.tasks(summary.batch_id)
            return tasks, book.results(summary.batch_id) if summary.published else None
        except Exception as exc:  # noqa: BLE001 - shown without them; the next update reads again
            log.warning("the state store did not answer", extra={"batch_id": summary.batch_id, "error": str(exc)})
            return None, None

    async def view(batch_id: str) -> tuple[BatchRow | None, list[TaskRow], dict[str, int], str, bool]:
        summary = book.get(batch_id)
        answer = None
        if summary is None or not summary.published:  # published: the book has everything
            try:
                answer = await asyncio.to_thread(workflow.batch, batch_id)
            except Exception as exc:  # noqa: BLE001 - shown as "unknown"; the next update asks again
                log.warning("the workflow app did not answer", extra={"batch_id": batch_id, "error": str(exc)})
        tasks, results = await asyncio.to_thread(details, summary)
        row = batch_row(summary, answer)
        rows = task_rows(summary, tasks, results, (answer or {}).get("tasks") or {})
        can_rerun = tasks is not None
        actions = pages.batch_actions(row, can_rerun, row.failed if row else 0)
        return row, rows, stage_counts(rows), actions, can_rerun and row is not None and row.finished_at is not None

    def details_gone(batch_id: str) -> bool:
        summary = book.get(batch_id)
        return summary is not None and summary.details_dropped

    @api.get("/batches/{batch_id}", response_class=HTMLResponse)
    async def batch_page(batch_id: str, stage: str = "") -> Response:
        if stage and stage not in records.stages():
            return error(400, f"stage is one of {', '.join(records.stages())}")
        row, tasks, counts, actions, rerunnable = await view(batch_id)
        stream = pages.batch_href(batch_id).replace("/batches/", "/events/batches/", 1) + (
            f"?stage={stage}" if stage else "")
        return HTMLResponse(pages.batch_page(batch_id, row, tasks, counts, stage, actions, trace_url(batch_id),
                                             stream, _rerun_action(batch_id) if rerunnable else None,
                                             details_gone=details_gone(batch_id)),
                            status_code=200 if row is not None else 404)

    @api.get("/api/batches/{batch_id}")
    async def batch_json(batch_id: str) -> Response:
        row, tasks, counts, _, _ = await view(batch_id)
        if row is None:
            return error(404, f"no batch {batch_id!r} is known to the console or the workflow app")
        summary = book.get(batch_id)
        trace = traces.url(summary.trace_id) if traces is not None and summary and summary.trace_id else None
        return JSONResponse({"batch": row.as_dict(), "stages": counts, "tasks": [t.as_dict() for t in tasks],
                             "trace": trace, "details_kept": not details_gone(batch_id)})

    @api.get("/events/batches/{batch_id}")
    async def batch_events(request: Request, batch_id: str, stage: str = "") -> StreamingResponse:
        sent_order: list[str] = []
        sent: dict[int, str] = {}

        async def update() -> dict[str, Any]:
            row, tasks, counts, actions, rerunnable = await view(batch_id)
            rerun = _rerun_action(batch_id) if rerunnable else None
            shown = pages.shown_tasks(tasks, stage)
            rows = {i: pages.task_row(i, task, rerun) for i, task in shown}
            parts = {"summary": pages.batch_summary(row, counts, trace_url(batch_id), details_gone(batch_id)),
                     "actions": actions}
            order = [task.task_id for _, task in shown]
            if order != sent_order:  # rows came or went (the tasks became known, a stage filter): all of them
                sent_order[:] = order
                sent.clear()
                sent.update(rows)
                return {"parts": {**parts, "tasks": "".join(rows.values())}}
            changed = {i: html for i, html in rows.items() if sent.get(i) != html}
            sent.update(changed)
            return {"parts": parts, "tasks": changed}

        return _stream(request, update)

    @api.post("/batches/{batch_id}/terminate")
    async def terminate(batch_id: str) -> Response:
        try:
            said = await asyncio.to_thread(workflow.terminate, batch_id)
        except Exception as exc:  # noqa: BLE001
            return error(502, f"the workflow app did not answer: {exc}")
        if not said.get("terminated"):
            return error(409, f"batch {batch_id} was not terminated: {said.get('reason')}")
        log.info("batch terminated from the console", extra={"batch_id": batch_id})
        return JSONResponse({"message": f"Batch {batch_id} terminated: its unfinished tasks will be reported "
                                        "failed in its outcome."})

    @api.post("/batches/{batch_id}/rerun")
    async def rerun(batch_id: str, request: Request) -> Response:
        summary = book.get(batch_id)
        if summary is None or not summary.published:
            return error(409, "only a finished batch is re-run (its outcome published); this one is not")
        try:
            wanted = json.loads(await request.body() or b"{}").get("tasks", "all")
        except (ValueError, AttributeError):
            return error(400, 'the body is {"tasks": "all" | "failed" | [task ids]}')
        if wanted != "all" and wanted != "failed" and not isinstance(wanted, list):
            return error(400, 'the body is {"tasks": "all" | "failed" | [task ids]}')
        try:
            held, results = await asyncio.to_thread(lambda: (book.tasks(batch_id), book.results(batch_id)))
        except Exception as exc:  # noqa: BLE001
            return error(502, f"could not read the batch's tasks from the state store: {exc}")
        if held is None or (wanted != "all" and results is None):
            return error(410, "the console no longer keeps this batch's tasks (it keeps the most recent batches' "
                              "details, CONSOLE_DETAIL_BYTES in all)")
        if wanted == "all":
            tasks, kind = held, "rerun"
        else:
            failed = failed_tasks(held, results or [])
            named = {w for w in wanted if isinstance(w, str)} if isinstance(wanted, list) else set()
            tasks = failed if wanted == "failed" else [t for t in failed if t.task_id in named]
            kind = "retry"
        if not tasks:
            return error(409, "nothing to re-run: no such failed task in this batch")
        try:
            batch = TaskBatch(batch_id=rerun_id(batch_id, kind), tasks=tasks)
        except ValidationError as exc:
            return error(422, f"the re-run is not a valid batch: {exc.errors()[0]['msg']}")
        try:
            await asyncio.to_thread(publish, batch)
        except Exception as exc:  # noqa: BLE001
            return error(502, f"could not publish the re-run: {exc}")
        await asyncio.to_thread(book.accepted, batch, rerun_of=batch_id)
        log.info("re-run published from the console", extra={"batch_id": batch.batch_id, "rerun_of": batch_id,
                                                               "tasks": len(tasks)})
        return JSONResponse({"message": f"Published {len(tasks)} task(s) as batch {batch.batch_id}.",
                             "batch_id": batch.batch_id, "location": pages.batch_href(batch.batch_id)})

    @api.get("/batches/{batch_id}/trace", response_class=HTMLResponse)
    async def trace_page(batch_id: str) -> Response:
        summary = book.get(batch_id)
        if traces is None or summary is None or summary.trace_id is None:
            return error(404, "no trace is known for this batch (tracing off, or the console did not see it "
                              "published)")
        try:
            found = await asyncio.to_thread(traces.get, summary.trace_id)
        except Exception as exc:  # noqa: BLE001
            return error(502, f"the tracing backend did not answer: {exc}")
        note = "" if found else '<p class="muted">No spans yet: sidecars export them every few seconds.</p>'
        return HTMLResponse(pages.trace_page(batch_id, summary.trace_id, span_rows(found or {}),
                                             traces.url(summary.trace_id), note))

    # --- scorers ----------------------------------------------------------------------------------------

    @api.get("/scorers", response_class=HTMLResponse)
    async def scorers_page() -> Response:
        return HTMLResponse(pages.scorers_page(watcher.now(), chart()))

    @api.get("/api/scorers")
    async def scorers_json() -> dict[str, Any]:
        now = watcher.now()
        return {key: now.get(key) for key in ("scorers", "stages", "calls_in_flight", "error")} | {
            "throughput": [{"at": at, "per_s": rate} for at, rate in watcher.throughput.rates()]}

    @api.get("/events/scorers")
    async def scorers_events(request: Request) -> StreamingResponse:
        async def update() -> dict[str, Any]:
            return {"parts": {"scorers": pages.scorers_part(watcher.now()), "chart": chart()}}

        return _stream(request, update)

    return api


def _stream(request: Request, update: Callable[[], Awaitable[dict[str, Any]]]) -> StreamingResponse:
    """Server-sent events: ``update()`` every STREAM_INTERVAL_S, sent when it changed; a comment keeps the
    connection open otherwise."""

    async def events() -> AsyncIterator[str]:
        last, quiet = "", 0.0
        while not await request.is_disconnected():
            data = json.dumps(await update())
            if data != last:
                last, quiet = data, 0.0
                yield f"data: {data}\n\n"
            elif (quiet := quiet + STREAM_INTERVAL_S) >= KEEPALIVE_S:
                quiet = 0.0
                yield ": still here\n\n"
            await asyncio.sleep(STREAM_INTERVAL_S)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"cache-control": "no-store", "x-accel-buffering": "no"})


def _rerun_action(batch_id: str) -> str:
    return pages.batch_href(batch_id) + "/rerun"


def _local(url: str) -> str:
    """Only a path of this server (no open redirect to another site)."""
    return url if url.startswith("/") and not url.startswith("//") else "/"


def _quote(url: str) -> str:
    return quote(url, safe="")


def _form(body: bytes) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(body.decode(errors="replace")).items()}
