"""Fault points, for drills only: hold the workflow app at a named point between two writes until the test
kills it, to prove that every window between them ends in exactly one outcome (README, Failures).

A test arms a point by creating ``<FAULT_POINTS_DIR>/<name>.armed``; the first time the app passes that
point it renames the file to ``<name>.reached`` (so a point fires once) and waits there to be killed.
Without FAULT_POINTS_DIR, which only the end-to-end tests set, a point does nothing.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from taskfan.settings import Settings

log = logging.getLogger(__name__)

AFTER_LEDGER_WRITE = "after-ledger-write"  # the intake took the batch's slots; its workflow is not started
AFTER_PUBLISH = "after-publish"  # the outcome is published; its record does not say so yet
AFTER_RECORD = "after-record"  # the outcome is published and recorded; the batch is not cleaned up
IN_TERMINATE = "in-terminate"  # the reconciler answered for a terminated batch; its slots are not released
POINTS = (AFTER_LEDGER_WRITE, AFTER_PUBLISH, AFTER_RECORD, IN_TERMINATE)


# Read once, as the process starts: only the end-to-end tests set it, in the environment they start the app with
# (the points are on the hot path, where reading every setting again showed in the workflow app's profile).
_DIRECTORY = Settings.from_env().fault_points_dir


def _directory() -> Path | None:
    return Path(_DIRECTORY) if _DIRECTORY else None


def arm(directory: Path, name: str) -> None:
    """The test's side: the next time the app passes ``name``, it waits there."""
    (directory / f"{name}.armed").touch()


def reached(directory: Path, name: str) -> bool:
    return (directory / f"{name}.reached").exists()


def disarm(directory: Path, name: str) -> None:
    """Armed or reached, the point is forgotten."""
    for state in ("armed", "reached"):
        (directory / f"{name}.{state}").unlink(missing_ok=True)


def point(name: str) -> None:
    """Wait here for ever (to be killed) if the point ``name`` is armed; else return at once."""
    directory = _directory()
    if directory is None:
        return
    try:
        (directory / f"{name}.armed").rename(directory / f"{name}.reached")
    except FileNotFoundError:
        return
    log.warning("held at a fault point until killed", extra={"fault_point": name})
    while True:
        time.sleep(3600)
