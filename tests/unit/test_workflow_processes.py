"""The workflow app answers the console as one, whichever process is asked (services/workflow/processes.py)."""

from __future__ import annotations

from typing import Any

import pytest

from services.console.records import Throughput
from services.workflow.models import ProcessReport, ScorerReplica, StepReplica, StepReplicasNow
from services.workflow.processes import MAX_PROCESSES, STALE_S, Reporter, Roster, merge
from taskfan.contracts import WORKFLOW_PROCESSES_KEY

from .fake_state import FakeDaprState


def scorer(name: str, scored: int, seen: float = 0.0, slots: int = 2, in_progress: int = 0) -> ScorerReplica:
    return ScorerReplica(replica=name, slots=slots, seen_s_ago=seen, scored=scored, in_progress=in_progress)


def step(name: str, *replicas: tuple[str, int, float]) -> StepReplicasNow:
    return StepReplicasNow(step=name, app_id=f"{name}-app", replicas=[
        StepReplica(replica=r, answered=n, seen_s_ago=seen) for r, n, seen in replicas])


def report(process: str, at: float, **fields: Any) -> ProcessReport:
    return ProcessReport(process=process, at=at, **fields)


def test_every_processs_figures_add_up_and_a_replica_two_processes_heard_is_one() -> None:
    now = 1000.0
    first = report("0", at=now - 1, finished_tasks=300, stages={"score": 40, "done": 60}, calls_in_flight=3,
                   scorers=[scorer("s-a", 100, seen=0.5, slots=2, in_progress=1), scorer("s-b", 50, seen=4)],
                   steps=[step("validate", ("v-0", 200, 1.0)), step("score")])
    second = report("1", at=now - 2, finished_tasks=200, stages={"score": 10, "validate": 5}, calls_in_flight=1,
                    scorers=[scorer("s-a", 70, seen=0.0, slots=3, in_progress=2)],
                    steps=[step("validate", ("v-0", 100, 0.0), ("v-1", 30, 9.0)), step("score")])
    merged = merge([second, first], now)
    assert merged.finished_tasks == 500
    assert merged.stages == {"score": 50, "done": 60, "validate": 5}
    assert merged.calls_in_flight == 4
    # s-a: tasks added up; it answered last 1.5 s ago through "0" (2 s ago through "1"): its slots as it said then.
    assert merged.scorers == [scorer("s-a", 170, seen=1.5, slots=2, in_progress=1), scorer("s-b", 50, seen=5.0)]
    assert [s.step for s in merged.steps] == ["validate", "score"]  # the declared order
    assert merged.steps[0].replicas == [StepReplica(replica="v-0", answered=300, seen_s_ago=2.0),
                                        StepReplica(replica="v-1", answered=30, seen_s_ago=11.0)]
    assert [(p.process, p.finished_tasks, p.in_steps, p.seen_s_ago) for p in merged.processes] == [
        ("0", 300, 40, 1.0), ("1", 200, 15, 2.0)]


def test_the_roster_keeps_one_report_per_process_and_drops_the_silent_ones() -> None:
    now = 5000.0
    roster = Roster(reports=[report("0", at=now - 1, finished_tasks=1), report("gone", at=now - STALE_S - 1)])
    roster = roster.with_report(report("0", at=now, finished_tasks=2), now).with_report(report("1", at=now), now)
    assert [(r.process, r.finished_tasks) for r in roster.reports] == [("0", 2), ("1", 0)]
    assert [r.process for r in roster.without("0", now).reports] == ["1"]
    # A flood of names (a pod per restart) keeps the newest MAX_PROCESSES.
    for i in range(MAX_PROCESSES + 10):
        roster = roster.with_report(report(f"pod-{i}", at=now + i / 1000), now)
    assert len(roster.reports) == MAX_PROCESSES
    assert "pod-0" not in {r.process for r in roster.reports}


@pytest.mark.parametrize("stored", [b"", b"not json", b'{"reports": 7}', b'{"reports": [{"process": 1}]}',
                                    b"[" * 10_000])
