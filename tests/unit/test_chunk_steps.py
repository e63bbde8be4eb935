"""A chunk through the chain, as the batch workflow runs it: ``process_batch`` driven step by step with a
fake engine, ``run_chunk`` run for real over fake step calls and a fake state store. No sidecar, no runtime.
"""

import asyncio
import json
from collections import Counter

import dapr.ext.workflow as wf
import pytest

from services.workflow import batch_workflow, chunk_steps, live, names
from services.workflow.activities import BatchActivities
from services.workflow.chunk_steps import STEP_ATTEMPTS, STEP_BACKOFF
from services.workflow.ledger_store import LedgerStore
from services.workflow.live import ChunkStages, LiveBatches
from services.workflow.metrics import WorkflowMetrics
from services.workflow.models import BatchInput, ChunkRef, ChunkRun, MovingTask, WaitingTask
from services.workflow.state_keys import outcome_key, results_key, stages_key, tasks_key
from taskfan import pipeline
from taskfan.contracts import MAX_ADDED_BYTES, StepAnswer, Task
from tests.unit.fake_state import FakeDaprState


class Scheduled:
    is_failed = False

    def __init__(self, name, inp):
        self.name, self.input, self.result = name, inp, None

    def get_result(self):
        return self.result


class FakeContext:
    current_utc_datetime = __import__("datetime").datetime(2026, 1, 1)
    is_replaying = False

    def set_custom_status(self, status):
        self.status = status

    def call_activity(self, name, *, input=None, retry_policy=None):  # noqa: A002 - the SDK's name
        return Scheduled(name, input)

    def create_timer(self, fire_at):
        return Scheduled("timer", fire_at)


class FakeState(FakeDaprState):
    """The state and pub/sub calls run_chunk makes: what a run leaves to the next, and the outcome a batch
    of one chunk publishes itself."""

    def __init__(self, publish_fails=False):
        super().__init__()
        self.published, self.publish_fails = [], publish_fails
        self.saved = {}  # each key's last value ever written, deleted or not

    def put(self, key, value, *args, **kwargs):
        super().put(key, value, *args, **kwargs)
        self.saved[key] = json.loads(value)

    async def publish_event(self, pubsub, topic, data, data_content_type=None):
        if self.publish_fails:
            raise RuntimeError("pub/sub unavailable")
        self.published.append(json.loads(data))


def task(task_id, title="Urgent: fix login API", description="The login api returns 500 errors"):
    return Task(task_id=task_id, title=title, description=description)


VALIDATE, ENRICH, SCORE = pipeline.load().names  # the committed pipeline.yaml


def rules(step, item):
    if step == VALIDATE:
        return {"issues": [] if len(item["title"]) >= 5 else ["Title too short (min 5 characters)"]}
    if step == ENRICH:
        return {"tags": ["high-priority", "backend"]}
    assert item == {"task_id": item["task_id"], "tags": ["high-priority", "backend"]}  # what enrichment gave
    return {"score": 85}


class FakeSteps:
    """The step calls run_chunk makes, answered by ``answer(step name, request)`` and counted."""

    def __init__(self, answer, calls, declared=None, step_s=0.0):
        self.pipeline, self.answer, self.calls = declared or pipeline.load(), answer, calls
        self.book = LiveBatches()
        self.step_s = step_s  # how long each call takes

    def for_batch(self, batch_id, traceparent=None, entering=None):
        async def call(step, payload):
            if entering is not None:
                await entering(step.name, [item["task_id"] for item in payload])
            await asyncio.sleep(self.step_s)
            self.calls[step.name] += 1
            self.calls[(step.name, len(payload))] += 1
            return [StepAnswer(task_id=item["task_id"], **self.answer(step.name, item)) for item in payload]
        return call


