"""A regular (non-editable) wheel works outside the clone: the CLI and every service's entry module."""

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ENTRY_MODULES = ["services.ingest.app", "services.workflow.app", "services.validator.app",
                 "services.enricher.app", "services.scorer.app", "taskfan.cli", "taskfan.stack"]


@pytest.fixture(scope="module")
def outside(tmp_path_factory) -> tuple[Path, Path]:
    """(a fresh venv with the wheel installed, a folder outside the clone)."""
    root = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(root / "dist"),
                    str(REPO_ROOT)], check=True, capture_output=True)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    wheel = next((root / "dist").glob("taskfan-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    str(wheel)], check=True, capture_output=True)
    # The wheel's dependencies from this environment, without its editable taskfan: a .pth line adds
    # the directory but does not run the editable finder's own .pth hooks there.
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    return venv, elsewhere


def test_taskfan_help_works_from_the_installed_wheel(outside):
    venv, elsewhere = outside
    done = subprocess.run([venv / "bin" / "taskfan", "--help"], cwd=elsewhere, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "publish" in done.stdout and "stack" in done.stdout


def test_every_entry_module_imports_from_the_installed_wheel(outside):
    venv, elsewhere = outside
    code = ("import importlib, sys\n"
            f"for name in {ENTRY_MODULES!r}:\n"
            "    module = importlib.import_module(name)\n"
            f"    assert module.__file__.startswith({str(venv)!r}), module.__file__\n"
            "from taskfan.versions import DAPR_VERSION\n"
            "print(DAPR_VERSION)\n")
    done = subprocess.run([venv / "bin" / "python", "-c", code], cwd=elsewhere, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().count(".") == 2  # a version such as 1.18.1, read from the package data
