"""The launcher signals only processes it started: a pid is checked against its kernel start time."""

import subprocess

from taskfan.stack.processes import Process, port_owner, start_time


def test_a_recorded_process_is_stopped():
    sleeper = subprocess.Popen(["sleep", "30"], start_new_session=True)
    process = Process("sleeper", sleeper.pid, "/dev/null", started=start_time(sleeper.pid))
    assert process.alive()
    process.stop()
    assert sleeper.wait(timeout=10) is not None
    assert not process.alive()


def test_a_pid_now_held_by_another_program_is_left_alone():
    other = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        # What a stale stack.json looks like once the pid went to a program the stack never started.
        stale = Process("scorer-0", other.pid, "/dev/null", started=start_time(other.pid) - 1)
        assert not stale.alive()
        stale.stop()
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_the_owner_of_a_busy_port_is_named():
    import os
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        owner = port_owner(server.getsockname()[1])
    assert owner is not None and owner.startswith(f"pid {os.getpid()} (")
