"""Validation rules: a task with any issue is rejected and goes no further."""

MIN_TITLE_CHARS = 5
MIN_DESCRIPTION_CHARS = 10


def validation_issues(title: str, description: str) -> list[str]:
    """Return the reasons a task is rejected; an empty list means it is valid."""
    issues = []
    if len(title) < MIN_TITLE_CHARS:
        issues.append(f"Title too short (min {MIN_TITLE_CHARS} characters)")
    if len(description) < MIN_DESCRIPTION_CHARS:
        issues.append(f"Description too short (min {MIN_DESCRIPTION_CHARS} characters)")
    return issues
