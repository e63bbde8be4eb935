"""The soak's pure half: the batches it publishes, what their outcomes must say, and the ledger.

No stack, no I/O: ``bench.soak`` records what it published, received and injected, and this module
turns that into the ledger (a JSON-able dict), its text form and the reasons the run failed.
"""

from __future__ import annotations

import json
import random
import statistics
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from bench import workload

# The four ways README "Publishing a batch (four ways)" documents, in rotation order.
WAYS = ("http", "cli", "dapr", "redis")
WAY_NAMES = {"http": "ingest POST /batches", "cli": "taskfan publish", "dapr": "Dapr publish API (ingest sidecar)",
             "redis": "raw Redis XADD"}

# Mixed scripts on purpose: accents, CJK, Cyrillic, right-to-left, emoji, control characters. Some titles
# and descriptions are too short, so every batch has rejected tasks too; "urgent"/"api" set the tags.
TITLES = [
    "Urgent: fix login API", "Urgent : réparer la connexion", "紧急 urgent：修复登录接口", "Update the Straße docs",
    "Ärger mit dem Cache", "🔥 URGENT hotfix 🚒", "إصلاح صفحة الدخول", "Fix", "Добавить фильтры поиска",
    "Ñandú: tune quotas", "ok", "Rotate the signing keys", "緊急ではない: ログ整理",
]
DESCRIPTIONS = [
    "The login api returns 500 errors", "L'API de connexion renvoie des erreurs 500 — à corriger",
    "登录接口返回 500 错误，请检查 API 网关", "Refresh the getting-started guide ✨",
    "Кэш не сбрасывается после деплоя",
    "short", "واجهة API ترجع أخطاء عند تسجيل الدخول", "Tab\tnewline\n quote \" backslash \\ done",
    "", "Emoji only in the middle 👩‍💻 of the text, no keyword", "The Api owner asked for filters 🙏",
]


def make_batch(rng: random.Random, batch_id: str, min_tasks: int, max_tasks: int) -> dict[str, Any]:
    """A valid batch of ``min_tasks``..``max_tasks`` tasks with mixed text; some ids are not ASCII."""
    count = rng.randint(min_tasks, max_tasks)
    tasks = []
    for i in range(count):
        task_id = f"t{i:03d}" if rng.random() < 0.8 else f"tâche-{i:03d}-任务"
        tasks.append({"task_id": task_id, "title": rng.choice(TITLES), "description": rng.choice(DESCRIPTIONS)})
    return {"batch_id": batch_id, "tasks": tasks}


def expected_result(task: dict[str, Any]) -> tuple[str, int]:
    """(status, score) the rules give a task that did not fail."""
    status, score, _ = workload.expected(task)
    return status, score


@dataclass
class Published:
    """A batch the soak published; ``accepted_at`` is None if no attempt was accepted."""

    batch_id: str
    way: str
    tasks: list[dict[str, Any]]
    started_at: float
    accepted_at: float | None = None
    attempts: int = 0
    errors: list[str] = field(default_factory=list)  # one line per refused attempt (the first few)


@dataclass
class Received:
    """One outcome event read from the ``outcomes`` stream."""

    outcome: dict[str, Any]
    entry_id: str
    received_at: float
    event_id: str | None = None  # the CloudEvent's id (``outcome:<batch_id>``)


@dataclass
class HostileEvent:
    """A hostile event the soak put on ``tasks`` (``bench.hostile``): it must get exactly one dead letter."""

    marker: str
    kind: str
    sent_at: float


@dataclass
class Fault:
    number: int
    kind: str  # "SIGKILL" (then restarted and ready) or "SIGSTOP" (then SIGCONT)
    process: str
    started_at: float
    ended_at: float | None = None  # restarted and ready, or SIGCONT sent
    hold_s: float | None = None  # SIGSTOP: how long the process was frozen
    error: str | None = None  # the restart failed
    reached: bool | None = None  # a fault point: whether a batch passed it (then the workflow app was killed there)

    def window(self, margin: float) -> tuple[float, float]:
        return self.started_at, (self.ended_at or self.started_at) + margin


def iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def _epoch(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text).timestamp()
    except (TypeError, ValueError):
        return None


