import pytest

from taskfan import cli
from taskfan.cli import common
from taskfan.settings import Settings, SettingsError


def test_defaults():
    s = Settings.from_env({})
    assert (s.redis_port, s.max_in_flight, s.scorer_concurrency, s.score_delay_ms) == (6379, 400, 8, 0)
    assert (s.console_history, s.console_detail_bytes) == (10_000, 64 * 2**20)


def test_env_overrides():
    s = Settings.from_env({"REDIS_PORT": "6400", "SCORERS": "3"})
    assert s.redis_address == "127.0.0.1:6400"
    assert s.scorers == 3


@pytest.mark.parametrize("env", [{"REDIS_PORT": "abc"}, {"MAX_IN_FLIGHT": "0"}, {"SCORE_DELAY_MS": "-1"},
                                 {"REDIS_APPENDFSYNC": "sometimes"}, {"REDIS_MAXMEMORY": "lots"},
                                 {"REDIS_MAXMEMORY": "0"}, {"STREAM_MAX_ENTRIES": "0"},
                                 {"WORKFLOW_RETENTION_S": "0"}, {"CONSOLE_HISTORY": "0"},
                                 {"CONSOLE_DETAIL_BYTES": "64MiB"}, {"CONSOLE_DETAIL_BYTES": "-1"}])
def test_bad_settings_fail_fast(env):
    with pytest.raises(SettingsError):
        Settings.from_env(env)


def test_publish_missing_file_exits_2(tmp_path, capsys):
    assert cli.main(["publish", str(tmp_path / "nope.json")]) == common.EXIT_BAD_INPUT
    assert "cannot read" in capsys.readouterr().err


def test_publish_bad_json_exits_2(tmp_path, capsys):
    path = tmp_path / "b.json"
    path.write_text("{oops")
    assert cli.main(["publish", str(path)]) == common.EXIT_BAD_INPUT
    assert "not valid JSON" in capsys.readouterr().err


def test_publish_to_unreachable_stack_exits_3(tmp_path, capsys):
    path = tmp_path / "b.json"
    path.write_text('[{"task_id": "t", "title": "Hello", "description": "0123456789"}]')
    assert cli.main(["publish", str(path), "--url", "http://127.0.0.1:9"]) == common.EXIT_UNREACHABLE
    assert "cannot reach the ingest API" in capsys.readouterr().err


def test_help_lists_commands(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("publish", "outcomes", "status", "batches", "dead-letters", "console", "stack", "completion"):
        assert command in out


def test_status_outside_a_checkout_says_where_it_looked(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TASKFAN_RUN_FILE", raising=False)
    monkeypatch.delenv("WORKFLOW_DAPR_URL", raising=False)
    assert cli.main(["status", "some-batch"]) == common.EXIT_BAD_INPUT
    assert "no dapr.yaml in" in capsys.readouterr().err


def test_the_dapr_sdk_pins_match_the_runtime_version():
    import tomllib
    from pathlib import Path

    from taskfan.versions import DAPR_VERSION

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    pins = [d for d in project["dependencies"] if d.startswith("dapr")]
    assert pins == [f"dapr=={DAPR_VERSION}", f"dapr-ext-workflow=={DAPR_VERSION}", f"dapr-ext-grpc=={DAPR_VERSION}"]


def test_the_runtime_build_module_requires_the_pinned_dapr():
    from pathlib import Path

    from taskfan.versions import DAPR_VERSION

    go_mod = (Path(__file__).resolve().parents[2] / "deploy" / "dapr" / "go.mod").read_text()
    assert f"github.com/dapr/dapr v{DAPR_VERSION}" in go_mod


def test_the_step_deadline_is_sized_from_the_scorers_delay_unless_set():
    from taskfan.settings import Settings

    assert Settings().step_timeout_s == 30  # no delay: the floor
    # 1600 tasks in progress, 200 ms each, 4 at a time: a call may wait 80 s at one replica; twice that.
    assert Settings(score_delay_ms=200, scorer_concurrency=4).step_timeout_s == 160
    assert Settings(step_timeout_ms=2500, score_delay_ms=200).step_timeout_s == 2.5


def test_patched_environ_sets_variables_for_a_while_and_restores_them(monkeypatch):
    import os

    from taskfan.settings import patched_environ

    monkeypatch.setenv("SCORERS", "2")
    monkeypatch.delenv("SCORE_DELAY_MS", raising=False)
    try:
        with patched_environ({"SCORERS": 5, "SCORE_DELAY_MS": "20"}):
            assert (os.environ["SCORERS"], os.environ["SCORE_DELAY_MS"]) == ("5", "20")
            raise RuntimeError("a stack that did not start")
    except RuntimeError:
        pass
    assert os.environ["SCORERS"] == "2" and "SCORE_DELAY_MS" not in os.environ


def test_a_purged_batchs_status_comes_from_its_outcome_record():
    from services.workflow.models import OutcomeRecord
    from taskfan.cli.status import summarize

    record = OutcomeRecord.model_validate({"summary": {"batch_id": "b", "total": 3, "completed": 2, "rejected": 1,
                                                       "failed": 0, "average_score": 0.5, "started_at": "t0",
                                                       "finished_at": "t1"}, "published": True, "ended": "TERMINATED"})
    summary = summarize("b", None, record=lambda _: record)
    assert (summary["state"], summary["done"], summary["total"], summary["rejected"]) == ("TERMINATED", 3, 3, 1)
    assert "purged" in summary["detail"]
    assert summarize("b", None)["state"] == "UNKNOWN"


def test_status_refuses_text_that_is_not_a_batch_id(capsys):
    from taskfan.cli.main import main

    assert main(["status", "a||b"]) == 1
    assert "is not a batch id" in capsys.readouterr().err


def test_batches_table_aligns_columns_and_keeps_every_value_on_one_line():
    from taskfan.cli.console_client import table

    out = table([{"task_id": "t1", "stage": "rejected", "issues": ["too short", "no\nnewline"]},
                 {"task_id": "a-much-longer-id", "stage": "done", "score": 85}],
                ("task_id", "stage", "score", "issues"))
    lines = out.splitlines()
    assert lines[0].split() == ["TASK_ID", "STAGE", "SCORE", "ISSUES"] and len(lines) == 3
    assert lines[1].index("rejected") == lines[2].index("done") and "too short; no newline" in lines[1]


def test_version_names_the_dapr_release_it_is_built_for(capsys):
    from taskfan.cli.main import main

    assert main(["--version"]) == 0 and "Dapr 1.18.1" in capsys.readouterr().out
