"""The one launcher of the local stack: Redis, Dapr placement and scheduler, five apps and their sidecars.

``taskfan stack up`` returns only when every process answers its readiness check, and records what it
started in ``<run dir>/stack.json``; ``taskfan stack down`` stops exactly that and checks that no port
is left in use. No sleeps: every wait polls a health endpoint with a deadline.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from taskfan.contracts import AppId
from taskfan.settings import REPO_ROOT, Settings

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 120.0
WORKER_ADMIT_TIMEOUT_S = 45.0  # a healthy sidecar admits a (re)started worker within seconds


class StackError(RuntimeError):
    """The stack could not be started or stopped; the message says what and where to look."""


@dataclass(frozen=True)
class Sidecar:
    """Ports of one app and its daprd. Fixed, documented numbers so curl examples work."""

    app_id: str
    http_port: int
    grpc_port: int
    internal_grpc_port: int
    app_port: int | None
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or self.app_id


# All fixed ports sit below Linux's ephemeral range (32768+), where an outgoing connection could
# already hold one. Sidecar HTTP 35xx, sidecar gRPC 45xx, internal gRPC 55xx, apps 60xx.
INGEST = Sidecar(AppId.INGEST, 3500, 4500, 5500, None)
WORKFLOW = Sidecar(AppId.WORKFLOW, 3501, 4501, 5501, 6001)
VALIDATOR = Sidecar(AppId.VALIDATOR, 3502, 4502, 5502, 6002)
ENRICHER = Sidecar(AppId.ENRICHER, 3503, 4503, 5503, 6003)
PLACEMENT_PORT, PLACEMENT_HEALTH_PORT, PLACEMENT_RAFT_PORT = 6050, 6051, 6052
SCHEDULER_PORT, SCHEDULER_HEALTH_PORT = 6060, 6061
SCHEDULER_ETCD_CLIENT_PORT, SCHEDULER_ETCD_PEER_PORT = 6062, 6063
MAX_SCORERS = 16


def scorer(index: int) -> Sidecar:
    return Sidecar(AppId.SCORER, 3510 + index, 4510 + index, 5510 + index, 6010 + index,
                   name=f"scorer-{index}")


APP_MODULES = {
    AppId.INGEST: "taskfan.ingest.app",
    AppId.WORKFLOW: "taskfan.workflow.app",
    AppId.VALIDATOR: "taskfan.validator.app",
    AppId.ENRICHER: "taskfan.enricher.app",
    AppId.SCORER: "taskfan.scorer.app",
}


@dataclass
class Process:
    name: str
    pid: int
    log: str
    ports: list[int] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class StackState:
    processes: list[Process] = field(default_factory=list)
    scorers: int = 1
    redis_started: bool = False

    @classmethod
    def load(cls, path: Path) -> StackState | None:
        if not path.exists():
            return None
        raw = json.loads(path.read_text())
        return cls(
            processes=[Process(**p) for p in raw["processes"]],
            scorers=raw["scorers"],
            redis_started=raw["redis_started"],
        )

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))


# --- waiting -----------------------------------------------------------------------------------


def wait_until(check: Callable[[], bool], what: str, timeout: float = STARTUP_TIMEOUT_S,
               alive: Callable[[], str | None] | None = None) -> None:
    """Poll ``check`` until it is true; fail early if ``alive`` reports a dead process."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        if check():
            return
        if alive is not None and (problem := alive()):
            raise StackError(f"{what}: {problem}")
        if time.monotonic() > deadline:
            raise StackError(f"{what}: not ready after {timeout:.0f}s")
        time.sleep(delay)  # a poll interval with a deadline, not a wait for "settling"
        delay = min(delay * 1.5, 0.5)


def http_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def http_json(url: str, timeout: float = 5.0) -> object:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


# --- the stack -----------------------------------------------------------------------------------


