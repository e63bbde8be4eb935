"""Write deploy/images/requirements.txt: Taskfan's runtime dependencies, every version and wheel hash pinned.

    .venv/bin/python deploy/images/lock.py        # after `make venv`; needs PyPI (pip's resolver)

pyproject.toml pins the three Dapr SDK wheels and gives ranges for the rest; the virtualenv resolves those
ranges when it is made. This asks pip to resolve Taskfan's runtime dependencies (no dev/bench extras) with
every version held to the one installed in the virtualenv (`pip freeze` as constraints), so the image gets
exactly the versions the tests ran with, and records the hash of each wheel pip picked. The image build
then installs with --require-hashes from the committed file, offline; deploy/images/build.sh warns when the
virtualenv and this file disagree (run this again, review the diff, commit it).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "deploy/images/requirements.txt"
HEADER = """\
# Taskfan's runtime dependencies for the service image, exact versions and wheel hashes (the versions of the
# virtualenv the tests ran with). Made by `.venv/bin/python deploy/images/lock.py`; do not edit by hand.
# deploy/images/build.sh installs them with pip --require-hashes, offline, into the image's /opt/venv.
"""


def resolve() -> list[tuple[str, str, str]]:
    """(name, version, sha256) of every runtime dependency, taskfan itself left out."""
    with tempfile.TemporaryDirectory() as tmp:
        constraints, report = Path(tmp, "constraints.txt"), Path(tmp, "report.json")
        freeze = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"], check=True,
                                capture_output=True, text=True).stdout
        constraints.write_text(freeze)
        subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                        "--only-binary=:all:", "--report", str(report), "-c", str(constraints), str(ROOT)],
                       check=True)
        items = json.loads(report.read_text())["install"]
    pins = []
    for item in items:
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        if name == "taskfan":
            continue
        pins.append((name, version, item["download_info"]["archive_info"]["hashes"]["sha256"]))
    return sorted(pins, key=lambda pin: pin[0].lower())


def main() -> int:
    lines = [f"{name}=={version} --hash=sha256:{sha}" for name, version, sha in resolve()]
    LOCK.write_text(HEADER + "\n".join(lines) + "\n")
    sys.stdout.write(f"{LOCK.relative_to(ROOT)}: {len(lines)} pinned wheels\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
