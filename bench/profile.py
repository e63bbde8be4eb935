"""Where the CPU goes inside the workflow app and its sidecar: sampled profiles, recorded over the same seconds.

The workflow app (Python) is sampled from outside by py-spy (it reads the process's memory: no code in the app,
no restart; root, or ptrace permission, is needed), only the thread that holds the GIL: the app's ~20 threads
wait most of the time, and py-spy counts a waiting thread as busy (measured: 23 s of "samples" in 4 s during
which the process spent 1.4 s of CPU; its GIL holder's samples came to 1.3 s). Its sidecar (Go) records its
own profile: daprd serves Go's pprof endpoint when the stack runs with SIDECAR_PROFILING=on, and
``/debug/pprof/profile?seconds=N`` answers after N seconds with the profile. Four files, in the results directory:

    profile-workflow.speedscope.json   every sample of the workflow app (open it at https://www.speedscope.app)
    profile-workflow.txt               its functions by own and by total samples, and its files by own samples
    profile-daprd-workflow.pb.gz       the sidecar's CPU profile (``go tool pprof -http=: FILE`` browses it)
    profile-daprd-workflow.txt         ``go tool pprof -top``: its functions by own (flat) and by total (cum) time,
                                       and its packages by own time
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from bench.cpu import cpu_seconds

SAMPLE_RATE_HZ = 100  # py-spy's default, and the rate Go's profiler samples at
TOP_ROWS = 25
# The Python frames of a path are named from where they live: a module's path below site-packages, the
# standard library's below pythonX.Y, this checkout's below the checkout.
STDLIB = re.compile(r"/python3\.\d+/")


def py_spy() -> str:
    """The py-spy of the virtualenv this runs in (the `bench` extra pins it), else one on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.is_file() else shutil.which("py-spy")
    if not found:
        raise RuntimeError("py-spy is missing: `make venv` installs it with the bench extra (pyproject.toml)")
    return found


def go() -> str:
    found = shutil.which("go") or ("/usr/local/go/bin/go" if os.access("/usr/local/go/bin/go", os.X_OK) else None)
    if not found:
        raise RuntimeError("go is missing: the daprd profile is summarized by `go tool pprof` (README, Requirements)")
    return found


def short_path(path: str, root: Path) -> str:
    """A frame's file as a reader looks for it: relative to the checkout, to site-packages or to the stdlib."""
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1]
    with_root = f"{root}/"
    if path.startswith(with_root):
        return path[len(with_root):]
    match = STDLIB.search(path)
    return path[match.end():] if match else path


def python_summary(speedscope: dict[str, Any], root: Path, rows: int = TOP_ROWS, cpu_s: float | None = None) -> str:
    """The workflow app's functions ranked by own samples (the function was running) and by total samples (it
    was on the stack), and its files by own samples, from a py-spy speedscope recording (``--gil``); ``cpu_s``,
    the CPU the process spent meanwhile, is set beside the samples' total."""
    frames = speedscope["shared"]["frames"]
    # A function is its name and file: py-spy gives each line its own frame, which would split a function up.
    function_of = [f"{frame['name']}  ({short_path(frame['file'], root)})" for frame in frames]
    file_of = [short_path(frame["file"], root) for frame in frames]
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    own_by_file: Counter[str] = Counter()
    samples = 0
    for profile in speedscope["profiles"]:
        for stack in profile["samples"]:  # frame indices, the outermost first
            if not stack:
                continue
            samples += 1
            own[function_of[stack[-1]]] += 1
            own_by_file[file_of[stack[-1]]] += 1
            total.update({function_of[index] for index in stack})

    def table(title: str, counts: Counter[str]) -> list[str]:
        lines = [title, f"{'samples':>8} {'share':>7}  what"]
        lines += [f"{count:>8} {100 * count / max(1, samples):>6.1f}%  {name}"
                  for name, count in sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:rows]]
        return [*lines, ""]

    spent = "" if cpu_s is None else (f"; the process spent {cpu_s:.1f} s of CPU meanwhile (its counters), the "
                                      "rest outside the GIL: gRPC's C core, TLS, the kernel")
    head = [f"py-spy --gil: {samples} samples of the thread running Python at {SAMPLE_RATE_HZ} Hz "
            f"({samples / SAMPLE_RATE_HZ:.1f} s){spent}", ""]
    return "\n".join([*head, *table("functions by own samples (running in the function itself)", own),
                      *table("functions by total samples (the function or what it called)", total),
                      *table("files by own samples", own_by_file)])


def go_package(function: str) -> str:
    """The package of a function as pprof names it: ``github.com/dapr/dapr/pkg/api/grpc.(*server).Call`` ->
    ``github.com/dapr/dapr/pkg/api/grpc``; ``runtime.futex`` -> ``runtime``."""
    slash = function.rfind("/", 0, function.find("(") if "(" in function else len(function))
    dot = function.find(".", slash + 1)
    return function[:dot] if dot > 0 else function


