"""An outside app's grant (taskfan.stack.grants): only ids the settings list, only what the role needs."""

from __future__ import annotations

import json
import stat

import pytest
import yaml

from taskfan.stack import grants


def test_only_a_listed_plain_app_id_is_granted(tmp_path):
    grant = grants.granted("my-subscriber", ["pub"], ["my-subscriber"], tmp_path)
    assert (grant.subscribes, grant.publishes, grant.user) == (True, False, "grant-my-subscriber")
    with pytest.raises(grants.GrantError, match="OUTCOME_SUBSCRIBERS"):
        grants.granted("other", ["pub"], ["my-subscriber"], tmp_path)
    for hostile in ("a::b", "a||b", "../x", "a b", "\ud800", "A", "", "x" * 64, "a\nuser evil on nopass +@all"):
        with pytest.raises(grants.GrantError, match="cannot be granted"):
            grants.granted(hostile, [hostile], [hostile], tmp_path)


def test_a_subscriber_reads_its_streams_a_publisher_adds_to_tasks_and_nothing_else():
    subscriber = grants.Grant("s", publishes=False, subscribes=True, folder=None)  # type: ignore[arg-type]
    rules = subscriber.acl_rules("pw")
    assert rules[:3] == ["reset", "on", ">pw"] and "-@all" in rules
    assert {"~outcomes", "~tasks-deadletter"} == {r for r in rules if r.startswith("~")}
    assert "+xreadgroup" in rules and "+xack" in rules and "+xadd" not in rules
    assert not any(r in rules for r in ("+@all", "+@stream", "+xtrim", "+xdel", "+xgroup|destroy", "+del", "+keys"))
    publisher = grants.Grant("p", publishes=True, subscribes=False, folder=None)  # type: ignore[arg-type]
    rules = publisher.acl_rules("pw")
    assert {r for r in rules if r.startswith("~")} == {"~tasks"} and "+xadd" in rules and "+xreadgroup" not in rules


def test_a_grants_folder_is_private_and_holds_pubsub_alone_with_its_own_user(tmp_path):
    stack_resources = tmp_path / "resources"
    stack_resources.mkdir()
    (stack_resources / "pubsub.yaml").write_text(yaml.safe_dump(
        {"metadata": {"name": "pubsub"}, "spec": {"metadata": [{"name": "redisHost", "value": "127.0.0.1:1"}]}}))
    (stack_resources / "secretstore.yaml").write_text(yaml.safe_dump(
        {"metadata": {"name": "taskfan-secrets"}, "spec": {"metadata": [{"name": "secretsFile", "value": "x"}]}}))
    (stack_resources / "statestore.yaml").write_text("never copied")
    (tmp_path / "config.yaml").write_text("kind: Configuration\n")
    grant = grants.granted("sub", [], ["sub"], tmp_path)
    stored = grants.ensure(grant, stack_resources, tmp_path / "config.yaml")
    assert grants.ensure(grant, stack_resources, tmp_path / "config.yaml") == stored  # made once
    assert sorted(p.name for p in grant.resources_dir.iterdir()) == ["pubsub.yaml", "secretstore.yaml"]
    pubsub = yaml.safe_load((grant.resources_dir / "pubsub.yaml").read_text())
    assert {"name": "redisUsername", "value": "grant-sub"} in pubsub["spec"]["metadata"]
    store = yaml.safe_load((grant.resources_dir / "secretstore.yaml").read_text())
    assert store["spec"]["metadata"][0]["value"] == str(grant.secrets_file)
    assert json.loads(grant.secrets_file.read_text()).keys() == {"redis-password", "dapr-api-token"}
    assert stat.S_IMODE(grant.secrets_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(grant.folder.stat().st_mode) == 0o700
    assert [(g.app_id, p) for g, p in grants.existing(tmp_path, [], ["sub"])] == [("sub", stored["redis-password"])]
    assert grants.existing(tmp_path, [], []) == []  # no longer listed: no Redis user at the next start
