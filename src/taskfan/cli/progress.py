"""A batch's progress on the terminal: a live bar on a TTY, plain lines when piped (logs, CI).

Plain logic over a stream and a clock, so it is tested without a terminal: the bar is redrawn in place
(``\\r``, ANSI erase) with done / total, the rate and the time left; piped, a line is written only when
the state or the done count changes, never more often than ``PLAIN_EVERY_S`` while the count moves.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any, TextIO

BAR_WIDTH = 30
RATE_WINDOW_S = 10.0  # the rate is measured over the last seconds, not since the start
PLAIN_EVERY_S = 2.0


class Progress:
    def __init__(self, stream: TextIO, clock: Callable[[], float] = time.monotonic, tty: bool | None = None):
        self.stream, self.clock = stream, clock
        self.tty = stream.isatty() if tty is None else tty
        self.samples: deque[tuple[float, int]] = deque()
        self.last_plain: tuple[str, int] | None = None
        self.last_plain_at = float("-inf")
        self.drawn = False

    def rate(self) -> float | None:
        """Tasks per second over the last ``RATE_WINDOW_S``; None until two samples are apart."""
        if len(self.samples) < 2:
            return None
        (t0, d0), (t1, d1) = self.samples[0], self.samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else None

    def update(self, summary: dict[str, Any]) -> None:
        """Show a status summary (``taskfan status``'s fields: state, done, total, position, ...)."""
        now, done = self.clock(), int(summary.get("done") or 0)
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[0][0] > RATE_WINDOW_S:
            self.samples.popleft()
        if self.tty:
            self.stream.write("\r\x1b[2K" + self.line(summary))
            self.drawn = True
        else:
            key = (str(summary.get("state")), done)
            ended = summary.get("state") in ("COMPLETED", "FAILED", "TERMINATED")
            if key != self.last_plain and (ended or key[0] != (self.last_plain or ("",))[0]
                                           or now - self.last_plain_at >= PLAIN_EVERY_S):
                self.stream.write(self.line(summary) + "\n")
                self.last_plain, self.last_plain_at = key, now
        self.stream.flush()

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False

    def line(self, summary: dict[str, Any]) -> str:
        state, done, total = summary.get("state"), int(summary.get("done") or 0), summary.get("total")
        if state == "QUEUED":
            place = summary.get("position")
            return f"QUEUED{f' at position {place}' if place else ''}: 0/{total or '?'} tasks, waiting for admission"
        parts = [f"{state}: {done}/{total or '?'} tasks"]
        if self.tty and total:
            filled = round(BAR_WIDTH * done / total)
            parts.insert(0, f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {100 * done / total:3.0f}%")
        counts = [f"{summary[k]} {k}" for k in ("completed", "rejected", "failed") if summary.get(k)]
        if counts:
            parts.append(", ".join(counts))
        rate = self.rate()
        if state == "RUNNING" and rate:
            parts.append(f"{rate:.0f} tasks/s")
            if total and done < total:
                parts.append(f"{_duration((total - done) / rate)} left")
        return "  ".join(parts)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