def test_an_unreadable_roster_is_started_again(stored: bytes) -> None:
    assert Roster.decode(stored) == Roster()


@pytest.mark.parametrize("name", ["a::b", "a||b", "taskfan-workflow-7d9f-x2", "x" * 253, "名前"])
def test_process_and_replica_names_with_every_layers_separators_are_kept_as_text(name: str) -> None:
    roster = Roster(reports=[report(name, at=1.0, scorers=[scorer(name, 1)])])
    assert Roster.decode(roster.model_dump_json().encode()) == roster


class SyncState:
    """The fake state store behind the sync DaprClient's calls the reporter makes."""

    def __init__(self) -> None:
        self.state = FakeDaprState()

    def get_state(self, store: str, key: str) -> Any:
        return self.state.item(key)

    def save_state(self, store: str, key: str, value: str, etag: str | None = None, options: Any = None,
                   state_metadata: dict[str, str] | None = None) -> None:
        first_write = options is not None and options.concurrency.name == "first_write"
        ttl = int(state_metadata["ttlInSeconds"]) if state_metadata else None
        self.state.put(key, value, etag=etag, first_write=first_write, ttl=ttl)


def test_processes_write_their_reports_to_one_key_each_reads_all_and_a_stopped_one_takes_itself_out() -> None:
    dapr = SyncState()
    clock = [100.0]

    def reporter(name: str, finished: int) -> Reporter:
        return Reporter(dapr, name, lambda at: report(name, at=at, finished_tasks=finished),  # type: ignore[arg-type]
                        clock=lambda: clock[0])

    first, second = reporter("0", 10), reporter("1", 20)
    assert first.everyone().finished_tasks == 10  # nothing written yet: itself only
    for each in (first, second):
        each.write(lambda roster, now, each=each: roster.with_report(each.report(now), now))
    assert first.everyone().finished_tasks == second.everyone().finished_tasks == 30
    assert dapr.state.ttls[WORKFLOW_PROCESSES_KEY] > STALE_S  # the key outlives its last writer, then goes
    # A write with an ETag another process has moved on from is refused (made again next round).
    stale = dapr.get_state("statestore", WORKFLOW_PROCESSES_KEY)
    second.write(lambda roster, now: roster.with_report(second.report(now), now))
    with pytest.raises(RuntimeError):
        dapr.save_state("statestore", WORKFLOW_PROCESSES_KEY, Roster().model_dump_json(), etag=stale.etag)
    second.stop()
    assert [p.process for p in first.everyone().processes] == ["0"]
    # A killed process never takes itself out: once silent for STALE_S it no longer counts.
    clock[0] += STALE_S + 1
    assert [p.process for p in reporter("2", 5).everyone().processes] == ["2"]


def test_throughput_adds_up_every_process_and_survives_a_reset_a_new_process_and_a_gone_one() -> None:
    rates = Throughput(window_s=100)
    for at, counters in ((0, {"0": 0}), (1, {"0": 10}), (2, {"0": 30}), (3, {"0": 5}),
                         (4, {"0": 15, "1": 1000}), (5, {"0": 25, "1": 1010}), (6, {"1": 1020})):
        rates.sample(at, counters)
    assert rates.rates() == [(1, 10.0), (2, 20.0), (3, 5.0), (4, 10.0), (5, 20.0), (6, 10.0)]


@pytest.mark.parametrize("at", [5000.0 + STALE_S + 1, 1e308, float("inf"), float("nan"), -1e308])
def test_a_report_dated_far_from_now_or_not_a_time_never_counts(at: float) -> None:
    now = 5000.0
    roster = Roster(reports=[report("odd", at=at, finished_tasks=10**30), report("0", at=now + 5)])
    assert [r.process for r in roster.live(now)] == ["0"]  # a few seconds ahead: another host's clock
    assert [r.process for r in roster.with_report(report("1", at=now), now).reports] == ["0", "1"]
