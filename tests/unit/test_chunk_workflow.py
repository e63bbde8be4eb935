"""The chunk workflow's logic, driven step by step with fake activities: no sidecar, no runtime.

The generator yields what it schedules; the driver answers each activity with plain JSON, as the
workflow engine hands results back on replay.
"""

from collections import Counter

from services.workflow import names
from services.workflow.chunk_workflow import STEP_ATTEMPTS, process_chunk
from services.workflow.models import ChunkRef, SaveResultsInput, ScoreInput, StepInput


class Scheduled:
    def __init__(self, name, inp):
        self.name, self.input = name, inp


class FakeContext:
    def call_activity(self, name, *, input=None, retry_policy=None):  # noqa: A002 - the SDK's name
        return Scheduled(name, input)

    def create_timer(self, fire_at):
        return Scheduled("timer", fire_at)


def drive(tasks, answer):
    """Run process_chunk to completion; ``answer(step, task)`` gives one task's step answer (a dict)."""
    calls = Counter()
    saved = None
    by_id = {t["task_id"]: t for t in tasks}
    gen = process_chunk(FakeContext(), ChunkRef(batch_id="b", index=0))
    scheduled = next(gen)
    while True:
        calls[scheduled.name] += 1
        if scheduled.name == names.VALIDATE_CHUNK:
            assert scheduled.input == ChunkRef(batch_id="b", index=0)
            reply = {"task_ids": list(by_id),
                     "validation": [{"task_id": t["task_id"], **answer(names.VALIDATE, t)} for t in tasks]}
        elif scheduled.name == "timer":
            reply = None
        elif scheduled.name == names.SAVE_RESULTS:
            assert isinstance(scheduled.input, SaveResultsInput)
            saved = scheduled.input
            reply = {"done": len(saved.results)}
        else:
            if scheduled.name == names.SCORE:
                assert isinstance(scheduled.input, ScoreInput)
                items = scheduled.input.model_dump(mode="json")["tasks"]
            else:  # validate and enrich get ids only: the activity reads the text from the state store
                assert isinstance(scheduled.input, StepInput) and scheduled.input.chunk.batch_id == "b"
                items = [by_id[task_id] for task_id in scheduled.input.task_ids]
            reply = {"answers": [{"task_id": t["task_id"], **answer(scheduled.name, t)} for t in items]}
        try:
            scheduled = gen.send(reply)
        except StopIteration as stop:
            assert stop.value.done == len(saved.results)
            return [r.model_dump() for r in saved.results], calls


def task(task_id, title="Urgent: fix login API", description="The login api returns 500 errors"):
    return {"task_id": task_id, "title": title, "description": description}


def rules(step, t):
    if step == names.VALIDATE:
        return {"issues": [] if len(t["title"]) >= 5 else ["Title too short (min 5 characters)"]}
    if step == names.ENRICH:
        return {"tags": ["high-priority", "backend"]}
    assert t["tags"] == ["high-priority", "backend"]  # the scorer gets what enrichment gave
    return {"score": 85}


def test_chain_rejects_early_and_keeps_input_order():
    results, calls = drive([task("a"), task("b", title="Fix"), task("c")], rules)
    assert [r["task_id"] for r in results] == ["a", "b", "c"]
    assert [r["status"] for r in results] == ["completed", "rejected", "completed"]
    assert results[1]["issues"] == ["Title too short (min 5 characters)"]
    assert results[0] == {"task_id": "a", "status": "completed", "score": 85, "tags": ["high-priority", "backend"],
                          "issues": [], "error": None}
    assert calls[names.VALIDATE_CHUNK] == calls[names.ENRICH] == calls[names.SCORE] == 1
    assert calls[names.VALIDATE] == 0


def test_a_failing_task_is_retried_alone_then_succeeds():
    attempts = Counter()

    def flaky(step, t):
        if step == names.SCORE and t["task_id"] == "b":
            attempts["b"] += 1
            if attempts["b"] < STEP_ATTEMPTS:
                return {"error": "scorer unavailable"}
        return rules(step, t)

    results, calls = drive([task("a"), task("b")], flaky)
    assert [r["status"] for r in results] == ["completed", "completed"]
    assert calls[names.SCORE] == STEP_ATTEMPTS
    assert calls["timer"] == STEP_ATTEMPTS - 1


def test_a_task_failing_every_attempt_is_failed_with_its_error_and_tags():
    def broken(step, t):
        if step == names.SCORE and t["task_id"] == "b":
            return {"error": "model crashed"}
        return rules(step, t)

    results, _ = drive([task("a"), task("b")], broken)
    assert results[0]["status"] == "completed"
    assert results[1] == {"task_id": "b", "status": "failed", "score": None, "tags": ["high-priority", "backend"],
                          "issues": [], "error": "score_tasks: model crashed"}


def test_a_task_whose_first_validation_failed_is_validated_again():
    attempts = Counter()

    def flaky_validation(step, t):
        if step == names.VALIDATE and t["task_id"] == "b":
            attempts["b"] += 1
            if attempts["b"] == 1:
                return {"error": "validator unavailable"}
        return rules(step, t)

    results, calls = drive([task("a"), task("b")], flaky_validation)
    assert [r["status"] for r in results] == ["completed", "completed"]
    assert calls[names.VALIDATE_CHUNK] == 1 and calls[names.VALIDATE] == 1
