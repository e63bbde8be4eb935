"""The run folder is its user's only: it holds every task's text and outcome (Redis's append-only file), the
logs, the scheduler's data, the stack's secrets.

Folders 0700, files with no group or other bit, whoever makes them: the launcher makes its own files under
``UMASK`` and starts every process with it (Redis's AOF rewrites, the log keeper's copies, etcd, the SQLite name
resolver inherit it), and ``make_private`` mends a run folder made before (an older clone, a folder a test or a
script made with the default umask) at every ``stack up``.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

UMASK = 0o077
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
# Beside the local stack's files in the default run folder, not the stack's, left as they are: the Kubernetes
# cluster's state (deploy/k8s/cluster.sh, with modes of its own, possibly in use by a running cluster) and the
# images' trees (deploy/images/build.sh: what they hold is read by the containers' non-root user).
NOT_THE_STACKS = frozenset({"k8s", "images"})


class NotPrivate(OSError):
    """The run folder itself is another user's: its modes cannot be changed by this one."""


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """Files and folders made inside are owner-only; the umask from before is restored after, so the install
    scripts (run outside) build binaries others may run (the images' user)."""
    previous = os.umask(UMASK)
    try:
        yield
    finally:
        os.umask(previous)


def open_private(path: Path, flags: int) -> int:
    """``os.open`` creating ``path`` owner-only whatever the umask (an existing file keeps its mode)."""
    return os.open(path, flags, PRIVATE_FILE)


def write_private(path: Path, text: str) -> None:
    """``path.write_text`` that creates the file owner-only."""
    with os.fdopen(open_private(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "w") as out:
        out.write(text)


def make_private(folder: Path) -> tuple[list[Path], list[Path]]:
    """Take every group and other bit off ``folder`` and all below it (folders 0700, files keep their owner
    bits, links are not followed): the paths changed, and those left as they were because they are another
    user's (a root-made file in a user's folder, unreachable to others once the folder is 0700). A path gone
    meanwhile (a rotated log) is skipped; ``folder`` itself being another user's raises ``NotPrivate``."""
    changed: list[Path] = []
    not_ours: list[Path] = []

    def mend(path: Path, is_dir: bool) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            return
        mode = stat.S_IMODE(st.st_mode)
        wanted = PRIVATE_DIR if is_dir else mode & 0o700
        if mode == wanted:
            return
        try:
            os.chmod(path, wanted)
        except FileNotFoundError:
            return
        except PermissionError as exc:
            if path == folder:
                raise NotPrivate(f"the run folder {folder} is not this user's ({exc.strerror}): give it to the "
                                 "stack's user, or run the stack with a RUN_DIR of its own") from None
            not_ours.append(path)
            return
        changed.append(path)

    mend(folder, True)
    for root, dirs, files in os.walk(folder):
        if Path(root) == folder:
            dirs[:] = [d for d in dirs if d not in NOT_THE_STACKS]
        for name in dirs:
            mend(Path(root, name), True)
        for name in files:
            mend(Path(root, name), False)
    return changed, not_ours


def exposed(folder: Path) -> list[tuple[str, str]]:
    """Every path below ``folder`` (itself included) with a group or other bit: (path, mode as ``ls`` shows)."""
    found = []
    for root, dirs, files in os.walk(folder):
        if Path(root) == folder:
            dirs[:] = [d for d in dirs if d not in NOT_THE_STACKS]
        for path in [Path(root), *(Path(root, name) for name in files)]:
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o077:
                found.append((str(path), stat.filemode(st.st_mode)))
    return found
