"""What the console remembers, and where: a small summary of every recent batch, in memory and in the console's
state store (read back when it starts); each batch's details (its tasks, their results) in the store only, read
when a page or a re-run needs them. Plain logic: the store is a ``Store`` (``app.ConsoleState`` over the
console's sidecar; a fake in the unit tests).

The keys (Dapr prefixes them ``console||``), each written with a TTL as a backstop:
- ``taskfan-console~history~<slot>``: a ring of pages. Batches are numbered in the order the console first saw
  them; page ``block`` holds the summaries of batches ``block*PAGE_SIZE`` to ``block*PAGE_SIZE+PAGE_SIZE-1``
  and lives in slot ``block % pages``, so a new page overwrites the oldest one;
- ``taskfan-console~history``: the ring's head (the next batch's number, the ring's length);
- ``taskfan-console~tasks~<id>``, ``taskfan-console~results~<id>``: a batch's details, written once.

Bounded whatever comes: memory holds the summaries of the newest ``history`` batches (each of bounded size)
and a cache of details of at most ``cache_bytes``; the store holds ``ring_pages(history)`` pages, the head,
and details of at most ``detail_bytes`` in all (beyond that the oldest batches' details are deleted, their
summaries stay). Summary changes are written in batches by ``flush`` (every few seconds, by the console replica
that writes the history: ``writing``); details when they arrive, one write per batch. The other replicas follow
what it writes (``refresh``).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Literal, Protocol

from pydantic import BaseModel, StringConstraints, TypeAdapter, ValidationError

from taskfan.contracts import MAX_MESSAGE_BYTES, BatchId, Outcome, Task, TaskBatch, TaskResult, is_batch_id

log = logging.getLogger(__name__)

KEY_PREFIX = "taskfan-console"  # "~" is outside the batch-id alphabet: no batch id makes another key
HEAD_KEY = f"{KEY_PREFIX}~history"
PAGE_SIZE = 100  # summaries per page of the ring
STATE_TTL_S = 30 * 24 * 3600
REFRESH_S = 24 * 3600  # a page unchanged this long is written again, so that its TTL never runs out
FLUSH_INTERVAL_S = 2.0
CACHE_BYTES = 16 * 2**20
NOTE_CHARS = 300  # a dead-letter reason is kept this long
# A value the sidecar takes in one call (its message limit, with room for the request around it).
MAX_DETAIL_BYTES = MAX_MESSAGE_BYTES - 2**16
# Pages (up to ~260 KB each) and deletes per store call: a flush after an outage, or a shrunk ring, goes in
# several calls, each well under the sidecar's message limit.
PAGES_PER_CALL = 20
DELETES_PER_CALL = 200
READS_PER_CALL = 20

Detail = Literal["tasks", "results"]
DETAILS: tuple[Detail, ...] = ("tasks", "results")
Moment = Annotated[str, StringConstraints(max_length=40)]  # an ISO 8601 time
Note = Annotated[str, StringConstraints(max_length=NOTE_CHARS)]
TRACE_ID = r"^[0-9a-f]{32}$"
TraceId = Annotated[str, StringConstraints(pattern=TRACE_ID)]

TASKS = TypeAdapter(list[Task])
RESULTS = TypeAdapter(list[TaskResult])


def page_key(slot: int) -> str:
    return f"{HEAD_KEY}~{slot}"


def detail_key(kind: Detail, batch_id: str) -> str:
    """Only a batch id becomes part of a key (the topics' events are checked already; this is the last guard)."""
    if not is_batch_id(batch_id):
        raise ValueError(f"not a batch id: {batch_id!r}")
    return f"{KEY_PREFIX}~{kind}~{batch_id}"


def ring_pages(history: int) -> int:
    """The ring's length: the newest ``history`` batches span at most this many pages."""
    return -(-history // PAGE_SIZE) + 1


def utc_now() -> str:
    return datetime.now(UTC).isoformat()


def _cut(text: str | None, chars: int = 40) -> str | None:
    return None if text is None else text[:chars]


@dataclass(slots=True)
class Summary:
    """A batch as the console remembers it: a few numbers and short strings, whatever the batch's size."""

    number: int  # its place in the order the console saw batches: its page in the ring
    batch_id: BatchId
    total: int
    seen_at: Moment  # when the console saw it on `tasks`, or learned of it
    published: bool = False  # its outcome arrived: the counts and times below are final
    completed: int = 0
    rejected: int = 0
    failed: int = 0
    average_score: float | None = None
    started_at: Moment | None = None
    finished_at: Moment | None = None
    dead_letter: Note | None = None  # why it was dead-lettered
    rerun_of: BatchId | None = None
    trace_id: TraceId | None = None  # of the trace Dapr started when the batch was published
    tasks_bytes: int = 0  # the size of its tasks in the store; 0: not there
    results_bytes: int = 0
    details_dropped: bool = False  # its details were deleted for room, or never fitted: only this is left

    def held(self, kind: Detail) -> int:
        return self.tasks_bytes if kind == "tasks" else self.results_bytes

    def hold(self, kind: Detail, size: int) -> None:
        if kind == "tasks":
            self.tasks_bytes = size
        else:
            self.results_bytes = size


class Page(BaseModel):
    block: int  # it holds batches number block*PAGE_SIZE to block*PAGE_SIZE + PAGE_SIZE - 1
    written_at: float  # epoch seconds, to write it again before its TTL runs out
    batches: list[Summary]


class Head(BaseModel):
    next: int  # the number the next new batch gets
    pages: int  # the ring's length it was written with
    # When each slot's page was last written (epoch seconds; 0: never): a console that does not write (a standby
    # replica, ``refresh``) reads only the pages that changed.
    stamps: list[float] = []


class Store(Protocol):
    """The console's keys in its state store."""

    def read(self, keys: list[str]) -> dict[str, bytes]:
        """The values of those of ``keys`` that exist."""
        ...

    def change(self, writes: dict[str, bytes], deletes: list[str]) -> None:
        """Write and delete at once (each written key with a TTL); raises when the store refused."""
        ...


class HistoryUnreadable(RuntimeError):
    pass


class ByteCache:
    """Details read lately, least recently used out first, at most ``limit`` bytes (not thread-safe)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self._items: OrderedDict[str, bytes] = OrderedDict()

    def get(self, key: str) -> bytes | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: str, value: bytes) -> None:
        self.drop(key)
        if len(value) > self.limit:
            return
        self._items[key] = value
        self.size += len(value)
        while self.size > self.limit:
            _, old = self._items.popitem(last=False)
            self.size -= len(old)

    def drop(self, key: str) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self.size -= len(old)


class BatchBook:
    """Every batch the console saw on ``tasks``, its outcome from ``outcomes`` or its dead-letter reason: the
    newest ``history`` ones. Thread-safe; ``accepted``, ``finished``, the detail reads and ``flush`` call the
    store (outside the lock)."""

    def __init__(self, store: Store, *, history: int = 10_000, detail_bytes: int = 64 * 2**20,
                 cache_bytes: int = CACHE_BYTES, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.history = history
        self.detail_bytes = detail_bytes
        self.pages = ring_pages(history)
        self.clock = clock
        self._lock = threading.Lock()
        self._by_number: dict[int, Summary] = {}
        self._by_id: dict[str, Summary] = {}
        self._first = 0  # the oldest number kept
        self._next = 0  # the next new batch's number
        self._held_from = 0  # no summary numbered below this has details in the store
        self._detail_total = 0
        self._dirty: set[int] = set()  # blocks changed since the last flush
        self._written: dict[int, float] = {}  # block -> when its page was last written (epoch seconds)
        self._doomed: set[str] = set()  # keys to delete at the next flush (details, pages of a shrunk ring)
        self._writing: dict[str, bytes] = {}  # details being written now: readers get them from here meanwhile
        self._cache = ByteCache(cache_bytes)
        self._stamps: dict[int, float] = {}  # slot -> when its page was written, as the head says
        self._pages_read: dict[int, Page | None] = {}  # a standby's copy of each slot's page (``refresh``)
        self._seen: dict[int, float] = {}  # ... and the stamp it was read under
        # Flushes begun and the last one whose writes all went: a change made now is in the store once the flush
        # after the ones begun so far has gone (``mark``, ``stored``; a failed flush leaves its pages to the next).
        self._flushes_begun = 0
        self._flushed = 0

    # --- the topics' events ----------------------------------------------------------------------------

    def accepted(self, batch: TaskBatch, rerun_of: str | None = None, trace_id: str | None = None) -> None:
        """A batch on ``tasks``. The first content seen under an id is kept, as the workflow keeps it."""
        if not is_batch_id(batch.batch_id):
            return
        value = TASKS.dump_json(batch.tasks)
        with self._lock:
            summary = self._by_id.get(batch.batch_id) or self._add(batch.batch_id, len(batch.tasks))
            if rerun_of and is_batch_id(rerun_of) and not summary.rerun_of:
                summary.rerun_of = rerun_of
                self._touch(summary)
            if trace_id and re.match(TRACE_ID, trace_id) and not summary.trace_id:
                summary.trace_id = trace_id
                self._touch(summary)
            first = not (summary.tasks_bytes or summary.published or summary.details_dropped)
            if first:
                summary.total = len(batch.tasks)
            key = self._reserve(summary, "tasks", value) if first else None
        if key is not None:
            self._write(summary, "tasks", key, value)

    def finished(self, outcome: Outcome) -> None:
        if not is_batch_id(outcome.batch_id):  # only the workflow app publishes outcomes; still, never a key
            log.warning("an outcome without a batch id", extra={"batch_id": outcome.batch_id[:200]})
            return
        value = RESULTS.dump_json(outcome.results)
        with self._lock:
            summary = self._by_id.get(outcome.batch_id) or self._add(outcome.batch_id, outcome.total)
            first = not (summary.published or summary.details_dropped)
            summary.published = True
            summary.total, summary.completed, summary.rejected, summary.failed = (
                outcome.total, outcome.completed, outcome.rejected, outcome.failed)
            summary.average_score = outcome.average_score
            summary.started_at, summary.finished_at = _cut(outcome.started_at), _cut(outcome.finished_at)
            self._touch(summary)
            key = self._reserve(summary, "results", value) if first else None
        if key is not None:
            self._write(summary, "results", key, value)

    def dead_lettered(self, batch_id: str, reason: str) -> None:
        with self._lock:
            summary = self._by_id.get(batch_id)
            if summary is not None and not summary.published:
                summary.dead_letter = _cut(reason, NOTE_CHARS)
                self._touch(summary)

    def forget(self, batch_id: str) -> bool:
        """The batch was purged: its summary leaves the book (its page is written again without it at the next
        flush) and its details' keys are deleted. Whether the book had it."""
        with self._lock:
            summary = self._by_id.pop(batch_id, None)
            if summary is None:
                return False
            del self._by_number[summary.number]
            self._drop_details(summary)
            return True

    # --- reading -----------------------------------------------------------------------------------------

    def get(self, batch_id: str) -> Summary | None:
        with self._lock:
            return self._by_id.get(batch_id)

    def recent(self) -> list[Summary]:
        """Newest first."""
        with self._lock:
            found = (self._by_number.get(n) for n in range(self._next - 1, self._first - 1, -1))
            return [s for s in found if s is not None]

    def tasks(self, batch_id: str) -> list[Task] | None:
        """The batch's tasks, when the store still has them (blocking: a store read unless cached)."""
        data = self._details(batch_id, "tasks")
        return None if data is None else TASKS.validate_json(data)

    def results(self, batch_id: str) -> list[TaskResult] | None:
        """Its outcome's results, one per task in input order, when the store still has them."""
        data = self._details(batch_id, "results")
        return None if data is None else RESULTS.validate_json(data)

    @property
    def detail_bytes_held(self) -> int:
        with self._lock:
            return self._detail_total

    # --- the store ---------------------------------------------------------------------------------------

    def load(self) -> int:
        """Read the ring back (at the start, before any event): the newest ``history`` summaries, oldest first.
        Returns how many; raises ``HistoryUnreadable`` when the store does not answer."""
        try:
            head = _head(self.store.read([HEAD_KEY]).get(HEAD_KEY))
            if head is None:
                return 0
            found = self._read_pages(range(head.pages))
        except Exception as exc:  # noqa: BLE001 - whatever the sidecar's client raised
            raise HistoryUnreadable(f"the console's history could not be read: {exc}") from exc
        with self._lock:
            self._pages_read = {slot: _page(found.get(page_key(slot)), page_key(slot)) for slot in range(head.pages)}
            self._seen = _seen_stamps(head, self._pages_read)
            pages = {page_key(slot): page for slot, page in self._pages_read.items() if page is not None}
        kept = self._install(head, pages, writer=True)
        log.info("console history read", extra={"batches": kept, "detail_bytes": self._detail_total})
        return kept

    def refresh(self) -> bool:
        """A standby console's (another replica writes the history): the ring as the writer last wrote it, reading
        only the pages it rewrote since. Whether anything changed. Raises what the store raised."""
        head = _head(self.store.read([HEAD_KEY]).get(HEAD_KEY))
        if head is None:
            return False
        stamps = _stamps_of(head)
        with self._lock:
            stale = [slot for slot in range(head.pages) if self._seen.get(slot) != stamps.get(slot, 0.0)]
            if not stale and head.next == self._next:
                return False
        read = self._read_pages(stale)
        with self._lock:
            fresh = {slot: _page(read.get(page_key(slot)), page_key(slot)) for slot in stale}
            self._pages_read.update(fresh)
            self._seen.update(_seen_stamps(head, fresh))
            for slot in [slot for slot in self._pages_read if slot >= head.pages]:
                del self._pages_read[slot]
                self._seen.pop(slot, None)
            pages = {page_key(slot): page for slot, page in self._pages_read.items() if page is not None}
        self._install(head, pages, writer=False)
        return True

    def _read_pages(self, slots: Iterable[int]) -> dict[str, bytes]:
        return read_in_parts(self.store, [page_key(slot) for slot in slots])

    def _install(self, head: Head, found: dict[str, Page], *, writer: bool) -> int:
        """The book as ``head`` and its pages say, in place of what it held. ``writer``: this console writes the
        history from now on (it deletes what the ring no longer holds, moves pages to a new ring length)."""
        newest_block = (head.next - 1) // PAGE_SIZE
        oldest = max(0, head.next - self.history)
        summaries: list[Summary] = []
        beyond: list[Summary] = []  # older than the newest `history` (CONSOLE_HISTORY is smaller than it was)
        written: dict[int, float] = {}
        for slot in range(head.pages):
            page = found.get(page_key(slot))
            # A page from an earlier turn of the ring (or of another ring length) holds nothing to keep.
            if page is None or page.block % head.pages != slot or not newest_block - head.pages < page.block <= (
                    newest_block):
                continue
            written[page.block] = page.written_at
            mine = [s for s in page.batches if s.number < head.next and s.number // PAGE_SIZE == page.block]
            summaries += [s for s in mine if s.number >= oldest]
            beyond += [s for s in mine if s.number < oldest]
        with self._lock:
            self._by_number, self._by_id, self._detail_total = {}, {}, 0
            self._next, self._first, self._held_from = head.next, oldest, oldest
            self._stamps = _stamps_of(head)
            for summary in sorted(summaries, key=lambda s: s.number, reverse=True):
                if summary.batch_id in self._by_id:  # left the history and seen again since: the newer stays
                    continue
                self._by_number[summary.number] = self._by_id[summary.batch_id] = summary
                self._detail_total += summary.tasks_bytes + summary.results_bytes
            self._written = written
            if not writer:
                return len(summaries)
            for summary in beyond:
                if summary.batch_id not in self._by_id:  # seen again since: those details are the newer ones
                    self._doomed |= {detail_key(kind, summary.batch_id) for kind in DETAILS if summary.held(kind)}
            if head.pages != self.pages:  # CONSOLE_HISTORY changed: the pages move to their new slots
                self._dirty |= {n // PAGE_SIZE for n in self._by_number}
                self._doomed |= {page_key(slot) for slot in range(self.pages, head.pages)}
                self._stamps = {}
            self._make_room()  # CONSOLE_DETAIL_BYTES may be smaller than before
        return len(summaries)

    def flush(self) -> None:
        """Write the pages changed since the last flush (and those due for a new TTL) with the head, and delete
        the details no longer kept; what fails is tried again at the next flush."""
        now = self.clock()
        with self._lock:
            self._flushes_begun += 1
            number = self._flushes_begun
            newest_block = (self._next - 1) // PAGE_SIZE
            due = {b for b, at in self._written.items() if now - at > REFRESH_S}
            # Only blocks still in the ring: an older block's slot belongs to a newer one now.
            blocks = sorted(b for b in self._dirty | due if newest_block - self.pages < b <= newest_block)
            doomed = sorted(self._doomed)
            self._dirty.clear()
            self._doomed.clear()
            if not blocks and not doomed:
                self._flushed = number
                return
            pages = [(b, Page.model_construct(block=b, written_at=now, batches=self._block(b)).model_dump_json()
                      .encode()) for b in blocks]
            self._stamps.update((b % self.pages, now) for b in blocks)
            head = Head(next=self._next, pages=self.pages,
                        stamps=[self._stamps.get(slot, 0.0) for slot in range(self.pages)]).model_dump_json().encode()
            self._written = {b: at for b, at in self._written.items() if newest_block - self.pages < b}
        parts = [(pages[i:i + PAGES_PER_CALL], []) for i in range(0, len(pages), PAGES_PER_CALL)]
        parts += [([], doomed[i:i + DELETES_PER_CALL]) for i in range(0, len(doomed), DELETES_PER_CALL)]
        for n, (some_pages, deletes) in enumerate(parts):
            try:
                # The head goes with every part of pages: what it says is true once any part is written.
                self.store.change({page_key(b % self.pages): data for b, data in some_pages} | (
                    {HEAD_KEY: head} if some_pages else {}), deletes)
            except Exception as exc:  # noqa: BLE001 - the sidecar or Redis away: kept for the next flush
                log.warning("could not write the console's history", extra={"error": str(exc)})
                with self._lock:
                    for left, doomed_left in parts[n:]:
                        self._dirty.update(b for b, _ in left)
                        self._doomed.update(doomed_left)
                return
            with self._lock:
                self._written.update((b, now) for b, _ in some_pages)
        with self._lock:
            self._flushed = number

    def mark(self) -> int:
        """The flush that writes the changes made so far (``stored`` says when it has gone)."""
        with self._lock:
            return self._flushes_begun + 1

    def stored(self, mark: int) -> bool:
        """Whether the changes made before ``mark()`` said ``mark`` are in the store."""
        with self._lock:
            return self._flushed >= mark

    # --- inside the lock ---------------------------------------------------------------------------------

    def _add(self, batch_id: str, total: int) -> Summary:
        summary = Summary(number=self._next, batch_id=batch_id, total=total, seen_at=utc_now())
        self._next += 1
        self._by_number[summary.number] = self._by_id[batch_id] = summary
        self._touch(summary)  # a running batch is in the store too (a restarted or standby console shows it)
        while self._next - self._first > self.history:
            old = self._by_number.pop(self._first, None)
            self._first += 1
            if old is not None:
                del self._by_id[old.batch_id]
                self._drop_details(old)  # the console is the owner: nothing it forgot stays in the store
        return summary

    def _touch(self, summary: Summary) -> None:
        self._dirty.add(summary.number // PAGE_SIZE)

    def _block(self, block: int) -> list[Summary]:
        numbers = range(max(block * PAGE_SIZE, self._first), min((block + 1) * PAGE_SIZE, self._next))
        return [s for s in (self._by_number.get(n) for n in numbers) if s is not None]

    def _reserve(self, summary: Summary, kind: Detail, value: bytes) -> str | None:
        """Count ``value`` as the batch's ``kind`` of details if it fits; the key to write it under, or None."""
        if len(value) > min(self.detail_bytes, MAX_DETAIL_BYTES):
            self._drop_details(summary)
            return None
        summary.hold(kind, len(value))
        self._detail_total += len(value)
        self._held_from = min(self._held_from, summary.number)
        self._make_room()
        if not summary.held(kind):  # the batch was the oldest holding details
            return None
        key = detail_key(kind, summary.batch_id)
        self._doomed.discard(key)
        self._writing[key] = value
        self._cache.put(key, value)  # its page asks for it at once, while the batch runs
        return key

    def _make_room(self) -> None:
        """Beyond the details' budget, the oldest batches' details go; their summaries stay."""
        number = self._held_from
        while self._detail_total > self.detail_bytes and number < self._next:
            summary = self._by_number.get(number)
            if summary is not None and (summary.tasks_bytes or summary.results_bytes):
                self._drop_details(summary)
            number += 1
        self._held_from = number

    def _drop_details(self, summary: Summary, absent: Detail | None = None) -> None:
        """Its details are no longer kept: their keys go at the next flush (but ``absent``'s, not in the store)."""
        for kind in DETAILS:
            if summary.held(kind):
                key = detail_key(kind, summary.batch_id)
                self._detail_total -= summary.held(kind)
                summary.hold(kind, 0)
                self._cache.drop(key)
                if kind != absent:
                    self._doomed.add(key)
        summary.details_dropped = True
        self._touch(summary)

    # --- details in the store ----------------------------------------------------------------------------

    def _write(self, summary: Summary, kind: Detail, key: str, value: bytes) -> None:
        try:
            self.store.change({key: value}, [])
        except Exception as exc:  # noqa: BLE001 - the batch is shown without its details, never lost
            log.warning("could not keep a batch's details", extra={"batch_id": summary.batch_id, "error": str(exc)})
            with self._lock:
                if summary.held(kind):
                    # Not written, so nothing to delete (were it written after all, its TTL ends it): an outage
                    # of the store leaves no pile of deletes behind.
                    self._drop_details(summary, absent=kind)
        finally:
            with self._lock:
                if self._writing.get(key) is value:
                    del self._writing[key]

    def _details(self, batch_id: str, kind: Detail) -> bytes | None:
        with self._lock:
            summary = self._by_id.get(batch_id)
            if summary is None or not summary.held(kind):
                return None
            key = detail_key(kind, batch_id)
            found = self._writing.get(key) or self._cache.get(key)
        if found is not None:
            return found
        found = self.store.read([key]).get(key)
        with self._lock:
            if not summary.held(kind) or self._by_id.get(batch_id) is not summary:
                return None  # dropped meanwhile
            if found is None:  # its TTL ran out, or someone deleted it
                self._drop_details(summary, absent=kind)
            else:
                self._cache.put(key, found)
        return found


def read_in_parts(store: Store, keys: list[str]) -> dict[str, bytes]:
    """The keys' values (absent keys left out), ``READS_PER_CALL`` keys a store call."""
    found: dict[str, bytes] = {}
    for i in range(0, len(keys), READS_PER_CALL):
        found.update(store.read(keys[i:i + READS_PER_CALL]))
    return found


def _head(data: bytes | None) -> Head | None:
    if data is None:
        return None
    try:
        return Head.model_validate_json(data)
    except ValidationError as exc:  # the ring cannot be placed without it: it starts again, overwriting
        log.warning("an unreadable head of the console's history", extra={"error": str(exc)[:300]})
        return None


def _seen_stamps(head: Head, pages: dict[int, Page | None]) -> dict[int, float]:
    """The stamp each page was read under; a page older than the head says (its write failed, the head's went) is
    read again next time."""
    stamps = _stamps_of(head)
    return {slot: stamps.get(slot, 0.0) if page is None or page.written_at >= stamps.get(slot, 0.0)
            else page.written_at for slot, page in pages.items()}


def _stamps_of(head: Head) -> dict[int, float]:
    return {slot: stamp for slot, stamp in enumerate(head.stamps) if slot < head.pages}


def _page(data: bytes | None, key: str) -> Page | None:
    if data is None:
        return None
    try:
        return Page.model_validate_json(data)
    except ValidationError as exc:
        log.warning("an unreadable page of the console's history", extra={"key": key, "error": str(exc)[:300]})
        return None


def read_back(book: BatchBook, attempts: int = 30, pause_s: float = 1.0,
              sleep: Callable[[float], None] = time.sleep) -> int:
    """``book.load()``, again while the store does not answer (Redis restarting); after ``attempts``, its error."""
    for attempt in range(1, attempts + 1):
        try:
            return book.load()
        except HistoryUnreadable as exc:
            if attempt == attempts:
                raise
            log.warning("the console's history is not readable yet", extra={"attempt": attempt, "error": str(exc)})
            sleep(pause_s)
    return 0
