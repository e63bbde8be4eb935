"""Scoring rules: a base score raised by the tags enrichment gave the task."""

from collections.abc import Iterable
from types import MappingProxyType

from services.enricher.rules import BACKEND, HIGH_PRIORITY

BASE_SCORE = 50
TAG_BONUS = MappingProxyType({HIGH_PRIORITY: 30, BACKEND: 5})


def score_for(tags: Iterable[str]) -> int:
    return BASE_SCORE + sum(TAG_BONUS.get(tag, 0) for tag in set(tags))
