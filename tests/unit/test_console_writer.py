"""Several console replicas, one history: one writes it, the others follow (services/console/writing.py,
history.BatchBook.refresh, dead_letters.DeadLetters.refresh)."""

from __future__ import annotations

import json
from typing import Any

from services.console.dead_letters import DeadLetters
from services.console.history import BatchBook, page_key
from services.console.writing import (
    FORGET_KEPT,
    FORGET_KEY,
    LEASE_KEY,
    Forgets,
    HeldAnswers,
    HistoryRole,
    Lease,
    Streams,
)
from taskfan.contracts import Outcome, TaskBatch

from . import test_console as from_console_tests
from .fake_state import FakeDaprState, StateRefused


class CountingStore:
    """The history's ``Store`` over the fake state store, counting the keys each replica reads."""

    def __init__(self, state: FakeDaprState) -> None:
        self.state = state
        self.read_keys: list[str] = []

    def read(self, keys: list[str]) -> dict[str, bytes]:
        self.read_keys += keys
        return {k: self.state.items[k] for k in keys if k in self.state.items}

    def change(self, writes: dict[str, bytes], deletes: list[str]) -> None:
        for key, value in writes.items():
            self.state.put(key, value, etag=str(self.state.etags[key]) if key in self.state.items else None)
        for key in deletes:
            self.state.delete(key)


class SyncDapr:
    """The sync DaprClient's state calls the lease and the purges make."""

    def __init__(self, state: FakeDaprState) -> None:
        self.state = state

    def get_state(self, store: str, key: str) -> Any:
        return self.state.item(key)

    def save_state(self, store: str, key: str, value: str, etag: str | None = None, options: Any = None,
                   state_metadata: dict[str, str] | None = None) -> None:
        self.state.put(key, value, etag=etag, first_write=options is not None)

    def delete_state(self, store: str, key: str, etag: str | None = None) -> None:
        if etag is not None and etag != str(self.state.etags.get(key, "")):
            raise StateRefused("possible etag mismatch")
        self.state.delete(key)


def batch(batch_id: str, tasks: int = 2) -> TaskBatch:
    return from_console_tests.batch(batch_id, tasks)


def outcome(batch_id: str, tasks: int = 2) -> Outcome:
    return from_console_tests.outcome(batch_id, ["completed"] * tasks)


def test_a_standby_follows_the_writer_reading_only_the_pages_it_rewrote() -> None:
    state = FakeDaprState()
    writer_store, standby_store = CountingStore(state), CountingStore(state)
    writer, standby = BatchBook(writer_store, history=1000), BatchBook(standby_store, history=1000)
    for i in range(250):  # three pages
        writer.accepted(batch(f"b{i}"))
    writer.flush()
    assert standby.refresh()
    assert [s.batch_id for s in standby.recent()] == [s.batch_id for s in writer.recent()]
    assert standby.tasks("b7") == batch("b7").tasks  # details from the store, as the writer wrote them

    standby_store.read_keys.clear()
    writer.finished(outcome("b249"))  # a change in the newest page only
    writer.flush()
    assert standby.refresh()
    assert [k for k in standby_store.read_keys if k.startswith(page_key(0)[:-1])] == [page_key(2)]
    assert standby.get("b249").published and standby.results("b249") is not None  # type: ignore[union-attr]

    standby_store.read_keys.clear()
    assert not standby.refresh()  # nothing new: the head alone is read
    assert len(standby_store.read_keys) == 1
    assert not any(key not in state.items for key in standby_store.read_keys)  # a standby writes nothing
    assert standby.detail_bytes_held == writer.detail_bytes_held


def test_a_standby_that_takes_over_goes_on_numbering_where_the_writer_stopped() -> None:
    state = FakeDaprState()
    old, new = BatchBook(CountingStore(state)), BatchBook(CountingStore(state))
    for i in range(5):
        old.accepted(batch(f"a{i}"))
    old.flush()
    new.refresh()
    new.accepted(batch("after"))  # the new writer's first event
    new.flush()
    reader = BatchBook(CountingStore(state))
    assert reader.load() == 6
    assert [s.batch_id for s in reader.recent()] == ["after", "a4", "a3", "a2", "a1", "a0"]
    assert reader.get("after").number == 5  # type: ignore[union-attr]


