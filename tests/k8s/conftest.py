"""The local Kubernetes cluster's tests (`make k8s-test`, as root; outside `make test`'s testpaths).

They build what they need once per machine (Kubernetes from the Go module proxy, ~15 min cold; a Debian
rootfs with python3 via mmdebstrap, ~1.5 min) and start and stop a real cluster on this host, so
they run only when asked for, and fail (never skip) when they cannot run.
"""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "k8s: starts a real single-node Kubernetes cluster (make k8s-test, root)")


@pytest.fixture(autouse=True)
def _root() -> None:
    # A cluster on this host needs root: without it these tests fail, loudly; they are never skipped.
    if os.geteuid() != 0:
        pytest.fail("the Kubernetes cluster tests need root (make k8s-test)")
