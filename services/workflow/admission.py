"""Admission control across batches: a global cap on tasks in progress, batches admitted in arrival order.

A running batch holds ``slots`` = the most tasks it can have in progress at once (its chunk
parallelism, at most its size). Batches wait in a queue; the head is admitted as soon as its slots fit
under the cap, and nothing overtakes it (strict arrival order). A batch larger than the cap is admitted
alone. No Dapr here: these functions decide, ``ledger_store`` reads and writes.

The queue can hold any number of batches, so it is not one document: each queued batch has a *ticket*
(its place in arrival order) and its entry under that ticket, in a key of its own. The ``Ledger`` document
holds only what every change needs: the running batches (at most the cap's worth), the tickets of the
queue's head and tail, the head's entry, the tickets released while queued, and counts. A change of the
queue reads and writes that document and the few entries it admits: its cost does not grow with the queue.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, Field


class Entry(BaseModel):
    """One batch in the ledger; enough to answer for it even if its workflow is gone."""

    batch_id: str
    slots: int
    total: int
    chunks: int
    since: str  # when it entered the queue (ISO 8601, UTC)


class Ticket(BaseModel):
    """A queued batch's place: its ticket, and its size (for the backlog when it leaves the queue)."""

    ticket: int
    total: int


class Ledger(BaseModel):
    cap: int = 0
    running: list[Entry] = Field(default_factory=list)
    head: int = 0  # the ticket of the first queued batch; == tail when none is queued
    tail: int = 0  # the next ticket
    head_entry: Entry | None = None  # the entry under ``head``, once read: whether it fits needs no read
    removed: list[int] = Field(default_factory=list)  # tickets past the head whose batch left the queue
    queued: int = 0
    queued_tasks: int = 0

    def in_progress(self) -> int:
        return sum(entry.slots for entry in self.running)

    def running_entry(self, batch_id: str) -> Entry | None:
        return next((e for e in self.running if e.batch_id == batch_id), None)

    def holds(self, ticket: Ticket | None) -> bool:
        """Whether ``ticket`` is still a place in the queue (not admitted, not released)."""
        return ticket is not None and self.head <= ticket.ticket < self.tail and ticket.ticket not in self.removed

    def position(self, batch_id: str, ticket: Ticket | None) -> int | None:
        """0 when running, 1.. when queued (1 = next), None when unknown."""
        if self.running_entry(batch_id) is not None:
            return 0
        if ticket is None or not self.holds(ticket):
            return None
        ahead = ticket.ticket - self.head - sum(1 for t in self.removed if self.head <= t < ticket.ticket)
        return ahead + 1

    def backlog(self, done: dict[str, int]) -> int:
        """Tasks accepted and not finished: every task of a queued batch, and what a running batch has
        not done yet (``done``: tasks finished per running batch, from its progress; none if unknown).
        """
        return self.queued_tasks + sum(max(0, entry.total - done.get(entry.batch_id, 0)) for entry in self.running)

    def queue_tickets(self, limit: int) -> list[int]:
        """The first ``limit`` places of the queue, in order."""
        tickets, ticket = [], self.head
        while ticket < self.tail and len(tickets) < limit:
            if ticket not in self.removed:
                tickets.append(ticket)
            ticket += 1
        return tickets


def fits(ledger: Ledger, entry: Entry) -> bool:
    return not ledger.running or ledger.in_progress() + entry.slots <= ledger.cap


def enqueue(ledger: Ledger, entry: Entry, ticket: int, cap: int) -> None:
    """Record ``entry`` as queued under ``ticket`` (== ``ledger.tail``; its entry is stored under it)."""
    ledger.cap = cap
    if ledger.head == ledger.tail:
        ledger.head_entry = entry
    ledger.tail = ticket + 1
    ledger.queued += 1
    ledger.queued_tasks += entry.total


def run_at_once(ledger: Ledger, entry: Entry, cap: int) -> bool:
    """Admit ``entry`` without queueing it if nothing is queued and its slots fit; False: it must queue."""
    ledger.cap = cap
    if ledger.head != ledger.tail or not fits(ledger, entry):
        return False
    ledger.running.append(entry)
    return True


def release(ledger: Ledger, batch_id: str, ticket: Ticket | None) -> bool:
    """Forget ``batch_id`` (finished or given up), running or queued (``ticket``). False: it was not there."""
    if (entry := ledger.running_entry(batch_id)) is not None:
        ledger.running.remove(entry)
        return True
    if ticket is None or not ledger.holds(ticket):
        return False
    ledger.queued -= 1
    ledger.queued_tasks -= ticket.total
    if ticket.ticket == ledger.head:
        ledger.head_entry = None
        _advance(ledger)
    else:
        ledger.removed.append(ticket.ticket)
    return True


def admit(ledger: Ledger, entries: Mapping[int, Entry | None]) -> tuple[list[tuple[int, Entry]], int | None]:
    """Admit from the head of the queue while the slots fit. ``entries`` holds the entries read so far by
    ticket (None: no entry under it, e.g. expired). Returns the entries admitted with their tickets, and the
    ticket whose entry is needed to go on (None: done); called again with it read, it carries on where it
    stopped."""
    admitted: list[tuple[int, Entry]] = []
    while ledger.head < ledger.tail:
        entry = ledger.head_entry
        if entry is None:
            if ledger.head not in entries:
                return admitted, ledger.head
            entry = entries[ledger.head]
            if entry is None or ledger.running_entry(entry.batch_id) is not None:  # lost, or queued twice
                ledger.queued -= 1
                ledger.queued_tasks -= entry.total if entry is not None else 0
                _advance(ledger)
                continue
            ledger.head_entry = entry
        if not fits(ledger, entry):
            break
        ledger.running.append(entry)
        admitted.append((ledger.head, entry))
        ledger.head_entry = None
        ledger.queued -= 1
        ledger.queued_tasks -= entry.total
        _advance(ledger)
    return admitted, None


def _advance(ledger: Ledger) -> None:
    """The head moves past its ticket and past every ticket released while queued behind it."""
    ledger.head += 1
    while ledger.head in ledger.removed:
        ledger.removed.remove(ledger.head)
        ledger.head += 1
    ledger.removed = [t for t in ledger.removed if t >= ledger.head]
