"""The chunk workflow's logic, driven step by step with fake activities: no sidecar, no runtime.

The generator yields what it schedules; the driver answers each activity from a fake and sends the
answer back, as the workflow engine would on replay.
"""

from collections import Counter

from taskfan.workflow import orchestration as o


class Scheduled:
    def __init__(self, name, inp):
        self.name, self.input = name, inp


class FakeContext:
    def call_activity(self, name, *, input=None, retry_policy=None):  # noqa: A002 - the SDK's name
        return Scheduled(name, input)

    def create_timer(self, fire_at):
        return Scheduled("timer", fire_at)


def drive(tasks, answer):
    """Run process_chunk to completion; ``answer(step, task)`` gives one task's step output."""
    calls = Counter()
    saved = {}
    gen = o.process_chunk(FakeContext(), {"batch_id": "b", "index": 0})
    scheduled = next(gen)
    while True:
        calls[scheduled.name] += 1
        if scheduled.name == o.VALIDATE_CHUNK:
            reply = {"tasks": tasks, "validation": [{"task_id": t["task_id"], **answer(o.VALIDATE, t)} for t in tasks]}
        elif scheduled.name == "timer":
            reply = None
        elif scheduled.name == o.SAVE_RESULTS:
            saved = scheduled.input
            reply = {"done": len(saved["results"])}
        else:
            reply = [{"task_id": t["task_id"], **answer(scheduled.name, t)} for t in scheduled.input["tasks"]]
        try:
            scheduled = gen.send(reply)
        except StopIteration:
            return saved["results"], calls


def task(task_id, title="Urgent: fix login API", description="The login api returns 500 errors"):
    return {"task_id": task_id, "title": title, "description": description}


def rules(step, t):
    if step == o.VALIDATE:
        return {"issues": [] if len(t["title"]) >= 5 else ["Title too short (min 5 characters)"]}
    if step == o.ENRICH:
        return {"tags": ["high-priority", "backend"]}
    return {"score": 85}


def test_chain_rejects_early_and_keeps_input_order():
    results, calls = drive([task("a"), task("b", title="Fix"), task("c")], rules)
    assert [r["task_id"] for r in results] == ["a", "b", "c"]
    assert [r["status"] for r in results] == ["completed", "rejected", "completed"]
    assert results[1]["issues"] == ["Title too short (min 5 characters)"]
    assert calls[o.VALIDATE_CHUNK] == calls[o.ENRICH] == calls[o.SCORE] == 1
    assert calls[o.VALIDATE] == 0


def test_a_failing_task_is_retried_alone_then_succeeds():
    attempts = Counter()

    def flaky(step, t):
        if step == o.SCORE and t["task_id"] == "b":
            attempts["b"] += 1
            if attempts["b"] < o.STEP_ATTEMPTS:
                return {"error": "scorer unavailable"}
        return rules(step, t)

    results, calls = drive([task("a"), task("b")], flaky)
    assert [r["status"] for r in results] == ["completed", "completed"]
    assert calls[o.SCORE] == o.STEP_ATTEMPTS
    assert calls["timer"] == o.STEP_ATTEMPTS - 1


def test_a_task_failing_every_attempt_is_failed_with_its_error_and_tags():
    def broken(step, t):
        if step == o.SCORE and t["task_id"] == "b":
            return {"error": "model crashed"}
        return rules(step, t)

    results, _ = drive([task("a"), task("b")], broken)
    assert results[0]["status"] == "completed"
    assert results[1] == {"task_id": "b", "status": "failed", "score": None, "tags": ["high-priority", "backend"],
                          "issues": [], "error": "score_tasks: model crashed"}


def test_a_task_whose_first_validation_failed_is_validated_again():
    attempts = Counter()

    def flaky_validation(step, t):
        if step == o.VALIDATE and t["task_id"] == "b":
            attempts["b"] += 1
            if attempts["b"] == 1:
                return {"error": "validator unavailable"}
        return rules(step, t)

    results, calls = drive([task("a"), task("b")], flaky_validation)
    assert [r["status"] for r in results] == ["completed", "completed"]
    assert calls[o.VALIDATE_CHUNK] == 1 and calls[o.VALIDATE] == 1


# --- step calls: an unreachable app is asked again, other failures are not -------------------------


def run_invoke(monkeypatch, answers):
    """``_invoke`` against a scripted ``_call``; returns its result and how many calls it made."""
    import asyncio

    calls = []

    async def fake_call(app_id, method, tasks):
        calls.append(method)
        return answers[min(len(calls), len(answers)) - 1]

    monkeypatch.setattr(o, "_call", fake_call)
    monkeypatch.setattr(o, "UNREACHABLE_RETRY_DELAYS_S", (0, 0, 0))
    result = asyncio.run(o._invoke("scorer", "score", [{"task_id": "t1"}]))
    return result, len(calls)


def test_an_unreachable_step_app_is_asked_again_until_it_answers(monkeypatch):
    down = (None, "scorer/score answered 503: connection refused", True)
    result, calls = run_invoke(monkeypatch, [down, down, ([{"task_id": "t1", "score": 85}], "", False)])
    assert (result, calls) == ([{"task_id": "t1", "score": 85}], 3)


def test_an_app_unreachable_for_too_long_fails_the_attempt(monkeypatch):
    result, calls = run_invoke(monkeypatch, [(None, "scorer/score answered 503: refused", True)])
    assert (result, calls) == ([{"task_id": "t1", "error": "scorer/score answered 503: refused"}], 4)


def test_other_step_failures_are_not_repeated_by_the_call(monkeypatch):
    result, calls = run_invoke(monkeypatch, [(None, "scorer/score answered 500: boom", False)])
    assert (result, calls) == ([{"task_id": "t1", "error": "scorer/score answered 500: boom"}], 1)
