"""The workflow app as one, whichever of its processes the console's call reaches.

Each process knows only its own calls and runs: the tasks in each step it is calling for, the tasks it finished,
the scorer and step replicas its calls reached. So every process writes that report (``ProcessReport``) to one
key of the state store every ``REPORT_S`` (``Roster``: read with its ETag, its own entry replaced, entries not
rewritten for ``STALE_S`` dropped, written back first-write; a write that meets another's is made again next
round). A process answering the console reads the roster, puts its own fresh report in, and adds them up
(``merge``). A process that stops takes its entry out; one killed is dropped by the next writer once stale, and
the key's TTL removes a roster nobody writes any more.

Plain logic but for ``Reporter``, which does the reads and writes through the process's sidecar.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from dapr.clients import DaprClient
from dapr.clients.grpc._state import Concurrency, StateOptions
from pydantic import BaseModel, ValidationError

from services.workflow.live import FINAL_STAGES
from services.workflow.models import ProcessReport, ScorerReplica, StepReplica, StepReplicasNow, WorkflowProcess
from taskfan.contracts import STATESTORE, WORKFLOW_PROCESSES_KEY

log = logging.getLogger(__name__)

REPORT_S = 2.0
STALE_S = 30.0  # a process silent this long is gone (killed, or its sidecar away): its report no longer counts
ROSTER_TTL_S = 60  # the key outlives its last writer by this much
MAX_PROCESSES = 64  # reports kept at most (the newest): a roster stays far below the sidecar's message limit


class Roster(BaseModel):
    reports: list[ProcessReport] = []

    def with_report(self, mine: ProcessReport, now: float) -> Roster:
        """The roster with ``mine`` in place of this process's last, and without the stale ones."""
        return self._kept([r for r in self.reports if r.process != mine.process] + [mine], now)

    def without(self, process: str, now: float) -> Roster:
        return self._kept([r for r in self.reports if r.process != process], now)

    def live(self, now: float) -> list[ProcessReport]:
        return [r for r in self.reports if _fresh(r, now)]

    def _kept(self, reports: list[ProcessReport], now: float) -> Roster:
        fresh = sorted((r for r in reports if _fresh(r, now)), key=lambda r: r.at, reverse=True)
        return Roster(reports=sorted(fresh[:MAX_PROCESSES], key=lambda r: r.process))

    @staticmethod
    def decode(data: bytes | None) -> Roster:
        """The stored roster; an empty one for no value or one that is not a roster (an older version's)."""
        if not data:
            return Roster()
        try:
            return Roster.model_validate_json(data)
        except ValidationError:
            log.warning("the workflow processes' roster is unreadable; starting a new one")
            return Roster()


def _fresh(report: ProcessReport, now: float) -> bool:
    """Written within ``STALE_S`` of now, either way (clocks differ a little between hosts): a report dated far
    ahead, or not a number, would otherwise never go stale."""
    return abs(now - report.at) <= STALE_S


class Merged(BaseModel):
    """The reports of every process heard from lately, added up: what ``BatchesNow`` says for the whole app."""

    finished_tasks: int = 0
    stages: dict[str, int] = {}
    scorers: list[ScorerReplica] = []
    calls_in_flight: int = 0
    steps: list[StepReplicasNow] = []
    processes: list[WorkflowProcess] = []


def merge(reports: Iterable[ProcessReport], now: float) -> Merged:
    """Counts add up; a replica several processes heard from is one replica: its tasks added up, its slots and
    tasks in progress as it said last, its last answer the latest any process heard. Ages are counted from
    ``now`` (each report's were counted when it was written)."""
    reports = sorted(reports, key=lambda r: r.process)
    stages: dict[str, int] = {}
    scorers: dict[str, ScorerReplica] = {}
    steps: dict[str, StepReplicasNow] = {}
    replicas: dict[tuple[str, str], StepReplica] = {}
    for report in reports:
        age = max(0.0, now - report.at)
        for stage, count in report.stages.items():
            stages[stage] = stages.get(stage, 0) + count
        for scorer in report.scorers:
            seen = round(scorer.seen_s_ago + age, 1)
            known = scorers.get(scorer.replica)
            latest = scorer if known is None or seen <= known.seen_s_ago else known
            scorers[scorer.replica] = latest.model_copy(update={
                "seen_s_ago": min(seen, known.seen_s_ago) if known else seen,
                "scored": scorer.scored + (known.scored if known else 0)})
        for step in report.steps:
            steps.setdefault(step.step, StepReplicasNow(step=step.step, app_id=step.app_id))
            for replica in step.replicas:
                seen = round(replica.seen_s_ago + age, 1)
                known_replica = replicas.get((step.step, replica.replica))
                replicas[(step.step, replica.replica)] = StepReplica(
                    replica=replica.replica, seen_s_ago=min(seen, known_replica.seen_s_ago) if known_replica else seen,
                    answered=replica.answered + (known_replica.answered if known_replica else 0))
    for (step, _), replica in sorted(replicas.items()):
        steps[step].replicas.append(replica)
    return Merged(
        finished_tasks=sum(r.finished_tasks for r in reports), stages=stages,
        scorers=[scorers[name] for name in sorted(scorers)],
        calls_in_flight=sum(r.calls_in_flight for r in reports),
        steps=list(steps.values()),
        processes=[WorkflowProcess(process=r.process, seen_s_ago=round(max(0.0, now - r.at), 1),
                                   finished_tasks=r.finished_tasks, calls_in_flight=r.calls_in_flight,
                                   in_steps=sum(n for stage, n in r.stages.items() if stage not in FINAL_STAGES))
                   for r in reports])


_FIRST_WRITE = StateOptions(concurrency=Concurrency.first_write)


class Reporter:
    """Writes this process's report every ``REPORT_S`` (its own thread), reads every process's for the console."""

    def __init__(self, dapr: DaprClient, process: str, report: Callable[[float], ProcessReport],
                 clock: Callable[[], float] = time.time) -> None:
        self.dapr = dapr
        self.process = process
        self.report = report  # this process's report now (``now``: the wall clock)
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def everyone(self) -> Merged:
        """Every process heard from lately, this one as it is now."""
        now = self.clock()
        item = self.dapr.get_state(STATESTORE, WORKFLOW_PROCESSES_KEY)
        return merge(Roster.decode(item.data).with_report(self.report(now), now).live(now), now)

    def write(self, change: Callable[[Roster, float], Roster]) -> None:
        now = self.clock()
        item = self.dapr.get_state(STATESTORE, WORKFLOW_PROCESSES_KEY)
        roster = change(Roster.decode(item.data), now)
        self.dapr.save_state(STATESTORE, WORKFLOW_PROCESSES_KEY, roster.model_dump_json(), etag=item.etag or None,
                             options=_FIRST_WRITE, state_metadata={"ttlInSeconds": str(ROSTER_TTL_S)})

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.is_set():
                try:
                    self.write(lambda roster, now: roster.with_report(self.report(now), now))
                except Exception as exc:  # noqa: BLE001 - another process wrote in between, or the sidecar is away
                    log.debug("process report not written", extra={"error": str(exc)})
                self._stop.wait(REPORT_S)

        self._thread = threading.Thread(target=loop, name="process-report", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop reporting and take this process out of the roster (a few tries: others may be writing)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=REPORT_S + 5)
        for _ in range(3):
            try:
                self.write(lambda roster, now: roster.without(self.process, now))
                return
            except Exception as exc:  # noqa: BLE001
                log.debug("process report not removed", extra={"error": str(exc)})
