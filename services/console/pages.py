"""The console's HTML: whole pages, and the fragments its event streams send to replace parts of them.

One renderer for both: a page is rendered here, and a live update is the same fragment rendered again, sent
over server-sent events and swapped in by ``SCRIPT`` (no client-side templates, no build step).
Everything from outside (batch and task ids, titles, errors) goes through ``escape``.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any
from urllib.parse import quote

from services.console import records
from services.console.records import STATES, BatchesPage, BatchRow, SpanRow, TaskRow

MAX_TASK_ROWS = 2000  # a batch page lists at most this many tasks (filter by stage for the others)

STYLE = """
:root { font-family: system-ui, sans-serif; color: #1d2330; }
body { margin: 0; } header { background: #1d2330; color: #fff; padding: .6rem 1.2rem; display: flex; gap: 1.5rem;
  align-items: baseline; } header a { color: #cfd8ea; text-decoration: none; } header a.on { color: #fff;
  font-weight: 600; } header .brand { font-weight: 700; color: #fff; } #conn { margin-left: auto; font-size: .8rem; }
main { padding: 1rem 1.2rem; } h1 { font-size: 1.3rem; margin: .2rem 0 1rem; }
table { border-collapse: collapse; width: 100%; font-size: .9rem; } th, td { text-align: left; padding: .3rem .5rem;
  border-bottom: 1px solid #e3e6ee; vertical-align: top; } th { background: #f3f5f9; }
.bar { background: #e8ebf2; border-radius: 3px; height: .9rem; width: 12rem; display: flex; overflow: hidden; }
.bar span { display: block; height: 100%; } .c { background: #2f9e63; } .r { background: #d9a33a; }
.f { background: #d0453b; } .pct { font-size: .8rem; margin-left: .4rem; }
.state, .stage { font-size: .8rem; padding: .05rem .4rem; border-radius: 3px; background: #e8ebf2; }
.s-running, .s-validate, .s-enrich, .s-score { background: #dbe8ff; } .s-queued, .s-waiting { background: #eee; }
.s-finished, .s-done { background: #d6f1e2; } .s-failed, .s-dead-lettered { background: #f8d9d6; }
.s-rejected { background: #f7ebcf; } .filters a { margin-right: .6rem; } .filters a.on { font-weight: 700; }
.muted { color: #6b7386; font-size: .85rem; } .err { color: #b3261e; } button { cursor: pointer; }
.counts span { margin-right: 1rem; } #message { margin: .5rem 0; min-height: 1.2rem; font-weight: 600; }
.pager a { margin: 0 .6rem; }
svg text { font-size: 10px; fill: #6b7386; }
"""

SCRIPT = """
const page = document.body.dataset;
const conn = document.getElementById('conn');
function swap(id, html) { const el = document.getElementById(id); if (el && html !== undefined) el.innerHTML = html; }
function live(url, apply) {
  const source = new EventSource(url);
  source.onopen = () => { conn.textContent = 'live'; };
  source.onerror = () => { conn.textContent = 'reconnecting...'; };
  source.onmessage = (e) => apply(JSON.parse(e.data));
}
if (page.stream) live(page.stream, (d) => {
  for (const [id, html] of Object.entries(d.parts || {})) swap(id, html);
  for (const [i, html] of Object.entries(d.tasks || {})) {
    const row = document.getElementById('t' + i); if (row) row.outerHTML = html;
  }
});
document.addEventListener('click', async (e) => {
  const button = e.target.closest('button[data-action]');
  if (!button || (button.dataset.confirm && !confirm(button.dataset.confirm))) return;
  button.disabled = true;
  const answer = await fetch(button.dataset.action, {method: 'POST', body: button.dataset.body || '{}',
    headers: {'content-type': 'application/json', 'x-taskfan-console': '1'}});
  const said = await answer.json().catch(() => ({error: answer.statusText}));
  document.getElementById('message').textContent = said.message || said.error || '';
  if (said.location) window.location = said.location; else button.disabled = false;
});
"""


def layout(title: str, body: str, *, active: str, stream: str = "", batch: str = "") -> str:
    nav = "".join(f'<a href="{href}" class="{"on" if name == active else ""}">{name}</a>'
                  for name, href in (("batches", "/"), ("scorers", "/scorers")))
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)} · Taskfan</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>'
            f'<body data-stream="{escape(stream)}" data-batch="{escape(batch)}"><header>'
            f'<span class="brand">Taskfan</span>{nav}<span id="conn" class="muted"></span></header>'
            f'<main>{body}<div id="message" role="status"></div></main><script>{SCRIPT}</script></body></html>')


def batch_href(batch_id: str) -> str:
    return "/batches/" + quote(batch_id, safe="")


def progress_bar(total: int, completed: int, rejected: int, failed: int) -> str:
    def part(css: str, n: int) -> str:
        return f'<span class="{css}" style="width:{100 * n / total:.2f}%"></span>' if total and n else ""

    done = completed + rejected + failed
    percent = 100 if not total else int(100 * done / total)
    return (f'<span style="display:inline-flex;align-items:center"><span class="bar" role="progressbar" '
            f'aria-valuenow="{percent}" aria-valuemin="0" aria-valuemax="100">'
            f'{part("c", completed)}{part("r", rejected)}{part("f", failed)}</span>'
            f'<span class="pct" data-percent="{percent}">{done}/{total} · {percent}%</span></span>')


def when(iso: str | None) -> str:
    return escape(iso[:19].replace("T", " ")) if iso else ""


def batch_row(row: BatchRow) -> str:
    state = escape(row.state) + (f" #{row.position}" if row.state == "queued" and row.position else "")
    extra = f'<div class="muted err">{escape(row.note)}</div>' if row.note else ""
    if row.rerun_of:
        extra += f'<div class="muted">re-run of <a href="{batch_href(row.rerun_of)}">{escape(row.rerun_of)}</a></div>'
    average = "" if row.average_score is None else f"{row.average_score:.1f}"
    return (f'<tr data-batch="{escape(row.batch_id)}"><td><a href="{batch_href(row.batch_id)}">{escape(row.batch_id)}'
            f'</a>{extra}</td><td><span class="state s-{escape(row.state)}">{state}</span></td>'
            f"<td>{progress_bar(row.total, row.completed, row.rejected, row.failed)}</td>"
            f"<td>{row.completed}</td><td>{row.rejected}</td><td>{row.failed}</td><td>{average}</td>"
            f"<td>{when(row.started_at)}</td><td>{when(row.finished_at)}</td></tr>")


def batch_table_body(rows: list[BatchRow]) -> str:
    if not rows:
        return '<tr><td colspan="9" class="muted">No batches yet: publish one (README, "Publish a batch").</td></tr>'
    return "".join(batch_row(r) for r in rows)


def filter_links(label: str, chosen: str, links: list[tuple[str, str]]) -> str:
    return f'<p class="filters">{label}' + "".join(
        f'<a href="{href}" class="{"on" if name == (chosen or "all") else ""}">{name}</a>' for name, href in links
    ) + "</p>"


def filters(state: str) -> str:
    return filter_links("", state, [("all", "/")] + [(s, f"/?state={s}") for s in STATES])


def throughput_chart(rates: list[tuple[float, float]], width: int = 640, height: int = 120) -> str:
    """Tasks finished per second over the sampled minutes, as an inline SVG polyline (newest right)."""
    if len(rates) < 2:
        return '<p class="muted">Throughput appears after a few seconds of samples.</p>'
    t0, t1 = rates[0][0], rates[-1][0]
    top = max(1.0, max(r for _, r in rates))
    span = max(t1 - t0, 1e-9)
    points = " ".join(f"{40 + (t - t0) / span * (width - 50):.1f},{height - 20 - r / top * (height - 30):.1f}"
                      for t, r in rates)
    minutes = (t1 - t0) / 60
    return (f'<svg id="throughput-svg" width="{width}" height="{height}" role="img" '
            f'aria-label="tasks finished per second">'
            f'<line x1="40" y1="{height - 20}" x2="{width - 10}" y2="{height - 20}" stroke="#ccd"/>'
            f'<text x="2" y="14">{top:.0f}/s</text><text x="2" y="{height - 22}">0</text>'
            f'<text x="40" y="{height - 5}">-{minutes:.1f} min</text><text x="{width - 40}" y="{height - 5}">now</text>'
            f'<polyline fill="none" stroke="#2f6fdb" stroke-width="1.5" points="{points}"/></svg>'
            f'<div class="muted">now {rates[-1][1]:.0f} tasks/s · peak {top:.0f} tasks/s</div>')


def query(state: str = "", page: int = 1) -> str:
    """The batches page's query string: ``?state=...&page=...``, without what is the default."""
    asked = ([f"state={quote(state, safe='')}"] if state else []) + ([f"page={page}"] if page != 1 else [])
    return "?" + "&".join(asked) if asked else ""


def pager(shown: BatchesPage, state: str) -> str:
    """Links to the newer and older pages of batches, around "page N of M"."""
    previous = (f'<a href="/{escape(query(state, shown.page - 1))}" rel="prev">previous</a>' if shown.page > 1
                else "")
    following = (f'<a href="/{escape(query(state, shown.page + 1))}" rel="next">next</a>'
                 if shown.page < shown.pages else "")
    return f'{previous}<span>page {shown.page} of {shown.pages}</span>{following}'


def batches_page(shown: BatchesPage, state: str, chart: str, stream: str) -> str:
    body = (f"<h1>Batches</h1>{filters(state)}<h2 style='font-size:1rem'>Throughput</h2>"
            f'<div id="chart">{chart}</div><table><thead><tr><th>batch</th><th>state</th><th>progress</th>'
            "<th>completed</th><th>rejected</th><th>failed</th><th>average score</th><th>started</th>"
            f'<th>finished</th></tr></thead><tbody id="rows">{batch_table_body(shown.rows)}</tbody></table>'
            f'<p class="pager" id="pager">{pager(shown, state)}</p>')
    return layout("Batches", body, active="batches", stream=stream)


def rerun_button(action: str, tasks: str | list[str], label: str) -> str:
    body = escape(json.dumps({"tasks": tasks}))
    return f'<button data-action="{action}" data-body="{body}">{escape(label)}</button>'


def task_row(index: int, row: TaskRow, rerun: str | None = None) -> str:
    """``rerun``: where to ask for a re-run of this task, offered when it failed (in a finished batch)."""
    details = []
    if row.tags:
        details.append("tags: " + escape(", ".join(row.tags)))
    if row.issues:
        details.append('<span class="err">' + escape("; ".join(row.issues)) + "</span>")
    if row.error:
        details.append('<span class="err">' + escape(row.error) + "</span>")
    if rerun and row.stage == "failed":
        details.append(rerun_button(rerun, [row.task_id], "Re-run this task"))
    score = "" if row.score is None else str(row.score)
    return (f'<tr id="t{index}" data-task="{escape(row.task_id)}" data-stage="{escape(row.stage)}">'
            f"<td>{escape(row.task_id)}</td><td>{escape(row.title)}</td>"
            f'<td><span class="stage s-{escape(row.stage)}">{escape(row.stage)}</span></td>'
            f'<td>{score}</td><td>{"<br>".join(details)}</td></tr>')


DETAILS_GONE = ("This batch's details (its tasks and their results) are no longer kept: the console keeps the most "
                "recent batches' details, CONSOLE_DETAIL_BYTES in all. Its summary stays.")


def batch_summary(row: BatchRow | None, counts: dict[str, int], trace_url: str | None,
                  details_gone: bool = False) -> str:
    if row is None:
        return '<p class="muted">Neither the console nor the workflow app knows this batch (yet).</p>'
    position = f" · #{row.position} in the queue" if row.position else ""
    trace = f' · <a href="{escape(trace_url)}">trace</a>' if trace_url else ""
    stages = "".join(f'<span><span class="stage s-{s}">{s}</span> {counts.get(s, 0)}</span>' for s in records.stages())
    note = f'<p class="err">{escape(row.note)}</p>' if row.note else ""
    if details_gone:
        note += f'<p class="muted" id="details-gone">{DETAILS_GONE}</p>'
    return (f'<p><span class="state s-{escape(row.state)}" id="state">{escape(row.state)}</span>{position} · '
            f"{progress_bar(row.total, row.completed, row.rejected, row.failed)} · started {when(row.started_at)}"
            f"{' · finished ' + when(row.finished_at) if row.finished_at else ''}{trace}</p>"
            f'<p class="counts">{stages}</p>{note}')


def batch_actions(row: BatchRow | None, can_rerun: bool, failed: int) -> str:
    if row is None:
        return ""
    target = batch_href(row.batch_id)
    buttons = []
    if row.state in ("running", "queued"):
        confirm = f"Terminate batch {escape(row.batch_id)}? Its unfinished tasks will be reported failed."
        buttons.append(f'<button data-action="{target}/terminate" data-confirm="{confirm}">Terminate</button>')
    if can_rerun and row.state in ("finished", "failed"):
        buttons.append(rerun_button(f"{target}/rerun", "all", "Re-run batch"))
        if failed:
            buttons.append(rerun_button(f"{target}/rerun", "failed",
                                        f"Re-run the {failed} failed task{'s' if failed != 1 else ''}"))
    return " ".join(buttons)


def shown_tasks(tasks: list[TaskRow], stage: str) -> list[tuple[int, TaskRow]]:
    """The rows a batch page lists: (index in the batch, task), of one stage if asked, MAX_TASK_ROWS at most."""
    return [(i, t) for i, t in enumerate(tasks) if not stage or t.stage == stage][:MAX_TASK_ROWS]


def batch_page(batch_id: str, row: BatchRow | None, tasks: list[TaskRow], counts: dict[str, int], stage: str,
               actions: str, trace_url: str | None, stream: str, rerun: str | None, details_gone: bool = False) -> str:
    shown = shown_tasks(tasks, stage)
    stage_filter = filter_links("tasks: ", stage, [("all", "?")] + [(s, f"?stage={s}") for s in records.stages()])
    more = (f'<p class="muted">The first {MAX_TASK_ROWS} of {len(tasks)} tasks; filter by stage for the others.</p>'
            if len(tasks) > len(shown) and not stage else "")
    body = (f'<h1>Batch {escape(batch_id)}</h1><div id="summary">{batch_summary(row, counts, trace_url, details_gone)}'
            "</div>"
            f'<div id="actions">{actions}</div>{stage_filter}{more}<table><thead><tr><th>task</th><th>title</th>'
            f'<th>stage</th><th>score</th><th>tags, issues, error</th></tr></thead><tbody id="tasks">'
            + "".join(task_row(i, t, rerun) for i, t in shown) + "</tbody></table>")
    return layout(f"Batch {batch_id}", body, active="batches", stream=stream, batch=batch_id)


def scorers_part(now: dict[str, Any]) -> str:
    scorers = now.get("scorers", [])
    stages = now.get("stages", {})
    backlog = sum(r.get("total", 0) - r.get("done", 0) for r in now.get("running", [])) + now.get(
        "queued_tasks", sum(q.get("total", 0) for q in now.get("queued", [])))
    rows = "".join(
        f'<tr data-replica="{escape(str(s["replica"]))}"><td>{escape(str(s["replica"]))}</td><td>{s["slots"]}</td>'
        f'<td>{s["in_progress"]}</td><td>{s["per_s"]:.1f}</td><td>{s["scored"]}</td>'
        f'<td>{s["seen_s_ago"]:.0f} s ago</td></tr>'
        for s in scorers) or '<tr><td colspan="6" class="muted">No scorer has answered yet.</td></tr>'
    error = f'<p class="err">{escape(now["error"])}</p>' if now.get("error") else ""
    return (f'{error}<p class="counts"><span>backlog <strong id="backlog">{backlog}</strong> tasks</span>'
            + "".join(f"<span>at {escape(step)} {stages.get(step, 0)}</span>" for step in records.steps())
            + f'<span>score calls in flight {now.get("calls_in_flight", 0)}</span></p>'
            + "<table><thead><tr><th>replica</th><th>slots</th>"
            "<th>tasks in progress</th><th>scored per second</th><th>scored (since the workflow app started)</th>"
            f"<th>last answer</th></tr></thead><tbody>{rows}</tbody></table>")


def scorers_page(now: dict[str, Any], chart: str) -> str:
    body = (f'<h1>Scorers</h1><div id="scorers">{scorers_part(now)}</div>'
            f'<h2 style="font-size:1rem">Throughput (tasks finished per second)</h2><div id="chart">{chart}</div>')
    return layout("Scorers", body, active="scorers", stream="/events/scorers")


def login_page(error: str = "", next_url: str = "/") -> str:
    message = f'<p class="err">{escape(error)}</p>' if error else ""
    body = (f"<h1>Sign in</h1>{message}<form method=post action=/login><input type=hidden name=next "
            f'value="{escape(next_url)}"><label>The stack\'s token (<code>taskfan console</code> prints a sign-in '
            "link; the token is <code>ingest-token</code> in <code>.taskfan/secrets/secrets.json</code>)<br>"
            '<input name=token type=password size=50 autofocus></label> <button>Sign in</button></form>')
    return layout("Sign in", body, active="")


def trace_page(batch_id: str, trace_id: str, rows: list[SpanRow], raw_url: str, note: str = "") -> str:
    """The batch's trace as a waterfall: every span of every sidecar, in start order, under its parent."""
    total = max((r.start_ms + r.duration_ms for r in rows), default=0.0) or 1.0
    services = sorted({r.service for r in rows})
    lines = "".join(
        f'<tr data-service="{escape(r.service)}"><td>{escape(r.service)}</td>'
        f'<td style="padding-left:{0.5 + r.depth}rem">{escape(r.operation)}{" ⚠" if r.error else ""}</td>'
        f'<td>{r.start_ms:.1f}</td><td>{r.duration_ms:.1f}</td><td style="width:30%"><div style="position:relative;'
        f'height:.8rem"><span class="{"f" if r.error else "c"}" style="position:absolute;height:100%;'
        f'left:{100 * r.start_ms / total:.2f}%;width:{max(0.3, 100 * r.duration_ms / total):.2f}%"></span></div>'
        "</td></tr>"
        for r in rows)
    body = (f'<h1>Trace of batch <a href="{batch_href(batch_id)}">{escape(batch_id)}</a></h1>{note}'
            f'<p class="muted">trace {escape(trace_id)} · {len(rows)} spans from {len(services)} services '
            f'({escape(", ".join(services))}) · <a href="{escape(raw_url)}">Jaeger\'s JSON</a></p>'
            '<table><thead><tr><th>service</th><th>operation</th><th>start (ms)</th><th>duration (ms)</th>'
            f'<th>when</th></tr></thead><tbody id="spans">{lines}</tbody></table>')
    return layout(f"Trace of {batch_id}", body, active="batches")
