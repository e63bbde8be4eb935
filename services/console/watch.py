"""One loop asks the workflow app how things stand every ``INTERVAL_S``, and Redis how long the streams are and
how far behind their consumer groups (``streams``); every page and stream reads the last answers, so ten open
browsers cost the workflow app and Redis no more than one. Also samples the throughput counter.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.console.records import Throughput, per_replica_rates
from services.console.streams import StreamsNow
from services.workflow.models import BatchesNow

log = logging.getLogger(__name__)

INTERVAL_S = 1.0


@dataclass(frozen=True)
class Seen:
    """The workflow app's last answer, each scorer's tasks scored per second since the one before, and why the
    last question went unanswered (None: it was answered)."""

    answer: BatchesNow = field(default_factory=BatchesNow)
    per_s: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    streams: StreamsNow = field(default_factory=StreamsNow)

    def scorers(self) -> list[dict[str, Any]]:
        return [{**s.model_dump(), "per_s": round(self.per_s.get(s.replica, 0.0), 1)} for s in self.answer.scorers]

    @property
    def backlog(self) -> int:
        """Tasks not finished yet: those of the running batches and of the whole queue."""
        return sum(r.total - r.done for r in self.answer.running) + self.answer.queued_tasks


class Watcher:
    """``ask``: the workflow app's answer; ``streams``: the streams' lag (``streams.reader``; None: not shown)."""

    def __init__(self, ask: Callable[[], BatchesNow], interval_s: float = INTERVAL_S,
                 streams: Callable[[], StreamsNow] | None = None) -> None:
        self.ask = ask
        self.read_streams = streams
        self._streams = StreamsNow(error=None if streams else "the console has no Redis user to read the streams with")
        self.interval_s = interval_s
        self.throughput = Throughput()
        self._lock = threading.Lock()
        self._now: BatchesNow | None = None
        self._at = 0.0
        self._rates: dict[str, float] = {}
        self.error: str | None = None  # why the last question went unanswered
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def now(self) -> Seen:
        """The workflow app's last answer (``console-batches``), with each scorer's tasks scored per second."""
        with self._lock:
            return Seen(answer=self._now or BatchesNow(), per_s=dict(self._rates), error=self.error,
                        streams=self._streams)

    def poll(self) -> None:
        if self.read_streams is not None:
            streams = self.read_streams()
            with self._lock:
                self._streams = streams
        try:
            answer = self.ask()
        except Exception as exc:  # noqa: BLE001 - shown on the pages; asked again next round
            if self.error is None:
                log.warning("the workflow app did not answer", extra={"error": str(exc)})
            self.error = f"the workflow app did not answer: {exc}"
            return
        at = time.monotonic()
        self.error = None
        self.throughput.sample(at, {p.process: p.finished_tasks for p in answer.processes})
        with self._lock:
            if self._now is not None:
                self._rates = per_replica_rates(self._now, answer, at - self._at)
            self._now, self._at = answer, at

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.is_set():
                self.poll()
                self._stop.wait(self.interval_s)

        self._thread = threading.Thread(target=loop, name="console-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
