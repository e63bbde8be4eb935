"""The newest dead letters, as the console keeps them: each record on ``tasks-deadletter`` (why, when, and the refused
event as the record repeats it), in memory and in the console's state store (read back when it starts), for the
dead-letter page, its API and their replay. Plain logic: the store is a ``history.Store`` (``app.ConsoleState``
over the console's sidecar; a fake in the unit tests).

The keys (Dapr prefixes them ``console||``), each written with the console's TTL as a backstop:
- ``taskfan-console~dead~<number>``: one letter, numbered in the order the console got them;
- ``taskfan-console~dead``: the head (the next letter's number, and the oldest number that may still be stored).

Bounded whatever comes: the newest ``keep`` letters, ``keep_bytes`` of them in all (a letter is at most
``MAX_LETTER_BYTES``: a larger refused event is kept cut, as text). A letter that leaves the bound is deleted from the
store with the write that made it leave: the console is the owner of every key it writes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import deque
from typing import Any

from pydantic import BaseModel, ValidationError

from services.console.history import DELETES_PER_CALL, KEY_PREFIX, Store, read_in_parts, utc_now
from taskfan import events
from taskfan.contracts import is_batch_id

log = logging.getLogger(__name__)

DEAD_HEAD_KEY = f"{KEY_PREFIX}~dead"
KEEP_LETTERS = 500
KEEP_BYTES = 8 * 2**20
# A refused event as the workflow service repeats it (events.MAX_REFUSED_EVENT_BYTES), its reason, and room.
MAX_LETTER_BYTES = events.MAX_REFUSED_EVENT_BYTES + 16 * 1024
LETTERS_PER_PAGE = 50


def letter_key(number: int) -> str:
    return f"{DEAD_HEAD_KEY}~{number}"


class Letter(BaseModel):
    """One dead letter: why the event was refused, when, and the event (parsed JSON where it was, else text)."""

    number: int
    reason: str
    received_at: str  # when the workflow service refused it (its record says), else when the console got it
    batch_id: str | None = None  # the refused batch's id, when the event names one
    event: Any = None
    replays: int = 0  # how often an operator published it again from the console
    # SHA-256 of the record as it came: the same record delivered again (a console replica killed before it
    # answered the delivery) is kept once.
    digest: str = ""

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"digest"})  # the digest is the store's, not the API's


class LetterHead(BaseModel):
    next: int  # the number the next letter gets
    first: int  # no letter older than this one is in the store


def letter_of(raw: bytes) -> tuple[str, Any, str | None, str | None]:
    """A record from ``tasks-deadletter`` as (reason, refused event, when it was refused, batch id): Taskfan's shape
    (``events.dead_letter``), or any other bytes, kept as the event of an unreadable record."""
    try:
        record = events.parse_json(raw)
    except events.EventError:
        record = None
    data = record.get("data") if isinstance(record, dict) else None
    if not isinstance(data, dict) or not isinstance(data.get("reason"), str):
        return "an unreadable dead-letter record (not in Taskfan's shape)", events.refused_event(raw), None, None
    refused = data.get("event")
    if not isinstance(refused, str):  # its JSON again, within the bound (deep or large: its text, cut)
        try:
            text = json.dumps(refused, ensure_ascii=False)
        except (RecursionError, ValueError):  # parsed at a depth Python can just read, not write again
            text = "[an event nested too deeply to repeat]"
        refused = events.refused_event(text.encode("utf-8", "surrogatepass"))
    elif len(refused) > events.MAX_REFUSED_EVENT_BYTES:
        refused = events.refused_event(refused)
    when = data.get("received_at")
    return (events.printable(data["reason"], events.MAX_REASON_CHARS), refused,
            when if isinstance(when, str) and len(when) <= 40 else None, _batch_id_in(refused))


def _batch_id_in(refused: object) -> str | None:
    """The batch id in a dead-lettered event: the event itself, its CloudEvent data, or a batch record."""
    for candidate in (refused, refused.get("data") if isinstance(refused, dict) else None):
        if isinstance(candidate, dict) and isinstance(candidate.get("batch_id"), str) and is_batch_id(
                candidate["batch_id"]):
            return candidate["batch_id"]
    return None


def replay_bytes(letter: Letter) -> bytes:
    """The refused event as it is published again: its JSON, or its text (a cut one is refused again)."""
    if isinstance(letter.event, str):
        return letter.event.encode("utf-8", "backslashreplace")
    return json.dumps(letter.event, ensure_ascii=False).encode("utf-8", "backslashreplace")


class DeadLetters:
    """The newest dead letters (``store`` None: in memory only)."""

    def __init__(self, store: Store | None, keep: int = KEEP_LETTERS, keep_bytes: int = KEEP_BYTES) -> None:
        self.store = store
        self.keep = max(1, keep)
        self.keep_bytes = max(MAX_LETTER_BYTES, keep_bytes)
        self._letters: deque[tuple[Letter, int]] = deque()  # oldest first, with each one's size in the store
        self._bytes = 0
        self._next = 0
        self._doomed: set[int] = set()  # numbers to delete from the store (a failed write leaves them here)
        self._lock = threading.Lock()  # the letters; a write to the store holds it too, so the head never goes back

    # --- what the topic brings ---------------------------------------------------------------------------

    def add(self, raw: bytes) -> Letter:
        """Keep a record from ``tasks-deadletter`` as the newest letter; the oldest go beyond the bound."""
        digest = hashlib.sha256(raw).hexdigest()
        reason, event, when, batch_id = letter_of(raw)
        with self._lock:
            kept = next((letter for letter, _ in self._letters if letter.digest == digest), None)
            if kept is not None:
                return kept
            letter = Letter(number=self._next, reason=reason, received_at=when or utc_now(), batch_id=batch_id,
                            event=event, digest=digest)
            value = letter.model_dump_json().encode()
            if len(value) > MAX_LETTER_BYTES:  # a reason and event within their limits make none: still, bounded
                letter.event = events.refused_event(value[:MAX_LETTER_BYTES // 2])
                value = letter.model_dump_json().encode()
            self._next += 1
            self._letters.append((letter, len(value)))
            self._bytes += len(value)
            self._bound()
            self._write({letter_key(letter.number): value})
        return letter

    def replayed(self, number: int) -> Letter | None:
        """Count a replay of letter ``number`` (written to the store with it); None if it is not kept."""
        with self._lock:
            letter = self._find(number)
            if letter is None:
                return None
            letter.replays += 1
            self._write({letter_key(number): letter.model_dump_json().encode()})
            return letter

    # --- reading -----------------------------------------------------------------------------------------

    def get(self, number: int) -> Letter | None:
        with self._lock:
            return self._find(number)

    def newest(self) -> list[Letter]:
        """Newest first."""
        with self._lock:
            return [letter for letter, _ in reversed(self._letters)]

    def page(self, page: int, per_page: int = LETTERS_PER_PAGE) -> tuple[list[Letter], int] | None:
        """Page ``page`` of the letters, newest first, and how many pages there are; None when there is no such
        page."""
        letters = self.newest()
        pages = max(1, -(-len(letters) // per_page))
        if not 1 <= page <= pages:
            return None
        return letters[(page - 1) * per_page:page * per_page], pages

    @property
    def bytes_held(self) -> int:
        with self._lock:
            return self._bytes

    # --- the store ---------------------------------------------------------------------------------------

    def load(self) -> int:
        """Read the kept letters back (at the start, before any event); returns how many. Raises what the store
        raised when it does not answer."""
        if self.store is None:
            return 0
        data = self.store.read([DEAD_HEAD_KEY]).get(DEAD_HEAD_KEY)
        try:
            head = LetterHead.model_validate_json(data) if data else None
        except ValidationError as exc:  # numbering starts again; letters left from before end with their TTL
            log.warning("an unreadable head of the console's dead letters", extra={"error": str(exc)[:300]})
            head = None
        if head is None:
            return 0
        newest = range(max(head.first, head.next - self.keep), head.next)
        keys = [letter_key(n) for n in newest]
        found = read_in_parts(self.store, keys)
        letters: list[tuple[Letter, int]] = []
        for number in newest:
            value = found.get(letter_key(number))
            if value is None:
                continue
            try:
                letters.append((Letter.model_validate_json(value), len(value)))
            except ValidationError:
                log.warning("an unreadable dead letter", extra={"number": number})
                self._doomed.add(number)
        with self._lock:
            self._next = head.next
            self._doomed |= set(range(head.first, newest.start))  # kept by a larger bound than this one
            self._letters = deque(letters)
            self._bytes = sum(size for _, size in letters)
            self._bound()
            if self._doomed:
                self._write({})
        log.info("console dead letters read", extra={"letters": len(self._letters), "bytes": self._bytes})
        return len(self._letters)

    def refresh(self) -> bool:
        """A standby console's (another replica writes the letters): the letters written since, read only; whether
        any came. Raises what the store raised."""
        if self.store is None:
            return False
        data = self.store.read([DEAD_HEAD_KEY]).get(DEAD_HEAD_KEY)
        try:
            head = LetterHead.model_validate_json(data) if data else None
        except ValidationError:
            return False
        with self._lock:
            if head is None or head.next == self._next:
                return False
            start = self._next if head.next > self._next else head.first  # numbered again: all of them
        newest = range(max(start, head.first, head.next - self.keep), head.next)
        keys = [letter_key(n) for n in newest]
        found = read_in_parts(self.store, keys)
        with self._lock:
            if head.next < self._next:
                self._letters, self._bytes = deque(), 0
            for number in newest:
                value = found.get(letter_key(number))
                try:
                    letter = Letter.model_validate_json(value) if value is not None else None
                except ValidationError:
                    letter = None
                if letter is not None:
                    self._letters.append((letter, len(value or b"")))
                    self._bytes += len(value or b"")
            while self._letters and self._letters[0][0].number < head.first:
                _, size = self._letters.popleft()
                self._bytes -= size
            self._next = head.next
            self._bound()
            self._doomed.clear()  # the writer deletes what leaves its bound
        return True

    # --- inside the lock ---------------------------------------------------------------------------------

    def _find(self, number: int) -> Letter | None:
        return next((letter for letter, _ in self._letters if letter.number == number), None)

    def _bound(self) -> None:
        while len(self._letters) > self.keep or self._bytes > self.keep_bytes:
            old, size = self._letters.popleft()
            self._bytes -= size
            self._doomed.add(old.number)

    def _write(self, writes: dict[str, bytes]) -> None:
        """``writes`` and the head in one call, with the deletes due (in several calls when many are)."""
        if self.store is None:
            self._doomed.clear()
            return
        oldest_kept = self._letters[0][0].number if self._letters else self._next
        doomed = sorted(self._doomed)
        head = LetterHead(next=self._next, first=min([oldest_kept, *doomed])).model_dump_json().encode()
        try:
            for i in range(0, max(1, len(doomed)), DELETES_PER_CALL):
                self.store.change(({DEAD_HEAD_KEY: head} | writes) if i == 0 else {},
                                  [letter_key(n) for n in doomed[i:i + DELETES_PER_CALL]])
                self._doomed -= set(doomed[i:i + DELETES_PER_CALL])
        except Exception as exc:  # noqa: BLE001 - the sidecar or Redis away: the deletes go with the next write
            log.warning("could not write the console's dead letters", extra={"error": str(exc)})
