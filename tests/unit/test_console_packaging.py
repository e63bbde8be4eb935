"""The console's templates are package data: a regular (non-editable) wheel holds every one of them."""

import subprocess
import sys
import zipfile
from pathlib import Path

from services.console import pages

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = REPO_ROOT / "services" / "console" / "templates"


def test_the_templates_go_into_the_wheel(tmp_path: Path) -> None:
    wanted = {f"services/console/templates/{p.name}" for p in TEMPLATES.iterdir()}
    assert {"services/console/templates/base.html", "services/console/templates/console.js"} <= wanted
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), str(REPO_ROOT)],
                   check=True, capture_output=True)
    wheel = next(tmp_path.glob("taskfan-*.whl"))
    assert wanted <= set(zipfile.ZipFile(wheel).namelist())


def test_every_template_compiles() -> None:
    for template in TEMPLATES.iterdir():
        pages.TEMPLATES.get_template(template.name)
