"""The curves of a long soak (`make soak-long`): a sample of the stack every few minutes, and whether any
curve trends the wrong way.

A sample: throughput and accepted -> outcome latency over the interval, RSS per process, Redis's memory,
the scheduler's data (etcd's database in use, its file, its folder with the write-ahead logs), the streams'
lengths and the logs' size. ``trends`` gives each curve's slope after the warm-up as a change per half hour,
a share of its level; ``problems`` names those over the limit (latency, memory, stored data, streams going
up; throughput going down).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import redis

from bench import residue
from taskfan.contracts import TOPICS
from taskfan.stack import Stack, StackState

WARM_UP_S = 600.0
HALF_HOUR_S = 1800.0
LIMIT = 0.10
# The curves checked, and the way each must not go.
# Logs are not among them: they grow until rotation caps them, however long that takes; ``log_problems``
# holds each process's logs to that cap instead.
RISING_IS_BAD = ("p50_s", "p95_s", "rss_total_kib", "redis_used_memory", "scheduler_db_in_use", "scheduler_db_bytes",
                 "stream_entries")
FALLING_IS_BAD = ("tasks_per_s",)


def sample(stack: Stack, client: redis.Redis, finished: list[tuple[float, float, int]], since: float,
           now: float, started: float) -> dict[str, Any]:
    """One sample. ``finished``: (outcome received at, accepted -> outcome seconds, tasks) of every batch."""
    window = [(latency, tasks) for at, latency, tasks in finished if since < at <= now]
    latencies = sorted(latency for latency, _ in window)
    state = StackState.load(stack.state_path)
    rss = {}
    for process in state.processes if state else []:
        try:
            status = Path(f"/proc/{process.pid}/status").read_text()
            rss[process.name] = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
        except (OSError, StopIteration):
            rss[process.name] = 0
    kept = residue.snapshot(client, stack)
    streams = {topic: kept.stream_entries.get(topic, 0) for topic in TOPICS}
    return {
        "t_s": round(now - started, 1), "at": now,
        "tasks_per_s": sum(tasks for _, tasks in window) / max(1e-9, now - since),
        "p50_s": _percentile(latencies, 0.50), "p95_s": _percentile(latencies, 0.95), "outcomes": len(window),
        "rss_kib": rss, "rss_total_kib": sum(rss.values()),
        "redis_used_memory": kept.used_memory, "redis_bytes_by_owner": kept.bytes, "redis_keys_by_owner": kept.keys,
        "scheduler_keys": kept.scheduler_keys,
        "scheduler_db_in_use": kept.scheduler_db_in_use, "scheduler_db_bytes": kept.scheduler_db_bytes,
        "scheduler_dir_bytes": kept.scheduler_dir_bytes, "aof_bytes": kept.aof_bytes,
        "streams": streams, "stream_entries": sum(streams.values()),
        "log_bytes": residue.dir_bytes(stack.logs_dir), "log_bytes_by_process": _logs_by_process(stack.logs_dir),
    }


def _logs_by_process(logs_dir: Path) -> dict[str, int]:
    """Bytes of each process's log and its rotated copies (``<name>.log``, ``<name>.log.<n>``)."""
    sizes: dict[str, int] = {}
    for path in logs_dir.glob("*.log*") if logs_dir.exists() else []:
        name = path.name.split(".log", 1)[0]
        sizes[name] = sizes.get(name, 0) + path.stat().st_size
    return sizes


def log_problems(samples: list[dict[str, Any]], max_bytes: int, files: int) -> list[str]:
    """A process whose logs outgrew their cap: the live file (rotated once over ``max_bytes``, checked every
    few seconds: allowed as much again) and ``files`` copies."""
    cap = 2 * max_bytes + files * 2 * max_bytes
    worst: dict[str, int] = {}
    for sample in samples:
        for name, size in (sample.get("log_bytes_by_process") or {}).items():
            worst[name] = max(worst.get(name, 0), size)
    return [f"the logs of {name} reached {size:,} bytes, over their cap of {cap:,} (LOG_MAX_BYTES, LOG_FILES)"
            for name, size in sorted(worst.items()) if size > cap]


def _percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, int(share * len(values)))]


