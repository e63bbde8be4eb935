"""When is a process of the stack ready? Health endpoints, name resolution, the workflow worker.

Each check polls with a deadline (``wait_until``) and fails early with the process's last log
lines when the process died.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from taskfan import stack_secrets
from taskfan.contracts import AppId
from taskfan.stack.processes import (
    Process,
    StackError,
    StackState,
    http_json,
    http_status,
    port_open,
    redis_ping,
    tail,
    wait_until,
)
from taskfan.stack.topology import Instance

if TYPE_CHECKING:
    from taskfan.stack.launcher import Stack

WORKER_ADMIT_TIMEOUT_S = 15.0  # a healthy sidecar admits a (re)started worker within a second or two


def alive_check(process: Process) -> Callable[[], str | None]:
    def check() -> str | None:
        if process.alive():
            return None
        return f"{process.name} exited; last log lines:\n{tail(Path(process.log))}"
    return check


def service_ready(stack: Stack, name: str) -> bool:
    """Readiness of Redis and of the control plane (apps and sidecars: ``wait_app``)."""
    if name == "redis":
        return redis_ping(stack.settings.redis_host, stack.settings.redis_port, stack.secrets.redis_password)
    health_port = {"placement": stack.topology.placement_ports[1], "scheduler": stack.topology.scheduler_ports[1],
                   "sentry": stack.topology.sentry_ports[1]}
    return http_status(f"http://127.0.0.1:{health_port[name]}/healthz") == 200


def wait_app(stack: Stack, state: StackState, instance: Instance, bin_dir: Path) -> None:
    """An app and its sidecar: sidecar healthy, registered in name resolution, app port open."""
    app = state.find(instance.label)

    def both_alive() -> str | None:
        return alive_check(app)() or alive_check(state.find(instance.sidecar_label))()

    # daprd answers 204 on /v1.0/healthz once components are loaded and the app channel is up.
    url = f"http://127.0.0.1:{instance.http_port}/v1.0/healthz"
    wait_until(lambda: http_status(url) == 204, f"{instance.label} sidecar", alive=both_alive)
    # Healthy is not enough: a sidecar whose name resolver failed to start cannot be called.
    try:
        wait_until(lambda: registered(stack, instance), f"{instance.label} in name resolution", timeout=15,
                   alive=both_alive)
    except StackError:
        stack.restart_daprd(state, instance, bin_dir, "sidecar not registered in name resolution")
        wait_until(lambda: http_status(url) == 204 and registered(stack, instance),
                   f"{instance.label} sidecar (restarted)", alive=both_alive)
    if instance.app_port:  # daprd stays healthy while its app restarts: ask the app itself
        wait_until(lambda: port_open(instance.app_port), f"{instance.label} app port", alive=both_alive)
    if instance.app_id == AppId.INGEST:
        wait_until(lambda: http_status(f"{stack.ingest_url}/healthz") == 200, "ingest API", alive=both_alive)
    if instance.app_id == AppId.CONSOLE:
        url = stack.topology.console_url(instance)  # a replica serves on ports of its own
        wait_until(lambda: http_status(f"{url}/healthz") == 200, instance.label, alive=both_alive)


def registered(stack: Stack, instance: Instance) -> bool:
    """Whether Dapr's SQLite name resolver lists this instance (app id and internal gRPC port)."""
    try:
        with contextlib.closing(sqlite3.connect(stack.name_resolution_db, timeout=1)) as db:
            rows = db.execute("SELECT address FROM hosts WHERE app_id = ?", (instance.app_id,)).fetchall()
    except sqlite3.Error:
        return False
    return any(address.endswith(f":{instance.internal_grpc_port}") for (address,) in rows)


def _workflow_metadata(stack: Stack, instance: Instance) -> dict[str, object]:
    """A workflow sidecar's view of its workers and of placement (from ``/v1.0/metadata``)."""
    try:
        meta = http_json(f"http://127.0.0.1:{instance.http_port}/v1.0/metadata",
                         headers=stack_secrets.dapr_headers(stack.secrets.sidecar_token(AppId.WORKFLOW)))
    except (OSError, ValueError) as exc:
        return {"error": str(exc)}
    meta = meta if isinstance(meta, dict) else {}
    return {"workflows": meta.get("workflows") or {}, "actorRuntime": meta.get("actorRuntime") or {}}


def wait_workflow_worker(stack: Stack, state: StackState, bin_dir: Path, instance: Instance | None = None) -> None:
    """Wait until a workflow sidecar (``instance``'s, default the first's) has admitted a worker and joined
    placement.

    Dapr 1.18.1 can wedge here: when the last worker dies while a work item waits for
    dispatch, the sidecar's disconnect path halts the workflow actors while holding the lock
    the reconnecting worker needs, and nothing times out (dapr/dapr#10408, fixed after 1.18).
    A sidecar restart is the way out; workflow state and reminders live in Redis and the
    scheduler, so running batches carry on.
    """
    instance = instance or stack.workflow
    last: dict[str, object] = {}

    def worker_connected() -> bool:
        nonlocal last
        last = _workflow_metadata(stack, instance)
        workflows, actors = last.get("workflows") or {}, last.get("actorRuntime") or {}
        return (int(workflows.get("connectedWorkers", 0)) >= 1  # type: ignore[union-attr]
                and actors.get("placement") == "placement: connected")  # type: ignore[union-attr]

    what = "workflow worker connected to its sidecar"
    alive = alive_check(state.find(instance.label))
    try:
        wait_until(worker_connected, what, timeout=WORKER_ADMIT_TIMEOUT_S, alive=alive)
    except StackError:
        if alive() is not None:  # the app died: restarting its sidecar would not help
            raise
        stack.restart_daprd(state, instance, bin_dir,
                            f"no worker admitted after {WORKER_ADMIT_TIMEOUT_S:.0f}s "
                            f"(dapr/dapr#10408); sidecar metadata: {json.dumps(last)}")
        wait_app(stack, state, instance, bin_dir)
        try:
            wait_until(worker_connected, what, alive=alive)
        except StackError as again:
            raise StackError(f"{again}; sidecar metadata: {json.dumps(last)}") from None
