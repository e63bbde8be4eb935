"""Several console replicas, one history: which replica writes it, and how the others follow.

Every replica serves the pages. One at a time, the **writer**, holds a lease in the console's state store
(``LEASE_KEY``, taken with first-write concurrency, renewed every round, lapsing ``LEASE_S`` after its holder's last
round); it alone subscribes to ``tasks``, ``outcomes`` and ``tasks-deadletter`` (Dapr streaming subscriptions, opened
when it takes the lease and closed when it loses it: the topics' consumer group ``console`` delivers to it alone) and
writes the history and the dead letters. The others are **standbys**: every round they read what the writer wrote
since (``BatchBook.refresh``, ``DeadLetters.refresh``). A standby that takes the lease over reads once more, then
subscribes: what was published meanwhile waits in the streams, and deliveries the old writer took and never
answered come again. The writer answers a delivery only once what it changed is in the store (``HeldAnswers``: the
next flush, which a waiting answer brings forward), so a writer killed at any moment loses nothing: what it had not
written, it had not answered. Its subscriptions are on the console's own pub/sub component (``CONSOLE_PUBSUB``) whose
``processingTimeout`` is seconds, not the shared component's minute: a delivery an ended stream took (a killed app
whose sidecar lives on takes a moment to be noticed) comes again within seconds. Handling a delivery twice changes
nothing (the book keeps a batch by its id, the dead letters a record by its digest). A purge on a standby is passed
to the writer through ``FORGET_KEY`` (its book would otherwise write the purged batch's summary back).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from dapr.clients import DaprClient
from dapr.clients.grpc._response import TopicEventResponse
from dapr.clients.grpc._state import Concurrency, StateOptions

from services.console.dead_letters import DeadLetters
from services.console.history import FLUSH_INTERVAL_S, KEY_PREFIX, BatchBook
from taskfan.contracts import STATESTORE, is_batch_id

log = logging.getLogger(__name__)

LEASE_KEY = f"{KEY_PREFIX}~writer-lease"
FORGET_KEY = f"{KEY_PREFIX}~forget"
LEASE_S = 15
# A delivery's answer waits for the flush that stores its change; the writer flushes that much after one comes, so
# that a burst is answered by a few flushes rather than one each.
ANSWER_FLUSH_SPACING_S = 0.3
FORGET_KEPT = 1000  # purges waiting for the writer, at most (the oldest dropped: a purge's summary then stays)

_FIRST_WRITE = StateOptions(concurrency=Concurrency.first_write)


class Lease:
    """The writer's lease: this replica holds it for the next ``ttl_s`` once ``hold`` says so."""

    def __init__(self, dapr: DaprClient, me: str, ttl_s: int = LEASE_S) -> None:
        self.dapr = dapr
        self.me = me
        self.ttl_s = ttl_s

    def hold(self) -> bool:
        """Take the lease (no one holds it) or renew our own; a write that meets another's fails: not ours."""
        item = self.dapr.get_state(STATESTORE, LEASE_KEY)
        holder = item.data.decode(errors="replace") if item.data else None
        if holder not in (None, self.me):
            return False
        try:
            self.dapr.save_state(STATESTORE, LEASE_KEY, self.me, etag=item.etag or None, options=_FIRST_WRITE,
                                 state_metadata={"ttlInSeconds": str(self.ttl_s)})
        except Exception as exc:  # noqa: BLE001 - another replica took it in between, or the store is away
            log.debug("writer lease not taken", extra={"error": str(exc)})
            return False
        return True

    def release(self) -> None:
        """Give it up now (a replica stopping): another takes it at its next round, not after ``ttl_s``."""
        item = self.dapr.get_state(STATESTORE, LEASE_KEY)
        if item.data and item.data.decode(errors="replace") == self.me:
            self.dapr.delete_state(STATESTORE, LEASE_KEY, etag=item.etag or None)


