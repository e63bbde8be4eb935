"""Pinned versions of the runtime pieces, read from ``versions.env`` shipped inside the package.

That file is also what ``deploy/install-dapr.sh`` sources, so the shell and Python agree by
construction, and a wheel installed outside the clone carries it.
"""

from importlib.resources import files


def _read() -> dict[str, str]:
    pairs = {}
    for line in files(__package__).joinpath("versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            pairs[key] = value
    return pairs


DAPR_VERSION = _read()["DAPR_VERSION"]
