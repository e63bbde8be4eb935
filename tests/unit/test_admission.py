"""Admission control: the ledger's rules, and the batch workflow waiting its turn (driven with fakes)."""

import json

import dapr.ext.workflow as wf
import grpc
import pytest

from services.workflow import batch_workflow, ledger_store, names, reconciler
from services.workflow.admission import Entry, Ledger
from services.workflow.ledger_store import LedgerStore
from services.workflow.models import BatchInput
from taskfan.contracts import ADMISSION_LEDGER_KEY, admission_ticket_key
from tests.unit.fake_state import FakeDaprState, FakeSyncDapr, drive, step


def entry(batch_id: str, slots: int) -> Entry:
    return Entry(batch_id=batch_id, slots=slots, total=slots, chunks=1, since="2026-01-01T00:00:00+00:00")


class Ledgers:
    """The ledger's changes (``ledger_store``) run against a state store that behaves like Redis through Dapr."""

    def __init__(self, cap: int = 1000, now: float = 1000.0) -> None:
        self.state, self.cap, self.now = FakeDaprState(), cap, now

    def ask(self, e: Entry) -> tuple[list[str], int]:
        return drive(self.state, ledger_store.ask(e, self.cap, now=lambda: self.now))

    def release(self, batch_id: str) -> list[str]:
        return drive(self.state, ledger_store.release(batch_id))

    def position(self, batch_id: str) -> int | None:
        return drive(self.state, ledger_store.locate(batch_id))[1]

    @property
    def ledger(self) -> Ledger:
        return Ledger.model_validate_json(self.state.items[ADMISSION_LEDGER_KEY])


def test_batches_are_admitted_in_arrival_order_while_their_slots_fit_under_the_cap():
    ledgers = Ledgers(cap=1000)
    assert ledgers.ask(entry("a", 400)) == ([], 0)
    assert ledgers.ask(entry("b", 400)) == ([], 0)
    assert ledgers.ask(entry("c", 400)) == ([], 1)  # 1200 > 1000: waits
    assert ledgers.ask(entry("d", 100)) == ([], 2)  # would fit, but never overtakes c
    assert [ledgers.position(b) for b in "abcd"] == [0, 0, 1, 2]
    assert ledgers.ledger.in_progress() == 800
    assert ledgers.release("a") == ["c", "d"]
    assert ledgers.ledger.in_progress() == 900
    assert ledgers.position("a") is None
    # What the queue needed is gone once admitted: the ledger and nothing else.
    assert set(ledgers.state.items) == {ADMISSION_LEDGER_KEY}


def test_requests_and_releases_are_idempotent():
    ledgers = Ledgers(cap=1000)
    ledgers.ask(entry("a", 600))
    ledgers.ask(entry("b", 600))
    assert ledgers.ask(entry("b", 600)) == ([], 1)  # asked again: still one place
    assert ledgers.ledger.queued == 1
    assert ledgers.release("a") == ["b"]
    assert ledgers.release("a") == []
    assert ledgers.release("nobody") == []


def test_a_batch_larger_than_the_cap_runs_alone():
    ledgers = Ledgers(cap=100)
    ledgers.ask(entry("small", 10))
    assert ledgers.ask(entry("huge", 400)) == ([], 1)
    assert ledgers.release("small") == ["huge"]
    assert ledgers.ask(entry("next", 1)) == ([], 1)


def test_a_batch_released_while_queued_leaves_its_place_and_the_queue_closes_up():
    ledgers = Ledgers(cap=400)
    for b in "abcde":
        ledgers.ask(entry(b, 400))
    assert [ledgers.position(b) for b in "abcde"] == [0, 1, 2, 3, 4]
    assert ledgers.release("c") == [] and ledgers.release("b") == []
    assert [ledgers.position(b) for b in "abcde"] == [0, None, None, 1, 2]
    assert ledgers.ledger.queued == 2 and ledgers.ledger.queued_tasks == 800
    assert ledgers.release("a") == ["d"]
    assert [ledgers.position(b) for b in "de"] == [0, 1]
    assert ledgers.ledger.removed == []


def driven(state, steps) -> tuple:
    """A ledger change run to its end against ``state`` (as ``drive``): what it returned, and the keys it read."""
    reads: list[str] = []
    reply, error = None, None
    while True:
        finished, op = ledger_store.advance(steps, reply, error)
        if finished:
            return op, reads
        if isinstance(op, (ledger_store.Get, ledger_store.GetMany)):
            reads += [op.key] if isinstance(op, ledger_store.Get) else op.keys
        reply, error = step(state, op)


