"""Last of the cluster tests (named to run last): `cluster.sh down` stops everything and checks the host."""

from __future__ import annotations

import pytest

from .conftest import CLUSTER_SH, Cluster, run

pytestmark = pytest.mark.k8s


def test_down_leaves_the_host_as_before(cluster: Cluster) -> None:
    # cluster.sh down fails unless iptables, links, mounts, cgroups and sysctls are as before `up`.
    down = run("bash", CLUSTER_SH, "down", timeout=600, check=False)
    assert down.returncode == 0, f"cluster.sh down:\n{down.stderr[-4000:]}"