class Forgets:
    """Purged batches a standby passes to the writer: ids in one key, changed with its ETag."""

    def __init__(self, dapr: DaprClient) -> None:
        self.dapr = dapr

    def request(self, batch_id: str) -> None:
        if not is_batch_id(batch_id):
            return
        for _ in range(5):  # another replica may write it at the same moment
            item = self.dapr.get_state(STATESTORE, FORGET_KEY)
            ids = [*_ids(item.data), batch_id][-FORGET_KEPT:]
            try:
                self.dapr.save_state(STATESTORE, FORGET_KEY, json.dumps(ids), etag=item.etag or None,
                                     options=_FIRST_WRITE)
                return
            except Exception as exc:  # noqa: BLE001
                log.debug("purge not passed on yet", extra={"error": str(exc)})
        log.warning("a purged batch could not be passed to the console that writes the history",
                    extra={"batch_id": batch_id})

    def take(self) -> list[str]:
        """The ids waiting, and the key emptied (ids added meanwhile wait for the next round)."""
        item = self.dapr.get_state(STATESTORE, FORGET_KEY)
        ids = _ids(item.data)
        if ids:
            try:
                self.dapr.delete_state(STATESTORE, FORGET_KEY, etag=item.etag or None)
            except Exception as exc:  # noqa: BLE001 - written meanwhile: all of them next round
                log.debug("purges taken next round", extra={"error": str(exc)})
                return []
        return ids


def _ids(data: bytes | None) -> list[str]:
    try:
        ids = json.loads(data) if data else []
    except (ValueError, RecursionError):  # not ours: nothing waits
        return []
    return [i for i in ids if isinstance(i, str) and is_batch_id(i)] if isinstance(ids, list) else []


class RawEvent:
    """A delivery as the subscription handlers read it (what ``dapr.ext.grpc`` hands them): its bytes."""

    def __init__(self, data: bytes) -> None:
        self.data = data


Handler = Callable[[Any], TopicEventResponse]
Answer = Callable[[Any, Any, Any], None]  # (subscription, message, status)


def answer_now(subscription: Any, message: Any, status: Any) -> None:
    subscription.respond(message, status)


class HeldAnswers:
    """Deliveries handled and not yet answered: each is answered once the book's flush after it has gone."""

    def __init__(self, book: BatchBook) -> None:
        self.book = book
        self.waiting = threading.Event()  # set when an answer waits: the writer flushes soon
        self._lock = threading.Lock()
        self._held: list[tuple[int, Any, Any, Any]] = []

    def hold(self, subscription: Any, message: Any, status: Any) -> None:
        with self._lock:
            self._held.append((self.book.mark(), subscription, message, status))
        self.waiting.set()

    def release(self) -> int:
        """Answer those whose changes are stored; how many."""
        with self._lock:
            ready = [held for held in self._held if self.book.stored(held[0])]
            self._held = [held for held in self._held if not self.book.stored(held[0])]
        for _, subscription, message, status in ready:
            subscription.respond(message, status)
        return len(ready)

    def drop(self, subscription: Any) -> None:
        """A subscription ended: its deliveries come again (unanswered), so none is answered on it."""
        with self._lock:
            self._held = [held for held in self._held if held[1] is not subscription]

    def __len__(self) -> int:
        with self._lock:
            return len(self._held)


class Streams:
    """The writer's streaming subscriptions: a thread per topic passing each delivery to its handler, and opening
    its subscription again when the sidecar ends it (a sidecar that still holds the stream of an app killed a moment
    ago refuses a new one on the same topic at first)."""

    def __init__(self, dapr: DaprClient, pubsub: str, handlers: dict[str, Handler], retry_s: float = 1.0,
                 answer: Answer = answer_now, ended: Callable[[Any], None] = lambda subscription: None) -> None:
        self.dapr = dapr
        self.pubsub = pubsub
        self.handlers = handlers
        self.retry_s = retry_s
        self.answer = answer
        self.ended = ended
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._open: dict[str, Any] = {}  # topic -> its subscription now
        self._threads: list[threading.Thread] = []

    def open(self) -> None:
        self._closed.clear()
        self._threads = [threading.Thread(target=self._follow, args=(topic, handler), name=f"console-{topic}",
                                          daemon=True) for topic, handler in self.handlers.items()]
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            subscriptions, self._open = list(self._open.values()), {}
        for subscription in subscriptions:
            subscription.close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []

    def _follow(self, topic: str, handler: Handler) -> None:
        while not self._closed.is_set():
            try:
                subscription = self.dapr.subscribe(self.pubsub, topic, metadata={"rawPayload": "true"})
            except Exception as exc:  # noqa: BLE001 - the sidecar refused or is away: again shortly
                log.info("subscription not opened yet", extra={"topic": topic, "error": str(exc)[:300]})
                self._closed.wait(self.retry_s)
                continue
            with self._lock:
                if self._closed.is_set():
                    subscription.close()
                    return
                self._open[topic] = subscription
            self._pump(subscription, handler, topic)
            with self._lock:
                self._open.pop(topic, None)
            self.ended(subscription)
            subscription.close()
            self._closed.wait(self.retry_s)

    def _pump(self, subscription: Any, handler: Handler, topic: str) -> None:
        while not self._closed.is_set():
            try:
                message = subscription.next_message()
            except Exception as exc:  # noqa: BLE001 - closed, or ended by the sidecar: opened again unless closed
                if not self._closed.is_set():
                    log.info("subscription ended; opening it again", extra={"topic": topic, "error": str(exc)[:300]})
                return
            if message is None:
                continue
            response = handler(RawEvent(message.raw_data()))
            self.answer(subscription, message, response.status)