def test_a_change_costs_the_same_however_long_the_queue():
    # 10,000 queued batches: a change reads and writes the ledger (its running batches and counts) and the
    # entries it admits, never the queue.
    ledgers = Ledgers(cap=1000)
    ledgers.ask(entry("running", 1000))
    for i in range(10_000):
        ledgers.ask(entry(f"q{i}", 10))
    assert len(ledgers.state.items[ADMISSION_LEDGER_KEY]) < 1000
    admitted, reads = driven(ledgers.state, ledger_store.release("running"))
    assert admitted == [f"q{i}" for i in range(100)]  # 100 x 10 slots fill the cap again
    assert len(reads) <= 2 + 100 + ledger_store.READ_WINDOW
    assert ledgers.position("q100") == 1 and ledgers.position("q9999") == 9900


def reads_of(state, steps) -> list[str]:
    """The keys a ledger change read, run to its end against ``state``."""
    return driven(state, steps)[1]


def test_a_batch_asking_while_nothing_is_queued_does_not_read_its_ticket():
    ledgers = Ledgers(cap=100)
    assert reads_of(ledgers.state, ledger_store.ask(entry("a", 60), 100)) == [ADMISSION_LEDGER_KEY]
    # "b" does not fit: it is queued, and the queue was empty, so it held no ticket to read.
    assert admission_ticket_key("b") not in reads_of(ledgers.state, ledger_store.ask(entry("b", 60), 100))
    assert ledgers.position("b") == 1
    # Asked again (a redelivery): something is queued now, so its ticket is read, and it keeps its place.
    assert admission_ticket_key("b") in reads_of(ledgers.state, ledger_store.ask(entry("b", 60), 100))
    assert ledgers.position("b") == 1


def test_changes_made_at_once_lose_nothing():
    # Two changes interleaved op by op, as two processes make them: the ETag makes one of them start again.
    ledgers = Ledgers(cap=100)
    ledgers.ask(entry("r", 100))
    first, second = ledgers_change(ledgers, entry("x", 50)), ledgers_change(ledgers, entry("y", 50))
    done: dict[str, object] = {}
    replies = {"x": (None, None), "y": (None, None)}
    while len(done) < 2:
        for name, steps in (("x", first), ("y", second)):
            if name in done:
                continue
            finished, op = ledger_store.advance(steps, *replies[name])
            if finished:
                done[name] = op
                continue
            replies[name] = step(ledgers.state, op)
    assert sorted(p for _, p in done.values()) == [1, 2]
    assert ledgers.release("r") == [b for b, _ in sorted(done.items(), key=lambda kv: kv[1][1])]


def ledgers_change(ledgers: Ledgers, e: Entry):
    return ledger_store.ask(e, ledgers.cap, now=lambda: ledgers.now)


def test_a_ticket_whose_writer_died_before_taking_it_is_taken_over():
    ledgers = Ledgers(cap=100)
    ledgers.ask(entry("r", 100))
    steps = ledgers_change(ledgers, entry("dead", 10))
    reply = None
    while True:  # the writer puts its entry under the next ticket, then dies before the ledger write
        op = steps.send(reply)
        reply, _ = step(ledgers.state, op)
        if isinstance(op, ledger_store.Put):
            break
    with pytest.raises(ledger_store.LedgerBusy):  # too soon: the ticket may still be taken (its caller retries)
        ledgers.ask(entry("next", 10))
    ledgers.now += ledger_store.STALE_ENTRY_S + 1
    assert ledgers.ask(entry("next", 10)) == ([], 1)  # its writer is gone: the ticket is taken over
    assert ledgers.ask(entry("after", 10)) == ([], 2)
    assert ledgers.release("r") == ["next", "after"]
    assert ledgers.ledger.queued == 0 and ledgers.ledger.queued_tasks == 0


class Scheduled:
    def __init__(self, name, inp):
        self.name, self.input = name, inp


class Waiter:
    pass


class FakeContext:
    from datetime import datetime
    current_utc_datetime = datetime(2026, 1, 1)
    is_replaying = False

    def __init__(self):
        self.statuses, self.event = [], Waiter()

    def set_custom_status(self, status):
        self.statuses.append(json.loads(status))

    def wait_for_external_event(self, name):
        assert name == names.ADMITTED_EVENT
        return self.event

    def create_timer(self, delay):
        return ("timer", delay)

    def call_activity(self, name, *, input=None, retry_policy=None):  # noqa: A002
        return Scheduled(name, input)

    def call_child_workflow(self, name, *, input=None, instance_id=None):  # noqa: A002
        return Scheduled(name, input)


