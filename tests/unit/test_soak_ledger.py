"""The soak's pure parts: its batches, the run file on shifted ports, and the ledger's verdicts."""

import random

import yaml

from bench.soak import REPO_ROOT, SCORERS, shift_run_file, stack_ports
from bench.soak_ledger import (
    Fault,
    HostileEvent,
    Published,
    Received,
    build_ledger,
    expected_result,
    make_batch,
    problems,
    render,
)
from services.enricher.rules import tags_for
from services.scorer.rules import score_for
from services.validator.rules import validation_issues
from taskfan import runfile
from taskfan.contracts import TaskBatch
from taskfan.settings import Settings
from taskfan.stack.topology import Topology


def test_batches_are_valid_and_mix_scripts_and_rejections():
    rng = random.Random(7)
    batches = [make_batch(rng, f"soak-x-{n}", 5, 60) for n in range(50)]
    for batch in batches:
        TaskBatch.model_validate(batch)
        assert 5 <= len(batch["tasks"]) <= 60
    text = "".join(t["title"] + t["description"] + t["task_id"] for b in batches for t in b["tasks"])
    assert not text.isascii()
    statuses = {expected_result(t)[0] for b in batches for t in b["tasks"]}
    assert statuses == {"completed", "rejected"}


def test_expected_results_agree_with_the_step_apps_rules():
    rng = random.Random(3)
    for task in make_batch(rng, "b", 60, 60)["tasks"]:
        issues = validation_issues(task["title"], task["description"])
        want = ("rejected", 0) if issues else ("completed", score_for(tags_for(task["title"], task["description"])))
        assert expected_result(task) == want


def test_the_shifted_run_file_shares_no_port_with_the_default_one(tmp_path):
    source = REPO_ROOT / "dapr.yaml"
    default = runfile.load(source)
    document = shift_run_file(yaml.safe_load(source.read_text()), 10_000, REPO_ROOT, default.ingest_port())
    path = tmp_path / "dapr.yaml"
    path.write_text(yaml.safe_dump(document))
    shifted = runfile.load(path)
    ours = stack_ports(Topology(shifted), SCORERS, Settings.redis_port + 10_000)
    theirs = stack_ports(Topology(default), 3, Settings.redis_port)
    assert set(ours).isdisjoint(theirs)
    assert shifted.ingest_port() == default.ingest_port() + 10_000
    assert shifted.app("workflow").dapr_http_port == default.app("workflow").dapr_http_port + 10_000
    assert runfile.port_of(shifted.common.scheduler_host_address) == \
        runfile.port_of(default.common.scheduler_host_address) + 10_000
    # Paths point into the checkout, wherever the copy lives.
    assert shifted.resolve(shifted.common.resources_paths[0]) == (REPO_ROOT / "components").resolve()
    assert Topology(shifted).instance("scorer", 1).app_dir == (REPO_ROOT / "services" / "scorer").resolve()
    assert max(ours) < 32768  # below the ephemeral range, as dapr.yaml's own ports


TASKS = [{"task_id": "a", "title": "Urgent: fix login API", "description": "The login api returns 500 errors"},
         {"task_id": "b", "title": "Fix", "description": "short"}]


def outcome(batch_id, results, started="2026-01-01T00:00:10+00:00", finished="2026-01-01T00:00:20+00:00"):
    return {"batch_id": batch_id, "total": len(results), "results": results, "started_at": started,
            "finished_at": finished}


def good_results():
    return [{"task_id": "a", "status": "completed", "score": 85}, {"task_id": "b", "status": "rejected", "score": 0}]


def published(batch_id, accepted=True):
    return Published(batch_id, "http", TASKS, started_at=1.0, accepted_at=2.0 if accepted else None, attempts=1)


T10 = 1767225610.0  # 2026-01-01T00:00:10Z


def test_a_clean_run_has_no_problems():
    ledger = build_ledger([published("x")], {"x": [Received(outcome("x", good_results()), "1-0", 3.0)]}, [], [],
                          {}, {})
    assert problems(ledger) == []
    assert (ledger["tasks_in"], ledger["tasks_out"], ledger["batches_with_exactly_one_outcome"]) == (2, 2, 1)
    assert "exactly one outcome    1" in render(ledger, {"seconds": 1, "seed": 1, "scorers": 2})


