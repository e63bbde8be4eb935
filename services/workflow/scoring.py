"""How the workflow spreads scoring over scorer replicas it cannot address one by one.

Dapr picks a replica at random for every call. Over many calls that evens out; over a few slow tasks it
does not: 24 one-task calls over three one-slot replicas leave one replica with ~11 of them while
another idles, so three replicas finished such a batch well under 2x faster than one. Instead:

- every scorer answer says which replica gave it, its slots and the model's time per task; the workflow
  keeps that view (``ScorerView``, plain logic);
- a chunk that one replica scores quickly anyway goes in one call: a call costs more than a fast task;
- a slow one gets one task per call, with no more calls in flight than twice the slots seen (each replica
  keeps its next tasks at hand: a freed slot starts one at once), plus a few (``PROBES``, at least one
  per replica) that find replicas no answer has named yet. Each call may be refused: a replica whose
  slots are busy and as many tasks waiting answers ``busy`` at once, and the call is made again (a new
  random pick) after a short, growing pause, until a replica with room takes it. After
  ``INSIST_AFTER_S`` of refusals a call queues wherever it lands. (The waiting room costs at most one
  task's time at the end of a batch, when one replica still has a task waiting while another is done.)
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from services.workflow import step_client
from services.workflow.models import ScorerReplica
from services.workflow.replicas import FORGET_S, SEEN_S
from taskfan.contracts import SlotsReport, StepAnswer
from taskfan.pipeline import Step

FAST_CALL_S = 0.1  # a call whose tasks one replica scores in less than this goes whole, no dispatch
# The pause after a refusal: first, at most (it grows by half each time, to half a task's time: a replica
# has its next task at hand, so a refused call need not hurry; it keeps the refusals few).
REFUSED_PAUSE_S = (0.002, 1.0)
INSIST_AFTER_S = 10.0
# Calls in flight beyond the room seen: they find replicas no answer has named yet (an accepted call
# answers only when its task is done), and fill the room that frees up.
PROBES = 4
TASK_TIME_WEIGHT = 0.2  # of a new answer in the running mean of the model's time per task


@dataclass
class ScorerView:
    """What the scorers' answers tell: each replica's slots (and when it last answered), the model's time
    per task, and how many one-task calls are in flight; for the console, each replica's tasks scored
    (through this process) and in progress (as it last said)."""

    replicas: dict[str, tuple[int, float]] = field(default_factory=dict)
    task_s: float | None = None
    in_flight: int = 0
    scored: dict[str, int] = field(default_factory=dict)
    in_progress: dict[str, int] = field(default_factory=dict)

    def learn(self, said: SlotsReport, now: float, scored: int = 0) -> None:
        if said.replica is not None and said.slots is not None:
            if said.replica not in self.replicas:
                self._forget_gone(now)
            self.replicas[said.replica] = (said.slots, now)
            self.scored[said.replica] = self.scored.get(said.replica, 0) + scored
            if said.in_progress is not None:
                self.in_progress[said.replica] = said.in_progress
        if said.task_ms is not None:
            seconds = said.task_ms / 1000
            self.task_s = seconds if self.task_s is None else (
                (1 - TASK_TIME_WEIGHT) * self.task_s + TASK_TIME_WEIGHT * seconds)

    def _forget_gone(self, now: float) -> None:
        for replica in [r for r, (_, seen) in self.replicas.items() if now - seen > FORGET_S]:
            del self.replicas[replica]
            self.scored.pop(replica, None)
            self.in_progress.pop(replica, None)

    def live(self, now: float) -> list[int]:
        return [slots for slots, seen in self.replicas.values() if now - seen <= SEEN_S]

    def fast(self, tasks: int, now: float) -> bool:
        """Whether ``tasks`` tasks go in one call: one replica, its slots all busy with them, is known to
        score them all within ``FAST_CALL_S`` (splitting them over replicas could not gain more)."""
        live = self.live(now)
        return self.task_s is not None and bool(live) and tasks * self.task_s / min(live) <= FAST_CALL_S

    def report(self, now: float) -> list[ScorerReplica]:
        """Each replica heard from lately: the console's scorers page."""
        return [ScorerReplica(replica=replica, slots=slots, seen_s_ago=round(now - seen, 1),
                              scored=self.scored.get(replica, 0), in_progress=self.in_progress.get(replica, 0))
                for replica, (slots, seen) in sorted(self.replicas.items()) if now - seen <= SEEN_S]

    def may_send(self, now: float) -> bool:
        live = self.live(now)
        return self.in_flight < 2 * sum(live) + max(PROBES, len(live))


class Dispatcher:
    """Calls a ``by-slots`` step (pipeline.yaml: the scorer) through its replicas; one per step and workflow
    process, the activities share it."""

    def __init__(self, step: Step, client: step_client.StepClient) -> None:
        self.step, self.client = step, client
        self.view = ScorerView()
        self._changed: asyncio.Condition | None = None

    async def call(self, payload: list[dict[str, Any]], traceparent: str | None = None) -> list[StepAnswer]:
        if self.view.fast(len(payload), time.monotonic()):
            answers, said = await self.client.request(self.step, payload, traceparent=traceparent)
            assert answers is not None
            self.view.learn(said, time.monotonic(), scored=len(answers))
            return answers
        calls = await asyncio.gather(*(self._one(task, traceparent) for task in payload))
        return [answer for answers in calls for answer in answers]

    async def _one(self, task: dict[str, Any], traceparent: str | None) -> list[StepAnswer]:
        async with self._slot():
            refused_since: float | None = None
            pause = REFUSED_PAUSE_S[0]
            while True:
                insist = refused_since is not None and time.monotonic() - refused_since > INSIST_AFTER_S
                answers, said = await self.client.request(self.step, [task], may_refuse=not insist,
                                                          traceparent=traceparent)
                await self._learn(said, scored=len(answers or ()))
                if answers is not None:
                    return answers
                refused_since = refused_since or time.monotonic()
                await asyncio.sleep(random.uniform(pause / 2, pause))
                pause = min(pause * 1.5, REFUSED_PAUSE_S[1], max(REFUSED_PAUSE_S[0], (self.view.task_s or 0) / 2))

    async def _learn(self, said: SlotsReport, scored: int) -> None:
        known = len(self.view.replicas)
        self.view.learn(said, time.monotonic(), scored)
        if len(self.view.replicas) > known:  # a newly found replica makes room
            changed = self._condition()
            async with changed:
                changed.notify_all()

    def _condition(self) -> asyncio.Condition:
        # Created on first use, inside the event loop that runs the activities.
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        changed = self._condition()
        async with changed:
            await changed.wait_for(lambda: self.view.may_send(time.monotonic()))
            self.view.in_flight += 1
        try:
            yield
        finally:
            async with changed:
                self.view.in_flight -= 1
                changed.notify_all()