def trends(samples: list[dict[str, Any]], warm_up_s: float = WARM_UP_S) -> dict[str, float | None]:
    """Each curve's change per half hour after the warm-up, as a share of its median there (None: too few
    points or a level of zero). The slope is Sen's (the median of the slopes between every two samples), so
    one sample taken during a fault (a p95 of seconds while Redis restarts) does not make a trend."""
    after = [s for s in samples if s["t_s"] >= warm_up_s]
    result: dict[str, float | None] = {}
    for name in (*RISING_IS_BAD, *FALLING_IS_BAD):
        points = [(s["t_s"], s[name]) for s in after if s.get(name) is not None]
        if len(points) < 3:
            result[name] = None
            continue
        level = statistics.median(y for _, y in points)
        if level == 0:
            result[name] = None if all(y == 0 for _, y in points) else 1.0
            continue
        slope = statistics.median((y2 - y1) / (x2 - x1) for i, (x1, y1) in enumerate(points)
                                  for x2, y2 in points[i + 1:] if x2 != x1)
        result[name] = slope * HALF_HOUR_S / level
    return result


def problems(found: dict[str, float | None], limit: float = LIMIT) -> list[str]:
    bad = []
    for name, change in found.items():
        if change is None:
            continue
        if name in RISING_IS_BAD and change > limit:
            bad.append(f"{name} rose {change:+.0%} per half hour after the warm-up (limit {limit:+.0%})")
        if name in FALLING_IS_BAD and change < -limit:
            bad.append(f"{name} fell {change:+.0%} per half hour after the warm-up (limit {-limit:+.0%})")
    return bad


class Sampler(threading.Thread):
    """Takes a sample every ``every_s`` seconds until stopped (and one at the start)."""

    def __init__(self, stack: Stack, finished: Callable[[], list[tuple[float, float, int]]], every_s: float,
                 report: Callable[[str], None]) -> None:
        super().__init__(name="sampler", daemon=True)
        self.stack, self.finished, self.every_s, self.report = stack, finished, every_s, report
        self.samples: list[dict[str, Any]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        client = redis.Redis(host=self.stack.settings.redis_host, port=self.stack.settings.redis_port,
                             password=self.stack.secrets.redis_password, socket_timeout=10)
        started = since = time.time()
        while True:
            now = time.time()
            try:
                taken = sample(self.stack, client, self.finished(), since, now, started)
            except (redis.RedisError, httpx.HTTPError) as exc:  # Redis or the scheduler restarting (a fault)
                self.report(f"sample skipped: {exc}")
            else:
                self.samples.append(taken)
                self.report(f"sample at {taken['t_s']:.0f} s: {taken['tasks_per_s']:.1f} tasks/s, p95 "
                            f"{taken['p95_s'] or 0:.2f} s, RSS {taken['rss_total_kib'] / 1024:,.0f} MiB, Redis "
                            f"{taken['redis_used_memory'] / 2**20:,.1f} MiB, scheduler in use "
                            f"{taken['scheduler_db_in_use'] / 2**20:,.2f} MiB, stream entries "
                            f"{taken['stream_entries']:,}, "
                            f"logs {taken['log_bytes'] / 2**20:,.1f} MiB")
                since = now
            if self.halt.wait(self.every_s):
                return


def plot(samples: list[dict[str, Any]], found: dict[str, float | None], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("tasks_per_s", "tasks/s", 1), ("p95_s", "accepted→outcome p50/p95 (s)", 1),
              ("rss_total_kib", "stack RSS (MiB)", 1024), ("redis_used_memory", "Redis used_memory (MiB)", 2**20),
              ("scheduler_db_in_use", "scheduler etcd in use (MiB)", 2**20),
              ("stream_entries", "stream entries", 1), ("log_bytes", "logs on disk (MiB)", 2**20),
              ("aof_bytes", "append-only file (MiB)", 2**20)]
    fig, axes = plt.subplots(4, 2, figsize=(12, 12))
    minutes = [s["t_s"] / 60 for s in samples]
    for ax, (name, label, scale) in zip(axes.flat, panels, strict=True):
        ax.plot(minutes, [(s.get(name) or 0) / scale for s in samples], marker="o")
        if name == "p95_s":
            ax.plot(minutes, [(s.get("p50_s") or 0) for s in samples], marker=".")
        change = found.get(name)
        ax.set_title(label + (f"  ({change:+.1%} / 30 min)" if change is not None else ""), fontsize=10)
        ax.axvline(WARM_UP_S / 60, color="grey", linestyle=":")
        ax.set_xlabel("minutes")
        ax.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
