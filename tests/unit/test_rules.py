import pytest

from services.enricher.rules import tags_for
from services.scorer.rules import score_for
from services.validator.rules import validation_issues


def test_valid_task_has_no_issues():
    assert validation_issues("Urgent: fix login API", "The login api returns 500 errors") == []


@pytest.mark.parametrize(
    ("title", "description", "issues"),
    [
        ("Fix", "The login api returns 500 errors", ["Title too short (min 5 characters)"]),
        ("Fix login", "short", ["Description too short (min 10 characters)"]),
        ("", "", ["Title too short (min 5 characters)", "Description too short (min 10 characters)"]),
        ("Fixed", "0123456789", []),  # exactly at the minimums
    ],
)
def test_validation_issues(title, description, issues):
    assert validation_issues(title, description) == issues


@pytest.mark.parametrize(
    ("title", "description", "tags"),
    [
        ("Urgent: fix login API", "The login api returns 500 errors", ["high-priority", "backend"]),
        ("URGENT thing", "nothing here", ["high-priority"]),
        ("Plain title", "Rapid growth", ["backend"]),  # "api" anywhere in the description
        ("Plain title", "no match", []),
        ("api in title only", "no match", []),
    ],
)
def test_tags(title, description, tags):
    assert tags_for(title, description) == tags


@pytest.mark.parametrize(
    ("tags", "score"),
    [([], 50), (["high-priority"], 80), (["backend"], 55), (["high-priority", "backend"], 85), (["other"], 50)],
)
def test_score(tags, score):
    assert score_for(tags) == score


def test_lesson_example_scores_85():
    tags = tags_for("Urgent: fix login API", "The login api returns 500 errors")
    assert score_for(tags) == 85
