"""The step services' request handling, called as plain functions (no sidecar)."""

import threading

from services.enricher.app import enrich
from services.scorer.app import Scorer
from services.validator.app import validate
from taskfan.dapr_app import per_task
from taskfan.settings import Settings

TASK = {"task_id": "t1", "title": "Urgent: fix login API", "description": "The login api returns 500 errors"}


def test_validate_and_enrich_answer_one_result_per_task():
    short = {"task_id": "t2", "title": "Fix", "description": "x"}
    assert per_task(validate)({"tasks": [TASK, short]})["results"] == [
        {"task_id": "t1", "issues": []},
        {"task_id": "t2",
         "issues": ["Title too short (min 5 characters)", "Description too short (min 10 characters)"]},
    ]
    assert per_task(enrich)({"tasks": [TASK]})["results"] == [{"task_id": "t1", "tags": ["high-priority", "backend"]}]


def test_a_malformed_task_is_an_error_entry_not_a_failed_call():
    results = per_task(validate)({"tasks": [{"task_id": "bad"}, TASK]})["results"]
    assert results[0]["task_id"] == "bad" and "error" in results[0]
    assert results[1] == {"task_id": "t1", "issues": []}


def test_scorer_fault_injection_fails_only_matching_tasks():
    scorer = Scorer(Settings(scorer_fail_tasks="*-fail-me"))
    results = scorer.score({"tasks": [{"task_id": "a", "tags": ["backend"]},
                                      {"task_id": "b-fail-me", "tags": []}]})["results"]
    assert results[0] == {"task_id": "a", "score": 55}
    assert "scoring failed for b-fail-me" in results[1]["error"]


def test_a_scorer_logs_one_line_per_call_naming_the_tasks_it_scored(caplog):
    scorer = Scorer(Settings(scorer_fail_tasks="*-fail-me"))
    tasks = [{"task_id": f"t{i}::x||y", "tags": ["backend"]} for i in range(50)]
    tasks.append({"task_id": "b-fail-me", "tags": []})
    with caplog.at_level("INFO", logger="services.scorer.app"):
        scorer.score({"tasks": tasks})
    lines = [r for r in caplog.records if r.getMessage() == "scored"]
    assert len(lines) == 1  # not one per task: on a fast model the line cost more than the scoring
    assert lines[0].task_ids == [t["task_id"] for t in tasks[:50]] and lines[0].tasks == 51
    assert lines[0].replica == scorer.replica


def test_scorer_keeps_at_most_its_concurrency_in_progress():
    scorer = Scorer(Settings(score_delay_ms=50, scorer_concurrency=2))
    active, peak, lock = 0, 0, threading.Lock()
    original = scorer.score_one

    def counting(request):
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        try:
            return original(request)
        finally:
            with lock:
                active -= 1

    scorer.score_one = counting
    calls = [threading.Thread(target=scorer.score, args=({"tasks": [{"task_id": f"{c}-{i}", "tags": []}
                                                                    for i in range(3)]},)) for c in range(3)]
    for call in calls:
        call.start()
    for call in calls:
        call.join()
    assert peak == 2


def test_a_full_scorer_refuses_a_call_that_may_be_refused_and_says_who_it_is():
    scorer = Scorer(Settings(score_delay_ms=200, scorer_concurrency=1))
    scorer.replica = "scorer-7"
    calls = [threading.Thread(target=scorer.score, args=({"tasks": [{"task_id": f"t{i}", "tags": []}],
                                                          "may_refuse": True},)) for i in range(2)]
    for call in calls:  # one in its slot, one waiting: as many waiting as there are slots
        call.start()
    while scorer.accepted < 2:
        threading.Event().wait(0.005)
    refused = scorer.score({"tasks": [{"task_id": "t3", "tags": []}], "may_refuse": True})
    assert refused == {"busy": True, "replica": "scorer-7", "slots": 1, "in_progress": 2}
    for call in calls:
        call.join()
    answered = scorer.score({"tasks": [{"task_id": "t4", "tags": ["backend"]}], "may_refuse": True})
    assert answered["results"] == [{"task_id": "t4", "score": 55}]
    assert answered["replica"] == "scorer-7" and answered["slots"] == 1 and answered["task_ms"] >= 200
    assert answered["in_progress"] == 0  # nothing else accepted: the console's scorers page shows it


def test_a_full_scorer_queues_a_call_that_may_not_be_refused():
    scorer = Scorer(Settings(score_delay_ms=100, scorer_concurrency=1))
    first = threading.Thread(target=scorer.score, args=({"tasks": [{"task_id": f"t{i}", "tags": []}
                                                                   for i in range(2)]},))
    first.start()
    while scorer.accepted < 2:
        threading.Event().wait(0.005)
    assert scorer.score({"tasks": [{"task_id": "t9", "tags": []}]})["results"][0]["score"] == 50
    first.join()
