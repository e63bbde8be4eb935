"""End-to-end fixtures: one real stack (Dapr runtime + Redis) for the session, three scorers.

A stack that does not start fails the tests that need it, with the launcher's message; nothing is
skipped. Every test uses its own batch ids, so tests never see each other's outcomes.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis

from taskfan.settings import Settings
from taskfan.stack import Stack

E2E_SCORERS = 3
FAIL_PATTERN = "*-fail-me"

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    os.environ["SCORER_FAIL_TASKS"] = FAIL_PATTERN  # inherited by the scorer processes
    stack = Stack(Settings.from_env())
    stack.up(E2E_SCORERS, progress=lambda line: print(line, flush=True))
    yield stack
    stack.down(progress=lambda _: None)


@pytest.fixture(scope="session")
def settings(stack: Stack) -> Settings:
    return stack.settings


@pytest.fixture(scope="session")
def redis_client(settings: Settings) -> redis.Redis:
    return redis.Redis(host=settings.redis_host, port=settings.redis_port)


@pytest.fixture
def batch_id(request: pytest.FixtureRequest) -> str:
    return f"e2e-{request.node.name[:40]}-{uuid.uuid4().hex[:8]}".replace("[", "-").replace("]", "")


