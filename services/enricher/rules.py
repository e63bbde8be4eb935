"""Enrichment rules: tags derived from a task's text."""

HIGH_PRIORITY = "high-priority"
BACKEND = "backend"


def tags_for(title: str, description: str) -> list[str]:
    """Tags in a stable order: "urgent" in the title, "api" in the description (any case)."""
    tags = []
    if "urgent" in title.lower():
        tags.append(HIGH_PRIORITY)
    if "api" in description.lower():
        tags.append(BACKEND)
    return tags
