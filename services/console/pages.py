"""The console's HTML: whole pages, and the fragments its event streams send to replace parts of them.

One renderer for both: the templates (``templates/``, Jinja2 with autoescaping: whatever comes from outside,
batch and task ids, titles, errors, is escaped by the template engine) render a page, and a live update is the
same partial (``_*.html``) rendered again, sent over server-sent events and swapped in by ``console.js``
(no client-side templates, no build step).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import quote

import jinja2
from jinja2.ext import Extension

from services.console import records
from services.console.dead_letters import Letter
from services.console.records import STATES, BatchesPage, BatchRow, Search, SpanRow, TaskPage, TaskRow
from services.console.watch import Seen

CHART_WIDTH, CHART_HEIGHT = 640, 120


class Spaceless(Extension):
    """The .html templates are written an element a line, indented, for their readers; the pages go out as one
    line, as they always have (a line break between inline elements would show as a space). So a line break and
    the indentation after it are dropped from them when they load; the CSS and the script they include keep
    theirs."""

    def preprocess(self, source: str, name: str | None, filename: str | None = None) -> str:
        return re.sub(r"\n\s*", "", source) if name and name.endswith(".html") else source


def batch_href(batch_id: str) -> str:
    return "/batches/" + quote(batch_id, safe="")


def when(iso: str | None) -> str:
    return iso[:19].replace("T", " ") if iso else ""


def query(state: str = "", page: int = 1, q: str = "", since: datetime | None = None,
          until: datetime | None = None) -> str:
    """The batches page's query string: ``?state=...&q=...&since=...&until=...&page=...``, without what is the
    default."""
    asked = [f"{name}={quote(value, safe=':')}" for name, value in (
        ("state", state), ("q", q), ("since", iso(since)), ("until", iso(until))) if value]
    asked += [f"page={page}"] if page != 1 else []
    return "?" + "&".join(asked) if asked else ""


def task_query(stage: str = "", page: int = 1) -> str:
    """A batch page's query string: ``?stage=...&page=...``, without what is the default."""
    asked = ([f"stage={quote(stage, safe='')}"] if stage else []) + ([f"page={page}"] if page != 1 else [])
    return "?" + "&".join(asked) if asked else ""


def iso(moment: datetime | None) -> str:
    """A time as ISO 8601 in UTC (``...Z``), as the search form and its links show it."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else ""


def asked(state: str, search: Search | None) -> dict[str, Any]:
    """What the batches list was asked for, besides its page: ``query``'s arguments."""
    search = search or Search()
    return {"state": state, "q": search.q, "since": search.since, "until": search.until}


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("services.console"),
                             autoescape=jinja2.select_autoescape(["html"]), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, extensions=[Spaceless])
    env.filters.update(batch_href=batch_href, when=when, dumps=json.dumps, iso=iso)
    env.globals.update(query=query, task_query=task_query, states=STATES, stages=records.stages, steps=records.steps)
    return env


TEMPLATES = _environment()  # loads nothing yet: each template is read and compiled when first rendered


def render(template: str, **context: Any) -> str:
    return TEMPLATES.get_template(template).render(**context)


def static_file(name: str) -> str:
    """The console's script or style (``console.js``, ``console.css``), served as files of their own: its
    Content-Security-Policy lets a page run no inline script and apply no inline style."""
    return (resources.files("services.console") / "templates" / name).read_text(encoding="utf-8")


def page(template: str, title: str, *, active: str, stream: str = "", batch: str = "", role: str = "",
         **context: Any) -> str:
    """A whole page: ``template`` extends ``base.html``, the layout (its title, the header's links, who is signed in
    and the sign-out button, the stream the page's script follows)."""
    return render(template, title=title, active=active, stream=stream, batch=batch, role=role, **context)


# --- the batches page -----------------------------------------------------------------------------------------


def chart_points(rates: list[tuple[float, float]], width: int = CHART_WIDTH,
                 height: int = CHART_HEIGHT) -> dict[str, Any]:
    """What ``_chart.html`` draws: tasks finished per second over the sampled minutes as a polyline's points,
    newest right (``points`` None until there are two samples)."""
    if len(rates) < 2:
        return {"points": None}
    t0, t1 = rates[0][0], rates[-1][0]
    top = max(1.0, max(r for _, r in rates))
    span = max(t1 - t0, 1e-9)
    points = " ".join(f"{40 + (t - t0) / span * (width - 50):.1f},{height - 20 - r / top * (height - 30):.1f}"
                      for t, r in rates)
    return {"points": points, "width": width, "height": height, "top": top, "minutes": (t1 - t0) / 60,
            "latest": rates[-1][1]}


