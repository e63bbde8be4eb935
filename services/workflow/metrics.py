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

REGISTRY = CollectorRegistry()
BACKLOG = Gauge("taskfan_backlog_tasks",
                "Tasks accepted and not finished yet: the rest of every running batch and all of every queued "
                "one; what the scorers still have to score (the scorers' autoscaler reads it)", registry=REGISTRY)
BATCHES = Gauge("taskfan_batches", "Batches in the admission ledger, by state", ["state"], registry=REGISTRY)
TASKS = Counter("taskfan_tasks_finished", "Tasks this workflow process finished, by status", ["status"],
                registry=REGISTRY)
STEP_CALLS = Histogram("taskfan_step_call_seconds", "Step calls (service invocation of the step apps, pipeline.yaml) "
                       "from the call to its answer, by step and result", ["step", "result"], registry=REGISTRY,
                       buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
LEDGER_CHANGE = Histogram("taskfan_ledger_change_seconds", "Changes of the admission ledger (a batch queued, "
                          "admitted or released), from the first read to the last write, retries included",
                          registry=REGISTRY, buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                                      2.5, 5))


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



def tasks_finished(results: Iterable[TaskResult]) -> None:
    for result in results:
        TASKS.labels(status=result.status).inc()


def step_call(step: str, result: str, seconds: float) -> None:
    STEP_CALLS.labels(step=step, result=result).observe(seconds)


def record(ledger: Ledger, done: dict[str, int]) -> None:
    BACKLOG.set(ledger.backlog(done))
    BATCHES.labels(state="running").set(len(ledger.running))
    BATCHES.labels(state="queued").set(ledger.queued)


def serve(settings: Settings, book: live.LiveBatches, steps: tuple[str, ...]) -> WSGIServer | None:
    """/metrics, with the tasks of ``book`` in each of ``steps`` (the pipeline's)."""
    if not settings.metrics_port:
        return None
    REGISTRY.register(TasksInStep(book, steps))
    server, _ = start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=REGISTRY)
    log.info("metrics on /metrics", extra={"address": f"{settings.metrics_host}:{settings.metrics_port}"})
    return server
