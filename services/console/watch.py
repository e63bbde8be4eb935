"""One loop asks the workflow app how things stand every ``INTERVAL_S``; every page and stream reads its last
answer, so ten open browsers cost the workflow app no more than one. Also samples the throughput counter.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from services.console.records import Throughput, per_replica_rates

log = logging.getLogger(__name__)

INTERVAL_S = 1.0


class Watcher:
    def __init__(self, ask: Callable[[], dict[str, Any]], interval_s: float = INTERVAL_S) -> None:
        self.ask = ask
        self.interval_s = interval_s
        self.throughput = Throughput()
        self._lock = threading.Lock()
        self._now: dict[str, Any] = {}
        self._at = 0.0
        self._rates: dict[str, float] = {}
        self.error: str | None = None  # why the last question went unanswered
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def now(self) -> dict[str, Any]:
        """The workflow app's last answer (``console-batches``), with each scorer's tasks scored per second."""
        with self._lock:
            now = dict(self._now)
            rates = dict(self._rates)
        now["scorers"] = [{**s, "per_s": round(rates.get(s["replica"], 0.0), 1)} for s in now.get("scorers", [])]
        now["error"] = self.error
        return now

    def poll(self) -> None:
        try:
            answer = self.ask()
        except Exception as exc:  # noqa: BLE001 - shown on the pages; asked again next round
            if self.error is None:
                log.warning("the workflow app did not answer", extra={"error": str(exc)})
            self.error = f"the workflow app did not answer: {exc}"
            return
        at = time.monotonic()
        self.error = None
        self.throughput.sample(at, int(answer.get("finished_tasks", 0)))
        with self._lock:
            if self._now:
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
