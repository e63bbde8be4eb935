"""Taskfan on a real two-node Kubernetes cluster on this host (part of `make test`; root).

One cluster for the whole session, brought up by the README's own command (`deploy/k8s/up.sh`, which is
`make k8s-up`: the cluster, the images, Dapr's control plane, KEDA, Taskfan's chart); `make test` builds
what it needs first (`make k8s-deps`, once per machine; `make test` in the background, deploy/background-build.sh,
and the fixture below waits for that build). The last test module stops the cluster and
checks the host is as it was. Without root these tests fail, loudly; they are never skipped.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SH = REPO / "deploy" / "k8s" / "cluster.sh"
UP_SH = REPO / "deploy" / "k8s" / "up.sh"
NAMESPACE = "taskfan"
RELEASE = "taskfan"  # up.sh's `helm upgrade --install taskfan`


def named(part: str) -> str:
    """The chart's name for one of its objects: the release's, then the part's (``taskfan-ingest``)."""
    return f"{RELEASE}-{part}"


TASKFAN_IMAGE = "localhost/taskfan/taskfan:0.1.0"
# Slow scoring (100 ms a task, 4 at a time per replica) so that a 2,000-task batch lasts long enough to be
# watched and scaled: the values a user would set to try the autoscaler (README, "Kubernetes"). And shorter waits
# than the defaults where a test waits them out: a liveness probe every 10 s instead of 20 (still three failures
# in a row), replicas removed after 10 s of low backlog instead of 30.
CHART_VALUES = ("services.scorer.scoreDelayMs=100", "services.scorer.concurrency=4",
                "probes.liveness.periodSeconds=10", "services.scorer.autoscaling.scaleDownStabilizationSeconds=10")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "k8s: runs on the real two-node Kubernetes cluster (root)")


def run(*args: str | Path, timeout: float = 120, check: bool = True,
        stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, input=stdin)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} exited {done.returncode}:\n{done.stderr[-4000:]}")
    return done


def wait_for(check: Callable[[], object], what: str, timeout: float = 120, every: float = 1.0) -> object:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


@dataclass(frozen=True)
class Cluster:
    kubeconfig: Path
    bin_dir: Path

    def kubectl(self, *args: str, timeout: float = 120, stdin: str | None = None, check: bool = True) -> str:
        done = run(self.bin_dir / "kubectl", "--kubeconfig", self.kubeconfig, *args,
                   timeout=timeout, stdin=stdin, check=False)
        if check and done.returncode != 0:
            # Each line once: kubectl repeats some (a drain's eviction error, every 5 s until its timeout).
            said = "\n".join(dict.fromkeys(done.stderr.strip().splitlines()))
            raise AssertionError(f"kubectl {' '.join(args)} exited {done.returncode}: {said}")
        return done.stdout

    def diagnostics(self) -> str:
        """What a failing cluster test shows: every pod, the disruption budgets, the nodes' conditions, the latest
        warnings, the cluster's processes and the kubelets' logs. Bounded: an API server that does not answer
        costs seconds, not the run."""
        def get(*args: str) -> str:
            return self.kubectl("--request-timeout=15s", "get", *args, timeout=30, check=False)

        conditions = ("jsonpath={range .items[*]}{.metadata.name} {.spec.unschedulable} "
                      "{range .status.conditions[?(@.status=='True')]}{.type} {end}{'\\n'}{end}")
        warnings = get("events", "-A", "--field-selector", "type=Warning", "--sort-by", ".lastTimestamp", "-o",
                       "custom-columns=AT:.lastTimestamp,OBJECT:.involvedObject.name,REASON:.reason,MESSAGE:.message")
        return "\n".join([
            get("pods", "-A", "-o", "wide"),
            get("pdb", "-A"),
            "nodes (unschedulable, true conditions):\n" + get("nodes", "-o", conditions),
            "latest warnings:\n" + "\n".join(warnings.splitlines()[-25:]),
            "the cluster's processes (cluster.sh status):\n" + run("bash", CLUSTER_SH, "status", timeout=60,
                                                                   check=False).stdout,
            *(f"{log.name}: its starts (==) and latest errors:\n" + "\n".join(_starts_and_errors(log))
              for log in sorted((REPO / ".taskfan" / "k8s" / "logs").glob("kubelet*.log"))),
        ])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    # A failed cluster test shows the cluster as the failure left it (a pod that never started, a node gone).
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when != "call" or not report.failed:
        return
    handle = item.funcargs.get("cluster") or getattr(item.funcargs.get("taskfan"), "cluster", None)  # type: ignore[attr-defined]
    if isinstance(handle, Cluster):
        try:
            shown = handle.diagnostics()
        except Exception as exc:  # noqa: BLE001 - the failure itself is what must be reported
            shown = f"no diagnostics: {exc!r}"
        report.sections.append(("the cluster after the failure", shown))