def drive(monkeypatch, tasks, answer, state=None, declared=None, step_s=0.0):
    """Run a one-chunk batch to its outcome; ``answer(step, item)`` gives one task's step answer (a dict).
    Returns the results (published, or saved for the workflow's publish) and what was called (steps by task,
    activities, timers)."""
    calls, pauses, state = Counter(), [], state or FakeState()

    state.put(tasks_key("b", 0), json.dumps([t.model_dump() for t in tasks]))  # as the intake stores them

    class Releases(LedgerStore):  # the ledger is test_admission's
        async def release_and_wake(self, client, workflows, batch_id):
            calls["released"] += 1

    the_activities = BatchActivities(FakeSteps(answer, calls, declared, step_s), Releases(), WorkflowMetrics(),
                                     dapr=state, workflows=object())
    monkeypatch.setattr(wf, "when_any", lambda pending: ("any", pending))

    gen = batch_workflow.process_batch(FakeContext(), BatchInput(batch_id="b", total=len(tasks), chunks=1,
                                                                 max_in_flight=400))
    yielded = next(gen)
    while True:
        if isinstance(yielded, tuple):  # when_any: the first one finishes
            first = yielded[1][0]
            if first.name == names.RUN_CHUNK:
                assert isinstance(first.input, ChunkRun) and first.input.chunk.batch_id == "b"
                first.result = asyncio.run(the_activities.run_chunk(None, first.input)).model_dump(mode="json")
            else:
                pauses.append(first.input)
            calls[first.name] += 1
            try:
                yielded = gen.send(first)
            except StopIteration as stop:  # the chunk published the outcome itself
                assert stop.value.batch_id == "b" and state.published[0]["data"]["batch_id"] == "b"
                calls["published by the chunk"] += 1
                break
        elif yielded.name == names.PUBLISH_OUTCOME:
            assert yielded.input.reruns == calls[names.RUN_CHUNK] - 1
            gen.close()
            break
        else:
            raise AssertionError(f"unexpected {yielded.name}")
    assert calls["published by the chunk"] == (not state.publish_fails)
    if state.publish_fails:  # saved for the workflow's own publish_outcome
        return state.saved[results_key("b", 0)], calls, pauses
    # Published and forgotten: only the record of the outcome is left. The results were never saved apart:
    # the record holds them.
    assert state.items.keys() == {outcome_key("b")}
    assert results_key("b", 0) not in state.saved
    return state.published[0]["data"]["results"], calls, pauses


def test_chain_rejects_early_keeps_input_order_and_calls_each_step_once(monkeypatch):
    results, calls, pauses = drive(monkeypatch, [task("a"), task("b", title="Fix"), task("c")], rules)
    assert [r["task_id"] for r in results] == ["a", "b", "c"]
    assert [r["status"] for r in results] == ["completed", "rejected", "completed"]
    assert results[1]["issues"] == ["Title too short (min 5 characters)"]
    assert results[0] == {"task_id": "a", "status": "completed", "score": 85, "tags": ["high-priority", "backend"],
                          "issues": [], "error": None}
    # One activity for the chunk, one call per step; the rejected task is not enriched or scored.
    assert calls[names.RUN_CHUNK] == 1 and not pauses
    assert calls[(VALIDATE, 3)] == calls[(ENRICH, 2)] == calls[(SCORE, 2)] == 1


def test_a_failing_task_is_retried_alone_after_durable_pauses_then_succeeds(monkeypatch):
    attempts = Counter()

    def flaky(step, item):
        if step == SCORE and item["task_id"] == "b":
            attempts["b"] += 1
            if attempts["b"] < STEP_ATTEMPTS:
                return {"error": "scorer unavailable"}
        return rules(step, item)

    results, calls, pauses = drive(monkeypatch, [task("a"), task("b")], flaky)
    assert [r["status"] for r in results] == ["completed", "completed"]
    assert calls[names.RUN_CHUNK] == STEP_ATTEMPTS
    assert pauses == list(STEP_BACKOFF)
    # Only b is run again, and only from the step that failed; a's result is kept from the first run.
    assert calls[(SCORE, 1)] == STEP_ATTEMPTS - 1 and calls[VALIDATE] == calls[ENRICH] == 1


