"""Runs last (file order): `make down` stops every process of the stack and frees every port."""

import subprocess

import pytest

from taskfan.stack import StackState, pid_alive, port_open

pytestmark = pytest.mark.e2e


def test_make_down_leaves_nothing_running(stack):
    state = StackState.load(stack.state_path)
    assert state is not None and len(state.processes) >= 12  # redis, control plane, 6 apps + sidecars
    done = subprocess.run(["make", "down"], cwd=stack.root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [p.name for p in state.processes if pid_alive(p.pid)] == []
    assert [port for p in state.processes for port in p.ports if port_open(port)] == []
    assert not stack.state_path.exists()
