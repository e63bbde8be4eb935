"""The chart's startup and liveness probe (taskfan.probe) against a real gRPC app server (taskfan.dapr_app)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from taskfan.dapr_app import create_app
from taskfan.probe import check

TOKEN = "app-token-of-the-sidecar"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served() -> Iterator[tuple[int, threading.Event]]:
    """An app with one thread and a method that holds it until the event is set."""
    app = create_app(threads=1, app_token=TOKEN)
    release = threading.Event()

    @app.method("hold")
    def hold(request: object) -> bytes:
        release.wait(30)
        return b"{}"

    port = free_port()
    app._server.add_insecure_port(f"127.0.0.1:{port}")
    app._server.start()
    yield port, release
    release.set()
    app._server.stop(0)


def test_a_serving_app_passes_and_a_wrong_token_or_no_app_fails(served: tuple[int, threading.Event]) -> None:
    port, _ = served
    assert check(port, TOKEN, 3) is None
    assert "UNAUTHENTICATED" in (check(port, "not-the-token", 3) or "")
    assert "UNAVAILABLE" in (check(free_port(), TOKEN, 3) or "")


def test_an_app_whose_threads_are_all_stuck_fails_within_the_timeout(served: tuple[int, threading.Event]) -> None:
    port, release = served
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stuck = channel.unary_unary("/dapr.proto.runtime.v1.AppCallback/OnInvoke",
                                    request_serializer=bytes, response_deserializer=bytes)
        # An InvokeRequest for method "hold" (field 1, a string): the one thread waits in it.
        pending = stuck.future(b"\n\x04hold", metadata=[("dapr-api-token", TOKEN)], timeout=30)
        time.sleep(0.3)
        started = time.monotonic()
        assert "DEADLINE_EXCEEDED" in (check(port, TOKEN, 1) or "")
        assert time.monotonic() - started < 2.5
        release.set()
        pending.result()
    assert check(port, TOKEN, 3) is None  # healthy again once the thread is free


def test_the_command_line_reads_the_port_and_token_from_the_apps_environment(
        served: tuple[int, threading.Event]) -> None:
    port, _ = served
    run = [sys.executable, "-m", "taskfan.probe"]
    ok = subprocess.run(run, env={"APP_PORT": str(port), "APP_API_TOKEN": TOKEN}, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(run, env={"APP_PORT": str(port), "APP_API_TOKEN": "wrong"}, capture_output=True, text=True)
    assert bad.returncode == 1 and "is not healthy (UNAUTHENTICATED" in bad.stderr
    none = subprocess.run(run, env={}, capture_output=True, text=True)
    assert none.returncode == 2 and "no app port" in none.stderr
