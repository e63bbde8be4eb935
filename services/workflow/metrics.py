"""What the workflow app measures, in Prometheus' text format on ``/metrics`` (METRICS_PORT).

The backlog is computed from shared state (the admission ledger and each running batch's progress),
so every workflow replica reports the same figure, and an autoscaler may ask any of them. The
reconciler refreshes it on each round (every few seconds).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.workflow import live
from services.workflow.admission import Ledger
from taskfan.contracts import TaskResult
from taskfan.settings import Settings

log = logging.getLogger(__name__)

class TasksInStep(Collector):
    """Tasks of running batches in each step right now, from the activities' live view (``live``): where the
    backlog sits (waiting = between runs, after a failed call)."""

    def __init__(self, book: live.LiveBatches, steps: tuple[str, ...]) -> None:
        self.book, self.steps = book, steps

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("taskfan_tasks_in_step", "Tasks of running batches in each step now, in this "
                                   "workflow process", labels=["step"])
        counts = self.book.stage_counts()
        for step in (live.WAITING, *self.steps):
            family.add_metric([step], counts.get(step, 0))
        yield family



class WorkflowMetrics:
    """The workflow app's metrics, in a registry of its own: one per app, handed to whoever measures (the step
    client, the activities, the reconciler, the ledger's changes)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.backlog = Gauge(
            "taskfan_backlog_tasks", "Tasks accepted and not finished yet: the rest of every running batch and all "
            "of every queued one; what the scorers still have to score (the scorers' autoscaler reads it)",
            registry=self.registry)
        self.batches = Gauge("taskfan_batches", "Batches in the admission ledger, by state", ["state"],
                             registry=self.registry)
        self.tasks = Counter("taskfan_tasks_finished", "Tasks this workflow process finished, by status", ["status"],
                             registry=self.registry)
        self.step_calls = Histogram(
            "taskfan_step_call_seconds", "Step calls (service invocation of the step apps, pipeline.yaml) from the "
            "call to its answer, by step and result", ["step", "result"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.ledger_changes = Histogram(
            "taskfan_ledger_change_seconds", "Changes of the admission ledger (a batch queued, admitted or "
            "released), from the first read to the last write, retries included", registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))

    def watch(self, book: live.LiveBatches, steps: tuple[str, ...]) -> None:
        """Report the tasks of ``book`` in each of ``steps`` (the pipeline's)."""
        self.registry.register(TasksInStep(book, steps))

    def tasks_finished(self, results: Iterable[TaskResult]) -> None:
        for result in results:
            self.tasks.labels(status=result.status).inc()

    def step_call(self, step: str, result: str, seconds: float) -> None:
        self.step_calls.labels(step=step, result=result).observe(seconds)

    def ledger_changed(self, seconds: float) -> None:
        self.ledger_changes.observe(seconds)

    def record(self, ledger: Ledger, done: dict[str, int]) -> None:
        self.backlog.set(ledger.backlog(done))
        self.batches.labels(state="running").set(len(ledger.running))
        self.batches.labels(state="queued").set(ledger.queued)

    def serve(self, settings: Settings) -> WSGIServer | None:
        if not settings.metrics_port:
            return None
        server, _ = start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=self.registry)
        log.info("metrics on /metrics", extra={"address": f"{settings.metrics_host}:{settings.metrics_port}"})
        return server


