"""The workflow app's Prometheus metrics: tasks by status, step call latency, tasks in each step, backlog."""

from prometheus_client import generate_latest

from services.workflow import live, metrics
from services.workflow.admission import Entry, Ledger
from taskfan.contracts import TaskResult


def test_metrics_name_what_a_dashboard_needs() -> None:
    book = live.LiveBatches()
    measured = metrics.WorkflowMetrics()
    measured.watch(book, ("validate", "enrich", "score"))
    before = generate_latest(measured.registry).decode()
    measured.tasks_finished([TaskResult(task_id="a", status="completed", score=1),
                            TaskResult(task_id="b", status="failed", score=None, error="x")])
    measured.step_call("score", "ok", 0.03)
    book.moving("metrics-test", "enrich", ["t1", "t2"])
    ledger = Ledger(running=[Entry(batch_id="r", slots=100, total=300, chunks=3, since="2026-11-30T00:00:00+00:00")],
                    head=0, tail=1, queued=1, queued_tasks=50)
    measured.record(ledger, {"r": 100})
    text = generate_latest(measured.registry).decode()

    def value(line_start: str, source: str) -> float:
        found = [line for line in source.splitlines() if line.startswith(line_start)]
        return float(found[0].rsplit(" ", 1)[1]) if found else 0.0

    assert value('taskfan_tasks_finished_total{status="failed"}', text) == value(
        'taskfan_tasks_finished_total{status="failed"}', before) + 1
    assert value('taskfan_step_call_seconds_count{result="ok",step="score"}', text) >= 1
    assert value('taskfan_step_call_seconds_bucket{le="0.05",result="ok",step="score"}', text) >= 1
    assert value('taskfan_tasks_in_step{step="enrich"}', text) >= 2
    assert value("taskfan_backlog_tasks", text) == 250  # 200 left of the running batch, 50 queued
    assert value('taskfan_batches{state="queued"}', text) == 1