class Stack:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.run_dir = Path(self.settings.run_dir)
        self.logs_dir = self.run_dir / "logs"
        self.resources_dir = self.run_dir / "resources"
        self.state_path = self.run_dir / "stack.json"

    # Installation is the project's own job: both scripts return at once when already done.
    def dapr_bin(self) -> Path:
        script = REPO_ROOT / "deploy" / "install-dapr.sh"
        result = subprocess.run(["bash", str(script)], stdout=subprocess.PIPE, text=True)
        if result.returncode != 0:
            raise StackError(f"building the Dapr runtime failed (see the lines above); script: {script}")
        return Path(result.stdout.strip().splitlines()[-1])

    def redis_server(self) -> str:
        script = REPO_ROOT / "deploy" / "install-redis.sh"
        result = subprocess.run(["bash", str(script)], stdout=subprocess.PIPE, text=True)
        if result.returncode != 0:
            raise StackError(f"installing redis-server failed (see the lines above); script: {script}")
        return result.stdout.strip().splitlines()[-1]

    def sidecars(self, scorers: int) -> list[Sidecar]:
        return [INGEST, WORKFLOW, VALIDATOR, ENRICHER, *(scorer(i) for i in range(scorers))]

    def running(self) -> StackState | None:
        state = StackState.load(self.state_path)
        if state and any(pid_alive(p.pid) for p in state.processes):
            return state
        return None

    # --- up --------------------------------------------------------------------------------------

    def up(self, scorers: int | None = None, progress: Callable[[str], None] = print) -> StackState:
        scorers = self.settings.scorers if scorers is None else scorers
        if not 1 <= scorers <= MAX_SCORERS:
            raise StackError(f"SCORERS must be between 1 and {MAX_SCORERS}, got {scorers}")
        if self.running():
            raise StackError(f"a stack is already running (state in {self.state_path}); "
                             "run `make down` first")
        bin_dir = self.dapr_bin()
        redis_server = self.redis_server()
        self.check_ports_free(scorers)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.render_resources()

        state = StackState(scorers=scorers)
        try:
            self._start_redis(state, redis_server, progress)
            self._start_control_plane(state, bin_dir, progress)
            first, *rest = self.sidecars(scorers)
            # The first sidecar creates the name-resolution database alone; the rest start together.
            self._start_app(state, first, bin_dir)
            self._wait_app(state, first, bin_dir)
            progress(f"ready: {first.label} (sidecar http {first.http_port})")
            for sidecar in rest:
                self._start_app(state, sidecar, bin_dir)
            for sidecar in rest:
                self._wait_app(state, sidecar, bin_dir)
                progress(f"ready: {sidecar.label} (sidecar http {sidecar.http_port})")
            self._wait_workflow_worker(state, bin_dir)
        except BaseException:
            state.save(self.state_path)
            self.down(progress=lambda _: None)
            raise
        state.save(self.state_path)
        progress(f"stack is up: ingest API {self.settings.ingest_url}, {scorers} scorer(s), "
                 f"logs in {self.logs_dir}")
        return state

    def check_ports_free(self, scorers: int) -> None:
        ports = [PLACEMENT_PORT, PLACEMENT_HEALTH_PORT, PLACEMENT_RAFT_PORT, SCHEDULER_PORT,
                 SCHEDULER_HEALTH_PORT, SCHEDULER_ETCD_CLIENT_PORT, SCHEDULER_ETCD_PEER_PORT,
                 self.settings.ingest_port]
        for s in self.sidecars(scorers):
            ports += [s.http_port, s.grpc_port, s.internal_grpc_port] + ([s.app_port] if s.app_port else [])
        busy = [p for p in ports if port_open(p)]
        if busy:
            raise StackError(f"ports already in use: {busy}; another stack or program holds them "
                             "(`make down` stops a Taskfan stack)")

    def render_resources(self) -> None:
        """Copy components/ and deploy/config.yaml with their {{PLACEHOLDERS}} filled in."""
        values = {
            "REDIS_ADDRESS": self.settings.redis_address,
            "NAME_RESOLUTION_DB": str(self.run_dir / "name-resolution.db"),
        }
        if self.resources_dir.exists():
            shutil.rmtree(self.resources_dir)
        self.resources_dir.mkdir(parents=True)
        for source in sorted((REPO_ROOT / "components").glob("*.yaml")):
            (self.resources_dir / source.name).write_text(fill(source.read_text(), values))
        (self.run_dir / "config.yaml").write_text(fill((REPO_ROOT / "deploy" / "config.yaml").read_text(),
                                                       values))
        (self.run_dir / "name-resolution.db").unlink(missing_ok=True)

    def _spawn(self, state: StackState, name: str, cmd: list[str], env: dict[str, str] | None = None,
               ports: list[int] | None = None) -> Process:
        log_path = self.logs_dir / f"{name}.log"
        with open(log_path, "ab") as out:
            # Own session: the stack outlives `make up`, and `down` can stop each process group.
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env={**os.environ, **(env or {})}, cwd=self.run_dir,
                                    start_new_session=True)
        process = Process(name, proc.pid, str(log_path), ports or [], cmd, env or {})
        state.processes.append(process)
        state.save(self.state_path)
        return process

    def _alive_check(self, process: Process) -> Callable[[], str | None]:
        def check() -> str | None:
            if pid_alive(process.pid):
                return None
            return f"{process.name} exited; last log lines:\n{tail(Path(process.log))}"
        return check

    def _start_redis(self, state: StackState, redis_server: str, progress: Callable[[str], None]) -> None:
        host, port = self.settings.redis_host, self.settings.redis_port
        if port_open(port, host):
            if not redis_ping(host, port):
                raise StackError(f"something that is not Redis listens on {host}:{port} (set REDIS_PORT)")
            progress(f"using the Redis server already running on {host}:{port}")
            return
        data_dir = self.run_dir / "redis"
        data_dir.mkdir(parents=True, exist_ok=True)
        process = self._spawn(state, "redis", [
            redis_server, "--bind", host, "--port", str(port), "--dir", str(data_dir),
            "--appendonly", "yes", "--save", "", "--daemonize", "no",
        ], ports=[port])
        state.redis_started = True
        wait_until(lambda: self._service_ready("redis"), "redis", alive=self._alive_check(process))
        progress(f"ready: redis on {host}:{port}")

    def _start_control_plane(self, state: StackState, bin_dir: Path, progress: Callable[[str], None]) -> None:
        placement = self._spawn(state, "placement", [
            str(bin_dir / "placement"), "--port", str(PLACEMENT_PORT),
            "--healthz-port", str(PLACEMENT_HEALTH_PORT), "--healthz-listen-address", "127.0.0.1",
            "--listen-address", "127.0.0.1",
            "--initial-cluster", f"dapr-placement-0=127.0.0.1:{PLACEMENT_RAFT_PORT}",
            "--enable-metrics=false", "--log-as-json",
        ], ports=[PLACEMENT_PORT, PLACEMENT_HEALTH_PORT])
        scheduler = self._spawn(state, "scheduler", [
            str(bin_dir / "scheduler"), "--port", str(SCHEDULER_PORT),
            "--healthz-port", str(SCHEDULER_HEALTH_PORT), "--healthz-listen-address", "127.0.0.1",
            "--listen-address", "127.0.0.1",
            "--etcd-data-dir", str(self.run_dir / "scheduler"),
            "--etcd-client-port", str(SCHEDULER_ETCD_CLIENT_PORT),
            "--etcd-initial-cluster", f"dapr-scheduler-server-0=http://127.0.0.1:{SCHEDULER_ETCD_PEER_PORT}",
            "--enable-metrics=false", "--log-as-json",
        ], ports=[SCHEDULER_PORT, SCHEDULER_HEALTH_PORT])
        for process in (placement, scheduler):
            wait_until(lambda name=process.name: self._service_ready(name), process.name,
                       alive=self._alive_check(process))
            progress(f"ready: {process.name}")

    def _service_ready(self, name: str) -> bool:
        """Readiness of Redis and of the control plane (apps and sidecars: ``_wait_app``)."""
        if name == "redis":
            return redis_ping(self.settings.redis_host, self.settings.redis_port)
        health_port = {"placement": PLACEMENT_HEALTH_PORT, "scheduler": SCHEDULER_HEALTH_PORT}[name]
        return http_status(f"http://127.0.0.1:{health_port}/healthz") == 200

    def daprd_command(self, bin_dir: Path, sidecar: Sidecar) -> list[str]:
        cmd = [
            str(bin_dir / "daprd"), "--app-id", sidecar.app_id,
            "--dapr-http-port", str(sidecar.http_port), "--dapr-grpc-port", str(sidecar.grpc_port),
            "--dapr-internal-grpc-port", str(sidecar.internal_grpc_port),
            "--dapr-listen-addresses", "127.0.0.1",
            "--resources-path", str(self.resources_dir), "--config", str(self.run_dir / "config.yaml"),
            "--placement-host-address", f"127.0.0.1:{PLACEMENT_PORT}",
            "--scheduler-host-address", f"127.0.0.1:{SCHEDULER_PORT}",
            "--enable-metrics=false", "--log-as-json", "--log-level", self.settings.dapr_log_level,
        ]
        if sidecar.app_port:
            cmd += ["--app-port", str(sidecar.app_port), "--app-protocol", "grpc"]
        return cmd

    def _start_app(self, state: StackState, sidecar: Sidecar, bin_dir: Path) -> None:
        index = sidecar.label.rsplit("-", 1)[-1] if sidecar.name else "0"
        env = {
            "DAPR_HTTP_PORT": str(sidecar.http_port),
            "DAPR_GRPC_PORT": str(sidecar.grpc_port),
            "APP_PORT": str(sidecar.app_port or ""),
            "TASKFAN_REPLICA": index,
            "PYTHONUNBUFFERED": "1",
        }
        app_ports = [sidecar.app_port] if sidecar.app_port else [self.settings.ingest_port]
        self._spawn(state, sidecar.label, [sys.executable, "-m", APP_MODULES[sidecar.app_id]], env,
                    ports=app_ports)
        self._start_daprd(state, sidecar, bin_dir)

    def _start_daprd(self, state: StackState, sidecar: Sidecar, bin_dir: Path) -> Process:
        return self._spawn(state, f"{sidecar.label}-daprd", self.daprd_command(bin_dir, sidecar),
                           {"DAPR_HOST_IP": "127.0.0.1"},
                           ports=[sidecar.http_port, sidecar.grpc_port, sidecar.internal_grpc_port])

    def _find(self, state: StackState, name: str) -> Process:
        return next(p for p in state.processes if p.name == name)

    def _wait_app(self, state: StackState, sidecar: Sidecar, bin_dir: Path) -> None:
        app = self._find(state, sidecar.label)

        def both_alive() -> str | None:
            return self._alive_check(app)() or self._alive_check(self._find(state, f"{sidecar.label}-daprd"))()

        # daprd answers 204 on /v1.0/healthz once components are loaded and the app channel is up.
        url = f"http://127.0.0.1:{sidecar.http_port}/v1.0/healthz"
        wait_until(lambda: http_status(url) == 204, f"{sidecar.label} sidecar", alive=both_alive)
        # Healthy is not enough: a sidecar whose name resolver failed to start cannot be called.
        try:
            wait_until(lambda: self.registered(sidecar), f"{sidecar.label} in name resolution", timeout=15,
                       alive=both_alive)
        except StackError:
            self._restart_daprd(state, sidecar, bin_dir, "sidecar not registered in name resolution")
            wait_until(lambda: http_status(url) == 204 and self.registered(sidecar),
                       f"{sidecar.label} sidecar (restarted)", alive=both_alive)
        if sidecar.app_port:  # daprd stays healthy while its app restarts: ask the app itself
            wait_until(lambda: port_open(sidecar.app_port), f"{sidecar.label} app port", alive=both_alive)
        if sidecar.app_id == AppId.INGEST:
            api = f"{self.settings.ingest_url}/healthz"
            wait_until(lambda: http_status(api) == 200, "ingest API", alive=both_alive)

    def registered(self, sidecar: Sidecar) -> bool:
        """Whether Dapr's SQLite name resolver lists this sidecar (app id and internal gRPC port)."""
        try:
            with contextlib.closing(sqlite3.connect(self.run_dir / "name-resolution.db", timeout=1)) as db:
                rows = db.execute("SELECT address FROM hosts WHERE app_id = ?", (sidecar.app_id,)).fetchall()
        except sqlite3.Error:
            return False
        return any(address.endswith(f":{sidecar.internal_grpc_port}") for (address,) in rows)

    def _restart_daprd(self, state: StackState, sidecar: Sidecar, bin_dir: Path, reason: str) -> None:
        daprd = self._find(state, f"{sidecar.label}-daprd")
        # The message carries the reason: the CLI prints warnings without their extra fields.
        log.warning("restarting a sidecar (%s): %s", sidecar.label, reason,
                    extra={"sidecar": sidecar.label, "log": tail(Path(daprd.log), 3)})
        stop_process(daprd.pid)
        state.processes.remove(daprd)
        self._start_daprd(state, sidecar, bin_dir)

    def _workflow_metadata(self) -> dict[str, object]:
        """The workflow sidecar's view of its workers and of placement (from ``/v1.0/metadata``)."""
        try:
            meta = http_json(f"http://127.0.0.1:{WORKFLOW.http_port}/v1.0/metadata")
        except (OSError, ValueError) as exc:
            return {"error": str(exc)}
        meta = meta if isinstance(meta, dict) else {}
        return {"workflows": meta.get("workflows") or {}, "actorRuntime": meta.get("actorRuntime") or {}}

    def _wait_workflow_worker(self, state: StackState, bin_dir: Path) -> None:
        """Wait until the workflow sidecar has admitted a worker and joined placement.

        Dapr 1.18.1 can wedge here: when the last worker dies while a work item waits for
        dispatch, the sidecar's disconnect path halts the workflow actors while holding the lock
        the reconnecting worker needs, and nothing times out (dapr/dapr#10408, fixed after 1.18).
        A sidecar restart is the way out; workflow state and reminders live in Redis and the
        scheduler, so running batches carry on.
        """
        last: dict[str, object] = {}

        def worker_connected() -> bool:
            nonlocal last
            last = self._workflow_metadata()
            workflows, actors = last.get("workflows") or {}, last.get("actorRuntime") or {}
            return (int(workflows.get("connectedWorkers", 0)) >= 1  # type: ignore[union-attr]
                    and actors.get("placement") == "placement: connected")  # type: ignore[union-attr]

        what = "workflow worker connected to its sidecar"
        alive = self._alive_check(self._find(state, "workflow"))
        try:
            wait_until(worker_connected, what, timeout=WORKER_ADMIT_TIMEOUT_S, alive=alive)
        except StackError:
            if alive() is not None:  # the app died: restarting its sidecar would not help
                raise
            self._restart_daprd(state, WORKFLOW, bin_dir,
                                f"no worker admitted after {WORKER_ADMIT_TIMEOUT_S:.0f}s "
                                f"(dapr/dapr#10408); sidecar metadata: {json.dumps(last)}")
            self._wait_app(state, WORKFLOW, bin_dir)
            try:
                wait_until(worker_connected, what, alive=alive)
            except StackError as again:
                raise StackError(f"{again}; sidecar metadata: {json.dumps(last)}") from None

    # --- down ------------------------------------------------------------------------------------

    def down(self, progress: Callable[[str], None] = print) -> None:
        state = StackState.load(self.state_path)
        if state is None:
            progress("no stack is running")
            return
        # Apps first (so no app talks to a stopped sidecar), then sidecars, control plane, Redis.
        sidecar_names = {f"{s.label}-daprd" for s in self.sidecars(state.scorers)}
        apps = [p for p in state.processes if f"{p.name}-daprd" in sidecar_names]
        for process in [*reversed(apps), *(p for p in reversed(state.processes) if p not in apps)]:
            stop_process(process.pid)
        busy = [p for process in state.processes for p in process.ports if port_open(p)]
        if busy:
            raise StackError(f"ports still in use after stopping the stack: {busy}")
        self.state_path.unlink(missing_ok=True)
        progress(f"stack stopped ({len(state.processes)} processes)")

    def start_sidecar(self, app_id: str) -> tuple[Sidecar, subprocess.Popen[bytes]]:
        """A sidecar with no app port, on free ports, joined to the running stack's control plane.

        For a streaming subscriber (``outcomes --follow``: the app id is its consumer group) or a
        workflow worker of a benchmark.
        """
        if self.running() is None:
            raise StackError("no stack is running; start it with `make up`")
        bin_dir = self.dapr_bin()
        sidecar = Sidecar(app_id, *free_ports(3), None, name=f"sidecar-{app_id}")
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        out = open(self.logs_dir / f"{sidecar.label}.log", "ab")  # noqa: SIM115 - lives with the process
        proc = subprocess.Popen(self.daprd_command(bin_dir, sidecar), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env={**os.environ, "DAPR_HOST_IP": "127.0.0.1"},
                                cwd=self.run_dir, start_new_session=True)
        url = f"http://127.0.0.1:{sidecar.http_port}/v1.0/healthz"
        try:
            wait_until(lambda: http_status(url) == 204, f"{sidecar.label} sidecar",
                       alive=lambda: None if proc.poll() is None else
                       f"daprd exited:\n{tail(self.logs_dir / f'{sidecar.label}.log')}")
        except BaseException:
            self.stop_sidecar(proc)
            raise
        return sidecar, proc

    def stop_sidecar(self, proc: subprocess.Popen[bytes]) -> None:
        stop_process(proc.pid)
        proc.wait()

    def restart(self, name: str) -> None:
        """SIGKILL one process of the stack and start it again: a crash and recovery drill.

        ``name`` is a process name as ``stack status`` shows it: ``workflow``, ``scorer-0``,
        ``workflow-daprd``, ``redis``, ``scheduler``, ...
        """
        state = self.running()
        if state is None:
            raise StackError("no stack is running")
        old = next((p for p in state.processes if p.name == name), None)
        if old is None:
            raise StackError(f"no process named {name!r}; choose from {[p.name for p in state.processes]}")
        bin_dir = self.dapr_bin()
        os.killpg(old.pid, signal.SIGKILL)  # no graceful shutdown: this is the crash
        # Its ports too: a forked child (Redis rewriting its AOF) can hold them a moment longer.
        wait_until(lambda: not pid_alive(old.pid) and not any(port_open(p) for p in old.ports),
                   f"{name} to exit", timeout=10)
        state.processes.remove(old)
        sidecar = next((s for s in self.sidecars(state.scorers) if name in (s.label, f"{s.label}-daprd")), None)
        if sidecar is None:  # Redis or the control plane: the same command again
            process = self._spawn(state, name, old.cmd, old.env, ports=old.ports)
            wait_until(lambda: self._service_ready(name), name, alive=self._alive_check(process))
        else:
            if name == sidecar.label:
                self._spawn(state, name, old.cmd, old.env, ports=old.ports)
            else:
                self._start_daprd(state, sidecar, bin_dir)
            self._wait_app(state, sidecar, bin_dir)
        if sidecar is None or sidecar.app_id == AppId.WORKFLOW:
            self._wait_workflow_worker(state, bin_dir)
        state.save(self.state_path)

    def status(self) -> list[tuple[str, int, bool]]:
        state = StackState.load(self.state_path)
        return [(p.name, p.pid, pid_alive(p.pid)) for p in (state.processes if state else [])]


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def fill(template: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        template = template.replace("{{" + key + "}}", value)
    return template


def redis_ping(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # reap our own exited children
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie that is not our child still answers kill(0)
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def stop_process(pid: int, grace: float = 10.0) -> None:
    """SIGTERM the process group, wait, then SIGKILL what is left."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            time.sleep(0.05)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def iter_log_records(path: Path) -> Iterator[dict[str, object]]:
    """Structured log lines of one process (non-JSON lines are skipped)."""
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue

