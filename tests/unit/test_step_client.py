"""Step calls: an unreachable app is asked again, a timed-out call once more, other failures are not."""

import asyncio
import json

import pytest

from services.workflow import step_client
from services.workflow.step_client import Failure, StepClient
from taskfan import pipeline
from taskfan.contracts import StepAnswer

SCORE = pipeline.Step(name="score", app_id="scorer", method="score", reads=(), adds={"score": "integer"})


def run_invoke(monkeypatch, answers):
    """``request`` against a scripted ``call``; returns its answers and how many calls it made."""
    calls = []

    class Scripted(StepClient):
        async def call(self, app_id, method, tasks, extra=None, traceparent=None):
            calls.append(method)
            answer, error, failure = answers[min(len(calls), len(answers)) - 1]
            return step_client.Called(answers=answer, error=error, failure=failure)

    monkeypatch.setattr(step_client, "UNREACHABLE_RETRY_DELAYS_S", (0, 0, 0))
    result, _ = asyncio.run(Scripted(timeout_s=30.0).request(SCORE, [{"task_id": "t1", "tags": []}]))
    return result, len(calls)


def test_an_unreachable_step_app_is_asked_again_until_it_answers(monkeypatch):
    down = (None, "scorer/score answered 503: connection refused", Failure.UNREACHABLE)
    answered = [StepAnswer(task_id="t1", score=85)]
    result, calls = run_invoke(monkeypatch, [down, down, (answered, "", None)])
    assert (result, calls) == (answered, 3)


def test_an_app_unreachable_for_too_long_fails_the_attempt(monkeypatch):
    result, calls = run_invoke(monkeypatch, [(None, "scorer/score answered 503: refused", Failure.UNREACHABLE)])
    assert (result, calls) == ([StepAnswer(task_id="t1", error="scorer/score answered 503: refused")], 4)


def test_other_step_failures_are_not_repeated_by_the_call(monkeypatch):
    result, calls = run_invoke(monkeypatch, [(None, "scorer/score answered 500: boom", Failure.FAILED)])
    assert (result, calls) == ([StepAnswer(task_id="t1", error="scorer/score answered 500: boom")], 1)


def test_a_timed_out_call_is_made_once_more_then_fails_saying_so(monkeypatch):
    hung = (None, "scorer/score timed out after 30s", Failure.TIMED_OUT)
    result, calls = run_invoke(monkeypatch, [hung])
    assert (result, calls) == ([StepAnswer(task_id="t1", error="scorer/score timed out after 30s (2 tries)")], 2)
    answered = [StepAnswer(task_id="t1", score=85)]
    assert run_invoke(monkeypatch, [hung, (answered, "", None)]) == (answered, 2)


DAPR_SAID = {
    Failure.TIMED_OUT: ["failed to invoke, id: validator, err: context deadline exceeded",
                        "failed to invoke, id: validator, err: rpc error: code = DeadlineExceeded desc = stream "
                        "terminated by RST_STREAM with error code: CANCEL"],
    Failure.UNREACHABLE: ["failed to invoke, id: validator, err: no host found with the given ID",
                          # on Kubernetes, the app's only pod evicted by a drain (seen from 1.18.1)
                          "failed to invoke, id: enricher, err: failed to resolve address for "
                          "'enricher-dapr.taskfan.svc.cluster.local': lookup enricher-dapr.taskfan.svc.cluster.local "
                          "on 10.96.0.10:53: no such host",
                          # a replica's sidecar that `stack scale` is removing (seen from 1.18.1)
                          "failed to invoke, id: scorer, err: rpc error: code = Unavailable desc = connection error: "
                          'desc = "transport: Error while dialing: dial tcp 127.0.0.1:5511: connect: connection '
                          'refused"',
                          # the same, its connection closed by our sidecar while a call was on it
                          "failed to invoke, id: scorer, err: rpc error: code = Canceled desc = grpc: the client "
                          "connection is closing"],
}


@pytest.mark.parametrize(("failure", "message"), [(f, m) for f, ms in DAPR_SAID.items() for m in ms])
def test_daprs_answers_are_read_as_timeouts_or_unreachable(monkeypatch, failure, message):
    class Response:
        status = 500

        async def read(self):
            return json.dumps({"errorCode": "ERR_DIRECT_INVOKE", "message": message}).encode()

        async def __aenter__(self):
            return self

        async def __aexit__(self, *exc):
            return False

    class Session:
        def post(self, *args, **kwargs):
            return Response()

    called = asyncio.run(StepClient(timeout_s=12.0, session=Session()).call("validator", "validate",
                                                                           [{"task_id": "t1"}]))
    assert (called.answers, called.failure) == (None, failure)
    if failure is Failure.TIMED_OUT:
        assert called.error == "validator/validate timed out after 12s"


def answering(monkeypatch, status, body):
    return answering_raw(status, json.dumps(body).encode())


def answering_raw(status: int, raw: bytes):
    """One call of the step client to a sidecar that answers ``raw`` with ``status``."""
    class Response:
        async def read(self):
            return raw

        async def __aenter__(self):
            return self

        async def __aexit__(self, *exc):
            return False

    Response.status = status

    class Session:
        def post(self, *args, **kwargs):
            return Response()

    return asyncio.run(StepClient(timeout_s=30.0, session=Session()).call("scorer", "score", [{"task_id": "t1"}]))


def test_a_replicas_report_of_its_slots_is_typed_and_a_refusal_has_no_answers(monkeypatch):
    called = answering(monkeypatch, 200, {"results": [{"task_id": "t1", "score": 5}], "replica": "r1", "slots": 2,
                                          "task_ms": 1.5, "in_progress": 0, "unknown": [1]})
    assert called.answers == [StepAnswer(task_id="t1", score=5)] and called.failure is None
    assert (called.report.replica, called.report.slots, called.report.task_ms) == ("r1", 2, 1.5)
    refused = answering(monkeypatch, 200, {"busy": True, "replica": "r1", "slots": 2, "in_progress": 4})
    assert (refused.answers, refused.error, refused.report.busy) == (None, "", True)


@pytest.mark.parametrize("report", [{"slots": "many"}, {"slots": 0}, {"task_ms": -1}, {"slots": 10**30},
                                    {"replica": ["r"]}, {"busy": "yes"}, {"slots": "3"}])
def test_a_report_of_the_wrong_shape_makes_the_answer_malformed(monkeypatch, report):
    called = answering(monkeypatch, 200, {"results": [{"task_id": "t1", "score": 5}], **report})
    assert called.answers is None and called.failure is Failure.FAILED
    assert called.error.startswith("scorer/score: malformed answer: ValidationError")


@pytest.mark.parametrize("raw", [b'{"results": [{"task_id": "t1", "error": "bad \\udcff"}]}',
                                 b'{"results": [{"task_id": "t1", "issues": ["\\ud800"]}]}',
                                 b'{"results": [{"task_id": "t1", "note": {"x": "\\udfff"}}]}'])
def test_an_answer_with_a_lone_surrogate_is_malformed_so_the_outcome_stays_encodable(raw):
    called = answering_raw(200, raw)
    assert called.answers is None and called.failure is Failure.FAILED
    assert called.error.startswith("scorer/score: malformed answer: ValueError:"), called.error
    called.error.encode()  # the reason itself is valid text


def test_a_surrogate_pair_in_an_answer_is_text():
    called = answering_raw(200, b'{"results": [{"task_id": "t1", "error": "\\ud83d\\ude00"}]}')
    assert called.answers == [StepAnswer(task_id="t1", error="\U0001f600")]
