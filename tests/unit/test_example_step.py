"""The example step of your own (examples/script_detector): its rule, and its row beside the pipeline's."""

from pathlib import Path

import pytest

from taskfan import pipeline

FOLDER = Path(__file__).resolve().parents[2] / "examples" / "script_detector"


@pytest.fixture
def detect(monkeypatch):
    monkeypatch.syspath_prepend(str(FOLDER))  # the app runs from its folder (its dapr.yaml entry's appDirPath)
    import detect

    return detect


@pytest.mark.parametrize("text, script", [
    ("Fix login", "Latin"), ("Исправить вход", "Cyrillic"), ("修复登录 bug", "Cjk"), ("Δ fix λόγος", "Greek"),
    ("123 --- ::", "none"), ("", "none"), ("\udcff", "none"),
])
def test_the_script_is_that_of_most_letters(detect, text, script):
    assert detect.script_of(text) == script


def test_the_row_the_app_gives_fits_after_enrich():
    import re

    import yaml

    text = (FOLDER / "app.py").read_text()
    row = yaml.safe_load(re.search(r"\n(    - \{name: detect-script.*?\})\n", text, re.S).group(1))[0]
    assert row == {"name": "detect-script", "app_id": "script-detector", "method": "detect-script",
                   "reads": ["title", "description"], "adds": {"script": "string"}}
    steps = [s.model_dump(mode="json") for s in pipeline.load().steps]
    four = pipeline.Pipeline.model_validate({"steps": [*steps[:2], row, *steps[2:]]})
    assert four.names == ("validate", "enrich", "detect-script", "score")
