"""Step calls: an unreachable app is asked again, other failures are not."""

import asyncio

from services.workflow import step_client
from taskfan.contracts import ScoreRequest, StepAnswer


def run_invoke(monkeypatch, answers):
    """``invoke`` against a scripted ``call``; returns its result and how many calls it made."""
    calls = []

    async def fake_call(app_id, method, tasks):
        calls.append(method)
        return answers[min(len(calls), len(answers)) - 1]

    monkeypatch.setattr(step_client, "call", fake_call)
    monkeypatch.setattr(step_client, "UNREACHABLE_RETRY_DELAYS_S", (0, 0, 0))
    result = asyncio.run(step_client.invoke("scorer", "score", [ScoreRequest(task_id="t1", tags=[])]))
    return result, len(calls)


def test_an_unreachable_step_app_is_asked_again_until_it_answers(monkeypatch):
    down = (None, "scorer/score answered 503: connection refused", True)
    answered = [StepAnswer(task_id="t1", score=85)]
    result, calls = run_invoke(monkeypatch, [down, down, (answered, "", False)])
    assert (result, calls) == (answered, 3)


def test_an_app_unreachable_for_too_long_fails_the_attempt(monkeypatch):
    result, calls = run_invoke(monkeypatch, [(None, "scorer/score answered 503: refused", True)])
    assert (result, calls) == ([StepAnswer(task_id="t1", error="scorer/score answered 503: refused")], 4)


def test_other_step_failures_are_not_repeated_by_the_call(monkeypatch):
    result, calls = run_invoke(monkeypatch, [(None, "scorer/score answered 500: boom", False)])
    assert (result, calls) == ([StepAnswer(task_id="t1", error="scorer/score answered 500: boom")], 1)