def test_a_task_failing_every_attempt_is_failed_with_its_step_error_and_tags(monkeypatch):
    def broken(step, item):
        if step == SCORE and item["task_id"] == "b":
            return {"error": "model crashed"}
        return rules(step, item)

    results, calls, _ = drive(monkeypatch, [task("a"), task("b")], broken)
    assert results[0]["status"] == "completed"
    assert results[1] == {"task_id": "b", "status": "failed", "score": None, "tags": ["high-priority", "backend"],
                          "issues": [], "error": "score: model crashed"}
    assert calls[names.RUN_CHUNK] == STEP_ATTEMPTS


def test_each_step_has_its_own_attempts(monkeypatch):
    # b fails validation twice, then enrichment twice: it still completes (each step gets STEP_ATTEMPTS).
    failures = Counter()

    def flaky(step, item):
        if item["task_id"] == "b" and step in (VALIDATE, ENRICH) and failures[step] < STEP_ATTEMPTS - 1:
            failures[step] += 1
            return {"error": f"{step} unavailable"}
        return rules(step, item)

    results, calls, pauses = drive(monkeypatch, [task("a"), task("b")], flaky)
    assert [r["status"] for r in results] == ["completed", "completed"]
    assert calls[names.RUN_CHUNK] == 1 + 2 * (STEP_ATTEMPTS - 1)
    assert pauses == [*STEP_BACKOFF, *STEP_BACKOFF]


def test_an_answer_without_a_score_fails_the_task_at_once(monkeypatch):
    def no_score(step, item):
        return {} if step == SCORE else rules(step, item)

    results, calls, _ = drive(monkeypatch, [task("a")], no_score)
    assert results[0]["error"] == "score: scorer/score answered no 'score'"
    assert calls[names.RUN_CHUNK] == 1


def test_a_chunk_whose_activity_failed_reports_its_tasks_failed(monkeypatch):
    monkeypatch.setattr(wf, "when_any", lambda pending: ("any", pending))
    gen = batch_workflow.process_batch(FakeContext(), BatchInput(batch_id="b", total=3, chunks=1, max_in_flight=400))
    first = next(gen)[1][0]
    first.is_failed = True
    first.get_exception = lambda: RuntimeError("state store gone")
    save = gen.send(first)
    assert save.name == names.SAVE_RESULTS and (save.input.index, save.input.error) == (0, "state store gone")
    assert gen.send({"done": 3, "failed": 3}).name == names.PUBLISH_OUTCOME


@pytest.mark.parametrize("attempts, pause", [(1, STEP_BACKOFF[0]), (2, STEP_BACKOFF[1]), (5, STEP_BACKOFF[-1])])
def test_the_pause_grows_with_the_attempts(attempts, pause):
    waiting = [WaitingTask(task_id="a", step=SCORE, attempts=attempts)]
    assert chunk_steps.backoff(waiting) == pause


def test_a_batch_of_one_chunk_still_gets_its_outcome_when_the_chunk_cannot_publish(monkeypatch):
    results, calls, _ = drive(monkeypatch, [task("a")], rules, FakeState(publish_fails=True))
    assert results[0]["status"] == "completed"
    assert calls["published by the chunk"] == 0  # drive stopped at the workflow's own publish_outcome


FOUR_STEPS = pipeline.parse("""
steps:
  - {name: validate, app_id: validator, method: validate, reads: [title, description], may_reject: true}
  - {name: enrich, app_id: enricher, method: enrich, reads: [title, description], adds: {tags: strings}}
  - {name: detect, app_id: language, method: detect, reads: [title, tags], adds: {language: string}}
  - {name: score, app_id: scorer, method: score, reads: [tags, language], adds: {score: integer}, spread: by-slots}
""")