def throughput_chart(rates: list[tuple[float, float]]) -> str:
    return render("_chart.html", **chart_points(rates))


def batch_table_body(rows: list[BatchRow]) -> str:
    return render("_batch_rows.html", rows=rows)


def pager(shown: BatchesPage, state: str, search: Search | None = None) -> str:
    return render("_pager.html", shown=shown, asked=asked(state, search))


def batches_page(shown: BatchesPage, state: str, rates: list[tuple[float, float]], stream: str, role: str = "",
                 search: Search | None = None) -> str:
    return page("batches.html", "Batches", active="batches", stream=stream, role=role, shown=shown, rows=shown.rows,
                state=state, asked=asked(state, search), **chart_points(rates))


# --- one batch ------------------------------------------------------------------------------------------------


def task_pager(shown: TaskPage, stage: str) -> str:
    return render("_task_pager.html", shown=shown, stage=stage)


def task_row(index: int, task: TaskRow, rerun: str | None = None) -> str:
    """``rerun``: where to ask for a re-run of this task, offered when it failed (in a finished batch)."""
    return render("_task_row.html", index=index, task=task, rerun=rerun)


def batch_summary(row: BatchRow | None, counts: dict[str, int], trace_url: str | None,
                  details_gone: bool = False) -> str:
    return render("_batch_summary.html", row=row, counts=counts, trace_url=trace_url, details_gone=details_gone)


def batch_actions(row: BatchRow | None, can_rerun: bool, can_act: bool = True) -> str:
    """The batch's buttons (``can_act``: for an operator's sign-in; a viewer's page has none)."""
    return render("_batch_actions.html", row=row, can_rerun=can_rerun, can_act=can_act)


def batch_page(batch_id: str, row: BatchRow | None, shown: TaskPage, counts: dict[str, int], stage: str, *,
               can_rerun: bool, trace_url: str | None, stream: str, rerun: str | None,
               details_gone: bool = False, role: str = "act") -> str:
    """``shown``: the page of its tasks listed. ``rerun``: where a failed task's re-run is asked for (None: no
    re-run buttons, as for a viewer)."""
    return page("batch.html", f"Batch {batch_id}", active="batches", stream=stream, batch=batch_id, role=role,
                batch_id=batch_id, row=row, shown=shown, counts=counts,
                stage=stage, can_rerun=can_rerun, can_act=role == "act", trace_url=trace_url, rerun=rerun,
                details_gone=details_gone)


# --- dead letters ----------------------------------------------------------------------------------------------


def dead_letters_page(letters: list[Letter], page_number: int, pages: int, can_act: bool, role: str = "") -> str:
    """A page of the dead letters kept, newest first; a Replay button on each for an operator's sign-in."""
    return page("dead_letters.html", "Dead letters", active="dead letters", role=role, letters=letters,
                page=page_number, pages=pages, can_act=can_act)


# --- replicas (scorers, every step's, the streams), signing in, traces ------------------------------------------


def _replicas(now: Seen) -> dict[str, Any]:
    """What the replicas page's parts show of the watcher's last answers (``Watcher.now``)."""
    return {"scorers": now.scorers(), "at_step": now.answer.stages, "backlog": now.backlog,
            "calls_in_flight": now.answer.calls_in_flight, "error": now.error, "step_replicas": now.answer.steps,
            "workflow_processes": now.answer.processes, "streams": now.streams}


def replicas_parts(now: Seen) -> dict[str, str]:
    """The replicas page's live parts, by the id of the element each replaces."""
    shown = _replicas(now)
    return {part: render(f"_{part}.html", **shown) for part in ("scorers", "processes", "steps", "streams")}


def replicas_page(now: Seen, rates: list[tuple[float, float]], role: str = "") -> str:
    return page("replicas.html", "Replicas", active="replicas", stream="/events/replicas", role=role,
                **_replicas(now), **chart_points(rates))


def login_page(error: str = "", next_url: str = "/") -> str:
    return page("login.html", "Sign in", active="", error=error, next_url=next_url)


def trace_page(batch_id: str, trace_id: str, rows: list[SpanRow], raw_url: str, waiting: bool = False,
               role: str = "") -> str:
    """The batch's trace as a waterfall: every span of every sidecar, in start order, under its parent.
    ``waiting``: the tracing backend has no span of it yet."""
    total = max((r.start_ms + r.duration_ms for r in rows), default=0.0) or 1.0
    return page("trace.html", f"Trace of {batch_id}", active="batches", role=role, batch_id=batch_id, trace_id=trace_id,
                rows=rows, services=sorted({r.service for r in rows}), raw_url=raw_url, total=total, waiting=waiting)
