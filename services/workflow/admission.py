"""Admission control across batches: a global cap on tasks in progress, batches admitted in arrival order.

A running batch holds ``slots`` = the most tasks it can have in progress at once (its chunk
parallelism, at most its size). Batches wait in a queue; the head is admitted as soon as its slots fit
under the cap, and nothing overtakes it (strict arrival order). A batch larger than the cap is admitted
alone. The ledger is plain data: the state store keeps it, these functions decide. No Dapr here.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class Entry(BaseModel):
    """One batch in the ledger; enough to answer for it even if its workflow is gone."""

    batch_id: str
    slots: int
    total: int
    chunks: int
    since: str  # when it entered the queue (ISO 8601, UTC)


class Ledger(BaseModel):
    cap: int = 0
    queue: list[Entry] = Field(default_factory=list)  # waiting, in arrival order
    running: list[Entry] = Field(default_factory=list)

    def in_progress(self) -> int:
        return sum(entry.slots for entry in self.running)

    def find(self, batch_id: str) -> Entry | None:
        return next((e for e in (*self.running, *self.queue) if e.batch_id == batch_id), None)

    def backlog(self, done: dict[str, int]) -> int:
        """Tasks accepted and not finished: every task of a queued batch, and what a running batch has
        not done yet (``done``: tasks finished per running batch, from its progress; none if unknown).
        """
        return (sum(entry.total for entry in self.queue)
                + sum(max(0, entry.total - done.get(entry.batch_id, 0)) for entry in self.running))

    def position(self, batch_id: str) -> int | None:
        """0 when running, 1.. when queued (1 = next), None when unknown."""
        if any(e.batch_id == batch_id for e in self.running):
            return 0
        return next((i + 1 for i, e in enumerate(self.queue) if e.batch_id == batch_id), None)


def request(ledger: Ledger, entry: Entry, cap: int) -> list[str]:
    """Queue ``entry`` unless the ledger knows it; admit what fits; return the batch ids admitted now."""
    ledger.cap = cap
    if ledger.find(entry.batch_id) is None:
        ledger.queue.append(entry)
    return admit(ledger)


def ask(ledger: Ledger, entry: Entry, cap: int) -> tuple[list[str], int]:
    """``request``, told as its caller needs it: the other batches it admitted (to wake), and the batch's
    position (0: running)."""
    admitted = request(ledger, entry, cap)
    return [b for b in admitted if b != entry.batch_id], ledger.position(entry.batch_id) or 0


def release(ledger: Ledger, batch_id: str) -> list[str]:
    """Forget ``batch_id`` (finished or given up); admit what now fits; return the batch ids admitted."""
    ledger.running = [e for e in ledger.running if e.batch_id != batch_id]
    ledger.queue = [e for e in ledger.queue if e.batch_id != batch_id]
    return admit(ledger)


def admit(ledger: Ledger) -> list[str]:
    admitted = []
    while ledger.queue and (not ledger.running or ledger.in_progress() + ledger.queue[0].slots <= ledger.cap):
        entry = ledger.queue.pop(0)
        ledger.running.append(entry)
        admitted.append(entry.batch_id)
    return admitted