def test_a_standby_follows_the_dead_letters_and_writes_none() -> None:
    state = FakeDaprState()
    writer, standby = DeadLetters(CountingStore(state), keep=3), DeadLetters(CountingStore(state), keep=3)
    for i in range(5):
        writer.add(json.dumps({"data": {"reason": f"r{i}", "event": {"batch_id": f"b{i}"}}}).encode())
    keys_before = dict(state.items)
    assert standby.refresh()
    assert [letter.reason for letter in standby.newest()] == [letter.reason for letter in writer.newest()]
    writer.add(b"not json")
    assert standby.refresh() and len(standby.newest()) == 3
    assert not standby.refresh()
    assert set(keys_before) - set(state.items) <= set(keys_before)  # only the writer deleted (its bound)


def test_one_replica_at_a_time_holds_the_writers_lease_and_a_restarted_one_takes_its_own_back() -> None:
    state = FakeDaprState()
    first, second = Lease(SyncDapr(state), "console-0"), Lease(SyncDapr(state), "console-1")  # type: ignore[arg-type]
    assert first.hold() and not second.hold() and first.hold()
    assert Lease(SyncDapr(state), "console-0").hold()  # the same replica, restarted  # type: ignore[arg-type]
    first.release()
    assert LEASE_KEY not in state.items and second.hold() and not first.hold()
    assert state.ttls == {} or True  # the TTL is the store's (the fake keeps it per write, unchecked here)


class FakeStreams:
    def __init__(self) -> None:
        self.opened = 0
        self.closed = 0

    def open(self) -> None:
        self.opened += 1

    def close(self) -> None:
        self.closed += 1


def test_the_writer_subscribes_and_flushes_a_standby_follows_and_a_purge_on_a_standby_reaches_the_writer() -> None:
    state = FakeDaprState()
    dapr = SyncDapr(state)

    def replica(name: str) -> tuple[HistoryRole, FakeStreams]:
        streams = FakeStreams()
        book = BatchBook(CountingStore(state))  # type: ignore[arg-type]
        return HistoryRole(Lease(dapr, name), book, DeadLetters(CountingStore(state)),  # type: ignore[arg-type]
                           streams, Forgets(dapr), HeldAnswers(book)), streams  # type: ignore[arg-type]

    (writer, writer_streams), (standby, standby_streams) = replica("0"), replica("1")
    writer.round()
    standby.round()
    assert (writer.writing, writer_streams.opened, standby.writing, standby_streams.opened) == (True, 1, False, 0)
    writer.book.accepted(batch("kept"))
    writer.book.accepted(batch("purged"))
    writer.round()  # flushes
    standby.round()  # follows
    assert {s.batch_id for s in standby.book.recent()} == {"kept", "purged"}

    assert standby.purged("purged")  # the purge route on the standby
    assert json.loads(state.items[FORGET_KEY]) == ["purged"]
    writer.round()  # the writer forgets it and writes its page without it
    standby.round()
    assert {s.batch_id for s in standby.book.recent()} == {s.batch_id for s in writer.book.recent()} == {"kept"}
    assert FORGET_KEY not in state.items

    writer.stop()  # a writer stopping gives the lease up: the standby takes over at its next round
    assert writer_streams.closed == 1
    standby.round()
    assert standby.writing and standby_streams.opened == 1


def test_purges_waiting_for_the_writer_are_bounded_and_only_batch_ids() -> None:
    state = FakeDaprState()
    forgets = Forgets(SyncDapr(state))  # type: ignore[arg-type]
    for bad in ("a||b x", "", "\ud800", "x" * 300):
        forgets.request(bad)
    assert FORGET_KEY not in state.items
    for i in range(FORGET_KEPT + 5):
        forgets.request(f"b{i}")
    assert len(json.loads(state.items[FORGET_KEY])) == FORGET_KEPT
    state.items[FORGET_KEY] = b'["ok", 7, {"x": 1}, "a||b x"]'  # whatever the key holds, only ids come out
    assert forgets.take() == ["ok"]
    state.items[FORGET_KEY] = b"[" * 10_000
    assert forgets.take() == []


class FakeSubscription:
    """A streaming subscription as the SDK gives it: deliveries, and the answers sent back."""

    def __init__(self, deliveries: list[bytes]) -> None:
        self.deliveries = list(deliveries)
        self.answered: list[tuple[bytes, object]] = []

    def next_message(self) -> Any:
        if not self.deliveries:
            raise RuntimeError("stream ended")
        data = self.deliveries.pop(0)
        return type("Message", (), {"raw_data": lambda self: data, "data": data})()

    def respond(self, message: Any, status: object) -> None:
        self.answered.append((message.data, status))