def build_ledger(published: list[Published], received: dict[str, list[Received]], dead_letters: list[dict[str, Any]],
                 faults: list[Fault], rss_start: dict[str, dict[str, int]], rss_end: dict[str, dict[str, int]],
                 fault_margin_s: float = 30.0, hostile: list[HostileEvent] | None = None) -> dict[str, Any]:
    """Everything the soak saw, checked: one outcome per accepted batch (a repeat of the same event, same id and
    content, is a redelivery the contract allows, counted apart), every task accounted for, every hostile event
    answered by exactly one dead letter, and every failed task and other dead letter explained by a fault."""
    accepted = [p for p in published if p.accepted_at is not None]
    ids = {p.batch_id for p in published}
    missing, duplicated, redelivered, task_mismatch, wrong_results, failed_tasks = [], [], [], [], [], []
    tasks_in = tasks_out = 0
    statuses = {"completed": 0, "rejected": 0, "failed": 0}
    latencies = []
    for batch in accepted:
        tasks_in += len(batch.tasks)
        events = received.get(batch.batch_id, [])
        if not events:
            missing.append({"batch_id": batch.batch_id, "way": batch.way, "tasks": len(batch.tasks),
                            "accepted_at": iso(batch.accepted_at)})
            continue
        if len(events) > 1 and events[0].event_id is not None and all(
                e.event_id == events[0].event_id and e.outcome == events[0].outcome for e in events):
            redelivered.append({"batch_id": batch.batch_id, "outcomes": len(events), "event_id": events[0].event_id})
        elif len(events) > 1:
            duplicated.append({"batch_id": batch.batch_id, "way": batch.way, "outcomes": len(events),
                               "entries": [{"entry_id": e.entry_id, "event_id": e.event_id,
                                            "finished_at": e.outcome.get("finished_at"),
                                            "failed": e.outcome.get("failed")} for e in events]})
        first = events[0]
        outcome = first.outcome
        latencies.append(first.received_at - batch.accepted_at)
        results = outcome.get("results") or []
        tasks_out += len(results)
        sent_ids = [t["task_id"] for t in batch.tasks]
        got_ids = [r.get("task_id") for r in results]
        if got_ids != sent_ids or outcome.get("total") != len(sent_ids):
            task_mismatch.append({"batch_id": batch.batch_id, "sent": len(sent_ids), "in_outcome": len(got_ids),
                                  "total": outcome.get("total"),
                                  "absent": [t for t in sent_ids if t not in set(got_ids)][:10],
                                  "unexpected": [t for t in got_ids if t not in set(sent_ids)][:10]})
        begin, end = _epoch(outcome.get("started_at")), _epoch(outcome.get("finished_at"))
        active = _faults_during(faults, begin or batch.accepted_at, end or first.received_at, fault_margin_s)
        for task, result in zip(batch.tasks, results, strict=False):
            status = result.get("status")
            statuses[status] = statuses.get(status, 0) + 1
            if status == "failed":
                failed_tasks.append({"batch_id": batch.batch_id, "task_id": result.get("task_id"),
                                     "reason": result.get("error"), "faults_active": active})
                continue
            want = expected_result(task)
            if (status, result.get("score")) != want or result.get("task_id") != task["task_id"]:
                wrong_results.append({"batch_id": batch.batch_id, "task_id": task["task_id"],
                                      "expected": list(want), "got": [status, result.get("score")]})
    foreign = {batch_id: len(events) for batch_id, events in received.items() if batch_id not in ids}
    hostile = hostile or []
    letters = [_dead_letter_summary(d, hostile, faults, fault_margin_s) for d in dead_letters]
    answers = {event.marker: 0 for event in hostile}
    for letter in letters:
        if letter["hostile"] in answers:
            answers[letter["hostile"]] += 1
    kinds = {event.marker: event.kind for event in hostile}
    return {
        "batches_published": len(accepted),
        "batches_not_accepted": [{"batch_id": p.batch_id, "way": p.way, "attempts": p.attempts, "errors": p.errors}
                                 for p in published if p.accepted_at is None],
        "published_by_way": {way: sum(1 for p in accepted if p.way == way) for way in WAYS},
        "publish_attempts_retried": sum(1 for p in accepted if p.attempts > 1),
        "outcomes_received": sum(len(received.get(p.batch_id, [])) for p in accepted),
        "batches_with_exactly_one_outcome": sum(1 for p in accepted if len(received.get(p.batch_id, [])) == 1),
        "duplicates": duplicated,
        "redelivered_outcomes": redelivered,
        "missing": missing,
        "outcomes_for_unknown_batches": foreign,
        "tasks_in": tasks_in,
        "tasks_out": tasks_out,
        "task_statuses": statuses,
        "batches_whose_tasks_differ": task_mismatch,
        "wrong_results": wrong_results,
        "failed_tasks": failed_tasks,
        "failed_tasks_without_fault": sum(1 for t in failed_tasks if not t["faults_active"]),
        "dead_letters": letters,
        "dead_letters_without_fault": [d for d in letters if not d["hostile"] and not d["faults_active"]],
        "hostile_events_sent": len(hostile),
        "hostile_events_not_answered_once": [{"kind": kinds[m], "marker": m, "dead_letters": n}
                                             for m, n in answers.items() if n != 1],
        "faults_injected": len(faults),
        "faults": [{**asdict(f), "started_at": iso(f.started_at), "ended_at": iso(f.ended_at),
                    "recovery_s": None if f.ended_at is None else round(f.ended_at - f.started_at, 2)}
                   for f in faults],
        "latency_s": _latency_summary(latencies),
        "rss_kib": {"start": rss_start, "end": rss_end},
    }


