"""Admission control: the ledger's rules, and the batch workflow waiting its turn (driven with fakes)."""

import json

import dapr.ext.workflow as wf
import grpc
import pytest

from services.workflow import admission, batch_workflow, ledger_store, names, reconciler
from services.workflow.admission import Entry, Ledger
from services.workflow.models import BatchInput


def entry(batch_id: str, slots: int) -> Entry:
    return Entry(batch_id=batch_id, slots=slots, total=slots, chunks=1, since="2026-01-01T00:00:00+00:00")


def test_batches_are_admitted_in_arrival_order_while_their_slots_fit_under_the_cap():
    ledger = Ledger()
    assert admission.request(ledger, entry("a", 400), cap=1000) == ["a"]
    assert admission.request(ledger, entry("b", 400), cap=1000) == ["b"]
    assert admission.request(ledger, entry("c", 400), cap=1000) == []  # 1200 > 1000: waits
    assert admission.request(ledger, entry("d", 100), cap=1000) == []  # would fit, but never overtakes c
    assert [ledger.position(b) for b in "abcd"] == [0, 0, 1, 2]
    assert ledger.in_progress() == 800
    assert admission.release(ledger, "a") == ["c", "d"]
    assert ledger.in_progress() == 900
    assert ledger.position("a") is None


def test_requests_and_releases_are_idempotent():
    ledger = Ledger()
    admission.request(ledger, entry("a", 600), cap=1000)
    admission.request(ledger, entry("b", 600), cap=1000)
    assert admission.request(ledger, entry("b", 600), cap=1000) == []  # asked again: still one entry
    assert len(ledger.queue) == 1
    assert admission.release(ledger, "a") == ["b"]
    assert admission.release(ledger, "a") == []
    assert admission.release(ledger, "nobody") == []


def test_a_batch_larger_than_the_cap_runs_alone():
    ledger = Ledger()
    admission.request(ledger, entry("small", 10), cap=100)
    assert admission.request(ledger, entry("huge", 400), cap=100) == []
    assert admission.release(ledger, "small") == ["huge"]
    assert admission.request(ledger, entry("next", 1), cap=100) == []


def test_the_ledger_round_trips_as_json():
    ledger = Ledger()
    admission.request(ledger, entry("a", 5), cap=10)
    admission.request(ledger, entry("b", 10), cap=10)
    assert Ledger.model_validate_json(ledger.model_dump_json()) == ledger


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
    ledger = Ledger()
    for batch_id, total in (("a", 2000), ("b", 300), ("c", 1000)):
        admission.request(ledger, Entry(batch_id=batch_id, slots=min(total, 400), total=total, chunks=1,
                                        since="2026-01-01T00:00:00+00:00"), cap=800)
    assert [e.batch_id for e in ledger.running] == ["a", "b"] and [e.batch_id for e in ledger.queue] == ["c"]
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


class FakeLedgerStore:
    """The sidecar (state API for one key, with first-write ETags; ``conflicts`` writes fail first; pub/sub)
    and the workflow client, as the intake uses them."""

    def __init__(self, conflicts=0):
        self.data, self.etag, self.conflicts, self.raised = b"", "", conflicts, []
        self.started, self.published = (), []  # workflows that exist; events published

    def get_state(self, store, key):
        return type("Item", (), {"data": self.data, "etag": self.etag})()

    def save_state(self, store, key, value, etag=None, options=None):
        if self.conflicts or (etag or "") != self.etag:
            self.conflicts = max(0, self.conflicts - 1)
            raise RuntimeError("etag mismatch")
        self.data, self.etag = value.encode(), str(int(self.etag or 0) + 1)

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
    intake = BatchIntake(store, store, Settings(max_in_flight=400, max_tasks_in_progress=1000))

    assert intake.admit(batch("a", 600)) is True  # 400 slots (its chunks in flight at once)
    assert intake.admit(batch("b", 600)) is True
    assert intake.admit(batch("c", 600)) is False  # 1200 > 1000: queued
    assert intake.admit(batch("d", 100)) is False  # would fit, but never overtakes c
    assert intake.admit(batch("a", 600)) is True  # redelivered: still one entry, still running
    ledger = Ledger.model_validate_json(store.data)
    assert [(e.batch_id, e.slots) for e in ledger.running] == [("a", 400), ("b", 400)]
    assert [e.batch_id for e in ledger.queue] == ["c", "d"] and store.raised == []
    # Restarted with a larger cap: the next batch's request admits the queue, and wakes those batches.
    wider = BatchIntake(store, store, Settings(max_in_flight=400, max_tasks_in_progress=2000))
    assert wider.admit(batch("e", 100)) is True
    assert store.raised == [("c", names.ADMITTED_EVENT), ("d", names.ADMITTED_EVENT)]


def test_a_batch_dapr_gave_up_on_gives_its_slots_back_unless_its_workflow_started():
    from services.workflow.intake import BatchIntake
    from taskfan import events
    from taskfan.contracts import DEADLETTER_TOPIC, TASK_BATCH_EVENT_TYPE
    from taskfan.settings import Settings

    store = FakeLedgerStore()
    intake = BatchIntake(store, store, Settings(max_in_flight=400, max_tasks_in_progress=800))
    for batch_id in "abc":
        intake.admit(batch(batch_id, 400))
    store.started = ("b",)  # a's workflow never started; b's did
    for batch_id in "ab":
        raw = events.encode(TASK_BATCH_EVENT_TYPE, batch(batch_id, 400))
        assert intake.on_undeliverable(type("Event", (), {"data": raw})()).status.name == "success"
    ledger = Ledger.model_validate_json(store.data)
    assert [e.batch_id for e in ledger.running] == ["b", "c"] and ledger.queue == []
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
    intake = BatchIntake(store, store, Settings(max_in_flight=400, max_tasks_in_progress=800))
    raw = events.encode(TASK_BATCH_EVENT_TYPE, batch("a", 5))
    assert intake.on_event(type("Event", (), {"data": raw})()).status.name == answer
    if answer == "retry":
        assert store.published == []
        return
    [(topic, record)] = store.published
    assert topic == DEADLETTER_TOPIC and type(error).__name__ in record["data"]["reason"]
    assert record["data"]["event"]["data"]["batch_id"] == "a"
    # Its slots were given back: the next batch is admitted, not queued behind one that never runs.
    assert Ledger.model_validate_json(store.data).running == []


def test_a_batch_id_with_colons_runs_under_an_instance_id_dapr_reads_back_whole():
    from services.workflow.intake import BatchIntake
    from taskfan.settings import Settings

    started = []

    class Recording(FailingStart):
        def schedule_new_workflow(self, name, input=None, instance_id=None):  # noqa: A002
            started.append(instance_id)

    store = Recording(None)
    intake = BatchIntake(store, store, Settings(max_in_flight=400, max_tasks_in_progress=800))
    intake.start(batch("hx::1:", 5))
    assert started == ["hx~~1~"]
    assert Ledger.model_validate_json(store.data).running[0].batch_id == "hx::1:"  # the ledger keeps the batch id