def test_missing_duplicate_lost_tasks_and_wrong_results_each_fail_the_run():
    lost_task = [good_results()[0]]
    wrong = [{"task_id": "a", "status": "completed", "score": 50}, good_results()[1]]
    received = {
        "dup": [Received(outcome("dup", good_results()), "1-0", 3.0),
                Received(outcome("dup", good_results()), "2-0", 4.0)],
        "lost": [Received(outcome("lost", lost_task), "3-0", 3.0)],
        "wrong": [Received(outcome("wrong", wrong), "4-0", 3.0)],
    }
    batches = [published(b) for b in ("missing", "dup", "lost", "wrong")] + [published("refused", accepted=False)]
    ledger = build_ledger(batches, received, [], [], {}, {})
    found = " | ".join(problems(ledger))
    for phrase in ("1 published batch(es) have no outcome", "1 batch(es) have more than one outcome",
                   "tasks in 8 != tasks in outcomes 5", "do not list their batch's tasks",
                   "1 task result(s) differ from the rules", "never accepted"):
        assert phrase in found
    assert ledger["missing"][0]["batch_id"] == "missing"


def test_failed_tasks_are_listed_with_the_faults_active_during_their_batch():
    results = [{"task_id": "a", "status": "failed", "score": None, "error": "score_task: timed out"},
               good_results()[1]]
    faults = [Fault(1, "SIGSTOP", "scorer-1", started_at=T10 + 2, ended_at=T10 + 12, hold_s=10),
              Fault(2, "SIGKILL", "redis", started_at=T10 + 500, ended_at=T10 + 501)]
    ledger = build_ledger([published("x")], {"x": [Received(outcome("x", results), "1-0", 3.0)]}, [], faults, {}, {})
    assert problems(ledger) == []  # a failed task is accounted for; the ledger lists it
    assert ledger["failed_tasks"] == [{"batch_id": "x", "task_id": "a", "reason": "score_task: timed out",
                                       "faults_active": ["#1 SIGSTOP scorer-1"]}]
    assert ledger["failed_tasks_without_fault"] == 0


def test_a_fault_that_was_not_recovered_from_fails_the_run():
    faults = [Fault(1, "SIGKILL", "workflow", started_at=T10, ended_at=T10 + 120, error="StackError: not ready")]
    ledger = build_ledger([published("x")], {"x": [Received(outcome("x", good_results()), "1-0", 3.0)]}, [], faults,
                          {}, {})
    assert "not recovered from" in problems(ledger)[0]


def test_a_failed_task_no_fault_explains_fails_the_run():
    results = [{"task_id": "a", "status": "failed", "score": None, "error": "score: boom"}, good_results()[1]]
    ledger = build_ledger([published("x")], {"x": [Received(outcome("x", results), "1-0", 3.0)]}, [], [], {}, {})
    assert problems(ledger) == ["1 task(s) failed while no fault was active"]


def letter(event, at="2026-01-01T00:00:15+00:00", reason="event is not valid JSON"):
    return {"reason": reason, "event": event, "received_at": at}


def test_every_hostile_event_needs_exactly_one_dead_letter_and_any_other_needs_a_fault():
    hostile = [HostileEvent("hostile-1", "deep", T10), HostileEvent("hostile-2", "huge", T10),
               HostileEvent("hostile-3", "surrogate", T10)]
    letters = [letter("x hostile-1 ..."), letter({"id": "hostile-2"}), letter({"id": "hostile-2"}),
               letter({"data": {"batch_id": "soak-1"}}, reason="batch soak-1: no outcome could be published"),
               letter({"data": {"batch_id": "soak-2"}}, at="2026-01-01T00:08:20+00:00")]
    faults = [Fault(1, "SIGKILL", "redis", started_at=T10 + 2, ended_at=T10 + 3)]
    ledger = build_ledger([published("x")], {"x": [Received(outcome("x", good_results()), "1-0", 3.0)]}, letters,
                          faults, {}, {}, hostile=hostile)
    found = " | ".join(problems(ledger))
    assert "2 hostile event(s) did not get exactly one dead letter" in found  # hostile-2 twice, hostile-3 never
    assert "1 dead letter(s) that no fault or hostile event explains" in found  # soak-2, long after the fault
    assert [d["batch_id"] for d in ledger["dead_letters_without_fault"]] == ["soak-2"]


def test_a_repeat_of_the_same_outcome_event_is_a_redelivery_not_a_duplicate():
    same = [Received(outcome("x", good_results()), f"{n}-0", 3.0, event_id="outcome:x") for n in (1, 2)]
    ledger = build_ledger([published("x")], {"x": same}, [], [], {}, {})
    assert problems(ledger) == [] and ledger["redelivered_outcomes"][0]["outcomes"] == 2
    other = [same[0], Received(outcome("x", good_results(), finished="2026-01-01T00:00:30+00:00"), "3-0", 4.0,
                               event_id="outcome:x")]
    assert "more than one outcome" in problems(build_ledger([published("x")], {"x": other}, [], [], {}, {}))[0]
