"""The batch workflow and the outcome activity, driven with fakes: always an outcome, else a dead letter."""

import asyncio
import json
from datetime import datetime

import dapr.ext.workflow as wf
import dapr.ext.workflow._durabletask.internal.protos as pb
import pytest

from services.workflow import batch_workflow, names, outcome
from services.workflow.activities import BatchActivities, StepCalls
from services.workflow.ledger_store import LedgerStore
from services.workflow.live import LiveBatches
from services.workflow.metrics import WorkflowMetrics
from services.workflow.models import BatchFailure, BatchInput, PublishInput
from services.workflow.state_keys import outcome_key, results_key, tasks_key
from services.workflow.step_client import StepClient
from taskfan import pipeline
from taskfan.contracts import TaskResult
from tests.unit.fake_state import FakeDaprState


class Scheduled:
    is_failed = False

    def __init__(self, name, inp):
        self.name, self.input = name, inp

    def get_result(self):  # a chunk that ran to its end
        return {"summary": {"done": 100, "completed": 100, "rejected": 0, "failed": 0}}


class FakeContext:
    current_utc_datetime = datetime(2026, 1, 1)
    is_replaying = False

    def set_custom_status(self, status):
        self.status = json.loads(status)

    def call_activity(self, name, *, input=None, retry_policy=None):  # noqa: A002 - the SDK's name
        return Scheduled(name, input)


def test_a_batch_whose_outcome_cannot_be_published_is_dead_lettered_then_fails(monkeypatch):
    monkeypatch.setattr(wf, "when_any", lambda tasks: ("any", tasks))
    ctx = FakeContext()
    gen = batch_workflow.process_batch(ctx, BatchInput(batch_id="b", total=200, chunks=2, max_in_flight=400))
    scheduled, activity_names = next(gen), []
    with pytest.raises(wf.TaskFailedError):
        while True:
            if isinstance(scheduled, tuple):  # when_any: the first running chunk finishes
                scheduled = gen.send(scheduled[1][0])
                continue
            activity_names.append(scheduled.name)
            if scheduled.name == names.PUBLISH_OUTCOME:
                error = pb.TaskFailureDetails(errorMessage="pub/sub unavailable", errorType="RuntimeError")
                scheduled = gen.throw(wf.TaskFailedError("publish_outcome failed", error))
            elif scheduled.name == names.DEAD_LETTER_BATCH:
                failure = scheduled.input
                scheduled = gen.send(None)
    assert activity_names == [names.PUBLISH_OUTCOME, names.DEAD_LETTER_BATCH]
    assert failure == BatchFailure(batch_id="b", total=200,
                                   reason="batch b: no outcome could be published: pub/sub unavailable")
    assert ctx.status["done"] == 200


class FakeStateClient(FakeDaprState):
    """The async DaprClient calls publish_outcome makes, over a dict of state."""

    def __init__(self, state):
        super().__init__(state)
        self.state, self.published = self.items, []

    async def publish_event(self, pubsub, topic, data, data_content_type=None):
        self.published.append(json.loads(data))


class Releases(LedgerStore):
    """A ledger store that lists the batches whose slots are given back (the ledger is test_admission's)."""

    def __init__(self, fails=False):
        super().__init__()
        self.released, self.fails = [], fails

    async def release_and_wake(self, client, workflows, batch_id):
        if self.fails:
            raise RuntimeError("ledger gone")
        self.released.append(batch_id)


def batch_activities(client, ledger=None):
    """The activities over a fake state store and ledger store (the workflow client is never reached)."""
    steps = StepCalls(pipeline.load(), StepClient(timeout_s=30.0), LiveBatches())
    return BatchActivities(steps, ledger or Releases(), WorkflowMetrics(), dapr=client, workflows=object())


def test_an_outcome_accounts_for_a_chunk_whose_results_were_lost_then_the_batch_is_forgotten():
    task = {"task_id": "t-b", "title": "Hello world", "description": "Long enough text"}
    done = {"task_id": "t-a", "status": "completed", "score": 50, "tags": [], "issues": [], "error": None}
    client = FakeStateClient({results_key("b", 0): json.dumps([done]).encode(),
                              tasks_key("b", 1): json.dumps([task]).encode()})
    inp = PublishInput(batch_id="b", chunks=2, started_at="t0", finished_at="t1")
    ledger = Releases()
    summary = asyncio.run(batch_activities(client, ledger).publish_outcome(None, inp))
    assert (summary.total, summary.completed, summary.failed) == (2, 1, 1)
    lost = client.published[0]["data"]["results"][1]
    assert lost["task_id"] == "t-b" and lost["status"] == "failed"
    assert lost["error"] == "chunk: the results of chunk 1 were lost from the state store"
    assert ledger.released == ["b"] and set(client.state) == {outcome_key("b")}


