"""The example step's rule: the writing system most of a task's letters are in. Plain logic, no Dapr."""

from __future__ import annotations

import unicodedata
from collections import Counter


def script_of(text: str) -> str:
    """``Latin``, ``Cyrillic``, ``Greek``, ``Cjk``, ``Arabic``, ... by the most letters; ``none`` without any."""
    scripts = Counter(unicodedata.name(letter, "UNKNOWN").split(" ", 1)[0] for letter in text if letter.isalpha())
    return scripts.most_common(1)[0][0].capitalize() if scripts else "none"
