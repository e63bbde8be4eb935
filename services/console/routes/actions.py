"""What the console does to a batch when asked (POST, from its page's buttons or with the token): terminate a
running one, re-run a finished one (all its tasks, its failed ones, or some of those) as a new batch, purge a
finished one (the workflow app deletes its records, the console forgets it)."""

from __future__ import annotations

import asyncio
import json
import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from services.console import pages
from services.console.parts import Parts
from services.console.records import failed_tasks, rerun_id
from taskfan import events
from taskfan.contracts import TaskBatch, is_batch_id
from taskfan.http_doors import error

log = logging.getLogger(__name__)

RERUN_BODY = 'the body is {"tasks": "all" | "failed" | [task ids]}'


def router(parts: Parts) -> APIRouter:
    routes = APIRouter()
    book = parts.book

    @routes.post("/batches/{batch_id}/terminate")
    async def terminate(batch_id: str) -> Response:
        try:
            said = await asyncio.to_thread(parts.workflow.terminate, batch_id)
        except Exception as exc:  # noqa: BLE001
            return error(502, f"the workflow app did not answer: {exc}")
        if not said.terminated:
            return error(409, f"batch {batch_id} was not terminated: {said.reason}")
        log.info("batch terminated from the console", extra={"batch_id": batch_id})
        return JSONResponse({"message": f"Batch {batch_id} terminated: its unfinished tasks will be reported "
                                        "failed in its outcome."})

    @routes.post("/batches/{batch_id}/purge")
    async def purge(batch_id: str) -> Response:
        if not is_batch_id(batch_id):
            return error(400, f"{events.printable(batch_id, 200)!r} is not a batch id (1 to 128 characters: letters, "
                              "digits, '.', '_', '-', ':')")
        try:
            said = await asyncio.to_thread(parts.workflow.purge, batch_id)
        except Exception as exc:  # noqa: BLE001
            return error(502, f"the workflow app did not answer: {exc}")
        if said.refused:
            return error(409, f"batch {batch_id} was not purged: {said.refused}")
        forgotten = await asyncio.to_thread(parts.forget or book.forget, batch_id)
        if not (said.known or forgotten):
            return error(404, f"no batch {batch_id!r} is known to the console or the workflow app")
        log.info("batch purged from the console", extra={"batch_id": batch_id})
        # location: its page is gone, the console's page goes to the list.
        return JSONResponse({"message": f"Batch {batch_id} purged: its records are deleted.", "batch_id": batch_id,
                             "location": "/"})

    @routes.post("/batches/{batch_id}/rerun")
    async def rerun(batch_id: str, request: Request) -> Response:
        summary = book.get(batch_id)
        if summary is None or not summary.published:
            return error(409, "only a finished batch is re-run (its outcome published); this one is not")
        try:
            wanted = json.loads(await request.body() or b"{}").get("tasks", "all")
        except (ValueError, AttributeError):
            return error(400, RERUN_BODY)
        if wanted != "all" and wanted != "failed" and not isinstance(wanted, list):
            return error(400, RERUN_BODY)
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
            await asyncio.to_thread(parts.publish, batch)
        except Exception as exc:  # noqa: BLE001
            return error(502, f"could not publish the re-run: {exc}")
        await asyncio.to_thread(book.accepted, batch, rerun_of=batch_id)
        log.info("re-run published from the console", extra={"batch_id": batch.batch_id, "rerun_of": batch_id,
                                                               "tasks": len(tasks)})
        return JSONResponse({"message": f"Published {len(tasks)} task(s) as batch {batch.batch_id}.",
                             "batch_id": batch.batch_id, "location": pages.batch_href(batch.batch_id)})

    return routes