def _faults_during(faults: list[Fault], begin: float, end: float, margin: float) -> list[str]:
    """Faults whose window (plus ``margin`` for the aftermath: reconnects, redeliveries) overlaps a batch's run."""
    hits = []
    for fault in faults:
        start, stop = fault.window(margin)
        if start <= end and begin <= stop:
            hits.append(f"#{fault.number} {fault.kind} {fault.process}")
    return hits


def _dead_letter_summary(letter: dict[str, Any], hostile: list[HostileEvent], faults: list[Fault],
                         margin: float) -> dict[str, Any]:
    event = letter.get("event")
    batch_id = letter.get("batch_id")
    if batch_id is None and isinstance(event, dict):
        data = event.get("data") if isinstance(event.get("data"), dict) else event
        batch_id = data.get("batch_id") if isinstance(data, dict) else None
    text = json.dumps(event, ensure_ascii=False)
    marker = next((h.marker for h in hostile if h.marker in text), None)
    at = _epoch(letter.get("received_at")) or 0.0
    return {"batch_id": batch_id, "reason": letter.get("reason"), "received_at": letter.get("received_at"),
            "hostile": marker, "faults_active": _faults_during(faults, at, at, margin)}


def _latency_summary(latencies: list[float]) -> dict[str, float | None]:
    if not latencies:
        return {"p50": None, "p95": None, "max": None}
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50": round(statistics.median(ordered), 2), "p95": round(p95, 2), "max": round(ordered[-1], 2)}


def problems(ledger: dict[str, Any]) -> list[str]:
    """Why the soak failed; empty when every promise held."""
    found = []
    if ledger["missing"]:
        found.append(f"{len(ledger['missing'])} published batch(es) have no outcome")
    if ledger["duplicates"]:
        found.append(f"{len(ledger['duplicates'])} batch(es) have more than one outcome")
    if ledger["failed_tasks_without_fault"]:
        found.append(f"{ledger['failed_tasks_without_fault']} task(s) failed while no fault was active")
    if ledger["dead_letters_without_fault"]:
        found.append(f"{len(ledger['dead_letters_without_fault'])} dead letter(s) that no fault or hostile event "
                     "explains")
    if ledger["hostile_events_not_answered_once"]:
        found.append(f"{len(ledger['hostile_events_not_answered_once'])} hostile event(s) did not get exactly one "
                     "dead letter")
    if ledger["tasks_in"] != ledger["tasks_out"]:
        found.append(f"tasks in {ledger['tasks_in']} != tasks in outcomes {ledger['tasks_out']}")
    if ledger["batches_whose_tasks_differ"]:
        found.append(f"{len(ledger['batches_whose_tasks_differ'])} outcome(s) do not list their batch's tasks")
    if ledger["wrong_results"]:
        found.append(f"{len(ledger['wrong_results'])} task result(s) differ from the rules")
    if ledger["batches_not_accepted"]:
        found.append(f"{len(ledger['batches_not_accepted'])} batch(es) were never accepted by their way of publishing")
    broken = [f for f in ledger["faults"] if f["error"]]
    if broken:
        found.append(f"{len(broken)} fault(s) were not recovered from: " + "; ".join(
            f"#{f['number']} {f['kind']} {f['process']}: {f['error']}" for f in broken))
    if ledger["batches_published"] == 0:
        found.append("nothing was published")
    return found


