#!/usr/bin/env bash
# Make sure Debian's chromium is on this machine (the console's browser tests drive it with Playwright, as
# their executable: nothing is downloaded by `playwright install`); print its path on stdout.
# Installing prints one line on stderr, apt's output goes to the install log (see lib.sh).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

if ! command -v chromium >/dev/null; then
  command -v apt-get >/dev/null || fail "chromium is missing and there is no apt-get here: install Chromium yourself"
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || fail "chromium is missing; installing it with apt-get needs root or sudo"
    apt_sudo=(sudo)
  fi
  apt_install() { apt_get update && apt_get install -y --no-install-recommends chromium fonts-dejavu-core; }
  phase "apt-get install chromium" apt_install
fi
command -v chromium || fail "chromium is not on PATH ($PATH) even after apt-get install chromium"
