"""Keeps the local stack's logs to a size: a process of the stack like the others (``logkeeper``).

Every ``LOG_CHECK_S`` it looks at each ``<logs>/<name>.log``; one over ``LOG_MAX_BYTES`` is copied to
``<name>.log.1`` (the older copies move up to ``.log.<LOG_FILES>``, the oldest dropped) and emptied. Each
process writes its log in append mode, so it goes on at the start of the emptied file: no process is
restarted or signalled. The lines a process writes between the copy and the emptying (a few milliseconds)
are lost, as with logrotate's ``copytruncate``.

    python -m taskfan.stack.logkeeper LOGS_DIR
"""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import threading
from pathlib import Path

from taskfan import logs
from taskfan.settings import Settings
from taskfan.stack import private_files

log = logging.getLogger(__name__)

NAME = "logkeeper"
LOG_CHECK_S = 2.0


def rotate(path: Path, keep: int) -> None:
    """``path`` copied to ``path.1`` (``.1`` to ``.2``, ... up to ``.keep``) and emptied."""
    for n in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{n}")
        if older.exists():
            older.replace(path.with_name(f"{path.name}.{n + 1}"))
    # The copy owner-only whatever the umask, like the log it copies (private_files).
    with open(path, "rb") as source, open(path.with_name(f"{path.name}.1"), "wb",
                                          opener=private_files.open_private) as copy:
        shutil.copyfileobj(source, copy)
        with open(path, "r+b") as writable:
            writable.truncate(0)


def sweep(logs_dir: Path, max_bytes: int, keep: int) -> list[str]:
    """Rotate every log over ``max_bytes``; the names of those rotated."""
    rotated = []
    for path in sorted(logs_dir.glob("*.log")):
        try:
            if path.stat().st_size > max_bytes:
                rotate(path, keep)
                rotated.append(path.name)
        except FileNotFoundError:  # removed meanwhile (make clean)
            continue
    return rotated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs_dir", type=Path)
    args = parser.parse_args()
    settings = Settings.from_env()
    logs.configure(NAME, settings.log_level)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    log.info("keeping logs", extra={"logs_dir": str(args.logs_dir), "max_bytes": settings.log_max_bytes,
                                    "files": settings.log_files})
    while not stop.wait(LOG_CHECK_S):
        for name in sweep(args.logs_dir, settings.log_max_bytes, settings.log_files):
            log.info("log rotated", extra={"log": name})


if __name__ == "__main__":
    main()