def test_an_outcome_is_published_once_even_if_the_engine_runs_publish_outcome_again():
    # A crash can lose the history entry of a publish that happened (seen in the soak): the second run
    # finds the record of the first and publishes nothing.
    done = {"task_id": "t-a", "status": "completed", "score": 50, "tags": [], "issues": [], "error": None}
    client = FakeStateClient({results_key("b", 0): json.dumps([done]).encode()})
    inp = PublishInput(batch_id="b", chunks=1, started_at="t0", finished_at="t1")
    first = asyncio.run(batch_activities(client).publish_outcome(None, inp))
    again = asyncio.run(batch_activities(client).publish_outcome(None, inp.model_copy(update={"finished_at": "t2"})))
    assert len(client.published) == 1
    assert again == first


def test_the_sdk_still_has_what_a_traced_workflow_start_uses() -> None:
    """services/workflow/intake.py ``schedule`` reaches into dapr-ext-workflow 1.18.1: an SDK upgrade that moves
    these fails here, not on the stack."""
    from dapr.ext.workflow import DaprWorkflowClient
    from dapr.ext.workflow._durabletask.internal import protos as pb

    hub = DaprWorkflowClient(host="127.0.0.1", port="1")._DaprWorkflowClient__obj  # type: ignore[attr-defined]
    assert callable(hub._stub.StartInstance)
    request = pb.CreateInstanceRequest(name="n", instanceId="i", parentTraceContext=pb.TraceContext(
        traceParent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"))
    assert request.parentTraceContext.traceParent.startswith("00-4bf9")


DONE = {"task_id": "t-a", "status": "completed", "score": 50, "tags": [], "issues": [], "error": None}


class CrashAfterPublish(FakeStateClient):
    """The publish goes out, then the process dies before the record says so (the write fails)."""

    async def save_state(self, store, key, value, etag=None, options=None, state_metadata=None):
        if '"published":true' in value:
            raise ConnectionError("killed")
        await super().save_state(store, key, value, etag=etag, options=options, state_metadata=state_metadata)


def test_an_outcome_is_recorded_before_it_is_published_so_a_run_again_repeats_the_same_event():
    client = CrashAfterPublish({results_key("b", 0): json.dumps([DONE]).encode()})
    inp = PublishInput(batch_id="b", chunks=1, started_at="t0", finished_at="t1")
    with pytest.raises(ConnectionError):
        asyncio.run(outcome.publish_once(client, inp, lambda _: "lost"))
    # Run again (a later finished_at, or the reconciler with its own reason): the recorded event, unchanged.
    again = FakeStateClient(client.state)
    again.first_write, again.etags = client.first_write, client.etags
    asyncio.run(outcome.publish_once(again, inp.model_copy(update={"finished_at": "t9"}), lambda _: "other"))
    assert again.published == client.published  # same id, same content: a redelivery, not a second outcome
    assert client.published[0]["id"] == "outcome:b" and client.published[0]["data"]["finished_at"] == "t1"
    asyncio.run(outcome.publish_once(again, inp, lambda _: "lost"))
    assert len(again.published) == 1  # recorded as published now: nothing more


def test_a_run_again_with_its_results_at_hand_publishes_the_recorded_event_and_reads_no_record_first():
    # The only chunk's run publishes from the results it has just saved; run again after a crash between the
    # record and the publish, its new results (a later finish) lose to the recorded ones.
    class ReadsCounted(CrashAfterPublish):
        reads = 0

        async def get_state(self, store, key):
            self.reads += 1
            return await super().get_state(store, key)

    client = ReadsCounted({})
    first = PublishInput(batch_id="b", chunks=1, started_at="t0", finished_at="t1")
    saved = {0: [TaskResult.model_validate(DONE)]}
    with pytest.raises(ConnectionError):
        asyncio.run(outcome.publish_once(client, first, lambda _: "lost", saved=saved))
    assert client.reads == 1  # only for the record's ETag, after the publish
    again = FakeStateClient(client.state)
    again.first_write, again.etags = client.first_write, client.etags
    asyncio.run(outcome.publish_once(again, first.model_copy(update={"finished_at": "t9"}), lambda _: "lost",
                                     saved={0: [TaskResult.model_validate({**DONE, "score": 7})]}))
    assert again.published == client.published and client.published[0]["data"]["results"][0]["score"] == 50
    asyncio.run(outcome.publish_once(again, first, lambda _: "lost", saved=saved))
    assert len(again.published) == 1  # recorded as published now: nothing more


def test_the_reconciler_and_the_workflow_racing_publish_one_outcome():
    # Terminated while its publish ran: both aggregate; the first to record wins; the other publishes that.
    client = FakeStateClient({results_key("b", 0): json.dumps([DONE]).encode(),
                              tasks_key("b", 1): json.dumps([{"task_id": "t-b", "title": "x",
                                                              "description": "y"}]).encode()})
    workflow = PublishInput(batch_id="b", chunks=2, started_at="t0", finished_at="t1")
    reconciler_inp = workflow.model_copy(update={"finished_at": "t2"})
    first = asyncio.run(outcome._record_outcome(client, workflow, lambda _: "lost", "COMPLETED"))
    second = asyncio.run(outcome._record_outcome(client, reconciler_inp, lambda _: "terminated", "TERMINATED"))
    assert second == first and first.ended == "COMPLETED"
    asyncio.run(outcome.publish_once(client, reconciler_inp, lambda _: "terminated", "TERMINATED"))
    asyncio.run(outcome.publish_once(client, workflow, lambda _: "lost"))
    assert len(client.published) == 1 and client.published[0]["data"]["results"][1]["error"] == "chunk: lost"
    # Published, the record keeps how the batch ended and its counts (what answers once Dapr purged it).
    kept = asyncio.run(outcome.record_of(client, "b"))
    assert kept.published and kept.event is None and kept.ended == "COMPLETED"
    assert kept.progress().model_dump() == {"done": 2, "completed": 1, "rejected": 0, "failed": 1, "total": 2,
                                            "queued": False}


def test_a_failed_cleanup_after_the_publish_is_not_a_failed_publish():
    client = FakeStateClient({results_key("b", 0): json.dumps([DONE]).encode()})
    inp = PublishInput(batch_id="b", chunks=1, started_at="t0", finished_at="t1")
    summary = asyncio.run(batch_activities(client, Releases(fails=True)).publish_outcome(None, inp))
    assert summary.completed == 1 and len(client.published) == 1


def test_a_one_chunk_batchs_run_chunk_run_again_after_its_own_cleanup_answers_from_the_record():
    client = FakeStateClient({results_key("b", 0): json.dumps([DONE]).encode()})
    asyncio.run(batch_activities(client).publish_outcome(None, PublishInput(batch_id="b", chunks=1, started_at="t0",
                                                              finished_at="t1")))
    assert tasks_key("b", 0) not in client.state  # cleaned up
    from services.workflow.models import ChunkRef, ChunkRun
    result = asyncio.run(batch_activities(client).run_chunk(None, ChunkRun(chunk=ChunkRef(batch_id="b", index=0),
                                                             publish_since="t0")))
    assert result.summary.done == 1 and result.outcome.completed == 1 and len(client.published) == 1
    with pytest.raises(LookupError):  # a chunk of a larger batch has no such answer: its tasks are lost
        asyncio.run(batch_activities(client).run_chunk(None, ChunkRun(chunk=ChunkRef(batch_id="c", index=0))))


def test_an_outcome_from_results_just_saved_is_the_one_read_back_byte_for_byte():
    """The run of a batch's only chunk publishes from the results it has just saved, without reading them back
    (one sidecar call fewer): the event is the same as from the saved copy, whatever the results hold."""
    from taskfan.contracts import RESULT_LIST

    results = [TaskResult(task_id="a::b||c", status="completed", score=2**62, tags=["\u00e9\U0001f389", "x"],
                          added={"deep": [[[{"n": 1e308}]]], "text": "::||"}),
               TaskResult(task_id="e", status="failed", score=None, error="scorer: \u00e9 broke"),
               TaskResult(task_id="no", status="rejected", score=0, issues=["too short"])]
    inp = PublishInput(batch_id="b", chunks=1, started_at="t0", finished_at="t1")
    stored = RESULT_LIST.dump_json(results)  # as _save_results writes them
    read_back, from_memory = FakeStateClient({results_key("b", 0): stored}), FakeStateClient({})
    reads = []
    from_memory.get_bulk_state = lambda *args, **kwargs: reads.append(args)  # must not be called
    asyncio.run(outcome.publish_once(read_back, inp, lambda _: "lost"))
    asyncio.run(outcome.publish_once(from_memory, inp, lambda _: "lost", saved={0: results}))
    assert not reads

    def untimed(events):  # the CloudEvent's `time` is when it was made
        return [{k: v for k, v in event.items() if k != "time"} for event in events]

    assert untimed(from_memory.published) == untimed(read_back.published) and len(read_back.published) == 1
    assert json.dumps(from_memory.published[0]["data"]) == json.dumps(read_back.published[0]["data"])
