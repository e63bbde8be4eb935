"""Where the time goes: CPU time each process spent during a scenario, from the kernel's own counters.

Wall-clock figures move with whatever else the machine does; the CPU a process burns per task does not
(much). ``CpuMeter`` reads user + system time of each process (and of the children it waited for) before
and after, so a figure is the work done, not the time waited.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import psutil


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system + times.children_user + times.children_system


class CpuMeter:
    """CPU seconds per named process between ``__enter__`` and ``__exit__``.

    A process that exits in between keeps the figure of its last reading (taken at the start).
    """

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = dict(pids)
        self.before: dict[str, float] = {}
        self.seconds: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        readings = {}
        for name, pid in self.pids.items():
            with contextlib.suppress(psutil.Error):
                readings[name] = cpu_seconds(pid)
        return readings

    def start(self) -> None:
        self.before = self._read()

    def stop(self) -> None:
        after = self._read()
        self.seconds = {name: max(0.0, after.get(name, start) - start) for name, start in self.before.items()}

    def __enter__(self) -> CpuMeter:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def ms_per_unit(self, units: int) -> dict[str, float]:
        """Milliseconds of CPU per unit of work (a task), per process, largest first."""
        ranked = sorted(self.seconds.items(), key=lambda item: item[1], reverse=True)
        return {name: round(1000 * seconds / units, 3) for name, seconds in ranked}

    def total_ms_per_unit(self, units: int) -> float:
        return round(1000 * sum(self.seconds.values()) / units, 3)