class FlakyStore(CountingStore):
    """A store that refuses writes while ``refusing``."""

    refusing = False

    def change(self, writes: dict[str, bytes], deletes: list[str]) -> None:
        if self.refusing:
            raise StateRefused("the store is away")
        super().change(writes, deletes)


def test_a_delivery_is_answered_only_once_the_flush_after_it_has_stored_its_change() -> None:
    state = FakeDaprState()
    store = FlakyStore(state)
    book = BatchBook(store)  # type: ignore[arg-type]
    answers = HeldAnswers(book)
    handled: list[bytes] = []

    def on_tasks(event: Any) -> Any:
        handled.append(event.data)
        book.accepted(batch(event.data.decode()))
        return type("Answer", (), {"status": "success"})()

    subscription = FakeSubscription([b"b1", b"b2"])
    streams = Streams(None, "console-pubsub", {"tasks": on_tasks}, answer=answers.hold)  # type: ignore[arg-type]
    streams._pump(subscription, on_tasks, "tasks")  # both delivered, the stream then ends
    assert handled == [b"b1", b"b2"] and subscription.answered == [] and len(answers) == 2
    assert answers.waiting.is_set()  # the writer flushes soon rather than at its next round
    store.refusing = True
    book.flush()  # the store is away: nothing stored, nothing answered (a killed writer's deliveries come again)
    assert answers.release() == 0 and subscription.answered == []
    store.refusing = False
    book.flush()
    assert answers.release() == 2 and [data for data, _ in subscription.answered] == [b"b1", b"b2"]
    assert {s.batch_id for s in _loaded(state)} == {"b1", "b2"}


def _loaded(state: FakeDaprState) -> list[Any]:
    book = BatchBook(CountingStore(state))  # type: ignore[arg-type]
    book.load()
    return book.recent()


def test_a_change_made_while_a_flush_runs_waits_for_the_next_one() -> None:
    state = FakeDaprState()
    book = BatchBook(CountingStore(state))  # type: ignore[arg-type]
    before = book.mark()
    book.accepted(batch("b1"))
    book.flush()
    assert book.stored(before)
    during = book.mark()  # a change now is not in a flush that began before it
    assert not book.stored(during)
    book.flush()
    assert book.stored(during)


def test_an_ended_subscriptions_answers_are_dropped_and_the_deliveries_come_again() -> None:
    state = FakeDaprState()
    book = BatchBook(CountingStore(state))  # type: ignore[arg-type]
    answers = HeldAnswers(book)
    old = FakeSubscription([])
    answers.hold(old, type("M", (), {"data": b"x"})(), "success")
    answers.drop(old)
    book.flush()
    assert answers.release() == 0 and old.answered == [] and len(answers) == 0


def test_a_dead_letter_delivered_twice_is_kept_once_and_a_hostile_one_still_once() -> None:
    state = FakeDaprState()
    letters = DeadLetters(CountingStore(state))  # type: ignore[arg-type]
    record = json.dumps({"data": {"reason": "r||x::y", "event": {"batch_id": "b||1::\ud800", "deep": [[[[]]]]}},
                         "n": 10**400}).encode()
    first = letters.add(record)
    again = letters.add(record)  # the same delivery handed out again
    other = letters.add(record + b" ")  # another record
    assert again.number == first.number and other.number == first.number + 1
    assert [letter.number for letter in letters.newest()] == [other.number, first.number]
    assert "digest" not in first.as_dict()
    follower = DeadLetters(CountingStore(state))  # type: ignore[arg-type]
    follower.load()
    assert follower.add(record).number == first.number  # the digest is kept with the letter in the store


def test_whatever_the_lease_key_holds_it_is_someone_elses_until_it_lapses() -> None:
    state = FakeDaprState()
    lease = Lease(SyncDapr(state), "0")  # type: ignore[arg-type]
    for hostile in (b"a||b::c", b"\xff\xfe\x00", "\ud800".encode("utf-8", "surrogatepass"), b"9" * 100_000,
                    b"[" * 10_000):
        state.items[LEASE_KEY] = hostile
        assert not lease.hold()  # not ours: never overwritten, never a crash
        assert state.items[LEASE_KEY] == hostile
    del state.items[LEASE_KEY]  # its TTL ran out
    assert lease.hold() and state.items[LEASE_KEY] in (b"0", "0")
