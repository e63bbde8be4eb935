"""Processes of the local stack and the ways to wait for them: poll with a deadline, never sleep."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from taskfan.stack.private_files import write_private

STARTUP_TIMEOUT_S = 120.0


class StackError(RuntimeError):
    """The stack could not be started or stopped; the message says what and where to look."""


@dataclass
class Process:
    name: str
    pid: int
    log: str
    ports: list[int] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = ""
    # The kernel's start time of the process: a pid reused by another program after ours exited
    # has another, so the stack never signals a process it did not start.
    started: int = 0

    def alive(self) -> bool:
        return pid_alive(self.pid) and start_time(self.pid) == self.started

    def stop(self) -> None:
        if self.alive():
            stop_process(self.pid)


@dataclass
class StackState:
    """What ``stack up`` started, saved in ``<run dir>/stack.json`` for ``down``, ``status`` and ``restart``."""

    processes: list[Process] = field(default_factory=list)
    scorers: int = 1
    redis_started: bool = False
    replicas: dict[str, int] = field(default_factory=dict)  # of other step apps scaled (`scale --app`); absent: 1

    @classmethod
    def load(cls, path: Path) -> StackState | None:
        if not path.exists():
            return None
        raw = json.loads(path.read_text())
        return cls(
            processes=[Process(**p) for p in raw["processes"]],
            scorers=raw["scorers"],
            redis_started=raw["redis_started"],
            replicas=raw.get("replicas", {}),  # a stack started before replicas of other apps: 1 each
        )

    def save(self, path: Path) -> None:
        # Owner-only like all of the run folder: it names every process, port and log.
        write_private(path, json.dumps(asdict(self), indent=2))

    def find(self, name: str) -> Process:
        return next(p for p in self.processes if p.name == name)


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


def http_json(url: str, timeout: float = 5.0, headers: dict[str, str] | None = None) -> object:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def port_owner(port: int) -> str | None:
    """``pid N (command)`` of the process listening on a TCP port, from /proc; None if not found."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            for fd in fd_dir.iterdir():
                if os.readlink(fd) in inodes:
                    pid = fd_dir.parent.name
                    command = (fd_dir.parent / "comm").read_text().strip()
                    return f"pid {pid} ({command})"
        except OSError:
            continue
    return None


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def redis_ping(host: str, port: int, password: str = "") -> bool:
    """Whether a Redis server answers on host:port, with ``password`` when given."""
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            if password:
                secret = password.encode()
                sock.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(secret), secret))
                if not sock.recv(64).startswith(b"+OK"):
                    return False
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_time(pid: int) -> int:
    """Field 22 of /proc/<pid>/stat (clock ticks after boot); 0 when there is no such process."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0


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