def test_a_queued_batch_says_so_rechecks_on_a_timer_and_starts_when_the_admitted_event_comes(monkeypatch):
    monkeypatch.setattr(wf, "when_any", lambda tasks: ("any", tasks))
    ctx = FakeContext()
    gen = batch_workflow.process_batch(ctx, BatchInput(batch_id="b", total=250, chunks=3, max_in_flight=200,
                                                       max_tasks_in_progress=1000))
    ask = next(gen)
    assert ask.name == names.REQUEST_ADMISSION
    assert (ask.input.slots, ask.input.cap, ask.input.chunks) == (200, 1000, 3)
    waiting = gen.send({"position": 3})
    assert ctx.statuses[-1] == {"done": 0, "completed": 0, "rejected": 0, "failed": 0, "total": 250,
                                "queued": True}
    event, timer = waiting[1]
    assert event is ctx.event and timer[0] == "timer"
    assert gen.send(timer).name == names.REQUEST_ADMISSION  # the timer fired first: ask again
    waiting = gen.send({"position": 1})
    assert waiting[1][0] is ctx.event  # the same waiter: an event raised meanwhile is not lost
    fan_out = gen.send(ctx.event)  # admitted: the fan-out starts, two chunks at a time
    assert [child.name for child in fan_out[1]] == [names.RUN_CHUNK] * 2
    assert ctx.statuses[-1]["queued"] is False


def test_an_admitted_batch_starts_at_once(monkeypatch):
    monkeypatch.setattr(wf, "when_any", lambda tasks: ("any", tasks))
    ctx = FakeContext()
    gen = batch_workflow.process_batch(ctx, BatchInput(batch_id="b", total=5, chunks=1, max_in_flight=400,
                                                       max_tasks_in_progress=1000))
    assert next(gen).input.slots == 5
    assert [child.name for child in gen.send({"position": 0})[1]] == [names.RUN_CHUNK]


def test_the_reconciler_answers_for_terminated_failed_and_vanished_workflows_only():
    assert "terminated" in reconciler.unfinished_reason(wf.WorkflowStatus.TERMINATED, None)
    assert "boom" in reconciler.unfinished_reason(wf.WorkflowStatus.FAILED, "boom")
    assert "purged" in reconciler.unfinished_reason(None, None)
    assert reconciler.unfinished_reason(wf.WorkflowStatus.COMPLETED, None) is None


def test_the_backlog_is_every_queued_task_and_what_running_batches_have_not_done():
    ledgers = Ledgers(cap=800)
    for batch_id, total in (("a", 2000), ("b", 300), ("c", 1000)):
        ledgers.ask(Entry(batch_id=batch_id, slots=min(total, 400), total=total, chunks=1,
                          since="2026-01-01T00:00:00+00:00"))
    ledger = ledgers.ledger
    assert [e.batch_id for e in ledger.running] == ["a", "b"] and ledger.queued == 1
    assert ledger.backlog({}) == 3300  # nothing known done yet
    assert ledger.backlog({"a": 1500, "b": 300}) == 500 + 0 + 1000
    assert ledger.backlog({"a": 2100}) == 0 + 300 + 1000  # progress never counts below zero
    assert Ledger().backlog({}) == 0


def test_the_reconciler_reads_a_batchs_progress_from_its_custom_status():
    from services.workflow.models import BatchProgress

    assert reconciler._done(BatchProgress(total=500, done=200, completed=150, rejected=50).model_dump_json()) == 200
    assert reconciler._done(None) == 0  # not started: nothing done
    assert reconciler._done("not json") == 0


def test_a_batch_the_intake_admitted_starts_its_chunks_without_asking(monkeypatch):
    monkeypatch.setattr(wf, "when_any", lambda tasks: ("any", tasks))
    gen = batch_workflow.process_batch(FakeContext(), BatchInput(
        batch_id="b", total=5, chunks=1, max_in_flight=400, max_tasks_in_progress=1000, admitted=True))
    assert [child.name for child in next(gen)[1]] == [names.RUN_CHUNK]


class FakeLedgerStore(FakeSyncDapr):
    """The sidecar (its state API, as Redis behaves through Dapr; ``conflicts`` ledger writes fail first;
    pub/sub) and the workflow client, as the intake uses them."""

    def __init__(self, conflicts=0):
        super().__init__()
        self.conflicts, self.raised = conflicts, []
        self.started, self.published = (), []  # workflows that exist; events published

    def save_state(self, store, key, value, etag=None, options=None, state_metadata=None):
        if key == ADMISSION_LEDGER_KEY and self.conflicts:
            self.conflicts -= 1
            raise RuntimeError("etag mismatch")
        super().save_state(store, key, value, etag=etag, options=options, state_metadata=state_metadata)

    @property
    def ledger(self):
        return Ledger.model_validate_json(self.state.items[ADMISSION_LEDGER_KEY])

    def raise_workflow_event(self, instance_id, name):
        self.raised.append((instance_id, name))

    def get_workflow_state(self, instance_id, fetch_payloads=True):
        return object() if instance_id in self.started else None

    def publish_event(self, pubsub, topic, data, data_content_type=None):
        self.published.append((topic, json.loads(data)))


def batch(batch_id, size):
    from taskfan.contracts import TaskBatch
    return TaskBatch.model_validate({"batch_id": batch_id, "tasks": [
        {"task_id": f"{batch_id}-{i}", "title": "t", "description": "d"} for i in range(size)]})


def test_the_intake_admits_what_fits_queues_the_rest_and_is_idempotent():
    from services.workflow.intake import BatchIntake
    from taskfan.settings import Settings

    store = FakeLedgerStore(conflicts=2)  # another writer got in first, twice: read again, write again
    intake = BatchIntake(store, store, Settings(max_in_flight=400, max_tasks_in_progress=1000), LedgerStore())

    assert intake.admit(batch("a", 600)) is True  # 400 slots (its chunks in flight at once)
    assert intake.admit(batch("b", 600)) is True
    assert intake.admit(batch("c", 600)) is False  # 1200 > 1000: queued
    assert intake.admit(batch("d", 100)) is False  # would fit, but never overtakes c
    assert intake.admit(batch("a", 600)) is True  # redelivered: still one entry, still running
    ledger = store.ledger
    assert [(e.batch_id, e.slots) for e in ledger.running] == [("a", 400), ("b", 400)]
    assert ledger.queued == 2 and store.raised == []
    # Restarted with a larger cap: the next batch's request admits the queue, and wakes those batches.
    wider = BatchIntake(store, store, Settings(max_in_flight=400, max_tasks_in_progress=2000), LedgerStore())
    assert wider.admit(batch("e", 100)) is True
    assert store.raised == [("c", names.ADMITTED_EVENT), ("d", names.ADMITTED_EVENT)]


def test_a_batch_dapr_gave_up_on_gives_its_slots_back_unless_its_workflow_started():
    from services.workflow.intake import BatchIntake
    from taskfan import events
    from taskfan.contracts import DEADLETTER_TOPIC, TASK_BATCH_EVENT_TYPE
    from taskfan.settings import Settings

    store = FakeLedgerStore()
    intake = BatchIntake(store, store, Settings(max_in_flight=400, max_tasks_in_progress=800), LedgerStore())
    for batch_id in "abc":
        intake.admit(batch(batch_id, 400))
    store.started = ("b",)  # a's workflow never started; b's did
    for batch_id in "ab":
        raw = events.encode(TASK_BATCH_EVENT_TYPE, batch(batch_id, 400))
        assert intake.on_undeliverable(type("Event", (), {"data": raw})()).status.name == "success"
    ledger = store.ledger
    assert [e.batch_id for e in ledger.running] == ["b", "c"] and ledger.queued == 0
    assert store.raised == [("c", names.ADMITTED_EVENT)]
    assert [topic for topic, _ in store.published] == [DEADLETTER_TOPIC] * 2
    assert intake.on_undeliverable(type("Event", (), {"data": b"not json"})()).status.name == "success"


class FailingStart(FakeLedgerStore):
    """The intake's clients, where claiming the id works and starting the workflow raises ``error``."""

    def __init__(self, error):
        super().__init__()
        self.error = error

    def save_state(self, store, key, value, etag=None, options=None, state_metadata=None):
        if key.startswith("batch:"):
            return  # the batch-id claim: new
        super().save_state(store, key, value, etag=etag, options=options)

    def save_bulk_state(self, store, items):
        pass

    def schedule_new_workflow(self, name, input=None, instance_id=None):  # noqa: A002 - the SDK's name
        raise self.error


class RpcError(grpc.RpcError):
    def __init__(self, code):
        self._code = code

    def code(self):
        return self._code

    def details(self):
        return f"sidecar says {self._code.name}"


