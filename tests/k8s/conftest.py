"""The local Kubernetes cluster's tests run only when asked for: TASKFAN_K8S_TESTS=1, as root.

They build what they need once per machine (Kubernetes from the Go module proxy, ~15 min cold; a Debian
rootfs with python3 via mmdebstrap, ~1.5 min) and start and stop a real cluster on this host, so
`make test` skips them unless the variable is set.
"""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "k8s: starts a real single-node Kubernetes cluster (TASKFAN_K8S_TESTS=1, root)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = None
    if os.environ.get("TASKFAN_K8S_TESTS") != "1":
        reason = "the Kubernetes cluster tests run with TASKFAN_K8S_TESTS=1 (make k8s-test)"
    elif os.geteuid() != 0:
        reason = "the Kubernetes cluster needs root"
    for item in items:
        if "k8s" in item.keywords and reason:
            item.add_marker(pytest.mark.skip(reason=reason))
