#!/usr/bin/env bash
# Create the Python virtualenv ($VENV, default .venv) with Taskfan installed editable, its dev and bench
# extras included; touch $VENV/.installed when done. One line on stderr, pip's output in the install log.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

python=${PYTHON:-python3}
venv=${VENV:-.venv}
cd "$here/.."

command -v "$python" >/dev/null || fail "$python not found: Python >= 3.11 is required (README, Requirements)"
make_venv() {
  "$python" -m venv "$venv" &&
    "$venv/bin/pip" install --upgrade pip &&
    "$venv/bin/pip" install -e '.[dev,bench]'
}
phase "Python virtualenv $venv (pip install -e .[dev,bench])" make_venv
touch "$venv/.installed"
