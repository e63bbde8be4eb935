"""Grants for Dapr apps of your own: what an outside publisher or subscriber gets, and nothing more.

``taskfan stack env --app ID`` makes (or reuses) ``<run dir>/grants/<ID>/`` (0700) for an app id the settings
grant (``OUTCOME_SUBSCRIBERS``: subscribe to ``outcomes`` and ``tasks-deadletter``; ``TASKS_PUBLISHERS``: publish
to ``tasks``):

- ``secrets.json`` (0600): the grant's own Redis password and the API token of its own sidecar; never the
  stack's tokens, so its holder cannot call the stack's sidecars (terminate a workflow, write the ledger);
- ``resources/``: the pub/sub component alone, logged in to Redis as ``grant-<ID>``, and a secret store reading
  that file; no state store, so its sidecar cannot read or write Taskfan's state;
- ``config.yaml``: the stack's configuration (its secrets API denied to every caller).

Redis's user ``grant-<ID>`` may use only the streams of the topics granted, and of those commands only what
Dapr's Redis pub/sub sends for that role: a subscriber reads, acknowledges and claims; a publisher adds.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import yaml

from taskfan.contracts import DEADLETTER_TOPIC, OUTCOMES_TOPIC, TASKS_TOPIC

GRANTS_DIR = "grants"
SECRET_STORE = "taskfan-secrets"  # the name the pub/sub component's ``auth.secretStore`` refers to
# A grant's app id becomes a folder and a Redis user name: nothing else than this.
APP_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
# What Dapr's Redis client sends on connecting and on checking the server (go-redis, components-contrib).
CONNECTION = ("+ping", "+hello", "+auth", "+info", "+client|setname", "+client|id", "+select")
SUBSCRIBER = ("+xgroup|create", "+xgroup|createconsumer", "+xreadgroup", "+xack", "+xpending", "+xclaim",
              "+xautoclaim", "+xinfo|stream", "+xinfo|groups", "+xlen")
PUBLISHER = ("+xadd",)


class GrantError(ValueError):
    pass


@dataclass(frozen=True)
class Grant:
    app_id: str
    publishes: bool
    subscribes: bool
    folder: Path

    @property
    def user(self) -> str:
        return f"grant-{self.app_id}"

    @property
    def secrets_file(self) -> Path:
        return self.folder / "secrets.json"

    @property
    def resources_dir(self) -> Path:
        return self.folder / "resources"

    @property
    def config_path(self) -> Path:
        return self.folder / "config.yaml"

    def stored(self) -> dict[str, str]:
        return json.loads(self.secrets_file.read_text())

    def acl_rules(self, password: str) -> list[str]:
        """The Redis ACL rules of the grant's user (``ACL SETUSER`` arguments, a ``user`` line of redis.conf)."""
        keys = [f"~{OUTCOMES_TOPIC}", f"~{DEADLETTER_TOPIC}"] if self.subscribes else []
        keys += [f"~{TASKS_TOPIC}"] if self.publishes else []
        commands = [*CONNECTION, *(SUBSCRIBER if self.subscribes else ()), *(PUBLISHER if self.publishes else ())]
        return ["reset", "on", f">{password}", *keys, "resetchannels", "-@all", *commands]


def granted(app_id: str, publishers: list[str], subscribers: list[str], run_dir: Path) -> Grant:
    """The grant of ``app_id``, if the settings list it (``GrantError`` with what to do if not)."""
    if not APP_ID.match(app_id):
        raise GrantError(f"{app_id!r} cannot be granted: an app id of your own is 1 to 63 lowercase letters, digits "
                         "and dashes")
    if app_id not in publishers and app_id not in subscribers:
        raise GrantError(f"{app_id!r} is not granted anything: put it in OUTCOME_SUBSCRIBERS (to subscribe to "
                         "outcomes) or TASKS_PUBLISHERS (to publish batches) before `make up`")
    return Grant(app_id, app_id in publishers, app_id in subscribers, run_dir / GRANTS_DIR / app_id)


def ensure(grant: Grant, stack_resources: Path, stack_config: Path) -> dict[str, str]:
    """Write the grant's folder from the running stack's rendered resources; its secrets are made once."""
    grant.resources_dir.mkdir(parents=True, exist_ok=True)
    for folder in (grant.folder.parent, grant.folder, grant.resources_dir):
        folder.chmod(0o700)
    if grant.secrets_file.exists():
        stored = grant.stored()
    else:
        stored = {"redis-password": secrets.token_urlsafe(32), "dapr-api-token": secrets.token_urlsafe(32)}
        descriptor = os.open(grant.secrets_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            json.dump(stored, out)
    pubsub = yaml.safe_load((stack_resources / "pubsub.yaml").read_text())
    pubsub["spec"]["metadata"].append({"name": "redisUsername", "value": grant.user})
    store = yaml.safe_load((stack_resources / "secretstore.yaml").read_text())
    assert store["metadata"]["name"] == SECRET_STORE
    for item in store["spec"]["metadata"]:
        if item.get("name") == "secretsFile":
            item["value"] = str(grant.secrets_file)
    for name, document in (("pubsub.yaml", pubsub), ("secretstore.yaml", store)):
        (grant.resources_dir / name).write_text(yaml.safe_dump(document, sort_keys=False))
    grant.config_path.write_text(stack_config.read_text())
    return stored


def existing(run_dir: Path, publishers: list[str], subscribers: list[str]) -> list[tuple[Grant, str]]:
    """The grants made so far that the settings still list, with their Redis passwords (for redis.conf)."""
    found = []
    for folder in sorted((run_dir / GRANTS_DIR).glob("*/secrets.json")):
        try:
            grant = granted(folder.parent.name, publishers, subscribers, run_dir)
        except GrantError:
            continue  # no longer listed: no Redis user
        found.append((grant, grant.stored()["redis-password"]))
    return found
