"""The local stack's secrets: generated at the first ``stack up``, kept by ``down``, removed by ``make clean``.

Shared by the launcher (which creates them) and every client (the CLI, the tests, the soak, the
benchmark), which read them from the stack's run directory unless the environment gives them.

One JSON file, ``<run dir>/secrets/secrets.json``, readable by its owner only. It is also the file Dapr's
local-file secret store reads (components refer to ``redis-password`` with ``secretKeyRef``), and the
place the CLI, the tests, the soak and the benchmark read the tokens from. Secrets reach processes
through their environment or a file, never their command line (``ps`` shows command lines to everyone).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from taskfan.runfile import RunFile
from taskfan.settings import Settings

SECRETS_DIR = "secrets"
SECRETS_FILE = "secrets.json"


@dataclass(frozen=True)
class StackSecrets:
    # The key each app's sidecar API token is derived from (``sidecar_token``): one secret to keep, and a
    # token that opens one app's sidecars only. No process of the stack gets the key itself.
    dapr_token_key: str
    app_api_token: str  # sidecar -> app calls (APP_API_TOKEN); apps accept only it
    ingest_token: str  # ingest's HTTP API (`Authorization: Bearer ...`); the console's operator credential too
    console_view_token: str  # the console's viewer credential: looks, never acts; only the console has it
    redis_password: str  # Redis `requirepass`; components read it through the secret store
    redis_keeper_password: str  # Redis user `taskfan-keeper`: ingest's stream gauge and trimmer only
    redis_console_password: str  # Redis user `taskfan-console`: the console's stream lag only

    @classmethod
    def generate(cls) -> StackSecrets:
        return cls(**{f.name: secrets.token_urlsafe(32) for f in fields(cls)})

    @classmethod
    def none(cls) -> StackSecrets:
        """A stack with its locks off (SECURITY=off, the benchmark's comparison only)."""
        return cls(**{f.name: "" for f in fields(cls)})

    def sidecar_token(self, app_id: str) -> str:
        """The API token of app ``app_id``'s sidecars (DAPR_API_TOKEN of that daprd and of its app)."""
        return sidecar_token(self.dapr_token_key, app_id)

    def as_secret_store(self) -> dict[str, str]:
        """Dapr's local-file secret store format: one key per secret, names with dashes."""
        return {name.replace("_", "-"): value for name, value in asdict(self).items()}



# Where a secret can be in an environment: a shell that ran `taskfan stack env` has several. The launcher
# starts its processes without them, then gives each the ones it uses (``Stack.secret_env``).
SECRET_ENV = frozenset({"DAPR_API_TOKEN", "DAPR_TOKEN_KEY", "APP_API_TOKEN", "INGEST_TOKEN", "CONSOLE_VIEW_TOKEN",
                        "TASKFAN_TOKEN", "REDIS_PASSWORD",
                        "REDIS_KEEPER_PASSWORD", "REDIS_CONSOLE_PASSWORD", "REDISCLI_AUTH"})


def without_secrets(env: Mapping[str, str]) -> dict[str, str]:
    return {name: value for name, value in env.items() if name not in SECRET_ENV}


def ingest_headers(token: str) -> dict[str, str]:
    """What a client of ingest's API sends: the stack's bearer token (nothing when there is none)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def sidecar_token(key: str, app_id: str) -> str:
    """Derived, not stored: an HMAC of the app id under the stack's key (empty when the stack has no locks)."""
    return hmac.new(key.encode(), f"dapr-api-token/{app_id}".encode(), hashlib.sha256).hexdigest() if key else ""


def sidecar_headers(key: str, app_id: str) -> dict[str, str]:
    """What a client of app ``app_id``'s sidecar sends: that sidecar's token, derived from the stack's key."""
    return dapr_headers(sidecar_token(key, app_id))


def dapr_headers(token: str) -> dict[str, str]:
    """What a client of a sidecar's API sends: the stack's Dapr API token (nothing when there is none)."""
    return {"dapr-api-token": token} if token else {}


def path(run_dir: Path) -> Path:
    return run_dir / SECRETS_DIR / SECRETS_FILE


def load(run_dir: Path) -> StackSecrets | None:
    try:
        stored = json.loads(path(run_dir).read_text())
    except FileNotFoundError:
        return None
    # A secret added since the file was written is empty here; ``ensure`` generates it.
    return StackSecrets(**{f.name: stored.get(f.name.replace("_", "-"), "") for f in fields(StackSecrets)})


def ensure(run_dir: Path, locked: bool = True) -> StackSecrets:
    """The stack's secrets, generated on first use; the folder 0700 and the file 0600 in any case.

    ``locked=False`` (SECURITY=off) keeps empty secrets, and refuses a run directory that has real ones:
    a stack is either locked or not, never half.
    """
    folder = path(run_dir).parent
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    existing = load(run_dir)
    if existing is not None:
        if locked != (existing != StackSecrets.none()):
            raise ValueError(f"{path(run_dir)} belongs to a stack with SECURITY={'off' if locked else 'on'}: "
                             "give the other one a run directory of its own (RUN_DIR)")
        path(run_dir).chmod(0o600)
        if locked and not all(asdict(existing).values()):  # a file from before a secret was added: add it
            existing = StackSecrets(**{name: value or secrets.token_urlsafe(32)
                                       for name, value in asdict(existing).items()})
            _write(path(run_dir), existing, create=False)
        return existing
    created = StackSecrets.generate() if locked else StackSecrets.none()
    _write(path(run_dir), created, create=True)
    return created


def _write(file: Path, stored: StackSecrets, create: bool) -> None:
    # Created with 0600 from the start: never readable by others, not even for a moment.
    descriptor = os.open(file, os.O_WRONLY | (os.O_CREAT | os.O_EXCL if create else os.O_TRUNC), 0o600)
    with os.fdopen(descriptor, "w") as out:
        json.dump(stored.as_secret_store(), out, indent=2)


def run_dir(settings: Settings, run_file: RunFile) -> Path:
    """The stack's run directory: RUN_DIR, else ``.taskfan/`` beside ``dapr.yaml``."""
    return Path(settings.run_dir) if settings.run_dir else run_file.root / ".taskfan"


def for_clients(settings: Settings, run_file: RunFile) -> Settings:
    """``settings`` with every secret the environment left empty taken from the stack's secrets file."""
    stored = load(run_dir(settings, run_file))
    if stored is None:
        return settings
    return dataclasses.replace(settings, **{name: getattr(settings, name) or value
                                            for name, value in asdict(stored).items()})