def go_packages(top: str, rows: int = TOP_ROWS) -> str:
    """Own (flat) time summed by package, from ``go tool pprof -top`` of every function."""
    shares: Counter[str] = Counter()
    for line in top.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[1].endswith("%") and fields[4].endswith("%"):
            shares[go_package(fields[5].removesuffix(" (inline)"))] += float(fields[1].removesuffix("%"))
    lines = ["packages by own (flat) time", f"{'share':>7}  package"]
    lines += [f"{share:>6.1f}%  {package}"
              for package, share in sorted(shares.items(), key=lambda item: (-item[1], item[0]))[:rows] if share]
    return "\n".join(lines) + "\n"


def go_summary(profile: Path, rows: int = TOP_ROWS) -> str:
    """``go tool pprof -top`` of a CPU profile: by own (flat) time, by total (cum) time, and own time by package."""

    def pprof(*options: str) -> str:
        done = subprocess.run([go(), "tool", "pprof", "-top", *options, str(profile)],
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "GOTOOLCHAIN": "local", "PPROF_TMPDIR": str(profile.parent)})
        if done.returncode != 0:
            raise RuntimeError(f"go tool pprof failed on {profile}: {done.stderr.strip()[-1000:]}")
        return done.stdout

    every = pprof("-nodecount=1000000", "-nodefraction=0")
    return "\n".join([f"by own (flat) time\n{pprof(f'-nodecount={rows}')}",
                      f"by total (cum) time\n{pprof('-cum', f'-nodecount={rows}')}", go_packages(every, rows)])


@dataclass
class CpuProfiles:
    """py-spy on the workflow app and Go's profiler in its sidecar, both for ``seconds``, from ``__enter__``.

    The body runs the work for those seconds; ``__exit__`` waits for both recordings and writes the four files
    (``written``). Sampling costs the profiled process some CPU, so no timed figure is taken meanwhile.
    """

    app_pid: int
    pprof_url: str  # the sidecar's pprof endpoint, http://127.0.0.1:PORT
    seconds: int
    out: Path
    root: Path  # the checkout: the app's frames are named relative to it
    name: str = "workflow"
    written: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.speedscope = self.out / f"profile-{self.name}.speedscope.json"
        self.go_profile = self.out / f"profile-daprd-{self.name}.pb.gz"
        self._py_spy: subprocess.Popen[str] | None = None
        self._fetch: threading.Thread | None = None
        self._fetch_error: Exception | None = None
        self._cpu_before = 0.0

    def __enter__(self) -> CpuProfiles:
        self.out.mkdir(parents=True, exist_ok=True)
        command = py_spy()
        self._cpu_before = cpu_seconds(self.app_pid)
        self._fetch = threading.Thread(target=self._fetch_go_profile, name="pprof", daemon=True)
        self._fetch.start()
        self._py_spy = subprocess.Popen(
            [command, "record", "--pid", str(self.app_pid), "--duration", str(self.seconds),
             "--rate", str(SAMPLE_RATE_HZ), "--gil", "--format", "speedscope", "--output", str(self.speedscope)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        return self

    def _fetch_go_profile(self) -> None:
        try:
            answer = httpx.get(f"{self.pprof_url}/debug/pprof/profile", params={"seconds": self.seconds},
                               timeout=self.seconds + 60)
            answer.raise_for_status()
            self.go_profile.write_bytes(answer.content)
        except Exception as exc:  # noqa: BLE001 - reported by __exit__, in the bench's thread
            self._fetch_error = exc

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        assert self._py_spy is not None and self._fetch is not None
        if kind is not None:
            self._py_spy.terminate()
        try:
            output, _ = self._py_spy.communicate(timeout=self.seconds + 60)
        except subprocess.TimeoutExpired:
            self._py_spy.kill()
            output, _ = self._py_spy.communicate()
        cpu_s = cpu_seconds(self.app_pid) - self._cpu_before
        self._fetch.join(timeout=self.seconds + 90)
        if kind is not None:
            return
        if self._py_spy.returncode != 0 or not self.speedscope.is_file():
            raise RuntimeError(f"py-spy recorded nothing (exit {self._py_spy.returncode}): {output.strip()[-1000:]}")
        if self._fetch_error is not None or not self.go_profile.is_file():
            raise RuntimeError(f"daprd's CPU profile could not be fetched from {self.pprof_url}: {self._fetch_error!r}")
        python_text = self.out / f"profile-{self.name}.txt"
        python_text.write_text(python_summary(json.loads(self.speedscope.read_text()), self.root, cpu_s=cpu_s))
        go_text = self.out / f"profile-daprd-{self.name}.txt"
        go_text.write_text(go_summary(self.go_profile))
        self.written = [python_text, self.speedscope, go_text, self.go_profile]