def render(ledger: dict[str, Any], config: dict[str, Any]) -> str:
    """The ledger as a few readable lines (the JSON file has every detail)."""
    lines = [
        f"soak ledger: {config['seconds']:.0f} s of publishing, seed {config['seed']}, {config['scorers']} scorers",
        f"  batches published      {ledger['batches_published']}  "
        + ", ".join(f"{n} by {WAY_NAMES[w]}" for w, n in ledger["published_by_way"].items())
        + f"; {ledger['publish_attempts_retried']} needed more than one attempt",
        f"  outcomes received      {ledger['outcomes_received']}",
        f"  exactly one outcome    {ledger['batches_with_exactly_one_outcome']}",
        f"  duplicates             {len(ledger['duplicates'])}  (redeliveries of the same event: "
        f"{len(ledger['redelivered_outcomes'])})",
        f"  missing                {len(ledger['missing'])}",
        f"  tasks in / in outcomes {ledger['tasks_in']} / {ledger['tasks_out']}  "
        + " ".join(f"{k} {v}" for k, v in ledger["task_statuses"].items()),
        f"  wrong results          {len(ledger['wrong_results'])}",
        f"  latency (s)            p50 {ledger['latency_s']['p50']}  p95 {ledger['latency_s']['p95']}  "
        f"max {ledger['latency_s']['max']}",
        f"  faults injected        {ledger['faults_injected']}",
        f"  dead letters           {len(ledger['dead_letters'])}  ({ledger['hostile_events_sent']} hostile events "
        f"sent, {len(ledger['hostile_events_not_answered_once'])} not answered exactly once; "
        f"{len(ledger['dead_letters_without_fault'])} letters with no fault or hostile event to explain them)",
    ]
    if ledger["batches_not_accepted"]:
        lines.append(f"  never accepted         {[b['batch_id'] for b in ledger['batches_not_accepted']]}")
    for item in ledger["missing"][:20]:
        lines.append(f"  missing: {item['batch_id']} ({item['way']}, {item['tasks']} tasks, "
                     f"accepted {item['accepted_at']})")
    for item in ledger["duplicates"][:20]:
        finished = ", ".join(str(e["finished_at"])[11:23] for e in item["entries"])
        lines.append(f"  duplicate: {item['batch_id']} ({item['outcomes']} outcomes, finished at {finished})")
    failed = ledger["failed_tasks"]
    lines.append(f"  failed tasks           {len(failed)} "
                 f"({ledger['failed_tasks_without_fault']} with no fault active)")
    for item in failed[:30]:
        during = ", ".join(item["faults_active"]) or "no fault active"
        lines.append(f"    {item['batch_id']} {item['task_id']}: {item['reason']} [{during}]")
    if len(failed) > 30:
        lines.append(f"    ... {len(failed) - 30} more in the JSON file")
    for letter in [d for d in ledger["dead_letters"] if not d["hostile"]][:20]:
        lines.append(f"  dead letter: {letter['batch_id']}: {letter['reason']}")
    lines.append("  faults:")
    for fault in ledger["faults"]:
        held = f", frozen {fault['hold_s']:.1f} s" if fault["hold_s"] is not None else ""
        result = f"ERROR {fault['error']}" if fault["error"] else f"recovered in {fault['recovery_s']} s{held}"
        if fault["reached"] is False:
            result = "not reached by any batch in time (nothing killed)"
        lines.append(f"    #{fault['number']:<3} {fault['started_at'][11:19]} {fault['kind']:<7} "
                     f"{fault['process']:<18} {result}")
    lines.append("  RSS (MiB)              start -> end")
    start, end = ledger["rss_kib"]["start"], ledger["rss_kib"]["end"]
    for name in [*start, *(n for n in end if n not in start)]:  # launch order
        s, e = start.get(name, {}), end.get(name, {})
        restarted = " (restarted)" if s.get("pid") and e.get("pid") and s["pid"] != e["pid"] else ""
        lines.append(f"    {name:<18} {_mib(s.get('rss_kib')):>8} -> {_mib(e.get('rss_kib')):>8}{restarted}")
    total_start = sum(v.get("rss_kib") or 0 for v in start.values())
    total_end = sum(v.get("rss_kib") or 0 for v in end.values())
    lines.append(f"    {'total':<18} {_mib(total_start):>8} -> {_mib(total_end):>8}")
    return "\n".join(lines)


def _mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f}"
