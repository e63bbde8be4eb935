"""What the workflow app measures, in Prometheus' text format on ``/metrics`` (METRICS_PORT).

The backlog is computed from shared state (the admission ledger and each running batch's progress),
so every workflow replica reports the same figure, and an autoscaler may ask any of them. The
reconciler refreshes it on each round (every few seconds).
"""

from __future__ import annotations

import logging
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Gauge, start_http_server

from services.workflow.admission import Ledger
from taskfan.settings import Settings

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry()
BACKLOG = Gauge("taskfan_backlog_tasks",
                "Tasks accepted and not finished yet: the rest of every running batch and all of every queued "
                "one; what the scorers still have to score (the scorers' autoscaler reads it)", registry=REGISTRY)
BATCHES = Gauge("taskfan_batches", "Batches in the admission ledger, by state", ["state"], registry=REGISTRY)


def record(ledger: Ledger, done: dict[str, int]) -> None:
    BACKLOG.set(ledger.backlog(done))
    BATCHES.labels(state="running").set(len(ledger.running))
    BATCHES.labels(state="queued").set(len(ledger.queue))


def serve(settings: Settings) -> WSGIServer | None:
    if not settings.metrics_port:
        return None
    server, _ = start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=REGISTRY)
    log.info("metrics on /metrics", extra={"address": f"{settings.metrics_host}:{settings.metrics_port}"})
    return server