def _starts_and_errors(log: Path) -> list[str]:
    """A kubelet log's start lines, its last errors (without the one it repeats for every removed container) and
    its last lines (a kubelet that died ends its log with why)."""
    lines = log.read_text(errors="replace").splitlines()
    starts = [line[:120] for line in lines if line.startswith("== ")]
    errors = [line[:300] for line in lines if (line[:1] in ("E", "F") or line.startswith(("panic:", "fatal error:")))
              and "ContainerStatus from runtime" not in line]
    return [*starts, *errors[-10:], "its last lines:", *(line[:300] for line in lines[-5:])]


@pytest.fixture(autouse=True)
def _root() -> None:
    # A cluster on this host needs root: without it these tests fail, loudly; they are never skipped.
    if os.geteuid() != 0:
        pytest.fail("the Kubernetes cluster tests need root")


@pytest.fixture(scope="session")
def cluster(pytestconfig: pytest.Config) -> Iterator[Cluster]:
    """The cluster with Dapr, KEDA and Taskfan ready, as `make k8s-up` leaves it; stopped at the end."""
    took: dict[str, float] = {}
    start = time.monotonic()
    # Each waits for the build `make test` runs in the background (its lock), or builds, once per machine.
    bin_dir = Path(run("bash", REPO / "deploy" / "k8s" / "install-k8s.sh", timeout=3600).stdout.split()[-1])
    took["Kubernetes build"], start = time.monotonic() - start, time.monotonic()
    run("bash", REPO / "deploy" / "images" / "build.sh", timeout=3600)
    took["images"], start = time.monotonic() - start, time.monotonic()
    sets = [arg for value in CHART_VALUES for arg in ("--set", value)]
    try:
        up = run("bash", UP_SH, *sets, timeout=1500, check=False)
        took["up.sh"] = time.monotonic() - start
        # Where the setup's time went, in the run's output (it varies from run to run); up.sh's steps in a file.
        log = REPO / ".taskfan" / "k8s" / "up.log"
        log.parent.mkdir(parents=True, exist_ok=True)  # up.sh may have failed before making it
        log.write_text(up.stderr)
        reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
        capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
        if reporter is not None and capture is not None:
            with capture.global_and_fixture_disabled():  # past pytest's capture of the test's own output
                reporter.write_line("\ncluster setup: " + ", ".join(f"{what} {s:.0f} s" for what, s in took.items())
                                    + " (up.sh's steps: .taskfan/k8s/up.log)")
        handle = Cluster(Path(run("bash", CLUSTER_SH, "kubeconfig").stdout.strip()), bin_dir)
        assert up.returncode == 0, f"deploy/k8s/up.sh failed:\n{up.stderr[-6000:]}\n{handle.diagnostics()}"
        yield handle
    finally:
        run("bash", CLUSTER_SH, "down", timeout=600, check=False)  # idempotent; test_zz_* checks its result
