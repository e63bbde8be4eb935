"""deploy/images/requirements.txt, the service image's pinned wheels, satisfies pyproject.toml: every runtime
dependency is there, at a version its specifier allows, with a hash (pip --require-hashes needs one for each)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCK_LINE = re.compile(r"^([A-Za-z0-9_.-]+)==(\S+) --hash=sha256:[0-9a-f]{64}$")


def pins() -> dict[str, str]:
    found = {}
    for line in (ROOT / "deploy/images/requirements.txt").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        match = LOCK_LINE.match(line)
        assert match, f"not `name==version --hash=sha256:...`: {line}"
        found[canonicalize_name(match[1])] = match[2]
    return found


def test_every_runtime_dependency_is_pinned_within_its_specifier() -> None:
    locked = pins()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for spec in project["dependencies"]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is a dependency but not in deploy/images/requirements.txt"
        assert requirement.specifier.contains(locked[name], prereleases=True), (name, locked[name], spec)


def test_no_dev_or_bench_extra_goes_into_the_image() -> None:
    locked = pins()
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    runtime = {canonicalize_name(Requirement(s).name) for s in
               tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    for spec in (s for group in extras.values() for s in group):
        name = canonicalize_name(Requirement(spec).name)
        if name not in runtime:
            assert name not in locked, f"{name} (an extra) is in the image's lock"
