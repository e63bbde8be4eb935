"""How the workflow spreads scoring over replicas it cannot address (services/workflow/scoring.py),
against scripted replicas that behave as the scorer app does (refuse when full, if allowed)."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from services.workflow import scoring
from services.workflow.scoring import Dispatcher, ScorerView
from taskfan import pipeline
from taskfan.contracts import SlotsReport, StepAnswer

SCORE = pipeline.load().step("score")


def test_the_view_learns_slots_and_task_time_from_answers() -> None:
    view = ScorerView()
    assert not view.fast(1, 0.0)  # nothing known yet: one task per call
    view.in_flight = scoring.PROBES - 1
    assert view.may_send(0.0)
    view.in_flight = scoring.PROBES
    assert not view.may_send(0.0)  # a few calls at a time until replicas have answered
    view.learn(SlotsReport(replica="a", slots=4, task_ms=0.1), now=0.0)
    view.learn(SlotsReport(replica="b", slots=4, busy=True), now=1.0)
    assert view.live(2.0) == [4, 4]
    assert view.fast(100, 2.0)  # 100 x 0.1 ms over 4 slots: one call
    view.in_flight = 16 + scoring.PROBES - 1  # 8 slots, as many waiting, and a few to find more
    assert view.may_send(2.0) is True
    view.in_flight = 16 + scoring.PROBES
    assert view.may_send(2.0) is False
    assert view.live(scoring.SEEN_S + 0.5) == [4]  # "a" was not heard from: scaled away


def test_a_slow_model_gets_one_task_per_call() -> None:
    view = ScorerView()
    view.learn(SlotsReport(replica="a", slots=1, task_ms=250), now=0.0)
    assert not view.fast(1, 0.0)
    busy = ScorerView()
    busy.learn(SlotsReport(replica="a", slots=8, task_ms=2), now=0.0)  # GIL-bound threads: 2 ms a task
    assert not busy.fast(1000, 0.0) and busy.fast(100, 0.0)  # 100 x 2 ms / 8 slots = 25 ms


class Client:
    """A step client whose calls ``request`` answers."""

    def __init__(self, request):
        self.request = request


class Replicas:
    """N scripted scorer replicas with one slot each (and room for one task waiting, as the scorer app
    has); Dapr's random pick per call."""

    def __init__(self, count: int, task_s: float) -> None:
        self.accepted = {f"r{i}": 0 for i in range(count)}
        self.slot: dict[str, asyncio.Lock] = {}
        self.done = {name: 0 for name in self.accepted}
        self.overfull = 0  # calls accepted beyond the room offered (only an insisting call may)
        self.task_s = task_s

    async def request(self, step, payload, may_refuse=False, traceparent=None):
        name = random.choice(list(self.accepted))
        said = {"replica": name, "slots": 1}
        if self.accepted[name] and self.accepted[name] + len(payload) > 2:
            if may_refuse:
                return None, SlotsReport(**said, busy=True)
            self.overfull += 1
        self.accepted[name] += len(payload)
        async with self.slot.setdefault(name, asyncio.Lock()):
            await asyncio.sleep(self.task_s * len(payload))
        self.accepted[name] -= len(payload)
        self.done[name] += len(payload)
        return ([StepAnswer(task_id=t["task_id"], score=50) for t in payload],
                SlotsReport(**said, task_ms=1000 * self.task_s))


@pytest.mark.parametrize("replicas", [1, 3, 4])
def test_slow_tasks_are_taken_by_free_replicas_only(monkeypatch, replicas: int) -> None:
    fake = Replicas(replicas, task_s=0.02)
    tasks = [{"task_id": f"t{i}", "tags": []} for i in range(8 * replicas)]
    answers = asyncio.run(Dispatcher(SCORE, fake).call(tasks))
    assert [a.task_id for a in answers] == [t["task_id"] for t in tasks]
    assert fake.overfull == 0  # every call went to a replica with room for it
    # Shares differ by a few tasks at most (one waiting at the end, chance at the start); random picks
    # without refusals give some replica twice the share of another
    assert max(fake.done.values()) - min(fake.done.values()) <= 3, fake.done
    assert sum(fake.done.values()) == len(tasks) and all(fake.done.values()), fake.done


def test_a_fast_model_gets_the_chunk_in_one_call(monkeypatch) -> None:
    fake = Replicas(3, task_s=0.0)
    calls = []

    async def counting(step, payload, may_refuse=False, traceparent=None):
        calls.append((len(payload), may_refuse))
        return await fake.request(step, payload, may_refuse)

    dispatcher = Dispatcher(SCORE, Client(counting))
    dispatcher.view.learn(SlotsReport(replica="r0", slots=8, task_ms=0.05), now=time.monotonic())
    asyncio.run(dispatcher.call([{"task_id": f"t{i}", "tags": []} for i in range(100)]))
    assert calls == [(100, False)]


def test_a_call_refused_for_too_long_queues_where_it_lands(monkeypatch) -> None:
    monkeypatch.setattr(scoring, "INSIST_AFTER_S", 0.05)
    seen = []

    async def always_busy(step, payload, may_refuse=False, traceparent=None):
        seen.append(may_refuse)
        if may_refuse:
            return None, SlotsReport(replica="r0", slots=1, busy=True)
        return [StepAnswer(task_id=payload[0]["task_id"], score=50)], SlotsReport(replica="r0", slots=1)

    answers = asyncio.run(Dispatcher(SCORE, Client(always_busy)).call([{"task_id": "t1", "tags": []}]))
    assert answers[0].score == 50
    assert seen[0] is True and seen[-1] is False and len(seen) > 2
