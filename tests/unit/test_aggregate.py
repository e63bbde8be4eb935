import pytest

from services.workflow import aggregate, chunking
from taskfan.contracts import Outcome


def test_aggregate_counts_and_average_over_completed_only():
    results = [
        aggregate.completed("a", {"score": 85, "tags": ["high-priority", "backend"]}),
        aggregate.rejected("b", ["Title too short (min 5 characters)"]),
        aggregate.failed("c", "score_task", "boom", {"tags": ["backend"]}),
        aggregate.completed("d", {"score": 50}),
    ]
    outcome = aggregate.aggregate("batch-1", results, "t0", "t1").model_dump()
    Outcome.model_validate(outcome)
    assert outcome["total"] == 4
    assert (outcome["completed"], outcome["rejected"], outcome["failed"]) == (2, 1, 1)
    assert outcome["average_score"] == 67.5
    assert [r["task_id"] for r in outcome["results"]] == ["a", "b", "c", "d"]
    assert outcome["results"][1] == {
        "task_id": "b", "status": "rejected", "score": 0, "tags": [],
        "issues": ["Title too short (min 5 characters)"], "error": None,
    }
    assert outcome["results"][2]["score"] is None
    assert outcome["results"][2]["error"] == "score_task: boom"


def test_average_is_null_when_nothing_completed():
    outcome = aggregate.aggregate("b", [aggregate.rejected("x", ["nope"])], "t0", "t1").model_dump()
    assert outcome["average_score"] is None


def test_long_errors_are_cut():
    result = aggregate.failed("x", "score_task", "e" * 5000)
    assert len(result.error) == aggregate.MAX_ERROR_CHARS


@pytest.mark.parametrize(("n", "size", "lengths"), [(0, 3, []), (5, 2, [2, 2, 1]), (4, 4, [4]), (4, 10, [4])])
def test_chunk_keeps_order(n, size, lengths):
    chunks = chunking.split(list(range(n)), size)
    assert [len(c) for c in chunks] == lengths
    assert [x for c in chunks for x in c] == list(range(n))


def test_chunk_rejects_zero():
    with pytest.raises(ValueError):
        chunking.split([1], 0)


def test_summary_counts_a_chunk():
    results = [aggregate.completed("a", {"score": 50}), aggregate.rejected("b", ["x"]), aggregate.failed("c", "s", "e")]
    assert aggregate.summary(results).model_dump() == {"done": 3, "completed": 1, "rejected": 1, "failed": 1}