@pytest.mark.parametrize(("error", "answer"), [
    (RpcError(grpc.StatusCode.UNAVAILABLE), "retry"),  # the sidecar is restarting: it can pass
    (RpcError(grpc.StatusCode.UNKNOWN), "retry"),
    (ConnectionRefusedError("connection refused"), "retry"),
    (ledger_store.LedgerBusy("busy"), "retry"),
    (RpcError(grpc.StatusCode.INVALID_ARGUMENT), "success"),  # it would fail the same way again
    (ValueError("something about this batch"), "success"),
    (RecursionError("maximum recursion depth exceeded"), "success"),
])
def test_a_failure_that_can_pass_is_retried_and_one_that_cannot_is_dead_lettered_at_once(error, answer):
    from services.workflow.intake import BatchIntake
    from taskfan import events
    from taskfan.contracts import DEADLETTER_TOPIC, TASK_BATCH_EVENT_TYPE
    from taskfan.settings import Settings

    store = FailingStart(error)
    intake = BatchIntake(store, store, Settings(max_in_flight=400, max_tasks_in_progress=800), LedgerStore())
    raw = events.encode(TASK_BATCH_EVENT_TYPE, batch("a", 5))
    assert intake.on_event(type("Event", (), {"data": raw})()).status.name == answer
    if answer == "retry":
        assert store.published == []
        return
    [(topic, record)] = store.published
    assert topic == DEADLETTER_TOPIC and type(error).__name__ in record["data"]["reason"]
    assert record["data"]["event"]["data"]["batch_id"] == "a"
    # Its slots were given back: the next batch is admitted, not queued behind one that never runs.
    assert store.ledger.running == []


def test_a_batch_id_with_colons_runs_under_an_instance_id_dapr_reads_back_whole():
    from services.workflow.intake import BatchIntake
    from taskfan.settings import Settings

    started = []

    class Recording(FailingStart):
        def schedule_new_workflow(self, name, input=None, instance_id=None):  # noqa: A002
            started.append(instance_id)

    store = Recording(None)
    intake = BatchIntake(store, store, Settings(max_in_flight=400, max_tasks_in_progress=800), LedgerStore())
    intake.start(batch("hx::1:", 5))
    assert started == ["hx~~1~"]
    assert store.ledger.running[0].batch_id == "hx::1:"  # the ledger keeps the batch id


class Intake(FakeLedgerStore):
    """The intake's clients as a first delivery meets them, with the batch claimed by ingest before; its reads
    wait for one another (``meet``): made one after the other, they would never meet."""

    def __init__(self, meet=None, answered=False, started=()):
        import threading

        super().__init__()
        self.meet, self.answered, self.started, self.scheduled = meet, answered, started, []
        self.reads, self.lock = 0, threading.Lock()

    def wait(self):
        """The first reads (as many as ``meet`` has parties) wait for one another."""
        with self.lock:
            self.reads += 1
            first = self.meet is not None and self.reads <= self.meet.parties
        if first:
            self.meet.wait()

    def save_bulk_state(self, store, items):
        self.stored = [item.key for item in items]

    def get_state(self, store, key):
        self.wait()
        if key.startswith("taskfan:") and key.endswith(":outcome") and self.answered:
            return type("Item", (), {"key": key, "data": b"{}", "etag": "1"})()
        return super().get_state(store, key)

    def get_workflow_state(self, instance_id, fetch_payloads=True):
        self.wait()
        return super().get_workflow_state(instance_id, fetch_payloads)

    def schedule_new_workflow(self, name, input=None, instance_id=None):  # noqa: A002 - the SDK's name
        self.scheduled.append(instance_id)


def deliver(store, batch_id="b::1"):
    from services.workflow.intake import BatchIntake
    from taskfan import batch_records, events
    from taskfan.contracts import TASK_BATCH_EVENT_TYPE
    from taskfan.settings import Settings

    the_batch = batch(batch_id, 5)
    meet, store.meet = store.meet, None
    assert batch_records.claim(store, the_batch) is batch_records.Claim.NEW  # ingest's claim
    store.meet, store.reads = meet, 0
    intake = BatchIntake(store, store, Settings(max_in_flight=400, max_tasks_in_progress=800), LedgerStore())
    raw = events.encode(TASK_BATCH_EVENT_TYPE, the_batch)
    return intake.on_event(type("Event", (), {"data": raw})()).status.name


def test_the_intake_reads_the_claim_and_both_duplicate_checks_at_once_then_starts_the_batch():
    import threading

    store = Intake(meet=threading.Barrier(3, timeout=5))  # the record, the outcome record, the workflow
    assert deliver(store) == "success"
    assert store.scheduled == ["b~~1"] and store.ledger.running[0].batch_id == "b::1"


@pytest.mark.parametrize("store", [Intake(answered=True), Intake(started=("b~~1",))], ids=["answered", "started"])
def test_a_duplicate_the_intake_finds_answered_or_started_is_ignored_and_nothing_stored(store):
    assert deliver(store) == "success"
    assert store.scheduled == [] and not hasattr(store, "stored") and ADMISSION_LEDGER_KEY not in store.state.items