class HistoryRole:
    """This replica's part, decided every ``interval_s`` on a thread of its own: write (lease held) or follow."""

    def __init__(self, lease: Lease, book: BatchBook, letters: DeadLetters, streams: Streams, forgets: Forgets,
                 answers: HeldAnswers, interval_s: float = FLUSH_INTERVAL_S,
                 answer_spacing_s: float = ANSWER_FLUSH_SPACING_S) -> None:
        self.lease = lease
        self.book = book
        self.letters = letters
        self.streams = streams
        self.forgets = forgets
        self.answers = answers
        self.interval_s = interval_s
        self.answer_spacing_s = answer_spacing_s
        self.writing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def round(self) -> None:
        if self.lease.hold():
            if not self.writing:
                self._follow()  # what the last writer wrote, up to its last flush
                self.streams.open()
                self.writing = True
                log.info("this console writes the history now (writer lease taken)")
            self._forget(self.forgets.take())
            self.flush()
            return
        if self.writing:
            self.streams.close()
            self.writing = False
            log.warning("this console no longer writes the history (another replica holds the lease)")
        self._follow()

    def flush(self) -> None:
        """Write what changed, then answer the deliveries it stored."""
        self.answers.waiting.clear()
        self.book.flush()
        self.answers.release()

    def purged(self, batch_id: str) -> bool:
        """A purge on this replica: its book forgets the batch now (whether it had it); the writer's is told, if
        that is not this one."""
        forgotten = self.book.forget(batch_id)
        if not self.writing:
            self.forgets.request(batch_id)
        return forgotten

    def _follow(self) -> None:
        self.book.refresh()
        self.letters.refresh()

    def _forget(self, batch_ids: Iterable[str]) -> None:
        for batch_id in batch_ids:
            self.book.forget(batch_id)

    def start(self) -> None:
        def loop() -> None:
            next_round = 0.0
            while not self._stop.is_set():
                try:
                    if time.monotonic() >= next_round:
                        next_round = time.monotonic() + self.interval_s
                        self.round()
                    elif self.writing:
                        self.flush()  # answers wait: sooner than the next round
                except Exception as exc:  # noqa: BLE001 - e.g. the sidecar restarting: next round
                    log.warning("console history round failed", extra={"error": str(exc)})
                # Until the next round, or until an answer waits (a flush at most every answer_spacing_s).
                self.answers.waiting.wait(max(0.0, next_round - time.monotonic()))
                self._stop.wait(self.answer_spacing_s)

        self._thread = threading.Thread(target=loop, name="console-history", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop; a writer closes its subscriptions, writes what changed last and gives the lease up."""
        self._stop.set()
        self.answers.waiting.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.writing:
            self.flush()  # answered while the streams are open
            self.streams.close()
            self.book.flush()  # handled since, not answered: delivered again to the next writer, and stored
            try:
                self.lease.release()
            except Exception as exc:  # noqa: BLE001 - it lapses by itself
                log.debug("writer lease not released", extra={"error": str(exc)})
