"""The local stack as data: a Dapr multi-app run file (``dapr.yaml``), read into typed models.

The same file runs under the Dapr CLI (``dapr run -f .``) and under ``taskfan stack up``. Only the
keys the launcher honours are accepted, so a key it would ignore is an error, not a surprise.
Relative paths are relative to the file's folder, as the Dapr CLI reads them.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from taskfan.contracts import describe_validation_error
from taskfan.settings import Settings

RUN_FILE_NAME = "dapr.yaml"
RUN_FILE_ENV = "TASKFAN_RUN_FILE"


class RunFileError(ValueError):
    """The run file is missing or malformed; the message names the file and the problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Common(_Strict):
    resources_paths: list[str] = Field(alias="resourcesPaths")
    config_file_path: str = Field(alias="configFilePath")
    api_listen_addresses: str = Field("127.0.0.1", alias="apiListenAddresses")
    placement_host_address: str = Field(alias="placementHostAddress")
    scheduler_host_address: str = Field(alias="schedulerHostAddress")
    log_level: str = Field("info", alias="logLevel")
    app_protocol: str = Field("http", alias="appProtocol")
    max_body_size: str = Field("4Mi", alias="maxBodySize")
    env: dict[str, str] = {}


class App(_Strict):
    app_id: str = Field(alias="appID")
    app_dir_path: str = Field(alias="appDirPath")
    command: list[str] = Field(min_length=1)
    app_port: int | None = Field(None, alias="appPort")
    app_protocol: str | None = Field(None, alias="appProtocol")
    dapr_http_port: int = Field(alias="daprHTTPPort")
    dapr_grpc_port: int = Field(alias="daprGRPCPort")
    dapr_internal_grpc_port: int = Field(alias="daprInternalGRPCPort")
    env: dict[str, str] = {}


class RunFile(_Strict):
    version: int
    common: Common
    apps: list[App] = Field(min_length=1)
    _path: Path = PrivateAttr(default=Path(RUN_FILE_NAME))

    @property
    def path(self) -> Path:
        return self._path

    @property
    def root(self) -> Path:
        """The folder the file's relative paths start from."""
        return self.path.resolve().parent

    def resolve(self, relative: str) -> Path:
        return (self.root / relative).resolve()

    def app(self, app_id: str) -> App:
        for app in self.apps:
            if app.app_id == app_id:
                return app
        raise RunFileError(f"{self.path}: no app with appID {app_id!r}")

    def ingest_port(self) -> int:
        """Where the ingest API listens: its ``INGEST_PORT``, else the ingest app's own default."""
        return int(self.env_for(self.app("ingest")).get("INGEST_PORT", Settings.ingest_port))

    def ingest_url(self) -> str:
        return f"http://{self.common.api_listen_addresses}:{self.ingest_port()}"

    def console_port(self) -> int:
        """Where the web console listens: its ``CONSOLE_PORT``, else the console app's own default."""
        return int(self.env_for(self.app("console")).get("CONSOLE_PORT", Settings.console_port))

    def console_url(self) -> str:
        return f"http://{self.common.api_listen_addresses}:{self.console_port()}"

    def dapr_http_url(self, app_id: str) -> str:
        """An app's sidecar HTTP API (the first replica's, for a scaled app)."""
        return f"http://{self.common.api_listen_addresses}:{self.app(app_id).dapr_http_port}"

    def env_for(self, app: App) -> dict[str, str]:
        """The app's environment as the Dapr CLI builds it: common env, then the app's own."""
        return {**self.common.env, **app.env}


def port_of(address: str) -> int:
    """The port of a ``host:port`` address such as ``placementHostAddress``."""
    try:
        return int(address.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        raise RunFileError(f"{address!r} is not host:port") from None


def find(start: Path | None = None) -> Path:
    """``$TASKFAN_RUN_FILE``, else the nearest ``dapr.yaml`` in the current folder or above it."""
    if explicit := os.environ.get(RUN_FILE_ENV):
        return Path(explicit)
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / RUN_FILE_NAME).is_file():
            return folder / RUN_FILE_NAME
    raise RunFileError(f"no {RUN_FILE_NAME} in {here} or above it: run from a Taskfan checkout "
                       f"or set {RUN_FILE_ENV}")


def load(path: Path | None = None) -> RunFile:
    path = path or find()
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise RunFileError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise RunFileError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise RunFileError(f"{path} must hold a YAML mapping")
    try:
        run_file = RunFile.model_validate(document)
    except ValidationError as exc:
        raise RunFileError(f"{path}: {describe_validation_error(exc)}") from None
    run_file._path = path
    return run_file