def four_steps(step, item):
    if step == "detect":
        assert item == {"task_id": item["task_id"], "title": "Urgent: fix login API",
                        "tags": ["high-priority", "backend"]}
        return {"language": "en", "ignored": "not declared"}
    if step == SCORE:
        assert item["language"] == "en"  # a later step reads what an earlier one added
        return {"score": 85}
    return rules(step, item)


def test_a_declared_fourth_step_runs_in_order_and_what_it_adds_reaches_the_outcome(monkeypatch):
    results, calls, _ = drive(monkeypatch, [task("a"), task("b", title="Fix")], four_steps, declared=FOUR_STEPS)
    assert results[0] == {"task_id": "a", "status": "completed", "score": 85, "tags": ["high-priority", "backend"],
                          "issues": [], "error": None, "added": {"language": "en"}}
    assert results[1]["status"] == "rejected"
    assert calls[("detect", 1)] == calls[(SCORE, 1)] == 1


@pytest.mark.parametrize("answer, error", [
    ({}, "detect: language/detect answered no 'language'"),
    ({"language": 7}, "detect: language/detect answered a 'language' that is not a string"),
    ({"language": "x" * MAX_ADDED_BYTES},
     f"detect: language/detect added more than {MAX_ADDED_BYTES} bytes to the task"),
    ({"language": "\udcff"}, "detect: language/detect answered text that is not Unicode (a lone surrogate)"),
    ({"language": [[["en"]]]}, "detect: language/detect answered a 'language' that is not a string"),
    ({"language": "en"}, None),
])
def test_a_wrong_answer_of_a_step_fails_its_task_at_once_with_what_is_wrong(monkeypatch, answer, error):
    def wrong(step, item):
        return answer if step == "detect" else four_steps(step, item) if step != SCORE else {"score": 1}

    results, calls, _ = drive(monkeypatch, [task("a")], wrong, declared=FOUR_STEPS)
    if error is None:
        assert results[0]["status"] == "completed" and results[0]["added"] == answer
        return
    assert (results[0]["status"], results[0]["error"]) == ("failed", error)
    assert results[0]["tags"] == ["high-priority", "backend"]  # what the steps before it added
    assert calls[names.RUN_CHUNK] == 1 and calls[SCORE] == 0


def test_a_task_waiting_at_a_step_the_pipeline_no_longer_has_fails_instead_of_waiting_for_ever():
    waiting = [WaitingTask(task_id="a", step="detect", attempts=1, added={"tags": ["x"]}),
               WaitingTask(task_id="b", step=SCORE, added={"tags": ["x"]})]

    async def score(step, payload):
        return [StepAnswer(task_id=item["task_id"], score=3) for item in payload]

    run = asyncio.run(chunk_steps.run_chain(pipeline.load(), [task("a"), task("b")], waiting, score))
    assert [(r.task_id, r.status, r.error) for r in run.finished] == [
        ("a", "failed", "detect: the step is no longer in the pipeline"), ("b", "completed", None)]
    assert not run.waiting


def test_progress_saved_before_the_declared_pipeline_is_read_with_its_tags():
    old = WaitingTask.model_validate({"task_id": "a", "step": SCORE, "attempts": 1, "tags": ["x"]})
    assert old.added == {"tags": ["x"]}


def test_a_chunks_stages_are_in_the_state_store_while_it_runs_and_gone_with_its_outcome(monkeypatch):
    """Any workflow process answers the console from them (console_api.stages): written as the chunk's tasks
    enter a step (a step that takes longer than the write's delay shows), deleted with the batch's other keys
    once its outcome is out (drive checks that)."""
    monkeypatch.setattr(live, "STAGES_WRITE_DELAY_S", 0.01)
    state = FakeState()
    seen = {}

    def answer(step, item):
        if step == "score":
            seen.update(ChunkStages.decode(state.items[stages_key("b", 0)]))
            return {"score": 1}
        return {"issues": ["too short"]} if item["task_id"] == "bad" else {"tags": ["x"]}

    tasks = [Task(task_id=t, title="Urgent: fix it", description="The login API returns 500 errors")
             for t in ("good", "bad")]
    drive(monkeypatch, tasks, answer, state, step_s=0.05)
    # While "good" is scored: it is at the step; "bad" was still at validate when this run last wrote.
    assert seen == {"good": MovingTask(stage="score"), "bad": MovingTask(stage="validate")}


