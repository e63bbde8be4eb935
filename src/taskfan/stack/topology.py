"""Which processes the local stack runs and on which ports, derived from the run file (``dapr.yaml``).

The run file names every app, its command and its ports. What the format cannot say is decided
here, in code: scorer replicas (replica ``i`` adds ``i`` to each of the scorer's ports), the other apps'
replicas, the workflow app's and the step apps' (replica ``i`` adds ``100 i`` to its ports and to its
``*_PORT`` settings: the apps' ports are one apart), the
control plane's side ports (health, raft, etcd: the next ports after placement's and scheduler's
own), and that ``python`` in a command means the interpreter running the launcher.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from taskfan.contracts import AppId
from taskfan.runfile import App, RunFile, port_of

MAX_SCORERS = 16
# Replicas of an app other than the scorer (`stack scale --workflows N`, `--app validator --replicas N`):
# replica i adds i * REPLICA_PORT_STRIDE to its ports. At most MAX_REPLICAS, so that no replica's internal
# gRPC port (5501 + 100 i) reaches the first replica's app ports (6001...).
REPLICA_PORT_STRIDE = 100
MAX_REPLICAS = 4
SIDECAR_METRICS_OFFSET = 6000  # a sidecar's metrics port: its HTTP port + this (3501 -> 9501)
# A sidecar's pprof port when SIDECAR_PROFILING=on: its HTTP port + this (3501 -> 8501; clear of the app, web and
# metrics ports of every replica).
SIDECAR_PROFILE_OFFSET = 5000


@dataclass(frozen=True)
class Instance:
    """One app process and its sidecar: the ports, command and environment they start with."""

    app_id: str
    http_port: int
    grpc_port: int
    internal_grpc_port: int
    app_port: int | None
    command: tuple[str, ...] = ()
    app_dir: Path = Path(".")
    app_protocol: str = "grpc"
    env: dict[str, str] = field(default_factory=dict)
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or self.app_id

    @property
    def sidecar_label(self) -> str:
        return f"{self.label}-daprd"

    # The sidecar's own Prometheus metrics (Dapr's); None: none (a sidecar started on free ports).
    metrics_port: int | None = None
    # Go's pprof endpoint of the sidecar, served only when the stack's SIDECAR_PROFILING is on; None: never.
    profile_port: int | None = None

    @property
    def ports(self) -> list[int]:
        return [self.http_port, self.grpc_port, self.internal_grpc_port,
                *([self.metrics_port] if self.metrics_port else [])]


@dataclass(frozen=True)
class Topology:
    run_file: RunFile

    @property
    def placement_ports(self) -> tuple[int, int, int]:
        """(gRPC, health, raft)."""
        port = port_of(self.run_file.common.placement_host_address)
        return port, port + 1, port + 2

    @property
    def scheduler_ports(self) -> tuple[int, int, int, int]:
        """(gRPC, health, etcd client, etcd peer)."""
        port = port_of(self.run_file.common.scheduler_host_address)
        return port, port + 1, port + 2, port + 3

    @property
    def sentry_ports(self) -> tuple[int, int]:
        """(gRPC, health): Dapr Sentry, which the run file format cannot name; beside placement."""
        port = port_of(self.run_file.common.placement_host_address) + 20
        return port, port + 1

    @property
    def ingest_port(self) -> int:
        return self.run_file.ingest_port()

    def console_url(self, instance: Instance) -> str:
        """Where a console replica serves (``CONSOLE_PORT`` of its environment: replica i's is 100 i above)."""
        port = instance.env.get("CONSOLE_PORT") or str(self.run_file.console_port())
        return f"http://{self.run_file.common.api_listen_addresses}:{port}"

    def instance_web_ports(self, instance: Instance) -> list[int]:
        """The web ports of one process: a console replica's is its own ``CONSOLE_PORT``."""
        if instance.app_id == AppId.CONSOLE and instance.env.get("CONSOLE_PORT"):
            return [int(instance.env["CONSOLE_PORT"])]
        return self.web_ports(instance.app_id)

    def web_ports(self, app_id: str) -> list[int]:
        """The HTTP ports an app serves to people and clients, not to its sidecar (ingest's API, the console)."""
        return {AppId.INGEST: [self.ingest_port], AppId.CONSOLE: [self.run_file.console_port()]}.get(app_id, [])

    def instance(self, app_id: str, replica: int | None = None) -> Instance:
        """The app's process; ``replica`` numbers a scaled app's copies: the scorer's from 0 (``scorer-0``), another
        app's from 1 (``workflow-1``, ``validator-1``; its first is ``workflow``, as in a stack never scaled)."""
        app = self.run_file.app(app_id)
        offset = (replica or 0) * (1 if app_id == AppId.SCORER else REPLICA_PORT_STRIDE)
        if app_id != AppId.SCORER and not replica:
            replica = None
        return Instance(
            app_id=app.app_id,
            http_port=app.dapr_http_port + offset,
            grpc_port=app.dapr_grpc_port + offset,
            internal_grpc_port=app.dapr_internal_grpc_port + offset,
            app_port=app.app_port + offset if app.app_port else None,
            command=self._command(app),
            app_dir=self.run_file.resolve(app.app_dir_path),
            app_protocol=app.app_protocol or self.run_file.common.app_protocol,
            env={key: str(int(value) + offset) if key.endswith("_PORT") and offset else value
                 for key, value in self.run_file.env_for(app).items()},
            name=f"{app.app_id}-{replica}" if replica is not None else "",
            metrics_port=app.dapr_http_port + offset + SIDECAR_METRICS_OFFSET,
            profile_port=app.dapr_http_port + offset + SIDECAR_PROFILE_OFFSET,
        )

    def instances(self, scorers: int, replicas: Mapping[str, int] | None = None) -> list[Instance]:
        """Every app of the run file, the scorer as ``scorers`` replicas, another app as ``replicas[app_id]`` (1 if
        not named), in the file's order."""
        result = []
        for app in self.run_file.apps:
            count = scorers if app.app_id == AppId.SCORER else (replicas or {}).get(app.app_id, 1)
            result += [self.instance(app.app_id, i) for i in range(count)]
        return result

    @staticmethod
    def _command(app: App) -> tuple[str, ...]:
        first, *rest = app.command
        return (sys.executable if first in ("python", "python3") else first, *rest)
