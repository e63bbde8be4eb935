"""The crash drills: SIGKILL one process of a running stack, or an app with its sidecar, and start it again, ready;
and the rolling restart: every app and its sidecar stopped gracefully and started again, one after another."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from taskfan.contracts import AppId
from taskfan.stack import logkeeper, readiness
from taskfan.stack.launcher import Progress, Stack
from taskfan.stack.processes import StackError, pid_alive, port_open, stop_process, wait_until


def restart(stack: Stack, name: str, env: dict[str, str] | None = None, command: list[str] | None = None,
            while_down: Callable[[], None] | None = None) -> None:
    """``name`` is a process name as ``stack status`` shows it: ``workflow``, ``scorer-0``,
    ``workflow-daprd``, ``redis``, ``scheduler``, ... ``env``: the environment the launcher gives it from now
    on (``Process.env``; not for a sidecar), e.g. other settings for a test; ``command``: an app's command
    from now on (a new version of its code); None: as it was. ``while_down``: done once it is dead, before it
    starts again (what happens while a process is away).
    """
    state = stack.running()
    if state is None:
        raise StackError("no stack is running")
    old = next((p for p in state.processes if p.name == name), None)
    if old is None:
        raise StackError(f"no process named {name!r}; choose from {[p.name for p in state.processes]}")
    if not old.alive():
        raise StackError(f"{name} (pid {old.pid}) is not running; `make down` and `make up` start afresh")
    bin_dir = stack.dapr_bin()
    os.killpg(old.pid, signal.SIGKILL)  # no graceful shutdown: this is the crash
    # Its ports too: a forked child (Redis rewriting its AOF) can hold them a moment longer.
    wait_until(lambda: not pid_alive(old.pid) and not any(port_open(p) for p in old.ports),
               f"{name} to exit", timeout=10)
    state.processes.remove(old)
    if while_down is not None:
        while_down()
    instance = next((i for i in stack.topology.instances(state.scorers, state.replicas)
                     if name in (i.label, i.sidecar_label)), None)
    if instance is None:  # Redis or the control plane: the same command again
        process = stack.spawn(state, name, old.cmd, old.env if env is None else env, ports=old.ports,
                              cwd=Path(old.cwd) if old.cwd else None)
        if name != logkeeper.NAME:  # it has nothing to be ready for
            wait_until(lambda: readiness.service_ready(stack, name), name, alive=readiness.alive_check(process))
    else:
        if name == instance.label:
            stack.spawn(state, name, command or old.cmd, old.env if env is None else env, ports=old.ports,
                        cwd=instance.app_dir)
        else:
            stack.start_daprd(state, instance, bin_dir)
        readiness.wait_app(stack, state, instance, bin_dir)
    if instance is not None and instance.app_id == AppId.WORKFLOW:
        readiness.wait_workflow_worker(stack, state, bin_dir, instance)
    elif instance is None:
        for workflow in stack.workflows(state):
            readiness.wait_workflow_worker(stack, state, bin_dir, workflow)
    state.save(stack.state_path)


def crash_replica(stack: Stack, label: str, while_down: Callable[[], None] | None = None) -> None:
    """SIGKILL an app process and its sidecar together (a pod gone), do ``while_down``, start both again, ready.
    ``label``: the app's process name (``console``, ``console-1``)."""
    state = stack.running()
    if state is None:
        raise StackError("no stack is running")
    instance = next((i for i in stack.topology.instances(state.scorers, state.replicas) if i.label == label), None)
    if instance is None:
        raise StackError(f"no app process named {label!r}")
    app, sidecar = state.find(instance.label), state.find(instance.sidecar_label)
    for process in (app, sidecar):
        os.killpg(process.pid, signal.SIGKILL)
    for process in (app, sidecar):
        wait_until(lambda process=process: not pid_alive(process.pid) and not any(port_open(p) for p in process.ports),
                   f"{process.name} to exit", timeout=10)
        state.processes.remove(process)
    if while_down is not None:
        while_down()
    bin_dir = stack.dapr_bin()
    stack.spawn(state, app.name, app.cmd, app.env, ports=app.ports, cwd=instance.app_dir)
    stack.start_daprd(state, instance, bin_dir)
    readiness.wait_app(stack, state, instance, bin_dir)
    if instance.app_id == AppId.WORKFLOW:
        readiness.wait_workflow_worker(stack, state, bin_dir, instance)
    state.save(stack.state_path)


def roll(stack: Stack, progress: Progress = print) -> None:
    """Restart every app of the running stack with its sidecar, one after another, as a rolling upgrade does.

    The sidecar gets SIGTERM first: it stops taking calls, finishes those in progress and leaves name
    resolution; then its app (which drains too). Both start again with the command and environment they had,
    and the next app goes once this one is ready. Redis and Dapr's control plane stay up.
    """
    state = stack.running()
    if state is None:
        raise StackError("no stack is running")
    bin_dir = stack.dapr_bin()
    for instance in stack.topology.instances(state.scorers, state.replicas):
        started = time.monotonic()
        app = state.find(instance.label)
        for process in (state.find(instance.sidecar_label), app):
            stop_process(process.pid, grace=stack.graceful_shutdown_s + 5)
            state.processes.remove(process)
        stack.spawn(state, app.name, app.cmd, app.env, ports=app.ports, cwd=Path(app.cwd) if app.cwd else None)
        stack.start_daprd(state, instance, bin_dir)
        readiness.wait_app(stack, state, instance, bin_dir)
        if instance.app_id == AppId.WORKFLOW:
            readiness.wait_workflow_worker(stack, state, bin_dir, instance)
        state.save(stack.state_path)
        progress(f"restarted: {instance.label} and its sidecar ({time.monotonic() - started:.1f}s)")