def stages_written(state):
    """The chunk's stages as each write to its key left them."""
    written = []
    put = state.put

    def counting_put(key, value, *args, **kwargs):
        if key == stages_key("b", 0):
            written.append({t: m.stage for t, m in ChunkStages.decode(
                value.encode() if isinstance(value, str) else value).items()})
        return put(key, value, *args, **kwargs)

    state.put = counting_put
    return written


def test_a_chunk_whose_steps_answer_fast_writes_its_stages_once_per_run(monkeypatch):
    """The writes as tasks enter a step wait ``live.STAGES_WRITE_DELAY_S``: a step that answers sooner is never
    written, the end of the run is (the console shows the chunk's results until the batch's outcome), once."""
    monkeypatch.setattr(live, "STAGES_WRITE_DELAY_S", 5.0)
    state = FakeState()
    written = stages_written(state)
    state.put(tasks_key("b", 0), json.dumps([task("a").model_dump(), task("b").model_dump()]))
    the_activities = BatchActivities(FakeSteps(rules, Counter()), LedgerStore(), WorkflowMetrics(), dapr=state,
                                     workflows=object())
    # One chunk of a batch of several: the workflow publishes the outcome once every chunk is done.
    asyncio.run(the_activities.run_chunk(None, ChunkRun(chunk=ChunkRef(batch_id="b", index=0))))
    assert written == [{"a": "done", "b": "done"}]


def test_a_batch_of_one_chunk_that_publishes_its_outcome_never_writes_its_stages(monkeypatch):
    """Its outcome is out as the run ends, and the stages are deleted with the batch's keys: a write then would be
    a sidecar call for nothing. If the chunk cannot publish, the workflow will: the stages are written meanwhile."""
    monkeypatch.setattr(live, "STAGES_WRITE_DELAY_S", 5.0)
    state = FakeState()
    written = stages_written(state)
    drive(monkeypatch, [task("a"), task("b")], rules, state)
    assert written == []
    failing = FakeState(publish_fails=True)
    written = stages_written(failing)
    drive(monkeypatch, [task("a"), task("b")], rules, failing)
    assert written == [{"a": "done", "b": "done"}]


def test_stages_writes_wait_for_a_write_in_flight_and_drop_one_not_started():
    """One write at a time and in order: the end of a run waits for a deferred write already writing (an older
    view must not land after the newer), and drops one still waiting."""
    saved, started = [], []

    async def scenario():
        release = asyncio.Event()

        async def save(encoded):
            started.append(encoded)
            if len(started) == 1:
                await release.wait()  # the deferred write is in flight
            saved.append(encoded)

        writes = live.StagesWrites(ChunkStages(), save, delay_s=0.0)
        await writes.entering("validate", ["a"])
        await asyncio.sleep(0.01)  # the deferred write starts and hangs
        ending = asyncio.create_task(writes.now())
        await asyncio.sleep(0.01)
        assert saved == [] and len(started) == 1  # the end waits for it
        release.set()
        await ending
        later = live.StagesWrites(ChunkStages(), save, delay_s=5.0)
        await later.entering("enrich", ["b"])
        await later.now()  # its deferred write had not started: dropped, one write

    asyncio.run(scenario())
    assert [json.loads(s) for s in saved] == [{"a": {"stage": "validate"}}, {"a": {"stage": "validate"}},
                                              {"b": {"stage": "enrich"}}]
