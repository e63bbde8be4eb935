"""How a batch is cut into chunks, and how many of them run at once. Plain logic, no Dapr.

A chunk is the unit of work of the batch workflow: one ``run_chunk`` activity calls each step once for all
its tasks. Why 100 tasks a chunk: README, "How a batch runs" (measured in Benchmarks).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")

TASKS_PER_CHUNK = 100


def split(items: Sequence[T], size: int = TASKS_PER_CHUNK) -> list[list[T]]:
    """Consecutive chunks of at most ``size`` items, in order."""
    if size < 1:
        raise ValueError("chunk size must be >= 1")
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def chunks_of(total: int) -> int:
    """How many chunks a batch of ``total`` tasks has."""
    return -(-total // TASKS_PER_CHUNK)


def parallel_chunks(max_in_flight: int) -> int:
    """How many chunks of a batch run at once, keeping at most ``max_in_flight`` tasks in progress."""
    return max(1, max_in_flight // TASKS_PER_CHUNK)


def slots_of(total: int, max_in_flight: int) -> int:
    """The admission slots a batch holds: the most tasks it can have in progress at once."""
    return min(total, parallel_chunks(max_in_flight) * TASKS_PER_CHUNK)
