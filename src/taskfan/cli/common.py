"""What every ``taskfan`` command shares: exit codes, the error type, settings and the stack's addresses."""

from __future__ import annotations

from taskfan import runfile, stack_secrets
from taskfan.contracts import AppId
from taskfan.settings import Settings, SettingsError

EXIT_REFUSED, EXIT_BAD_INPUT, EXIT_UNREACHABLE = 1, 2, 3


class CliError(Exception):
    def __init__(self, message: str, code: int, transient: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.transient = transient


def settings() -> Settings:
    """Settings from the environment; secrets it does not give come from the checkout's stack."""
    try:
        current = Settings.from_env()
    except SettingsError as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from None
    try:
        return stack_secrets.for_clients(current, runfile.load())
    except runfile.RunFileError:  # outside a checkout: the environment says it all
        return current


def ingest_headers(current: Settings) -> dict[str, str]:
    return stack_secrets.ingest_headers(current.ingest_token)


def workflow_headers(current: Settings) -> dict[str, str]:
    """What the CLI sends to the workflow app's sidecar (Dapr's workflow and state APIs)."""
    return stack_secrets.sidecar_headers(current.dapr_token_key, AppId.WORKFLOW)


def run_file() -> runfile.RunFile:
    try:
        return runfile.load()
    except runfile.RunFileError as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from None


def local_stack():  # noqa: ANN201 - taskfan.stack is imported only by the commands that drive the stack
    from taskfan.stack import Stack

    return Stack(settings(), run_file())


def ingest_url(current: Settings) -> str:
    """``INGEST_URL``, else the ingest address in the checkout's ``dapr.yaml``."""
    return current.ingest_url or run_file().ingest_url()


def workflow_dapr_url(current: Settings) -> str:
    """``WORKFLOW_DAPR_URL``, else the workflow sidecar's HTTP address in ``dapr.yaml``."""
    return current.workflow_dapr_url or run_file().dapr_http_url("workflow")
